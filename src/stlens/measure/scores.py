"""Task scores of a model's outputs, one number per clip (shared by ``stlens train`` and ``stlens ablate``).

A ``Metric`` has ``names`` (its columns), ``scores(outputs, targets) → {name: per-clip scores}`` and
``groups(targets)`` (a group per clip for per-group tables — the class of a classifier's clip — or None). A metric's
value over a set of clips is the mean of its per-clip scores, so intervals resample clips.

- ``Accuracy``: top-1 (and top-5 with more than 5 classes) of class scores (B, classes) against labels (B,).
- ``Segmentation``: the MoCA protocol on per-frame mask logits (B, T, H, W) against masks (B, T, H, W) in {0, 1}
  (frames whose target is NaN are unannotated and left out): a frame's prediction is sigmoid(logit) > ``threshold``
  (default 0.5; the paper's MoCA numbers use 0.2); ``miou`` = the clip's mean IoU over its annotated frames; ``msr``
  = the clip's success rate (the share of its frames with IoU > τ) averaged over τ = 0.5, 0.6, 0.7, 0.8, 0.9.
  ``iou="mask"`` compares the masks pixel by pixel; ``iou="box"`` compares boxes, as MoCA's evaluation does with its
  box annotations: the box of the largest connected component of the prediction against the target's box. A frame
  with an empty target and an empty prediction has IoU 1; with one of them empty, 0.
- ``TrackAP``: YouTube-VIS track AP of a query-based VIS model's ``{"logits", "masks"}`` against ``list[Instances]``
  (``stlens.measure.trackap``). It is a *set* metric (``kind = "set"``): AP is a statistic of the whole set of clips,
  not a mean of per-clip scores, so it has no ``scores``; its ``collector()`` gathers the clips' matches batch by
  batch and scores them as a whole or on bootstrap resamples of the videos.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from stlens.errors import StlensError
from stlens.measure.trackap import SUMMARY, TrackMatches, bootstrap_videos, interval

SR_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
IOU_KINDS = ("mask", "box")


class Metric(Protocol):
    names: tuple[str, ...]

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]: ...

    def groups(self, targets: torch.Tensor) -> np.ndarray | None: ...


class Accuracy:
    """Top-1 (and top-5 when the data has more than 5 classes) accuracy of a classifier's logits (B, classes);
    ``ks``: other ranks (each at most the number of class scores)."""

    def __init__(self, classes: int, ks: tuple[int, ...] | None = None):
        if classes < 2:
            raise StlensError(f"accuracy needs at least 2 classes, the data has {classes}")
        self.classes = classes
        self.ks = tuple(ks) if ks is not None else (1, 5) if classes > 5 else (1,)
        self.names = tuple(f"top{k}" for k in self.ks)

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
        if outputs.ndim != 2:
            raise StlensError(f"accuracy needs class scores (B, classes) from the model, got shape "
                              f"{tuple(outputs.shape)}")
        if outputs.shape[1] < self.classes:
            raise StlensError(f"the model gives {outputs.shape[1]} class scores but the data has labels up to "
                              f"{self.classes - 1}")
        ranked = outputs.float().topk(max(self.ks), dim=1).indices.cpu()
        labels = targets.cpu().reshape(-1, 1)
        return {f"top{k}": (ranked[:, :k] == labels).any(dim=1).numpy().astype(np.float64) for k in self.ks}

    def groups(self, targets: torch.Tensor) -> np.ndarray:
        return targets.cpu().numpy().astype(np.int64)


def mask_iou(prediction: np.ndarray, target: np.ndarray) -> float:
    """IoU of two bool masks (H, W); 1 when both are empty."""
    union = np.logical_or(prediction, target).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, target).sum() / union)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end exclusive, of the true pixels of a bool mask; None when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (the mask itself when it has at most one)."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def box_iou(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None) -> float:
    """IoU of two pixel boxes (x0, y0, x1, y1), end exclusive; 1 when both are None, 0 when one is."""
    if a is None or b is None:
        return float(a is None and b is None)
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area)


def frame_iou(prediction: np.ndarray, target: np.ndarray, kind: str = "mask") -> float:
    """The IoU of one frame: masks pixel by pixel, or the box of the prediction's largest component against the
    target's box."""
    if kind == "mask":
        return mask_iou(prediction, target)
    return box_iou(box_of(largest_component(prediction)), box_of(target))


class Segmentation:
    """Per-clip mean IoU and mean success rate of per-frame mask logits (the MoCA protocol; see the module)."""

    names = ("miou", "msr")

    def __init__(self, threshold: float = 0.5, iou: str = "mask", thresholds: tuple[float, ...] = SR_THRESHOLDS):
        if not 0.0 < threshold < 1.0:
            raise StlensError(f"`mask_threshold` must be in (0, 1), got {threshold}")
        if iou not in IOU_KINDS:
            raise StlensError(f"`iou` must be one of {', '.join(IOU_KINDS)}, got {iou!r}")
        self.threshold, self.iou, self.thresholds = float(threshold), iou, tuple(thresholds)

    def frame_ious(self, outputs: torch.Tensor, targets: torch.Tensor) -> list[np.ndarray]:
        """Per clip, the IoU of each annotated frame."""
        if outputs.ndim != 4 or tuple(outputs.shape) != tuple(targets.shape):
            raise StlensError(f"segmentation scores need mask logits (B, T, H, W) shaped like the target masks, got "
                              f"{tuple(outputs.shape)} and {tuple(targets.shape)}")
        predicted = (torch.sigmoid(outputs.float()) > self.threshold).cpu().numpy()
        truth = targets.float().cpu().numpy()
        ious = []
        for clip_pred, clip_true in zip(predicted, truth, strict=True):
            annotated = [t for t in range(len(clip_true)) if not np.isnan(clip_true[t]).any()]
            ious.append(np.array([frame_iou(clip_pred[t], clip_true[t] > 0.5, self.iou) for t in annotated]))
        return ious

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
        ious = self.frame_ious(outputs, targets)
        miou = np.array([v.mean() if v.size else np.nan for v in ious])
        msr = np.array([np.mean([(v > t).mean() for t in self.thresholds]) if v.size else np.nan for v in ious])
        return {"miou": miou, "msr": msr}

    def groups(self, targets: torch.Tensor) -> None:
        return None


