"""One latent's result: ``LayerResult`` (per-layer estimate with bootstrap intervals, per-channel r and classes),
``estimate_layer`` (from streamed moments), and the units.csv / layers.csv row shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stlens.measure.estimate import CLASSES, layer_statistics, percent, percentile_interval
from stlens.measure.moments import PairedMoments

FIELDS = ("dynamic", "static")
UNIT_COLUMNS = ["layer", "channel", "r_dynamic", "r_static", "class"]


@dataclass(repr=False)
class LayerResult:
    """The estimate for one latent (a layer, or one element of a list/dict output); its ``repr`` is one line.

    Args:
        layer: the latent's name (``stage4``, ``layer.i`` for list outputs, ``layer@k`` for the k-th call).
        channels: its channels C.
        score: per factor (``dynamic``, ``static``, further factors) s_f = Σ_c cov_f,c / σ²_tot
            (docs/estimator.md).
        dims: per factor and ``residual`` the channels it gets: ⌊softmax([s_D, s_S, 1]) · C⌋, the rest residual.
        percent: ``dynamic``, ``static`` (and further factors) and ``residual`` as a percentage of the channels.
        ci95: per factor the bootstrap 95% interval of ``percent`` (None without bootstrap).
        units: per unit class (``dynamic``, ``static``, ``joint``, ``none``, ``dead``) the number of channels.
        units_ci95: per unit class its bootstrap 95% interval (None without bootstrap).
        bias: (dims_S − dims_D) / (dims_S + dims_D) ∈ [−1, 1] (> 0: static).
        bias_ci95: the bootstrap 95% interval of ``bias`` (None without bootstrap).
        r_dynamic: per channel r_D,c = cov_D,c / Var_D(z_c) over the dynamic pairs (C,).
        r_static: per channel r_S,c over the static pairs (C,).
        classes: per channel its unit class (``dynamic``, ``static``, ``joint``, ``none``, ``dead``; threshold τ on
            ``r_dynamic`` and ``r_static``).
        r_further: per further factor (by name) the per-channel correlations.

    Examples:
        >>> result = stlens.measure("stlens:c2d?classes=8&width=4", "synth:motion?n=16", frames=4, size=16, pairs=8,
        ...                         bootstrap=0, workers=0, progress=False)
        >>> layer = result.layers[-1]
        >>> layer.layer, layer.channels, len(layer.r_static)
        ('stage4', 32, 32)
        >>> round(layer.percent["dynamic"] + layer.percent["static"] + layer.percent["residual"])
        100
    """

    layer: str
    channels: int
    score: dict[str, float]
    dims: dict[str, int]
    percent: dict[str, float]
    ci95: dict[str, list[float] | None]
    units: dict[str, int]
    units_ci95: dict[str, list[float] | None]
    bias: float
    bias_ci95: list[float] | None
    r_dynamic: np.ndarray
    r_static: np.ndarray
    classes: list[str]
    r_further: dict[str, np.ndarray] = field(default_factory=dict)  # per-channel r of further factors, by name

    def __repr__(self) -> str:
        units = "/".join(str(self.units.get(k, 0)) for k in CLASSES)
        return (f"LayerResult({self.layer!r}: {self.channels} channels, dynamic {self.percent['dynamic']:.1f}%, "
                f"static {self.percent['static']:.1f}%, units D/S/J/N/dead {units}, bias {self.bias:.2f})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "channels": self.channels, "score": self.score, "dims": self.dims,
            "percent": self.percent, "ci95": self.ci95, "units": self.units, "units_ci95": self.units_ci95,
            "bias": self.bias, "bias_ci95": self.bias_ci95,
        }


def _interval(values: np.ndarray) -> list[float] | None:
    found = percentile_interval(values)
    return None if found is None else [round(found[0], 4), round(found[1], 4)]


def _dims_interval(dims: np.ndarray, channels: int) -> list[float] | None:
    """The CI of a percentage, from the bootstrap dims, rounded exactly like the point percentage."""
    found = percentile_interval(dims, discrete=True)
    return None if found is None else [percent(int(found[0]), channels), percent(int(found[1]), channels)]


def _count_interval(counts: np.ndarray) -> list[float] | None:
    found = percentile_interval(counts, discrete=True)
    return None if found is None else [found[0], found[1]]


def estimate_layer(name: str, moments: PairedMoments, threshold: float,
                   factors: tuple[str, ...] = FIELDS) -> LayerResult:
    """Point estimate and bootstrap intervals for one latent from its streamed moments; ``factors`` names the
    moments' factors in order (``dynamic``, ``static``, then any further ones)."""
    further = tuple(range(2, len(factors)))
    point = layer_statistics(moments.factor_sums(0), moments.factor_sums(1), threshold,
                             tuple(moments.factor_sums(f) for f in further))
    c = point.channels
    dims = {key: int(point.dims[i]) for i, key in enumerate(factors)} | {"residual": int(point.dims[-1])}
    counts = point.class_counts()
    ci95: dict[str, list[float] | None] = {key: None for key in factors}
    units_ci95: dict[str, list[float] | None] = {k: None for k in CLASSES}
    bias_ci = None
    if moments.bootstrap:
        boot = layer_statistics(moments.replicate_sums(0), moments.replicate_sums(1), threshold,
                                tuple(moments.replicate_sums(f) for f in further))
        valid = boot.valid
        for i, key in enumerate(factors):
            ci95[key] = _dims_interval(boot.dims[valid, i], c)
        boot_counts = boot.class_counts()[valid]
        for i, key in enumerate(CLASSES):
            units_ci95[key] = _count_interval(boot_counts[:, i])
        bias_ci = _interval(boot.bias[valid])
    return LayerResult(
        layer=name,
        channels=c,
        score={key: float(point.scores[i]) for i, key in enumerate(factors)},
        dims=dims,
        percent={k: percent(v, c) for k, v in dims.items()},
        ci95=ci95,
        units={k: int(counts[i]) for i, k in enumerate(CLASSES)},
        units_ci95=units_ci95,
        bias=float(point.bias),
        bias_ci95=bias_ci,
        r_dynamic=point.r_dynamic,
        r_static=point.r_static,
        classes=[CLASSES[code] for code in point.classes],
        r_further={factors[f]: point.ratios[f] for f in further},
    )


def flatten_layer(layer: LayerResult) -> dict[str, Any]:
    """One layers.csv row: result.json fields flattened with underscores."""
    row: dict[str, Any] = {"layer": layer.layer, "channels": layer.channels}
    for group in ("score", "dims", "percent", "units"):
        for key, value in getattr(layer, group).items():
            row[f"{group}_{key}"] = value
    for key in layer.ci95:
        interval = layer.ci95.get(key) or [None, None]
        row[f"ci95_{key}_low"], row[f"ci95_{key}_high"] = interval
    row["bias"] = layer.bias
    interval = layer.bias_ci95 or [None, None]
    row["bias_ci95_low"], row["bias_ci95_high"] = interval
    return row


def unit_columns(layers: list[LayerResult]) -> list[str]:
    """units.csv's header: ``UNIT_COLUMNS``, then ``r_<factor>`` for each further factor."""
    further = layers[0].r_further if layers else {}
    return UNIT_COLUMNS + [f"r_{name}" for name in further]


def unit_rows(layers: list[LayerResult]):
    for layer in layers:
        for c in range(layer.channels):
            yield (layer.layer, c, float(layer.r_dynamic[c]), float(layer.r_static[c]), layer.classes[c],
                   *(float(r[c]) for r in layer.r_further.values()))
