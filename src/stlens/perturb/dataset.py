"""Is a dataset static-biased? ``stlens perturb --dataset-report``: read ``stlens perturb`` runs of models trained on
one dataset (never training anything) and say how much of their above-chance score survives one frozen frame and
shuffled frames, beside a reference run on a world that needs dynamics (docs/behaviour.md).

Per run (top-1, or the run's first metric): clean score and chance, and the retention of ``freeze`` and ``shuffle``
with their 95% intervals, read from perturb.csv's rows. A run's verdict, from ``freeze`` (the perturbation that
removes all motion):

- ``static``: the interval's lower bound ≥ ``freeze_threshold`` (default 0.5): one frame keeps at least that share
  of the model's above-chance score;
- ``dynamic``: its upper bound < ``freeze_threshold``;
- ``undecided``: the interval contains ``freeze_threshold``;
- ``not above chance``: the retention is undefined (NaN: the clean score is not two standard errors above chance).

The dataset's verdict: ``static-biased`` when every run with a verdict says static, ``dynamic`` when every one says
dynamic, ``models disagree`` otherwise, ``undetermined`` when no run has one. The reference run (e.g. the bundled
``i3d-motion`` on ``synth:motion``) is shown beside them and judged by the same rule; if it does not come out
dynamic, the report says that the reference does not show what a dynamics-requiring dataset looks like.

Files (``out``, a run folder of the verb ``perturb-dataset``): ``dataset.csv`` (one row per run, ``COLUMNS``),
``dataset.json`` (``format_version``, ``settings``, ``rows``, ``verdict``, ``reference_verdict``, ``run_id``) and
``dataset.png`` (freeze and shuffle retention per run with intervals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stlens.errors import StlensError
from stlens.perturb.result import PerturbResult, csv_text, load_perturb, save_run

FILES = ("dataset.csv", "dataset.json", "dataset.png")
VERB = "perturb-dataset"
NEEDED = ("freeze", "shuffle")
THRESHOLD = 0.5
COLUMNS = ["role", "run", "model", "weights", "data", "metric", "clips", "clean", "clean_lo", "clean_hi", "chance",
           "freeze", "freeze_lo", "freeze_hi", "shuffle", "shuffle_lo", "shuffle_hi", "verdict"]


def run_verdict(retention: float, low: float, high: float, threshold: float = THRESHOLD) -> str:
    """The verdict of one run from its freeze retention and 95% interval (module docstring)."""
    if any(math.isnan(v) for v in (retention, low, high)):
        return "not above chance"
    if low >= threshold:
        return "static"
    if high < threshold:
        return "dynamic"
    return "undecided"


def dataset_verdict(verdicts: Sequence[str]) -> str:
    """``static-biased``, ``dynamic``, ``models disagree`` or ``undetermined`` from the runs' verdicts."""
    decided = [v for v in verdicts if v != "not above chance"]
    if not decided:
        return "undetermined"
    if all(v == "static" for v in decided):
        return "static-biased"
    if all(v == "dynamic" for v in decided):
        return "dynamic"
    return "models disagree"


