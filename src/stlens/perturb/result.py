"""``PerturbResult`` and the run folder of ``stlens perturb`` (docs/behaviour.md, docs/formats.md §5b).

- ``perturb.csv``: one row per (perturbation, metric), ``clean`` first: ``perturbation, kind, metric, score,
  score_lo, score_hi, drop, drop_lo, drop_hi, retention, retention_lo, retention_hi, chance, clips,
  follow_rate, follow_rate_lo, follow_rate_hi, note`` (follow_rate: static-mix only, the share of top-1 predictions
  that are the mixed-in clip's class; NaN elsewhere).
- ``perturb.json``: ``format_version``, ``settings``, ``rows`` (as the CSV), ``timing`` (seconds, forward seconds,
  decode seconds and per perturbation its synthesis seconds), ``run_id``; with ``from_run`` a ``representation``
  block (the joined measure run and its per-layer dynamic / static % with 95% intervals).
- ``perturb.png``: retention per perturbation with its 95% interval, one panel per metric.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stlens.core.summary import html_table, text_summary
from stlens.errors import StlensError
from stlens.files import json_safe, versioned
from stlens.runs import RunFolder, claimed, read_run_document

FILES = ("perturb.csv", "perturb.json", "perturb.png")
COLUMNS = ["perturbation", "kind", "metric", "score", "score_lo", "score_hi", "drop", "drop_lo", "drop_hi",
           "retention", "retention_lo", "retention_hi", "chance", "clips", "follow_rate", "follow_rate_lo",
           "follow_rate_hi", "note"]
TEXT = ("perturbation", "kind", "metric", "note")


@dataclass(repr=False)
class PerturbResult:
    """What ``stlens.perturb`` measured; it prints as a table.

    Args:
        settings: the arguments of the run (model, data, perturbations, clips, seed, ...).
        metrics: the metric names (``top1``; ``miou``; ``ap``, ...).
        rows: one row per perturbation (``clean`` first): score, drop and retention with their 95% intervals
            (perturb.csv).
        timing: seconds spent per phase.
        run_id: the id of the run folder it was saved into, or None.
        path: the run folder once saved, or None.
        representation: with ``from_run``, the measure run's per-layer dynamic / static % (else None).

    Examples:
        >>> result = stlens.perturb("stlens:c2d?classes=8&width=4", "synth:motion?n=8", perturbations="shuffle,freeze",
        ...                         frames=4, size=16, bootstrap=0, progress=False)
        >>> isinstance(result, stlens.PerturbResult)
        True
        >>> sorted({row["perturbation"] for row in result.rows})  # a row per perturbation and metric
        ['clean', 'freeze', 'shuffle']
    """

    settings: dict[str, Any]
    metrics: list[str]
    rows: list[dict[str, Any]]
    timing: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    path: Path | None = None
    representation: dict[str, Any] | None = None

    def row(self, perturbation: str, metric: str | None = None) -> dict[str, Any]:
        """The row of ``perturbation`` for ``metric`` (default the first, top1)."""
        metric = metric or self.metrics[0]
        for r in self.rows:
            if r["perturbation"] == perturbation and r["metric"] == metric:
                return r
        raise StlensError(f"no row for perturbation '{perturbation}' and metric '{metric}'")

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)

    def _lines(self, metric: str) -> list[tuple[str, ...]]:
        out = []
        for r in self.rows:
            if r["metric"] != metric:
                continue
            follow = "" if _nan(r["follow_rate"]) else f"{r['follow_rate']:.3f}"
            out.append((r["perturbation"], f"{r['score']:.3f}", f"[{r['score_lo']:.3f}, {r['score_hi']:.3f}]",
                        f"{r['drop']:+.3f}", f"{r['retention']:.3f}",
                        f"[{r['retention_lo']:.3f}, {r['retention_hi']:.3f}]", follow))
        return out

    def table(self, metric: str | None = None) -> str:
        metric = metric or self.metrics[0]
        head = f"{'perturbation':<14}{metric:>8}{'95% CI':>18}{'drop':>8}{'retention':>11}{'95% CI':>18}{'follow':>8}"
        lines = [head, "-" * len(head)]
        for name, score, ci, drop, ret, ret_ci, follow in self._lines(metric):
            lines.append(f"{name:<14}{score:>8}{ci:>18}{drop:>8}{ret:>11}{ret_ci:>18}{follow:>8}")
        return "\n".join(lines)

    def _caption(self) -> str:
        s = self.settings
        weights = f" ({s['weights']})" if s.get("weights") else ""
        return f"{s.get('model')}{weights} on {s.get('data')}: {s.get('clips')} clips"

    def __repr__(self) -> str:
        run = f", run {self.run_id}" if self.run_id else ""
        lines = [f"PerturbResult: {self._caption()}{run}"]
        if self.representation and self.representation.get("layers"):
            last = self.representation["layers"][-1]
            lines.append(f"representation ({self.representation.get('from_run')}): {last['layer']} dynamic "
                         f"{last['dynamic']:.1f}%, static {last['static']:.1f}%")
        return text_summary(lines, self.table(), "result.table() shows all")

    def _repr_html_(self) -> str:
        metric = self.metrics[0]
        head = ["perturbation", metric, "95% CI", "drop", "retention", "95% CI", "follow"]
        return html_table(self._caption(), head, self._lines(metric))

    def plot(self):
        """A matplotlib Figure: retention per perturbation with its 95% interval, one panel per metric."""
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        # an Agg canvas of its own, not pyplot: the caller's backend (Jupyter's inline one) is left alone
        figure = Figure(figsize=(1.5 + 0.9 * len(self.rows) / len(self.metrics) * len(self.metrics), 3.4))
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, len(self.metrics), squeeze=False)
        colours = {"motion": "#d62728", "appearance": "#1f77b4", "static-mix": "#9467bd", "object": "#2ca02c",
                   "user": "#7f7f7f"}
        for ax, metric in zip(axes[0], self.metrics, strict=True):
            rows = [r for r in self.rows if r["metric"] == metric and r["perturbation"] != "clean"]
            x = np.arange(len(rows))
            values = np.array([r["retention"] for r in rows], float)
            low = np.array([r["retention_lo"] for r in rows], float)
            high = np.array([r["retention_hi"] for r in rows], float)
            ax.bar(x, np.nan_to_num(values), color=[colours.get(r["kind"], "#7f7f7f") for r in rows])
            errors = np.abs(np.stack([values - low, high - values]))
            ax.errorbar(x, values, yerr=np.nan_to_num(errors), fmt="none", ecolor="black", capsize=3)
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_xticks(x, [r["perturbation"].replace("$", r"\$") for r in rows], rotation=30, ha="right")
            ax.set_ylabel(f"retention of {metric} (1: clean, 0: chance)")
        figure.suptitle(self._caption().replace("$", r"\$"), fontsize=8)
        figure.tight_layout()
        return figure

    def csv_text(self) -> str:
        return csv_text(self.rows, COLUMNS)

    def document(self) -> dict[str, Any]:
        doc = {"settings": self.settings, "metrics": self.metrics, "rows": self.rows, "timing": self.timing}
        if self.representation is not None:
            doc["representation"] = self.representation
        return json_safe(versioned(doc | {"run_id": self.run_id}))

    def save(self, out: str | Path | RunFolder, *, overwrite: bool = False) -> Path:
        """Write perturb.csv, perturb.json and perturb.png into the run folder ``out``: all or none."""
        return save_run(self, out, "perturb", "perturb", overwrite)


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """``rows`` as CSV with ``columns`` (NaN and None written as ``nan``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("nan" if _nan(row.get(c)) else row.get(c)) for c in columns})
    return buffer.getvalue()


