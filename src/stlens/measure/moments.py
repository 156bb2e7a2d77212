"""Streaming, mergeable sufficient statistics of paired latents with Poisson-bootstrap replicates.

Memory is O(factors × 5 × (1 + B) × C) whatever the number of pairs. Each factor keeps, per channel, its count (or
total bootstrap weight), the means of a and b and the centred co-moments M_aa = Σ(a − ā)², M_bb = Σ(b − b̄)² and
M_ab = Σ(a − ā)(b − b̄), all in float64. A batch is reduced by a two-pass (mean first, then centred sums) and added
with the exact pairwise update of Chan, Golub & LeVeque (1979), so ``merge`` is exact and no sum of squares about a
far-away point ever has to be subtracted. Each factor's coordinates are taken about its own origin (per channel, the
lower median of that factor's first batch of vectors, a value that occurs in it), so an outlier among one factor's
pairs costs the other factor no precision, and a constant channel is exactly zero-variance.

``estimate`` consumes plain sums (Σa, Σb, Σa², Σb², Σab); ``factor_sums`` rebuilds them about a per-channel point K,
shared by both factors, that lies between the two factor means: K splits μ_D … μ_S in the ratio σ_D : σ_S, which
bounds the cancellation left in estimate (cov = Σab/N − μ²) to ε·(1 + (μ_D − μ_S)²/(σ_D + σ_S)²) of each factor's
variance, whatever the data's offset or outliers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stlens.errors import StlensError
from stlens.measure.estimate import FactorSums

N_FACTORS = 2
_SA, _SB, _SAA, _SBB, _SAB = range(5)
_AA, _BB, _AB = range(3)
#: A replicate whose Σw·u² about the batch mean exceeds its centred M2 (accumulated plus this batch's) by this factor
#: (a far outlier in the batch that the replicate leaves out) gets an explicit second pass about its own weighted mean.
_REFINE_RATIO = 1e3
#: Elements of (replicates × pairs × channels) materialized at a time by that second pass.
_REFINE_CHUNK = 1 << 22
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment
_SEED_SALT = np.uint64(0x5851F42D4C957F2D)
#: P(X ≤ k) of Poisson(1), k = 0, 1, …: the inverse-CDF table of the replicate weights (P(X > 24) < 1e-25).
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(25)])


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea & Flood 2014) on uint64 arrays (arithmetic modulo 2⁶⁴)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def poisson_weights(seed: int, index, bootstrap: int) -> np.ndarray:
    """Poisson(1) weights (N, B) of the pairs with global indices ``index`` (N,): row n is a pure function of
    (seed, index[n]), whatever the batch, the process or the order the pair comes in.

    Counter-based: pair k gets the SplitMix64 stream whose state is mix(mix(seed) + k·γ); its B outputs give 53-bit
    uniforms that the inverse CDF of Poisson(1) turns into weights.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1).astype(np.uint64)
    key = _mix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) ^ _SEED_SALT)
    state = _mix64(key + index * _GOLDEN)
    bits = _mix64(state[:, None] + np.arange(1, bootstrap + 1, dtype=np.uint64) * _GOLDEN)
    u = (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # [0, 1)
    k = np.searchsorted(_POISSON1_CDF, u, side="right")
    return np.minimum(k, len(_POISSON1_CDF) - 1).astype(np.float64)


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _centre(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means of (N, C) ``x`` and ``x`` minus them; a constant column gets its value and exact zeros."""
    constant = (x == x[0]).all(axis=0)
    mean = np.where(constant, x[0], x.mean(axis=0))
    return mean, np.where(constant, 0.0, x - mean)


def _batch_moments(x: np.ndarray, y: np.ndarray, w: np.ndarray,
                   floor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted centred moments of N pairs (x_n, y_n), (N, C) each, under K weight columns ``w`` (N, K).

    Returns (W (K,), means (2, K, C) of x and y, co-moments (3, K, C): M_xx, M_yy, M_xy); a column with zero total
    weight gets zeros. Sums are taken about the unweighted batch mean and corrected (the corrected two-pass
    algorithm), which leaves an absolute error of about ε·Σw·u² in M_xx. Where that is not negligible against
    ``floor`` (2, K, C: the M_xx, M_yy already accumulated) plus the batch's own M_xx — a far outlier in the batch
    that a replicate leaves out — the column gets a true second pass about its own weighted mean.
    """
    n, c = x.shape
    k = w.shape[1]
    cx, u = _centre(x)
    cy, v = _centre(y)
    total = w.sum(axis=0)
    inv = np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), 0.0)[:, None]  # 0 for an empty column
    s = np.matmul(np.ascontiguousarray(w.T), np.stack([u, v, u * u, v * v, u * v]))  # (5, K, C) weighted sums
    means = s[:2] * inv  # weighted mean minus batch mean
    m2 = np.empty((3, k, c))
    for out, sq, first, second in ((m2[_AA], 2, 0, 0), (m2[_BB], 3, 1, 1), (m2[_AB], 4, 0, 1)):
        np.multiply(s[first], means[second], out=out)
        np.subtract(s[sq], out, out=out)
    np.maximum(m2[:2], 0.0, out=m2[:2])
    limit = floor + m2[:2]
    limit *= _REFINE_RATIO
    rows = np.flatnonzero((s[2:4] > limit).any(axis=(0, 2)))
    step = max(1, _REFINE_CHUNK // max(1, n * c))
    for start in range(0, len(rows), step):
        r = rows[start:start + step]
        wr = w[:, r].T  # (R, N)
        eu = u[None] - means[0, r][:, None]  # (R, N, C): deviations from each replicate's own weighted mean
        ev = v[None] - means[1, r][:, None]
        ir, tr = inv[r], total[r][:, None]
        fu = np.einsum("rn,rnc->rc", wr, eu) * ir  # rounding left in the mean (corrected two-pass)
        fv = np.einsum("rn,rnc->rc", wr, ev) * ir
        m2[_AA, r] = np.maximum(np.einsum("rn,rnc->rc", wr, eu * eu) - fu * fu * tr, 0.0)
        m2[_BB, r] = np.maximum(np.einsum("rn,rnc->rc", wr, ev * ev) - fv * fv * tr, 0.0)
        m2[_AB, r] = np.einsum("rn,rnc->rc", wr, eu * ev) - fu * fv * tr
        means[0, r] += fu
        means[1, r] += fv
    means[0] += cx
    means[1] += cy
    empty = total <= 0
    if empty.any():
        means[:, empty] = 0.0
        m2[:, empty] = 0.0
    return total, means, m2


def _combine(n_a: np.ndarray, mean_a: np.ndarray, m2_a: np.ndarray, n_b, mean_b: np.ndarray,
             m2_b: np.ndarray) -> None:
    """Exact pairwise merge of centred moments b into a, in place: counts (...) float, means (2, ..., C) and
    co-moments (3, ..., C). An empty side (count 0, zero means) contributes nothing, exactly."""
    n_b = np.asarray(n_b, dtype=np.float64)
    n = n_a + n_b
    frac = np.where(n > 0, n_b / np.where(n > 0, n, 1.0), 0.0)[..., None]  # n_b/n
    delta = mean_b - mean_a
    scaled = delta * (n_a[..., None] * frac)  # δ·n_a·n_b/n
    m2_a += m2_b
    m2_a[_AA] += scaled[0] * delta[0]
    m2_a[_BB] += scaled[1] * delta[1]
    m2_a[_AB] += scaled[0] * delta[1]
    delta *= frac
    mean_a += delta
    n_a += n_b


def _handover(n: np.ndarray, mean: np.ndarray, m2: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Sums (F, 5, ..., C) for ``estimate`` from counts (F, ...), means (F, 2, ..., C) about each factor's origin,
    co-moments (F, 3, ..., C) and ``offset`` (F, C) = origin of factor f − origin of factor 0.

    The sums are taken about one point K per channel (and replicate), shared by both factors, chosen between the
    two factor means in the ratio of their standard deviations (see the module docstring). Only the distance D
    between the factor means is formed across origins, so nothing large is subtracted. Further factors (F > 2) take
    their sums about the same K, at a cancellation of ε·(1 + (μ_f − K)²/σ_f²) of their variance.
    """
    count = np.asarray(n, dtype=np.float64)[..., None]  # (F, ..., 1)
    mu = 0.5 * (mean[:, 0] + mean[:, 1])  # (F, ..., C)
    half = 0.5 * (mean[:, 0] - mean[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count > 0, (m2[:, _AA] + m2[:, _BB]) / (2 * np.where(count > 0, count, 1.0)), 0.0)
        sd = np.sqrt(np.maximum(var, 0.0) + half * half)
        spread = sd[0] + sd[1]
        t = np.where(spread > 0, sd[0] / np.where(spread > 0, spread, 1.0), 0.0)
    t = np.where(count[1] <= 0, 0.0, np.where(count[0] <= 0, 1.0, t))
    distance = (mu[1] - mu[0]) + offset[1]  # μ_S − μ_D
    to_k = [-distance * t, distance * (1.0 - t)]  # μ_f − K: exactly 0 for a factor with zero spread
    for f in range(2, len(count)):  # further factors: their sums about the same K (the dynamic/static point)
        to_k.append((mu[f] - mu[0]) + offset[f] - distance * t)
    to_k = np.stack(to_k)
    da = half + to_k
    db = -half + to_k
    return np.stack([count * da, count * db, m2[:, _AA] + count * da * da, m2[:, _BB] + count * db * db,
                     m2[:, _AB] + count * da * db], axis=1)


class PairedMoments:
    """Per-factor, per-channel centred moments of pairs (a, b), with B bootstrap replicates.

    Each pair gets an independent Poisson(1) weight per replicate, a function of (``seed``, the pair's global index)
    only (``poisson_weights``), so the replicates do not depend on how the pairs were batched, split across processes
    or ordered; a replicate keeps weighted counts, means and co-moments. ``merge`` adds another instance (other pairs,
    e.g. another process with the same seed and the other indices, or an earlier run); any split of the same pairs
    gives the same moments up to float rounding. Pairs given without indices are numbered by a running counter of
    the pairs this instance has seen (0, 1, 2, …).

    Args:
        channels: channels (C) of the latent: ``update`` takes (N, C) arrays.
        bootstrap: bootstrap replicates B (0: none).
        seed: the seed of the replicates' Poisson weights.
        factors: the number of factors (at least 2: dynamic and static first).

    Examples:
        >>> import torch
        >>> moments = stlens.PairedMoments(channels=2, bootstrap=10)
        >>> a, b = torch.tensor([[1., 0.], [2., 1.], [3., 0.]]), torch.tensor([[1., 1.], [2., 0.], [3., 1.]])
        >>> moments.update(0, a, b)  # three dynamic pairs (factor 0) of two channels
        >>> moments.n.tolist(), moments.factors
        ([3, 0], 2)
    """

    def __init__(self, channels: int, bootstrap: int = 200, seed: int = 0, factors: int = N_FACTORS):
        if channels <= 0:
            raise StlensError(f"PairedMoments needs at least one channel, got {channels}")
        if bootstrap < 0:
            raise StlensError(f"`bootstrap` must be ≥ 0, got {bootstrap}")
        if factors < N_FACTORS:
            raise StlensError(f"`factors` must be ≥ {N_FACTORS} (dynamic and static first), got {factors}")
        self.channels = channels
        self.bootstrap = bootstrap
        self.seed = seed
        self._next_index = 0  # the index of the next pair given without one
        self.shift = np.zeros((factors, channels), dtype=np.float64)  # per-factor origin (see ``update``)
        self.n = np.zeros(factors, dtype=np.int64)
        self.mean = np.zeros((factors, 2, channels), dtype=np.float64)  # ā, b̄ about ``shift``
        self.m2 = np.zeros((factors, 3, channels), dtype=np.float64)  # M_aa, M_bb, M_ab
        self.boot_n = np.zeros((factors, bootstrap), dtype=np.float64)  # total weight per replicate
        self.boot_mean = np.zeros((factors, 2, bootstrap, channels), dtype=np.float64)
        self.boot_m2 = np.zeros((factors, 3, bootstrap, channels), dtype=np.float64)

    def _weights(self, index: np.ndarray) -> np.ndarray:
        """Poisson(1) weights (N, B) of the pairs with global indices ``index`` (N,), pair-major."""
        return poisson_weights(self.seed, index, self.bootstrap)

    def update(self, factor: int, a, b, index=None) -> None:
        """Add N pairs of one factor: ``a`` and ``b`` are (N, C) arrays or tensors, row n of each is one pair.

        ``index`` (N,): the pairs' global indices, which fix their bootstrap weights; ``None`` numbers them on from
        the pairs this instance has seen."""
        a = _as_float64(a)
        b = _as_float64(b)
        if a.shape != b.shape or a.ndim != 2 or a.shape[1] != self.channels:
            raise StlensError(f"expected two (N, {self.channels}) arrays, got {a.shape} and {b.shape}")
        if factor not in range(self.factors):
            raise StlensError(f"`factor` must be 0 (dynamic), 1 (static) or a further factor < {self.factors}, got "
                              f"{factor}")
        if index is None:
            index = np.arange(self._next_index, self._next_index + len(a), dtype=np.int64)
        else:
            index = np.asarray(index, dtype=np.int64).reshape(-1)
            if index.shape != (len(a),):
                raise StlensError(f"expected {len(a)} pair indices, got {index.shape[0]}")
            if len(index) and index.min() < 0:
                raise StlensError(f"pair indices must be ≥ 0, got {int(index.min())}")
        if len(a) == 0:
            return
        self._next_index = max(self._next_index, int(index.max()) + 1)
        if self.n[factor] == 0:  # the origin: a value of the batch (exact for a constant channel), robust to outliers
            self.shift[factor] = np.quantile(np.concatenate([a, b]), 0.5, axis=0, method="lower")
        x = a - self.shift[factor]
        y = b - self.shift[factor]
        _, means, m2 = _batch_moments(x, y, np.ones((len(a), 1)), self.m2[factor][:2, None])
        _combine(np.array([float(self.n[factor])]), self.mean[factor][:, None], self.m2[factor][:, None], len(a),
                 means, m2)
        self.n[factor] += len(a)
        if self.bootstrap:
            total, means, m2 = _batch_moments(x, y, self._weights(index), self.boot_m2[factor][:2])
            _combine(self.boot_n[factor], self.boot_mean[factor], self.boot_m2[factor], total, means, m2)

    def merge(self, other: PairedMoments) -> PairedMoments:
        """Add the pairs of ``other`` into this instance (in place) and return it."""
        if other.factors != self.factors:
            raise StlensError(f"cannot merge moments of {other.factors} factors into moments of {self.factors}")
        if other.channels != self.channels or other.bootstrap != self.bootstrap:
            raise StlensError(
                f"cannot merge moments with {other.channels} channels / {other.bootstrap} replicates into "
                f"{self.channels} channels / {self.bootstrap} replicates"
            )
        for f in range(self.factors):
            if other.n[f] == 0:
                continue
            if self.n[f] == 0:
                self.shift[f] = other.shift[f]
            d = other.shift[f] - self.shift[f]  # other's coordinates + d = ours
            _combine(np.array(float(self.n[f])), self.mean[f], self.m2[f], other.n[f], other.mean[f] + d,
                     other.m2[f])
            if self.bootstrap:
                mean = np.where(other.boot_n[f][:, None] > 0, other.boot_mean[f] + d, 0.0)
                _combine(self.boot_n[f], self.boot_mean[f], self.boot_m2[f], other.boot_n[f], mean, other.boot_m2[f])
            self.n[f] += other.n[f]
        self._next_index = max(self._next_index, other._next_index)
        return self

    @property
    def factors(self) -> int:
        """The number of factors (dynamic, static, then any further ones)."""
        return len(self.n)

    def _offset(self) -> np.ndarray:
        """Origin of each factor minus that of the dynamic one, (F, C) (all 0 while any factor has no pairs)."""
        if (self.n == 0).any():
            return np.zeros((self.factors, self.channels))
        return self.shift - self.shift[0]

    @property
    def sums(self) -> np.ndarray:
        """Point sums (F, 5, C) Σa, Σb, Σa², Σb², Σab, about the per-channel point chosen for ``estimate``."""
        return _handover(self.n, self.mean, self.m2, self._offset())

    @property
    def boot_sums(self) -> np.ndarray:
        """Replicate sums (F, 5, B, C), as ``sums`` for each replicate."""
        return _handover(self.boot_n, self.boot_mean, self.boot_m2, self._offset())

    def factor_sums(self, factor: int) -> FactorSums:
        """Point sums of one factor."""
        s = self.sums[factor]
        return FactorSums(np.asarray(self.n[factor]), s[_SA], s[_SB], s[_SAA], s[_SBB], s[_SAB])

    def replicate_sums(self, factor: int) -> FactorSums:
        """Bootstrap sums of one factor, with a leading replicate axis."""
        s = self.boot_sums[factor]
        return FactorSums(self.boot_n[factor], s[_SA], s[_SB], s[_SAA], s[_SBB], s[_SAB])

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that ``from_state`` turns back into an equal instance (for saving and resuming)."""
        return {"shift": self.shift, "n": self.n, "mean": self.mean, "m2": self.m2, "boot_n": self.boot_n,
                "boot_mean": self.boot_mean, "boot_m2": self.boot_m2, "seed": np.asarray(self.seed),
                "next_index": np.asarray(self._next_index)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> PairedMoments:
        """Rebuild an instance saved with ``state``: the same seed, so further updates of other pairs (other global
        indices) give what one uninterrupted instance would have (resuming a run).

        States written before the centred layout (raw sums ``sums`` / ``boot_sums`` about ``shift``) are converted.
        """
        if "sums" in state:
            state = _from_raw_sums(state)
        boot = np.asarray(state["boot_mean"])
        m = cls(channels=boot.shape[-1], bootstrap=boot.shape[2], seed=int(state["seed"]), factors=boot.shape[0])
        m._next_index = int(state.get("next_index", 0))
        shift = np.nan_to_num(np.asarray(state["shift"], dtype=np.float64))  # NaN: an old state's unset origin
        m.shift = np.array(np.broadcast_to(shift, m.shift.shape))
        m.n = np.asarray(state["n"], dtype=np.int64).copy()
        m.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        m.m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        m.boot_n = np.asarray(state["boot_n"], dtype=np.float64).copy()
        m.boot_mean = boot.astype(np.float64).copy()
        m.boot_m2 = np.asarray(state["boot_m2"], dtype=np.float64).copy()
        return m

    def save(self, path: str | Path) -> None:
        np.savez(path, **self.state())


def _from_raw_sums(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The centred layout of a state that holds raw sums (F, 5, ..., C) about ``shift``."""
    out = dict(state)
    for prefix, count in (("", state["n"]), ("boot_", state["boot_n"])):
        sums = np.asarray(state[f"{prefix}sums"], dtype=np.float64)
        c = np.asarray(count, dtype=np.float64)[:, None, ..., None]  # (F, 1, ..., 1)
        mean = np.where(c > 0, sums[:, :2] / np.where(c > 0, c, 1.0), 0.0)
        m2 = sums[:, 2:] - c * np.stack([mean[:, 0] * mean[:, 0], mean[:, 1] * mean[:, 1],
                                          mean[:, 0] * mean[:, 1]], axis=1)
        out[f"{prefix}mean"], out[f"{prefix}m2"] = mean, m2
    return out
