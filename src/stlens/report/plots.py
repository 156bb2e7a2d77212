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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.lines
import numpy as np
from matplotlib.figure import Figure

from stlens.measure.layer import LayerResult
from stlens.measure.plots import (
    COLORS,
    MARKERS,
    MAX_PANELS,
    SERIES,
    STYLE,
    channel_scatter,
    figure,
    layer_bars,
    pick_layers,
    short_label,
    unit_classes,
    whisker,
)
from stlens.report.streams import group_items

__all__ = ["COLORS", "MARKERS", "MAX_PANELS", "SERIES", "STYLE", "channel_scatter", "data_uri", "figure",
           "figure_bytes", "figure_image", "grouped", "grouped_channel_scatter", "grouped_layer_bars",
           "grouped_unit_classes", "layer_bars", "metric_curves", "model_comparison", "pick_layers", "save_figure",
           "short_label", "track_curves", "unit_classes", "whisker"]


@dataclass
class Ordered:
    """A result's layers in the report's (stream-grouped) order, for the figures of ``stlens.measure.plots``."""

    meta: dict[str, Any]
    layers: list[LayerResult]
    groups: list[tuple[str, int]] = field(default_factory=list)  # (label, layers in it) when grouped

    def __getitem__(self, name: str) -> LayerResult:
        return next(r for r in self.layers if r.layer == name)


def grouped(result: Any) -> Ordered:
    """``result`` with its layers grouped by stream (appearance, motion, fusion, other); unchanged, with no
    ``groups``, when none of its layers has a stream prefix."""
    groups = group_items(result.layers, lambda r: r.layer)
    layers = [r for g in groups for r in g.items]
    return Ordered(result.meta, layers, [(g.label, len(g.items)) for g in groups if g.label])


def _label_groups(fig: Figure, groups: Sequence[tuple[str, int]]) -> Figure:
    """Stream labels above the bars of each group and a line between groups (bars at x = 0, 1, ...)."""
    if not groups:
        return fig
    ax = fig.axes[0]
    with matplotlib.rc_context(STYLE):
        starts = np.cumsum([0] + [n for _, n in groups])
        for edge in starts[1:-1]:
            ax.axvline(edge - 0.5, color="#333333", linewidth=0.9, linestyle="-")
        top = ax.secondary_xaxis("top")
        top.set_xticks([(a + b - 1) / 2 for a, b in zip(starts[:-1], starts[1:], strict=True)],
                       [label for label, _ in groups])
        top.tick_params(length=0, labelsize=9)
        for spine in top.spines.values():
            spine.set_visible(False)
    return fig


def grouped_layer_bars(result: Any, title: str | None = None) -> Figure:
    """``layer_bars`` with the layers grouped by stream and each group labelled (as ``layer_bars`` otherwise)."""
    ordered = grouped(result)
    return _label_groups(layer_bars(ordered, title), ordered.groups)


def grouped_unit_classes(result: Any, title: str | None = None) -> Figure:
    """``unit_classes`` with the layers grouped by stream and each group labelled (as ``unit_classes`` otherwise)."""
    ordered = grouped(result)
    return _label_groups(unit_classes(ordered, title), ordered.groups)


def grouped_channel_scatter(result: Any) -> Figure:
    """``channel_scatter`` of the layers in the stream-grouped order (the panel titles name the layers)."""
    return channel_scatter(grouped(result))


