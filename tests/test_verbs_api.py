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
                                 "out", "overwrite", "progress", "tensorboard"]
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


# -- stylize -------------------------------------------------------------------------------------------------------


def test_stylize_signature():
    from stlens.pairs.stylize import stylize

    assert parameters(stylize) == ["data", "stylizer", "styles", "out", "seed", "short_side", "frames_max", "device",
                                   "precision", "workers", "overwrite", "progress"]
    assert inspect.signature(stylize).parameters["out"].default is inspect.Parameter.empty


def test_stylize_writes_resumes_and_refuses(tmp_path, small_video):
    from stlens.pairs.stylize import stylize
    from stlens.runs import RunFolder

    out = tmp_path / "styled"
    fast = {"stylizer": "palette", "styles": 1, "frames_max": 3, "short_side": 24, "workers": 0, "progress": False}
    counts = stylize(small_video, out=out, **fast)
    assert (counts["videos"], counts["written"], counts["frames"]) == (1, 1, 3)
    assert len(list(out.glob("style_1/*/frame_*.jpg"))) == 3 and read_marker(out)["verb"] == "stylize"
    frames = snapshot(out / "style_1")
    assert stylize(small_video, out=out, **fast)["skipped"] == 1  # its own run resumes: nothing to write
    assert snapshot(out / "style_1") == frames
    before = snapshot(out)
    with pytest.raises(StlensError, match="seed"):  # other fixed arguments: refused, nothing written
        stylize(small_video, out=out, **(fast | {"seed": 1}))
    assert snapshot(out) == before

    # a folder holding another verb's complete run is refused before the stylizer is built
    other = tmp_path / "other"
    run = RunFolder(other, "track").claim()
    (run.staging / "track.json").write_text("{}")
    run.commit()
    held = snapshot(other)
    with pytest.raises(StlensError, match="holds"):
        stylize(small_video, out=other, **(fast | {"stylizer": "module:no_such_module_stlens:make"}))
    assert snapshot(other) == held


def test_stylize_checks_its_arguments_before_any_work(tmp_path, small_video):
    from stlens.pairs.stylize import stylize

    out = tmp_path / "never"
    for kwargs, named in (({"styles": 0}, "`styles`"), ({"device": "tpu", "stylizer": "neural"}, "device"),
                          ({"precision": "fp8"}, "precision"), ({"workers": -1}, "workers"),
                          ({"frames_max": 0}, "`frames_max`")):
        with pytest.raises(StlensError, match=named):
            stylize(small_video, out=out, progress=False, **kwargs)
    assert not out.exists()


# -- pairs check ---------------------------------------------------------------------------------------------------


def test_check_pairs_signature():
    from stlens.pairs.check import check_pairs

    assert parameters(check_pairs) == ["data", "stylizer", "clips", "frames", "size", "check_flow", "seed",
                                       "examples", "device", "precision", "workers", "out", "progress"]


def test_check_pairs_writes_its_report_file(tmp_path, small_video):
    from stlens.pairs.check import check_pairs

    out = tmp_path / "check" / "pairs.json"
    fast = {"stylizer": "palette", "clips": 1, "frames": 4, "size": 32, "workers": 0, "progress": False}
    report = check_pairs(small_video, out=out, examples=True, **fast)
    assert json.loads(out.read_text()) == report and report["clips"] == 1 and set(report["stylizers"]) == {"palette"}
    assert [p.name for p in (tmp_path / "check" / "pairs").iterdir()] == ["palette_clip0.gif"]
    before = out.read_bytes()
    # a failure midway (the stylizer cannot be built) leaves the earlier report as it was
    with pytest.raises(StlensError, match="no_such_module_stlens"):
        check_pairs(small_video, out=out, **(fast | {"stylizer": "module:no_such_module_stlens:make"}))
    assert out.read_bytes() == before
    assert check_pairs(small_video, **fast) == report  # no out: nothing written, the same report


def test_check_pairs_refuses_before_any_work(tmp_path, small_video):
    from stlens.pairs.check import check_pairs

    broken = {"stylizer": "module:no_such_module_stlens:make", "progress": False}
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "data"}')
    with pytest.raises(StlensError, match="not a pairs check report"):  # the user's file, before the stylizer
        check_pairs(small_video, out=mine, **broken)
    assert mine.read_text() == '{"my": "data"}'
    with pytest.raises(StlensError, match="is a folder"):
        check_pairs(small_video, out=tmp_path, **broken)
    with pytest.raises(StlensError, match=r"must end in \.json"):
        check_pairs(small_video, out=tmp_path / "report", examples=True, **broken)
    with pytest.raises(StlensError, match="`examples`"):
        check_pairs(small_video, examples=True, **broken)
    with pytest.raises(StlensError, match=r"`clips` must be ≥ 1 \(the number of clips to check\), got 0"):
        check_pairs(small_video, clips=0, **broken)
    with pytest.raises(StlensError, match="`check_flow`"):
        check_pairs(small_video, check_flow="raft", **broken)
    with pytest.raises(StlensError, match="precision"):
        check_pairs(small_video, precision="fp8", out=tmp_path / "never.json", **broken)
    assert not (tmp_path / "never.json").exists() and not (tmp_path / "report").exists()


# -- report --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny measure runs: one of the layers stem and stage, one of stem only."""
    import stlens

    root = tmp_path_factory.mktemp("measured")
    for name, layers in (("both", ["stem", "stage"]), ("stem", ["stem"])):
        stlens.measure(MODEL, DATA, layers, frames=8, size=16, pairs=8, bootstrap=0, workers=0, out=root / name,
                       progress=False)
    return root / "both", root / "stem"


