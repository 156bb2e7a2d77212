"""The perturb sections of ``stlens report``: an ``stlens perturb`` run folder read back from its perturb.json (plain
JSON; ``stlens.report`` and ``stlens.perturb`` are siblings and do not import each other) after its marker's checksums
are checked, shown as the table of perturb.csv's rows, the run's own perturb.png and, with a joined measure run
(``--from``), its per-layer dynamic / static %.

Across runs (two or more with a joined measure run): the last measured layer's dynamic % against the retention of
``shuffle`` (motion removed), ``appearance-free`` (appearance removed) and ``palette`` (appearance changed), one
point per run, and Spearman's ρ with a percentile bootstrap interval over runs (``RHO_RESAMPLES`` resamples of the
runs with replacement, seed 0; resamples where either variable is constant give no ρ and are left out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stlens.errors import StlensError
from stlens.report.runview import RunView, interval_text, is_number, number_text
from stlens.runs import read_run_document

__all__ = ["DATASET_DOCUMENT", "DOCUMENT", "FIGURE", "Perturb", "cross_run_view", "dataset_view", "load_dataset_run",
           "load_perturb_run", "perturb_view", "spearman"]

DOCUMENT = "perturb.json"
TABLE = "perturb.csv"
FIGURE = "perturb.png"
FIGURE_DPI = 110  # the dpi stlens perturb saves perturb.png at
#: the files of a ``stlens perturb --dataset-report`` run folder (verb ``perturb-dataset``)
DATASET_VERB, DATASET_DOCUMENT, DATASET_TABLE, DATASET_FIGURE = ("perturb-dataset", "dataset.json", "dataset.csv",
                                                                 "dataset.png")
_DATASET_NUMBERS = ("clean", "clean_lo", "clean_hi", "chance", "freeze", "freeze_lo", "freeze_hi", "shuffle",
                    "shuffle_lo", "shuffle_hi")
#: the y axes of the cross-run figure: (perturbation, what it does)
AXES = (("shuffle", "motion removed: frames shuffled"), ("appearance-free", "appearance removed: noise moved along the "
        "clip's flow"), ("palette", "appearance changed: palette restyling"))
RHO_RESAMPLES = 1000
MEANINGFUL_RUNS = 4  # fewer runs: the bootstrap interval of ρ is not meaningful
_ROW_KEYS = ("perturbation", "kind", "metric", "score", "drop", "retention", "chance", "clips")
_NUMBERS = ("score", "score_lo", "score_hi", "drop", "drop_lo", "drop_hi", "retention", "retention_lo",
            "retention_hi", "chance", "clips", "follow_rate", "follow_rate_lo", "follow_rate_hi")


class Perturb(RunView):
    """A perturb run folder (or a dataset report) as the report reads it: ``doc`` (perturb.json, checked), its
    ``marker`` and a label."""

    @property
    def representation(self) -> dict[str, Any] | None:
        return self.doc.get("representation")


def load_perturb_run(folder: str | Path) -> Perturb:
    """Read a perturb run folder: the marker must name a complete perturb run, perturb.json and perturb.csv must be
    the files the run wrote, perturb.json of the same run, of a format this stlens reads, with the fields the report
    shows. Anything else raises a ``StlensError`` naming the folder or file (the report lists it as skipped)."""
    folder = Path(folder)
    marker, doc = read_run_document(folder, "perturb", DOCUMENT, TABLE,
                                    "rerun stlens perturb to write it again")
    _check_document(folder / DOCUMENT, doc)
    return Perturb(folder, doc, marker)


def _number_or_null(value: Any) -> bool:
    return value is None or is_number(value)


def _interval_ok(value: Any) -> bool:
    return value is None or (isinstance(value, list) and len(value) == 2 and all(map(is_number, value)))


def _check_document(path: Path, doc: dict[str, Any]) -> None:
    if not isinstance(doc.get("settings"), dict):
        raise StlensError(f"{path}: no 'settings' object")
    metrics = doc.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise StlensError(f"{path}: 'metrics' is not a non-empty list of score names")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        raise StlensError(f"{path}: no 'rows'")
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise StlensError(f"{path}: rows[{number}] is not an object")
        missing = [key for key in _ROW_KEYS if key not in row]
        if missing:
            raise StlensError(f"{path}: rows[{number}] has no {', '.join(missing)}")
        for key in _NUMBERS:
            if not _number_or_null(row.get(key)):
                raise StlensError(f"{path}: rows[{number}].{key} is not a number or null ({row[key]!r})")
    block = doc.get("representation")
    if block is None:
        return
    layers = block.get("layers") if isinstance(block, dict) else None
    if not isinstance(layers, list) or not layers:
        raise StlensError(f"{path}: 'representation' has no 'layers'")
    for number, layer in enumerate(layers):
        if not (isinstance(layer, dict) and isinstance(layer.get("layer"), str) and is_number(layer.get("dynamic"))
                and is_number(layer.get("static")) and _interval_ok(layer.get("dynamic_ci95"))
                and _interval_ok(layer.get("static_ci95"))):
            raise StlensError(f"{path}: representation.layers[{number}] is not a layer with dynamic and static % "
                              f"and their intervals")


def _ci(pair: list[float] | None) -> str:
    return interval_text(pair[0], pair[1], 1) if pair else "–"


def _rows(doc: dict[str, Any], metric: str) -> list[dict[str, str]]:
    """perturb.csv's rows of ``metric``, formatted, in the run's order."""
    return [{"perturbation": str(r["perturbation"]), "kind": str(r["kind"]),
             "score": number_text(r["score"]), "score_ci": interval_text(r.get("score_lo"), r.get("score_hi")),
             "drop": number_text(r["drop"], sign=True),
             "drop_ci": interval_text(r.get("drop_lo"), r.get("drop_hi"), sign=True),
             "retention": number_text(r["retention"]),
             "retention_ci": interval_text(r.get("retention_lo"), r.get("retention_hi")),
             "chance": number_text(r["chance"]), "clips": str(r["clips"]),
             "follow": number_text(r.get("follow_rate")),
             "follow_ci": interval_text(r.get("follow_rate_lo"), r.get("follow_rate_hi")),
             "note": str(r.get("note") or "")}
            for r in doc["rows"] if r["metric"] == metric]


def _representation_view(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if not block:
        return None
    return {"from_run": str(block.get("from_run")), "run_id": block.get("run_id"), "data": block.get("data"),
            "rows": [{"layer": layer["layer"], "channels": layer.get("channels"),
                      "dynamic": f"{layer['dynamic']:.1f}", "dynamic_ci": _ci(layer.get("dynamic_ci95")),
                      "static": f"{layer['static']:.1f}", "static_ci": _ci(layer.get("static_ci95"))}
                     for layer in block["layers"]]}


def perturb_view(run: Perturb) -> dict[str, Any]:
    """What the template shows of one perturb run: its settings line, one table per metric, its figure and the
    joined measure run's per-layer dynamic / static %."""
    from stlens.report.plots import run_png

    doc, settings = run.doc, run.settings
    figure, note = run_png(run.path, run.marker, FIGURE, FIGURE_DPI)
    timing = doc.get("timing") if isinstance(doc.get("timing"), dict) else {}
    versions = settings.get("versions") if isinstance(settings.get("versions"), dict) else {}
    return {
        "label": run.label, "path": str(run.path), "figure": figure, "figure_note": note,
        "settings": {key: settings.get(key) for key in ("model", "weights", "data", "clips", "classes", "bootstrap",
                                                         "seed", "precision", "device")},
        "tables": [{"metric": m, "rows": _rows(doc, m)} for m in doc["metrics"]],
        "representation": _representation_view(run.representation),
        "run_id": doc.get("run_id"), "version": versions.get("stlens"),
        "seconds": timing.get("seconds") if is_number(timing.get("seconds")) else None,
    }


