"""Segmentation scores (the MoCA protocol) against hand-counted masks: mask IoU, box IoU of the largest component,
success rates over IoU thresholds (strictly greater), unannotated frames left out, threshold on probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stlens.ablate.metrics import summarise
from stlens.errors import StlensError
from stlens.measure.scores import Segmentation, box_iou, box_of, frame_iou, largest_component, mask_iou

BIG = 10.0  # a logit whose sigmoid is ~1


def logits(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(mask, BIG, -BIG).astype(np.float32))


def square(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_by_hand():
    a, b = square(8, 8, 0, 4, 0, 4), square(8, 8, 2, 6, 2, 6)  # 16 px each, overlap 2x2 = 4
    assert mask_iou(a, b) == 4 / (16 + 16 - 4)
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    assert mask_iou(a, np.zeros_like(a)) == 0.0


def test_box_iou_uses_the_largest_component_of_the_prediction():
    truth = square(10, 10, 2, 6, 2, 6)
    pred = square(10, 10, 2, 6, 2, 6)
    pred[9, 9] = True  # a one-pixel speck far away: left out, so the boxes are equal
    assert frame_iou(pred, truth, "mask") == 16 / 17
    assert frame_iou(pred, truth, "box") == 1.0
    assert largest_component(pred).sum() == 16
    assert box_of(truth) == (2, 2, 6, 6)
    assert box_iou((0, 0, 4, 4), (2, 0, 6, 4)) == 8 / 24
    assert box_iou(None, None) == 1.0 and box_iou(None, (0, 0, 1, 1)) == 0.0


def test_clip_scores_by_hand_with_an_unannotated_frame():
    h = w = 8
    truth = np.stack([square(h, w, 0, 4, 0, 4)] * 4).astype(np.float32)
    truth[3] = np.nan  # frame 3 is not annotated
    pred = np.stack([square(h, w, 0, 4, 0, 4),  # IoU 1
                     square(h, w, 0, 4, 0, 2),  # IoU 8/16 = 0.5
                     square(h, w, 0, 4, 1, 4),  # IoU 12/16 = 0.75
                     np.ones((h, w), bool)])  # unannotated: ignored
    scores = Segmentation().scores(logits(pred)[None], torch.from_numpy(truth)[None])
    assert math.isclose(scores["miou"][0], (1 + 0.5 + 0.75) / 3)
    # SR_τ = share of frames with IoU > τ: τ=.5 → 2/3 (0.5 is not > 0.5), .6 → 2/3, .7 → 2/3, .8 → 1/3, .9 → 1/3
    assert math.isclose(scores["msr"][0], (2 / 3 * 3 + 1 / 3 * 2) / 5)


def test_the_threshold_applies_to_probabilities():
    truth = torch.ones(1, 1, 2, 2)
    out = torch.full((1, 1, 2, 2), math.log(0.3 / 0.7))  # probability 0.3 everywhere
    assert Segmentation(threshold=0.5).scores(out, truth)["miou"][0] == 0.0
    assert Segmentation(threshold=0.2).scores(out, truth)["miou"][0] == 1.0


def test_a_clip_without_annotated_frames_is_left_out_of_the_means():
    scores = np.array([1.0, np.nan, 0.5])
    base = np.array([1.0, np.nan, 1.0])
    s = summarise(scores, base, np.array([[0, 1, 2], [1, 1, 2]]))
    assert s["value"] == 0.75 and s["drop"] == 0.25
    # replicate 1 keeps clips 0 and 2 (mean 0.75), replicate 2 only clip 2 twice (0.5): the NaN clip counts for nothing
    assert (s["low"], s["high"]) == tuple(np.percentile([0.75, 0.5], [2.5, 97.5]))


def test_bad_segmentation_options_and_shapes():
    with pytest.raises(StlensError, match="`mask_threshold` must be in"):
        Segmentation(threshold=1.0)
    with pytest.raises(StlensError, match="`iou` must be one of mask, box"):
        Segmentation(iou="poly")
    with pytest.raises(StlensError, match="mask logits"):
        Segmentation().scores(torch.zeros(2, 8), torch.zeros(2, 8))
