"""--device, --precision and --workers on train, track, stylize, pairs check and visualize: an explicit device works
and is recorded in each verb's output, fp16 on the CPU is refused before any work, bf16 trains with finite losses, a
train run resumes on another device, and track's pairs are the same with or without workers. Device tests run on
every available device (CUDA/MPS paths wherever there is a GPU); the CUDA refusal is in tests/test_devices.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import stlens
from stlens.cli import main
from stlens.core.device import resolve_device, resolve_precision
from stlens.train import list_checkpoints, load_checkpoint
from stlens.train.tracking import cache_pairs

DEVICES = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
           + (["mps"] if torch.backends.mps.is_available() else []))
MODEL = "module:conftest:tiny_classifier"
DATA = "synth:motion?n=16&frames=4&size=32&seed=0"
TRAIN = ["train", "--model", MODEL, "--data", DATA, "--frames", "4", "--size", "32", "--batch-size", "4",
         "--eval-clips", "4", "--quiet"]
VISUALIZE = ["visualize", "--model", "stlens:i3d?width=4", "--frames", "4", "--size", "16", "--steps", "2",
             "--natural-clips", "1", "--target", "class:0", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(run) -> dict:
    return json.loads((run / "config.json").read_text())


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny training run with checkpoints at steps 0, 2 and 4 (for track)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main([*TRAIN, "--steps", "4", "--checkpoint-every", "2", "--device", "cpu", "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("device", DEVICES)
def test_train_on_a_device_records_it_and_resumes_on_the_cpu(device, tmp_path):
    run = tmp_path / "run"
    assert main([*TRAIN, "--steps", "2", "--checkpoint-every", "1", "--device", device, "--out", str(run)]) == 0
    config = _config(run)
    assert config["device"] == device and config["device_resolved"] == str(resolve_device(device))
    assert config["precision"] == "fp32" and config["precision_resolved"] == "fp32"
    # checkpoints are read onto the CPU and copied to the model's device: the run goes on elsewhere
    assert main([*TRAIN, "--steps", "3", "--checkpoint-every", "1", "--device", "cpu", "--out", str(run)]) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [0, 1, 2, 3]
    assert _config(run)["device_resolved"] == "cpu"
    assert all(math.isfinite(loss) for loss in _losses(run))
    fresh = stlens.load_model(MODEL, frames=4, size=32)
    assert load_checkpoint(run / "checkpoints" / "step_000003.safetensors", fresh.module).step == 3


def test_train_in_bf16_has_finite_losses_and_keeps_its_precision_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TRAIN, "--steps", "2", "--device", "cpu", "--precision", "bf16", "--out", str(run)]) == 0
    config = _config(run)
    assert config["precision"] == "bf16" and config["precision_resolved"] == "bf16"
    losses = _losses(run)
    assert losses and all(math.isfinite(loss) for loss in losses)
    capsys.readouterr()
    assert main([*TRAIN, "--steps", "3", "--device", "cpu", "--out", str(run)]) == 2  # fp32 now: refused
    assert "precision_resolved: 'bf16' → 'fp32'" in capsys.readouterr().err


def test_train_precision_auto_is_resolved_and_recorded(tmp_path):
    run = tmp_path / "run"
    assert main([*TRAIN, "--steps", "1", "--eval-clips", "0", "--device", "cpu", "--precision", "auto", "--out",
                 str(run)]) == 0
    assert _config(run)["precision"] == "auto"
    assert _config(run)["precision_resolved"] == resolve_precision("auto", "cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_track_on_a_device_records_it(device, trained, tmp_path):
    out = tmp_path / "track"
    assert main(["track", "--model", MODEL, "--checkpoints", str(trained), "--data", DATA, "--layers", "stage",
                 "--pairs", "8", "--bootstrap", "0", "--workers", "0", "--device", device, "--out", str(out),
                 "--quiet"]) == 0
    meta = json.loads((out / "track.json").read_text())["meta"]
    assert meta["device"] == str(resolve_device(device)) and meta["precision"] == "fp32"
    assert meta["workers"] == 0 and meta["steps"] == [0, 2, 4]


def test_track_pairs_made_in_workers_are_the_same_pairs():
    spec = stlens.load_model(MODEL, frames=4, size=32).input
    pairs = stlens.make_pairs(stlens.open_data(DATA), spec, 8, seed=1)
    main_process = cache_pairs(pairs)
    in_workers = cache_pairs(stlens.make_pairs(stlens.open_data(DATA), spec, 8, seed=1), workers=2, seed=1)
    assert len(main_process) == len(in_workers) == 16
    for ours, theirs in zip(in_workers, main_process, strict=True):
        assert (ours.factor, ours.index) == (theirs.factor, theirs.index)
        assert torch.equal(ours.a, theirs.a) and torch.equal(ours.b, theirs.b)


def test_stylize_records_the_neural_stylizer_device(tmp_path, small_video):
    root = tmp_path / "neural"
    argv = ["stylize", "--data", str(small_video), "--stylizer", "neural", "--styles", "1", "--frames-max", "2",
            "--short-side", "24", "--out", str(root), "--quiet"]
    assert main([*argv, "--device", "cpu"]) == 0
    record = json.loads((root / "stylize.json").read_text())
    assert record["device"] == "cpu" and record["precision"] == "fp32" and record["result"]["written"] == 1
    assert main([*argv, "--device", "cpu", "--precision", "bf16"]) == 2  # other frames: refused before any work
    assert main([*argv, "--device", "cpu", "--precision", "auto"]) == 0  # auto on a CPU is fp32 for the stylizer
    assert json.loads((root / "stylize.json").read_text())["precision"] == "fp32"
    other = tmp_path / "palette"
    assert main(["stylize", "--data", str(small_video), "--stylizer", "palette", "--styles", "1", "--frames-max", "2",
                 "--out", str(other), "--device", "cpu", "--quiet"]) == 0
    record = json.loads((other / "stylize.json").read_text())
    assert record["device"] is None and record["precision"] is None  # numpy/OpenCV: no device used


def test_neural_stylizer_in_bf16_stays_close_to_fp32():
    from stlens.video.neural import NeuralStylizer

    clip = (np.random.default_rng(0).random((2, 24, 32, 3)) * 255).astype(np.uint8)
    fast = {"steps_first": 5, "steps_next": 2, "size": 24}
    fp32 = NeuralStylizer(**fast)(clip, 3)
    bf16 = NeuralStylizer(**fast, device=torch.device("cpu"), precision="bf16")(clip, 3)
    assert bf16.shape == clip.shape and bf16.dtype == np.uint8
    assert np.abs(bf16.astype(float) - fp32.astype(float)).mean() < 8


def test_pairs_check_records_the_neural_stylizer_device(tmp_path, small_video):
    out = tmp_path / "check.json"
    assert main(["pairs", "check", "--data", str(small_video), "--stylizer", "palette,neural", "--pairs", "1",
                 "--frames", "3", "--size", "24", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["precision"] == "fp32" and set(report["stylizers"]) == {
        "palette", "neural"}


@pytest.mark.parametrize("device", DEVICES)
def test_visualize_on_a_device_records_it(device, tmp_path):
    out = tmp_path / "viz"
    assert main([*VISUALIZE, "--device", device, "--out", str(out)]) == 0
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["device"] == str(resolve_device(device)) and config["precision"] == "fp32"
    record = json.loads((out / "class_0" / "result.json").read_text())
    assert record["status"] == "ok" and math.isfinite(record["objective_value"])


def test_visualize_records_the_resolved_precision(tmp_path):
    out = tmp_path / "viz"
    assert main([*VISUALIZE, "--device", "cpu", "--precision", "auto", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["precision"] == resolve_precision("auto", "cpu")


@pytest.mark.parametrize("verb", ["train", "track", "stylize", "pairs check", "visualize"])
def test_fp16_on_the_cpu_is_refused_before_any_work(verb, tmp_path, capsys, small_video):
    out = tmp_path / "out"
    argv = {
        "train": [*TRAIN, "--steps", "1", "--out", str(out)],
        "track": ["track", "--model", MODEL, "--checkpoints", str(tmp_path), "--data", DATA, "--out", str(out)],
        "stylize": ["stylize", "--data", str(small_video), "--stylizer", "neural", "--out", str(out)],
        "pairs check": ["pairs", "check", "--data", str(small_video), "--stylizer", "neural", "--out",
                        str(out / "check.json")],
        "visualize": [*VISUALIZE, "--out", str(out)],
    }[verb]
    assert main([*argv, "--device", "cpu", "--precision", "fp16"]) == 2
    assert "--precision fp16 is CUDA autocast only" in capsys.readouterr().err
    assert not out.exists()
