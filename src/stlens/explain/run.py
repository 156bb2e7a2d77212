"""``stlens.explain``: what a prediction looks at, in space and time — attribution maps of labelled clips, their
temporal curve, their share on the object and how they survive frame shuffling and restyling (docs/explain.md)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens.core.arguments import checked_device, labelled_data, raise_first_failed, whole
from stlens.core.device import PRECISIONS
from stlens.core.handle import ModelHandle
from stlens.errors import StlensError
from stlens.explain import measures as ms
from stlens.explain.errors import VIS_STEPS, class_videos, find_errors
from stlens.explain.maps import METHODS, attribute, captum_attr, forward_of
from stlens.explain.result import FILES, GIFS, ExplainResult
from stlens.runs import RunFolder
from stlens.video.labelled import LabelledClips, class_names

log = logging.getLogger("stlens")



def explain(model: str | nn.Module | ModelHandle, data: str | Path | LabelledClips, *, method: str = "gradcam",
            layer: str | None = None, target: str | int = "predicted", clips: int = 8, steps: int = 16,
            frames: int | None = None, size: int | None = None, weights: str | None = None, batch_size: int = 4,
            device: str | torch.device | None = "auto", precision: str = "fp32", seed: int = 0,
            out: str | Path | None = None, overwrite: bool = False, progress: bool = True,
            offline: bool | None = None, errors: int | None = None, error_steps: int = VIS_STEPS) -> ExplainResult:
    """Attribution maps of ``model``'s predictions on the first ``clips`` labelled clips of ``data`` (captum).

    Each map is non-negative and sums to 1. Per clip: the map's mass per frame, its share inside the object mask
    (synth worlds; else NaN), inside the cue box (synth worlds with ``shortcut=``; else no such column) and the
    Spearman correlation of the map with that of (a) the clip with its frames shuffled (the map's frames put back in
    order) and (b) the clip restyled by the palette stylizer: a map that survives shuffling follows static
    appearance, one that survives restyling follows motion.

    Args:
        model: a spec string (``weights``, ``frames``, ``size`` apply), an ``nn.Module`` or a ``ModelHandle``.
        data: labelled clips (a spec or a ``LabelledClips``).
        method: ``gradcam`` (LayerGradCam at ``layer``: the relu'd gradient-weighted channel sum, upsampled
            trilinearly to the clip), ``ig`` (integrated gradients from a zero input in ``steps`` steps),
            ``saliency`` (|gradient|) or ``grad_x_input`` (gradient × input); the input methods sum |attribution|
            over colour (or flow) channels and give one map per input of a two-input model.
        layer: Grad-CAM's layer (default: the model's last default layer).
        target: the class explained: ``predicted``, ``label`` or a class number.
        clips: the number of clips explained.
        steps: integrated gradients' steps.
        frames: frames per clip of a spec string (default: the model's).
        size: crop size of a spec string (default: the model's).
        weights: the weights of a spec string (a file, ``bundled:NAME`` or a torchvision weights name).
        batch_size: clips per attribution (integrated gradients: scaled inputs per forward).
        device: ``auto``, ``cpu``, ``cuda[:K]``, ``mps`` (None: where the module is).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        seed: the seed of the shuffles, styles, video clips and an untrained spec's weights.
        out: the run folder (explain.csv, explain.json, attributions.npz, explain_clip<i>.gif), claimed before any
            work and refused when it holds a complete run unless ``overwrite``; written only when complete.
        overwrite: replace a complete explain run in ``out``.
        progress: show a progress bar.
        offline: never download weights (True), allow downloads (False) or as the environment says (None).
        errors: explain only misclassified clips (prediction ≠ label), the first ``errors`` of ``data`` in order
            (``clips`` is then unused), each with the class visualizations (``stlens.visualize``, target ``class:K``;
            one per class, at most ``errors`` classes) of its predicted and true class: written as
            errors/error<k>.gif (clip | overlay | predicted | true) and listed in explain.json's ``errors``.
        error_steps: the optimization steps of those class visualizations.

    Returns:
        The ``ExplainResult``: per clip its maps, curve, shares and correlations.

    Examples:
        >>> result = stlens.explain("stlens:c2d?classes=8&width=4", "synth:motion?n=8", frames=4, size=16, clips=2,
        ...                         progress=False)
        >>> result.maps["rgb"].shape, round(float(result.maps["rgb"][0].sum()), 3)
        ((2, 4, 16, 16), 1.0)
    """
    device_used = _check(data=data, method=method, layer=layer, target=target, clips=clips, steps=steps,
                         batch_size=batch_size, seed=seed, device=device, precision=precision, errors=errors,
                         error_steps=error_steps)
    captum_attr()
    given = dict(method=method, layer=layer, target=target, clips=clips, steps=steps, frames=frames, size=size,
                 weights=weights, batch_size=batch_size, device=device_used, precision=precision, seed=seed,
                 progress=progress, offline=offline, errors=errors, error_steps=error_steps)
    if out is None:
        return _explain(model, data, **given)
    folder = RunFolder(out, "explain", overwrite=overwrite, outputs=FILES).claim()
    try:
        result = _explain(model, data, **given)
    except BaseException:
        folder.abandon()
        raise
    result.save(folder)
    return result


def _check(*, data, method, layer, target, clips, steps, batch_size, seed, device, precision, errors, error_steps
           ) -> torch.device | None:
    """Every argument that needs no model or data, checked before any work; the device (None: the module's)."""
    checks = [
        (labelled_data(data),
         f"`data` must be a labelled data spec (synth:..., an annotation file) or LabelledClips, got "
         f"{type(data).__name__}"),
        (method in METHODS, f"`method` must be one of {', '.join(METHODS)}, got {method!r}"),
        (layer is None or (isinstance(layer, str) and layer and "," not in layer),
         f"`layer` must be one layer name (dotted named_modules path), got {layer!r}"),
        (target in ("predicted", "label") or whole(target, 0),
         f"`target` must be predicted, label or a class number ≥ 0, got {target!r}"),
        (whole(clips, 1), f"`clips` must be ≥ 1, got {clips!r}"),
        (whole(steps, 1), f"`steps` must be ≥ 1 (integrated-gradients steps), got {steps!r}"),
        (whole(batch_size, 1), f"`batch_size` must be ≥ 1 (clips per attribution), got {batch_size!r}"),
        (whole(seed, 0), f"`seed` must be an integer ≥ 0, got {seed!r}"),
        (errors is None or whole(errors, 1), f"`errors` must be ≥ 1 (misclassified clips), got {errors!r}"),
        (whole(error_steps, 1), f"`error_steps` must be ≥ 1 (visualization steps), got {error_steps!r}"),
        (precision in PRECISIONS, f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}"),
    ]
    raise_first_failed(checks)
    if layer is not None and method != "gradcam":
        raise StlensError(f"`layer` is for method gradcam; {method} attributes at the input")
    return checked_device(device, precision)


def _explain(model, data, *, method, layer, target, clips, steps, frames, size, weights, batch_size, device,
             precision, seed, progress, offline, errors, error_steps) -> ExplainResult:
    from tqdm.auto import tqdm

    from stlens._version import __version__
    from stlens.core.device import resolve_precision
    from stlens.measure.run import to_device
    from stlens.measure.verb import resolve_model
    from stlens.models.inspect import random_init

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    torch.manual_seed(seed)
    handle = resolve_model(model, weights=weights, frames=frames, size=size,
                           device=device if isinstance(model, str) else None, offline=offline)
    if random_init(handle):
        log.warning("%s has random weights (no weights given): its maps are those of an untrained network",
                    handle.spec)
    labelled, data_text = _labelled(data, handle)
    if len(labelled) < 1:
        raise StlensError(f"{data_text} holds no clips")
    if method == "gradcam":
        layer = _layer(handle, layer)
    used_device = device if device is not None else handle.device
    used = resolve_precision(precision, used_device)
    module = handle.module
    was_training = module.training
    module.eval().to(used_device)
    forward = forward_of(module, used)
    parts: dict[str, list] = {}
    kept_frames: list[np.ndarray] = []
    order = np.arange(min(clips, len(labelled)))
    try:
        if errors is not None:
            order = find_errors(forward, labelled, errors, batch_size, seed, used_device)
        count = len(order)
        with tqdm(total=count, desc=f"explain ({method})", unit="clip", disable=not progress or None) as bar:
            for start in range(0, count, batch_size):
                indices = order[start:start + batch_size]
                inputs, labels = labelled.batch(indices, np.random.default_rng((seed, start)))
                inputs = to_device(inputs if isinstance(inputs, tuple) else (inputs,), used_device)
                found = _batch(forward, module, handle, inputs, labels, indices, target, method, layer, steps,
                               batch_size, seed, *_masks(labelled, indices))
                for key, value in found.items():
                    parts.setdefault(key, []).append(value)
                keep = len(indices) if errors is not None else max(0, GIFS - len(kept_frames))
                kept_frames += [ms.to_frames(x, handle.input) for x in inputs[0][:keep]]
                bar.update(len(indices))
    finally:
        module.train(was_training)
    if not parts:
        raise StlensError(f"`errors`: {handle.spec} misclassifies no clip of {data_text}: nothing to explain")
    joined = {key: np.concatenate(value) for key, value in parts.items()}
    maps = {"rgb": joined.pop("map_rgb")}
    found_errors = None
    if errors is not None:
        found_errors = _error_entries(handle, joined, _clip_ids(labelled, order), order, errors, error_steps,
                                      used_device, seed)
    if not np.isfinite(joined["cue_shares"]).any():
        joined["cue_shares"] = None  # the data has no cue boxes: no cue_share column
    if "map_flow" in joined:
        maps["flow"] = joined.pop("map_flow")
    settings = {"method": method, "layer": layer, "target": target, "steps": steps if method == "ig" else None,
                "weights": weights if weights is not None else handle.weights, "frames": handle.input.frames,
                "size": handle.input.size, "clips_asked": clips, "batch_size": batch_size, "seed": seed,
                "restyle": "palette", "device": str(used_device), "precision": used, "precision_asked": precision,
                "errors": errors, "error_steps": error_steps if errors is not None else None,
                "started": started, "versions": {"stlens": __version__, "torch": torch.__version__}}
    return ExplainResult(model=handle.spec, data=data_text, method=method, clip_ids=_clip_ids(labelled, order),
                         classes=class_names(labelled),
                         maps=maps, frames=kept_frames, settings=settings, errors=found_errors,
                         timing={"seconds": time.perf_counter() - clock, "clips_per_second":
                                 count / max(time.perf_counter() - clock, 1e-9)}, **joined)


def _layer(handle: ModelHandle, layer: str | None) -> str:
    """The Grad-CAM layer: ``layer`` checked, else the model's last default layer."""
    names = dict(handle.module.named_modules())
    if layer is None:
        defaults = list(handle.default_layers)
        if not defaults:
            raise StlensError(f"{handle.spec} has no default layers: give `layer`")
        layer = defaults[-1]
    if layer not in names or not layer:
        near = [n for n in names if n and n.split(".")[-1] == layer.split(".")[-1]][:5]
        raise StlensError(f"`layer` {layer!r} is not a layer of {handle.spec}"
                          + (f" (did you mean {', '.join(near)}?)" if near else " (stlens layers lists them)"))
    return layer


def _labelled(data, handle: ModelHandle) -> tuple[LabelledClips, str]:
    """The labelled clips of ``data`` (a spec opened at the model's input spec, class labels) and how to name them."""
    from stlens.measure.verb import at_input_spec
    from stlens.video.labelled import open_clips

    if not isinstance(data, str | Path):
        return data, str(getattr(data, "spec", None) or type(data).__name__)
    text = at_input_spec(str(data), handle)
    return open_clips(text, handle.input, flow=handle.inputs == 2, task="classify"), str(text)


def _clip_ids(labelled: LabelledClips, order: np.ndarray) -> list[str]:
    """How each clip is named in the files: its video's file name, else its number."""
    videos = getattr(labelled, "videos", None)
    return [Path(str(videos[int(i)])).name if videos is not None else str(int(i)) for i in order]


def _error_entries(handle: ModelHandle, joined: dict[str, np.ndarray], ids: list[str], order: np.ndarray,
                   errors: int, steps: int, device, seed: int) -> list[dict[str, Any]]:
    """Per error: its clip, label, prediction and the visualizations of both classes (at most ``errors`` classes,
    first come first served; a class past the cap has none)."""
    wanted: list[int] = []
    for pair in zip(joined["predicted"], joined["labels"], strict=True):
        wanted += [int(k) for k in pair if int(k) not in wanted]
    videos = class_videos(handle, wanted[:errors], steps, device if device is not None else handle.device, seed)
    return [{"clip": ids[k], "index": int(order[k]), "predicted": int(p), "label": int(y),
             "gif": f"errors/error{k}.gif", "videos": (videos.get(int(p)), videos.get(int(y)))}
            for k, (p, y) in enumerate(zip(joined["predicted"], joined["labels"], strict=True))]


def _masks(labelled: LabelledClips, indices: np.ndarray) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """The clips' object masks (T, H, W) where the data has them (synth worlds), and their cue boxes as (T, H, W)
    masks where it has those (synth ``shortcut=``), else None each."""
    from stlens.synth.shortcut import cue_mask

    dataset = getattr(labelled, "dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__"):
        return [None] * len(indices), [None] * len(indices)
    clips = [dataset[int(i)] for i in indices]
    masks = [getattr(clip, "masks", None) for clip in clips]
    cues = [None if m is None or "cue" not in (getattr(c, "meta", None) or {}) else
            cue_mask(c.meta["cue"]["box"], *m.shape) for c, m in zip(clips, masks, strict=True)]
    return masks, cues


def _batch(forward, module, handle, inputs, labels, indices, target, method, layer, steps, batch_size, seed,
           masks, cues) -> dict[str, np.ndarray]:
    """One batch of clips: maps, prediction, target, score and the per-clip numbers."""
    with torch.no_grad():
        logits = forward(*inputs).float()
    classes = logits.shape[1]
    labels = labels.to(logits.device).long()
    if labels.ndim != 1:
        raise StlensError(f"`data` gives targets of shape {tuple(labels.shape)}, not one class label per clip")
    predicted = logits.argmax(1)
    if target == "predicted":
        targets = predicted
    elif target == "label":
        targets = labels
    else:
        if target >= classes:
            raise StlensError(f"`target` {target} is not a class of the model ({classes} classes: 0–{classes - 1})")
        targets = torch.full_like(predicted, target)
    kw = dict(method=method, layer=layer, steps=steps, batch_size=batch_size)
    found = attribute(forward, module, inputs, targets, **kw)
    orders = [ms.shuffle_order(inputs[0].shape[2], np.random.default_rng((seed, int(i), 1))) for i in indices]
    shuffled = (torch.stack([x[:, torch.as_tensor(o, device=x.device)] for x, o in zip(inputs[0], orders,
                                                                                         strict=True)]),
                *(_shuffle_flow(x, orders) for x in inputs[1:]))
    restyled = (torch.stack([ms.restyled(x, handle.input, seed * 100003 + int(i)) for x, i in zip(inputs[0], indices,
                                                                                                    strict=True)]),
                *inputs[1:])
    after_shuffle = attribute(forward, module, shuffled, targets, **kw)[0]
    after_style = attribute(forward, module, restyled, targets, **kw)[0]
    rgb = found[0]
    probabilities = torch.softmax(logits, 1).gather(1, targets[:, None])[:, 0]
    out = {"map_rgb": rgb, "labels": labels.cpu().numpy(), "predicted": predicted.cpu().numpy(),
           "targets": targets.cpu().numpy(), "scores": logits.gather(1, targets[:, None])[:, 0].cpu().numpy(),
           "probabilities": probabilities.cpu().numpy(), "curves": np.stack([ms.temporal_curve(m) for m in rgb]),
           "mask_shares": np.array([ms.mask_share(m, k) for m, k in zip(rgb, masks, strict=True)]),
           "cue_shares": np.array([ms.mask_share(m, k) for m, k in zip(rgb, cues, strict=True)]),
           "spearman_shuffled": np.array([ms.spearman(m, ms.unshuffle(s, o))
                                          for m, s, o in zip(rgb, after_shuffle, orders, strict=True)]),
           "spearman_restyled": np.array([ms.spearman(m, s) for m, s in zip(rgb, after_style, strict=True)])}
    if len(found) > 1:
        out["map_flow"] = found[1]
    return out


def _shuffle_flow(flow: torch.Tensor, orders: list[np.ndarray]) -> torch.Tensor:
    """A flow input (B, 2, T − 1, H, W) with its frames in the order of the rgb frames that remain in range."""
    steps = flow.shape[2]
    return torch.stack([x[:, torch.as_tensor([int(v) for v in o if v < steps][:steps], device=x.device)]
                        for x, o in zip(flow, orders, strict=True)])
