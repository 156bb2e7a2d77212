"""The tests' tiny classifier (``conftest.TinyClassifier``, the same weights and checkpoints) for runs in
subprocesses (``module:failing_classifier:build`` with ``tests`` on PYTHONPATH): ``FAIL_ON_RANK=R`` makes the forward
of rank R raise, as a rank of a torchrun run that fails."""

from __future__ import annotations

import os

import torch
from conftest import TinyClassifier


class FailingClassifier(TinyClassifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.environ.get("FAIL_ON_RANK") == os.environ.get("RANK", "0"):
            raise ValueError("planted failure")
        return super().forward(x)


def build() -> FailingClassifier:
    return FailingClassifier()
