"""The trivial VIS baseline of benchmarks/vis_train.py: one track per class covering every instance's pixels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from stlens.core.instances import Instances
from stlens.measure.trackap import track_ap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from vis_train import union_baseline  # noqa: E402


def _clip(masks: list[np.ndarray], classes: list[int]) -> Instances:
    return Instances(np.stack(masks), classes, np.arange(1, len(classes) + 1), np.zeros(len(classes), bool))


def test_union_baseline_is_one_track_per_class_over_all_instances():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True
    b = np.zeros((2, 4, 4), bool)
    b[1, 2:, 2:] = True
    found = union_baseline(_clip([a, b], [0, 3]), num_classes=4)
    assert found.classes.tolist() == [0, 1, 2, 3] and found.scores.tolist() == [1.0] * 4
    assert all((mask == (a | b)).all() for mask in found.masks)
    empty = union_baseline(Instances.empty(2, 4, 4), num_classes=2)
    assert empty.masks.shape == (2, 2, 4, 4) and not empty.masks.any()


def test_union_baseline_ap_by_hand():
    """One object: its class's track is its mask (AP 1; the other classes have no tracks and are left out). Two
    disjoint objects of equal area: the union has IoU exactly 0.5 with each, a match at the 0.5 threshold only."""
    top = np.zeros((1, 2, 2), bool)
    top[0, 0] = True
    bottom = ~top
    alone = _clip([top], [1])
    assert track_ap([union_baseline(alone)], [alone], 4)["ap"] == pytest.approx(1.0)
    pair = _clip([top, bottom], [0, 1])
    found = track_ap([union_baseline(pair)], [pair], 4)
    assert found["ap50"] == pytest.approx(1.0) and found["ap75"] == 0.0
    assert found["ap"] == pytest.approx(0.1)  # one of the ten thresholds 0.50:0.05:0.95
