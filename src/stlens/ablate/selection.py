"""Which channels to mask: the ranking rules of ``stlens ablate`` applied to one layer's units.csv rows.

With C channels in the layer, K% means n = round(K·C/100) channels (half up, at least 1), chosen among the live
(non-dead) channels; with fewer live channels, all live ones are used (``Selection.short``).

- ``dynamic``: the top n by r_D − r_S; ``static``: the top n by r_S − r_D; ``joint``: the top n by min(r_D, r_S)
  (ties: the lower channel index first);
- ``random``: n drawn uniformly from the live channels;
- ``random-least-dynamic`` / ``random-least-static``: the control of Kowal et al. (TPAMI 2024): n drawn from the
  round((K+5)·C/100) live channels lowest on that factor's ranking score (r_D − r_S, resp. r_S − r_D).

A random selection's draw d is seeded from (seed, layer, select, K, d) only, so it does not depend on which other
selections or layers a run asks for.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stlens.errors import StlensError

RANKED = ("dynamic", "static", "joint")
RANDOM = ("random", "random-least-dynamic", "random-least-static")
SELECTIONS = RANKED + RANDOM
#: the paper's control draws from the (K + LEAST_MARGIN)% least-biased channels
LEAST_MARGIN = 5.0


@dataclass(frozen=True)
class Units:
    """One layer's channels as measured: r per factor and the class of each channel (units.csv)."""

    layer: str
    r_dynamic: np.ndarray
    r_static: np.ndarray
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return len(self.classes)

    @property
    def live(self) -> np.ndarray:
        """Indices of the channels that are neither dead nor without a finite r."""
        finite = np.isfinite(self.r_dynamic) & np.isfinite(self.r_static)
        return np.flatnonzero(finite & (np.asarray(self.classes) != "dead"))

    @classmethod
    def from_rows(cls, layer: str, rows: Sequence[dict]) -> Units:
        """From ``stlens.measure.result.units_of`` rows (channel, r_dynamic, r_static, class)."""
        ordered = sorted(rows, key=lambda r: r["channel"])
        if [r["channel"] for r in ordered] != list(range(len(ordered))):
            raise StlensError(f"layer '{layer}': the units.csv channels are not 0..{len(ordered) - 1}")
        return cls(layer, np.array([r["r_dynamic"] for r in ordered], dtype=float),
                   np.array([r["r_static"] for r in ordered], dtype=float), tuple(r["class"] for r in ordered))


@dataclass(frozen=True)
class Selection:
    """The channels masked in one condition: ``select`` as asked, ``k`` in percent, ``draw`` (0 for ranked ones)."""

    layer: str
    select: str
    k: float
    draw: int
    channels: tuple[int, ...]
    asked: int  # n = round(K·C/100), at least 1
    short: bool  # fewer live channels than asked: all live ones are used


def count_for(k: float, channels: int) -> int:
    """n = round(k·channels/100), half up, at least 1."""
    return max(1, math.floor(k * channels / 100.0 + 0.5))


def check_k(values: Sequence[float]) -> list[float]:
    """K values in (0, 100], else a ``StlensError`` naming `k`."""
    if not values:
        raise StlensError("`k` needs at least one value in (0, 100]")
    for k in values:
        if not (isinstance(k, (int, float)) and math.isfinite(k) and 0 < k <= 100):
            raise StlensError(f"`k` must be in (0, 100] (a percentage of the layer's channels), got {k}")
    return list(dict.fromkeys(float(k) for k in values))


def check_selections(names: Sequence[str]) -> list[str]:
    """Selection names as given, each known, else a ``StlensError`` naming `select`."""
    if not names:
        raise StlensError(f"`select` needs at least one of {', '.join(SELECTIONS)}")
    unknown = [n for n in names if n not in SELECTIONS]
    if unknown:
        raise StlensError(f"`select`: unknown selection {unknown[0]!r}; choose from {', '.join(SELECTIONS)}")
    return list(dict.fromkeys(names))


def score(units: Units, factor: str) -> np.ndarray:
    """The ranking score of every channel: r_D − r_S (dynamic), r_S − r_D (static) or min(r_D, r_S) (joint)."""
    if factor == "dynamic":
        return units.r_dynamic - units.r_static
    if factor == "static":
        return units.r_static - units.r_dynamic
    if factor == "joint":
        return np.minimum(units.r_dynamic, units.r_static)
    raise ValueError(f"no ranking score for {factor!r}")


def top(units: Units, factor: str, n: int) -> np.ndarray:
    """The n live channels highest on ``factor``'s score (ties: the lower index first)."""
    live = units.live
    values = score(units, factor)[live]
    order = np.lexsort((live, -values))  # by score descending, then by channel index
    return live[order[:n]]


def lowest(units: Units, factor: str, n: int) -> np.ndarray:
    """The n live channels lowest on ``factor``'s score (ties: the lower index first)."""
    live = units.live
    order = np.lexsort((live, score(units, factor)[live]))
    return live[order[:n]]


def draw_rng(seed: int, layer: str, select: str, k: float, draw: int) -> np.random.Generator:
    """The generator of one random draw: a function of (seed, layer, select, K, draw) only."""
    key = zlib.crc32(f"{layer}|{select}|{k!r}|{draw}".encode())
    return np.random.default_rng([seed, key])


def select_channels(units: Units, select: str, k: float, draw: int = 0, seed: int = 0) -> Selection:
    """The channels of ``units`` that ``select`` masks at K = ``k`` percent (draw ``draw`` of a random selection)."""
    asked = count_for(k, units.channels)
    live = units.live
    n = min(asked, len(live))
    if n == 0:
        raise StlensError(f"layer '{units.layer}' has no live channel to mask (all {units.channels} are dead)")
    if select in RANKED:
        chosen = top(units, select, n)
    elif select == "random":
        chosen = draw_rng(seed, units.layer, select, k, draw).choice(live, size=n, replace=False)
    elif select in ("random-least-dynamic", "random-least-static"):
        factor = select.removeprefix("random-least-")
        pool = lowest(units, factor, min(len(live), max(n, count_for(k + LEAST_MARGIN, units.channels))))
        chosen = draw_rng(seed, units.layer, select, k, draw).choice(pool, size=n, replace=False)
    else:
        raise StlensError(f"`select`: unknown selection {select!r}; choose from {', '.join(SELECTIONS)}")
    return Selection(units.layer, select, float(k), int(draw), tuple(sorted(int(c) for c in chosen)), asked,
                     n < asked)


def plan(units: dict[str, Units], layers: Sequence[str], selects: Sequence[str], ks: Sequence[float], draws: int,
         seed: int) -> list[Selection]:
    """Every selection of a run, in the order layer, select, K, draw (ranked selections have one draw)."""
    if draws < 1:
        raise StlensError(f"`draws` must be ≥ 1 (random draws per selection and K), got {draws}")
    return [select_channels(units[layer], select, k, d, seed)
            for layer in layers for select in selects for k in ks
            for d in range(draws if select in RANDOM else 1)]