def spearman(x: np.ndarray, y: np.ndarray, resamples: int = RHO_RESAMPLES,
             seed: int = 0) -> tuple[float, float, float]:
    """Spearman's ρ of the finite pairs (x, y) (``scipy.stats.spearmanr``) and its 95% percentile bootstrap interval
    over the pairs (``resamples`` resamples with replacement; a resample where x or y is constant is left out).
    NaN where fewer than 2 pairs, or no spread."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kept = np.isfinite(x) & np.isfinite(y)
    x, y = x[kept], y[kept]
    nan = float("nan")
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return nan, nan, nan
    rho = float(spearmanr(x, y).statistic)
    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    values = []
    for pick in index:
        a, b = x[pick], y[pick]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            values.append(float(spearmanr(a, b).statistic))
    finite = np.asarray(values)[np.isfinite(values)] if values else np.zeros(0)
    if finite.size == 0:
        return rho, nan, nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return rho, float(low), float(high)


def _row_of(doc: dict[str, Any], perturbation: str) -> dict[str, Any] | None:
    metric = doc["metrics"][0]
    return next((r for r in doc["rows"] if r["perturbation"] == perturbation and r["metric"] == metric), None)


def _float(v: Any) -> float:
    return float(v) if is_number(v) else float("nan")


def cross_run_points(runs: list[Perturb]) -> list[dict[str, Any]]:
    """Per run with a joined measure run: its label, the last measured layer, its dynamic % (with interval) and per
    axis of ``AXES`` the retention (with interval) of the run's first metric; NaN where a run has no such row."""
    points = []
    for run in runs:
        block = run.representation
        if not block:
            continue
        last = block["layers"][-1]
        ci = last.get("dynamic_ci95") or [float("nan")] * 2
        point = {"label": run.label, "layer": last["layer"], "metric": run.doc["metrics"][0],
                 "dynamic": float(last["dynamic"]), "dynamic_lo": float(ci[0]), "dynamic_hi": float(ci[1])}
        for name, _ in AXES:
            row = _row_of(run.doc, name) or {}
            point[name] = _float(row.get("retention"))
            point[f"{name}_lo"], point[f"{name}_hi"] = _float(row.get("retention_lo")), _float(row.get("retention_hi"))
        points.append(point)
    return points


