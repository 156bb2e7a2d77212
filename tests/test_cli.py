"""End to end through the CLI on the real sample videos."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from stlens.cli import main

FAST = ["--model", "torchvision:r3d_18", "--frames", "4", "--size", "32", "--pairs", "8", "--bootstrap", "20",
        "--quiet"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stlens", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for name in ("first", "second"):
        code = main(["measure", *FAST, "--data", "sample:", "--save-latents", "--out", str(out / name)])
        assert code == 0
    return out


def test_same_seed_gives_identical_result_json(two_runs):
    first = json.loads((two_runs / "first" / "result.json").read_text())
    second = json.loads((two_runs / "second" / "result.json").read_text())
    first.pop("timing"), second.pop("timing"), first.pop("run_id"), second.pop("run_id")
    assert first == second
    assert [layer["layer"] for layer in first["layers"]] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert first["pairs"] == {"dynamic": 8, "static": 8} and first["skipped"] == []


def recompute_dims(a: np.ndarray, b: np.ndarray, factor: np.ndarray) -> tuple[int, int, int]:
    """docs/formats.md §1 written out again from latents.npz."""
    z = np.concatenate([a, b]).astype(np.float64)
    sigma2 = z.var(axis=0).sum()
    scores = []
    for f in (0, 1):
        x, y = a[factor == f].astype(np.float64), b[factor == f].astype(np.float64)
        mu = (x.mean(0) + y.mean(0)) / 2
        scores.append(((x - mu) * (y - mu)).mean(0).sum() / sigma2)
    e = np.exp(np.array([scores[0], scores[1], 1.0]) - max(scores[0], scores[1], 1.0))
    p = e / e.sum()
    c = a.shape[1]
    d, s = math.floor(p[0] * c), math.floor(p[1] * c)
    return d, s, c - d - s


def test_dims_recomputed_from_latents_match_result(two_runs):
    result = json.loads((two_runs / "first" / "result.json").read_text())
    with np.load(two_runs / "first" / "latents.npz") as latents:
        factor = latents["factor"]
        assert factor.tolist().count(0) == 8 and factor.tolist().count(1) == 8
        for layer in result["layers"]:
            a, b = latents[f"{layer['layer']}/a"], latents[f"{layer['layer']}/b"]
            assert a.dtype == np.float32 and a.shape == (16, layer["channels"])
            dims = layer["dims"]
            assert recompute_dims(a, b, factor) == (dims["dynamic"], dims["static"], dims["residual"])


def test_units_and_layers_csv(two_runs):
    units = (two_runs / "first" / "units.csv").read_text().splitlines()
    assert units[0] == "layer,channel,r_dynamic,r_static,class"
    assert len(units) == 1 + 64 + 64 + 128 + 256 + 512
    layers = (two_runs / "first" / "layers.csv").read_text().splitlines()
    assert layers[0].startswith("layer,channels,score_dynamic,score_static,dims_dynamic")
    assert len(layers) == 6
    config = json.loads((two_runs / "first" / "config.json").read_text())
    assert config["arguments"]["pairs"] == 8 and config["input"]["frames"] == 4


def test_skipped_and_all_bad_inputs(tmp_path, small_video):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"\x00" * 100)
    proc = run_cli("measure", *FAST, "--data", str(bad), "--out", str(tmp_path / "out_bad"))
    assert proc.returncode != 0
    assert "no usable video" in proc.stderr and "broken.mp4" in proc.stderr
    assert "Traceback" not in proc.stderr

    (bad / "good.mp4").write_bytes(small_video.read_bytes())
    proc = run_cli("measure", *FAST, "--data", str(bad), "--out", str(tmp_path / "out_mixed"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out_mixed" / "result.json").read_text())
    assert [s["source"].endswith("broken.mp4") for s in result["skipped"]] == [True]
    assert "cannot decode" in result["skipped"][0]["reason"]


def test_bad_options_give_clear_errors(tmp_path):
    proc = run_cli("measure", *FAST, "--data", "sample:", "--layers", "layer5", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "unknown layer 'layer5'" in proc.stderr and "layer4" in proc.stderr
    proc = run_cli("measure", *FAST[:-3], "--pairs", "3", "--data", "sample:", "--out", str(tmp_path / "y"))
    assert proc.returncode == 2 and "at least 4 per factor" in proc.stderr


def test_layers_command_lists_shapes():
    proc = run_cli("layers", "torchvision:r3d_18", "--frames", "4", "--size", "32")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("* layer4 ") and "(1, 512, 1, 2, 2)" in line for line in lines)
    assert any(line.startswith("  layer1.0.conv1.0 ") for line in lines)


@pytest.mark.slow
def test_done_when_command_on_r3d_18_full_size(tmp_path):
    """The issue's acceptance command at the family's full input size, twice (about 5 minutes on 2 cores)."""
    args = ["measure", "--model", "torchvision:r3d_18", "--data", "sample:", "--pairs", "48", "--layers", "default",
            "--save-latents", "--quiet"]
    for name in ("one", "two"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    one.pop("timing"), two.pop("timing"), one.pop("run_id"), two.pop("run_id")
    assert one == two
    with np.load(tmp_path / "one" / "latents.npz") as latents:
        for layer in one["layers"]:
            dims = recompute_dims(latents[f"{layer['layer']}/a"], latents[f"{layer['layer']}/b"], latents["factor"])
            assert dims == (layer["dims"]["dynamic"], layer["dims"]["static"], layer["dims"]["residual"])
