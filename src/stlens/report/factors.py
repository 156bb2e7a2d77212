"""Further factors in a report (docs/factors.md): the per-layer dims % of every factor of a run measured with
``--factors``, as a table and as curves against depth."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from stlens.measure.plots import COLORS, MARKERS, SERIES, figure, short_label

BASE = ("dynamic", "static", "residual")


def factor_names(result: Any) -> list[str]:
    """The factors of ``result`` in order (``dynamic``, ``static``, the further ones), or [] when it has no further
    factor (a default run: nothing to add to its report)."""
    if not result.layers:
        return []
    names = [k for k in result.layers[0].percent if k != "residual"]
    return names if len(names) > 2 else []


def factor_rows(result: Any) -> list[dict[str, Any]]:
    """One row per layer: name, channels, and per factor (residual last) its percent and 95% CI as text."""
    names = factor_names(result)
    rows = []
    for layer in result.layers:
        cells = []
        for name in [*names, "residual"]:
            ci = layer.ci95.get(name)
            cells.append({"percent": f"{layer.percent[name]:.1f}",
                          "ci": f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""})
        rows.append({"layer": layer.layer, "channels": layer.channels, "cells": cells})
    return rows


def factor_curves(result: Any) -> Figure | None:
    """Each factor's dims % (with its 95% CI as a band) against the layers in order; None without further
    factors."""
    names = factor_names(result)
    if not names:
        return None
    layers = result.layers
    fig = figure(max(5.4, 0.45 * len(layers) + 2.5), 3.2)
    ax = fig.subplots()
    x = np.arange(len(layers))
    further = 0
    for name in [*names, "residual"]:
        if name in COLORS:
            color, marker = COLORS[name], MARKERS[BASE.index(name)]
        else:
            color, marker = SERIES[further % len(SERIES)], MARKERS[(3 + further) % len(MARKERS)]
            further += 1
        ax.plot(x, [r.percent[name] for r in layers], color=color, marker=marker, markersize=4, linewidth=1.4,
                label=name, linestyle="--" if name == "residual" else "-")
        cis = [r.ci95.get(name) for r in layers]
        if name != "residual" and all(cis):
            ax.fill_between(x, [c[0] for c in cis], [c[1] for c in cis], color=color, alpha=0.15, linewidth=0)
    ax.set_xticks(x, [short_label(r.layer) for r in layers], rotation=30 if len(layers) > 6 else 0, ha="right"
                  if len(layers) > 6 else "center")
    ax.set_ylabel("dims (% of channels)")
    ax.set_xlabel("layer")
    ax.legend(loc="best", frameon=False, ncols=2)
    return fig
