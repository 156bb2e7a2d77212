"""A tiny video net for tests that run stlens in subprocesses (``module:stopping_net:build`` with ``tests`` on
PYTHONPATH). Environment variables plant events: ``FAIL_ON_RANK=R`` makes the forward of rank R raise;
``STOP_AT_FORWARD=K`` sends SIGTERM at the K-th forward (of rank 0) to this process, or to its whole process group
with ``STOP_GROUP=1`` (as a scheduler stops a job)."""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

_forwards = 0


class StoppingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv3d(6, 8, 3, stride=(1, 2, 2), padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global _forwards
        _forwards += 1
        rank = os.environ.get("RANK", "0")
        if os.environ.get("FAIL_ON_RANK") == rank:
            raise ValueError("planted failure")
        if rank == "0" and str(_forwards) == os.environ.get("STOP_AT_FORWARD"):
            if os.environ.get("STOP_GROUP"):
                os.killpg(os.getpgid(0), signal.SIGTERM)
            else:
                os.kill(os.getpid(), signal.SIGTERM)
        return self.stage(self.stem(x)).mean(dim=(2, 3, 4))


def build() -> nn.Module:
    torch.manual_seed(0)
    return StoppingNet()
