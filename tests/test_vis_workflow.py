"""A VIS model on the instance world, end to end: train, measure, evaluate, ablate and report, from the CLI and from
Python, on real run folders (the issue's "a fresh clone trains, measures, ablates and reports a VIS model")."""

from __future__ import annotations

import json
import re

import pytest

import stlens
from stlens.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "stlens:vis?width=8&queries=4&depth=1"
TRAIN = "synth:motion?task=instances&frames=4&size=32&n=16"
TEST = "synth:motion?task=instances&frames=4&size=32&n=8&split=test"
SHAPE = ["--frames", "4", "--size", "32"]
LAYERS = "stage3,decoder.0"


def _checkpoint(run) -> str:
    return str(sorted((run / "checkpoints").glob("step_*[0-9].safetensors"))[-1])


def test_the_cli_trains_measures_evaluates_ablates_and_reports(tmp_path):
    train, measured, evaluated, ablated = (tmp_path / name for name in ("train", "measure", "evaluate", "ablate"))
    assert main(["train", "--model", MODEL, "--data", TRAIN, "--task", "instances", *SHAPE, "--steps", "4",
                 "--batch-size", "4", "--eval-clips", "4", "--quiet", "--out", str(train)]) == 0
    weights = _checkpoint(train)
    assert main(["measure", "--model", MODEL, "--weights", weights, *SHAPE, "--data", TRAIN, "--layers", LAYERS,
                 "--pairs", "8", "--batch-size", "4", "--quiet", "--out", str(measured)]) == 0
    assert main(["evaluate", "--model", MODEL, "--weights", weights, *SHAPE, "--data", TEST, "--bootstrap", "20",
                 "--quiet", "--out", str(evaluated)]) == 0
    assert main(["ablate", "--model", MODEL, "--weights", weights, *SHAPE, "--data", TEST, "--from", str(measured),
                 "--layers", "decoder.0", "--select", "dynamic,random", "--k", "50", "--draws", "1",
                 "--bootstrap", "20", "--quiet", "--out", str(ablated)]) == 0
    report = tmp_path / "report.html"
    assert main(["report", str(train), str(measured), str(ablated), "--out", str(report)]) == 0

    config = json.loads((train / "config.json").read_text())
    assert config["task"] == "instances"
    result = json.loads((measured / "result.json").read_text())
    assert [layer["layer"] for layer in result["layers"]] == ["stage3", "decoder.0"]
    evaluation = json.loads((evaluated / "evaluation.json").read_text())
    assert evaluation["task"] == "instances" and 0.0 <= evaluation["metrics"]["ap"] <= 1.0
    assert set(evaluation["ci95"]) >= {"ap", "ap50", "ap75", "ar1", "ar10"}
    ablation = json.loads((ablated / "ablation.json").read_text())
    assert ablation["metrics"][0] == "ap" and ablation["settings"]["intervals"] == "videos"
    html = report.read_text()
    assert "decoder.0" in html and re.search(r"\bAP\b", html)


def test_python_trains_measures_evaluates_and_ablates(tmp_path):
    stlens.train(MODEL, TRAIN, task="instances", steps=2, batch_size=4, eval_clips=4, frames=4, size=32,
                 out=tmp_path / "train", progress=False)
    weights = _checkpoint(tmp_path / "train")
    measured = stlens.measure(MODEL, TRAIN, weights=weights, frames=4, size=32, layers=LAYERS, pairs=8, batch_size=4,
                              progress=False, out=tmp_path / "measure")
    assert [layer.layer for layer in measured.layers] == ["stage3", "decoder.0"]
    evaluated = stlens.evaluate(MODEL, TEST, weights=weights, frames=4, size=32, bootstrap=20, progress=False)
    assert set(evaluated.metrics) >= {"ap", "ap50", "ap75", "ar1", "ar10"}
    ablated = stlens.ablate(MODEL, TEST, measured, "decoder.0", ["dynamic", "random"], [50], draws=1, bootstrap=20,
                            weights=weights, frames=4, size=32, progress=False)
    assert ablated.metrics[0] == "ap" and {row["select"] for row in ablated.rows} >= {"dynamic", "random"}
