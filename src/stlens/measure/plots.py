"""Figures of one measurement (``MeasureResult.plot``): dynamic / static / residual dimensions per layer, channel
classes per layer, and per-channel correlations. matplotlib on an explicit Agg canvas (no pyplot, the caller's
backend is left alone), one colour-blind-safe palette (Okabe & Ito); names are drawn as plain text (mathtext is off),
so a layer called ``$x$`` or ``<script>`` is shown as written. ``stlens.report.plots`` builds on these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import matplotlib
import matplotlib.lines
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stlens.measure.estimate import CLASSES
from stlens.measure.layer import LayerResult


class MeasureResult(Protocol):
    """What the figures read of a result (``stlens.measure.result.MeasureResult`` is one; that module imports this
    one for ``.plot()``, so this one depends on the protocol, not on it)."""

    meta: dict[str, Any]
    layers: list[LayerResult]

#: Okabe & Ito (2008) colours, one meaning each throughout stlens
COLORS = {
    "dynamic": "#0072B2",   # blue
    "static": "#E69F00",    # orange
    "residual": "#BBBBBB",  # grey
    "joint": "#009E73",     # bluish green
    "none": "#DDDDDD",      # light grey
    "dead": "#000000",      # black
}
#: colours for different models / runs (Okabe & Ito; the dynamic blue and static orange come last, to keep their
#: meaning; yellow is left out, too pale on white)
SERIES = ["#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#0072B2", "#E69F00"]
MARKERS = ["o", "^", "s", "D", "v", "P", "X", "*"]
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.6, "axes.axisbelow": True, "svg.fonttype": "none",
    "text.parse_math": False, "figure.dpi": 100, "savefig.dpi": 150,
}
MAX_PANELS = 12


def figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def whisker(value: float, ci: Sequence[float] | None) -> tuple[float, float]:
    if not ci:
        return 0.0, 0.0
    return max(value - ci[0], 0.0), max(ci[1] - value, 0.0)


def short_label(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def layer_bars(result: MeasureResult, title: str | None = None) -> Figure:
    """Per-layer stacked bars of dynamic / static / residual % of dimensions; whiskers: the 95% bootstrap CI of the
    dynamic share (at its top) and of the static share (at the top of its segment)."""
    with matplotlib.rc_context(STYLE):
        layers = result.layers
        fig = figure(max(3.5, 0.55 * len(layers) + 1.8), 3.2)
        ax = fig.add_subplot()
        x = np.arange(len(layers))
        dyn = np.array([r.percent["dynamic"] for r in layers])
        sta = np.array([r.percent["static"] for r in layers])
        res = np.array([r.percent["residual"] for r in layers])
        ax.bar(x, dyn, color=COLORS["dynamic"], label="dynamic", width=0.7)
        ax.bar(x, sta, bottom=dyn, color=COLORS["static"], label="static", width=0.7)
        ax.bar(x, res, bottom=dyn + sta, color=COLORS["residual"], label="residual", width=0.7)
        for key, base in (("dynamic", np.zeros_like(dyn)), ("static", dyn)):
            values = dyn if key == "dynamic" else sta
            err = np.array([whisker(v, r.ci95.get(key)) for v, r in zip(values, layers, strict=True)]).T
            if err.size and err.any():
                ax.errorbar(x, base + values, yerr=err, fmt="none", ecolor="#333333", elinewidth=1, capsize=3)
        ax.set_xticks(x, [short_label(r.layer) for r in layers], rotation=30 if len(layers) > 4 else 0, ha="right"
                      if len(layers) > 4 else "center")
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of dimensions")
        ax.set_title(title or "static / dynamic dimensions per layer")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return fig


def unit_classes(result: MeasureResult, title: str | None = None) -> Figure:
    """Per-layer stacked bars: % of channels in each class (dynamic / static / joint / none / dead)."""
    with matplotlib.rc_context(STYLE):
        layers = result.layers
        fig = figure(max(3.5, 0.55 * len(layers) + 1.8), 3.2)
        ax = fig.add_subplot()
        x = np.arange(len(layers))
        bottom = np.zeros(len(layers))
        for key in CLASSES:
            share = np.array([100.0 * r.units.get(key, 0) / max(r.channels, 1) for r in layers])
            ax.bar(x, share, bottom=bottom, color=COLORS[key], label=key, width=0.7,
                   edgecolor="#666666" if key == "none" else None, linewidth=0.4)
            bottom += share
        ax.set_xticks(x, [short_label(r.layer) for r in layers], rotation=30 if len(layers) > 4 else 0, ha="right"
                      if len(layers) > 4 else "center")
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of channels")
        ax.set_title(title or f"channel classes per layer (τ = {result.meta.get('threshold', 0.5)})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return fig


def pick_layers(layers: Sequence[LayerResult], limit: int = MAX_PANELS) -> list[LayerResult]:
    """At most ``limit`` layers, evenly spaced, always keeping the first and the last."""
    if len(layers) <= limit:
        return list(layers)
    idx = np.unique(np.linspace(0, len(layers) - 1, limit).round().astype(int))
    return [layers[i] for i in idx]


def channel_scatter(result: MeasureResult, layers: Sequence[str] | None = None) -> Figure:
    """One panel per layer: r_static (x) vs r_dynamic (y) per channel, coloured by class, with the τ lines."""
    tau = float(result.meta.get("threshold", 0.5))
    chosen = [result[name] for name in layers] if layers else pick_layers(result.layers)
    with matplotlib.rc_context(STYLE):
        cols = min(len(chosen), 4)
        rows = int(np.ceil(len(chosen) / cols)) if chosen else 1
        fig = figure(2.3 * cols + 1.2, 2.3 * rows + 0.3)
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax, layer in zip(axes.flat, chosen, strict=False):
            classes = np.array(layer.classes)
            for key in CLASSES:
                mask = classes == key
                if mask.any():
                    ax.scatter(layer.r_static[mask], layer.r_dynamic[mask], s=9, color=COLORS[key], label=key,
                               edgecolors="#555555" if key == "none" else "none", linewidths=0.3, alpha=0.85)
            ax.axvline(tau, color="#555555", linestyle="--", linewidth=0.8)
            ax.axhline(tau, color="#555555", linestyle="--", linewidth=0.8)
            ax.set_title(f"{short_label(layer.layer)} (C={layer.channels})")
            ax.set_xlim(-1.05, 1.05)
            ax.set_ylim(-1.05, 1.05)
        for ax in axes.flat[len(chosen):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("r_static")
        for ax in axes[:, 0]:
            ax.set_ylabel("r_dynamic")
        handles = [matplotlib.lines.Line2D([], [], marker="o", linestyle="", color=COLORS[k],
                                           markeredgecolor="#555555", markeredgewidth=0.3, label=k) for k in CLASSES]
        handles.append(matplotlib.lines.Line2D([], [], color="#555555", linestyle="--", label=f"τ = {tau}"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        return fig


