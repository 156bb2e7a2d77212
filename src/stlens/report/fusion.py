"""Feichtenhofer's claim 1 for a two-stream run: per stage, the appearance-stream, motion-stream and fusion units by
class (static, dynamic, joint: shares of the layer's channels, counted from units.csv's ``class`` column) side by
side, and a one-line verdict comparing the joint share of the deepest fusion layer with that of the deepest stage of
each stream. Shown for runs with at least one appearance and one motion layer (``stlens.report.streams``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stlens.measure.layer import LayerResult
from stlens.measure.result import MeasureResult
from stlens.report.streams import stream_of

__all__ = ["SHOWN", "STREAM_COLUMNS", "Cell", "fusion_table", "shares"]

#: the classes shown, in column order
SHOWN = ("static", "dynamic", "joint")
#: the column groups: (stream key, label)
STREAM_COLUMNS = (("appearance", "appearance (RGB)"), ("motion", "motion (flow)"), ("fusion", "fusion"))


@dataclass(frozen=True)
class Cell:
    """One layer's units by class: its name, channel count and the percent of channels per shown class."""

    layer: str
    channels: int
    percent: dict[str, float]


def shares(layer: LayerResult) -> Cell:
    """The percent of ``layer``'s channels in each shown class, from its per-unit classes (units.csv)."""
    total = max(len(layer.classes), 1)
    return Cell(layer.layer, len(layer.classes),
                {k: 100.0 * sum(c == k for c in layer.classes) / total for k in SHOWN})


def _stage(name: str) -> str:
    """The stage a stream layer belongs to: its name after the stream part (``rgb.stage2`` → stage2); a fusion
    layer is its own row (its full name)."""
    _, _, rest = name.partition(".")
    return name if stream_of(name) == "fusion" or not rest else rest


def _verdict(last: dict[str, Cell]) -> tuple[str, bool | None]:
    """The one-line verdict and whether fusion's joint share exceeds both streams' (None without a fusion layer)."""
    app, mot = last["appearance"], last["motion"]
    streams = f"{app.percent['joint']:.1f}% / {mot.percent['joint']:.1f}% in the streams ({app.layer} / {mot.layer})"
    if "fusion" not in last:
        return f"no fusion layer measured; joint {streams}", None
    fus = last["fusion"]
    holds = fus.percent["joint"] > max(app.percent["joint"], mot.percent["joint"])
    what = "more joint than either stream" if holds else "not more joint than both streams"
    return f"{fus.layer}: joint {fus.percent['joint']:.1f}% vs {streams}: fusion units are {what}", holds


def fusion_table(result: MeasureResult) -> dict[str, Any] | None:
    """The side-by-side table of a two-stream run: ``{"columns", "rows", "verdict", "holds"}``, each row
    ``{"stage", "cells": {stream key: Cell or None}}`` (stream stages in the run's order, then the fusion layers);
    None when the run does not have both an appearance and a motion layer."""
    rows: dict[str, dict[str, Cell | None]] = {}
    last: dict[str, Cell] = {}
    for layer in result.layers:
        key = stream_of(layer.layer)
        if key is None:
            continue
        cell = shares(layer)
        last[key] = cell
        row = rows.setdefault(_stage(layer.layer), {k: None for k, _ in STREAM_COLUMNS})
        row[key] = cell
    if "appearance" not in last or "motion" not in last:
        return None
    fusion_rows = [s for s, r in rows.items() if r["fusion"] is not None]
    order = [s for s in rows if s not in fusion_rows] + fusion_rows
    verdict, holds = _verdict(last)
    return {"columns": list(STREAM_COLUMNS), "classes": list(SHOWN), "verdict": verdict, "holds": holds,
            "rows": [{"stage": s, "cells": rows[s]} for s in order]}
