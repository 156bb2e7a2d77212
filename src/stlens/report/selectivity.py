"""The selectivity section of ``stlens report``: an ``stlens selectivity`` run folder read back from its
selectivity.json and selectivity.csv (plain files; ``stlens.report`` and ``stlens.selectivity`` are siblings and do
not import each other) after its marker's checksums are checked, and turned into a per-layer table over depth, the
run's own selectivity.png, the most selective units (ranked by the lower bound of their index's interval) and the
run's gallery of units (gallery/unit<k>.gif: top clips | activation-maximization video, as data URIs)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from stlens.errors import StlensError
from stlens.report.runview import RunView, interval_text, is_number, number_text
from stlens.runs import read_run_document

__all__ = ["DOCUMENT", "TABLE", "Selectivity", "load_selectivity_run", "selectivity_view"]

DOCUMENT = "selectivity.json"
TABLE = "selectivity.csv"
FIGURE = "selectivity.png"
FIGURE_DPI = 110  # the dpi stlens selectivity saves selectivity.png at
KINDS = ("class-specific", "generic", "weak")
UNIT_CLASSES = ("dynamic", "static", "joint")  # shown first, in this order; other unit classes follow
TOP_UNITS = 10
_COLUMNS = ("layer", "channel", "selectivity", "selectivity_lo", "selectivity_hi", "top_class", "classes_served",
            "selectivity_kind")
RERUN = "rerun stlens selectivity to write it again"


class Selectivity(RunView):
    """A selectivity run folder as the report reads it: ``doc`` (selectivity.json), ``rows`` (selectivity.csv), its
    ``marker`` and a label."""

    @property
    def joined(self) -> bool:
        """Whether a measure run was joined (``--from``): the rows carry ``unit_class``."""
        return bool(self.rows) and "unit_class" in self.rows[0]


def load_selectivity_run(folder: str | Path) -> Selectivity:
    """Read a selectivity run folder: the marker must name a complete selectivity run, selectivity.json and
    selectivity.csv must be the files the run wrote (size and sha256), the json of a format this stlens reads and of
    the same run id, and both must have the fields the report shows. Anything else raises a ``StlensError`` naming
    the file (the report lists the folder as skipped with it)."""
    folder = Path(folder)
    marker, doc = read_run_document(folder, "selectivity", DOCUMENT, TABLE, RERUN)
    _check_document(folder / DOCUMENT, doc)
    rows = _read_rows(folder / TABLE)
    return Selectivity(folder, doc, marker, rows=rows)


def _check_document(path: Path, doc: dict[str, Any]) -> None:
    if not isinstance(doc.get("classes"), list):
        raise StlensError(f"{path}: no 'classes' list; {RERUN}")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise StlensError(f"{path}: no 'layers'; {RERUN}")
    for number, entry in enumerate(layers):
        if not isinstance(entry, dict) or not isinstance(entry.get("layer"), str):
            raise StlensError(f"{path}: layers[{number}] is not an object with a 'layer' name")
        if not is_number(entry.get("channels")) or not isinstance(entry.get("shares"), dict):
            raise StlensError(f"{path}: layers[{number}] has no 'channels' count or 'shares'")
        if not isinstance(entry.get("top_clips", []), list):
            raise StlensError(f"{path}: layers[{number}].top_clips is not a list")
    if not isinstance(doc.get("gallery", []), list):
        raise StlensError(f"{path}: 'gallery' is not a list; {RERUN}")


def _read_rows(path: Path) -> list[dict[str, str]]:
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StlensError(f"{path}: unreadable ({exc}); {RERUN}") from None
    if not rows:
        raise StlensError(f"{path}: no rows; {RERUN}")
    missing = [c for c in _COLUMNS if c not in rows[0]]
    if missing:
        raise StlensError(f"{path}: no column {', '.join(missing)}; {RERUN}")
    for number, row in enumerate(rows, start=2):
        try:
            int(row["channel"]), int(row["top_class"]), int(row["classes_served"])
            float(row["selectivity"]), float(row["selectivity_lo"]), float(row["selectivity_hi"])
        except (TypeError, ValueError):
            raise StlensError(f"{path}: line {number} is not a row of numbers where numbers belong; {RERUN}") from None
    return rows


def _percent(v: Any) -> str:
    return "–" if not is_number(v) else f"{100 * float(v):.1f}"


def _interval(pair: Any) -> str:
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return "–"  # --bootstrap 0: no interval
    return interval_text(*pair)


def _class_name(classes: list[Any], index: int) -> str:
    return str(classes[index]) if 0 <= index < len(classes) else str(index)


def _unit_classes(layers: list[dict[str, Any]]) -> list[str]:
    present = {key for entry in layers for key in (entry.get("by_unit_class") or {})}
    return [c for c in UNIT_CLASSES if c in present] + sorted(present - set(UNIT_CLASSES))


def _layer_rows(run: Selectivity, unit_classes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for entry in run.doc["layers"]:
        shares, by = entry["shares"], entry.get("by_unit_class") or {}
        rows.append({"layer": entry["layer"], "units": int(entry["channels"]),
                     "shares": [_percent(shares.get(kind)) for kind in KINDS],
                     "mean": number_text(entry.get("mean_selectivity")),
                     "ci": _interval(entry.get("mean_selectivity_ci95")),
                     "by_class": [_by_class(by.get(c)) for c in unit_classes]})
    return rows


def _by_class(entry: Any) -> str:
    """``mean SI (units)`` of one unit class in a layer, "–" when the layer has none of it."""
    if not isinstance(entry, dict):
        return "–"
    return f"{number_text(entry.get('mean_selectivity'))} ({entry.get('units', 0)})"


def _top_units(run: Selectivity, count: int = TOP_UNITS) -> list[dict[str, Any]]:
    """The ``count`` units with the largest lower bound of their index's interval (ties: the larger index)."""
    classes = run.doc["classes"]
    clips = {entry["layer"]: entry.get("top_clips") or [] for entry in run.doc["layers"]}
    live = [r for r in run.rows if not math.isnan(float(r["selectivity_lo"]))]
    ranked = sorted(live, key=lambda r: (-float(r["selectivity_lo"]), -float(r["selectivity"])))[:count]
    units = []
    for row in ranked:
        channel = int(row["channel"])
        listed = clips.get(row["layer"], [])
        top = listed[channel] if channel < len(listed) and isinstance(listed[channel], list) else []
        units.append({
            "layer": row["layer"], "channel": channel, "si": number_text(float(row["selectivity"])),
            "ci": f"[{number_text(float(row['selectivity_lo']))}, {number_text(float(row['selectivity_hi']))}]",
            "top_class": _class_name(classes, int(row["top_class"])), "served": int(row["classes_served"]),
            "kind": row["selectivity_kind"], "unit_class": row.get("unit_class", ""),
            "clips": [_clip_text(clip, classes) for clip in top if isinstance(clip, dict)],
        })
    return units


