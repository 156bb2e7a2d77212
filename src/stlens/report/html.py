"""``stlens report``: one self-contained HTML file (Jinja2, autoescaped; images as base64 data URIs) and the
``--plots-only`` PNG + SVG writer. The layers of a two-stream run are listed and plotted grouped by stream
(``stlens.report.streams``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import platform
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stlens._version import __version__
from stlens.errors import StlensError
from stlens.files import write_text
from stlens.measure.estimate import CLASSES
from stlens.measure.result import LayerResult, MeasureResult
from stlens.report import plots
from stlens.report.ablation import Ablation, ablation_view, load_ablation
from stlens.report.explain import Explain, explain_view, load_explain_run
from stlens.report.factors import factor_curves, factor_names, factor_rows
from stlens.report.fusion import fusion_table
from stlens.report.load import find_inputs, load_result
from stlens.report.perturb import (
    Perturb,
    cross_run_view,
    dataset_view,
    load_dataset_run,
    load_perturb_run,
    perturb_view,
)
from stlens.report.selectivity import Selectivity, load_selectivity_run, selectivity_view
from stlens.report.streams import group_items, order
from stlens.report.training import Training, load_training, metric_names, number, training_metrics

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("stlens")
TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class Run:
    """A loaded measure run: its folder, result, config.json and a short label."""

    path: Path
    result: MeasureResult
    config: dict[str, Any]
    label: str = ""


@dataclass
class Loaded:
    runs: list[Run] = field(default_factory=list)
    ablations: list[Ablation] = field(default_factory=list)
    selectivity: list[Selectivity] = field(default_factory=list)
    explains: list[Explain] = field(default_factory=list)
    perturbs: list[Perturb] = field(default_factory=list)
    datasets: list[Perturb] = field(default_factory=list)
    trainings: list[Training] = field(default_factory=list)
    tracks: list[Path] = field(default_factory=list)
    visuals: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def load_runs(paths: list[str | Path]) -> Loaded:
    """Find and load everything under ``paths``; a run that cannot be loaded is listed in ``skipped`` with why."""
    found = find_inputs(paths)
    loaded = Loaded(tracks=found.tracks, visuals=found.visuals, skipped=list(found.skipped))

    def measure_run(folder: Path) -> Run:
        result = load_result(folder)  # the run folder's one reader: result.json, units.csv, config.json
        return Run(folder, result, result.config)

    def dataset_run(folder: Path) -> Perturb:
        run = load_dataset_run(folder)  # the marker's checksums, then dataset.json
        run.label = f"dataset report: {run.doc['settings'].get('data')}"
        return run

    # each reader checks the run marker's checksums before its json (and csv); a failure skips the folder, saying why
    for folders, load, into in ((found.runs, measure_run, loaded.runs),
                                (found.ablations, load_ablation, loaded.ablations),
                                (found.selectivity, load_selectivity_run, loaded.selectivity),
                                (found.explains, load_explain_run, loaded.explains),
                                (found.perturbs, load_perturb_run, loaded.perturbs),
                                (found.datasets, dataset_run, loaded.datasets),
                                (found.trainings, load_training, loaded.trainings)):  # config.json, metrics.jsonl
        for folder in folders:
            try:
                into.append(load(folder))
            except StlensError as exc:
                loaded.skipped.append({"source": str(folder), "reason": str(exc)})
    for items, label_of in ((loaded.runs, _label), (loaded.ablations, _ablation_label),
                            (loaded.selectivity, lambda s: f"selectivity: {s.doc.get('model')} · {s.doc.get('data')}"),
                            (loaded.explains, lambda e: f"explain: {e.doc.get('method')} of {e.doc.get('model')} · "
                                                        f"{e.doc.get('data')}"),
                            (loaded.perturbs, _perturb_label)):
        _label_uniquely(items, label_of)
    return loaded


def _label_uniquely(items: list, label_of) -> None:
    """Each item's ``label``: ``label_of(item)``, followed by its path where two items would share it."""
    labels = [label_of(item) for item in items]
    for item, label in zip(items, labels, strict=True):
        item.label = label if labels.count(label) == 1 else f"{label} ({item.path})"


