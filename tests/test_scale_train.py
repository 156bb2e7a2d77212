"""``stlens train`` under torchrun (2 gloo processes on the CPU, docs/scaling.md): data-parallel steps on contiguous
pieces of the global batch give the weights and losses of one process (float rounding), rank 0 writes checkpoints
that load, a failing rank stops every rank, and an interrupted run resumes from its last complete checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import torchrun, with_tests

from stlens.train import TrainConfig, list_checkpoints, load_checkpoint, train
from stlens.train.checkpoints import read_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "synth:motion?n=32&frames=4&size=32&seed=0"
ARGS = ["--model", "module:stopping_net:build", "--data", DATA, "--frames", "4", "--size", "32", "--batch-size", "4",
        "--eval-clips", "8", "--checkpoint-every", "2", "--device", "cpu", "--quiet"]
# StaticDropout re-selected every 2 steps: measured by both ranks together, the masks of each rank's piece
DROPOUT = ["--static-dropout", "stem:p=0.5:select=topk:2:every=2:pairs=8", "--workers", "0"]
WEIGHT_TOLERANCE = 1e-6  # measured: 5e-8 after 3 steps (float rounding of the gradient average)

LATE_FAILURE = '''
import os
import torch
from torch import nn

class LateFailure(nn.Module):
    """Fails on rank FAIL_ON_RANK at its FAIL_AT-th forward (in the middle of training)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        if os.environ.get("RANK") == os.environ.get("FAIL_ON_RANK") and self.forwards == int(os.environ["FAIL_AT"]):
            raise ValueError("planted failure in training")
        return self.conv(x).mean(dim=(2, 3, 4))

def build():
    torch.manual_seed(0)
    return LateFailure()
'''


def torchrun_train(args: list[str], env: dict[str, str] | None = None, **popen):
    return torchrun(["train", *args], 2, env, **popen)


def one_process(out: Path, steps: int) -> None:
    train(TrainConfig(model="module:stopping_net:build", data=DATA, steps=steps, out=str(out), frames=4, size=32,
                      batch_size=4, eval_clips=8, checkpoint_every=2, device="cpu", workers=0,
                      static_dropout=DROPOUT[1]), progress=False)


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return read_tensors(out / "checkpoints" / f"step_{step:06d}.safetensors")


def assert_close_weights(one: Path, other: Path, step: int) -> None:
    a, b = weights(one, step), weights(other, step)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= WEIGHT_TOLERANCE, (step, worst)


def train_lines(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "train"]


def test_a_failing_rank_stops_every_rank(tmp_path):
    (tmp_path / "late_failure.py").write_text(LATE_FAILURE)
    out = tmp_path / "run"
    args = [*ARGS, "--steps", "6", "--out", str(out)]
    args[args.index("module:stopping_net:build")] = "module:late_failure:build"
    # forwards on rank 1: the class probe (1), then one per step: it fails in step 3
    run = torchrun_train(args, env={"PYTHONPATH": with_tests(tmp_path), "FAIL_ON_RANK": "1", "FAIL_AT": "4"})
    assert run.returncode != 0
    assert "planted failure in training" in run.stderr
    assert ("(rank 0 of 2): stopped because rank 1:" in run.stderr or "(rank 0 of 2); nothing" in run.stderr
            or "(rank 0 of 2): another process" in run.stderr), run.stderr[-3000:]
    steps = [s for s, _ in list_checkpoints(out / "checkpoints")]
    assert steps and max(steps) <= 2  # nothing after the failure


def test_two_processes_train_as_one_write_checkpoints_that_load_and_resume(tmp_path):
    """2 processes for 6 steps with StaticDropout, stopped by SIGTERM in step 3 and resumed: the weights, losses
    and channel selections of one process (float rounding), rank 0's checkpoints load into a fresh model."""
    out = tmp_path / "two"
    args = [*ARGS, *DROPOUT, "--steps", "6", "--out", str(out)]
    # rank 0's forwards: probe 1, evaluation of step 0: 2-3, channel selection: 4, steps 1-2: 5-6, selection: 7,
    # evaluation of step 2: 8-9, step 3: 10
    stopped = torchrun_train(args, env={"STOP_AT_FORWARD": "10", "STOP_GROUP": "1"}, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = stopped.communicate(timeout=300)
    assert stopped.returncode != 0
    assert "interrupted (SIGTERM) (rank 0 of 2)" in stderr, stderr[-3000:]
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [0, 2]  # the last complete checkpoint stays
    one = tmp_path / "one"
    one_process(one, steps=6)
    assert_close_weights(one, out, 2)
    resumed = torchrun_train(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from step 2" in resumed.stderr
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [0, 2, 4, 6]
    assert json.loads((out / "config.json").read_text())["processes"] == 2
    assert_close_weights(one, out, 6)
    lines, expected = train_lines(out), train_lines(one)
    assert [r["step"] for r in lines] == [r["step"] for r in expected] == [6]
    assert all(np.isfinite(r["loss"]) and abs(r["loss"] - e["loss"]) < 1e-6 and r["batch_acc"] == e["batch_acc"]
               for r, e in zip(lines, expected, strict=True))
    assert (out / "dropout.jsonl").read_text() == (one / "dropout.jsonl").read_text()  # steps 0, 2, 4, 6
    import stopping_net

    assert load_checkpoint(out / "checkpoints" / "step_000006.safetensors", stopping_net.build()).step == 6