def _clip_text(clip: Any, classes: list[Any]) -> str:
    """``id (class name)`` of a top clip entry of the files."""
    if not isinstance(clip, dict):
        return str(clip)
    return (f"{clip.get('id')} ({_class_name(classes, int(clip['class']))})" if is_number(clip.get("class"))
            else str(clip.get("id")))


def _gallery(run: Selectivity) -> list[dict[str, Any]]:
    """The run's gallery (selectivity.json ``gallery``): per unit its GIF as a data URI (or a note why not) and the
    caption's values from selectivity.csv; absent in runs written before the gallery."""
    from stlens.report.plots import run_gif

    classes = run.doc["classes"]
    rows = {(r["layer"], r["channel"]): r for r in run.rows}
    shown = []
    for entry in run.doc.get("gallery") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("gif"), str):
            continue
        uri, note = run_gif(run.path, run.marker, entry["gif"])
        row = rows.get((str(entry.get("layer")), str(entry.get("channel"))))
        clips = entry.get("clips") if isinstance(entry.get("clips"), list) else []
        shown.append({
            "name": entry["gif"], "layer": str(entry.get("layer")), "channel": str(entry.get("channel")),
            "uri": uri, "note": note, "clips": [_clip_text(c, classes) for c in clips],
            "si": number_text(float(row["selectivity"])) if row else "–",
            "ci": f"[{number_text(float(row['selectivity_lo']))}, {number_text(float(row['selectivity_hi']))}]"
            if row else "–",
            "top_class": _class_name(classes, int(row["top_class"])) if row else "–",
            "kind": row["selectivity_kind"] if row else "–"})
    return shown


def selectivity_view(run: Selectivity) -> dict[str, Any]:
    """What the template shows of one selectivity run (plain values; the template escapes them)."""
    from stlens.report.plots import run_png

    doc, settings = run.doc, run.settings
    unit_classes = _unit_classes(doc["layers"]) if run.joined else []
    figure, note = run_png(run.path, run.marker, FIGURE, FIGURE_DPI)
    timing = doc.get("timing") if isinstance(doc.get("timing"), dict) else {}
    versions = settings.get("versions") if isinstance(settings.get("versions"), dict) else {}
    return {
        "label": run.label, "path": str(run.path), "model": str(doc.get("model")), "data": str(doc.get("data")),
        "weights": settings.get("weights"), "clips": doc.get("clips"), "classes": [str(c) for c in doc["classes"]],
        "bootstrap": settings.get("bootstrap"), "from_run": settings.get("from_run"), "joined": run.joined,
        "kinds": list(KINDS), "unit_classes": unit_classes, "layers": _layer_rows(run, unit_classes),
        "top": _top_units(run), "top_count": TOP_UNITS, "figure": figure, "figure_note": note,
        "gallery": _gallery(run), "gallery_steps": settings.get("gallery_steps"),
        "run_id": doc.get("run_id"), "seed": settings.get("seed"), "version": versions.get("stlens"),
        "seconds": timing.get("seconds") if is_number(timing.get("seconds")) else None,
    }