def _perturb_label(run: Perturb) -> str:
    settings = run.settings
    weights = settings.get("weights")
    model = str(weights) if weights and str(weights).startswith("bundled:") else str(settings.get("model"))
    return f"perturb: {model} · {settings.get('data')}"


def _ablation_label(ablation: Ablation) -> str:
    settings = ablation.settings
    weights = settings.get("weights")
    model = str(weights) if weights and str(weights).startswith("bundled:") else str(settings.get("model"))
    return f"ablation: {model} · {settings.get('data')}"


def _groups(runs: list[Run]) -> list[tuple[str, str]]:
    """(model, data) of each run: the comparison plot gives a model one colour and a data source one marker."""
    return [(_label(run).rsplit(" · ", 1)[0], str(run.result.meta.get("data"))) for run in runs]


def _label(run: Run) -> str:
    meta = run.result.meta
    weights = meta.get("weights")
    model = str(weights) if weights and str(weights).startswith("bundled:") else str(meta.get("model"))
    label = f"{model} · {meta.get('data')}"
    if meta.get("interrupted"):
        pairs = meta.get("pairs") or {}
        label += f" (interrupted after {int(pairs.get('dynamic') or 0) + int(pairs.get('static') or 0)} pairs)"
    return label


def command_line(config: dict[str, Any], run_dir: Path) -> list[str]:
    """The command(s) that produced a run, from its config.json (``measure`` arguments or the ``demo`` recipe)."""
    kind = config.get("command")
    if kind == "measure" and isinstance(config.get("arguments"), dict):
        words = ["stlens", "measure"]
        for key, value in config["arguments"].items():
            if key in ("command", "func", "quiet") or value is None or value is False:
                continue
            flag = "--" + key.replace("_", "-")
            words += [flag] if value is True else [flag, str(value)]
        return [shlex.join(words)]
    if kind == "demo":
        root = run_dir.parent.parent
        measure = ["stlens", "measure", "--model", str(config.get("model")), "--weights", str(config.get("weights")),
                   "--data", str(config.get("data")), "--pairs", str(config.get("pairs")), "--batch-size", "8",
                   "--bootstrap", "200", "--seed", "0", "--out", str(run_dir)]
        return [shlex.join(["stlens", "demo", "--out", str(root), "--pairs", str(config.get("pairs"))]),
                "the same measurement alone: " + shlex.join(measure)]
    return ["unknown (config.json names no command)"]


def layer_names(layers: str | Sequence[str] | None) -> list[str]:
    """``layers`` as a list of names: one name, ``L1,L2`` or a list; None or empty: none."""
    if layers is None:
        return []
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    return [name.strip() for name in items if name and name.strip()]


def choose_layer(result: MeasureResult, layer: str | Sequence[str] | None) -> tuple[LayerResult, str]:
    """The layer to compare at: the first of ``layer`` (one name, ``L1,L2`` or a list) that the run has, else the
    run's last layer (with a note)."""
    names = layer_names(layer)
    for name in names:
        try:
            return result[name], ""
        except KeyError:
            continue
    if names:
        which = f"layer {names[0]!r}" if len(names) == 1 else f"layer of {', '.join(map(repr, names))}"
        return result.layers[-1], f"no {which}; its last layer is shown"
    return result.layers[-1], ""


def top_channels(layer: LayerResult, count: int = 8) -> dict[str, list[dict[str, float]]]:
    """Per class (dynamic / static / joint), its ``count`` strongest channels: by r_dynamic, r_static, min of both."""
    keys = {"dynamic": lambda c: layer.r_dynamic[c], "static": lambda c: layer.r_static[c],
            "joint": lambda c: min(layer.r_dynamic[c], layer.r_static[c])}
    out = {}
    for cls, key in keys.items():
        members = sorted((c for c in range(layer.channels) if layer.classes[c] == cls), key=key, reverse=True)
        out[cls] = [{"channel": c, "r_dynamic": float(layer.r_dynamic[c]), "r_static": float(layer.r_static[c])}
                    for c in members[:count]]
    return out


