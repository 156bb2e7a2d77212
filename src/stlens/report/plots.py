"""Figures for reports and papers: matplotlib on an explicit Agg canvas (no pyplot, the caller's backend is left
alone), one colour-blind-safe palette (Okabe & Ito).

Every function returns a ``matplotlib.figure.Figure``; ``save_figure`` writes it as PNG and SVG, ``data_uri`` turns it
into a base64 ``data:`` URI for a self-contained HTML page. Names are drawn as plain text (mathtext is off), so a
layer called ``$x$`` or ``<script>`` is shown as written.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.lines
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stlens.measure.estimate import CLASSES
from stlens.measure.result import LayerResult, MeasureResult

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


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _whisker(value: float, ci: Sequence[float] | None) -> tuple[float, float]:
    if not ci:
        return 0.0, 0.0
    return max(value - ci[0], 0.0), max(ci[1] - value, 0.0)


def _short(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def layer_bars(result: MeasureResult, title: str | None = None) -> Figure:
    """Per-layer stacked bars of dynamic / static / residual % of dimensions; whiskers: the 95% bootstrap CI of the
    dynamic share (at its top) and of the static share (at the top of its segment)."""
    with matplotlib.rc_context(STYLE):
        layers = result.layers
        fig = _figure(max(3.5, 0.55 * len(layers) + 1.8), 3.2)
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
            err = np.array([_whisker(v, r.ci95.get(key)) for v, r in zip(values, layers, strict=True)]).T
            if err.size and err.any():
                ax.errorbar(x, base + values, yerr=err, fmt="none", ecolor="#333333", elinewidth=1, capsize=3)
        ax.set_xticks(x, [_short(r.layer) for r in layers], rotation=30 if len(layers) > 4 else 0, ha="right"
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
        fig = _figure(max(3.5, 0.55 * len(layers) + 1.8), 3.2)
        ax = fig.add_subplot()
        x = np.arange(len(layers))
        bottom = np.zeros(len(layers))
        for key in CLASSES:
            share = np.array([100.0 * r.units.get(key, 0) / max(r.channels, 1) for r in layers])
            ax.bar(x, share, bottom=bottom, color=COLORS[key], label=key, width=0.7,
                   edgecolor="#666666" if key == "none" else None, linewidth=0.4)
            bottom += share
        ax.set_xticks(x, [_short(r.layer) for r in layers], rotation=30 if len(layers) > 4 else 0, ha="right"
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
        fig = _figure(2.3 * cols + 1.2, 2.3 * rows + 0.3)
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
            ax.set_title(f"{_short(layer.layer)} (C={layer.channels})")
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


def model_comparison(points: Sequence[tuple[str, LayerResult]], title: str | None = None,
                     groups: Sequence[tuple[str, str]] | None = None) -> Figure:
    """One point per model at a chosen layer: static % (x) vs dynamic % (y) with their 95% CIs and the diagonal.
    ``groups`` (one ``(colour key, marker key)`` per point, e.g. model and data) share colours and markers."""
    keys = list(groups) if groups else [(label, "") for label, _ in points]
    colours = list(dict.fromkeys(k[0] for k in keys))
    markers = list(dict.fromkeys(k[1] for k in keys))
    with matplotlib.rc_context(STYLE):
        columns = 1 if len(points) < 6 else 2
        fig = _figure(6.4 if columns == 1 else 9.0, 4.2 + 0.17 * np.ceil((len(points) + 1) / columns))
        ax = fig.add_subplot()
        top = max([5.0] + [max(r.percent["static"], r.percent["dynamic"],
                                (r.ci95.get("static") or [0, 0])[1], (r.ci95.get("dynamic") or [0, 0])[1])
                           for _, r in points])
        limit = min(100.0, np.ceil(top / 10.0) * 10.0 + 5.0)
        ax.plot([0, limit], [0, limit], color="#777777", linestyle=":", linewidth=1, label="static = dynamic")
        for (label, r), (colour, marker) in zip(points, keys, strict=True):
            xs, ys = r.percent["static"], r.percent["dynamic"]
            ax.errorbar(xs, ys, xerr=np.array(_whisker(xs, r.ci95.get("static"))).reshape(2, 1),
                        yerr=np.array(_whisker(ys, r.ci95.get("dynamic"))).reshape(2, 1),
                        fmt=MARKERS[markers.index(marker) % len(MARKERS)],
                        color=SERIES[colours.index(colour) % len(SERIES)], markersize=7, capsize=2, elinewidth=0.9,
                        markeredgecolor="white", markeredgewidth=0.5,
                        label=_short(f"{label} · {r.layer}", 80 if columns == 1 else 56))
        ax.set_xlim(0, limit)
        ax.set_ylim(0, limit)
        ax.set_aspect("equal")
        ax.set_xlabel("static % of dimensions")
        ax.set_ylabel("dynamic % of dimensions")
        ax.set_title(title or "static vs. dynamic across models")
        fig.legend(loc="outside lower center", ncols=columns, frameon=False)
        return fig


def track_curves(table, title: str | None = None) -> Figure:
    """Training track: dynamic % and static % vs step, one panel per layer (``table``: a DataFrame with columns
    step, layer, dynamic, static and optionally dynamic_low/high, static_low/high)."""
    names = list(dict.fromkeys(table["layer"]))
    if len(names) > MAX_PANELS:
        names = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, MAX_PANELS).round().astype(int))]
    with matplotlib.rc_context(STYLE):
        cols = min(len(names), 4) or 1
        rows = int(np.ceil(len(names) / cols)) or 1
        fig = _figure(2.6 * cols + 1.2, 2.2 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax, name in zip(axes.flat, names, strict=False):
            part = table[table["layer"] == name].sort_values("step")
            for key in ("dynamic", "static"):
                ax.plot(part["step"], part[key], color=COLORS[key], marker="o", markersize=3, linewidth=1.4,
                        label=key)
                if f"{key}_low" in part and part[f"{key}_low"].notna().any():
                    ax.fill_between(part["step"], part[f"{key}_low"], part[f"{key}_high"], color=COLORS[key],
                                    alpha=0.2, linewidth=0)
            ax.set_title(_short(str(name)))
        for ax in axes.flat[len(names):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("training step")
        for ax in axes[:, 0]:
            ax.set_ylabel("% of dimensions")
        handles = [matplotlib.lines.Line2D([], [], color=COLORS[k], marker="o", label=k) for k in ("dynamic", "static")]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        if title:
            fig.suptitle(title)
        return fig


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """The figure encoded as PNG or SVG."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format=fmt, metadata={"Software": None} if fmt == "png" else {"Date": None})
    return buffer.getvalue()


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode("ascii")


def figure_uri(fig: Figure) -> str:
    """A PNG ``data:`` URI of the figure, for a self-contained HTML page."""
    return data_uri(figure_bytes(fig, "png"), "image/png")


def figure_image(fig: Figure, dpi: int = 160) -> dict[str, str | int]:
    """``{"uri", "width"}`` for an ``<img>``: a PNG at ``dpi`` shown at 100 px per inch (sharp on HiDPI screens)."""
    from PIL import Image

    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    payload = buffer.getvalue()
    width = Image.open(io.BytesIO(payload)).size[0]
    return {"uri": data_uri(payload, "image/png"), "width": round(width * 100 / dpi)}


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``; return both paths."""
    from stlens.files import atomic_write

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "svg"):
        path = stem.with_name(stem.name + f".{fmt}")
        payload = figure_bytes(fig, fmt)
        atomic_write(path, lambda f, payload=payload: f.write(payload))
        paths.append(path)
    return paths
