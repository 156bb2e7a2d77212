"""The static/dynamic estimator of Kowal et al. (docs/formats.md §1) as pure functions of streamed sums.

Every function takes per-factor sums with an optional leading replicate axis, so the same code gives the point
estimate (no leading axis) and the bootstrap replicates (a leading axis of length B).

Sums per factor (arrays ``(..., C)``, counts ``(...)``): ``n`` pairs, ``sa = Σa``, ``sb = Σb``, ``saa = Σa²``,
``sbb = Σb²``, ``sab = Σab``. They may be taken about any per-channel shift shared by both factors: every quantity
below is invariant to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACTORS = ("dynamic", "static")
CLASSES = ("dynamic", "static", "joint", "none", "dead")
CLASS_CODES = {name: code for code, name in enumerate(CLASSES)}

#: A channel whose total variance is at most ``DEAD_RTOL·mean² + DEAD_ATOL`` counts as dead (constant).
DEAD_RTOL = 1e-12
DEAD_ATOL = 1e-30


@dataclass(frozen=True)
class FactorSums:
    """Sufficient statistics of the pairs of one factor (see the module docstring)."""

    n: np.ndarray
    sa: np.ndarray
    sb: np.ndarray
    saa: np.ndarray
    sbb: np.ndarray
    sab: np.ndarray


def _per_pair(total: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Divide ``(..., C)`` sums by ``(...)`` counts; a zero count gives NaN (an empty bootstrap replicate)."""
    n = np.asarray(n, dtype=np.float64)[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.where(n > 0, n, 1.0), np.nan)


def factor_moments(s: FactorSums) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (μ_f, cov_f, Var_f) per channel for one factor, all with ddof=0.

    μ_f is the mean of the 2N_f vectors, cov_f = mean_n (a_n − μ_f)(b_n − μ_f), Var_f the variance of the 2N_f vectors.
    """
    mu = _per_pair(s.sa + s.sb, 2 * np.asarray(s.n))
    cov = _per_pair(s.sab, s.n) - mu * mu
    var = _per_pair(s.saa + s.sbb, 2 * np.asarray(s.n)) - mu * mu
    return mu, cov, var


def total_variance(d: FactorSums, s: FactorSums) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, variance) over all 2(N_D + N_S) vectors of both factors together."""
    count = 2 * (np.asarray(d.n) + np.asarray(s.n))
    mean = _per_pair(d.sa + d.sb + s.sa + s.sb, count)
    var = _per_pair(d.saa + d.sbb + s.saa + s.sbb, count) - mean * mean
    return mean, var