def _ci(v: list[float] | None, digits: int = 1) -> str:
    return f"[{v[0]:.{digits}f}, {v[1]:.{digits}f}]" if v else "–"


def layer_rows(result: MeasureResult) -> list[dict[str, Any]]:
    """Rows of the per-layer table, formatted (in the run's order)."""
    return [{"layer": r.layer, "channels": r.channels, "dynamic": f"{r.percent['dynamic']:.1f}",
             "dynamic_ci": _ci(r.ci95.get("dynamic")), "static": f"{r.percent['static']:.1f}",
             "static_ci": _ci(r.ci95.get("static")), "residual": f"{r.percent['residual']:.1f}",
             "units": "/".join(str(r.units.get(k, 0)) for k in CLASSES), "bias": f"{r.bias:.2f}",
             "bias_ci": _ci(r.bias_ci95, 2)} for r in result.layers]


def unit_share_rows(result: MeasureResult) -> list[dict[str, Any]]:
    """Per layer, each unit class as a share of the layer's channels: count / C × 100 and its 95% bootstrap CI
    (the CI of the count / C × 100; "–" without bootstrap), formatted to 0.1."""
    rows = []
    for r in result.layers:
        c = max(r.channels, 1)
        ci = {k: r.units_ci95.get(k) for k in CLASSES}
        rows.append({"layer": r.layer, "channels": r.channels,
                     "shares": [{"cls": k, "percent": f"{100.0 * r.units.get(k, 0) / c:.1f}",
                                 "ci": _ci([100.0 * v / c for v in ci[k]] if ci[k] else None)} for k in CLASSES]})
    return rows


def _grouped_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows grouped by stream: ``[{"key", "label", "rows"}]``; one group with an empty label when the run's
    layers have no stream prefix."""
    return [{"key": g.key, "label": g.label, "rows": g.items} for g in group_items(rows, lambda r: r["layer"])]


def _visualize_command(run: Run, layer: str) -> str:
    meta = run.result.meta
    words = ["stlens", "visualize", "--model", str(meta.get("model"))]
    if meta.get("weights"):
        words += ["--weights", str(meta["weights"])]
    words += ["--layers", layer, "--target", "top-dynamic:8", "--from", str(run.path), "--out", str(run.path / "vis")]
    return shlex.join(words)


def _run_view(run: Run, layer: str | Sequence[str] | None) -> dict[str, Any]:
    result, config = run.result, run.config
    chosen, _ = choose_layer(result, layer)
    return {
        "label": run.label, "path": str(run.path), "groups": _grouped_rows(layer_rows(result)),
        "shares": _grouped_rows(unit_share_rows(result)), "fusion": fusion_table(result),
        "meta": {"model": None, "weights": None, "data": None, "stylizer": None, "flow": None, "threshold": None,
                 "bootstrap": None, "random_init": None} | result.meta | {"pairs": {"dynamic": None, "static": None}
                                                     | dict(result.meta.get("pairs") or {})},
        "bars": plots.figure_image(plots.grouped_layer_bars(result)),
        "factors": _factors_view(result),
        "classes": plots.figure_image(plots.grouped_unit_classes(result)),
        "scatter": plots.figure_image(plots.grouped_channel_scatter(result)),
        "scatter_note": "" if len(result.layers) <= plots.MAX_PANELS else
        f"{plots.MAX_PANELS} of {len(result.layers)} layers shown (evenly spaced); plots-only writes the same",
        "commands": command_line(config, run.path), "seed": result.meta.get("seed"),
        "versions": {"stlens": result.meta.get("stlens_version"), "torch": config.get("torch"),
                     "python": config.get("python")},
        "timing": result.timing, "skipped": result.meta.get("skipped") or [],
        "top_layer": chosen.layer, "top": top_channels(chosen), "visualize": _visualize_command(run, chosen.layer),
    }


def _factors_view(result: MeasureResult) -> dict[str, Any] | None:
    """A run's further factors (``--factors``): names, per-layer rows and curves; None for a default run."""
    names = factor_names(result)
    if not names:
        return None
    return {"names": [*names, "residual"], "rows": factor_rows(result),
            "img": plots.figure_image(factor_curves(result))}


