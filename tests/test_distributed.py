"""Distributed measurements under torchrun (gloo on the CPU): 2 processes give the result of 1, a rank that fails
stops the run naming itself, an interrupt writes no result, and a checkpointed run resumes (docs/scaling.md)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import launch
import numpy as np
import pytest
from launch import RUN_FIELDS, with_tests

from stlens.cli import main
from stlens.core.distributed import World, failing_together, rank_device, shard
from stlens.errors import StlensError

SAMPLE = ["--model", "torchvision:r3d_18", "--frames", "4", "--size", "32", "--pairs", "8", "--bootstrap", "20",
          "--data", "sample:"]
SYNTH = ["--model", "stlens:i3d", "--weights", "bundled:i3d-motion", "--data", "synth:motion?split=test&n=32",
         "--pairs", "10", "--bootstrap", "20"]
VARYING = set(RUN_FIELDS)
SCORE_TOLERANCE = 1e-9


def torchrun(args: list[str], nproc: int = 2, env: dict[str, str] | None = None, **popen):
    return launch.torchrun(["measure", *args, "--quiet"], nproc, env, timeout=600, **popen)


def assert_same_result(one: dict, other: dict, path: str = "") -> None:
    """Equal result.json documents, except timing and run ids, with r (``score``) values within 1e-9."""
    if isinstance(one, dict):
        assert set(one) - VARYING == set(other) - VARYING, path
        for key in set(one) - VARYING:
            assert_same_result(one[key], other[key], f"{path}/{key}")
    elif isinstance(one, list):
        assert len(one) == len(other), path
        for i, (a, b) in enumerate(zip(one, other, strict=True)):
            assert_same_result(a, b, f"{path}[{i}]")
    elif isinstance(one, float) and "/score" in path:
        assert math.isclose(one, other, rel_tol=0, abs_tol=SCORE_TOLERANCE), (path, one, other)
    else:
        assert one == other, (path, one, other)


def result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def test_shards_cover_every_pair_once():
    for total in (0, 1, 7, 16, 33):
        for size in (1, 2, 3, 5):
            parts = [shard(total, World(rank, size)) for rank in range(size)]
            assert [k for part in parts for k in part] == list(range(total))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_one_gpu_per_process():
    assert rank_device("cpu", World(1, 2, 1)) == "cpu"
    assert rank_device("cuda:3", World(1, 2, 1)) == "cuda:3"  # an explicit GPU stays
    assert rank_device("cuda", World(0, 1, 0)) == "cuda"  # a single process: as given


class _Recorder:
    """A stand-in for a ``Group`` and a ``RunFolder``: what they were told."""

    def __init__(self):
        self.told: list[str] = []

    def fail(self, message: str) -> None:
        self.told.append(message)

    def fail_with(self, exc: BaseException) -> None:
        from stlens.core.distributed import Group

        Group.fail_with(self, exc)  # the real formatting, through fail

    def abandon(self) -> None:
        self.told.append("abandoned")


@pytest.mark.parametrize("error, told", [
    (StlensError("bad layer x"), ["bad layer x", "abandoned"]),
    (ValueError("a bug"), ["ValueError: a bug", "abandoned"]),
    (KeyboardInterrupt(), ["abandoned"]),  # torchrun forwards an interrupt to every rank: nothing to tell
])
def test_an_error_is_told_to_the_other_ranks_and_abandons_the_folder(error, told):
    group, folder = _Recorder(), _Recorder()
    with pytest.raises(type(error)), failing_together(group, folder):
        raise error
    assert group.told + folder.told == told
    with failing_together(None, None):  # one process, no folder: nothing to do
        pass


@pytest.mark.parametrize("args", [SAMPLE, SYNTH], ids=["sample-r3d_18", "synth-i3d"])
def test_two_processes_give_the_result_of_one(tmp_path, args):
    workers = "1" if args is SYNTH else "0"
    single = tmp_path / "single"
    assert main(["measure", *args, "--workers", "0", "--save-latents", "--device", "cpu", "--quiet", "--out",
                 str(single)]) == 0
    run = torchrun([*args, "--workers", workers, "--save-latents", "--device", "cpu", "--out", str(tmp_path / "two")])
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_result(result(single), result(tmp_path / "two"))
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["processes"] == 2
    with np.load(single / "latents.npz") as a, np.load(tmp_path / "two" / "latents.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        np.testing.assert_array_equal(a["factor"], b["factor"])  # global pair order
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert run.stderr.count("has random weights") <= 1  # warnings from rank 0 only


FAILING_MODULE = (Path(__file__).parent / "stopping_net.py").read_text()


def test_a_rank_that_fails_stops_the_run_and_names_itself(tmp_path):
    out = tmp_path / "run"
    run = torchrun(["--model", "module:stopping_net:build", "--frames", "4", "--size", "32", "--data", "sample:",
                    "--pairs", "200", "--bootstrap", "0", "--workers", "0", "--device", "cpu", "--out", str(out)],
                   env={"FAIL_ON_RANK": "1"})
    assert run.returncode != 0
    assert "stlens: error (rank 1 of 2):" in run.stderr and "planted failure" in run.stderr
    assert "(rank 0 of 2): stopped because rank 1:" in run.stderr or "(rank 0 of 2); nothing" in run.stderr
    assert not (out / "result.json").exists()


def test_an_interrupt_under_torchrun_writes_no_result_and_the_checkpoint_resumes(tmp_path):
    out = tmp_path / "run"
    base = ["--model", "module:stopping_net:build", "--frames", "4", "--size", "32", "--pairs", "24",
            "--bootstrap", "20", "--data", "synth:motion?split=test&n=16&frames=4&size=32", "--workers", "0",
            "--device", "cpu"]
    args = [*base, "--checkpoint-every", "4", "--out", str(out)]
    # rank 0's 4th forward sends SIGTERM to the whole job, as a scheduler does before preemption
    stopped = torchrun(args, env={"STOP_AT_FORWARD": "4", "STOP_GROUP": "1"}, start_new_session=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = stopped.communicate(timeout=300)
    assert "interrupted (SIGTERM) (rank 0 of 2)" in stderr  # (rank 1 may have finished its share and be waiting)
    assert "interrupted (SIGTERM) (rank 1 of 2)" in stderr or "error (rank 1 of 2): another process" in stderr
    assert not re.search(r'File "[^"]*/stlens/', stderr), stderr  # (torchrun prints its own SignalException)
    assert not (out / "result.json").exists()
    assert all((out / ".stlens-checkpoint" / f"rank-{r}-of-2.npz").exists() for r in (0, 1))
    resumed = torchrun([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (out / ".stlens-checkpoint").exists()  # removed once the result is complete
    assert json.loads((out / "config.json").read_text())["resumed_after_pairs"] >= 12
    single = tmp_path / "single"
    one = subprocess.run([sys.executable, "-m", "stlens", "measure", *base, "--quiet", "--out", str(single)],
                         env=os.environ | {"PYTHONPATH": with_tests()}, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    assert_same_result(result(single), result(out))


def test_a_folder_refused_on_rank_0_stops_every_rank_before_any_work(tmp_path):
    out = tmp_path / "taken"
    args = ["--model", "module:stopping_net:build", "--frames", "4", "--size", "32", "--pairs", "8", "--bootstrap",
            "0", "--data", "synth:motion?split=test&n=8&frames=4&size=32", "--workers", "0", "--device", "cpu"]
    assert torchrun([*args, "--out", str(out)]).returncode == 0
    before = (out / "result.json").read_bytes()
    again = torchrun([*args, "--out", str(out)])
    assert again.returncode != 0
    assert "stlens: error (rank 0 of 2): --out" in again.stderr and "already holds" in again.stderr
    assert "stlens: error (rank 1 of 2): rank 0 failed: --out" in again.stderr
    assert (out / "result.json").read_bytes() == before
