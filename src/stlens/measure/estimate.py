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


def total_variance(*factors: FactorSums) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, variance) over all 2·ΣN_f vectors of the factors together (summed in factor order)."""
    first, *rest = factors
    n, total, square = np.asarray(first.n), first.sa + first.sb, first.saa + first.sbb
    for f in rest:
        n = n + np.asarray(f.n)
        total = total + f.sa + f.sb
        square = square + f.saa + f.sbb
    mean = _per_pair(total, 2 * n)
    var = _per_pair(square, 2 * n) - mean * mean
    return mean, var


def dead_channels(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Channels whose variance is zero up to rounding: constant over every video seen."""
    return ~(var > DEAD_RTOL * mean * mean + DEAD_ATOL)


def softmax_scores(*scores: np.ndarray) -> np.ndarray:
    """softmax([s_1, …, s_K, 1]) along a new last axis, max-subtracted (the last entry is the residual)."""
    logits = np.stack([*scores, np.ones_like(scores[0])], axis=-1)
    logits = logits - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def softmax3(s_dynamic: np.ndarray, s_static: np.ndarray) -> np.ndarray:
    """softmax([s_D, s_S, 1]) along a new last axis, max-subtracted."""
    return softmax_scores(s_dynamic, s_static)


def dims_from_scores(s_dynamic: np.ndarray, s_static: np.ndarray, channels: int) -> np.ndarray:
    """Integer dims (D, S, R) along a last axis: ⌊p_D·C⌋, ⌊p_S·C⌋ and the rest. NaN scores give −1 everywhere."""
    return factor_dims([s_dynamic, s_static], channels)


def factor_dims(scores: list[np.ndarray], channels: int) -> np.ndarray:
    """Integer dims (factor 1, …, factor K, residual) along a last axis: ⌊p_f·C⌋ per factor and the rest. NaN scores
    give −1 everywhere."""
    p = softmax_scores(*(np.asarray(s, dtype=np.float64) for s in scores))
    valid = np.all(np.isfinite(p), axis=-1)
    p = np.where(valid[..., None], p, 0.0)
    per_factor = [np.floor(p[..., k] * channels).astype(np.int64) for k in range(len(scores))]
    rest = channels - per_factor[0]
    for d in per_factor[1:]:
        rest = rest - d
    dims = np.stack([*per_factor, rest], axis=-1)
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
    scores: np.ndarray  # (K, ...) one per factor, in the order given (dynamic, static, further factors)
    dims: np.ndarray  # (..., K + 1) the factors, then the residual
    ratios: np.ndarray  # (K, ..., C) per-channel r of each factor
    classes: np.ndarray  # (..., C) codes, from the dynamic and static factors only
    bias: np.ndarray
    valid: np.ndarray  # (...) False for an empty bootstrap replicate

    @property
    def score_dynamic(self) -> np.ndarray:
        return self.scores[0]

    @property
    def score_static(self) -> np.ndarray:
        return self.scores[1]

    @property
    def r_dynamic(self) -> np.ndarray:
        return self.ratios[0]

    @property
    def r_static(self) -> np.ndarray:
        return self.ratios[1]

    def class_counts(self) -> np.ndarray:
        """Counts per class along a last axis in the order of ``CLASSES``."""
        return np.stack([(self.classes == code).sum(axis=-1) for code in range(len(CLASSES))], axis=-1)


def layer_statistics(dynamic: FactorSums, static: FactorSums, threshold: float = 0.5,
                     further: tuple[FactorSums, ...] = ()) -> LayerStatistics:
    """Scores, dims, per-channel r, classes and bias of one layer from the sums of each factor: ``dynamic``,
    ``static`` and any ``further`` factors (Esser et al.'s K factors). The total variance pools the pairs of every
    factor and the softmax runs over all K scores and the residual, so a further factor changes the dims of the
    others; the per-channel classes and the bias stay those of ``dynamic`` and ``static``."""
    factors = (dynamic, static, *further)
    channels = np.shape(dynamic.sa)[-1]
    mean_tot, var_tot = total_variance(*factors)
    dead = dead_channels(mean_tot, var_tot)
    live_var = np.where(dead, 0.0, var_tot)
    sigma2 = live_var.sum(axis=-1)

    scores = []
    ratios = []
    for sums in factors:
        _, cov, var_f = factor_moments(sums)
        cov = np.where(dead, 0.0, cov)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(sigma2 > 0, cov.sum(axis=-1) / np.where(sigma2 > 0, sigma2, 1.0), 0.0))
            usable = (var_f > DEAD_RTOL * mean_tot * mean_tot + DEAD_ATOL) & ~dead
            ratios.append(np.where(usable, cov / np.where(usable, var_f, 1.0), 0.0))
    # An empty replicate (a factor with no weight) keeps NaN so that it drops out of the percentiles.
    empty = np.asarray(dynamic.n) <= 0
    for sums in factors[1:]:
        empty = empty | (np.asarray(sums.n) <= 0)
    scores = [np.where(empty, np.nan, score) for score in scores]
    dims = factor_dims(scores, channels)
    classes = classify_channels(ratios[0], ratios[1], dead, threshold)
    return LayerStatistics(
        channels=channels,
        scores=np.stack(scores),
        dims=dims,
        ratios=np.stack(ratios),
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
