"""``stlens.ablate``: silence the channels a measure run ranks as dynamic, static or joint (or random controls) and
score the model on labelled clips, every condition on the same clips as the unmasked baseline.

Each batch of clips is decoded once (in ``workers`` DataLoader processes, or here) and held while every condition
runs one forward on it. ``mean`` mode needs each channel's mean over all clips before its first masked forward, so
with ``mean`` the run makes two passes: the baseline (and the ``zero`` conditions) first, the ``mean`` conditions
second; the batches of the first pass are held for the second while they fit in ``hold_bytes``, else decoded again
(the same clips: batch b draws from (seed, b)).

A VIS model on instance data (``synth:WORLD?task=instances``, ``ytvis:``) is scored by track AP
(``stlens.measure.scores.TrackAP``: ap, ap50, ap75, ar1, ar10), a statistic of the whole set of clips: each
condition's matches are gathered batch by batch, AP is computed over all clips (each a video), and its interval and
the drop's come from recomputing AP on bootstrap resamples of the videos (``_set_rows``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens.ablate.masking import MODES, ChannelMask, ChannelMeans, find_target, masking, probe_shapes
from stlens.ablate.metrics import Accuracy, Metric, Segmentation, TrackAP, bootstrap_indices, summarise
from stlens.ablate.result import BASELINE, AblationResult
from stlens.ablate.selection import Selection, Units, check_k, check_selections, plan
from stlens.core.device import exact_fp32, resolve_device, resolve_precision
from stlens.core.handle import ModelHandle
from stlens.core.workers import in_order, resolve_workers
from stlens.errors import StlensError
from stlens.measure.result import read_units, units_path
from stlens.measure.run import forward_or_explain, to_device
from stlens.measure.verb import at_input_spec, resolve_model
from stlens.video.labelled import LabelledBatches, LabelledClips, open_clips

log = logging.getLogger("stlens")

HOLD_BYTES = 4 << 30


@dataclass(frozen=True)
class Condition:
    """One masked evaluation: a selection in a mode."""

    selection: Selection
    mode: str


def read_measured_units(units: Any) -> tuple[dict[str, Units], str]:
    """The measured channels per layer from a measure run (folder, result.json, units.csv, or a ``MeasureResult``)
    and a description of where they came from."""
    if hasattr(units, "layers") and hasattr(units, "meta"):  # a MeasureResult
        return ({r.layer: Units(r.layer, np.asarray(r.r_dynamic, float), np.asarray(r.r_static, float),
                                tuple(r.classes)) for r in units.layers}, "a MeasureResult")
    path = units_path(units)
    rows = read_units(path)
    return ({layer: Units.from_rows(layer, [{"channel": c, "r_dynamic": rd, "r_static": rs, "class": k}
                                            for c, rd, rs, k in entries]) for layer, entries in rows.items()},
            str(path))


def _warn_if_evaluating_the_measured_clips(units: Any, data: Any) -> None:
    """A warning when ``data`` is the data spec the units were measured on: the ranking then comes from the clips it
    is tested on (docs/ablation.md recommends other clips, e.g. another seed of a synth world)."""
    import json

    measured_on = None
    if hasattr(units, "meta"):
        measured_on = units.meta.get("data")
    else:
        result = units_path(units).with_name("result.json")
        try:
            measured_on = json.loads(result.read_text(encoding="utf-8")).get("data")
        except (OSError, ValueError, AttributeError):
            return
    if isinstance(data, str) and measured_on == data:
        log.warning("ablate evaluates the clips the units were measured on (%s); rank on other clips, e.g. another "
                    "seed of a synth world (docs/ablation.md)", data)


def _names(value: str | Sequence | None) -> list | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _nbytes(inputs) -> int:
    return sum(x.numel() * x.element_size() for x in (inputs if isinstance(inputs, tuple) else (inputs,)))


def ablate(model: str | nn.Module | ModelHandle, data: str | LabelledClips, from_run: Any = None,
           layers: str | Sequence[str] | None = None,
           select: str | Sequence[str] = ("dynamic", "static", "random"),
           k: float | Sequence[float] = (10, 25, 50, 75, 90), *, mode: str | Sequence[str] = "zero", draws: int = 5,
           clips: int | None = None, batch_size: int = 16, seed: int = 0, bootstrap: int = 1000,
           weights: str | None = None, frames: int | None = None, size: int | None = None,
           device: str | torch.device | None = None, precision: str = "fp32",
           workers: int | None = 0, metric: Metric | None = None, mask_threshold: float = 0.5, iou: str = "mask",
           progress: bool = True,
           hold_bytes: int = HOLD_BYTES, meta: dict[str, Any] | None = None, out: str | Path | None = None,
           overwrite: bool = False, offline: bool | None = None, units: Any = None) -> AblationResult:
    """Mask the channels of ``layers`` that ``select`` picks at each K% and score the model against its baseline.

    The channels are ranked by the measure run ``from_run``; every condition is scored on the same labelled clips of
    ``data`` as the unmasked baseline. Metrics: top-1/top-5 accuracy by default; for segmentation data (synth
    task=segment, davis:, moca:) mIoU and mSR with ``mask_threshold`` and ``iou``; for instance data (synth
    task=instances, ytvis:) track AP with ``mask_threshold`` — intervals then over bootstrap resamples of the videos
    (``stlens.measure.scores``).

    Args:
        model: a spec (``stlens:i3d``; with ``weights``, ``frames``, ``size``), a module or a ``ModelHandle``.
        data: a data spec with labels (``synth:...``, an annotation file) or ``LabelledClips``.
        from_run: a measure run folder, its result.json or units.csv, or a ``MeasureResult``.
        layers: the layers to mask, one at a time (default: every layer of the measured units).
        select: names of ``stlens.ablate.selection.SELECTIONS`` (``dynamic``, ``static``, ``joint``, ``random``, ...).
        k: percentages of the layer's channels to mask, in (0, 100].
        mode: ``zero`` and/or ``mean`` (a masked channel set to its mean over the clips).
        draws: draws of each random selection.
        clips: the first N clips of ``data`` (default all).
        batch_size: clips per forward pass.
        seed: the seed of the clips' draws, the random selections and the bootstrap.
        bootstrap: replicates of the 95% intervals over clips.
        weights: the weights of a spec string (a file, ``bundled:NAME`` or a torchvision weights name).
        frames: frames per clip of a spec string (default: the model's).
        size: crop size of a spec string (default: the model's).
        device: ``auto``, ``cpu``, ``cuda[:K]``, ``mps`` (None: ``auto`` for a model built here, else where the module
            is).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        workers: processes that decode the clips (0: here; None: min(4, CPUs − 1)).
        metric: a ``stlens.measure.scores`` metric (default: the data's, as above).
        mask_threshold: the mask threshold of the segmentation and track scores.
        iou: ``mask`` or ``box`` (segmentation).
        progress: show a progress bar.
        hold_bytes: with ``mean`` mode, the memory that may hold the first pass's batches for the second (beyond it
            they are decoded again).
        meta: extra entries recorded in ``result.settings``.
        out: the run folder (ablation.json, ablation.csv, plots), claimed once the arguments are checked and before the
            model is built: refused when it holds a complete run unless ``overwrite``; written in full or not at all
            (``result.path``).
        overwrite: replace a complete ablate run in ``out``.
        offline: never download weights (True), allow downloads (False) or as the environment says (None).
        units: the deprecated spelling of ``from_run``.

    Returns:
        The ``AblationResult``: per condition the scores and drops with their 95% intervals.

    Examples:
        >>> import tempfile
        >>> run = tempfile.mkdtemp() + "/measure"
        >>> _ = stlens.measure("stlens:c2d?classes=8&width=4", "synth:motion?n=16", frames=4, size=16, pairs=8,
        ...                    bootstrap=0, workers=0, progress=False, out=run)
        >>> result = stlens.ablate("stlens:c2d?classes=8&width=4", "synth:motion?n=8&seed=1", from_run=run,
        ...                        layers="stage4", select="static,random", k=50, draws=1, bootstrap=0, frames=4,
        ...                        size=16, progress=False)
        >>> sorted({(row["layer"], row["select"]) for row in result.rows})
        [('stage4', 'none'), ('stage4', 'random'), ('stage4', 'static')]
    """
    from_run = _measure_run(from_run, units)
    del units
    if out is None:
        return _ablate(**_given(locals()))
    from stlens.ablate.result import FILES
    from stlens.runs import RunFolder

    _check_arguments(select, k, mode, batch_size, bootstrap, workers, mask_threshold, iou, from_run)
    folder = RunFolder(out, "ablate", overwrite=overwrite, outputs=FILES).claim()
    try:
        result = _ablate(**_given(locals()))
    except BaseException:
        folder.abandon()
        raise
    result.path = result.save(folder)
    return result


def _measure_run(from_run: Any, units: Any) -> Any:
    """``from_run``, or the deprecated ``units`` (a FutureWarning); one of them is required."""
    if units is not None:
        if from_run is not None:
            raise StlensError("give the measure run as `from_run` only (`units` is its deprecated spelling)")
        warnings.warn("ablate(units=...) is deprecated, use from_run=... (the measure run that ranks the channels)",
                      FutureWarning, stacklevel=3)
        return units
    if from_run is None:
        raise StlensError("`from_run` is required: the stlens measure run (folder, result.json, units.csv or a "
                          "MeasureResult) whose units rank the channels to mask")
    return from_run


def _given(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k not in ("out", "overwrite", "folder", "FILES", "RunFolder")}


def _check_arguments(select, k, mode, batch_size: int, bootstrap: int, workers: int | None, mask_threshold: float,
                     iou: str, units: Any) -> list[str]:
    """Every argument that needs no model or data, checked before any work; the modes, deduplicated."""
    check_selections(_names(select))
    check_k([k] if isinstance(k, (int, float)) else list(k))
    modes = _names(mode)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise StlensError(f"`mode` must be {' and/or '.join(MODES)}, got {','.join(modes) or 'nothing'}")
    if batch_size < 1:
        raise StlensError(f"`batch_size` must be ≥ 1 (clips per forward), got {batch_size}")
    if bootstrap < 0:
        raise StlensError(f"`bootstrap` must be ≥ 0, got {bootstrap}")
    resolve_workers(workers)
    Segmentation(mask_threshold, iou)
    if isinstance(units, str | Path):
        from stlens.measure.result import units_path

        units_path(units)
    return list(dict.fromkeys(modes))


def _ablate(model, data, from_run, layers, select, k, *, mode, draws, clips, batch_size, seed, bootstrap, weights,
            frames, size, device, precision, workers, metric, mask_threshold, iou, progress, hold_bytes, meta,
            offline) -> AblationResult:
    units = from_run
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    selects = check_selections(_names(select))
    ks = check_k([k] if isinstance(k, (int, float)) else list(k))
    modes = _check_arguments(select, k, mode, batch_size, bootstrap, workers, mask_threshold, iou, units)
    workers = resolve_workers(workers)
    measured, units_source = read_measured_units(units)
    _warn_if_evaluating_the_measured_clips(units, data)
    chosen_layers = _names(layers) or list(measured)
    missing = [layer for layer in chosen_layers if layer not in measured]
    if missing:
        raise StlensError(f"layer '{missing[0]}' is not in the units of {units_source}; measured layers: "
                          f"{', '.join(measured) or 'none'}")
    handle = resolve_model(model, weights=weights, frames=frames, size=size, device=device, offline=offline)
    target = handle.device if device is None else resolve_device(device)
    used = resolve_precision(precision, target)
    module = handle.module.eval().to(target)
    targets = [find_target(module, layer) for layer in chosen_layers]
    expected = {layer: measured[layer].channels for layer in chosen_layers}
    with exact_fp32(used == "fp32"):  # before the data: a layer without channels or another count fails fast
        shapes = probe_shapes(module, targets, to_device(_example(handle), target), handle.layout)
    _check_counts(shapes, expected, handle)
    selections = plan(measured, chosen_layers, selects, ks, draws, seed)
    for s in selections:
        if s.short:
            log.warning("layer '%s': %s at K=%g%% asks for %d channels but only %d are live; masking all live ones",
                        s.layer, s.select, s.k, s.asked, len(s.channels))
    conditions = [Condition(s, m) for m in modes for s in selections]
    labelled = (open_clips(at_input_spec(data, handle), handle.input, flow=handle.inputs == 2, task=None)
                if isinstance(data, str) else data)
    count = len(labelled) if clips is None else min(int(clips), len(labelled))
    if count < 1:
        raise StlensError(f"`clips` must be ≥ 1 and the data must hold clips, got {clips} of {len(labelled)}")
    if metric is None:
        task = getattr(labelled, "task", "classify")
        if task == "instances" and callable(getattr(labelled, "require_targets", None)):
            labelled.require_targets("ablation (track AP)")  # ytvis: official valid/test files have no annotations
        metric = (TrackAP(int(labelled.num_classes), mask_threshold) if task == "instances" else
                  Segmentation(mask_threshold, iou) if task == "segment" else Accuracy(int(labelled.num_classes)))
    batches = LabelledBatches(labelled, count, batch_size, seed)
    engine = _Engine(module, targets, handle, used, target, expected, metric, count)
    with exact_fp32(used == "fp32"):
        engine.run(batches, conditions, workers, progress, hold_bytes)
    settings = {
        "model": handle.spec, "weights": weights, "data": data if isinstance(data, str) else type(data).__name__,
        "units": units_source, "layers": chosen_layers, "select": selects, "k": ks, "modes": modes, "draws": draws,
        "clips": count, "batch_size": batch_size, "seed": seed, "bootstrap": bootstrap, "workers": workers,
        "device": str(target), "precision": used, "precision_asked": precision, "metrics": list(metric.names),
        "mask_threshold": getattr(metric, "threshold", None), "iou": getattr(metric, "iou", None),
        "intervals": "videos" if _is_set(metric) else "clips",
        "classes": int(getattr(labelled, "num_classes", 0)), "started": started, **(meta or {}),
    }
    from stlens._version import __version__

    settings["versions"] = {"stlens": __version__, "torch": torch.__version__}
    result = _result(engine, conditions, chosen_layers, modes, metric, bootstrap, seed, settings)
    result.timing = {"seconds": time.perf_counter() - clock, "forward_seconds": engine.forward_seconds,
                     "forwards": engine.forwards}
    return result


def _example(handle: ModelHandle):
    inputs = handle.example_inputs(1)
    return inputs if len(inputs) > 1 else inputs[0]


def _check_counts(shapes: dict[str, tuple[int, ...]], expected: dict[str, int], handle: ModelHandle) -> None:
    from stlens.ablate.masking import channel_axis

    for layer, shape in shapes.items():
        found = shape[channel_axis(shape, handle.layout(layer), layer)]
        if found != expected[layer]:
            raise StlensError(f"layer '{layer}' of {handle.spec} has {found} channels but the units of `from_run` list "
                              f"{expected[layer]}: they were measured on another model or layer set")


class _Engine:
    """Runs the forwards and keeps every clip's scores per condition."""

    def __init__(self, module: nn.Module, targets, handle: ModelHandle, precision: str, device: torch.device,
                 expected: dict[str, int], metric: Metric, count: int):
        self.module, self.targets, self.handle = module, {t.layer: t for t in targets}, handle
        self.precision, self.device, self.expected, self.metric = precision, device, expected, metric
        self.count = count
        self.scores: dict[Any, dict[str, np.ndarray]] = {}
        self.sets: dict[Any, Any] = {}  # a set metric's collector per condition (track AP)
        self.groups = np.zeros(count, dtype=np.int64)
        self.grouped = False
        self.means: ChannelMeans | None = None
        self.forward_seconds = 0.0
        self.forwards = 0

    def _forward(self, inputs) -> torch.Tensor:
        tick = time.perf_counter()
        out = forward_or_explain(self.handle, self.module, inputs, self.precision, "clips per forward")
        self.forward_seconds += time.perf_counter() - tick
        self.forwards += 1
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def _keep(self, key, start: int, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        if _is_set(self.metric):
            if key not in self.sets:
                self.sets[key] = self.metric.collector()
            self.sets[key].add(outputs, labels)
            return
        scores = self.metric.scores(outputs, labels)
        kept = self.scores.setdefault(key, {n: np.full(self.count, np.nan) for n in self.metric.names})
        for name, values in scores.items():
            kept[name][start:start + len(values)] = values

    def _masked(self, condition: Condition, inputs, start: int, labels: torch.Tensor) -> None:
        s = condition.selection
        means = self.means.means(s.layer) if condition.mode == "mean" else None
        mask = ChannelMask(self.targets[s.layer], s.channels, condition.mode, means)
        with masking(self.module, [mask], self.handle.layout, self.expected):
            self._keep(condition, start, self._forward(inputs), labels)

    def run(self, batches: LabelledBatches, conditions: list[Condition], workers: int, progress: bool,
            hold_bytes: int) -> None:
        from tqdm.auto import tqdm

        first = [c for c in conditions if c.mode == "zero"]
        second = [c for c in conditions if c.mode == "mean"]
        if second:
            self.means = ChannelMeans(self.module, list(self.targets.values()), self.handle.layout, self.expected)
        total = len(batches) * (1 + len(first)) + (len(batches) * len(second))
        held: list | None = [] if second else None
        held_bytes = 0
        with tqdm(total=total, desc="ablate", unit="forward", disable=not progress or None) as bar:
            start = 0
            for inputs, labels in in_order(batches, workers):
                inputs = to_device(inputs, self.device)
                groups = self.metric.groups(labels)
                self.grouped = groups is not None
                if groups is not None:
                    self.groups[start:start + len(labels)] = groups
                gather = self.means.gathering() if self.means is not None else contextlib.nullcontext()
                with gather:
                    self._keep(BASELINE, start, self._forward(inputs), labels)
                bar.update(1)
                for condition in first:
                    self._masked(condition, inputs, start, labels)
                    bar.update(1)
                if held is not None:
                    held_bytes += _nbytes(inputs)
                    if held_bytes <= hold_bytes:
                        held.append((inputs, labels))
                    else:
                        held = None
                        log.info("ablate: the clips exceed %d bytes; the mean-mode pass decodes them again",
                                 hold_bytes)
                start += len(labels)
            if not second:
                return
            again = held if held is not None else ((to_device(x, self.device), y)
                                                   for x, y in in_order(batches, workers))
            start = 0
            for inputs, labels in again:
                for condition in second:
                    self._masked(condition, inputs, start, labels)
                    bar.update(1)
                start += len(labels)


def _is_set(metric: Any) -> bool:
    """A metric of the whole set of clips (track AP), not a mean of per-clip scores."""
    return getattr(metric, "kind", None) == "set"


def _set_rows(engine: _Engine, conditions: list[Condition], layers: list[str], modes: list[str], metric: Metric,
              bootstrap: int, seed: int, settings: dict[str, Any]) -> AblationResult:
    """The result of a set metric (track AP). For each condition and the baseline, every number is computed over all
    clips (each a video), and on each of ``bootstrap`` resamples of the videos (``trackap.bootstrap_videos(clips,
    bootstrap, seed)``: the same resampled videos for every condition). A value's interval is the 2.5–97.5
    percentile of its resample values; the drop is baseline − masked over all videos, and its interval the
    percentiles of (baseline − masked) per resample, each AP computed on its own from its condition's matches: the
    drop is unpaired (no per-clip difference exists). Per class: each category's AP (per_class.csv)."""
    from stlens.measure.trackap import bootstrap_videos, interval

    names = list(metric.names)
    index = bootstrap_videos(engine.count, bootstrap, seed)
    scored = {}
    for key, collector in engine.sets.items():
        summary, per_class = collector.matches.score()
        replicates, _ = collector.matches.bootstrap(index)
        scored[key] = (summary, per_class, replicates)
    base, _, base_reps = scored[BASELINE]
    baseline = {}
    for name in names:
        low, high = interval(base_reps[name])
        baseline[name] = {"value": base[name], "low": low, "high": high}
    tracks = engine.sets[BASELINE].matches.tracks
    classes = int(settings.get("classes") or len(tracks))
    rows: list[dict[str, Any]] = []
    per_class: list[dict[str, Any]] = []

    def add(layer: str, select: str, k: float, draw: int, mode: str, masked: int, key: Any) -> None:
        summary, ap, replicates = scored[key]
        row: dict[str, Any] = {"layer": layer, "select": select, "k": k, "draw": draw, "mode": mode,
                               "masked": masked}
        for name in names:
            low, high = interval(replicates[name])
            drop_low, drop_high = interval(base_reps[name] - replicates[name])
            row.update({name: summary[name], f"{name}_low": low, f"{name}_high": high,
                        f"drop_{name}": base[name] - summary[name], f"drop_{name}_low": drop_low,
                        f"drop_{name}_high": drop_high})
        rows.append(row)
        for c in range(classes):
            per_class.append({"layer": layer, "select": select, "k": k, "draw": draw, "mode": mode, "class": c,
                              "tracks": int(tracks[c]), "ap": float(ap[c])})

    for mode in modes:
        for layer in layers:
            add(layer, BASELINE, 0.0, 0, mode, 0, BASELINE)
            for condition in conditions:
                s = condition.selection
                if condition.mode == mode and s.layer == layer:
                    add(layer, s.select, s.k, s.draw, mode, len(s.channels), condition)
    selections = [{"layer": c.selection.layer, "select": c.selection.select, "k": c.selection.k,
                   "draw": c.selection.draw, "channels": list(c.selection.channels), "asked": c.selection.asked,
                   "short": c.selection.short} for c in conditions if c.mode == modes[0]]
    return AblationResult(settings=settings, metrics=names, baseline=baseline, rows=rows, selections=selections,
                          per_class=per_class)


def _result(engine: _Engine, conditions: list[Condition], layers: list[str], modes: list[str], metric: Metric,
            bootstrap: int, seed: int, settings: dict[str, Any]) -> AblationResult:
    if _is_set(metric):
        return _set_rows(engine, conditions, layers, modes, metric, bootstrap, seed, settings)
    names = list(metric.names)
    index = bootstrap_indices(engine.count, bootstrap, seed) if bootstrap else np.zeros((0, engine.count), int)
    base = engine.scores[BASELINE]
    baseline = {}
    for name in names:
        summary = summarise(base[name], base[name], index)
        baseline[name] = {"value": summary["value"], "low": summary["low"], "high": summary["high"]}
    rows: list[dict[str, Any]] = []
    per_class: list[dict[str, Any]] = []
    groups = engine.groups
    classes = sorted(set(groups.tolist()))

    def add(layer: str, select: str, k: float, draw: int, mode: str, masked: int, scores: dict[str, np.ndarray]):
        row: dict[str, Any] = {"layer": layer, "select": select, "k": k, "draw": draw, "mode": mode,
                               "masked": masked}
        for name in names:
            s = summarise(scores[name], base[name], index)
            row.update({name: s["value"], f"{name}_low": s["low"], f"{name}_high": s["high"],
                        f"drop_{name}": s["drop"], f"drop_{name}_low": s["drop_low"],
                        f"drop_{name}_high": s["drop_high"]})
        rows.append(row)
        if engine.grouped and "top1" in names:
            for c in classes:
                picked = groups == c
                per_class.append({"layer": layer, "select": select, "k": k, "draw": draw, "mode": mode,
                                  "class": int(c), "clips": int(picked.sum()),
                                  "top1": float(scores["top1"][picked].mean())})

    for mode in modes:
        for layer in layers:
            add(layer, BASELINE, 0.0, 0, mode, 0, base)
            for condition in conditions:
                s = condition.selection
                if condition.mode == mode and s.layer == layer:
                    add(layer, s.select, s.k, s.draw, mode, len(s.channels), engine.scores[condition])
    selections = [{"layer": c.selection.layer, "select": c.selection.select, "k": c.selection.k,
                   "draw": c.selection.draw, "channels": list(c.selection.channels), "asked": c.selection.asked,
                   "short": c.selection.short} for c in conditions if c.mode == modes[0]]
    return AblationResult(settings=settings, metrics=names, baseline=baseline, rows=rows, selections=selections,
                          per_class=per_class)


def ablate_to_folder(out: str | Path, *args, overwrite: bool = False, **kwargs) -> tuple[AblationResult, Path]:
    """``ablate(..., out=out)`` (kept for callers of 0.1): the result and its folder."""
    result = ablate(*args, out=out, overwrite=overwrite, **kwargs)
    return result, result.path
