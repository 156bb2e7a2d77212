"""Training runs (``stlens train`` output: config.json + metrics.jsonl, plain JSON; ``stlens.report`` and
``stlens.train`` are siblings and do not import each other) and the task metrics of training tracks.

What a run is scored by depends on its task (config.json ``task``; a run without one is a classifier unless its
lines hold mIoU): a classifier by top-1 accuracy (``test_acc``, ``train_acc``), a segmenter (``--task segment``) by
the MoCA scores ``test_miou``, ``test_msr`` and ``train_miou``, a video instance segmenter (``--task instances``) by
track AP over the evaluated clips (``test_ap``, ``test_ap50``, ``test_ap75``, ``train_ap``) beside the matched
tracks' mean IoU (``test_track_iou``). Each is shown under its own label.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stlens.errors import StlensError
from stlens.files import read_versioned
from stlens.runs import read_marker

__all__ = ["METRICS", "METRIC_COLUMNS", "RUNNING", "TRAIN_FILE", "Training", "load_training", "metric_names",
           "task_of", "training_metrics"]

TRAIN_FILE = "metrics.jsonl"
#: per task, the evaluation metrics (key in metrics.jsonl / checkpoint info / track rows, label shown)
METRICS = {"classify": (("test_acc", "test accuracy"), ("train_acc", "train accuracy")),
           "segment": (("test_miou", "test mIoU"), ("test_msr", "test mSR"), ("train_miou", "train mIoU")),
           "instances": (("test_ap", "test AP"), ("test_ap50", "test AP50"), ("test_ap75", "test AP75"),
                         ("test_track_iou", "test track IoU"), ("train_ap", "train AP"))}
#: per task, the running score of the training lines
RUNNING = {"classify": ("batch_acc", "batch accuracy"), "segment": ("batch_miou", "batch mIoU"),
           "instances": ("batch_track_iou", "batch track IoU")}
METRIC_COLUMNS = tuple(key for pairs in METRICS.values() for key, _ in pairs)
_SEGMENT_KEYS = {key for key, _ in METRICS["segment"]} | {RUNNING["segment"][0]}
_INSTANCE_KEYS = {key for key, _ in METRICS["instances"]} | {RUNNING["instances"][0]}


def task_of(config: dict[str, Any] | None, keys: set[str] | frozenset[str] = frozenset()) -> str:
    """The task of a run: config.json's ``task`` when known, else "segment" when ``keys`` hold a segmentation
    score, "instances" when they hold a track score, else "classify"."""
    task = (config or {}).get("task")
    if task in METRICS:
        return str(task)
    if keys & _SEGMENT_KEYS:
        return "segment"
    return "instances" if keys & _INSTANCE_KEYS else "classify"


def metric_names(task: str) -> tuple[tuple[str, str], ...]:
    """(key, label) of the evaluation metrics of ``task``."""
    return METRICS.get(task, METRICS["classify"])


def number(value: Any) -> float | None:
    """A finite float, or None (missing, null, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class Training:
    """A training run folder as the report reads it: config.json, the eval and train lines of metrics.jsonl, the
    task, the run marker (None when absent) and how many lines could not be read."""

    path: Path
    config: dict[str, Any]
    evals: list[dict[str, Any]] = field(default_factory=list)
    trains: list[dict[str, Any]] = field(default_factory=list)
    task: str = "classify"
    marker: dict[str, Any] | None = None
    unreadable: int = 0


def load_training(folder: str | Path) -> Training:
    """Read a ``stlens train`` folder; ``StlensError`` naming the file when config.json or metrics.jsonl is missing
    or unreadable, or metrics.jsonl holds no line yet. Lines that are not JSON objects (a line cut off by a crash)
    are counted and left out."""
    folder = Path(folder)
    try:
        marker = read_marker(folder)
    except StlensError:
        marker = None
    if marker is not None and marker.get("verb") != "train":
        raise StlensError(f"{folder}: its run marker names stlens {marker.get('verb')}, not train")
    for name in ("config.json", TRAIN_FILE):
        if not (folder / name).is_file():
            raise StlensError(f"{folder}: missing {name} (a stlens train run holds config.json and {TRAIN_FILE})")
    config = read_versioned(folder / "config.json", "stlens train config")
    try:
        text = (folder / TRAIN_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StlensError(f"{folder / TRAIN_FILE}: cannot read ({exc})") from exc
    run = Training(folder, config, marker=marker)
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or number(record.get("step")) is None:
            run.unreadable += 1
        elif record.get("kind") == "eval":
            run.evals.append(record)
        else:
            run.trains.append(record)
    if not run.evals and not run.trains:
        raise StlensError(f"{folder / TRAIN_FILE}: no metrics lines yet")
    run.task = task_of(config, {k for r in run.evals + run.trains for k in r})
    return run


def training_metrics(run: Training) -> dict[str, Any]:
    """The view of a run's scores: per eval line (step order) the loss and each metric of its task (formatted, "–"
    where missing), the last evaluated values, and the series for the figure."""
    names = metric_names(run.task)
    evals = sorted(run.evals, key=lambda r: r["step"])
    rows = [{"step": int(r["step"]), "loss": _fmt(number(r.get("loss"))),
             "values": [_fmt(number(r.get(key))) for key, _ in names]} for r in evals]
    last = next((r for r in reversed(evals) if any(number(r.get(k)) is not None for k, _ in names)), None)
    running_key, running_label = RUNNING.get(run.task, RUNNING["classify"])
    trains = sorted(run.trains, key=lambda r: r["step"])
    series = [(label, [r["step"] for r in evals], [number(r.get(key)) for r in evals]) for key, label in names]
    series.append((running_label, [r["step"] for r in trains], [number(r.get(running_key)) for r in trains]))
    return {"labels": [label for _, label in names], "rows": rows,
            "last_step": int(last["step"]) if last else None,
            "last": [{"label": label, "value": _fmt(number(last.get(key)))} for key, label in names] if last else [],
            "series": [s for s in series if any(v is not None for v in s[2])],
            "loss": ([r["step"] for r in trains], [number(r.get("loss")) for r in trains]) if trains else None}


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