def cross_run_figure(points: list[dict[str, Any]]):
    """Two panels: last-layer dynamic % (x) against the retention of each axis of ``AXES`` (y), with intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(AXES), 3.6))  # not pyplot: the caller's backend is left alone
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(AXES), squeeze=False)
    x = np.array([p["dynamic"] for p in points])
    xerr = np.nan_to_num(np.abs(np.stack([x - [p["dynamic_lo"] for p in points],
                                          np.array([p["dynamic_hi"] for p in points]) - x])))
    for ax, (name, about) in zip(axes[0], AXES, strict=True):
        y = np.array([p[name] for p in points])
        yerr = np.nan_to_num(np.abs(np.stack([y - [p[f"{name}_lo"] for p in points],
                                              np.array([p[f"{name}_hi"] for p in points]) - y])))
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3, color="#1f77b4", ecolor="grey")
        for i in range(len(points)):
            if np.isfinite(y[i]):
                ax.annotate(str(i + 1), (x[i], y[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("last layer dynamic %")
        ax.set_ylabel(f"{name} retention (1: clean, 0: chance)")
        ax.set_title(about, fontsize=9)
    figure.tight_layout()
    return figure


def cross_run_view(runs: list[Perturb]) -> dict[str, Any] | None:
    """The cross-run section: None unless at least 2 runs have a joined measure run; else the table (one row per run,
    numbered as in the figure), per axis Spearman's ρ and its interval, and the figure."""
    from stlens.report import plots

    points = cross_run_points(runs)
    if len(points) < 2:
        return None
    rows = [{"number": i, "label": p["label"], "layer": p["layer"], "metric": p["metric"],
             "dynamic": f"{p['dynamic']:.1f}", "dynamic_ci": interval_text(p["dynamic_lo"], p["dynamic_hi"], 1),
             **{name: number_text(p[name]) for name, _ in AXES},
             **{f"{name}_ci": interval_text(p[f"{name}_lo"], p[f"{name}_hi"]) for name, _ in AXES}}
            for i, p in enumerate(points, start=1)]
    x = np.array([p["dynamic"] for p in points])
    meaningful = len(points) >= MEANINGFUL_RUNS
    rhos = []
    for name, about in AXES:
        y = np.array([p[name] for p in points])
        rho, low, high = spearman(x, y)
        used = int((np.isfinite(x) & np.isfinite(y)).sum())
        rhos.append({"name": name, "about": about, "rho": number_text(rho, 2), "runs": used,
                     "ci": interval_text(low, high, 2) if used >= MEANINGFUL_RUNS else "not meaningful",
                     "rho_value": rho})
    img = plots.figure_image(cross_run_figure(points))
    return {"rows": rows, "rhos": rhos, "img": img, "runs": len(points), "meaningful": meaningful,
            "resamples": RHO_RESAMPLES, "axes": [{"name": n, "about": a} for n, a in AXES]}


