"""What ``stlens ablate`` scores: a metric (``stlens.measure.scores``: ``Accuracy``, ``Segmentation`` or your own
``Metric``) gives one score per clip, and a condition's value is the mean over clips, so that bootstrap intervals
resample clips and a drop (baseline − masked) is paired clip by clip. Clips without a score (NaN: a segmentation clip
with no annotated frame) are left out of the means. Track AP (``TrackAP``, video instance segmentation) is the
exception: a statistic of the whole set of clips, scored by ``stlens.ablate.run`` over bootstrap resamples of the
videos, its drop unpaired.
"""

from __future__ import annotations

import numpy as np

from stlens.measure.scores import Accuracy, Metric, Segmentation, TrackAP

__all__ = ["Accuracy", "Metric", "Segmentation", "TrackAP", "bootstrap_indices", "interval", "summarise"]


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
    kept = ~(np.isnan(scores) | np.isnan(baseline))
    if not kept.any():
        nan = float("nan")
        return {"value": nan, "low": nan, "high": nan, "drop": nan, "drop_low": nan, "drop_high": nan}
    value, drop = float(scores[kept].mean()), float((baseline - scores)[kept].mean())
    if index.size:
        weights = kept[index]  # a resampled clip without a score counts for nothing
        count = np.maximum(weights.sum(axis=1), 1)
        low, high = interval(np.where(weights, scores[index], 0.0).sum(axis=1) / count)
        drop_low, drop_high = interval(np.where(weights, (baseline - scores)[index], 0.0).sum(axis=1) / count)
    else:
        low = high = drop_low = drop_high = float("nan")
    return {"value": value, "low": low, "high": high, "drop": drop, "drop_low": drop_low, "drop_high": drop_high}
