"""Preemption-safe measurements (--checkpoint-every, --resume): a run stopped by SIGTERM and resumed gives the
result of an uninterrupted run; checkpoints are never lost or mixed up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from launch import RUN_FIELDS, with_tests, without

from stlens.cli import main
from stlens.core.distributed import World
from stlens.errors import StlensError
from stlens.measure.accumulator import Accumulator
from stlens.measure.checkpoint import Checkpoint

BASE = ["--model", "module:stopping_net:build", "--frames", "4", "--size", "32", "--pairs", "16", "--bootstrap",
        "20", "--data", "synth:motion?split=test&n=16&frames=4&size=32"]
VARYING = (*RUN_FIELDS, "interrupted")


def stlens_measure(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stlens", "measure", *BASE, "--quiet", *args],
                          env=os.environ | {"PYTHONPATH": with_tests()} | (env or {}), capture_output=True, text=True,
                          timeout=300)


def comparable(out: Path) -> dict:
    return without(json.loads((out / "result.json").read_text()), VARYING)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("whole") / "run"
    run = stlens_measure("--workers", "0", "--batch-size", "3", "--out", str(out))
    assert run.returncode == 0, run.stderr
    return comparable(out)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_run_stopped_by_sigterm_and_resumed_equals_an_uninterrupted_one(tmp_path, uninterrupted, workers):
    out = tmp_path / "run"
    args = ["--workers", workers, "--batch-size", "3", "--checkpoint-every", "5", "--out", str(out)]
    stopped = stlens_measure(*args, env={"STOP_AT_FORWARD": "4"})  # SIGTERM during the 4th forward
    assert stopped.returncode == 130, stopped.stderr
    checkpoint = out / ".stlens-checkpoint" / "rank-0-of-1.npz"
    assert checkpoint.exists() and "continue with --resume" in stopped.stderr
    with np.load(checkpoint, allow_pickle=False) as npz:
        assert int(npz["position"]) == 9  # three whole batches of 3: the 4th never entered
    resumed = stlens_measure(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(out) == uninterrupted  # r included: the same batches, the same float operations
    assert not (out / ".stlens-checkpoint").exists()
    assert json.loads((out / "config.json").read_text())["resumed_after_pairs"] == 9


def test_a_checkpoint_is_never_overwritten_by_a_run_that_does_not_resume_it(tmp_path):
    out = tmp_path / "run"
    stopped = stlens_measure("--workers", "0", "--checkpoint-every", "4", "--out", str(out),
                             env={"STOP_AT_FORWARD": "3"})
    assert stopped.returncode == 130
    saved = (out / ".stlens-checkpoint" / "rank-0-of-1.npz").read_bytes()
    again = stlens_measure("--workers", "0", "--out", str(out))
    assert again.returncode == 2 and "continue it with --resume" in again.stderr and "Traceback" not in again.stderr
    other_seed = stlens_measure("--workers", "0", "--seed", "3", "--resume", "--out", str(out))
    assert other_seed.returncode == 2 and "--seed: 0 there, 3 now" in other_seed.stderr
    assert (out / ".stlens-checkpoint" / "rank-0-of-1.npz").read_bytes() == saved


def test_resume_without_a_checkpoint_starts_at_the_first_pair(tmp_path, uninterrupted):
    out = tmp_path / "run"
    run = stlens_measure("--workers", "0", "--batch-size", "3", "--resume", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert comparable(out) == uninterrupted


def test_a_negative_checkpoint_period_is_refused(tmp_path, capsys):
    assert main(["measure", *BASE[:2], "--data", "sample:", "--checkpoint-every", "-1", "--out",
                 str(tmp_path / "r")]) == 2
    assert "--checkpoint-every must be ≥ 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def random_batches(seed: int, batches: int = 5, n: int = 4, channels: int = 3):
    rng = np.random.default_rng(seed)
    for k in range(batches):
        factor = np.array([k % 2] * n)
        yield factor, np.arange(k * n, (k + 1) * n), {"x": rng.normal(size=(2 * n, channels)) + 50.0}


def test_accumulators_split_and_merged_equal_one_and_survive_a_checkpoint(tmp_path):
    whole = Accumulator(bootstrap=7, seed=2, save_latents=True)
    first, second = Accumulator(7, 2, True), Accumulator(7, 2, True, position=8)
    for k, (factor, index, pooled) in enumerate(random_batches(0)):
        whole.add(factor, index, pooled)
        (first if k < 2 else second).add(factor, index, pooled)
    saver = Checkpoint(tmp_path, 0, World(), {"seed": 2})
    saver.save(first)
    back = Checkpoint(tmp_path, 0, World(), {"seed": 2}).load()
    assert back.position == 8 and back.factors == first.factors
    merged = back.merge(second)
    assert merged.factors == whole.factors
    np.testing.assert_allclose(merged.moments["x"].sums, whole.moments["x"].sums, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(merged.moments["x"].boot_sums, whole.moments["x"].boot_sums, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(merged.latents()["x/a"], whole.latents()["x/a"])
    with pytest.raises(StlensError, match="`seed`: 2 there, 5 now"):
        Checkpoint(tmp_path, 0, World(), {"seed": 5}).load()
    with pytest.raises(StlensError, match="number of processes"):
        Checkpoint(tmp_path, 0, World(0, 2), {"seed": 2}).load()
