"""The explain section of ``stlens report``: an ``stlens explain`` run folder read back from its explain.json
(plain files; ``stlens.report`` and ``stlens.explain`` are siblings and do not import each other) after its marker's
checksums are checked, and turned into a header, the summary, the mean temporal curve, the per-clip table of
explain.csv (classes by the data's names where explain.json has them), the overlay GIFs of the first clips and the
gallery of misclassified clips (errors/error<k>.gif)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from stlens.errors import StlensError
from stlens.report.runview import RunView, is_number, number_text
from stlens.runs import read_run_document

__all__ = ["DOCUMENT", "Explain", "class_text", "explain_view", "load_explain_run"]

DOCUMENT = "explain.json"
TABLE = "explain.csv"
RERUN = "rerun stlens explain to write it again"
_CLIP_GIF = re.compile(r"explain_clip(\d+)\.gif")
ROWS = 64  # per-clip rows shown


class Explain(RunView):
    """An explain run folder as the report reads it: ``doc`` (explain.json), its ``marker``, a label and the rows of
    explain.csv."""


def load_explain_run(folder: str | Path) -> Explain:
    """Read an explain run folder: the marker must name a complete explain run, explain.json and explain.csv must be
    the files the run wrote (size and sha256), the json of a format this stlens reads, of the same run id and with a
    ``summary``. Anything else raises a ``StlensError`` naming the file (the report lists the folder as skipped)."""
    folder = Path(folder)
    marker, doc = read_run_document(folder, "explain", DOCUMENT, TABLE, RERUN)
    if not isinstance(doc.get("summary"), dict):
        raise StlensError(f"{folder / DOCUMENT}: no 'summary'; {RERUN}")
    if not isinstance(doc.get("errors", []), list):
        raise StlensError(f"{folder / DOCUMENT}: 'errors' is not a list; {RERUN}")
    if doc.get("classes") is not None and not isinstance(doc.get("classes"), list):
        raise StlensError(f"{folder / DOCUMENT}: 'classes' is not a list; {RERUN}")
    try:
        rows = list(csv.DictReader(io.StringIO((folder / TABLE).read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StlensError(f"{folder / TABLE}: cannot be read ({exc}); {RERUN}") from None
    return Explain(folder, doc, marker, rows=rows)


def _gif(run: Explain, name: str) -> tuple[str | None, str]:
    """A GIF of the run (its marker's checksum checked) as a data URI, or None and why not."""
    from stlens.report.plots import run_gif

    return run_gif(run.path, run.marker, name)


def class_text(run: Explain, value: Any) -> str:
    """A class as the report shows it: ``name (k)`` where explain.json's ``classes`` names class k, else ``k``."""
    names = run.doc.get("classes") if isinstance(run.doc.get("classes"), list) else []
    try:
        k = int(value)
    except (TypeError, ValueError):
        return "–" if value in (None, "") else str(value)
    return f"{names[k]} ({k})" if 0 <= k < len(names) else str(k)


def _float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _rows(run: Explain) -> list[dict[str, str]]:
    """The first ``ROWS`` rows of explain.csv: clip, classes by name, probability and the per-clip numbers."""
    shown = []
    for row in (run.rows or [])[:ROWS]:
        shown.append({"clip": str(row.get("clip", "")),
                      **{key: class_text(run, row.get(key)) for key in ("label", "predicted", "target")},
                      **{key: number_text(_float(row.get(key))) for key in ("probability", "mask_share",
                                                                         "spearman_shuffled", "spearman_restyled")}})
    return shown


def _clips(run: Explain) -> list[dict[str, Any]]:
    names = sorted((n for n in run.marker.get("files", {}) if _CLIP_GIF.fullmatch(n)),
                   key=lambda n: int(_CLIP_GIF.fullmatch(n).group(1)))
    ids = run.doc.get("clip_ids") if isinstance(run.doc.get("clip_ids"), list) else []
    shown = []
    for name in names:
        i = int(_CLIP_GIF.fullmatch(name).group(1))
        uri, note = _gif(run, name)
        shown.append({"name": name, "clip": str(ids[i]) if i < len(ids) else str(i), "uri": uri, "note": note})
    return shown


def _errors(run: Explain) -> list[dict[str, Any]]:
    shown = []
    for entry in run.doc.get("errors") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("gif"), str):
            continue
        uri, note = _gif(run, entry["gif"])
        shown.append({"name": entry["gif"], "clip": str(entry.get("clip")),
                      "predicted": class_text(run, entry.get("predicted")),
                      "label": class_text(run, entry.get("label")), "uri": uri, "note": note})
    return shown


def explain_view(run: Explain) -> dict[str, Any]:
    """What the template shows of one explain run (plain values; the template escapes them)."""
    doc, settings, summary = run.doc, run.settings, run.doc["summary"]
    curve = summary.get("mean_mass_per_frame") if isinstance(summary.get("mean_mass_per_frame"), list) else []
    rows = [("mask share", summary.get("mask_share"))]
    if "cue_share" in summary:
        rows.append(("cue share", summary.get("cue_share")))
    rows += [("Spearman ρ, shuffled", summary.get("spearman_shuffled")),
             ("Spearman ρ, restyled", summary.get("spearman_restyled"))]
    timing = doc.get("timing") if isinstance(doc.get("timing"), dict) else {}
    versions = settings.get("versions") if isinstance(settings.get("versions"), dict) else {}
    return {
        "label": run.label, "path": str(run.path), "model": str(doc.get("model")), "data": str(doc.get("data")),
        "weights": settings.get("weights"), "method": str(doc.get("method") or settings.get("method")),
        "layer": settings.get("layer"), "clips": summary.get("clips"), "accuracy": number_text(summary.get("accuracy")),
        "summary": [{"name": name, "value": number_text(v)} for name, v in rows],
        "curve": [number_text(v) for v in curve], "peak": summary.get("peak_frame"),
        "rows": _rows(run), "total_rows": len(run.rows or []),
        "gifs": _clips(run), "errors": _errors(run), "asked_errors": settings.get("errors"),
        "run_id": doc.get("run_id"), "seed": settings.get("seed"), "version": versions.get("stlens"),
        "seconds": timing.get("seconds") if is_number(timing.get("seconds")) else None,
    }
