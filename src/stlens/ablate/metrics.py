"""What ``stlens ablate`` scores: a metric gives one score per clip, and a condition's value is the mean over clips,
so that bootstrap intervals resample clips and a drop (baseline − masked) is paired clip by clip.

A ``Metric`` has ``names`` (the columns it adds, e.g. ``top1``, ``top5``), ``scores(outputs, targets)`` → per-clip
scores for each name, and ``groups(targets)`` → a group per clip for the per-group table (the class for a
classifier; None for none). Segmentation metrics plug in the same way: a clip's mean IoU over its frames, or its
success rate over IoU thresholds, is a per-clip score.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from stlens.errors import StlensError


class Metric(Protocol):
    names: tuple[str, ...]

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]: ...

    def groups(self, targets: torch.Tensor) -> np.ndarray | None: ...


class Accuracy:
    """Top-1 (and top-5 when the model has more than 5 classes) accuracy of a classifier's logits (B, classes)."""

    def __init__(self, classes: int):
        if classes < 2:
            raise StlensError(f"accuracy needs at least 2 classes, the data has {classes}")
        self.classes = classes
        self.ks = (1, 5) if classes > 5 else (1,)
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


def bootstrap_indices(clips: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, clips) indices of clips drawn with replacement; the same for every condition of a run."""
    return np.random.default_rng([seed, 0xAB1A7E]).integers(0, clips, size=(replicates, clips))


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap values (NaN, NaN without any)."""
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def summarise(scores: np.ndarray, baseline: np.ndarray, index: np.ndarray) -> dict[str, float]:
    """A condition's mean score and the drop from the baseline (clip by clip), each with a 95% bootstrap interval
    over clips (``index``: ``bootstrap_indices``)."""
    value, drop = float(scores.mean()), float((baseline - scores).mean())
    if index.size:
        low, high = interval(scores[index].mean(axis=1))
        drop_low, drop_high = interval((baseline - scores)[index].mean(axis=1))
    else:
        low = high = drop_low = drop_high = float("nan")
    return {"value": value, "low": low, "high": high, "drop": drop, "drop_low": drop_low, "drop_high": drop_high}