@dataclass(repr=False)
class DatasetReport:
    """What ``dataset_report`` read and concluded: ``rows`` (dataset.csv, the reference last), ``verdict`` (the
    dataset's) and ``reference_verdict``; prints as a table."""

    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    verdict: str
    reference_verdict: str | None = None
    run_id: str | None = None
    path: Path | None = field(default=None)

    def table(self) -> str:
        head = (f"{'role':<10}{'model':<44}{'clean':>7}{'chance':>8}{'freeze':>8}{'95% CI':>18}{'shuffle':>9}"
                f"{'95% CI':>18}  verdict")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            model = _label(r)[:43]
            lines.append(f"{r['role']:<10}{model:<44}{r['clean']:>7.3f}{r['chance']:>8.3f}{r['freeze']:>8.3f}"
                         f"{_ci(r['freeze_lo'], r['freeze_hi']):>18}{r['shuffle']:>9.3f}"
                         f"{_ci(r['shuffle_lo'], r['shuffle_hi']):>18}  {r['verdict']}")
        lines.append(f"dataset {self.settings['data']}: {self.verdict}")
        if self.reference_verdict is not None:
            lines.append(f"reference {self.settings['reference_data']}: {self.reference_verdict}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"DatasetReport ({len(self.rows)} runs)\n{self.table()}"

    def csv_text(self) -> str:
        return csv_text(self.rows, COLUMNS)

    def document(self) -> dict[str, Any]:
        from stlens.files import versioned

        rows = [{k: (None if _nan(v) else v) for k, v in r.items()} for r in self.rows]
        return versioned({"settings": self.settings, "rows": rows, "verdict": self.verdict,
                          "reference_verdict": self.reference_verdict, "run_id": self.run_id})

    def plot(self):
        """A matplotlib Figure: freeze and shuffle retention per run with 95% intervals, the threshold dashed."""
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(2.5 + 1.1 * len(self.rows), 3.6))  # not pyplot: the caller's backend is left alone
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        x = np.arange(len(self.rows))
        for offset, name, colour in ((-0.18, "freeze", "#d62728"), (0.18, "shuffle", "#ff7f0e")):
            values = np.array([r[name] for r in self.rows], float)
            errors = np.abs(np.stack([values - [r[f"{name}_lo"] for r in self.rows],
                                      np.array([r[f"{name}_hi"] for r in self.rows], float) - values]))
            ax.bar(x + offset, np.nan_to_num(values), width=0.36, color=colour, label=f"{name} retention")
            ax.errorbar(x + offset, values, yerr=np.nan_to_num(errors), fmt="none", ecolor="black", capsize=3)
        ax.axhline(self.settings["freeze_threshold"], color="black", lw=0.8, ls="--", label="threshold")
        ax.axhline(0.0, color="grey", lw=0.8)
        for i, r in enumerate(self.rows):
            if r["verdict"] == "not above chance":
                ax.text(i, 0.05, "not above\nchance", ha="center", fontsize=7)
        ax.set_ylim(min(-0.1, ax.get_ylim()[0]), max(1.05, ax.get_ylim()[1]))
        ticks = [f"{r['role']}\n{r['model']}" + (f"\n{r['weights']}" if r.get("weights") else "") for r in self.rows]
        ax.set_xticks(x, [t.replace("$", r"\$") for t in ticks], fontsize=7)
        ax.set_ylabel("retention (1: clean, 0: chance)")
        ax.legend(fontsize=7)
        ax.set_title(f"{self.settings['data']}: {self.verdict}".replace("$", r"\$"), fontsize=8)
        figure.tight_layout()
        return figure

    def save(self, out, *, overwrite: bool = False) -> Path:
        """Write dataset.csv, dataset.json and dataset.png into the run folder ``out``: all or none."""
        return save_run(self, out, VERB, "dataset", overwrite)