def _pair_key(run: Run) -> tuple:
    meta = run.result.meta
    spec = run.config.get("input") or {}
    return (meta.get("data"), repr(sorted(spec.items())), meta.get("seed"), meta.get("stylizer"), meta.get("flow"),
            (meta.get("pairs") or {}).get("dynamic"))


def _examples(runs: list[Run], count: int) -> list[dict[str, Any]]:
    from stlens.report.media import pair_examples

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(_pair_key(run), []).append(run)
    views = []
    for members in groups.values():
        first = members[0]
        view = {"data": first.result.meta.get("data"), "stylizer": first.result.meta.get("stylizer"),
                "flow": first.result.meta.get("flow"), "runs": [m.label for m in members], "items": [], "note": ""}
        try:
            view["items"] = [{"factor": e.factor, "source": e.source, "captions": e.captions,
                              "uri": plots.data_uri(e.gif, "image/gif"), "width": e.width}
                             for e in pair_examples(first.result.meta, first.config, count)]
        except Exception as exc:  # noqa: BLE001 - any failure to remake the pairs only costs this section
            view["note"] = f"pairs not shown: {exc}"
        views.append(view)
    return views


def _track_table(table: pd.DataFrame) -> pd.DataFrame:
    """A track's rows with its layers in the stream-grouped order (unchanged when not grouped)."""
    names = order(list(dict.fromkeys(table["layer"])))
    return table.sort_values("layer", key=lambda col: col.map(names.index), kind="stable").reset_index(drop=True)


def _score_label(task: str) -> str:
    return "mIoU / mSR" if task == "segment" else "accuracy"


def _scores_view(task: str, frame: pd.DataFrame, source: str) -> dict[str, Any] | None:
    """The task metrics of a track: labels, per step values, the last step's values, the curves; None without any."""
    names = [(k, label) for k, label in metric_names(task) if k in frame]
    if not names or frame.empty:
        return None
    steps = [int(s) for s in frame["step"]]
    values = {k: [number(v) for v in frame[k]] for k, _ in names}
    last = [{"label": label, "value": "–" if values[k][-1] is None else f"{values[k][-1]:.3f}"} for k, label in names]
    img = plots.figure_image(plots.metric_curves([(label, steps, values[k]) for k, label in names],
                                                 ylabel=_score_label(task)))
    return {"task": task, "source": source, "last_step": steps[-1], "last": last, "img": img}


def _tracks(paths: list[Path]) -> list[dict[str, Any]]:
    from stlens.report.tracks import load_track, track_scores

    views = []
    for path in paths:
        try:
            table = _track_table(load_track(path))
            last = table[table["step"] == table["step"].max()]
            rows = [{"layer": r.layer, "dynamic": f"{r.dynamic:.1f}", "static": f"{r.static:.1f}"}
                    for r in last.itertuples()]
            views.append({"path": str(path), "img": plots.figure_image(plots.track_curves(table)), "note": "",
                          "steps": sorted(set(table["step"].tolist())), "last": rows,
                          "groups": _grouped_rows(rows), "scores": _scores_view(*track_scores(path, table))})
        except StlensError as exc:
            views.append({"path": str(path), "img": None, "note": str(exc), "steps": [], "last": [], "groups": [],
                          "scores": None})
    return views