def test_report_is_a_callable_package_with_the_real_signature():
    import stlens
    from stlens.report import html

    assert callable(stlens.report) and stlens.report.report is html.report
    assert inspect.signature(stlens.report) == inspect.signature(html.report)
    assert parameters(html.report) == ["runs", "out", "layers", "examples", "title", "plots_only"]
    assert "plots_only" in stlens.report.__doc__


def test_report_compares_at_the_first_layer_a_run_has(measured, tmp_path):
    import stlens
    from stlens.report.html import GENERATOR, choose_layer

    both, stem = (stlens.load_result(run) for run in measured)
    assert choose_layer(both, "stage,stem")[0].layer == "stage"
    assert choose_layer(stem, ["stage", "stem"])[0].layer == "stem"
    assert choose_layer(stem, "stage") == (stem["stem"], "no layer 'stage'; its last layer is shown")
    assert choose_layer(both, None)[0].layer == "stage"

    out = tmp_path / "report.html"
    assert stlens.report(list(measured), out, layers=["stage", "stem"], examples=0, title="two runs") == out
    html = out.read_text()
    assert GENERATOR in html and "<title>two runs</title>" in html and "stage, stem" in html
    before = out.read_bytes()
    with pytest.raises(StlensError, match="nothing to report"):  # a failed report leaves the earlier one
        stlens.report([tmp_path / "missing"], out)
    assert out.read_bytes() == before


def test_report_refuses_a_file_it_did_not_write_before_any_work(tmp_path):
    import stlens

    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(StlensError, match="not a report written by stlens"):  # before reading the (missing) runs
        stlens.report([tmp_path / "missing"], mine)
    assert mine.read_text() == "<p>my notes</p>"


def test_report_plots_only(measured, tmp_path):
    import stlens

    written = stlens.report(list(measured), tmp_path / "plots", layers="stage", plots_only=True)
    names = sorted(str(p.relative_to(tmp_path / "plots")) for p in written)
    assert "comparison.png" in names and "comparison.svg" in names and "both/layers.png" in names
    single = stlens.report(measured[1], plots_only=True)  # default: the run's own plots/ folder
    assert {p.parent for p in single} == {measured[1] / "plots"}


# -- visualize -----------------------------------------------------------------------------------------------------

TINY_VIS = {"frames": 4, "size": 16, "steps": 2, "natural_clips": 0, "progress": False}


def test_visualize_is_a_callable_package_with_the_real_signature():
    import stlens
    from stlens.visualize import api

    assert callable(stlens.visualize) and inspect.signature(stlens.visualize) == inspect.signature(api.visualize)
    assert parameters(api.visualize)[:21] == [
        "model", "target", "layers", "weights", "frames", "size", "from_run", "steps", "lr", "param", "temporal_reg",
        "batch_size", "precision", "seed", "optimizer", "data", "natural_clips", "device", "out", "overwrite",
        "progress"]
    assert stlens.visualize.VisResult is api.VisResult and stlens.visualize.objectives.Objective


def test_visualize_owns_its_out_and_makes_targets_in_each_layer(tmp_path):
    from stlens.visualize.api import visualize

    out = tmp_path / "vis"
    result = visualize(MODEL, ["channel:1", "class:3"], layers="stem,stage", out=out, **TINY_VIS)
    assert [t.name for t in result.targets] == ["stem_ch1", "stage_ch1", "class_3"]
    assert result.path == out and read_marker(out)["verb"] == "visualize" and read_marker(out)["status"] == "complete"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["layer"] == "stem,stage" and len(summary["targets"]) == 3
    before = snapshot(out)

    # a complete run is refused before the model is built
    with pytest.raises(StlensError, match="already holds"):
        visualize(BROKEN, "class:0", out=out, **TINY_VIS)
    # with overwrite, a failure after the model is built (no channel 99) leaves out as it was
    with pytest.raises(StlensError) as failed:
        visualize(MODEL, "channel:99", layers=["stem"], out=out, overwrite=True, **TINY_VIS)
    assert "already holds" not in str(failed.value)
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        {name.split("/")[0] for name in before})
    # overwrite with a complete run replaces it
    again = visualize(MODEL, "class:1", out=out, overwrite=True, **TINY_VIS)
    assert [t.name for t in again.targets] == ["class_1"] and not (out / "stem_ch1").exists()


def test_visualize_seeds_the_model_it_builds(tmp_path):
    from stlens.visualize.api import visualize

    first, second = (visualize(MODEL, "class:0", seed=5, **TINY_VIS).targets[0] for _ in range(2))
    assert first.value == second.value and (first.rgb == second.rgb).all()
    assert visualize(MODEL, "class:0", seed=6, **TINY_VIS).targets[0].value != first.value


def test_visualize_checks_its_arguments_before_any_work(tmp_path, monkeypatch):
    from stlens.visualize import api

    out = tmp_path / "never"
    for kwargs, named in (({"device": "tpu"}, "device"), ({"precision": "fp8"}, "precision"),
                          ({"temporal_reg": [1.0, -1.0]}, "`temporal_reg`"), ({"batch_size": 0}, "`batch_size`"),
                          ({"layers": ","}, "`layers`")):
        with pytest.raises(StlensError, match=named):
            api.visualize(BROKEN, "channel:0", out=out, **(TINY_VIS | kwargs))
    assert not out.exists()

    monkeypatch.setattr(api, "_WARNED", set())
    with pytest.warns(FutureWarning, match="layers="):
        old = api.visualize(MODEL, "channel:2", layer="stage", **TINY_VIS)
    assert [t.name for t in old.targets] == ["stage_ch2"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the second call does not warn
        api.visualize(MODEL, "channel:2", layer="stage", **TINY_VIS)
    with pytest.raises(StlensError, match="disagree"):
        api.visualize(MODEL, "channel:2", layer="stage", layers="stem", **TINY_VIS)
