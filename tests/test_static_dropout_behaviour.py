"""benchmarks/static_dropout_behaviour.py: the tables are mean ± sd over seeds of the saved perturb runs with paired
differences by seed, a finished perturb run is not redone (the script resumes) and an untrained arm is skipped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from static_dropout_behaviour import PERTURBATIONS, collect, data_spec, run_all, stat, tables  # noqa: E402

from stlens.perturb.result import PerturbResult  # noqa: E402


def settings(out: Path, seeds: str = "0,1") -> argparse.Namespace:
    return argparse.Namespace(out=str(out), model="stlens:i3d?width=8", frames=8, size=32, world="confounded",
                              speed="3-4", arms="baseline,random,static", seeds=seeds, tag="",
                              splits="confounded,broken", clips=16, bootstrap=10, seed=0)


def fake_perturb(folder: Path, clean: float, retention: float) -> None:
    chance = 0.125
    rows = [{"perturbation": "clean", "kind": "clean", "metric": "top1", "score": clean, "retention": 1.0,
             "retention_lo": 1.0, "retention_hi": 1.0, "follow_rate": float("nan")}]
    for name in PERTURBATIONS:
        rows.append({"perturbation": name, "kind": "motion", "metric": "top1",
                     "score": chance + retention * (clean - chance), "retention": retention,
                     "retention_lo": retention - 0.05, "retention_hi": retention + 0.05,
                     "follow_rate": 0.02 if name == "static-mix" else float("nan")})
    result = PerturbResult(settings={"data": "synth:x", "clips": 16}, metrics=["top1"], rows=rows,
                           timing={"seconds": 1.0})
    result.save(folder)


def test_data_specs_are_the_benchmark_splits(tmp_path):
    args = settings(tmp_path)
    assert data_spec(args, "broken") == "synth:confounded?split=test&n=16&frames=8&size=32&speed=3-4"
    assert data_spec(args, "confounded") == "synth:confounded?seed=1&n=16&frames=8&size=32&speed=3-4"


def test_tables_mean_sd_and_paired_differences(tmp_path):
    args = settings(tmp_path)
    values = {("baseline", 0): 0.2, ("baseline", 1): 0.4, ("random", 0): 0.3, ("random", 1): 0.4,
              ("static", 0): 0.1, ("static", 1): 0.3}
    for (arm, seed), retention in values.items():
        fake_perturb(tmp_path / "perturb" / "confounded" / f"{arm}_seed{seed}", 1.0, retention)
    records = collect(args, tmp_path)
    assert len(records) == 6
    text, summary = tables(records, ["confounded", "broken"])
    assert "broken" not in summary
    arms = summary["confounded"]["arms"]
    assert arms["baseline"]["freeze"] == pytest.approx([0.2, 0.4])
    assert arms["static"]["clean"] == pytest.approx([100.0, 100.0])
    paired = summary["confounded"]["paired"]
    assert list(paired) == ["random - baseline", "static - baseline", "static - random"]
    assert paired["static - baseline"]["shuffle"] == pytest.approx([-0.1, -0.1])
    assert paired["static - random"]["appearance-free"] == pytest.approx([-0.2, -0.1])
    assert "| baseline | 0,1 | 100.0 ± 0.0 (100.0, 100.0) | 0.30 ± 0.14 (0.20, 0.40) |" in text
    assert "| static − random | 0,1 |" in text


def test_stat_over_many_seeds_gives_a_t_interval():
    assert stat([0.1, 0.2, 0.3], 2) == "0.20 ± 0.10 (0.10, 0.20, 0.30)"
    text = stat([0.01 * k for k in range(-2, 8)], 2, signed=True)
    assert text.startswith("+0.03 [") and text.endswith("(7 up, 2 down)")


def test_finished_runs_are_skipped_and_untrained_arms_listed(tmp_path, capsys, monkeypatch):
    args = settings(tmp_path, seeds="0")
    args.splits = "broken"
    for arm in ("baseline", "random"):
        fake_perturb(tmp_path / "perturb" / "broken" / f"{arm}_seed0", 0.6, 0.5)

    def refuse(*_, **__):
        raise AssertionError("a finished or untrained run was started")

    monkeypatch.setattr("static_dropout_behaviour.subprocess.run", refuse)
    run_all(args, tmp_path)
    assert "skip broken static seed 0: no checkpoint yet" in capsys.readouterr().out