def dataset_report(runs: Sequence[str | Path | PerturbResult], *, reference: str | Path | PerturbResult | None = None,
                   freeze_threshold: float = THRESHOLD, metric: str | None = None, out: str | Path | None = None,
                   overwrite: bool = False) -> DatasetReport:
    """Judge a dataset by the ``stlens perturb`` runs of models trained on it (module docstring).

    ``runs``: perturb run folders (or ``PerturbResult``\\ s) on one dataset (the same ``data`` spec), each with
    ``freeze`` and ``shuffle`` among its perturbations; ``reference``: a perturb run on a world that needs dynamics
    (e.g. ``bundled:i3d-motion`` on ``synth:motion``), or None; ``freeze_threshold``: the freeze retention that
    separates static from dynamic; ``metric``: the metric read (default each run's first: top1, miou). ``out``: a
    run folder (dataset.csv, dataset.json, dataset.png), claimed before anything is written, refused when it holds a
    complete run unless ``overwrite``.

    >>> report = dataset_report(["runs/appearance-i3d"], reference="runs/motion-i3d")  # doctest: +SKIP
    >>> report.verdict  # doctest: +SKIP
    'static-biased'
    """
    threshold = float(freeze_threshold)
    if not 0.0 < threshold < 1.0:
        raise StlensError(f"`freeze_threshold` must be in (0, 1), got {freeze_threshold}")
    if isinstance(runs, str | Path | PerturbResult) or not runs:
        raise StlensError("`runs` must be a non-empty list of stlens perturb run folders")
    folder = None
    if out is not None:
        from stlens.runs import RunFolder

        folder = RunFolder(out, VERB, overwrite=overwrite, outputs=FILES).claim()
    try:
        loaded = [_load("runs", r) for r in runs]
        data = {r.settings.get("data") for r in loaded}
        if len(data) > 1:
            raise StlensError(f"`runs` are on different datasets ({', '.join(sorted(map(str, data)))}): a dataset "
                              f"report compares runs on one dataset")
        rows = [_row("model", r, metric) for r in loaded]
        ref = _row("reference", _load("reference", reference), metric) if reference is not None else None
        if ref is not None and ref["data"] == rows[0]["data"]:
            raise StlensError(f"`reference` is a run on {ref['data']}, the dataset judged: give a run on a world "
                              f"that needs dynamics (e.g. bundled:i3d-motion on synth:motion)")
        for row in rows + ([ref] if ref else []):
            row["verdict"] = run_verdict(row["freeze"], row["freeze_lo"], row["freeze_hi"], threshold)
        reference_verdict = None
        if ref is not None:
            reference_verdict = ref["verdict"] if ref["verdict"] == "dynamic" else (
                f"{ref['verdict']}: the reference does not show what a dataset that needs dynamics looks like")
        settings = {"data": rows[0]["data"], "runs": [r["run"] for r in rows], "freeze_threshold": threshold,
                    "metric": metric, "reference": ref["run"] if ref else None,
                    "reference_data": ref["data"] if ref else None}
        report = DatasetReport(settings, rows + ([ref] if ref else []), dataset_verdict([r["verdict"] for r in rows]),
                               reference_verdict)
    except BaseException:
        if folder is not None:
            folder.abandon()
        raise
    if folder is not None:
        report.save(folder)
    return report


def _load(argument: str, run: str | Path | PerturbResult) -> PerturbResult:
    if isinstance(run, PerturbResult):
        return run
    try:
        return load_perturb(run)
    except StlensError as exc:
        raise StlensError(f"`{argument}`: {exc}") from None


def _row(role: str, run: PerturbResult, metric: str | None) -> dict[str, Any]:
    """One row of dataset.csv from a perturb run: clean, chance, freeze and shuffle retention of ``metric``."""
    where = str(run.path) if run.path is not None else f"<{run.settings.get('model')} in memory>"
    metric = metric or run.metrics[0]
    if metric not in run.metrics:
        raise StlensError(f"run {where} has no metric '{metric}' (it has {', '.join(run.metrics)})")
    names = {r["perturbation"] for r in run.rows}
    missing = [n for n in NEEDED if n not in names]
    if missing:
        raise StlensError(f"run {where} has no {' or '.join(missing)} rows: rerun stlens perturb with "
                          f"--perturbations freeze,shuffle (at least)")
    clean, freeze, shuffle = (run.row(n, metric) for n in ("clean", *NEEDED))
    s = run.settings
    return {"role": role, "run": where, "model": s.get("model"), "weights": s.get("weights"), "data": s.get("data"),
            "metric": metric, "clips": clean["clips"], "clean": clean["score"], "clean_lo": clean["score_lo"],
            "clean_hi": clean["score_hi"], "chance": clean["chance"],
            **{f"{n}{suffix}": r[f"retention{suffix}"] for n, r in (("freeze", freeze), ("shuffle", shuffle))
               for suffix in ("", "_lo", "_hi")}}


def _label(row: dict[str, Any]) -> str:
    weights = row.get("weights")
    return f"{row['model']} ({weights})" if weights else str(row["model"])


def _ci(low: float, high: float) -> str:
    return "" if _nan(low) or _nan(high) else f"[{low:.3f}, {high:.3f}]"


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def load_dataset_report(folder: str | Path) -> DatasetReport:
    """A ``DatasetReport`` from the dataset.json of a ``perturb-dataset`` run folder (checksums checked)."""
    from stlens.runs import read_run_document

    folder = Path(folder)
    _, doc = read_run_document(folder, VERB, "dataset.json", None, "rerun stlens perturb --dataset-report to write it "
                               "again")
    rows = [{k: (float("nan") if v is None and k not in ("weights",) else v) for k, v in r.items()}
            for r in doc["rows"]]
    return DatasetReport(doc["settings"], rows, doc["verdict"], doc.get("reference_verdict"), doc.get("run_id"),
                         folder)
