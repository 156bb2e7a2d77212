"""``stlens.selectivity``: class-specific and generic units (Feichtenhofer et al.'s claim 2), from one streamed pass
of the model over labelled clips (docs/selectivity.md)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stlens.core.arguments import checked_device, labelled_data, raise_first_failed, whole
from stlens.core.device import PRECISIONS
from stlens.core.handle import ModelHandle
from stlens.errors import StlensError
from stlens.runs import RunFolder
from stlens.selectivity import index as si
from stlens.selectivity.gallery import GALLERY, GALLERY_STEPS, gallery_entries
from stlens.selectivity.result import FILES, LayerSelectivity, SelectivityResult
from stlens.video.labelled import LabelledBatches, LabelledClips, class_names

log = logging.getLogger("stlens")



def selectivity(model: str | nn.Module | ModelHandle, data: str | Path | LabelledClips,
                layers: str | list[str] | None = "default", *, clips: int | None = None, batch_size: int = 16,
                frames: int | None = None, size: int | None = None, weights: str | None = None,
                device: str | torch.device | None = "auto", precision: str = "fp32", workers: int | None = 0,
                bootstrap: int = 200, seed: int = 0, top_k: int = 5, from_run: str | Path | None = None,
                out: str | Path | None = None, overwrite: bool = False, progress: bool = True,
                offline: bool | None = None, gallery: int = GALLERY, gallery_steps: int = GALLERY_STEPS
                ) -> SelectivityResult:
    """Class-specific and generic units of ``model``'s ``layers`` on ``data``'s labelled clips.

    One pass of the model over the clips (forward hooks, inference mode) keeps each channel's pooled response per
    clip (the spatiotemporal mean of its activation). Per channel: the mean response per class, the
    class-selectivity index of Morcos et al. 2018, SI = (m_max − m_rest)/(m_max + m_rest) over the class means m
    (lowered by their minimum when that is negative, so SI ∈ [0, 1]), its bootstrap 95% interval over clips, the top
    class, the classes served (mean ≥ 0.5 · the largest) and a kind: ``class-specific`` (interval's lower bound
    ≥ 0.5 and it responds to its top class), ``generic`` (upper bound < 0.5 and it responds — class mean ≥ 0.25 · the
    layer's median peak — to at least half the classes) or ``weak`` (the rest). ``stlens.selectivity.index`` holds
    the rules.

    Args:
        model: a spec string (``weights``, ``frames``, ``size`` apply), an ``nn.Module`` or a ``ModelHandle``.
        data: labelled clips (``synth:WORLD?...``, an annotation file with labels, ``classes:ROOT``) or a
            ``LabelledClips``.
        layers: ``default``, ``all`` or dotted ``named_modules`` paths.
        clips: the first N clips (None: all).
        batch_size: clips per forward pass.
        frames: frames per clip of a spec string (default: the model's).
        size: crop size of a spec string (default: the model's).
        weights: the weights of a spec string (a file, ``bundled:NAME`` or a torchvision weights name).
        device: ``auto``, ``cpu``, ``cuda[:K]``, ``mps`` (None: where the module is).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        workers: processes that decode the clips (0: here; None: min(4, CPUs − 1)).
        bootstrap: resamplings of the clips for the intervals (0: none; the bounds are then the index).
        seed: the seed of the bootstrap, the video clips and an untrained spec's weights.
        top_k: the clips kept per unit with its highest responses.
        from_run: a ``stlens measure`` run of the same model and layers whose units.csv (unit class, r_dynamic,
            r_static) is joined per unit.
        out: the run folder (selectivity.csv, selectivity.json, class_means.npz, selectivity.png, gallery/), claimed
            before any work and refused when it holds a complete run unless ``overwrite``; written only when
            complete.
        overwrite: replace a complete selectivity run in ``out``.
        progress: show a progress bar.
        offline: never download weights (True), allow downloads (False) or as the environment says (None).
        gallery: the units shown as GIFs (0: none), the most selective by the lower bound of their interval (then the
            index): each its top clips side by side and, last, the activation-maximization video of its channel
            (``stlens.visualize``); gallery/unit<k>.gif, listed in selectivity.json.
        gallery_steps: the optimization steps of each gallery unit's visualization.

    Returns:
        The ``SelectivityResult`` (it prints as a table per layer).

    Examples:
        >>> result = stlens.selectivity("stlens:c2d?classes=8&width=4", "synth:motion?n=8", "stage4", frames=4, size=16,
        ...                             bootstrap=0, gallery=0, progress=False)
        >>> [layer.layer for layer in result.layers]
        ['stage4']
    """
    target = _check(data=data, layers=layers, clips=clips, batch_size=batch_size, bootstrap=bootstrap, seed=seed,
                    top_k=top_k, workers=workers, device=device, precision=precision, from_run=from_run,
                    gallery=gallery, gallery_steps=gallery_steps)
    given = dict(weights=weights, frames=frames, size=size, clips=clips, batch_size=batch_size, bootstrap=bootstrap,
                 seed=seed, top_k=top_k, workers=workers, target=target, precision=precision, from_run=from_run,
                 progress=progress, offline=offline, gallery=gallery, gallery_steps=gallery_steps)
    if out is None:
        return _selectivity(model, data, layers, **given)
    folder = RunFolder(out, "selectivity", overwrite=overwrite, outputs=FILES).claim()
    try:
        result = _selectivity(model, data, layers, **given)
    except BaseException:
        folder.abandon()
        raise
    result.save(folder)
    return result


def _check(*, data, layers, clips, batch_size, bootstrap, seed, top_k, workers, device, precision,
           from_run, gallery, gallery_steps) -> torch.device | None:
    """Every argument that needs no model or data, checked before any work; the device (None: the module's)."""
    checks = [
        (labelled_data(data),
         f"`data` must be a labelled data spec (synth:..., an annotation file) or LabelledClips, got "
         f"{type(data).__name__}"),
        (layers is None or isinstance(layers, str) or (isinstance(layers, list | tuple) and layers
                                                       and all(isinstance(x, str) for x in layers)),
         f"`layers` must be default, all, L1,L2 or a list of layer names, got {layers!r}"),
        (clips is None or whole(clips, 1), f"`clips` must be ≥ 1 (None: all clips), got {clips!r}"),
        (whole(batch_size, 1), f"`batch_size` must be ≥ 1 (clips per forward), got {batch_size!r}"),
        (whole(bootstrap, 0), f"`bootstrap` must be ≥ 0 (0: no intervals), got {bootstrap!r}"),
        (whole(seed, 0), f"`seed` must be an integer ≥ 0, got {seed!r}"),
        (whole(top_k, 1), f"`top_k` must be ≥ 1 (clips kept per unit), got {top_k!r}"),
        (whole(gallery, 0), f"`gallery` must be ≥ 0 (units shown as GIFs; 0: none), got {gallery!r}"),
        (whole(gallery_steps, 1), f"`gallery_steps` must be ≥ 1 (visualization steps), got {gallery_steps!r}"),
        (workers is None or whole(workers, 0), f"`workers` must be an integer ≥ 0 (0: clips made here), got "
                                               f"{workers!r}"),
        (precision in PRECISIONS, f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}"),
        (from_run is None or Path(from_run).is_dir(), f"`from_run` {from_run}: no such folder (give a stlens "
                                                      f"measure run folder)"),
    ]
    raise_first_failed(checks)
    return checked_device(device, precision)


def _selectivity(model, data, layers, *, weights, frames, size, clips, batch_size, bootstrap, seed, top_k, workers,
                 target, precision, from_run, progress, offline, gallery, gallery_steps) -> SelectivityResult:
    from stlens._version import __version__
    from stlens.core.device import resolve_precision
    from stlens.core.workers import resolve_workers
    from stlens.measure.verb import resolve_model
    from stlens.models.inspect import random_init

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    workers = resolve_workers(workers)
    measured = _measure_run(from_run) if from_run is not None else None
    torch.manual_seed(seed)  # an untrained spec's weights follow the seed
    handle = resolve_model(model, weights=weights, frames=frames, size=size,
                           device=target if isinstance(model, str) else None, offline=offline)
    untrained = bool(random_init(handle))
    if untrained:
        log.warning("%s has random weights (no weights given): its units are those of an untrained network",
                    handle.spec)
    labelled, data_text = _labelled(data, handle)
    count = len(labelled) if clips is None else min(clips, len(labelled))
    if count < 1:
        raise StlensError(f"{data_text} holds no clips")
    from stlens.models.taps import resolve_layers

    names = resolve_layers(handle.module, handle.layers(layers))  # an unknown layer is named before anything else
    if measured is not None:
        _check_layers(measured, names, from_run)
    device_used = target if target is not None else handle.device
    used = resolve_precision(precision, device_used)
    responses, labels, forward_seconds = _pass(handle, labelled, names, layers, count, batch_size, seed, workers,
                                               device_used, used, progress, data_text)
    classes = _class_names(labelled, labels)
    found = []
    for name, values in responses.items():
        layer = _layer(name, values, labels, len(classes), bootstrap, seed, top_k)
        if measured is not None:
            _join(layer, measured, from_run)
        found.append(layer)
    clip_ids = _clip_ids(labelled, count)
    tick = time.perf_counter()
    entries = gallery_entries(handle, labelled, found, clip_ids, labels, gallery=gallery, steps=gallery_steps,
                              count=count, batch_size=batch_size, seed=seed, device=device_used, precision=used)
    gallery_seconds = time.perf_counter() - tick
    settings = {
        "weights": weights if weights is not None else handle.weights, "frames": handle.input.frames,
        "size": handle.input.size, "layers_asked": layers if isinstance(layers, str | None) else ",".join(layers),
        "clips_asked": clips, "batch_size": batch_size, "seed": seed, "bootstrap": bootstrap, "top_k": top_k,
        "workers": workers, "gallery": gallery, "gallery_steps": gallery_steps, "device": str(device_used),
        "precision": used, "precision_asked": precision,
        "from_run": None if from_run is None else str(from_run), "random_init": untrained, "started": started,
        "rules": {"served": si.SERVED, "responds": si.RESPONDS, "specific": si.SPECIFIC},
        "versions": {"stlens": __version__, "torch": torch.__version__},
    }
    return SelectivityResult(model=handle.spec, data=data_text, classes=classes, layers=found,
                             clip_ids=clip_ids, clip_labels=labels, settings=settings, gallery=entries,
                             timing={"seconds": time.perf_counter() - clock, "forward_seconds": forward_seconds,
                                     "forwards": -(-count // batch_size), "gallery_seconds": gallery_seconds})


def _labelled(data, handle: ModelHandle) -> tuple[LabelledClips, str]:
    """The labelled clips of ``data`` (a spec opened at the model's input spec) and how to name them."""
    from stlens.measure.verb import at_input_spec
    from stlens.video.labelled import open_clips

    if not isinstance(data, str | Path):
        clips, text = data, getattr(data, "spec", None) or type(data).__name__
    else:
        text = at_input_spec(str(data), handle)
        clips = open_clips(text, handle.input, flow=handle.inputs == 2, task=None)
    if getattr(clips, "task", "classify") != "classify":
        raise StlensError(f"`data` {text} gives {clips.task} targets, not class labels: selectivity needs labelled "
                          f"clips (a synth world without task=segment, an annotation file with labels)")
    return clips, str(text)


def _pass(handle: ModelHandle, labelled: LabelledClips, names: list[str], asked, count: int, batch_size: int,
          seed: int, workers: int, device: torch.device, precision: str, progress: bool, data_text: str
          ) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """One pass over the clips: each tapped layer's pooled responses (clips, C) in float64, the clips' labels and the
    seconds spent in forwards."""
    from tqdm.auto import tqdm

    from stlens.core.device import exact_fp32
    from stlens.core.workers import in_order
    from stlens.measure.run import forward_or_explain, to_device
    from stlens.models.taps import LayerTaps, asked_by_name

    module = handle.module
    was_training = module.training
    module.eval().to(device)
    batches = LabelledBatches(labelled, count, batch_size, seed)
    kept: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    forward_seconds = 0.0
    try:
        with (LayerTaps(module, names, layout=handle.layout) as taps, exact_fp32(precision == "fp32"),
              tqdm(total=len(batches), desc="selectivity", unit="batch", disable=not progress or None) as bar):
            for inputs, targets in in_order(batches, workers):
                if targets.ndim != 1:
                    raise StlensError(f"`data` {data_text} gives targets of shape {tuple(targets.shape)}, not one "
                                      f"class label per clip")
                taps.reset(batch=len(targets))
                tick = time.perf_counter()
                forward_or_explain(handle, module, to_device(inputs, device), precision, "clips per forward")
                forward_seconds += time.perf_counter() - tick
                for name, pooled in taps.checked(strict=asked_by_name(asked)).items():
                    kept.setdefault(name, []).append(pooled.cpu().numpy().astype(np.float64))
                labels.append(targets.cpu().numpy().astype(np.int64))
                bar.update(1)
    finally:
        module.train(was_training)
    return {name: np.concatenate(parts) for name, parts in kept.items()}, np.concatenate(labels), forward_seconds


def _layer(name: str, responses: np.ndarray, labels: np.ndarray, classes: int, bootstrap: int, seed: int,
           top_k: int) -> LayerSelectivity:
    """The index, bounds, kinds and summary of one layer from its per-clip responses."""
    means = si.class_means(responses, labels, classes)
    index = si.selectivity_index(means)
    low, high, replicates = si.bootstrap_bounds(responses, labels, classes, bootstrap, seed)
    if bootstrap < 1:
        low, high = index.copy(), index.copy()
    kinds = si.kinds(means, low, high)
    top = si.top_clips(responses, top_k)
    layer = LayerSelectivity(
        layer=name, index=index, low=low, high=high,
        top_class=np.nanargmax(np.nan_to_num(si.shifted(means), nan=-np.inf), axis=0),
        served=si.classes_served(means), kinds=kinds, means=means, top=top,
        top_responses=np.take_along_axis(responses, top, axis=0))
    ci = (np.nanpercentile(replicates, [2.5, 97.5]).tolist() if replicates.size else [float("nan")] * 2)
    layer.summary = {"mean_selectivity": float(np.nanmean(index)), "mean_selectivity_ci95": ci,
                     "counts": {k: kinds.count(k) for k in si.KINDS},
                     "shares": {k: kinds.count(k) / len(kinds) for k in si.KINDS},
                     "layer_reference": si.layer_reference(means)}
    return layer


def _measure_run(from_run: str | Path):
    from stlens.measure.result import load_result

    try:
        return load_result(from_run)
    except StlensError as exc:
        raise StlensError(f"`from_run`: {exc}") from None


def _check_layers(measured, names: list[str], from_run) -> None:
    have = [layer.layer for layer in measured.layers]
    missing = [name for name in names if not any(h == name or h.startswith((f"{name}.", f"{name}@")) for h in have)]
    if missing:
        raise StlensError(f"`from_run` {from_run} has no layer {', '.join(repr(m) for m in missing)} (it measured "
                          f"{', '.join(have)}): choose its layers with `layers` or measure these")


def _join(layer: LayerSelectivity, measured, from_run) -> None:
    """Attach the unit class, r_dynamic and r_static of the measure run to ``layer``, and the per-class means."""
    found = next((x for x in measured.layers if x.layer == layer.layer), None)
    if found is None:
        raise StlensError(f"`from_run` {from_run} has no layer {layer.layer!r}")
    if found.channels != layer.channels:
        raise StlensError(f"`from_run` {from_run}: layer {layer.layer!r} has {found.channels} channels there but "
                          f"{layer.channels} here (another model or weights?)")
    layer.unit_class = list(found.classes)
    layer.r_dynamic = np.asarray(found.r_dynamic, dtype=np.float64)
    layer.r_static = np.asarray(found.r_static, dtype=np.float64)
    by: dict[str, dict[str, float]] = {}
    for unit_class in dict.fromkeys(layer.unit_class):
        picked = np.array([c == unit_class for c in layer.unit_class])
        by[unit_class] = {"units": int(picked.sum()), "mean_selectivity": float(np.nanmean(layer.index[picked])),
                          "class_specific": float(np.mean([layer.kinds[i] == "class-specific"
                                                           for i in np.flatnonzero(picked)]))}
    layer.summary["by_unit_class"] = dict(sorted(by.items()))


def _class_names(labelled: LabelledClips, labels: np.ndarray) -> list[str]:
    """Names of classes 0 … K − 1 (K: the data's class count, at least the largest label + 1)."""
    count = max(int(getattr(labelled, "num_classes", 0)), int(labels.max()) + 1 if labels.size else 0)
    names = class_names(labelled)
    return [str(names[c]) if names is not None and c < len(names) else str(c) for c in range(count)]


def _clip_ids(labelled: LabelledClips, count: int) -> list[str]:
    """How each clip is named in the files: its video's file name, else its number."""
    videos = getattr(labelled, "videos", None)
    return [Path(str(videos[i])).name if videos is not None else str(i) for i in range(count)]
