"""Simulated latents with a known structure, for checking the estimator and its bootstrap intervals.

Model: z = M·m + S·s + ε with a motion code m, an appearance code s (both standard normal) and noise ε. A dynamic
pair shares m and draws s and ε independently; a static pair shares s. ``M``/``S`` load the first channels on motion,
the next ones on appearance and leave the rest as noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stlens.measure.layer import estimate_layer
from stlens.measure.moments import PairedMoments


@dataclass(frozen=True)
class PlantedWorld:
    channels: int = 128
    motion_channels: int = 32
    appearance_channels: int = 48
    code_dims: int = 8
    noise: float = 0.5
    seed: int = 0

    def loadings(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, 1))
        motion = np.zeros((self.channels, self.code_dims))
        appearance = np.zeros((self.channels, self.code_dims))
        m_end = self.motion_channels
        a_end = m_end + self.appearance_channels
        motion[:m_end] = rng.normal(size=(m_end, self.code_dims))
        appearance[m_end:a_end] = rng.normal(size=(self.appearance_channels, self.code_dims))
        return motion, appearance

    def population_scores(self) -> tuple[float, float]:
        """The scores (s_D, s_S) in the population, by hand: per channel Var z = |M_c|² + |S_c|² + σ², a dynamic
        pair's covariance is |M_c|² (shared motion code), a static pair's |S_c|²."""
        motion, appearance = self.loadings()
        m2 = (motion**2).sum(1)
        a2 = (appearance**2).sum(1)
        total = float((m2 + a2 + self.noise**2).sum())
        return float(m2.sum()) / total, float(a2.sum()) / total

    def population_percent(self) -> dict[str, float]:
        """The dynamic / static / residual percentages the estimator should approach (docs/formats.md §1 on the
        population scores)."""
        from stlens.measure.estimate import dims_from_scores, percent

        s_d, s_s = self.population_scores()
        dims = dims_from_scores(np.array(s_d), np.array(s_s), self.channels)
        return {k: percent(int(dims[i]), self.channels) for i, k in enumerate(("dynamic", "static", "residual"))}

    def pairs(self, factor: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n pairs of factor 0 (dynamic: shared motion) or 1 (static: shared appearance), each (n, C)."""
        motion, appearance = self.loadings()
        shared = rng.normal(size=(n, self.code_dims))
        own_a, own_b = rng.normal(size=(2, n, self.code_dims))
        noise_a, noise_b = rng.normal(scale=self.noise, size=(2, n, self.channels))
        keep, vary = (motion, appearance) if factor == 0 else (appearance, motion)
        a = shared @ keep.T + own_a @ vary.T + noise_a
        b = shared @ keep.T + own_b @ vary.T + noise_b
        return a, b


def simulate_run(world: PlantedWorld, pairs: int, bootstrap: int, seed: int, batch: int = 256) -> dict:
    """Estimate one layer from ``pairs`` simulated pairs per factor; returns its ``LayerResult.to_dict()``."""
    rng = np.random.default_rng(seed)
    moments = PairedMoments(world.channels, bootstrap=bootstrap, seed=seed)
    for factor in (0, 1):
        left = pairs
        while left > 0:
            take = min(batch, left)
            a, b = world.pairs(factor, take, rng)
            moments.update(factor, a, b)
            left -= take
    return estimate_layer("planted", moments, threshold=0.5).to_dict()


def ci_coverage(world: PlantedWorld, pairs: int, runs: int, bootstrap: int = 200, seed: int = 0) -> dict[str, float]:
    """Fraction of ``runs`` simulated measurements whose 95% CI contains the population value
    (``world.population_percent()``), for the dynamic and static percentages."""
    truth = world.population_percent()
    hits = {"dynamic": 0, "static": 0}
    widths = {"dynamic": [], "static": []}
    for run in range(runs):
        result = simulate_run(world, pairs, bootstrap, seed=seed + run)
        for key in hits:
            lo, hi = result["ci95"][key]
            hits[key] += lo <= truth[key] <= hi
            widths[key].append(hi - lo)
    return {"truth_dynamic": truth["dynamic"], "truth_static": truth["static"],
            "coverage_dynamic": hits["dynamic"] / runs, "coverage_static": hits["static"] / runs,
            "mean_width_dynamic": float(np.mean(widths["dynamic"])),
            "mean_width_static": float(np.mean(widths["static"]))}
