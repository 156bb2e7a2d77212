"""stlens track / BiasTracker: the convergence rule by hand, and end to end on a tiny training run (CLI + callback)."""

from __future__ import annotations

import csv
import json

import pytest

import stlens
from stlens.cli import main
from stlens.errors import StlensError
from stlens.train import TrainConfig, Trainer, load_checkpoint
from stlens.train.tracking import COLUMNS, convergence

MODEL = "module:conftest:tiny_classifier"
DATA = "synth:motion?n=16&frames=8&size=16&seed=0"


def row(step: int, dynamic: float, static: float, ci: tuple | None = None) -> dict:
    lo_d, hi_d, lo_s, hi_s = ci if ci else (None, None, None, None)
    return {"step": step, "dynamic": dynamic, "static": static, "dynamic_lo": lo_d, "dynamic_hi": hi_d,
            "static_lo": lo_s, "static_hi": hi_s}


def test_convergence_is_the_first_step_after_which_both_stay_in_the_final_ci():
    rows = [row(0, 30, 10), row(10, 12, 32), row(20, 20, 32), row(30, 11, 33), row(40, 12, 32, (10, 14, 30, 34))]
    found = convergence(rows[::-1])  # order does not matter
    assert found["step"] == 30 and found["percent_of_training"] == 75.0 and found["final_step"] == 40
    rows[2] = row(20, 13, 31)  # now 10, 20, 30, 40 all inside: converged at step 10 = 25% of training
    assert convergence(rows)["step"] == 10 and convergence(rows)["percent_of_training"] == 25.0
    rows[-2] = row(30, 12, 35)  # the step just before the end leaves the static CI
    assert convergence(rows)["step"] == 40 and convergence(rows)["percent_of_training"] == 100.0
    # without bootstrap CIs the band is the final point itself
    assert convergence([row(0, 5, 5), row(5, 12, 32), row(10, 12, 32)])["step"] == 5
    with pytest.raises(StlensError):
        convergence([])


def test_track_cli_and_bias_tracker_on_a_tiny_training_run(tmp_path):
    run = tmp_path / "run"
    handle_pairs = stlens.make_pairs(stlens.open_data(DATA), stlens.load_model(MODEL, frames=8, size=16).input, 8,
                                     seed=3)
    tracker = stlens.BiasTracker(handle_pairs, ["stem", "stage"], every=2, bootstrap=20, seed=3)
    config = TrainConfig(model=MODEL, data=DATA, test_data=None, steps=4, out=str(run), checkpoint_every=2,
                         batch_size=4, frames=8, size=16, eval_clips=4, lr=1e-2, warmup=1)
    Trainer(config, [tracker], progress=False).train()

    out = tmp_path / "track"
    assert main(["track", "--model", MODEL, "--checkpoints", str(run), "--data", DATA, "--layers", "stem,stage",
                 "--pairs", "8", "--bootstrap", "20", "--seed", "3", "--out", str(out), "--quiet"]) == 0
    with open(out / "track.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS
    assert [(int(r["step"]), r["layer"]) for r in rows] == [(s, layer) for s in (0, 2, 4) for layer in ("stem",
                                                                                                        "stage")]
    saved = json.loads((out / "track.json").read_text())
    assert set(saved["convergence"]) == {"stem", "stage"} and saved["meta"]["steps"] == [0, 2, 4]
    for layer in ("stem", "stage"):
        mine = [r for r in saved["rows"] if r["layer"] == layer]
        assert saved["convergence"][layer] == convergence(mine)
        assert (out / f"track_{layer}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # an independent measurement of one checkpoint, with the same pairs and seed, gives the same row
    handle = stlens.load_model(MODEL, frames=8, size=16)
    load_checkpoint(run / "checkpoints" / "step_000002.safetensors", handle.module)
    direct = stlens.measure(handle, handle_pairs, ["stage"], bootstrap=20, seed=3, progress=False)["stage"]
    tracked = next(r for r in saved["rows"] if r["step"] == 2 and r["layer"] == "stage")
    assert (tracked["dynamic"], tracked["static"]) == (direct.percent["dynamic"], direct.percent["static"])
    assert [tracked["dynamic_lo"], tracked["dynamic_hi"]] == direct.ci95["dynamic"]
    assert tracked["units_static"] == direct.units["static"]

    # the live callback measured the same models on the same pairs: the same table
    live = tracker.result()
    assert sorted((r["step"], r["layer"], r["dynamic"], r["static"]) for r in live.rows) == \
        sorted((r["step"], r["layer"], r["dynamic"], r["static"]) for r in saved["rows"])


def test_track_cli_errors(tmp_path, capsys):
    assert main(["track", "--model", MODEL, "--checkpoints", str(tmp_path), "--data", DATA, "--out",
                 str(tmp_path / "o"), "--quiet"]) == 2
    assert "no step_NNNNNN" in capsys.readouterr().err
    assert main(["track", "--model", MODEL, "--checkpoints", str(tmp_path / "missing"), "--data", DATA, "--out",
                 str(tmp_path / "o"), "--quiet"]) == 2
    with pytest.raises(StlensError, match="every"):
        stlens.BiasTracker([], every=0)
