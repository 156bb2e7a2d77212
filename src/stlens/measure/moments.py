"""Streaming, mergeable sufficient statistics of paired latents with Poisson-bootstrap replicates.

Memory is O(factors × 5 × (1 + B) × C) whatever the number of pairs. Sums are kept in float64 about a per-channel
shift (the first vector seen), which keeps the variance of channels with a large mean accurate and makes a constant
channel exactly zero-variance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stlens.errors import StlensError
from stlens.measure.estimate import FactorSums

N_FACTORS = 2
_SA, _SB, _SAA, _SBB, _SAB = range(5)


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _move_shift(sums: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Sums (F, 5, ..., C) about shift K turned into sums about K − d; ``n`` counts broadcastable to (F, ..., C)."""
    out = sums.copy()
    sa, sb = sums[:, _SA], sums[:, _SB]
    out[:, _SAA] += 2 * d * sa + n * d * d
    out[:, _SBB] += 2 * d * sb + n * d * d
    out[:, _SAB] += d * (sa + sb) + n * d * d
    out[:, _SA] += n * d
    out[:, _SB] += n * d
    return out


class PairedMoments:
    """Per-factor, per-channel sums Σa, Σb, Σa², Σb², Σab of pairs (a, b), with B bootstrap replicates.

    Each pair gets an independent Poisson(1) weight per replicate, drawn in pair order from ``seed``, so the replicates
    do not depend on how the pairs were batched. ``merge`` adds another instance (other pairs, e.g. another process or
    an earlier run) whose replicates were drawn from a different seed.
    """

    def __init__(self, channels: int, bootstrap: int = 200, seed: int = 0):
        if channels <= 0:
            raise StlensError(f"PairedMoments needs at least one channel, got {channels}")
        if bootstrap < 0:
            raise StlensError(f"--bootstrap must be ≥ 0, got {bootstrap}")
        self.channels = channels
        self.bootstrap = bootstrap
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.shift: np.ndarray | None = None
        self.n = np.zeros(N_FACTORS, dtype=np.int64)
        self.sums = np.zeros((N_FACTORS, 5, channels), dtype=np.float64)
        self.boot_n = np.zeros((N_FACTORS, bootstrap), dtype=np.float64)
        self.boot_sums = np.zeros((N_FACTORS, 5, bootstrap, channels), dtype=np.float64)

    def update(self, factor: int, a, b) -> None:
        """Add N pairs of one factor: ``a`` and ``b`` are (N, C) arrays or tensors, row n of each is one pair."""
        a = _as_float64(a)
        b = _as_float64(b)
        if a.shape != b.shape or a.ndim != 2 or a.shape[1] != self.channels:
            raise StlensError(f"expected two (N, {self.channels}) arrays, got {a.shape} and {b.shape}")
        if factor not in (0, 1):
            raise StlensError(f"factor must be 0 (dynamic) or 1 (static), got {factor}")
        if len(a) == 0:
            return
        if self.shift is None:
            self.shift = a[0].copy()
        x = a - self.shift
        y = b - self.shift
        terms = np.stack([x, y, x * x, y * y, x * y])  # (5, N, C)
        self.n[factor] += len(a)
        self.sums[factor] += terms.sum(axis=1)
        if self.bootstrap:
            weights = self._rng.poisson(1.0, size=(len(a), self.bootstrap)).astype(np.float64)  # pair-major
            self.boot_n[factor] += weights.sum(axis=0)
            self.boot_sums[factor] += np.einsum("knc,nb->kbc", terms, weights)

    def _reshifted(self, new_shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This instance's (sums, boot_sums) taken about ``new_shift`` instead of ``self.shift``."""
        d = self.shift - new_shift  # x_new = x_old + d
        return (_move_shift(self.sums, self.n[:, None], d),
                _move_shift(self.boot_sums, self.boot_n[:, :, None], d))

    def merge(self, other: PairedMoments) -> PairedMoments:
        """Add the pairs of ``other`` into this instance (in place) and return it."""
        if other.channels != self.channels or other.bootstrap != self.bootstrap:
            raise StlensError(
                f"cannot merge moments with {other.channels} channels / {other.bootstrap} replicates into "
                f"{self.channels} channels / {self.bootstrap} replicates"
            )
        if other.shift is None:
            return self
        if self.shift is None:
            self.shift = other.shift.copy()
        sums, boot = other._reshifted(self.shift)
        self.n += other.n
        self.sums += sums
        self.boot_n += other.boot_n
        self.boot_sums += boot
        return self

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
        shift = self.shift if self.shift is not None else np.full(self.channels, np.nan)
        return {"shift": shift, "n": self.n, "sums": self.sums, "boot_n": self.boot_n,
                "boot_sums": self.boot_sums, "seed": np.asarray(self.seed)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> PairedMoments:
        """Rebuild an instance saved with ``state``; further updates draw fresh replicate weights."""
        boot = np.asarray(state["boot_sums"])
        m = cls(channels=boot.shape[-1], bootstrap=boot.shape[2], seed=int(state["seed"]) + 1)
        shift = np.asarray(state["shift"], dtype=np.float64)
        m.shift = None if np.isnan(shift).all() else shift
        m.n = np.asarray(state["n"], dtype=np.int64).copy()
        m.sums = np.asarray(state["sums"], dtype=np.float64).copy()
        m.boot_n = np.asarray(state["boot_n"], dtype=np.float64).copy()
        m.boot_sums = boot.astype(np.float64).copy()
        return m

    def save(self, path: str | Path) -> None:
        np.savez(path, **self.state())
