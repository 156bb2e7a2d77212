"""The training tasks: the segmentation loss against a hand computation (BCE over annotated pixels + soft IoU per
clip, unannotated frames counting for nothing) and the option checks."""

from __future__ import annotations

import math

import pytest
import torch

from stlens.errors import StlensError
from stlens.train import TrainConfig
from stlens.train.tasks import Segment, segmentation_loss, task_for


def test_segmentation_loss_by_hand():
    logits = torch.tensor([[[[0.0, 2.0]], [[-1.0, 0.0]]]])  # (B=1, T=2, H=1, W=2)
    masks = torch.tensor([[[[0.0, 1.0]], [[float("nan"), float("nan")]]]])  # frame 1 unannotated
    p0, p1 = 0.5, 1 / (1 + math.exp(-2.0))
    bce = (-math.log(1 - p0) - math.log(p1)) / 2  # mean over the two annotated pixels
    inter, union = p1 * 1, (p0 + 0 - 0) + (p1 + 1 - p1)
    expected = bce + 1 - (inter + 1) / (union + 1)
    assert math.isclose(float(segmentation_loss(logits, masks)[0]), expected, rel_tol=1e-6)


def test_the_loss_is_per_clip_and_falls_as_the_prediction_improves():
    masks = torch.zeros(2, 3, 4, 4)
    masks[:, :, 1:3, 1:3] = 1
    good = (masks * 2 - 1) * 6
    losses = segmentation_loss(torch.stack([good[0], torch.zeros(3, 4, 4)]), masks)
    assert losses.shape == (2,) and losses[0] < 0.05 < losses[1]


def test_segment_running_score_is_the_mean_iou():
    masks = torch.zeros(2, 1, 2, 2)
    masks[:, :, 0, 0] = 1
    perfect = (masks * 2 - 1) * 9
    assert Segment().score_sum(perfect, masks) == 2.0


def test_bad_task_options_are_refused_naming_them():
    with pytest.raises(StlensError, match="--task must be one of classify, segment"):
        task_for("detect")
    with pytest.raises(StlensError, match="threshold must be in"):
        TrainConfig(model="stlens:i3d", data="synth:motion", steps=1, out="x", task="segment",
                    mask_threshold=1.5).validate()
    with pytest.raises(StlensError, match="are for --task classify"):
        TrainConfig(model="stlens:i3d", data="synth:motion", steps=1, out="x", task="segment",
                    static_dropout="stage4:p=0.5").validate()
