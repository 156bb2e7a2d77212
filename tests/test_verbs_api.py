"""The verbs as plain Python functions (what the CLI calls): each owns its ``out`` — claimed before any work (a complete
run is refused before the model is built), left as it was when the run fails — and shows its real signature."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from stlens.errors import StlensError
from stlens.runs import read_marker

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "module:conftest:tiny_classifier"
BROKEN = "module:no_such_module_stlens:make"  # a model spec that fails when it is built
DATA = "synth:motion?n=16&frames=8&size=16&seed=0"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) by its relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


# -- track ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    """A tiny training run with checkpoints at steps 0, 2 and 4."""
    from stlens.train import TrainConfig, Trainer

    run = tmp_path_factory.mktemp("train") / "run"
    config = TrainConfig(model=MODEL, data=DATA, test_data=None, steps=4, out=str(run), checkpoint_every=2,
                         batch_size=4, frames=8, size=16, eval_clips=0, lr=1e-2, warmup=1)
    Trainer(config, [], progress=False).train()
    return run


def test_track_signature():
    from stlens.train.tracking import track

    assert parameters(track) == ["model", "checkpoints", "data", "layers", "pairs", "stylizer", "frames", "size",
                                 "batch_size", "workers", "device", "precision", "bootstrap", "threshold", "seed",
                                 "out", "overwrite", "progress"]
    signature = inspect.signature(track)
    assert signature.parameters["batch_size"].default == 4
    assert signature.parameters["pairs"].kind is inspect.Parameter.KEYWORD_ONLY


def test_track_owns_its_out(tmp_path, train_run):
    from stlens.train.tracking import track

    out = tmp_path / "track"
    result = track(MODEL, train_run, DATA, ["stem", "stage"], pairs=8, bootstrap=0, seed=3, workers=0, out=out,
                   progress=False)
    assert result.path == out and result.meta["steps"] == [0, 2, 4]
    assert read_marker(out)["verb"] == "track" and read_marker(out)["status"] == "complete"
    saved = json.loads((out / "track.json").read_text())
    assert [r["dynamic"] for r in saved["rows"]] == [r["dynamic"] for r in result.rows]
    before = snapshot(out)

    # a complete run is refused before the model is built (the broken spec is never reached)
    with pytest.raises(StlensError, match="already holds"):
        track(BROKEN, train_run, DATA, out=out, progress=False)
    # with overwrite, the model fails to build: out is as it was, no staging folder left
    with pytest.raises(StlensError) as failed:
        track(BROKEN, train_run, DATA, out=out, overwrite=True, workers=0, progress=False)
    assert "already holds" not in str(failed.value)
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)


def test_track_checks_its_arguments_before_any_work(tmp_path, train_run):
    from stlens.train.tracking import track

    out = tmp_path / "never"
    for kwargs, named in (({"device": "tpu"}, "device"), ({"precision": "fp8"}, "precision"),
                          ({"workers": -1}, "workers"), ({"batch_size": 0}, "`batch_size`"),
                          ({"pairs": 0}, "`pairs`")):
        with pytest.raises(StlensError, match=named):
            track(BROKEN, train_run, DATA, out=out, progress=False, **kwargs)
    assert not out.exists()
    with pytest.raises(StlensError, match="`checkpoints`"):
        track(MODEL, tmp_path, DATA, progress=False)
