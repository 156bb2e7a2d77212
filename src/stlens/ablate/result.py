"""``AblationResult`` and the run folder of ``stlens ablate``.

Files (docs/ablation.md, docs/formats.md):

- ``ablation.csv``: one row per (layer, select, k, draw, mode) — ``select`` exactly as given to ``--select`` — and,
  per layer and mode, a baseline row with ``select=none`` (k 0, no channel masked). Columns: ``layer, select, k,
  draw, mode, masked`` (the number of channels silenced) and per metric M (``top1``, ``top5`` when the data has > 5
  classes): ``M, M_low, M_high, drop_M, drop_M_low, drop_M_high`` (value and drop = baseline − value, each with its
  95% bootstrap interval over clips).
- ``per_class.csv``: ``layer, select, k, draw, mode, class, clips, top1`` for every condition and the baseline; for
  track AP (a VIS model) ``layer, select, k, draw, mode, class, tracks, ap`` (the category's non-crowd tracks and AP).
- ``ablation.json``: ``format_version`` (docs/formats.md §0), ``settings`` (the options, the model, the data, the
  units source), ``baseline`` (each metric with its interval), ``selections`` (every condition's masked channels, the
  count asked and whether fewer live channels were there), ``rows`` (as ablation.csv), ``timing``, ``run_id``.
- ``ablation.png``: each metric against K, one panel per (mode, layer), one line per ranked selection and a mean ± sd
  band per random selection over its draws.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stlens.core.damaged import reading
from stlens.core.summary import ci_text, html_table, text_summary
from stlens.errors import StlensError
from stlens.files import json_safe, read_versioned, versioned
from stlens.runs import RunFolder, check_files, claimed, read_marker

FILES = ("ablation.csv", "per_class.csv", "ablation.json", "ablation.png")
KEY_COLUMNS = ["layer", "select", "k", "draw", "mode", "masked"]
CLASS_COLUMNS = ["layer", "select", "k", "draw", "mode", "class", "clips", "top1"]
#: per_class.csv of a track-AP ablation (video instance segmentation)
AP_CLASS_COLUMNS = ["layer", "select", "k", "draw", "mode", "class", "tracks", "ap"]
BASELINE = "none"
#: what to do about a damaged file of an ablate run
RERUN = "rerun the ablation (stlens ablate) to write it again"


def metric_columns(names: list[str]) -> list[str]:
    """The numeric columns of each metric: value, its interval, the drop and its interval."""
    return [c for m in names for c in (m, f"{m}_low", f"{m}_high", f"drop_{m}", f"drop_{m}_low", f"drop_{m}_high")]


def _k_text(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else repr(float(k))


@dataclass(repr=False)
class AblationResult:
    """What ``stlens.ablate`` measured; it prints as a summary and the table of conditions (``repr``; HTML in Jupyter).

    Args:
        settings: the arguments of the run (model, data, layers, select, k, modes, draws, seed, ...).
        metrics: the metric names (``top1``, ``top5``; ``miou``, ``msr``; ``ap``, ...).
        baseline: per layer, the unmasked model's score per metric (the same clips).
        rows: one row per condition (mode, layer, select, K %, draw): scores and drops with their 95% intervals
            (ablation.csv).
        selections: the channels each condition masked.
        per_class: per condition and class, the scores (per_class.csv).
        timing: seconds spent per phase.
        run_id: the id of the run folder it was saved into, or None.

    Examples:
        >>> import tempfile
        >>> run = tempfile.mkdtemp() + "/measure"
        >>> _ = stlens.measure("stlens:c2d?classes=8&width=4", "synth:motion?n=16", frames=4, size=16, pairs=8,
        ...                    bootstrap=0, workers=0, progress=False, out=run)
        >>> result = stlens.ablate("stlens:c2d?classes=8&width=4", "synth:motion?n=8&seed=1", from_run=run,
        ...                        layers="stage4", k=50, draws=1, bootstrap=0, frames=4, size=16, progress=False)
        >>> isinstance(result, stlens.AblationResult), result.metrics
        (True, ['top1', 'top5'])
        >>> sorted({row["select"] for row in result.rows})
        ['dynamic', 'none', 'random', 'static']
    """

    settings: dict[str, Any]
    metrics: list[str]
    baseline: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    selections: list[dict[str, Any]]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def columns(self) -> list[str]:
        return KEY_COLUMNS + metric_columns(self.metrics)

    def to_frame(self):
        """A pandas DataFrame of ablation.csv: one row per condition, baselines (``select == 'none'``) included."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)

    def plot(self, metric: str | None = None):
        """A matplotlib Figure: ``metric`` (default the first, top1) against K per (mode, layer) panel."""
        from stlens.ablate.plots import metric_vs_k

        metric = metric or self.metrics[0]
        if metric not in self.metrics:
            raise StlensError(f"unknown metric '{metric}'; this result has {', '.join(self.metrics)}")
        return metric_vs_k(self, metric)

    def _conditions(self, metric: str) -> list[tuple[str, str, str, str, float, float, str, int]]:
        """Per (mode, layer, select, K): the metric and its drop (means over draws), the drop's CI, the draws."""
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for row in self.rows:
            groups.setdefault((row["mode"], row["layer"], row["select"], row["k"]), []).append(row)
        out = []
        for (mode, layer, select, k), rows in groups.items():
            value = sum(r[metric] for r in rows) / len(rows)
            drop = sum(r[f"drop_{metric}"] for r in rows) / len(rows)
            ci = (f"[{rows[0][f'drop_{metric}_low']:+.3f}, {rows[0][f'drop_{metric}_high']:+.3f}]" if len(rows) == 1
                  else "(mean of draws)")
            out.append((mode, layer, select, _k_text(k), value, drop, ci, len(rows)))
        return out

    def table(self, metric: str | None = None) -> str:
        """A terminal table: per (mode, layer, select, K), the metric (mean over draws) and its drop."""
        metric = metric or self.metrics[0]
        head = (f"{'mode':<6}{'layer':<16}{'select':<22}{'K %':>6}{metric:>8}{'drop':>8}{'95% CI of drop':>18}"
                f"{'draws':>6}")
        lines = [head, "-" * len(head)]
        for mode, layer, select, k, value, drop, ci, draws in self._conditions(metric):
            lines.append(f"{mode:<6}{layer:<16}{select:<22}{k:>6}{value:>8.3f}{drop:>+8.3f}{ci:>18}{draws:>6}")
        return "\n".join(lines)

    def _caption(self) -> str:
        s = self.settings
        weights = f" ({s['weights']})" if s.get("weights") else ""
        metric = self.metrics[0] if self.metrics else None
        base = self.baseline.get(metric) or {}
        value = base.get("value")
        score = (f"; baseline {metric} {value:.3f} {ci_text([base.get('low'), base.get('high')], 3)}"
                 if isinstance(value, int | float) else "")
        return (f"{s.get('model')}{weights} on {s.get('data')}: {s.get('clips')} clips, modes "
                f"{', '.join(map(str, s.get('modes') or []))}{score}")

    def __repr__(self) -> str:
        run = f", run {self.run_id}" if self.run_id else ""
        return text_summary([f"AblationResult: {self._caption()}{run}"], self.table(), "result.table() shows all")

    def _repr_html_(self) -> str:
        """The table of conditions as HTML for Jupyter (every value escaped)."""
        metric = self.metrics[0]
        head = ["mode", "layer", "select", "K %", metric, "drop", "95% CI of drop", "draws"]
        rows = [(mode, layer, select, k, f"{value:.3f}", f"{drop:+.3f}", ci, draws)
                for mode, layer, select, k, value, drop, ci, draws in self._conditions(metric)]
        return html_table(self._caption(), head, rows)

    def csv_text(self) -> str:
        return _csv(self.columns, self.rows)

    def per_class_text(self) -> str:
        return _csv(AP_CLASS_COLUMNS if self.metrics[:1] == ["ap"] else CLASS_COLUMNS, self.per_class)

    def document(self) -> dict[str, Any]:
        """ablation.json (a missing interval, e.g. with ``bootstrap=0``, is null; ``format_version`` first)."""
        return json_safe(versioned({"settings": self.settings, "metrics": self.metrics,
                                  "baseline": self.baseline, "selections": self.selections, "rows": self.rows,
                                  "timing": self.timing, "run_id": self.run_id}))

    def save(self, out: str | Path | RunFolder, *, overwrite: bool = False) -> Path:
        """Write the run folder (ablation.csv, per_class.csv, ablation.json, ablation.png) into ``out``: all files or
        none; a folder holding a complete run is refused unless ``overwrite`` (docs/reliability.md)."""
        from stlens.files import atomic_write, write_json, write_text

        folder = claimed(out, "ablate", overwrite=overwrite, outputs=FILES)
        with folder:
            self.run_id = folder.run_id
            write_text(folder.staging / "ablation.csv", self.csv_text())
            write_text(folder.staging / "per_class.csv", self.per_class_text())
            write_json(folder.staging / "ablation.json", self.document())
            figure = self.plot()
            atomic_write(folder.staging / "ablation.png", lambda f: figure.savefig(f, format="png", dpi=110))
            saved = folder.commit()
        return saved


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: (_k_text(row[c]) if c == "k" else _number(row[c])) for c in columns if c in row})
    return buffer.getvalue()




