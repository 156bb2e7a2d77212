"""The class-selectivity index and the unit labels, as pure numpy functions (docs/selectivity.md).

Per channel, from the class means μ_c of its pooled response:

- **shift**: when the smallest class mean is negative, every class mean is lowered by it (m_c = μ_c − min μ), so that
  all are ≥ 0; channels whose class means are all ≥ 0 (ReLU outputs: the case of Morcos et al.) are left as they are.
- **index** (Morcos et al. 2018): SI = (m_max − m_rest) / (m_max + m_rest), m_rest the mean of the other classes'
  m; SI ∈ [0, 1]; 0 when every m is 0 (a dead or constant-after-shift channel).
- **classes served**: the classes with m_c ≥ ``SERVED`` · m_max (all of them when m_max is 0 and the channel is not
  dead; none when it is dead).
- **responds to a class**: m_c > 0 and m_c ≥ ``RESPONDS`` · the layer's reference, the median over the layer's
  live channels of m_max.
- **kind**: ``class-specific`` when the index's lower bound is ≥ ``SPECIFIC`` and the channel responds to its top
  class; ``generic`` when the upper bound is < ``SPECIFIC`` and it responds to at least half the classes
  (⌈K/2⌉); ``weak`` otherwise (dead, weakly responding, or an interval across ``SPECIFIC``). Without bootstrap the
  bounds are the index itself.

Classes with no clip (in the data or a bootstrap replicate) are NaN rows of the class means and are left out.
"""

from __future__ import annotations

import math

import numpy as np

#: a class is served when its (shifted) mean is at least this fraction of the channel's largest
SERVED = 0.5
#: a channel responds to a class when its (shifted) mean is at least this fraction of the layer's reference
RESPONDS = 0.25
#: the index a class-specific unit's lower bound reaches (and a generic unit's upper bound stays under)
SPECIFIC = 0.5
KINDS = ("class-specific", "generic", "weak")
#: a channel whose largest |class mean| is at most this is dead
DEAD = 1e-12


def class_means(responses: np.ndarray, labels: np.ndarray, classes: int, weights: np.ndarray | None = None
                ) -> np.ndarray:
    """(classes, C) mean response per class of ``responses`` (N, C) with ``labels`` (N,) in [0, classes); with
    ``weights`` (R, N) (clip counts of R bootstrap replicates) (R, classes, C). A class without clips is NaN."""
    responses = np.asarray(responses, dtype=np.float64)
    labels = np.asarray(labels)
    w = np.ones((1, len(labels))) if weights is None else np.asarray(weights, dtype=np.float64)
    out = np.full((w.shape[0], classes, responses.shape[1]), np.nan)
    for c in range(classes):
        picked = labels == c
        if not picked.any():
            continue
        counts = w[:, picked].sum(axis=1)
        sums = w[:, picked] @ responses[picked]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, c] = np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)
    return out[0] if weights is None else out


def shifted(means: np.ndarray) -> np.ndarray:
    """The class means of each channel (classes on axis −2) lowered by their minimum where that is negative."""
    low = np.nanmin(np.where(np.isnan(means), np.inf, means), axis=-2, keepdims=True)
    return means - np.minimum(low, 0.0)


def selectivity_index(means: np.ndarray) -> np.ndarray:
    """SI per channel of class means (…, classes, C), after ``shifted``; NaN where fewer than 2 classes have clips."""
    m = shifted(np.asarray(means, dtype=np.float64))
    present = (~np.isnan(m)).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.max(np.where(np.isnan(m), -np.inf, m), axis=-2)
        rest = (np.nansum(m, axis=-2) - top) / np.maximum(present - 1, 1)
        denominator = top + rest
        index = np.where(denominator > DEAD, (top - rest) / denominator, 0.0)
    return np.where(present >= 2, np.clip(index, 0.0, 1.0), np.nan)


def classes_served(means: np.ndarray) -> np.ndarray:
    """(C,) the number of classes whose shifted mean is ≥ ``SERVED`` · the largest; 0 for a dead channel."""
    m = shifted(means)
    top = np.nanmax(m, axis=0)
    served = (np.nan_to_num(m, nan=-np.inf) >= SERVED * top).sum(axis=0)
    return np.where(dead(means), 0, served)


def dead(means: np.ndarray) -> np.ndarray:
    """(C,) True where every class mean is (about) zero."""
    return np.nanmax(np.abs(means), axis=0) <= DEAD


def layer_reference(means: np.ndarray) -> float:
    """The median over the layer's live channels of their largest shifted class mean (0 when all are dead)."""
    live = ~dead(means)
    return float(np.median(np.nanmax(shifted(means), axis=0)[live])) if live.any() else 0.0


def responding(means: np.ndarray) -> np.ndarray:
    """(classes, C) whether each channel responds to each class (shifted mean > 0 and ≥ ``RESPONDS`` · reference)."""
    m = np.nan_to_num(shifted(means), nan=0.0)
    return (m > 0) & (m >= RESPONDS * layer_reference(means))


def kinds(means: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[str]:
    """The label of each channel from its class means (classes, C) and the bounds of its index (C,)."""
    present = int((~np.isnan(means).all(axis=1)).sum())
    responds = responding(means)
    top = np.nanargmax(np.nan_to_num(shifted(means), nan=-np.inf), axis=0)
    found = []
    for c in range(means.shape[1]):
        if low[c] >= SPECIFIC and responds[top[c], c]:
            found.append("class-specific")
        elif high[c] < SPECIFIC and responds[:, c].sum() >= math.ceil(present / 2):
            found.append("generic")
        else:
            found.append("weak")
    return found


def bootstrap_bounds(responses: np.ndarray, labels: np.ndarray, classes: int, replicates: int, seed: int,
                     chunk: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2.5 and 97.5 percentiles of each channel's SI over ``replicates`` resamplings of the clips with
    replacement (multinomial clip counts from the generator ``(seed, 0x5E1EC7)``), and the (replicates,) mean SI
    over the channels of each replicate (for the layer's interval). NaN without replicates."""
    n, channels = responses.shape
    if replicates < 1:
        return np.full(channels, np.nan), np.full(channels, np.nan), np.zeros(0)
    rng = np.random.default_rng([seed, 0x5E1EC7])
    draws = []
    for done in range(0, replicates, chunk):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, replicates - done))
        draws.append(selectivity_index(class_means(responses, labels, classes, weights)))
    si = np.concatenate(draws)  # (R, C)
    low, high = np.nanpercentile(si, [2.5, 97.5], axis=0)
    return low, high, np.nanmean(si, axis=1)


def top_clips(responses: np.ndarray, k: int) -> np.ndarray:
    """(min(k, N), C) the indices of each channel's k highest-responding clips, highest first (ties: lower index)."""
    order = np.argsort(-np.asarray(responses, dtype=np.float64), axis=0, kind="stable")
    return order[:k]


def ranked_units(lows: list[np.ndarray], indices: list[np.ndarray], count: int) -> list[tuple[int, int]]:
    """The ``count`` most selective units of the layers as (layer position, channel): the largest lower bound of the
    index's interval first, then the larger index, then layer and channel order; a unit whose bound is NaN is left
    out. (The report ranks its most selective units the same way, from selectivity.csv.)"""
    units = [(at, c) for at, low in enumerate(lows) for c in range(len(low)) if not math.isnan(float(low[c]))]
    units.sort(key=lambda u: (-float(lows[u[0]][u[1]]), -float(indices[u[0]][u[1]])))
    return units[:count]