def dead_channels(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Channels whose variance is zero up to rounding: constant over every video seen."""
    return ~(var > DEAD_RTOL * mean * mean + DEAD_ATOL)


def softmax3(s_dynamic: np.ndarray, s_static: np.ndarray) -> np.ndarray:
    """softmax([s_D, s_S, 1]) along a new last axis, max-subtracted."""
    logits = np.stack([s_dynamic, s_static, np.ones_like(s_dynamic)], axis=-1)
    logits = logits - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def dims_from_scores(s_dynamic: np.ndarray, s_static: np.ndarray, channels: int) -> np.ndarray:
    """Integer dims (D, S, R) along a last axis: ⌊p_D·C⌋, ⌊p_S·C⌋ and the rest. NaN scores give −1 everywhere."""
    p = softmax3(np.asarray(s_dynamic, dtype=np.float64), np.asarray(s_static, dtype=np.float64))
    valid = np.all(np.isfinite(p), axis=-1)
    p = np.where(valid[..., None], p, 0.0)
    d = np.floor(p[..., 0] * channels).astype(np.int64)
    s = np.floor(p[..., 1] * channels).astype(np.int64)
    dims = np.stack([d, s, channels - d - s], axis=-1)
    return np.where(valid[..., None], dims, -1)


def percent(dims: int, channels: int) -> float:
    """round(100·dims/C, 1) as reported in result.json."""
    return round(100.0 * dims / channels, 1)


def bias_from_dims(dims_dynamic: np.ndarray, dims_static: np.ndarray) -> np.ndarray:
    """(dims_S − dims_D)/(dims_S + dims_D) ∈ [−1, 1]; 0 when both are zero. Positive means static-biased."""
    d = np.asarray(dims_dynamic, dtype=np.float64)
    s = np.asarray(dims_static, dtype=np.float64)
    total = d + s
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (s - d) / np.where(total > 0, total, 1.0), 0.0)


def classify_channels(r_dynamic: np.ndarray, r_static: np.ndarray, dead: np.ndarray, threshold: float) -> np.ndarray:
    """Class codes (see ``CLASSES``) per channel with strict ``> threshold``; dead channels override the rest."""
    dyn = r_dynamic > threshold
    sta = r_static > threshold
    codes = np.full(np.shape(r_dynamic), CLASS_CODES["none"], dtype=np.int64)
    codes[dyn & ~sta] = CLASS_CODES["dynamic"]
    codes[sta & ~dyn] = CLASS_CODES["static"]
    codes[dyn & sta] = CLASS_CODES["joint"]
    codes[np.broadcast_to(dead, codes.shape)] = CLASS_CODES["dead"]
    return codes


@dataclass(frozen=True)
class LayerStatistics:
    """Everything the estimator says about one layer (with a leading replicate axis when given replicate sums)."""

    channels: int
    score_dynamic: np.ndarray
    score_static: np.ndarray
    dims: np.ndarray  # (..., 3) dynamic, static, residual
    r_dynamic: np.ndarray  # (..., C)
    r_static: np.ndarray  # (..., C)
    classes: np.ndarray  # (..., C) codes
    bias: np.ndarray
    valid: np.ndarray  # (...) False for an empty bootstrap replicate

    def class_counts(self) -> np.ndarray:
        """Counts per class along a last axis in the order of ``CLASSES``."""
        return np.stack([(self.classes == code).sum(axis=-1) for code in range(len(CLASSES))], axis=-1)


def layer_statistics(dynamic: FactorSums, static: FactorSums, threshold: float = 0.5) -> LayerStatistics:
    """Scores, dims, per-channel r, classes and bias of one layer from the sums of both factors."""
    channels = np.shape(dynamic.sa)[-1]
    mean_tot, var_tot = total_variance(dynamic, static)
    dead = dead_channels(mean_tot, var_tot)
    live_var = np.where(dead, 0.0, var_tot)
    sigma2 = live_var.sum(axis=-1)

    scores = []
    ratios = []
    for sums in (dynamic, static):
        _, cov, var_f = factor_moments(sums)
        cov = np.where(dead, 0.0, cov)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(sigma2 > 0, cov.sum(axis=-1) / np.where(sigma2 > 0, sigma2, 1.0), 0.0))
            usable = (var_f > DEAD_RTOL * mean_tot * mean_tot + DEAD_ATOL) & ~dead
            ratios.append(np.where(usable, cov / np.where(usable, var_f, 1.0), 0.0))
    # An empty replicate (a factor with no weight) keeps NaN so that it drops out of the percentiles.
    empty = (np.asarray(dynamic.n) <= 0) | (np.asarray(static.n) <= 0)
    s_dyn = np.where(empty, np.nan, scores[0])
    s_sta = np.where(empty, np.nan, scores[1])
    dims = dims_from_scores(s_dyn, s_sta, channels)
    classes = classify_channels(ratios[0], ratios[1], dead, threshold)
    return LayerStatistics(
        channels=channels,
        score_dynamic=s_dyn,
        score_static=s_sta,
        dims=dims,
        r_dynamic=ratios[0],
        r_static=ratios[1],
        classes=classes,
        bias=bias_from_dims(dims[..., 0], dims[..., 1]),
        valid=~empty,
    )


def percentile_interval(values: np.ndarray, level: float = 95.0, discrete: bool = False) -> tuple[float, float] | None:
    """Central percentile interval of finite bootstrap values, or None when there are none. ``discrete``: the ends
    are values that occur (lower end rounded down, upper end up), for counts such as dims, so that the interval is
    made of reachable values and never falls between two of them."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    tail = (100.0 - level) / 2.0
    if discrete:
        return float(np.percentile(v, tail, method="lower")), float(np.percentile(v, 100.0 - tail, method="higher"))
    lo, hi = np.percentile(v, [tail, 100.0 - tail])
    return float(lo), float(hi)