def _training_view(run: Training) -> dict[str, Any]:
    """A training run's section: settings, per eval step the loss and task metrics, the last values, the curves."""
    config = run.config
    view = training_metrics(run)
    view["img"] = (plots.figure_image(plots.metric_curves(view["series"], view["loss"], ylabel=_score_label(run.task)))
                   if view["series"] or view["loss"] else None)
    settings = ("model", "weights", "data", "test_data_resolved", "steps", "batch_size", "lr", "seed", "eval_clips",
                "mask_threshold")
    view.update({"path": str(run.path), "task": run.task,
                 "settings": {k: config[k] for k in settings if config.get(k) is not None
                              and (k != "mask_threshold" or run.task == "segment")},
                 "status": run.marker.get("status") if run.marker else None, "unreadable": run.unreadable,
                 "label": f"training: {config.get('model')} · {config.get('data')}"})
    return view


def _visual_fields(info: dict[str, Any], shown: tuple[str, ...]) -> dict[str, Any]:
    """The numbers shown under a visualization; a ratio to the natural mean that is null (no natural clips, or a
    natural mean ≤ 0, where the ratio means nothing) shows as "–"."""
    fields = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in info.items() if k in shown and k != "target"}
    if info and "ratio_to_natural_mean" not in fields:
        fields["ratio_to_natural_mean"] = "–"
    return fields


def _visuals(paths: list[Path]) -> list[dict[str, Any]]:
    from stlens.report.media import visual_config, visual_items

    shown = ("target", "objective", "lambda_t", "objective_value", "ratio_to_natural_mean", "status", "seed", "layer",
             "channel", "class", "steps")
    settings = ("model", "weights", "layer", "steps", "param", "lr", "seed")
    views = []
    for path in paths:
        config = visual_config(path)
        items = [{"name": item.name, "note": item.note,
                  "gifs": [{"label": label, "uri": plots.data_uri(data, "image/gif") if data else None}
                           for label, data in item.gifs],
                  "fields": _visual_fields(item.info, shown)}
                 for item in visual_items(path)]
        views.append({"path": str(path), "items": items,
                      "config": {k: config[k] for k in settings if config.get(k) is not None}})
    return views


_SCRIPT = re.compile(r"<script\b[^>]*>(.*?)</script\s*>", re.S | re.I)


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def script_src(template: Path) -> str:
    """The CSP ``script-src`` of a report: the sha256 hash of each inline script of the (trusted) template, so that
    no other script runs even if some text escaped into markup. The scripts must be plain text (no Jinja)."""
    sources = []
    for body in _SCRIPT.findall(template.read_text(encoding="utf-8")):
        if "{{" in body or "{%" in body:
            raise RuntimeError(f"{template}: an inline <script> must not hold template code (its hash is fixed)")
        sources.append(_sha256_source(body))
    return " ".join(dict.fromkeys(sources)) or "'none'"


def check_scripts(html: str, allowed: str) -> None:
    """Every inline script of a rendered report must be one that the CSP allows (a guard for the template)."""
    for body in _SCRIPT.findall(html):
        if _sha256_source(body) not in allowed.split():
            raise RuntimeError("a <script> of the rendered report is not among the hashed template scripts")


