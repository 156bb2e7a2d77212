"""The statistics of ``stlens perturb``: per-clip scores (1/0 for top-k), their means, and 95% percentile bootstrap
intervals over clips, every perturbation on the same resamples as the clean scores (so drops and retentions are
paired clip by clip).

Retention of a perturbation: ``(score − chance) / (clean − chance)``, chance = k/C for top-k of C classes; 1 keeps
all the above-chance accuracy, 0 falls to chance. It is NaN (with a note) when ``clean − chance`` is under two
standard errors of the clean mean (std/√n): the model is then not shown to be above chance. Its interval: the same
ratio on each bootstrap resample, resamples whose clean mean is not above chance left out.

Track AP (VIS data) is a statistic of the whole set of clips, with no per-clip score: ``set_replicates`` recomputes
it on every resample of the clips (a clip drawn twice counts twice) and ``summarise_set`` gives the same numbers,
the bootstrap standard deviation of the clean AP standing in for the standard error in the retention rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

LEVEL = 0.95


def bootstrap_indices(clips: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, clips) clip indices drawn with replacement: the same for every perturbation of a run."""
    return np.random.default_rng([seed, 0x9E27B, 1]).integers(0, clips, size=(replicates, clips))


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``values`` (NaN, NaN without any)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def resampled_means(values: np.ndarray, kept: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over the kept clips of each resample (NaN where a resample keeps none)."""
    weights = kept[index]
    count = weights.sum(axis=1)
    sums = np.where(weights, np.where(kept, values, 0.0)[index], 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, sums / np.maximum(count, 1), np.nan)


def summarise(scores: np.ndarray, clean: np.ndarray, chance: float, index: np.ndarray) -> dict[str, float | str]:
    """A perturbation's score, drop (clean − score) and retention, each with its interval (``index``: the bootstrap
    resamples); clips where either score is NaN are left out of all three. ``note`` says why retention is NaN."""
    scores, clean = np.asarray(scores, np.float64), np.asarray(clean, np.float64)
    kept = ~(np.isnan(scores) | np.isnan(clean))
    n = int(kept.sum())
    nan = float("nan")
    out: dict[str, float | str] = {"clips": n, "note": ""}
    if n == 0:
        return out | dict.fromkeys(("score", "score_lo", "score_hi", "drop", "drop_lo", "drop_hi", "retention",
                                    "retention_lo", "retention_hi", "clean"), nan) | {"note": "no clip scored"}
    score, base = float(scores[kept].mean()), float(clean[kept].mean())
    out |= {"score": score, "clean": base, "drop": base - score}
    margin = base - chance
    error = float(clean[kept].std(ddof=1) / np.sqrt(n)) if n > 1 else nan
    shown = n > 1 and margin > 0 and margin >= 2 * error
    out["retention"] = (score - chance) / margin if shown else nan
    if not shown:
        out["note"] = (f"clean {base:.3f} is not 2 standard errors ({error:.3f}) above chance {chance:.3f}: "
                       f"retention undefined")
    if not index.size:
        return out | _intervals(None, None, chance, shown)
    return out | _intervals(resampled_means(scores, kept, index), resampled_means(clean, kept, index), chance, shown)


def rate(values: np.ndarray, index: np.ndarray) -> tuple[float, float, float]:
    """The mean of per-clip 1/0 ``values`` (NaN: unscored) and its interval over the same resamples."""
    values = np.asarray(values, np.float64)
    kept = ~np.isnan(values)
    if not kept.any():
        return float("nan"), float("nan"), float("nan")
    low, high = interval(resampled_means(values, kept, index)) if index.size else (float("nan"), float("nan"))
    return float(values[kept].mean()), low, high


def set_replicates(score: Callable[[np.ndarray], dict[str, float]], kept: np.ndarray, index: np.ndarray,
                   names: Sequence[str]) -> dict[str, np.ndarray]:
    """A set statistic (track AP: no per-clip scores) recomputed on each bootstrap resample: per name the (R,)
    values of ``score(videos)`` over the kept clips of each row of ``index`` (repeats count again, in the row's
    order); NaN where a resample keeps no clip."""
    values = {name: np.full(len(index), np.nan) for name in names}
    for r, row in enumerate(index):
        videos = row[kept[row]]
        if videos.size:
            found = score(videos)
            for name in names:
                values[name][r] = found[name]
    return values


def summarise_set(score: float, clean: float, score_r: np.ndarray, clean_r: np.ndarray, chance: float,
                  clips: int) -> dict[str, float | str]:
    """``summarise`` for a statistic of the whole set of clips (track AP): ``score`` and ``clean`` over the kept
    clips, ``score_r`` and ``clean_r`` the same on each resample (``set_replicates``, paired: the same resamples).
    Retention is NaN unless clean − chance ≥ 2 × the bootstrap standard deviation of the clean value (in place of the
    standard error of a mean; none without bootstrap, so then NaN)."""
    nan = float("nan")
    out: dict[str, float | str] = {"clips": int(clips), "note": "", "score": float(score), "clean": float(clean),
                                   "drop": float(clean) - float(score)}
    if clips == 0:
        return out | dict.fromkeys(("score", "score_lo", "score_hi", "drop", "drop_lo", "drop_hi", "retention",
                                    "retention_lo", "retention_hi", "clean"), nan) | {"note": "no clip scored"}
    finite = clean_r[np.isfinite(clean_r)]
    error = float(finite.std(ddof=1)) if finite.size > 1 else nan
    margin = clean - chance
    shown = bool(margin > 0 and margin >= 2 * error)
    out["retention"] = (score - chance) / margin if shown else nan
    if not shown:
        out["note"] = (f"clean {clean:.3f} is not 2 bootstrap standard deviations ({error:.3f}) above chance "
                       f"{chance:.3f}: retention undefined")
    return out | _intervals(score_r if len(score_r) else None, clean_r, chance, shown)


def _intervals(score_r: np.ndarray | None, clean_r: np.ndarray | None, chance: float, shown: bool) -> dict:
    """95% intervals of the score, the paired drop and the retention from resampled scores and clean scores (None:
    no resamples, all NaN); the retention's only where the point retention is ``shown``."""
    nan = float("nan")
    if score_r is None or clean_r is None:
        return dict.fromkeys(("score_lo", "score_hi", "drop_lo", "drop_hi", "retention_lo", "retention_hi"), nan)
    out = {}
    out["score_lo"], out["score_hi"] = interval(score_r)
    out["drop_lo"], out["drop_hi"] = interval(clean_r - score_r)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(clean_r - chance > 0, (score_r - chance) / (clean_r - chance), np.nan)
    out["retention_lo"], out["retention_hi"] = interval(ratio) if shown else (nan, nan)
    return out