def load_dataset_run(folder: str | Path) -> Perturb:
    """Read a ``stlens perturb --dataset-report`` run folder (marker, checksums of dataset.json and dataset.csv, the
    fields the report shows); a ``StlensError`` naming the folder or file otherwise."""
    folder = Path(folder)
    marker, doc = read_run_document(folder, DATASET_VERB, DATASET_DOCUMENT, DATASET_TABLE,
                                    "rerun stlens perturb --dataset-report to write it again")
    path = folder / DATASET_DOCUMENT
    if not isinstance(doc.get("settings"), dict) or not isinstance(doc.get("verdict"), str):
        raise StlensError(f"{path}: no 'settings' or 'verdict'")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        raise StlensError(f"{path}: no 'rows'")
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("verdict"), str) or not isinstance(row.get("role"), str):
            raise StlensError(f"{path}: rows[{number}] is not a run with a role and a verdict")
        for key in _DATASET_NUMBERS:
            if not _number_or_null(row.get(key)):
                raise StlensError(f"{path}: rows[{number}].{key} is not a number or null ({row.get(key)!r})")
    return Perturb(folder, doc, marker)


def dataset_view(run: Perturb) -> dict[str, Any]:
    """What the template shows of one dataset report: the verdicts, one row per run, and its figure."""
    from stlens.report.plots import run_png

    doc = run.doc
    figure, note = run_png(run.path, run.marker, DATASET_FIGURE, FIGURE_DPI)
    rows = [{"role": str(r["role"]), "model": str(r.get("model")), "weights": str(r.get("weights") or ""),
             "run": str(r.get("run")), "clips": str(r.get("clips")), "clean": number_text(r.get("clean")),
             "chance": number_text(r.get("chance")), "freeze": number_text(r.get("freeze")),
             "freeze_ci": interval_text(r.get("freeze_lo"), r.get("freeze_hi")),
             "shuffle": number_text(r.get("shuffle")),
             "shuffle_ci": interval_text(r.get("shuffle_lo"), r.get("shuffle_hi")), "verdict": str(r["verdict"])}
            for r in doc["rows"]]
    settings = doc["settings"]
    return {"label": run.label, "path": str(run.path), "data": str(settings.get("data")),
            "threshold": settings.get("freeze_threshold"), "verdict": doc["verdict"],
            "reference_data": settings.get("reference_data"), "reference_verdict": doc.get("reference_verdict"),
            "rows": rows, "figure": figure, "figure_note": note, "run_id": doc.get("run_id")}
