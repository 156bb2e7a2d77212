"""The ``instances`` training task (video instance segmentation, docs/vis.md): Hungarian matching of a query-based
model's tracks to the ground-truth tracks of each clip, the set loss, and the evaluation: the matched tracks' mean
IoU per clip and YouTube-VIS track AP over the evaluated clips (``stlens.measure.scores.TrackAP``).

Per clip, with the crowd tracks left out: the cost of query q for track n is
``CLASS_WEIGHT·(−p_q(class_n)) + BCE_WEIGHT·BCE(q, n) + DICE_WEIGHT·dice(q, n)`` — the mask terms over every pixel of
every frame of the track — and ``scipy.optimize.linear_sum_assignment`` picks the matching of least total cost. The
clip's loss is ``CLASS_WEIGHT·CE`` over all queries (unmatched ones target the no-object class, whose weight is
``NO_OBJECT_WEIGHT``; the weighted mean of ``F.cross_entropy``) plus, averaged over the matched tracks,
``BCE_WEIGHT·BCE + DICE_WEIGHT·dice`` (the weights of Mask2Former).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stlens.core.instances import Instances
from stlens.errors import StlensError
from stlens.measure.matching import (  # noqa: F401  (the matcher's parts: part of this module's interface)
    BCE_WEIGHT,
    CLASS_WEIGHT,
    DICE_WEIGHT,
    hungarian,
    match_cost,
    matched,
    pairwise_bce,
    pairwise_dice,
)
from stlens.measure.scores import TrackAP

NO_OBJECT_WEIGHT = 0.1


def clip_loss(logits: torch.Tensor, masks: torch.Tensor, instances: Instances) -> torch.Tensor:
    """The set loss of one clip (see the module docstring): logits (Q, K + 1), mask logits (Q, T, H, W)."""
    logits, masks = logits.float(), masks.float()
    rows, cols, classes, targets = matched(logits, masks, instances)
    no_object = logits.shape[1] - 1
    wanted = torch.full((len(logits),), no_object, dtype=torch.long, device=logits.device)
    wanted[torch.as_tensor(rows, device=logits.device)] = classes[torch.as_tensor(cols, device=logits.device)]
    weight = torch.ones(logits.shape[1], device=logits.device)
    weight[no_object] = NO_OBJECT_WEIGHT
    loss = CLASS_WEIGHT * F.cross_entropy(logits, wanted, weight=weight)
    if len(rows):
        flat = masks[torch.as_tensor(rows, device=logits.device)].flatten(1)
        truth = targets[torch.as_tensor(cols, device=logits.device)].float().flatten(1)
        bce = F.binary_cross_entropy_with_logits(flat, truth, reduction="none").mean(1)
        p = flat.sigmoid()
        dice = 1 - (2 * (p * truth).sum(1) + 1) / (p.sum(1) + truth.sum(1) + 1)
        loss = loss + (BCE_WEIGHT * bce + DICE_WEIGHT * dice).mean()
    return loss


def track_ious(logits: torch.Tensor, masks: torch.Tensor, instances: Instances, threshold: float = 0.5
               ) -> np.ndarray:
    """IoU of each matched track: the query's mask (sigmoid > ``threshold``) against the track's, over all its
    frames together (one space–time volume); one value per non-crowd track, in target order."""
    rows, cols, _, targets = matched(logits.float(), masks.float(), instances)
    out = np.zeros(len(cols))
    for r, c in zip(rows, cols, strict=True):
        pred = masks[r].float().sigmoid() > threshold
        truth = targets[c]
        union = int((pred | truth).sum())
        out[c] = int((pred & truth).sum()) / union if union else 1.0
    return out


class TrackIoU:
    """Per-clip mean IoU of the matched tracks (``track_iou``; NaN for a clip without non-crowd tracks): the running
    score of training; it ignores false-positive tracks and their scores (track AP does not)."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def scores(self, outputs: dict[str, torch.Tensor], targets: list[Instances]) -> dict[str, np.ndarray]:
        values = []
        for i, instances in enumerate(targets):
            ious = track_ious(outputs["logits"][i], outputs["masks"][i], instances, self.threshold)
            values.append(float(ious.mean()) if len(ious) else float("nan"))
        return {"track_iou": np.asarray(values, dtype=np.float64)}


class InstanceScores:
    """What an evaluation of ``task=instances`` gathers: the per-clip matched-track IoU (``scores``) and, over the
    evaluated clips as a whole, track AP (``summary``: ap, ap50, ap75, ar1, ar10)."""

    names = ("track_iou",)

    def __init__(self, threshold: float, classes: int):
        self.iou = TrackIoU(threshold)
        self.ap = TrackAP(max(1, classes), threshold).collector()

    def scores(self, outputs: dict[str, torch.Tensor], targets: list[Instances]) -> dict[str, np.ndarray]:
        self.ap.add(outputs, targets)
        return self.iou.scores(outputs, targets)

    def summary(self) -> dict[str, float]:
        return self.ap.summary()


class InstanceSegment:
    """``task=instances``: the set loss of a query-based VIS model (``stlens:vis``) against ``list[Instances]``;
    running score: the batch's mean matched-track IoU; evaluation: ``{split}_track_iou`` and track AP over the
    evaluated clips (``{split}_ap``, ``_ap50``, ``_ap75``, ``_ar1``, ``_ar10``)."""

    name = "instances"
    running = "batch_track_iou"

    def __init__(self, threshold: float = 0.5):
        self.metric_ = TrackIoU(threshold)

    def check(self, outputs, targets: list[Instances], classes: int, model: str, data: str) -> None:
        if not (isinstance(outputs, dict) and "logits" in outputs and "masks" in outputs):
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise StlensError(f"`task` instances needs a video instance segmenter whose output is "
                              f"{{'logits': (B, Q, K + 1), 'masks': (B, Q, T, H, W)}}, but {model} outputs {shape}: "
                              f"use stlens:vis")
        if not isinstance(targets, list) or not all(isinstance(t, Instances) for t in targets):
            raise StlensError(f"`task` instances needs instance targets, but {data} gives "
                              f"{type(targets).__name__}: use an instance source (e.g. synth:motion?task=instances)")
        logits, masks = outputs["logits"], outputs["masks"]
        if logits.shape[-1] - 1 < classes:
            raise StlensError(f"{model} has {logits.shape[-1] - 1} classes but {data} has {classes} (set classes= "
                              f"in the model spec)")
        if tuple(masks.shape[2:]) != tuple(targets[0].masks.shape[1:]):
            raise StlensError(f"{model} gives masks of {tuple(masks.shape[2:])} (T, H, W) but {data} has "
                              f"{tuple(targets[0].masks.shape[1:])}")

    def loss_sum(self, outputs: dict[str, torch.Tensor], targets: list[Instances]) -> torch.Tensor:
        return torch.stack([clip_loss(outputs["logits"][i], outputs["masks"][i], t)
                            for i, t in enumerate(targets)]).sum()

    def score_sum(self, outputs: dict[str, torch.Tensor], targets: list[Instances]) -> float:
        with torch.no_grad():
            detached = {k: v.detach() for k, v in outputs.items()}
            return float(np.nansum(self.metric_.scores(detached, targets)["track_iou"]))

    def metric(self, classes: int) -> InstanceScores:
        """A fresh gatherer for one evaluation (its ``summary`` is track AP over the clips it saw)."""
        return InstanceScores(self.metric_.threshold, classes)

    def evaluation(self, scores: dict[str, np.ndarray], split: str) -> dict[str, float]:
        values = scores["track_iou"]
        return {f"{split}_track_iou": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")}
