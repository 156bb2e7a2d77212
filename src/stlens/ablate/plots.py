"""The figure of an ablation: a metric against K, one panel per (mode, layer); ranked selections as lines, random
selections as the mean over draws with a ± sd band, the unmasked baseline as a dashed line."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from stlens.ablate.selection import RANDOM

COLOURS = {"dynamic": "#d62728", "static": "#1f77b4", "joint": "#9467bd", "random": "#7f7f7f",
           "random-least-dynamic": "#ff9896", "random-least-static": "#aec7e8"}


class RowsResult(Protocol):
    rows: list[dict]
    settings: dict


def plain(text: str) -> str:
    """Text drawn as it is: a ``$`` from a layer or data name does not start matplotlib's maths mode."""
    return text.replace("$", r"\$")


def metric_vs_k(result: RowsResult, metric: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes = list(dict.fromkeys(r["mode"] for r in result.rows))
    layers = list(dict.fromkeys(r["layer"] for r in result.rows))
    panels = [(mode, layer) for mode in modes for layer in layers]  # a row per mode, a column per layer
    cols = len(layers)
    figure = Figure(figsize=(4.6 * cols, 3.4 * len(modes)))  # not pyplot: the caller's backend is left alone
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(modes), cols, squeeze=False)
    for ax, (mode, layer) in zip(axes.flat, panels, strict=True):
        here = [r for r in result.rows if r["mode"] == mode and r["layer"] == layer]
        base = [r[metric] for r in here if r["select"] == "none"]
        if base:
            ax.axhline(base[0], color="black", linestyle="--", linewidth=1, label="unmasked")
        for select in dict.fromkeys(r["select"] for r in here if r["select"] != "none"):
            ks = sorted({r["k"] for r in here if r["select"] == select})
            values = [[r[metric] for r in here if r["select"] == select and r["k"] == k] for k in ks]
            mean = np.array([np.mean(v) for v in values])
            colour = COLOURS.get(select)
            if select in RANDOM:
                sd = np.array([np.std(v) for v in values])
                ax.plot(ks, mean, color=colour, linestyle=":", marker=".", label=plain(f"{select} (mean ± sd)"))
                ax.fill_between(ks, mean - sd, mean + sd, color=colour, alpha=0.25, linewidth=0)
            else:
                ax.plot(ks, mean, color=colour, marker="o", label=plain(select))
        ax.set_title(plain(f"{layer} · {mode}"), fontsize=10)
        ax.set_xlabel("channels masked, K %")
        ax.set_ylabel(metric)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    model = result.settings.get("model", "")
    figure.suptitle(plain(f"{model} on {result.settings.get('data', '')}: {metric} after masking"), fontsize=11)
    figure.tight_layout(rect=(0, 0.08 + 0.02 * (len(labels) > 4), 1, 0.95))
    return figure