class TrackAP:
    """Track AP (ap, ap50, ap75, ar1, ar10) of a VIS model's outputs over a set of clips: each query a track
    (``stlens.models.zoo.vis.predict_tracks`` at mask ``threshold``), scored over ``classes`` categories — or the
    model's, when it has more."""

    names = SUMMARY
    kind = "set"

    def __init__(self, classes: int, threshold: float = 0.5):
        if isinstance(classes, bool) or not isinstance(classes, int | np.integer) or classes < 1:
            raise StlensError(f"track AP needs at least one category, the data has {classes}")
        if not 0.0 < threshold < 1.0:
            raise StlensError(f"`mask_threshold` must be in (0, 1), got {threshold}")
        self.classes, self.threshold = int(classes), float(threshold)

    def tracks(self, outputs, targets) -> list:
        """The predicted tracks of a batch (one ``TrackPredictions`` per clip), the outputs and targets checked."""
        from stlens.core.instances import Instances
        from stlens.models.zoo.vis import predict_tracks

        if not (isinstance(outputs, dict) and "logits" in outputs and "masks" in outputs):
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise StlensError(f"track AP needs a video instance segmenter's output {{'logits': (B, Q, K + 1), "
                              f"'masks': (B, Q, T, H, W)}}, got {shape}: use stlens:vis")
        if not isinstance(targets, list) or not all(isinstance(t, Instances) for t in targets):
            raise StlensError(f"track AP needs instance targets (a list of Instances), got {type(targets).__name__}")
        if int(outputs["logits"].shape[-1]) - 1 < self.classes:
            raise StlensError(f"the model has {int(outputs['logits'].shape[-1]) - 1} classes but the data has "
                              f"{self.classes} (set classes= in the model spec)")
        return predict_tracks(outputs, self.threshold)

    def groups(self, targets) -> None:
        return None

    def collector(self) -> TrackCollector:
        return TrackCollector(self)


class TrackCollector:
    """The matches of the clips of one condition, added batch by batch (``add``); ``matches``: the
    ``TrackMatches`` (None before the first batch)."""

    def __init__(self, metric: TrackAP):
        self.metric = metric
        self.matches: TrackMatches | None = None

    def add(self, outputs, targets) -> None:
        predictions = self.metric.tracks(outputs, targets)
        if self.matches is None:
            self.matches = TrackMatches(max(self.metric.classes, int(outputs["logits"].shape[-1]) - 1))
        self.matches.add(predictions, targets)

    def summary(self) -> dict[str, float]:
        """The summary numbers over every clip added (NaN before any)."""
        if self.matches is None:
            return dict.fromkeys(SUMMARY, float("nan"))
        return self.matches.score()[0]

    def evaluation(self, bootstrap: int, seed: int) -> dict:
        """``summary`` with ``per_class`` (AP per category), ``counts``, ``ci95`` and ``per_class_ci95`` over
        ``bootstrap`` resamples of the videos (``trackap.bootstrap_videos(videos, bootstrap, seed)``: the numbers
        ``track_ap_bootstrap`` gives on the same predictions)."""
        if self.matches is None:
            raise StlensError("track AP needs at least one clip")
        summary, per_class = self.matches.score()
        index = bootstrap_videos(len(self.matches), bootstrap, seed)
        values, classes = self.matches.bootstrap(index)
        return {**summary, "per_class": per_class.tolist(), "counts": self.matches.counts(),
                "ci95": {name: interval(values[name]) for name in SUMMARY},
                "per_class_ci95": [interval(classes[:, k]) for k in range(classes.shape[1])]}


def bootstrap_interval(scores: np.ndarray, replicates: int, seed: int, level: float = 0.95,
                       chunk: int = 256) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of per-clip ``scores``: ``replicates`` resamplings of the clips
    with replacement (generator ``(seed, 0xAB1A7E)``, the clip indices of ``stlens.ablate``'s intervals), clips
    without a score (NaN) left out of each replicate's mean; (NaN, NaN) without replicates or scores."""
    scores = np.asarray(scores, dtype=np.float64)
    kept = ~np.isnan(scores)
    if replicates < 1 or not kept.any():
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 0xAB1A7E])
    filled = np.where(kept, scores, 0.0)
    means = []
    for done in range(0, replicates, chunk):  # drawn in row-major chunks: the same indices as one (R, n) draw
        index = rng.integers(0, scores.size, size=(min(chunk, replicates - done), scores.size))
        counts = kept[index].sum(axis=1)
        means.append(filled[index].sum(axis=1)[counts > 0] / counts[counts > 0])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return float(low), float(high)