def save_run(result, out: str | Path | RunFolder, verb: str, stem: str, overwrite: bool) -> Path:
    """Write ``result``'s ``<stem>.csv`` (``csv_text()``), ``<stem>.json`` (``document()``, with the run id) and
    ``<stem>.png`` (``plot()``) into the ``verb`` run folder ``out``, all or none; sets ``result.run_id`` and
    ``result.path``."""
    from stlens.files import atomic_write, write_json, write_text

    folder = claimed(out, verb, overwrite=overwrite, outputs=tuple(f"{stem}.{kind}" for kind in ("csv", "json", "png")))
    with folder:
        result.run_id = folder.run_id
        write_text(folder.staging / f"{stem}.csv", result.csv_text())
        write_json(folder.staging / f"{stem}.json", result.document())
        figure = result.plot()
        atomic_write(folder.staging / f"{stem}.png", lambda f: figure.savefig(f, format="png", dpi=110))
        result.path = folder.commit()
    return result.path


def load_perturb(folder: str | Path) -> PerturbResult:
    """A ``PerturbResult`` from the perturb.json of a run folder (the marker's checksums checked)."""
    folder = Path(folder)
    _, doc = read_run_document(folder, "perturb", "perturb.json", None, "rerun stlens perturb to write it again")
    rows = [{k: (v if k in TEXT else float("nan") if v is None else v) for k, v in r.items()} for r in doc["rows"]]
    return PerturbResult(settings=doc["settings"], metrics=list(doc["metrics"]), rows=rows,
                         timing=doc.get("timing", {}), run_id=doc.get("run_id"), path=folder,
                         representation=doc.get("representation"))


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


