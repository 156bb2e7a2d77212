"""Every file stlens reads back, truncated to half its bytes or replaced by garbage, is a ``StlensError`` naming the
file and what to do (exit code 2 from the CLI), never a traceback (issue 26)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import with_tests

from stlens.cli import main
from stlens.core.distributed import World
from stlens.errors import StlensError
from stlens.files import write_json
from stlens.runs import MARKER, RunFolder, file_entry, read_marker

GARBAGE = bytes(range(256))[::-1] * 3  # not UTF-8, not a zip, not JSON, not safetensors, not a pickle
MEASURE = ["measure", "--model", "module:conftest:tiny_video_net", "--frames", "4", "--size", "32", "--pairs", "4",
           "--bootstrap", "0", "--workers", "0", "--data", "synth:motion?split=test&n=8&frames=4&size=32", "--quiet"]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path: Path) -> None:
    path.write_bytes(GARBAGE)


def remark(folder: Path) -> None:
    """Rewrite the marker's checksums (as if the run had written the damaged file), to reach the file's reader."""
    marker = json.loads((folder / MARKER).read_text())
    marker["files"] = {name: file_entry(folder / name) for name in marker["files"] if (folder / name).is_file()}
    (folder / MARKER).write_text(json.dumps(marker))


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("measured") / "run"
    assert main([*MEASURE, "--save-latents", "--out", str(out)]) == 0
    return out


def _copy(folder: Path, into: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, into / folder.name))


# -- the readers: (make a valid file with the real writer → its path, read it back, advice in the message) ----------


def _measure_checkpoint(tmp: Path) -> tuple[Path, Callable[[], object]]:
    from stlens.measure.accumulator import Accumulator
    from stlens.measure.checkpoint import Checkpoint

    acc = Accumulator(bootstrap=3, seed=0, save_latents=True)
    acc.add(np.array([0, 0, 1, 1]), np.arange(4), {"x": np.random.default_rng(0).normal(size=(8, 3))})
    Checkpoint(tmp, 0, World(), {"seed": 0}).save(acc)
    return tmp / "rank-0-of-1.npz", lambda: Checkpoint(tmp, 0, World(), {"seed": 0}).load()


def _measure_file(name: str, marked: bool):
    def make(tmp: Path, measured: Path) -> tuple[Path, Callable[[], object]]:
        from stlens.measure.result import load_result

        run = _copy(measured, tmp)
        return run / name, lambda: load_result(run) if marked or not (run / MARKER).exists() else \
            ((run / MARKER).unlink(), load_result(run))
    return make


def _run_marker(tmp: Path) -> tuple[Path, Callable[[], object]]:
    folder = RunFolder(tmp / "run", "stylize", outputs=("stylize.json",)).claim()
    write_json(folder.staging / "stylize.json", {"stylizer": "fourier"})
    folder.commit()
    return tmp / "run" / MARKER, lambda: read_marker(tmp / "run")


def _ablation(tmp: Path) -> tuple[Path, Callable[[], object]]:
    from stlens.ablate.result import AblationResult, load_ablation

    result = AblationResult(settings={"layers": ["x"]}, metrics=["top1"], baseline={"top1": {"top1": 0.5}},
                            rows=[{"layer": "x", "select": "none", "k": 0, "draw": 0, "mode": "zero", "masked": 0,
                                   "top1": 0.5, "drop_top1": 0.0}], selections=[])
    folder = RunFolder(tmp / "run", "ablate", outputs=("ablation.json",)).claim()
    write_json(folder.staging / "ablation.json", result.document())
    folder.commit()
    load_ablation(tmp / "run")  # the intact file reads back
    return tmp / "run" / "ablation.json", lambda: (remark(tmp / "run"), load_ablation(tmp / "run"))


def _track(name: str):
    def make(tmp: Path) -> tuple[Path, Callable[[], object]]:
        from stlens.report.tracks import load_track
        from stlens.train.tracking import COLUMNS, TrackResult

        rows = [{**dict.fromkeys(COLUMNS, 1.0), "layer": "x", "step": step} for step in range(1, 30)]
        folder = RunFolder(tmp / "run", "track", outputs=("track.csv", "track.json")).claim()
        TrackResult(rows).save(folder.staging, plots=False)
        folder.commit()
        assert len(load_track(tmp / "run")) == 29
        if name == "track.json":
            (tmp / "run" / "track.csv").unlink()
        return tmp / "run" / name, lambda: load_track(tmp / "run")
    return make


def _evaluation(tmp: Path) -> tuple[Path, Callable[[], object]]:
    from stlens._version import FORMAT_VERSION
    from stlens.train.evaluate import load_evaluation

    write_json(tmp / "evaluation.json", {"format_version": FORMAT_VERSION, "model": "m", "data": "d",
                                         "task": "classify", "clips": 4, "metrics": {"top1": 0.5},
                                         "ci95": {"top1": [0.1, 0.9]}})
    load_evaluation(tmp / "evaluation.json")
    return tmp / "evaluation.json", lambda: load_evaluation(tmp / "evaluation.json")


def _train_checkpoint(part: str):
    def make(tmp: Path) -> tuple[Path, Callable[[], object]]:
        from stlens.train.checkpoints import load_checkpoint, save_checkpoint, state_path

        model = torch.nn.Linear(16, 8)
        optimizer = torch.optim.Adam(model.parameters())
        model(torch.ones(2, 16)).sum().backward()
        optimizer.step()
        weights = save_checkpoint(tmp, 3, model, optimizer, {"config": {}})
        path = {"weights": weights, "state": state_path(weights), "info": weights.with_suffix(".json")}[part]
        return path, lambda: load_checkpoint(weights, torch.nn.Linear(16, 8), torch.optim.Adam(model.parameters()))
    return make


def _weights(suffix: str):
    def make(tmp: Path) -> tuple[Path, Callable[[], object]]:
        from safetensors.torch import save_file

        from stlens.models.weights import read_state_dict

        path = tmp / f"w{suffix}"
        state = {"w": torch.arange(64.0).reshape(8, 8)}
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
        return path, lambda: read_state_dict(path)
    return make


def _bundled_info(tmp: Path) -> tuple[Path, Callable[[], object]]:
    from stlens.models import bundled

    write_json(tmp / "b.json", {"model": "stlens:i3d", "accuracy": 0.5})
    (tmp / "b.safetensors").write_bytes(b"")

    def read():
        original, bundled.bundled_dir = bundled.bundled_dir, lambda: tmp
        try:
            return bundled.bundled_info("b")
        finally:
            bundled.bundled_dir = original
    return tmp / "b.json", read


def _stylize_config(tmp: Path) -> tuple[Path, Callable[[], object]]:
    from stlens.pairs.stylize import _load_config

    write_json(tmp / "stylize.json", {"stylizer": "fourier", "seed": 0, "styles": 4})
    return tmp / "stylize.json", lambda: _load_config(tmp / "stylize.json")


def _train_config(tmp: Path) -> tuple[Path, Callable[[], object]]:
    from stlens.train.trainer import Trainer

    write_json(tmp / "config.json", {"model": "stlens:i3d", "steps": 10})
    return tmp / "config.json", lambda: Trainer._read_config(tmp / "config.json")


def _stylized_frame(tmp: Path) -> tuple[Path, Callable[[], object]]:
    from stlens.pairs.stylize import write_frames
    from stlens.video.io import read_frame_folder

    frames = np.random.default_rng(0).integers(0, 255, size=(3, 64, 64, 3), dtype=np.uint8)
    write_frames(frames, tmp / "clip")
    return sorted((tmp / "clip").iterdir())[1], lambda: read_frame_folder(tmp / "clip")


READERS = {  # name → (make, advice)
    "measure checkpoint": (_measure_checkpoint, "to start over"),
    "result.json (marker checked)": (_measure_file("result.json", True), "stlens measure"),
    "units.csv (marker checked)": (_measure_file("units.csv", True), "rerun stlens measure"),
    "result.json": (_measure_file("result.json", False), "rerun the measurement"),
    "config.json of measure": (_measure_file("config.json", False), "rerun the measurement"),
    "units.csv": (_measure_file("units.csv", False), "rerun the measurement"),
    "latents.npz": (_measure_file("latents.npz", False), "rerun the measurement"),
    "run marker": (_run_marker, "use another `out`"),
    "ablation.json": (_ablation, "rerun the ablation"),
    "track.csv": (_track("track.csv"), "rerun stlens track"),
    "track.json": (_track("track.json"), "rerun stlens track"),
    "evaluation.json": (_evaluation, "rerun the evaluation"),
    "train checkpoint weights": (_train_checkpoint("weights"), "resume from an earlier checkpoint"),
    "train checkpoint state": (_train_checkpoint("state"), "resume from an earlier checkpoint"),
    "train checkpoint info": (_train_checkpoint("info"), "resume from an earlier checkpoint"),
    "user weights .safetensors": (_weights(".safetensors"), "download the weights file again"),
    "user weights .pt": (_weights(".pt"), "download the weights file again"),
    "bundled checkpoint info": (_bundled_info, "reinstall stlens"),
    "stylize.json": (_stylize_config, "use another `out`"),
    "train config.json": (_train_config, "use another `out`"),
    "stylized frame": (_stylized_frame, "damaged or truncated"),
}


@pytest.mark.parametrize("damage", [truncate, garble], ids=["truncated", "garbage"])
@pytest.mark.parametrize("reader", list(READERS))
def test_a_damaged_file_is_named_with_what_to_do(reader, damage, tmp_path, request):
    make, advice = READERS[reader]
    needs_run = make.__code__.co_argcount == 2
    path, read = make(tmp_path, request.getfixturevalue("measured")) if needs_run else make(tmp_path)
    read()  # the intact file reads back
    damage(path)
    with pytest.raises(StlensError) as caught:
        read()
    message = str(caught.value)
    assert str(path) in message and advice in message, message


@pytest.mark.parametrize("damage", [truncate, garble], ids=["truncated", "garbage"])
def test_a_damaged_flow_cache_entry_is_recomputed_with_a_warning(damage, tmp_path, caplog):
    from stlens.video.flow import FlowCache

    cache = FlowCache(tmp_path)
    flow = np.random.default_rng(0).normal(size=(3, 16, 16, 2)).astype(np.float32)
    stored = cache.save("ab" * 16, flow)
    np.testing.assert_array_equal(cache.load("ab" * 16), stored)
    damage(cache.path("ab" * 16))
    with caplog.at_level(logging.WARNING, logger="stlens"):
        assert cache.load("ab" * 16) is None
        again = cache.get_or_compute("ab" * 16, lambda: flow)
    np.testing.assert_array_equal(again, stored)
    assert str(cache.path("ab" * 16)) in caplog.text and "delete it; it is recomputed" in caplog.text
    np.testing.assert_array_equal(cache.load("ab" * 16), stored)  # written again


def test_resume_over_a_damaged_measure_checkpoint_is_exit_code_2_naming_the_file(tmp_path):
    """The CLI end to end: a run checkpointed, its checkpoint truncated, then --resume (today's BadZipFile)."""
    from stlens.measure.accumulator import Accumulator
    from stlens.measure.checkpoint import FOLDER, Checkpoint

    out = tmp_path / "run"
    acc = Accumulator(bootstrap=0, seed=0, save_latents=False)
    acc.add(np.array([0, 1]), np.arange(2), {"x": np.ones((4, 3))})
    Checkpoint(out / FOLDER, 0, World(), {}).save(acc)
    path = out / FOLDER / "rank-0-of-1.npz"
    truncate(path)
    run = subprocess.run([sys.executable, "-m", "stlens", *MEASURE, "--resume", "--out", str(out)],
                         env=os.environ | {"PYTHONPATH": with_tests()}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert str(path) in run.stderr and "to start over" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert path.exists()  # left as it is
