"""``stlens perturb`` at scale: under torchrun (2 gloo processes on the CPU) the ranks split the batches and rank 0
writes the same perturb.csv as one process; ``workers`` 2 gives the same result as ``workers`` 0; a rank that fails
stops the run and nothing is written."""

from __future__ import annotations

import json

import pytest
from launch import torchrun

import stlens
from stlens.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = ["--model", "stlens:i3d", "--weights", "bundled:i3d-appearance"]
# 22 clips in batches of 5: batches 0-1 (10 clips) on rank 0, 2-4 (12 clips, the last one short) on rank 1
DATA = "synth:appearance?split=test&n=22&seed=4"
SETTINGS_DIFFER = ("processes", "started", "arguments")  # arguments: --out
ARGS = ["--data", DATA, "--perturbations", "shuffle,freeze,palette,static-mix", "--batch-size", "5", "--bootstrap",
        "200", "--seed", "1", "--device", "cpu", "--quiet"]


def test_torchrun_two_processes_write_what_one_process_writes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["perturb", *MODEL, *ARGS, "--out", str(one)]) == 0
    run = torchrun(["perturb", *MODEL, *ARGS, "--out", str(two)])
    assert run.returncode == 0, run.stderr[-3000:]
    assert (two / "perturb.csv").read_text() == (one / "perturb.csv").read_text()  # every number, exactly
    single, split = (json.loads((d / "perturb.json").read_text()) for d in (one, two))
    assert split["rows"] == single["rows"] and split["settings"]["processes"] == 2
    assert single["settings"]["processes"] == 1 and split["timing"]["forwards"] == single["timing"]["forwards"]
    assert {k: v for k, v in split["settings"].items() if k not in SETTINGS_DIFFER} == \
        {k: v for k, v in single["settings"].items() if k not in SETTINGS_DIFFER}
    mixed = next(r for r in single["rows"] if r["perturbation"] == "static-mix")
    assert mixed["clips"] == 22 and 0 < mixed["follow_rate"] < 1  # every batch holds other classes; some follow


def test_workers_give_the_result_of_the_main_process():
    kwargs = dict(weights="bundled:i3d-appearance", perturbations="shuffle,palette,static-mix", batch_size=5,
                  bootstrap=100, seed=2, progress=False)
    here = stlens.perturb("stlens:i3d", "synth:appearance?split=test&n=12&seed=6", workers=0, **kwargs)
    made = stlens.perturb("stlens:i3d", "synth:appearance?split=test&n=12&seed=6", workers=2, **kwargs)
    assert made.csv_text() == here.csv_text() and made.settings["workers"] == 2


def test_a_failing_rank_stops_the_run_and_nothing_is_written(tmp_path):
    out = tmp_path / "run"
    run = torchrun(["perturb", "--model", "module:failing_classifier:build", "--frames", "8", "--size", "16",
                    "--data", "synth:appearance?n=12&seed=0", "--perturbations", "freeze", "--batch-size", "3",
                    "--bootstrap", "0", "--device", "cpu", "--quiet", "--out", str(out)], env={"FAIL_ON_RANK": "1"})
    assert run.returncode != 0 and "planted failure" in run.stderr, run.stderr[-3000:]
    assert not (out / "perturb.csv").exists()


def test_torchrun_track_ap_of_a_vis_model_is_that_of_one_process(tmp_path):
    """Track AP has no per-clip score: the ranks' matches are joined in rank order before AP and its resamples."""
    one, two = tmp_path / "one", tmp_path / "two"
    argv = ["perturb", "--model", "stlens:vis?classes=4&width=32&queries=10", "--weights", "bundled:vis-appearance",
            "--data", "synth:appearance?task=instances&frames=8&size=64&split=test&n=10", "--perturbations",
            "freeze,static-mix", "--batch-size", "3", "--bootstrap", "50", "--device", "cpu", "--quiet"]
    assert main([*argv, "--out", str(one)]) == 0
    run = torchrun([*argv, "--out", str(two)])
    assert run.returncode == 0, run.stderr[-3000:]
    assert (two / "perturb.csv").read_text() == (one / "perturb.csv").read_text()
