"""The ablation section of ``stlens report``: an ``stlens ablate`` run folder read back from its ablation.json (plain
JSON; ``stlens.report`` and ``stlens.ablate`` are siblings and do not import each other) after its marker's checksums
are checked, and turned into per-(mode, layer) tables plus the run's own ablation.png.

The table of a (mode, layer) has one row per (select, K): the run's headline score — the first of ablation.json's
``metrics``, as ``stlens ablate`` plots it: top-1 for classifiers, mIoU for segmenters, track AP for video instance
segmenters — (the mean over draws for random selections, with the sd over draws, as the band of the figure:
``numpy.std``, ddof 0), the drop from the unmasked baseline (with its 95% bootstrap interval — over clips, or for AP
over resamples of the videos — for a selection of one draw) and the channels masked."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np

from stlens.errors import StlensError
from stlens.report.runview import RunView, interval_text, is_number, number_text
from stlens.runs import read_run_document

__all__ = ["FIGURE", "Ablation", "load_ablation", "ablation_view"]

DOCUMENT = "ablation.json"
FIGURE = "ablation.png"
FIGURE_DPI = 110  # the dpi stlens ablate saves ablation.png at; shown at 100 px per inch like the report's figures
BASELINE = "none"
_ROW_KEYS = ("layer", "select", "k", "draw", "mode", "masked")
#: the report's name and definition of the headline scores stlens ablate writes; another one is shown by its key
METRIC_TEXT = {
    "top1": ("top-1", "the share of clips classified correctly"),
    "miou": ("mIoU", "the mean over clips of the intersection over union of the predicted and the true masks, "
                     "averaged over each clip's annotated frames"),
    "ap": ("AP", "YouTube-VIS track AP over the whole set of clips (spatio-temporal mask IoU of whole tracks, "
                 "averaged over IoU thresholds 0.50:0.05:0.95 and the categories)"),
}
#: how the intervals were drawn (ablation.json ``settings.intervals``; older runs: clips)
INTERVALS = {
    "clips": "its 95% bootstrap interval over clips",
    "videos": "its 95% bootstrap interval over videos: AP is recomputed on each resample of the videos for the "
              "baseline and for the masked model, each from its own predictions, and the interval is that of their "
              "difference (the same resampled videos for both; the drop is unpaired, there is no per-clip score)",
}


class Ablation(RunView):
    """An ablate run folder as the report reads it: ``doc`` (ablation.json, checked), its ``marker`` and a label."""

    @property
    def metric(self) -> str:
        """The headline score's key in the rows (``top1``, ``miou``): the first of ablation.json's ``metrics``."""
        return self.doc["metrics"][0]


def load_ablation(folder: str | Path) -> Ablation:
    """Read an ablate run folder: the marker must name a complete ablate run, ablation.json must be the file the run
    wrote (size and sha256), belong to the same run id and have the fields the report shows. Anything else raises a
    ``StlensError`` naming the file (the report lists the folder as skipped with it)."""
    folder = Path(folder)
    marker, doc = read_run_document(folder, "ablate", DOCUMENT, None,
                                    "rerun the ablation (stlens ablate) to write it again")
    _check_document(folder / DOCUMENT, doc)
    return Ablation(folder, doc, marker)


def _check_document(path: Path, doc: dict[str, Any]) -> None:
    if "format_version" not in doc and doc.get("stlens_ablation") != 1:  # format 1 named itself so
        raise StlensError(f"{path}: not a stlens ablation (no format_version, no \"stlens_ablation\": 1)")
    if not isinstance(doc.get("settings"), dict):
        raise StlensError(f"{path}: no 'settings' object")
    metrics = doc.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise StlensError(f"{path}: 'metrics' is not a non-empty list of score names")
    m = metrics[0]
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        raise StlensError(f"{path}: no 'rows'")
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise StlensError(f"{path}: rows[{number}] is not an object")
        missing = [key for key in (*_ROW_KEYS, m, f"drop_{m}") if key not in row]
        if missing:
            raise StlensError(f"{path}: rows[{number}] has no {', '.join(missing)}")
        for key in ("k", "masked", "draw", m, f"drop_{m}"):
            if not is_number(row[key]):
                raise StlensError(f"{path}: rows[{number}].{key} is not a number ({row[key]!r})")
        for key in (f"{m}_low", f"{m}_high", f"drop_{m}_low", f"drop_{m}_high"):  # null/NaN: --bootstrap 0
            if row.get(key) is not None and not is_number(row[key]):
                raise StlensError(f"{path}: rows[{number}].{key} is not a number or null ({row[key]!r})")
    if not any(row["select"] == BASELINE for row in rows):
        raise StlensError(f"{path}: no baseline row (select \"none\")")


def _k_text(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else f"{float(k):g}"


def _masked(rows: list[dict[str, Any]], selections: dict[tuple, dict[str, Any]]) -> str:
    """The channels masked (a range if the draws differ), and how many were asked when fewer live ones existed."""
    counts = sorted({int(r["masked"]) for r in rows})
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    asked = {selections[key].get("asked") for key in map(_selection_key, rows) if key in selections}
    if len(asked) == 1 and len(counts) == 1:
        (wanted,) = asked
        if is_number(wanted) and int(wanted) != counts[0]:
            text += f" (of {int(wanted)} asked)"
    return text


def _selection_key(row: dict[str, Any]) -> tuple:
    return (row.get("layer"), row.get("select"), float(row.get("k", 0)), int(row.get("draw", 0)))


def _panel(rows: list[dict[str, Any]], selections: dict[tuple, dict[str, Any]], metric: str) -> dict[str, Any]:
    """The table of one (mode, layer) in the score ``metric``: the baseline ("–" if it has none) and one row per
    (select, K), in the order of ablation.json."""
    base = next((r for r in rows if r["select"] == BASELINE), {})
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        if row["select"] != BASELINE:
            groups.setdefault((row["select"], float(row["k"])), []).append(row)
    table = []
    for (select, k), members in groups.items():
        score = np.array([float(r[metric]) for r in members])
        drop = np.array([float(r[f"drop_{metric}"]) for r in members])
        single = len(members) == 1
        table.append({
            "select": select, "k": _k_text(k), "draws": len(members), "masked": _masked(members, selections),
            "score": number_text(float(score.mean())), "score_sd": "–" if single else number_text(float(score.std())),
            "drop": number_text(float(drop.mean()), sign=True),
            "drop_ci": (interval_text(members[0].get(f"drop_{metric}_low"), members[0].get(f"drop_{metric}_high"),
                                  sign=True)
                        if single else "(mean of draws)"),
        })
    return {"baseline": number_text(base.get(metric)),
            "baseline_ci": interval_text(base.get(f"{metric}_low"), base.get(f"{metric}_high")), "rows": table}


def _figure(ablation: Ablation) -> tuple[dict[str, Any] | None, str]:
    """The run's own ablation.png as ``{"uri", "width"}`` (checksum checked), or None and why not."""
    from stlens.report.plots import run_png

    return run_png(ablation.path, ablation.marker, FIGURE, FIGURE_DPI)