def _nan(value: Any) -> Any:
    return float("nan") if value is None else value


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def is_ablation(folder: str | Path) -> bool:
    """True for a folder that holds a run of ``stlens ablate``."""
    marker = read_marker(folder)
    return bool(marker and marker.get("verb") == "ablate")


def load_ablation(folder: str | Path) -> AblationResult:
    """An ``AblationResult`` from the ablation.json of a run folder (the marker's checksums checked)."""
    folder = Path(folder)
    marker = read_marker(folder)
    if not marker or marker.get("verb") != "ablate":
        raise StlensError(f"{folder} is not a stlens ablate run folder (no ablate run marker)")
    check_files(folder, marker, ["ablation.json"])
    path = folder / "ablation.json"
    doc = read_ablation(path)
    with reading(path, RERUN):
        rows = [{k: (v if k in ("layer", "select", "mode") else _nan(v)) for k, v in row.items()}
                for row in doc["rows"]]
        baseline = {m: {k: _nan(v) for k, v in entry.items()} for m, entry in doc["baseline"].items()}
        settings, metrics, selections = doc["settings"], list(doc["metrics"]), doc["selections"]
        timing, run_id = doc.get("timing", {}), doc.get("run_id")
    with reading(folder / "per_class.csv", RERUN):
        per_class = _read_per_class(folder / "per_class.csv")
    return AblationResult(settings=settings, metrics=metrics, baseline=baseline, rows=rows, selections=selections,
                          timing=timing, run_id=run_id, per_class=per_class)


def read_ablation(path: Path) -> dict[str, Any]:
    """ablation.json as a dict: its ``format_version`` checked (docs/formats.md §0); a file of format 1 is known by
    its ``"stlens_ablation": 1``, which format 2 folds into ``format_version``."""
    doc = read_versioned(path, "stlens ablation", RERUN)
    if "format_version" not in doc and doc.get("stlens_ablation") != 1:
        raise StlensError(f"{path}: not a stlens ablation (no format_version, no \"stlens_ablation\": 1)")
    return doc


def _read_per_class(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{**row, **{key: (int if key in ("draw", "class", "clips", "tracks") else float)(value)
                           for key, value in row.items() if key not in ("layer", "select", "mode")}}
                for row in csv.DictReader(f)]
