"""``stlens.train.evaluate``: a model's task metric on labelled clips, with bootstrap 95% intervals over clips.

- classification: top-1 accuracy, and top-5 when the model gives ≥ 5 class scores; per-class top-1 (and top-5);
- segmentation: the MoCA scores of ``stlens.measure.scores.Segmentation`` (mIoU and mSR at ``mask_threshold``, IoU of
  masks or of boxes), as ``stlens train`` and ``stlens ablate`` compute them;
- video instance segmentation (a VIS model such as ``stlens:vis`` on instance data): YouTube-VIS track AP (ap, ap50,
  ap75, ar1, ar10; ``stlens.measure.scores.TrackAP``) and the AP of each category.

A classification or segmentation metric is the mean of its per-clip scores (clips without a score — a segmentation
clip with no annotated frame — left out), and its interval is the 2.5–97.5 percentile of that mean over
``bootstrap`` resamplings of the clips (``stlens.measure.scores.bootstrap_interval``: the same clip draws as
``stlens ablate``'s baseline). Track AP is computed over the whole set of clips (each clip a video); its interval
recomputes AP on ``bootstrap`` resamples of the videos (``stlens.measure.trackap.bootstrap_videos``, the numbers of
``track_ap_bootstrap``).

With ``out`` the run folder (verb ``evaluate``) holds ``evaluation.json`` (``format_version``, ``run_id``, the
numbers, the settings), ``evaluation.csv`` (``metric, value, ci_low, ci_high``) and, for track AP, ``per_class.csv``
(``class, name, tracks, ap, ap_low, ap_high``); ``load_evaluation`` reads it back. docs/evaluate.md.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens.core.arguments import checked_device, labelled_data, raise_first_failed, whole
from stlens.core.device import PRECISIONS
from stlens.core.handle import ModelHandle
from stlens.errors import StlensError
from stlens.files import json_safe, read_versioned, versioned
from stlens.measure.scores import IOU_KINDS, Accuracy, Segmentation, TrackAP, bootstrap_interval
from stlens.runs import RunFolder, check_files, claimed, read_marker
from stlens.video.labelled import LabelledBatches, LabelledClips

log = logging.getLogger("stlens")

TASK_CHOICES = ("auto", "classify", "segment", "instances")
FILES = ("evaluation.json", "evaluation.csv", "per_class.csv")
#: what to do about a damaged evaluation.json
RERUN = "rerun the evaluation (stlens evaluate) to write it again"
CSV_COLUMNS = ("metric", "value", "ci_low", "ci_high")
#: per_class.csv of a track-AP evaluation
CLASS_COLUMNS = ("class", "name", "tracks", "ap", "ap_low", "ap_high")


@dataclass(repr=False)
class EvaluateResult:
    """What ``evaluate`` found: ``metrics`` {name: value}, ``ci95`` {name: [low, high]} (NaN without bootstrap),
    ``per_class`` rows (classification: ``class``, ``clips``, ``top1``[, ``top5``][, ``name``]; instances:
    ``class``[, ``name``], ``tracks``, ``ap``, ``ap_low``, ``ap_high``), ``settings``,
    ``timing``; ``path``: the run folder once saved."""

    model: str
    data: str
    task: str
    clips: int
    metrics: dict[str, float]
    ci95: dict[str, list[float]]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    path: Path | None = None

    def table(self) -> str:
        """A terminal table: each metric with its 95% interval, then per-class top-1 (classification) or AP
        (instances)."""
        lines = [f"{self.model} on {self.data}", f"{self.task}, {self.clips} clips"]
        head = f"{'metric':<10}{'value':>8}  {'95% CI':<18}"
        lines += [head, "-" * len(head)]
        for name, value in self.metrics.items():
            low, high = self.ci95.get(name, [math.nan, math.nan])
            ci = "–" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"
            lines.append(f"{name:<10}{value:>8.3f}  {ci:<18}")
        if self.per_class:
            count, score = _class_fields(self.per_class)
            lines += ["", f"{'class':<16}{count:>6}{score:>8}"]
            for row in self.per_class:
                label = str(row["class"]) + (f" {row['name']}" if row.get("name") else "")
                lines.append(f"{label[:16]:<16}{row[count]:>6}{_float(row[score]):>8.3f}")
        return "\n".join(line.rstrip() for line in lines)

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(f"<tr><td>{e(name)}</td><td>{value:.3f}</td><td>{e(_ci_text(self.ci95.get(name)))}</td></tr>"
                       for name, value in self.metrics.items())
        parts = [f"<p><b>{e(self.model)}</b> on <code>{e(self.data)}</code>: {e(self.task)}, {self.clips} clips</p>",
                 f"<table><tr><th>metric</th><th>value</th><th>95% CI</th></tr>{rows}</table>"]
        if self.per_class:
            count, score = _class_fields(self.per_class)
            cells = "".join(f"<tr><td>{e(str(r['class']))}</td><td>{e(str(r.get('name') or ''))}</td>"
                            f"<td>{e(str(r[count]))}</td><td>{_float(r[score]):.3f}</td></tr>" for r in self.per_class)
            parts.append(f"<table><tr><th>class</th><th>name</th><th>{e(count)}</th><th>{e(score)}</th></tr>{cells}"
                         "</table>")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """evaluation.json: JSON values only (a missing number is null)."""
        return json_safe(versioned({"run_id": self.run_id, "model": self.model, "data": self.data, "task": self.task,
                                  "clips": self.clips, "metrics": dict(self.metrics),
                                  "ci95": {k: list(v) for k, v in self.ci95.items()},
                                  "per_class": list(self.per_class), "settings": self.settings,
                                  "timing": self.timing}))

    def csv_text(self) -> str:
        """evaluation.csv: one row per metric."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for name, value in self.metrics.items():
            low, high = self.ci95.get(name, [math.nan, math.nan])
            writer.writerow([name, *(_number(v) for v in (value, low, high))])
        return buffer.getvalue()

    def per_class_text(self) -> str:
        """per_class.csv of a track-AP evaluation: one row per category (the name empty where the data has none)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CLASS_COLUMNS)
        for row in self.per_class:
            writer.writerow([row["class"], row.get("name") or "", row["tracks"],
                             *(_number(_float(row[k])) for k in ("ap", "ap_low", "ap_high"))])
        return buffer.getvalue()

    def save(self, folder: str | Path | RunFolder, *, overwrite: bool = False) -> Path:
        """Write evaluation.json, evaluation.csv (and per_class.csv for track AP) into the run folder ``folder``: all
        or none; a folder holding a complete run is refused unless ``overwrite`` (docs/reliability.md)."""
        from stlens.files import write_json, write_text

        run = claimed(folder, "evaluate", overwrite=overwrite, outputs=FILES)
        with run:
            self.run_id = run.run_id
            write_json(run.staging / "evaluation.json", self.to_dict())
            write_text(run.staging / "evaluation.csv", self.csv_text())
            if self.task == "instances":
                write_text(run.staging / "per_class.csv", self.per_class_text())
            self.path = run.commit()
        return self.path


def evaluate(model: str | nn.Module | ModelHandle, data: str | Path | LabelledClips, *, weights: str | None = None,
             frames: int | None = None, size: int | None = None, clips: int | None = None, batch_size: int = 16,
             task: str = "auto", mask_threshold: float = 0.5, iou: str = "mask", bootstrap: int = 1000,
             seed: int = 0, workers: int | None = 0, device: str | torch.device | None = "auto",
             precision: str = "fp32", out: str | Path | None = None, overwrite: bool = False, progress: bool = True,
             offline: bool | None = None) -> EvaluateResult:
    """Score ``model`` on ``data``'s labelled clips, with bootstrap 95% intervals.

    Classifiers: top-1/top-5 accuracy (and per class); segmenters: mIoU/mSR; a VIS model on instance data: track AP,
    AP50, AP75, AR1, AR10 (and AP per category), with intervals over videos. With ``out``, the run folder is claimed
    before any work and written only when the evaluation is complete.

    Args:
        model: a spec string (``stlens:i3d?classes=8``), an ``nn.Module`` or a ``ModelHandle``.
        data: a labelled spec (``synth:WORLD?...`` — rendered at the model's input spec unless it names
            ``frames``/``size`` —, an annotation file with labels, ``classes:ROOT``, ``davis:ROOT``, ``moca:ROOT``,
            instance data: ``synth:WORLD?task=instances``, ``ytvis:ROOT``) or a ``LabelledClips``.
        weights: the weights of a spec string (a file, ``bundled:NAME`` or a torchvision weights name).
        frames: frames per clip of a spec string (default: the model's).
        size: crop size of a spec string (default: the model's).
        clips: the first N clips (None: all).
        batch_size: clips per forward pass.
        task: ``auto`` (the data's: segment for ``task=segment`` worlds and mask datasets, instances for instance
            data, else classify), ``classify``, ``segment`` or ``instances``.
        mask_threshold: the segmentation scores' and the predicted tracks' mask threshold.
        iou: ``mask`` or ``box`` (segmentation).
        bootstrap: resamplings for the intervals (0: none; of the videos for track AP).
        seed: the seed of the bootstrap, the video clips and an untrained spec's weights.
        workers: processes that decode the clips (0: here; None: min(4, CPUs − 1)).
        device: ``auto``, ``cpu``, ``cuda[:K]``, ``mps`` (None: where the module is).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        out: the run folder (evaluation.json, evaluation.csv; per_class.csv for track AP); a folder holding a complete
            run is refused unless ``overwrite``.
        overwrite: replace a complete evaluate run in ``out``.
        progress: show a progress bar.
        offline: never download weights (True), allow downloads (False) or as the environment says (None).

    Returns:
        An ``EvaluateResult``: the scores with their intervals (it prints as a table).

    Examples:
        >>> result = stlens.evaluate("stlens:c2d?classes=8&width=4", "synth:motion?n=8", frames=4, size=16,
        ...                          bootstrap=0, progress=False)
        >>> print(result)  # doctest: +ELLIPSIS
        stlens:c2d?classes=8&width=4 on synth:motion?n=8&frames=4&size=16
        classify, 8 clips
        ...
    """
    target = _check(data=data, clips=clips, batch_size=batch_size, task=task, mask_threshold=mask_threshold, iou=iou,
                    bootstrap=bootstrap, seed=seed, workers=workers, device=device, precision=precision)
    given = dict(weights=weights, frames=frames, size=size, clips=clips, batch_size=batch_size, task=task,
                 mask_threshold=mask_threshold, iou=iou, bootstrap=bootstrap, seed=seed, workers=workers,
                 device=device, target=target, precision=precision, progress=progress, offline=offline)
    if out is None:
        return _evaluate(model, data, **given)
    folder = RunFolder(out, "evaluate", overwrite=overwrite, outputs=FILES).claim()
    try:
        result = _evaluate(model, data, **given)
    except BaseException:
        folder.abandon()
        raise
    result.save(folder)
    return result


def _check(*, data, clips, batch_size, task, mask_threshold, iou, bootstrap, seed, workers, device,
           precision) -> torch.device | None:
    """Every argument that needs no model or data, checked before any work; the device to run on (None: the
    module's)."""
    checks = [
        (labelled_data(data),
         f"`data` must be a labelled data spec (synth:..., an annotation file, davis:, moca:) or LabelledClips, got "
         f"{type(data).__name__}"),
        (clips is None or whole(clips, 1), f"`clips` must be ≥ 1 (None: all clips), got {clips!r}"),
        (whole(batch_size, 1), f"`batch_size` must be ≥ 1 (clips per forward), got {batch_size!r}"),
        (task in TASK_CHOICES, f"`task` must be one of {', '.join(TASK_CHOICES)}, got {task!r}"),
        (isinstance(mask_threshold, int | float) and 0.0 < mask_threshold < 1.0,
         f"`mask_threshold` must be in (0, 1), got {mask_threshold!r}"),
        (iou in IOU_KINDS, f"`iou` must be one of {', '.join(IOU_KINDS)}, got {iou!r}"),
        (whole(bootstrap, 0), f"`bootstrap` must be ≥ 0 (0: no intervals), got {bootstrap!r}"),
        (whole(seed, 0), f"`seed` must be an integer ≥ 0, got {seed!r}"),
        (workers is None or whole(workers, 0), f"`workers` must be an integer ≥ 0 (0: clips made here), got "
                                               f"{workers!r}"),
        (precision in PRECISIONS, f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}"),
    ]
    raise_first_failed(checks)
    return checked_device(device, precision)


def _evaluate(model, data, *, weights, frames, size, clips, batch_size, task, mask_threshold, iou, bootstrap, seed,
              workers, device, target, precision, progress, offline) -> EvaluateResult:
    from tqdm.auto import tqdm

    from stlens._version import __version__
    from stlens.core.device import exact_fp32, resolve_precision
    from stlens.core.workers import in_order, resolve_workers
    from stlens.measure.run import forward_or_explain, to_device
    from stlens.measure.verb import at_input_spec, resolve_model
    from stlens.models.inspect import random_init

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    workers = resolve_workers(workers)
    torch.manual_seed(seed)  # an untrained spec's weights follow the seed
    handle = resolve_model(model, weights=weights, frames=frames, size=size,
                           device=target if isinstance(model, str) else None, offline=offline)
    untrained = bool(random_init(handle))
    if untrained:
        log.warning("%s has random weights (no weights given): its scores are those of an untrained network",
                    handle.spec)
    labelled, data_text = _labelled(data, handle, task, at_input_spec)
    data_task = getattr(labelled, "task", "classify")
    if task not in ("auto", data_task):
        raise StlensError(f"`task` is {task} but {data_text} gives {data_task} targets"
                          + (" (its clips carry masks)" if data_task == "segment" else
                             " (its clips carry instance tracks)" if data_task == "instances" else
                             ": add task=segment to a synth world, or use davis:ROOT / moca:ROOT"))
    instances = data_task == "instances"
    if instances and callable(getattr(labelled, "require_targets", None)):
        labelled.require_targets("evaluation (track AP)")  # ytvis: official valid/test files have no annotations
    count = len(labelled) if clips is None else min(clips, len(labelled))
    if count < 1:
        raise StlensError(f"{data_text} holds no clips")
    device_used = target if target is not None else handle.device
    used = resolve_precision(precision, device_used)
    module = handle.module
    was_training = module.training
    module.eval().to(device_used)
    batches = LabelledBatches(labelled, count, batch_size, seed)
    segmenting = data_task == "segment"
    metric: Accuracy | Segmentation | None = Segmentation(mask_threshold, iou) if segmenting else None
    tracks = TrackAP(int(labelled.num_classes), mask_threshold).collector() if instances else None
    kept: dict[str, np.ndarray] = {}
    labels = np.zeros(count, dtype=np.int64)
    forward_seconds, model_classes = 0.0, None
    try:
        with exact_fp32(used == "fp32"), tqdm(total=len(batches), desc="evaluate", unit="batch",
                                              disable=not progress or None) as bar:
            start = 0
            for inputs, targets in in_order(batches, workers):
                tick = time.perf_counter()
                outputs = forward_or_explain(handle, module, to_device(inputs, device_used), used,
                                             "clips per forward")
                forward_seconds += time.perf_counter() - tick
                if isinstance(outputs, tuple | list):
                    outputs = outputs[0]
                if tracks is not None:
                    tracks.add(outputs, targets)
                    start += len(targets)
                    bar.update(1)
                    continue
                if metric is None:
                    metric, model_classes = _accuracy(outputs, labelled, handle.spec, data_text)
                _check_outputs(outputs, targets, segmenting, handle.spec, data_text)
                for name, values in metric.scores(outputs, targets).items():
                    kept.setdefault(name, np.full(count, np.nan))[start:start + len(values)] = values
                if not segmenting:
                    labels[start:start + len(targets)] = targets.cpu().numpy()
                start += len(targets)
                bar.update(1)
    finally:
        module.train(was_training)
    if tracks is not None:
        found = tracks.evaluation(bootstrap, seed)
        metrics = {name: found[name] for name in TrackAP.names}
        ci95 = {name: found["ci95"][name] for name in TrackAP.names}
        per_class = _ap_per_class(found, labelled)
        model_classes = int(tracks.matches.num_classes)
    else:
        metrics = {name: _mean(values) for name, values in kept.items()}
        ci95 = {name: list(bootstrap_interval(values, bootstrap, seed)) for name, values in kept.items()}
        per_class = [] if segmenting else _per_class(kept, labels, labelled)
    settings = {
        "weights": weights if weights is not None else handle.weights, "frames": handle.input.frames,
        "size": handle.input.size, "clips_asked": clips, "batch_size": batch_size, "task_asked": task,
        "seed": seed, "bootstrap": bootstrap, "workers": workers, "device": str(device_used), "precision": used,
        "precision_asked": precision, "data_classes": int(getattr(labelled, "num_classes", 0)),
        "model_classes": model_classes, "random_init": untrained, "started": started,
        "unscored_clips": int(sum(np.isnan(v).sum() for v in kept.values()) // max(1, len(kept))),
        "versions": {"stlens": __version__, "torch": torch.__version__},
    }
    if segmenting:
        settings |= {"mask_threshold": float(mask_threshold), "iou": iou}
    if tracks is not None:
        settings |= {"mask_threshold": float(mask_threshold), "intervals": "bootstrap over videos",
                     "unscored_clips": 0, "counts": found["counts"]}
    return EvaluateResult(model=handle.spec, data=data_text, task=data_task, clips=count, metrics=metrics, ci95=ci95,
                          per_class=per_class, settings=settings,
                          timing={"seconds": time.perf_counter() - clock, "forward_seconds": forward_seconds,
                                  "forwards": len(batches)})


def _labelled(data, handle: ModelHandle, task: str, at_input_spec) -> tuple[LabelledClips, str]:
    """The labelled clips of ``data`` (a spec opened at the model's input spec) and how to name them."""
    from stlens.video.labelled import open_clips

    if not isinstance(data, str | Path):
        return data, getattr(data, "spec", None) or type(data).__name__
    spec = at_input_spec(str(data), handle)
    return open_clips(spec, handle.input, flow=handle.inputs == 2, task=None if task == "auto" else task), spec


def _accuracy(outputs: torch.Tensor, labelled: LabelledClips, model: str, data: str) -> tuple[Accuracy, int]:
    """The accuracy metric for a classifier's first outputs: top-5 too when it gives ≥ 5 class scores."""
    if outputs.ndim != 2:
        raise StlensError(f"{model} outputs {tuple(outputs.shape)}, not class scores (B, classes), but {data} is "
                          f"classification data: for a segmenter, evaluate on masks (a synth world with "
                          f"task=segment, davis:ROOT, moca:ROOT)")
    classes = int(outputs.shape[1])
    needed = int(getattr(labelled, "num_classes", 0))
    if classes < needed:
        raise StlensError(f"{model} gives {classes} class scores but {data} has {needed} classes (set classes= in "
                          f"the model spec)")
    return Accuracy(max(2, needed, classes), ks=(1, 5) if classes >= 5 else (1,)), classes


def _check_outputs(outputs: torch.Tensor, targets: torch.Tensor, segmenting: bool, model: str, data: str) -> None:
    if segmenting and (outputs.ndim != 4 or tuple(outputs.shape) != tuple(targets.shape)):
        raise StlensError(f"segmentation needs per-frame mask logits (B, T, H, W) shaped like the masks of {data} "
                          f"{tuple(targets.shape)}, but {model} outputs {tuple(outputs.shape)}: use a segmentation "
                          f"model (stlens:avos, stlens:seg3d)")


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _per_class(kept: dict[str, np.ndarray], labels: np.ndarray, labelled: LabelledClips) -> list[dict[str, Any]]:
    names = getattr(getattr(labelled, "dataset", None), "classes", None)
    rows = []
    for c in sorted(set(labels.tolist())):
        picked = labels == c
        row: dict[str, Any] = {"class": int(c), "clips": int(picked.sum())}
        if names is not None and c < len(names):
            row["name"] = str(names[c])
        row |= {name: float(values[picked].mean()) for name, values in kept.items()}
        rows.append(row)
    return rows


def _class_names(labelled: LabelledClips) -> tuple[str, ...] | None:
    """The data's class names by index (a ytvis file's categories, a synth world's classes), or None."""
    names = getattr(labelled, "class_names", None) or getattr(getattr(labelled, "dataset", None), "classes", None)
    return tuple(str(n) for n in names) if names else None


def _ap_per_class(found: dict[str, Any], labelled: LabelledClips) -> list[dict[str, Any]]:
    """One row per category of the data: its non-crowd tracks, AP and the AP's interval over videos."""
    names = _class_names(labelled)
    tracks = found["counts"]["tracks_per_class"]
    rows = []
    for c in range(int(labelled.num_classes)):
        row: dict[str, Any] = {"class": c}
        if names is not None and c < len(names):
            row["name"] = names[c]
        low, high = found["per_class_ci95"][c]
        rows.append(row | {"tracks": int(tracks[c]), "ap": float(found["per_class"][c]), "ap_low": low,
                           "ap_high": high})
    return rows


def _class_fields(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The count and the score a per-class table shows: (clips, top1), or (tracks, ap) for track AP."""
    return ("tracks", "ap") if "ap" in rows[0] else ("clips", "top1")


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def load_evaluation(path: str | Path) -> EvaluateResult:
    """An ``EvaluateResult`` from a run folder of ``evaluate`` (its marker's checksums checked) or an
    evaluation.json file."""
    path = Path(path)
    if path.is_dir():
        marker = read_marker(path)
        if marker is not None and marker.get("verb") != "evaluate":
            raise StlensError(f"{path} holds a stlens {marker.get('verb')} run, not an evaluation")
        file = path / "evaluation.json"
        if marker is not None and "evaluation.json" in marker.get("files", {}):
            check_files(path, marker, ["evaluation.json"])
    else:
        file = path
    if not file.is_file():
        raise StlensError(f"{file}: no such evaluation file")
    doc = read_versioned(file, "stlens evaluation.json", RERUN)
    try:
        return EvaluateResult(
            model=str(doc["model"]), data=str(doc["data"]), task=str(doc["task"]), clips=int(doc["clips"]),
            metrics={k: _nan(v) for k, v in doc["metrics"].items()},
            ci95={k: [_nan(v[0]), _nan(v[1])] for k, v in doc["ci95"].items()},
            per_class=list(doc.get("per_class") or []), settings=dict(doc.get("settings") or {}),
            timing=dict(doc.get("timing") or {}), run_id=doc.get("run_id"), path=path if path.is_dir() else None)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise StlensError(f"{file}: not a complete evaluation.json, damaged or truncated ({type(exc).__name__}: "
                          f"{exc}); {RERUN}") from None


def _ci_text(ci: list[float] | None) -> str:
    if not ci or math.isnan(ci[0]):
        return "–"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"




def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))