def command_line(settings: dict[str, Any]) -> str:
    """``stlens ablate ...`` from the arguments recorded in ablation.json."""
    arguments = settings.get("arguments")
    if not isinstance(arguments, dict):
        return "unknown (ablation.json records no arguments)"
    words = ["stlens", "ablate"]
    for key, value in arguments.items():
        if key in ("command", "func", "quiet") or value is None or value is False:
            continue
        flag = "--from" if key == "from_run" else "--" + key.replace("_", "-")
        if isinstance(value, list):
            value = ",".join(_k_text(v) if is_number(v) else str(v) for v in value)
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def ablation_view(ablation: Ablation, measured: dict[Path, str] | None = None) -> dict[str, Any]:
    """What the template shows of one ablate run. ``measured``: the report's measure-run folders → their section
    anchors (``#run-N``), to link the run that ranked the channels when it is in the report too."""
    doc, settings = ablation.doc, ablation.settings
    listed = doc.get("selections") if isinstance(doc.get("selections"), list) else []
    selections = {_selection_key(s): s for s in listed
                  if isinstance(s, dict) and is_number(s.get("k")) and is_number(s.get("draw", 0))}
    rows = doc["rows"]
    modes = list(dict.fromkeys(str(r["mode"]) for r in rows))
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    panels = []
    for mode in modes:
        for layer in layers:
            here = [r for r in rows if str(r["mode"]) == mode and str(r["layer"]) == layer]
            if here:
                panels.append({"mode": mode, "layer": layer, **_panel(here, selections, ablation.metric)})
    units = settings.get("units")
    ranked_by = Path(str(units)).parent if units else None
    anchor = None
    for folder, target in (measured or {}).items():
        if ranked_by is not None and folder.resolve() == ranked_by.resolve():
            anchor = target
    figure, note = _figure(ablation)
    timing = doc.get("timing") if isinstance(doc.get("timing"), dict) else {}
    versions = settings.get("versions") if isinstance(settings.get("versions"), dict) else {}
    name, about = METRIC_TEXT.get(ablation.metric, (ablation.metric, f"the score {ablation.metric!r} of stlens ablate"))
    return {
        "label": ablation.label, "path": str(ablation.path), "panels": panels, "figure": figure, "figure_note": note,
        "metric": {"key": ablation.metric, "name": name, "about": about},
        "intervals": INTERVALS.get(str(settings.get("intervals") or "clips"), INTERVALS["clips"]),
        "settings": {key: settings.get(key) for key in ("model", "weights", "data", "clips", "draws", "bootstrap",
                                                         "seed", "precision", "device")},
        "units": str(units) if units else "unknown", "ranked_by": str(ranked_by) if ranked_by else None,
        "ranked_anchor": anchor, "modes": modes, "command": command_line(settings),
        "run_id": doc.get("run_id"), "version": versions.get("stlens"),
        "seconds": timing.get("seconds") if is_number(timing.get("seconds")) else None,
    }