def model_comparison(points: Sequence[tuple[str, LayerResult]], title: str | None = None,
                     groups: Sequence[tuple[str, str]] | None = None) -> Figure:
    """One point per model at a chosen layer: static % (x) vs dynamic % (y) with their 95% CIs and the diagonal.
    ``groups`` (one ``(colour key, marker key)`` per point, e.g. model and data) share colours and markers."""
    keys = list(groups) if groups else [(label, "") for label, _ in points]
    colours = list(dict.fromkeys(k[0] for k in keys))
    markers = list(dict.fromkeys(k[1] for k in keys))
    with matplotlib.rc_context(STYLE):
        columns = 1 if len(points) < 6 else 2
        fig = figure(6.4 if columns == 1 else 9.0, 4.2 + 0.17 * np.ceil((len(points) + 1) / columns))
        ax = fig.add_subplot()
        top = max([5.0] + [max(r.percent["static"], r.percent["dynamic"],
                                (r.ci95.get("static") or [0, 0])[1], (r.ci95.get("dynamic") or [0, 0])[1])
                           for _, r in points])
        limit = min(100.0, np.ceil(top / 10.0) * 10.0 + 5.0)
        ax.plot([0, limit], [0, limit], color="#777777", linestyle=":", linewidth=1, label="static = dynamic")
        for (label, r), (colour, marker) in zip(points, keys, strict=True):
            xs, ys = r.percent["static"], r.percent["dynamic"]
            ax.errorbar(xs, ys, xerr=np.array(whisker(xs, r.ci95.get("static"))).reshape(2, 1),
                        yerr=np.array(whisker(ys, r.ci95.get("dynamic"))).reshape(2, 1),
                        fmt=MARKERS[markers.index(marker) % len(MARKERS)],
                        color=SERIES[colours.index(colour) % len(SERIES)], markersize=7, capsize=2, elinewidth=0.9,
                        markeredgecolor="white", markeredgewidth=0.5,
                        label=short_label(f"{label} · {r.layer}", 80 if columns == 1 else 56))
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
        fig = figure(2.6 * cols + 1.2, 2.2 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax, name in zip(axes.flat, names, strict=False):
            part = table[table["layer"] == name].sort_values("step")
            for key in ("dynamic", "static"):
                ax.plot(part["step"], part[key], color=COLORS[key], marker="o", markersize=3, linewidth=1.4,
                        label=key)
                if f"{key}_low" in part and part[f"{key}_low"].notna().any():
                    ax.fill_between(part["step"], part[f"{key}_low"], part[f"{key}_high"], color=COLORS[key],
                                    alpha=0.2, linewidth=0)
            ax.set_title(short_label(str(name)))
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


def metric_curves(series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]],
                  loss: tuple[Sequence[float], Sequence[float | None]] | None = None, ylabel: str = "score",
                  title: str | None = None) -> Figure:
    """Model-quality curves against training step: one line per ``(label, steps, values)`` (None: not evaluated
    there), and the training loss in a second panel when ``loss`` (steps, values) is given."""
    with matplotlib.rc_context(STYLE):
        fig = figure(9.0 if loss else 5.4, 3.0)
        axes = fig.subplots(1, 2 if loss else 1, squeeze=False)[0]
        ax = axes[0]
        for i, (label, steps, values) in enumerate(series):
            pairs = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and np.isfinite(v)]
            if pairs:
                ax.plot(*zip(*pairs, strict=True), color=SERIES[i % len(SERIES)], marker=MARKERS[i % len(MARKERS)],
                        markersize=4, linewidth=1.4, label=label)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.legend(loc="best", frameon=False)
        if loss:
            pairs = [(s, v) for s, v in zip(*loss, strict=True) if v is not None and np.isfinite(v)]
            if pairs:
                axes[1].plot(*zip(*pairs, strict=True), color="#555555", linewidth=1.2, marker="o", markersize=3)
            axes[1].set_xlabel("training step")
            axes[1].set_ylabel("training loss")
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


def run_png(folder: Path, marker: dict[str, Any], name: str, dpi: int) -> tuple[dict[str, Any] | None, str]:
    """A run folder's own PNG ``name`` (saved at ``dpi``; its marker's checksum checked) as ``{"uri", "width"}``
    shown at 100 px per inch, or None and why not."""
    from PIL import Image

    from stlens.errors import StlensError
    from stlens.runs import check_files

    if name not in marker.get("files", {}):
        return None, f"{name} is not part of this run"
    try:
        check_files(folder, marker, [name])
        payload = (folder / name).read_bytes()
        with Image.open(io.BytesIO(payload)) as image:
            if image.format != "PNG":
                raise StlensError(f"{folder / name}: not a PNG")
            width = image.size[0]
    except (StlensError, OSError) as exc:
        return None, f"figure not shown: {exc}"
    return {"uri": data_uri(payload, "image/png"), "width": round(width * 100 / dpi)}, ""


def run_gif(folder: Path, marker: dict[str, Any], name: str) -> tuple[str | None, str]:
    """A run folder's own GIF ``name`` (listed in its marker, checksum checked) as a data URI, or None and why not."""
    from stlens.errors import StlensError
    from stlens.runs import check_files

    if name not in marker.get("files", {}):
        return None, f"{name} is not part of this run"
    try:
        check_files(folder, marker, [name])
        payload = (folder / name).read_bytes()
    except (StlensError, OSError) as exc:
        return None, f"not shown: {exc}"
    if not payload.startswith(b"GIF8"):
        return None, f"not shown: {folder / name} is not a GIF"
    return data_uri(payload, "image/gif"), ""


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
