"""What ``stlens train`` optimises and reports, per task.

- ``classify``: cross-entropy on class scores (B, classes); the running score is the batch accuracy; evaluation
  reports top-1 accuracy (``train_acc``, ``test_acc``).
- ``segment``: per-frame mask logits (B, T, H, W) against masks in {0, 1} (NaN = an unannotated frame, left out):
  per clip, binary cross-entropy (mean over its annotated pixels) + soft-IoU loss 1 − Σpg / Σ(p + g − pg) with
  p = sigmoid(logit); the running score is the batch's mean IoU at the mask threshold; evaluation reports the MoCA
  scores of ``stlens.measure.scores.Segmentation`` (``train_miou``, ``test_miou``, ``test_msr``).
- ``instances``: a query-based VIS model's ``{"logits", "masks"}`` against ``list[Instances]``: Hungarian matching
  and the set loss of ``stlens.train.instances``; running score: the mean IoU of the matched tracks
  (``batch_track_iou``); evaluation: that IoU (``train_track_iou``, ``test_track_iou``) and YouTube-VIS track AP over
  the evaluated clips (``train_ap``, ``test_ap``, ``test_ap50``, ``test_ap75``, ``test_ar1``, ``test_ar10``, …).

A task's ``loss_sum`` is the sum over the batch's clips of each clip's loss, so the trainer's mean (and its
distributed gradient scaling) is the same for both tasks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlens.errors import StlensError
from stlens.measure.scores import Accuracy, Segmentation
from stlens.train.instances import InstanceSegment

TASKS = ("classify", "segment", "instances")


class Classify:
    name = "classify"
    running = "batch_acc"

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, classes: int, model: str, data: str) -> None:
        if outputs.ndim != 2 or outputs.shape[1] < classes:
            raise StlensError(f"{model} outputs {tuple(outputs.shape)} but {data} has {classes} classes (set "
                              f"classes= in the model spec)")

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, reduction="sum")

    def score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> int:
        return int((outputs.argmax(1) == targets).sum())

    def metric(self, classes: int) -> Accuracy:
        return Accuracy(max(2, classes))


class Segment:
    name = "segment"
    running = "batch_miou"

    def __init__(self, threshold: float = 0.5):
        self.scores = Segmentation(threshold=threshold)

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, classes: int, model: str, data: str) -> None:
        if outputs.ndim != 4 or tuple(outputs.shape) != tuple(targets.shape):
            raise StlensError(f"`task` segment needs per-frame mask logits (B, T, H, W) shaped like the masks of "
                              f"{data} {tuple(targets.shape)}, but {model} outputs {tuple(outputs.shape)}: use a "
                              f"segmentation model (stlens:avos, stlens:seg3d)")

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(outputs, targets).sum()

    def score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        miou = self.scores.scores(outputs.detach(), targets)["miou"]
        return float(np.nansum(miou))

    def metric(self, classes: int) -> Segmentation:
        return self.scores

    def evaluation(self, scores: dict[str, np.ndarray], split: str) -> dict[str, float]:
        out = {f"{split}_miou": float(np.nanmean(scores["miou"]))}
        if split == "test":
            out["test_msr"] = float(np.nanmean(scores["msr"]))
        return out


def segmentation_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per clip (B,): BCE over its annotated pixels + soft-IoU loss; unannotated (NaN) frames count for nothing."""
    valid = ~torch.isnan(targets)
    truth = torch.where(valid, targets, torch.zeros_like(targets)).float()
    weight = valid.float()
    logits = outputs.float()
    dims = tuple(range(1, logits.ndim))
    pixels = weight.sum(dim=dims).clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, truth, reduction="none") * weight).sum(dim=dims) / pixels
    p = torch.sigmoid(logits) * weight
    inter = (p * truth).sum(dim=dims)
    union = (p + truth - p * truth).sum(dim=dims)
    soft_iou = 1.0 - (inter + 1.0) / (union + 1.0)
    return bce + soft_iou


def task_for(name: str, threshold: float = 0.5) -> Classify | Segment | InstanceSegment:
    """The task called ``name`` (``--task``)."""
    if name == "classify":
        return Classify()
    if name == "segment":
        return Segment(threshold)
    if name == "instances":
        return InstanceSegment(threshold)
    raise StlensError(f"`task` must be one of {', '.join(TASKS)}, got {name!r}")


@torch.inference_mode()
def evaluate_clips(model: nn.Module, clips, count: int, batch_size: int, seed: int, metric, precision: str = "fp32"
                   ) -> dict[str, np.ndarray]:
    """Per-clip scores of ``metric`` (eval mode) on the first ``count`` clips, on the model's device (autocast for a
    bf16/fp16 ``precision``); video clips are drawn with a fixed seed."""
    from stlens.core.handle import module_device
    from stlens.measure.run import run_forward, to_device

    was_training = model.training
    count = min(count, len(clips))
    if count < 1:
        raise StlensError("evaluation needs at least one clip")
    model.eval()
    rng = np.random.default_rng((seed, 7))
    device = module_device(model)
    kept: dict[str, list[np.ndarray]] = {}
    for start in range(0, count, batch_size):
        inputs, targets = clips.batch(np.arange(start, min(count, start + batch_size)), rng)
        outputs = run_forward(model, to_device(inputs, device), precision)
        for name, values in metric.scores(outputs, targets).items():
            kept.setdefault(name, []).append(values)
    model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in kept.items()}