def build_report(paths: list[str | Path], out: str | Path = "report.html", *,
                 layer: str | Sequence[str] | None = None, examples: int = 2, title: str = "stlens report") -> Path:
    """Write one self-contained HTML report for the measure runs, ablate runs, selectivity runs, perturb runs (and,
    with two or more joined to measure runs, their cross-run figure), tracks and visualization runs under
    ``paths``. ``layer``: the layer to compare models at, the first of these names (one, ``L1,L2`` or a list) that
    a run has (default: each run's last). Runs that cannot be read are listed as skipped
    with the reason; ``StlensError`` only when nothing is usable."""
    import jinja2
    import markupsafe

    loaded = load_runs(paths)
    if not (loaded.runs or loaded.ablations or loaded.selectivity or loaded.explains or loaded.perturbs
            or loaded.datasets or loaded.trainings or loaded.tracks or loaded.visuals):
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in loaded.skipped) or "no folders given"
        raise StlensError(f"nothing to report: {reasons}")
    runs = [_run_view(run, layer) for run in loaded.runs]
    anchors = {run.path: f"#run-{i}" for i, run in enumerate(loaded.runs, start=1)}
    ablations = [ablation_view(ablation, anchors) for ablation in loaded.ablations]
    comparison = None
    if loaded.runs:
        points, notes, table = [], [], []
        for run in loaded.runs:
            chosen, note = choose_layer(run.result, layer)
            points.append((run.label, chosen))
            if note:
                notes.append(f"{run.label}: {note}")
            table.append({"label": run.label, "layer": chosen.layer, "channels": chosen.channels,
                          "dynamic": f"{chosen.percent['dynamic']:.1f}", "dynamic_ci": _ci(chosen.ci95.get("dynamic")),
                          "static": f"{chosen.percent['static']:.1f}", "static_ci": _ci(chosen.ci95.get("static")),
                          "bias": f"{chosen.bias:.2f}", "pairs": (run.result.meta.get("pairs") or {}).get("dynamic"),
                          "random_init": run.result.meta.get("random_init") is True})
        comparison = {"layer": ", ".join(layer_names(layer)) or "the last measured layer of each run",
                      "rows": table, "notes": notes,
                      "img": plots.figure_image(plots.model_comparison(points, groups=_groups(loaded.runs)))}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["script_src"] = markupsafe.Markup(script_src(TEMPLATES / "report.html"))  # quotes, base64: no markup
    html = env.get_template("report.html").render(
        title=title, runs=runs, comparison=comparison, ablations=ablations,
        selectivity=[selectivity_view(run) for run in loaded.selectivity],
        explains=[explain_view(run) for run in loaded.explains],
        perturbs=[perturb_view(run) for run in loaded.perturbs], perturb_cross=cross_run_view(loaded.perturbs),
        datasets=[dataset_view(run) for run in loaded.datasets],
        trainings=[_training_view(t) for t in loaded.trainings], tracks=_tracks(loaded.tracks),
        examples=_examples(loaded.runs, examples) if examples > 0 else [], visuals=_visuals(loaded.visuals),
        skipped=loaded.skipped, classes=CLASSES, version=__version__, python=platform.python_version(),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        inputs=[str(p) for p in paths])
    check_scripts(html, env.globals["script_src"])
    path = write_text(out, html)
    return path


