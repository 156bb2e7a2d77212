"""``stlens perturb``: does the static bias a measurement finds show in behaviour? The model is scored on labelled
clips clean and under perturbations that remove motion or change appearance (``stlens.perturb.perturbations``),
every perturbation on the same clips: each batch is decoded once and every perturbation is applied to the decoded,
normalised batch before its forward.

Classifiers are scored by top-1 (and top-5 with more than 5 classes) accuracy, segmenters (task=segment data) by
per-clip mIoU and mean success rate (``stlens.measure.scores.Segmentation``) against target masks reordered with the
frames, chance being the best constant mask (``constant_chance``). Two-input (rgb, flow) models get the flow that goes
with the perturbed RGB (``stlens.perturb.perturbations.reflow``). Video instance segmenters (``stlens:vis`` on
task=instances data) are scored by track AP (``AP_METRICS``: ap, ap50; ``stlens.measure.trackap``) against instance
targets whose masks are reordered with the frames (``retrack``); AP has no per-clip score, so its intervals recompute
it on every bootstrap resample of the clips (``stats.set_replicates``), and chance is the AP of the union baseline
(``union_tracks``).

Under ``torchrun`` the batches are split in contiguous shares of whole batches (``core.distributed.shard``): batch b
is decoded from (seed, b) and every perturbation draws per clip (static-mix within the batch), so each clip is
scored on the input of one process; the per-clip arrays are gathered in rank order, every rank computes the same
result and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens.core import distributed
from stlens.core.device import exact_fp32, resolve_device, resolve_precision
from stlens.core.handle import ModelHandle
from stlens.core.instances import Instances, TrackPredictions
from stlens.core.workers import in_order, resolve_workers
from stlens.errors import StlensError
from stlens.measure.run import forward_or_explain, to_device
from stlens.measure.scores import Accuracy, Segmentation, TrackAP
from stlens.measure.trackap import TrackMatches
from stlens.measure.verb import at_input_spec, resolve_model
from stlens.perturb.perturbations import (
    CLEAN,
    DEFAULT,
    MIX_ALPHA,
    Context,
    Perturbation,
    check_data,
    parse_perturbations,
    reflow,
    retarget,
    retrack,
)
from stlens.perturb.result import FILES, PerturbResult
from stlens.perturb.stats import bootstrap_indices, rate, set_replicates, summarise, summarise_set
from stlens.video.labelled import LabelledBatches, LabelledClips, open_clips

#: the track-AP numbers of a perturb run on instance data (perturb.csv ``metric``), as ``stlens evaluate`` names them
AP_METRICS = ("ap", "ap50")


def perturb(model: str | nn.Module | ModelHandle, data: str | LabelledClips, *,
            perturbations: str | Sequence = DEFAULT, clips: int | None = None, batch_size: int = 16,
            bootstrap: int = 1000, seed: int = 0, weights: str | None = None, frames: int | None = None,
            size: int | None = None, device: str | torch.device | None = None, precision: str = "fp32",
            workers: int | None = 0, progress: bool = True, meta: dict[str, Any] | None = None,
            from_run: str | Path | None = None, out: str | Path | None = None, overwrite: bool = False,
            offline: bool | None = None) -> PerturbResult:
    """Score ``model`` on ``data``'s labelled clips clean and under each of ``perturbations``.

    Per perturbation: the score, the drop (clean − perturbed, paired over clips) and the retention (score − chance) /
    (clean − chance), each with a 95% bootstrap interval over clips (``bootstrap`` resamples, the same for all).
    Under ``torchrun`` each process scores a share of whole batches and every process returns the result of one
    process; rank 0 alone claims and writes ``out``; a failing rank stops the others.

    Args:
        model: a spec (``stlens:i3d``; with ``weights``, ``frames``, ``size``), a module or a ``ModelHandle`` of a
            classifier, segmenter or video instance segmenter, RGB or (rgb, flow).
        data: a labelled data spec (``synth:...``, with task=segment for a segmenter, task=instances for a VIS model,
            ``davis:``/``moca:``, ``ytvis:``, an annotation file, ``classes:ROOT``) or ``LabelledClips``.
        perturbations: ``"shuffle,freeze,..."`` or a sequence of built-in names (shuffle, freeze, reverse, stride,
            palette, fourier, npr, appearance-free, static-mix; opt-in: neural, background-only, object-only;
            docs/behaviour.md) and ``(name, fn)`` user perturbations, ``fn`` mapping a normalised clip (3, T, H, W) to
            one of the same shape.
        clips: the first N clips (default all).
        batch_size: clips per forward pass.
        bootstrap: resamples of the 95% intervals over clips.
        seed: the clips' draws, the shuffles, styles and static-mix donors, and the bootstrap.
        weights: the weights of a spec string (a file, ``bundled:NAME`` or a torchvision weights name).
        frames: frames per clip of a spec string (default: the model's).
        size: crop size of a spec string (default: the model's).
        device: ``auto``, ``cpu``, ``cuda[:K]``, ``mps`` (None: ``auto`` for a model built here, else where the module
            is).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        workers: processes that decode the clips (0: here; None: min(4, CPUs − 1)).
        progress: show a progress bar.
        meta: extra entries recorded in ``result.settings``.
        from_run: a ``stlens measure`` run of the same model (spec and weights): its per-layer dynamic and static %
            with their 95% intervals are joined as ``result.representation`` (perturb.json ``representation``).
        out: the run folder (perturb.csv, perturb.json, perturb.png), claimed once the arguments are checked and
            before the model is built: refused when it holds a complete run unless ``overwrite``; written in full or
            not at all (``result.path``).
        overwrite: replace a complete perturb run in ``out``.
        offline: never download weights (True), allow downloads (False) or as the environment says (None).

    Returns:
        The ``PerturbResult``: one row per perturbation and metric (it prints as a table).

    Examples:
        >>> result = stlens.perturb("stlens:c2d?classes=8&width=4", "synth:motion?n=8", perturbations="shuffle",
        ...                         frames=4, size=16, bootstrap=0, progress=False)
        >>> [row["perturbation"] for row in result.rows if row["metric"] == "top1"]
        ['clean', 'shuffle']
    """
    chosen = _check_arguments(perturbations, clips, batch_size, bootstrap, workers)
    measured = (_measure_run(from_run, model, weights), from_run) if from_run is not None else None
    world = distributed.launched()
    if device is not None:
        device = distributed.rank_device(str(device) if isinstance(device, torch.device) else device, world)
    from stlens.runs import RunFolder

    with distributed.joined(None if device is None else resolve_device(device)) as world:
        def claim() -> RunFolder:
            return RunFolder(out, "perturb", overwrite=overwrite, outputs=FILES).claim()

        folder = distributed.on_first_rank(world, claim) if out is not None else None
        group = distributed.Group(world) if world.distributed else None
        with distributed.failing_together(group, folder):
            result = _perturb(model, data, chosen, clips, batch_size, bootstrap, seed, weights, frames, size, device,
                              precision, workers, progress, meta, offline, measured, world, group)
    if folder is not None:
        result.save(folder)
    return result


def _check_arguments(perturbations, clips, batch_size: int, bootstrap: int, workers) -> list[Perturbation]:
    """Every argument that needs no model or data, checked before any work."""
    chosen = parse_perturbations(perturbations)
    if batch_size < 1:
        raise StlensError(f"`batch_size` must be ≥ 1 (clips per forward), got {batch_size}")
    if bootstrap < 0:
        raise StlensError(f"`bootstrap` must be ≥ 0, got {bootstrap}")
    if clips is not None and int(clips) < 2:
        raise StlensError(f"`clips` must be ≥ 2 (intervals over clips), got {clips}")
    resolve_workers(workers)
    return chosen


def _measure_run(from_run: str | Path, model, weights: str | None):
    """The ``stlens measure`` run ``from_run`` (read and checked), refused unless it measured ``model`` with
    ``weights`` as far as that is known before the model is built (a spec string, or a handle's spec)."""
    from stlens.measure.result import load_result

    try:
        measured = load_result(from_run)
    except StlensError as exc:
        raise StlensError(f"`from_run`: {exc}") from None
    spec = model if isinstance(model, str) else model.spec if isinstance(model, ModelHandle) else None
    if spec is not None:
        given = weights if weights is not None or not isinstance(model, ModelHandle) else model.weights
        _check_same_model(measured, from_run, spec, given)
    return measured


def _check_same_model(measured, from_run, spec: str, weights: str | None) -> None:
    want = (measured.meta.get("model"), measured.meta.get("weights"))
    if (spec, weights) != want:
        raise StlensError(f"`from_run` {from_run} measured model {want[0]} with weights {want[1]}, not {spec} with "
                          f"weights {weights}: join a measure run of the same model and weights")


def representation(measured, from_run: str | Path) -> dict[str, Any]:
    """The ``representation`` block of perturb.json: the measure run and, per measured layer (in its order), its
    dynamic and static % with their 95% intervals (result.json ``percent`` and ``ci95``; None without bootstrap)."""
    def ci(layer, factor: str) -> list[float] | None:
        value = layer.ci95.get(factor)
        return [float(value[0]), float(value[1])] if value else None

    meta = measured.meta
    return {"from_run": str(Path(from_run)), "run_id": measured.run_id, "model": meta.get("model"),
            "weights": meta.get("weights"), "data": meta.get("data"), "pairs": meta.get("pairs"),
            "layers": [{"layer": layer.layer, "channels": layer.channels,
                        "dynamic": float(layer.percent["dynamic"]), "dynamic_ci95": ci(layer, "dynamic"),
                        "static": float(layer.percent["static"]), "static_ci95": ci(layer, "static")}
                       for layer in measured.layers]}


def _perturb(model, data, chosen: list[Perturbation], clips, batch_size, bootstrap, seed, weights, frames, size,
             device, precision, workers, progress, meta, offline, measured: tuple | None = None,
             world: distributed.World | None = None, group: distributed.Group | None = None) -> PerturbResult:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    world = world or distributed.World()
    workers = resolve_workers(workers)
    if isinstance(model, str):
        torch.manual_seed(seed)  # an untrained model's weights follow the seed (the same on every rank)
    handle = resolve_model(model, weights=weights, frames=frames, size=size, device=device, offline=offline)
    if measured is not None:
        _check_same_model(*measured, handle.spec, handle.weights)
    if handle.inputs not in (1, 2):
        raise StlensError(f"`model` {handle.spec} takes {handle.inputs} inputs: perturb scores RGB or (rgb, flow) "
                          f"models")
    target = handle.device if device is None else resolve_device(device)
    used = resolve_precision(precision, target)
    module = handle.module.eval().to(target)
    labelled = (open_clips(at_input_spec(data, handle), handle.input, flow=handle.inputs == 2, task=None)
                if isinstance(data, str) else data)
    task = getattr(labelled, "task", "classify")
    if task not in ("classify", "segment", "instances"):
        raise StlensError(f"`data` gives {task} targets: perturb scores classifiers, segmenters and video instance "
                          f"segmenters")
    if task == "instances" and callable(getattr(labelled, "require_targets", None)):
        labelled.require_targets("perturb (track AP)")
    check_data(chosen, labelled, task, data)
    count = len(labelled) if clips is None else min(int(clips), len(labelled))
    if count < 2:
        raise StlensError(f"`data` must hold at least 2 clips, got {count}")
    metric: Accuracy | Segmentation | TrackAP = (Accuracy(int(labelled.num_classes)) if task == "classify" else
                                                 Segmentation() if task == "segment" else
                                                 TrackAP(int(labelled.num_classes)))
    names = [CLEAN] + [p.name for p in chosen]
    metric_names = AP_METRICS if task == "instances" else metric.names
    constants = {m: np.full((2, count), np.nan) for m in metric_names}  # segment: all-background, all-foreground
    scores = {n: {m: np.full(count, np.nan) for m in metric_names} for n in names}
    tracks = _Tracks(metric, names, count) if isinstance(metric, TrackAP) else None
    follows = {p.name: np.full(count, np.nan) for p in chosen if p.kind == "static-mix"}
    synthesis = {p.name: 0.0 for p in chosen}
    timing = {"forward_seconds": 0.0, "decode_seconds": 0.0, "forwards": 0}
    from tqdm.auto import tqdm

    batches = LabelledBatches(labelled, count, batch_size, seed)
    share = distributed.shard(len(batches), world)  # whole batches: every clip decoded and mixed as in one process
    own = range(min(count, share.start * batch_size), min(count, share.stop * batch_size))
    with exact_fp32(used == "fp32"), tqdm(total=len(share) * len(names), desc="perturb", unit="forward",
                                          disable=not progress or world.rank != 0 or None) as bar:
        start, tick = own.start, time.perf_counter()
        for inputs, labels in in_order(torch.utils.data.Subset(batches, share), workers):
            if group is not None:
                group.stop_if_failed()
            timing["decode_seconds"] += time.perf_counter() - tick
            inputs, flow = _split_inputs(inputs, handle.inputs)
            stop = start + len(labels)
            # static-mix on segmentation / instance data: every clip its own class (a still of another clip of
            # the batch)
            classes = labels.cpu().numpy() if task == "classify" else np.arange(start, stop)
            context = Context(np.arange(start, stop), classes, handle.input, seed, source=labelled,
                              masks=labels if task == "segment" else None, device=target)
            if task == "segment":
                _constant_scores(metric, labels, constants, start)
            if tracks is not None:
                tracks.chance.add([union_tracks(t, metric.classes) for t in labels], labels)

            def forward(batch: torch.Tensor) -> torch.Tensor:
                began = time.perf_counter()
                out = forward_or_explain(handle, module, to_device(batch, target), used, "clips per forward")
                timing["forward_seconds"] += time.perf_counter() - began
                timing["forwards"] += 1
                bar.update(1)
                return out[0] if isinstance(out, tuple | list) else out

            clean = forward(inputs if flow is None else (inputs, flow))
            if tracks is not None:
                tracks.add(CLEAN, clean, labels)
            else:
                for name, value in metric.scores(clean, labels).items():
                    scores[CLEAN][name][start:stop] = value
            for p in chosen:
                began = time.perf_counter()
                context.orders = None
                changed = p.apply(inputs.clone(), context)
                if flow is not None:
                    changed = (changed, reflow(p, flow, changed, context))
                targets = (retarget(labels, context) if task == "segment" else
                           retrack(labels, context) if task == "instances" else labels)
                synthesis[p.name] += time.perf_counter() - began
                outputs = forward(changed)
                unscored = np.zeros(len(labels), bool)
                if p.kind == "static-mix" and task != "classify":
                    unscored = context.donors < 0
                elif p.kind == "static-mix":
                    donors = context.donors
                    unscored = donors < 0
                    predicted = outputs.float().argmax(dim=1).cpu().numpy()
                    follows[p.name][start:stop] = np.where(unscored, np.nan, (predicted == donors).astype(float))
                if tracks is not None:
                    tracks.add(p.name, outputs, targets)
                    tracks.kept[p.name][start:stop] = ~unscored
                    continue
                for name, value in metric.scores(outputs, targets).items():
                    scores[p.name][name][start:stop] = np.where(unscored, np.nan, value)
            start, tick = stop, time.perf_counter()
    if group is not None:
        group.stop_if_failed()
        scores, follows, constants, synthesis = _gathered(group, own, scores, follows, constants, synthesis, timing)
        if tracks is not None:
            tracks.join(group.gather(tracks.share(own)))
    index = bootstrap_indices(count, bootstrap, seed) if bootstrap else np.zeros((0, count), int)
    kinds = {CLEAN: "clean"} | {p.name: p.kind for p in chosen}
    rows = []
    if tracks is not None:
        began = time.perf_counter()
        rows = tracks.rows(kinds, index)
        timing["bootstrap_seconds"] = time.perf_counter() - began
    else:
        chances = (dict(zip(metric.names, (k / metric.classes for k in metric.ks), strict=True))
                   if task == "classify" else constant_chance(constants))
        for name in names:
            for m in metric.names:
                chance = chances[m]
                s = summarise(scores[name][m], scores[CLEAN][m], chance, index)
                follow = rate(follows[name], index) if name in follows else (float("nan"),) * 3
                rows.append({"perturbation": name, "kind": kinds[name], "metric": m,
                             **{c: s[c] for c in ("score", "score_lo", "score_hi", "drop", "drop_lo", "drop_hi",
                                                  "retention", "retention_lo", "retention_hi")},
                             "chance": chance, "clips": s["clips"], "follow_rate": follow[0],
                             "follow_rate_lo": follow[1], "follow_rate_hi": follow[2], "note": s["note"]})
    from stlens._version import __version__

    settings = {
        "model": handle.spec, "weights": weights, "data": data if isinstance(data, str) else type(data).__name__,
        "perturbations": [{"name": p.name, "kind": p.kind} for p in chosen], "mix_alpha": MIX_ALPHA, "clips": count,
        "task": task, "classes": getattr(metric, "classes", None), "inputs": handle.inputs,
        **({"mask_threshold": metric.threshold} if isinstance(metric, TrackAP) else {}),
        "frames": handle.input.frames, "size": handle.input.size,
        "batch_size": batch_size, "seed": seed, "bootstrap": bootstrap, "workers": workers, "processes": world.size,
        "device": str(target),
        "precision": used, "precision_asked": precision, "started": started,
        "versions": {"stlens": __version__, "torch": torch.__version__}, **(meta or {}),
    }
    timing |= {"seconds": time.perf_counter() - clock, "synthesis_seconds": synthesis}
    joined = representation(*measured) if measured is not None else None
    return PerturbResult(settings=settings, metrics=list(metric_names), rows=rows, timing=timing,
                         representation=joined)


def _gathered(group: distributed.Group, own: range, scores: dict, follows: dict, constants: dict,
              synthesis: dict, timing: dict) -> tuple[dict, dict, dict, dict]:
    """Every rank's per-clip arrays (its clips ``own``, contiguous in rank order) joined on every rank, and the
    synthesis and forward times summed; the same result on every rank."""
    def part(arrays: dict) -> dict:
        return {k: v[..., own.start:own.stop] if isinstance(v, np.ndarray) else part(v) for k, v in arrays.items()}

    def joined(parts: list[dict]) -> dict:
        return {k: np.concatenate([p[k] for p in parts], axis=-1) if isinstance(v, np.ndarray)
                else joined([p[k] for p in parts]) for k, v in parts[0].items()}

    parts = group.gather((part(scores), part(follows), part(constants), synthesis,
                          {k: timing[k] for k in ("forward_seconds", "decode_seconds", "forwards")}))
    for key in ("forward_seconds", "decode_seconds", "forwards"):
        timing[key] = sum(p[4][key] for p in parts)
    return (joined([p[0] for p in parts]), joined([p[1] for p in parts]), joined([p[2] for p in parts]),
            {name: sum(p[3][name] for p in parts) for name in synthesis})


def _split_inputs(inputs, expected: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch's RGB and, for a two-input model, its encoded flow."""
    if isinstance(inputs, tuple) != (expected == 2):
        raise StlensError(f"`data` gives {'(rgb, flow)' if isinstance(inputs, tuple) else 'RGB'} inputs but the "
                          f"`model` takes {expected}")
    return inputs if isinstance(inputs, tuple) else (inputs, None)


def _constant_scores(metric: Segmentation, targets: torch.Tensor, constants: dict, start: int) -> None:
    """Store each clip's scores of an all-background (row 0) and an all-foreground (row 1) prediction."""
    for row, logit in enumerate((-1e4, 1e4)):
        for m, value in metric.scores(torch.full(targets.shape, logit), targets).items():
            constants[m][row, start:start + len(targets)] = value


def constant_chance(constants: dict[str, np.ndarray]) -> dict[str, float]:
    """Segmentation chance per metric: the mean over the clean clips of the better constant mask, all-background
    or all-foreground (the one with the higher mean)."""
    return {m: float(max(np.nanmean(rows[0]), np.nanmean(rows[1]))) for m, rows in constants.items()}


def union_tracks(target: Instances, classes: int) -> TrackPredictions:
    """The chance prediction of track AP (the union baseline of docs/vis.md): one track per class, each the union of
    all the clip's ground-truth masks in every frame (an oracle foreground, no instances, no classes), score 1."""
    union = target.masks.any(0) if len(target) else np.zeros(target.masks.shape[1:], bool)
    return TrackPredictions(np.repeat(union[None], classes, 0), np.arange(classes), np.ones(classes))


class _Tracks:
    """Track AP of a perturb run: per condition the matches of its clips (``TrackMatches``, added batch by batch;
    no masks kept), which clips it scored (``kept``: static-mix leaves out clips without a donor), and the matches
    of the union baseline on the clean targets (``chance``)."""

    def __init__(self, metric: TrackAP, names: list[str], count: int):
        self.metric = metric
        self.matches: dict[str, TrackMatches] = {}
        self.kept = {name: np.ones(count, bool) for name in names}
        self.chance = TrackMatches(metric.classes)

    def share(self, own: range) -> tuple:
        """What this process scored (its clips ``own``), to be gathered."""
        return self.matches, {n: k[own.start:own.stop] for n, k in self.kept.items()}, self.chance

    def join(self, shares: list[tuple]) -> None:
        """Every process's ``share``, in rank order (contiguous clips), joined as if one process scored them all."""
        matches: dict[str, TrackMatches] = {}
        for found, _kept, _chance in shares:
            for name, part in found.items():
                if name not in matches:
                    matches[name] = TrackMatches(part.num_classes)
                matches[name].extend(part)
        self.matches = matches
        self.kept = {n: np.concatenate([kept[n] for _found, kept, _chance in shares]) for n in self.kept}
        self.chance = TrackMatches(self.metric.classes)
        for _found, _kept, chance in shares:
            self.chance.extend(chance)

    def add(self, name: str, outputs, targets: list[Instances]) -> None:
        predictions = self.metric.tracks(outputs, targets)
        if name not in self.matches:
            self.matches[name] = TrackMatches(max(self.metric.classes, int(outputs["logits"].shape[-1]) - 1))
        self.matches[name].add(predictions, targets)

    def rows(self, kinds: dict[str, str], index: np.ndarray) -> list[dict[str, Any]]:
        """perturb.csv rows (``AP_METRICS`` per condition): AP over the kept clips and on every resample of
        ``index`` (the clean AP on the same clips and resamples: paired), chance the union baseline's AP."""
        chance = self.chance.score()[0]
        clean = self.matches[CLEAN]
        paired: dict[bytes, tuple[dict, dict]] = {}
        rows = []
        nan = float("nan")
        for name in kinds:
            matches, kept = self.matches[name], self.kept[name]
            videos = np.flatnonzero(kept)
            if kept.tobytes() not in paired:
                paired[kept.tobytes()] = (clean.score(videos)[0],
                                          set_replicates(lambda v: clean.score(v)[0], kept, index, AP_METRICS))
            base, base_r = paired[kept.tobytes()]
            point = matches.score(videos)[0]
            found = base_r if name == CLEAN else set_replicates(lambda v, m=matches: m.score(v)[0], kept, index,
                                                                AP_METRICS)
            for m in AP_METRICS:
                s = summarise_set(point[m], base[m], found[m], base_r[m], chance[m], len(videos))
                rows.append({"perturbation": name, "kind": kinds[name], "metric": m,
                             **{c: s[c] for c in ("score", "score_lo", "score_hi", "drop", "drop_lo", "drop_hi",
                                                  "retention", "retention_lo", "retention_hi")},
                             "chance": chance[m], "clips": s["clips"], "follow_rate": nan, "follow_rate_lo": nan,
                             "follow_rate_hi": nan, "note": s["note"]})
        return rows