def write_plots(paths: list[str | Path], out: str | Path | None = None, *,
                layer: str | Sequence[str] | None = None) -> list[Path]:
    """PNG + SVG of every figure of the report: per run ``<out>/<run>/{layers,classes,channels}``, and
    ``comparison`` / ``track_<i>`` / ``training_<i>``; ``out`` None: a ``plots/`` folder inside each run (comparison
    in the first; a training run's as ``plots/training`` inside it)."""
    loaded = load_runs(paths)
    for item in loaded.skipped:
        log.warning("skipped %s: %s", item["source"], item["reason"])
    if not (loaded.runs or loaded.tracks or loaded.trainings):
        reasons = [f"{s['source']}: {s['reason']}" for s in loaded.skipped]
        reasons += [f"{a.path}: an ablate run; its figure is {a.path / 'ablation.png'}" for a in loaded.ablations]
        reasons += [f"{s.path}: a selectivity run; its figure is {s.path / 'selectivity.png'}"
                    for s in loaded.selectivity]
        reasons += [f"{e.path}: an explain run; its figures are its GIFs" for e in loaded.explains]
        reasons += [f"{r.path}: a perturb run; its figure is {r.path / 'perturb.png'}" for r in loaded.perturbs]
        reasons += [f"{r.path}: a dataset report; its figure is {r.path / 'dataset.png'}" for r in loaded.datasets]
        raise StlensError(f"no plots to make: {'; '.join(reasons) or 'no folders given'}")
    written: list[Path] = []
    names = [run.path.name for run in loaded.runs]
    for run in loaded.runs:
        if out is None:
            folder = run.path / "plots"
        else:
            parts = run.path.parts[-2:] if names.count(run.path.name) > 1 else run.path.parts[-1:]
            folder = Path(out) / "_".join(parts) if len(loaded.runs) > 1 else Path(out)
        written += plots.save_figure(plots.grouped_layer_bars(run.result), folder / "layers")
        written += plots.save_figure(plots.grouped_unit_classes(run.result), folder / "classes")
        if (curves := factor_curves(run.result)) is not None:
            written += plots.save_figure(curves, folder / "factors")
        written += plots.save_figure(plots.grouped_channel_scatter(run.result), folder / "channels")
    base = Path(out) if out is not None else (loaded.runs[0].path / "plots" if loaded.runs else None)
    if len(loaded.runs) > 1:
        points = [(run.label, choose_layer(run.result, layer)[0]) for run in loaded.runs]
        written += plots.save_figure(plots.model_comparison(points, groups=_groups(loaded.runs)),
                                     base / "comparison")
    from stlens.report.tracks import load_track

    for i, path in enumerate(loaded.tracks):
        try:
            table = load_track(path)
        except StlensError as exc:
            log.warning("%s", exc)
            continue
        written += plots.save_figure(plots.track_curves(_track_table(table)), (base or path) / f"track_{i}")
    for i, run in enumerate(loaded.trainings):
        view = training_metrics(run)
        if view["series"] or view["loss"]:
            stem = Path(out) / f"training_{i}" if out is not None else run.path / "plots" / "training"
            fig = plots.metric_curves(view["series"], view["loss"], ylabel=_score_label(run.task))
            written += plots.save_figure(fig, stem)
    return written


GENERATOR = '<meta name="generator" content="stlens'
"""What a report stlens wrote holds (how ``out`` is recognised as a file stlens may replace)."""


def report(runs: str | Path | Sequence[str | Path], out: str | Path | None = "report.html", *,
           layers: str | Sequence[str] | None = None, examples: int = 2, title: str = "stlens report",
           plots_only: bool = False) -> Path | list[Path]:
    """One self-contained HTML report (plots, pairs, tracks, unit gallery) of the runs under ``runs``.

    With ``plots_only``, its figures as PNG + SVG files instead.

    Args:
        runs: one folder or several — measure runs (nested ones are found, e.g. the demo root), ablate, track, train
            and visualize runs; runs that cannot be read are listed as skipped.
        out: the HTML file (None: ``report.html``), written atomically; an existing file is replaced only when stlens
            wrote it (a report), checked before any work. With ``plots_only``, the folder of the figures (None or the
            default ``report.html``: a ``plots/`` folder inside each run).
        layers: the layer to compare models at, one name or several (a list or ``L1,L2``): the first of them that a
            run has (default, and for a run that has none of them: its last layer).
        examples: example pairs per factor shown as GIFs (0: none).
        title: the page's title.
        plots_only: write the figures only.

    Returns:
        The HTML file, or with ``plots_only`` the files written.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = stlens.measure("stlens:c2d?classes=8&width=4", "synth:motion?n=16", frames=4, size=16, pairs=8,
        ...                    bootstrap=0, workers=0, progress=False, out=root + "/measure")
        >>> page = stlens.report(root + "/measure", root + "/report.html", examples=0)
        >>> page.name, page.read_text().startswith("<!DOCTYPE html>")
        ('report.html', True)
    """
    paths = [runs] if isinstance(runs, str | Path) else list(runs)
    if examples < 0:
        raise StlensError(f"`examples` must be ≥ 0 (0: none), got {examples}")
    if plots_only:
        folder = None if out is None or (isinstance(out, str) and out == "report.html") else out
        return write_plots(paths, folder, layer=layers)
    from stlens.runs import own_file

    out = "report.html" if out is None else out
    own_file(out, GENERATOR, "report")  # before any work
    return build_report(paths, out, layer=layers, examples=examples, title=title)
