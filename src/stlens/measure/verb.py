"""``stlens.measure``: the verb. It takes a model and data in any form (spec strings or objects), makes the pairs,
runs the measurement loop (``stlens.measure.run``) and, with ``out``, owns the run folder: claimed before any work,
staged, swapped in when complete, an interrupted result kept without replacing a complete one (docs/reliability.md).
The CLI's ``stlens measure`` only maps its options onto this function."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stlens.core import distributed
from stlens.core.handle import ModelHandle
from stlens.errors import StlensError
from stlens.measure import checkpoint as checkpoints
from stlens.measure.result import MeasureResult

FLOW_CHOICES = ("auto", "none", "tvl1", "dis", "farneback")
"""``flow``: two-stream (rgb, flow) pairs from this optical-flow method; ``auto``: ``tvl1`` for a model whose forward
takes two inputs (the ground-truth flow on ``synth:`` worlds), ``none`` otherwise."""

_log = logging.getLogger("stlens")


def measure(model: str | nn.Module | ModelHandle, data: Any, layers: str | list[str] | None = "default", *,
            pairs: int = 64, weights: str | None = None, frames: int | None = None, size: int | None = None,
            stylizer: str | None = None, flow: str = "auto", flow_cache: str | Path | None = None,
            batch_size: int = 4, workers: int | None = None, device: str | torch.device | None = None,
            precision: str = "fp32", bootstrap: int = 200, threshold: float = 0.5, seed: int = 0,
            save_latents: bool = False, out: str | Path | None = None, overwrite: bool = False,
            checkpoint_every_pairs: int = 0, resume: bool = False, progress: bool = True,
            offline: bool | None = None, min_pairs: int = 4, meta: dict[str, Any] | None = None,
            factors: str | list[str | tuple[str, Any]] | None = None, units: str = "video",
            stylize_on: str = "auto") -> MeasureResult:
    """Measure static and dynamic information in each layer (and channel) of ``model`` (Kowal et al.).

    Pairs of clips that share only motion (dynamic) or only appearance (static) go through the model; per layer, the
    correlation of each channel over the pairs of each factor gives the layer's dynamic, static and residual share
    and each unit's class. Further ``factors`` (``playback``, ``speed``, or your own) are measured the same way
    (docs/factors.md). With ``out``, the run folder is claimed before any work and replaced only once the new run is
    complete; an interrupt (SIGINT, SIGTERM) returns the partial result (``result.meta["interrupted"]``), saved into
    ``out`` when that holds no complete run, else beside it (``OUT.interrupted``). Under ``torchrun`` every process
    measures its share of the pairs; rank 0 writes ``out``.

    Args:
        model: a spec string (``torchvision:r3d_18``, ``stlens:i3d?classes=8``, ``hf:...``; docs/models.md), an
            ``nn.Module`` or a ``ModelHandle`` (``stlens.load_model``).
        data: a spec string (a folder or file of videos, an annotation file, ``sample:``, ``stylized:ROOT``,
            ``synth:WORLD?...``; a ``synth:`` world that names no ``frames``/``size`` renders at the model's input
            spec), a source (``stlens.open_data``) or an iterable of pairs (``stlens.make_pairs``, or ``Pair`` /
            ``(factor, a, b)`` items; then ``pairs``, ``stylizer`` and ``flow`` are unused).
        layers: ``default``, ``all`` or dotted ``named_modules`` paths (a list or ``L1,L2``).
        pairs: pairs per factor.
        weights: the weights of a spec string (a file, ``bundled:NAME`` or a torchvision weights name).
        frames: frames per clip of a spec string (default: the model's).
        size: crop size of a spec string (default: the model's).
        stylizer: the appearance change of the pairs (default: ``palette`` for videos, re-rendering on synth worlds).
        flow: ``auto``, ``none``, ``tvl1``, ``dis`` or ``farneback``: two-stream pairs; ``auto`` gives flow to a
            model whose forward takes two inputs.
        flow_cache: a folder that caches the optical flow (None: no cache).
        batch_size: pairs per forward pass.
        workers: processes that make the pairs (None: min(4, CPUs − 1); 0: the main process).
        device: ``auto``, ``cpu``, ``cuda[:K]``, ``mps``; None: ``auto`` for a model built here, else where the module
            is.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        bootstrap: Poisson bootstrap replicates for the 95% CIs (0: none).
        threshold: the per-channel class threshold τ.
        seed: the seed of the pairs and the bootstrap (and an untrained spec's weights).
        save_latents: keep the per-pair latents (``result.latents``; latents.npz in ``out``).
        out: the run folder (result.json, layers.csv, units.csv, config.json; latents.npz with ``save_latents``); a
            folder holding a complete run is refused unless ``overwrite``.
        overwrite: replace a complete measure run in ``out`` (once the new one is complete).
        checkpoint_every_pairs: with ``out``, checkpoint into ``out/.stlens-checkpoint`` every N pairs (per process)
            and when interrupted (0: never).
        resume: continue from that checkpoint.
        progress: show a progress bar.
        offline: never download weights (True), allow downloads (False) or as the environment says (None).
        min_pairs: the fewest pairs per factor accepted.
        meta: extra entries recorded in ``result.meta``.
        factors: ``dynamic,static`` (default) plus further factors (``playback``, ``speed`` on a ``synth:`` world, or
            ``(name, make_pair)``: ``make_pair(i, rng)`` returns pair i as ``(a, b)`` or a ``Pair``; a string or a
            list): each gets its score, dims, percent and CI per layer and r_<factor> per unit; the classes stay
            those of dynamic and static, and a further factor changes the others' dims (the softmax runs over all).
        units: what one sample is. ``video``: each layer's output pooled per video (a VIS decoder layer: the mean
            over its queries). ``instance``: a query-based VIS model (``stlens:vis``) on an instance source
            (``synth:<world>?task=instances``): every ground-truth track present in both videos of a pair is one
            sample, the matched query's embedding at the query layers (docs/vis.md).
        stylize_on: where the ``palette``/``fourier`` styling and the frame shuffling of video pairs run: ``workers``
            (numpy, beside the decoding), ``device`` (batched torch operations where the model runs; the workers only
            decode and crop) or ``auto`` (``device`` on a CUDA device when the pairs allow it, else ``workers``: on
            the CPU the result is bit for bit that of the workers); the two agree within float rounding
            (docs/scaling.md).

    Returns:
        The ``MeasureResult``: one ``LayerResult`` per latent (it prints as the per-layer table).

    Examples:
        >>> result = stlens.measure("stlens:c2d?classes=8&width=4", "synth:motion?n=16", frames=4, size=16, pairs=8,
        ...                         bootstrap=0, workers=0, progress=False)
        >>> [layer.layer for layer in result.layers]
        ['stem', 'stage1', 'stage2', 'stage3', 'stage4']
        >>> sorted(result.layers[-1].percent)
        ['dynamic', 'residual', 'static']
    """
    arguments = _arguments(locals())
    if isinstance(data, int) or (isinstance(pairs, Iterable) and not isinstance(pairs, str)):
        raise StlensError("`pairs` is the number of pairs per factor; pass the pairs themselves as `data` "
                          "(stlens.measure(model, pairs_iterable))")
    _check(pairs=pairs, batch_size=batch_size, threshold=threshold, checkpoint_every_pairs=checkpoint_every_pairs,
           flow=flow, bootstrap=bootstrap, units=units)
    if stylize_on not in ("auto", "device", "workers"):
        raise StlensError(f"`stylize_on` must be one of auto, device, workers, got {stylize_on!r}")
    from stlens.pairs.factors import parse_factors, user_factors

    names, users = parse_factors(factors), user_factors(factors)
    if units == "instance" and len(names) > 2:
        raise StlensError("`units` instance measures the factors dynamic,static only (further factors' pairs carry "
                          "no instance targets): leave out `factors`")
    if resume and out is None:
        raise StlensError("`resume` continues the checkpoint in `out`: give `out`")
    from stlens.core.device import resolve_device, resolve_precision
    from stlens.core.workers import resolve_workers

    world = distributed.launched()
    built_here = isinstance(model, str)
    if device is None and built_here:
        device = arguments["device"] = "auto"
    if device is not None:
        device = distributed.rank_device(str(device) if isinstance(device, torch.device) else device, world)
        resolve_precision(precision, resolve_device(device))  # checked before any work
    workers = resolve_workers(workers)
    with distributed.joined(None if device is None else resolve_device(device)) as world:
        folder = distributed.on_first_rank(world, lambda: _claim(out, overwrite, resume)) if out else None
        try:
            result = _measure_here(model, data, layers, world, pairs=pairs, weights=weights, frames=frames, size=size,
                                   stylizer=stylizer, flow=flow, flow_cache=flow_cache, batch_size=batch_size,
                                   workers=workers, device=device, precision=precision, bootstrap=bootstrap,
                                   threshold=threshold, seed=seed, save_latents=save_latents, progress=progress,
                                   checkpoint=None if out is None or not (checkpoint_every_pairs or resume)
                                   else Path(out) / checkpoints.FOLDER,
                                   checkpoint_every=checkpoint_every_pairs, resume=resume, offline=offline,
                                   min_pairs=min_pairs, meta=meta, factors=names, users=users, units=units,
                                   stylize_on=stylize_on)
        except BaseException:
            if folder is not None:
                folder.abandon()
            raise
        if folder is None:
            return result
        config = result.config | {"arguments": arguments}
        if result.meta.get("interrupted"):
            result.path = _save_interrupted(result, config, folder, out, checkpoint_every_pairs or resume)
            return result
        result.path = result.save(folder, config)
        checkpoints.remove(Path(out) / checkpoints.FOLDER)  # the result is complete: its checkpoint is of no more use
    return result


def _check(*, pairs: int, batch_size: int, threshold: float, checkpoint_every_pairs: int, flow: str,
           bootstrap: int, units: str = "video") -> None:
    """The arguments that need no model or data, checked before any work (errors name the Python argument)."""
    from stlens.measure.units import check_units

    check_units(units)
    checks = [
        (isinstance(pairs, int) and pairs >= 1, f"`pairs` must be an integer ≥ 1 (pairs per factor), got {pairs!r}"),
        (batch_size >= 1, f"`batch_size` must be ≥ 1 (pairs per forward pass), got {batch_size}"),
        (0.0 <= threshold < 1.0, f"`threshold` must be in [0, 1), got {threshold}"),
        (checkpoint_every_pairs >= 0, f"`checkpoint_every_pairs` must be ≥ 0 (0: no checkpoints), got "
                                      f"{checkpoint_every_pairs}"),
        (flow in FLOW_CHOICES, f"`flow` must be one of {', '.join(FLOW_CHOICES)}, got {flow!r}"),
        (bootstrap >= 0, f"`bootstrap` must be ≥ 0 (0: no CIs), got {bootstrap}"),
    ]
    for ok, message in checks:
        if not ok:
            raise StlensError(message)


def _claim(out: str | Path, overwrite: bool, resume: bool):
    """Claim ``out`` for a measure run and check that no checkpoint there would be lost."""
    from stlens.runs import RunFolder

    folder = RunFolder(out, "measure", overwrite=overwrite).claim()
    try:
        checkpoints.refuse_unless_resuming(Path(out) / checkpoints.FOLDER, resume)
    except StlensError:
        folder.abandon()
        raise
    return folder


def _measure_here(model, data, layers, world: distributed.World, *, pairs, weights, frames, size, stylizer, flow,
                  flow_cache, batch_size, workers, device, precision, bootstrap, threshold, seed, save_latents,
                  progress, checkpoint, checkpoint_every, resume, offline, min_pairs, meta,
                  factors, users, units, stylize_on="auto") -> MeasureResult:
    from stlens.measure.run import measure as measure_pairs
    from stlens.models.inspect import random_init, random_init_warning

    torch.manual_seed(seed)  # an untrained model's weights follow the seed (the same on every rank)
    handle = resolve_model(model, weights=weights, frames=frames, size=size, device=device, offline=offline)
    untrained = random_init(handle) and world.rank == 0
    if untrained:
        _log.warning(random_init_warning(handle))
    if units == "instance":
        from stlens.measure.units import query_layers

        query_layers(handle.module, handle.spec)  # a VIS model, checked before any pair is made
    made = resolve_pairs(data, handle, pairs=pairs, stylizer=stylizer, flow=flow, flow_cache=flow_cache, seed=seed,
                         factors=factors, users=users)
    if units == "instance" and getattr(getattr(made, "source", None), "task", "instances") != "instances":
        from stlens.measure.units import NO_TARGETS

        raise StlensError(NO_TARGETS)
    shown = dict(meta or {})
    if isinstance(data, str):
        shown.setdefault("data", data)
    result = measure_pairs(handle, made, layers, batch_size=batch_size, precision=precision, device=device,
                           bootstrap=bootstrap, threshold=threshold, seed=seed, save_latents=save_latents,
                           progress=progress, meta=shown, workers=workers, checkpoint=checkpoint,
                           checkpoint_every=checkpoint_every, resume=resume, min_pairs=min_pairs, factors=factors,
                           units=units, stylize_on=stylize_on)
    if untrained and progress:
        _log.warning(random_init_warning(handle))  # again after the table, where it is read
    return result


def resolve_model(model: str | nn.Module | ModelHandle, *, weights: str | None = None, frames: int | None = None,
                  size: int | None = None, device: str | torch.device | None = None,
                  offline: bool | None = None) -> ModelHandle:
    """A ``ModelHandle`` from a spec string (built, ``weights`` loaded), a module or a handle (``weights``,
    ``frames`` and ``size`` then apply as well: weights from a file, the input spec overridden)."""
    from stlens.models.registry import as_handle, load_model

    if isinstance(model, str):
        kwargs = {} if offline is None else {"offline": offline}
        return load_model(model, weights, frames=frames, size=size, device=device, **kwargs)
    handle = as_handle(model)
    if weights is not None:
        from stlens.models.weights import load_state_dict, read_state_dict

        load_state_dict(handle.module, read_state_dict(weights), weights)
        handle.weights = weights
    if frames is not None or size is not None:
        handle.input = handle.input.with_overrides(frames, size)
    return handle


def resolve_pairs(data: Any, handle: ModelHandle, *, pairs: int, stylizer: str | None, flow: str,
                  flow_cache: str | Path | None, seed: int, factors: tuple[str, ...] = ("dynamic", "static"),
                  users: dict[str, Any] | None = None):
    """The pairs of ``data``: a spec string is opened (a ``synth:`` world at the model's input spec unless it names
    its own), a source makes ``pairs`` pairs per factor (``factors``: further ones after dynamic and static), an
    iterable of pairs is used as it is (its factor codes index ``factors``; no ``users`` factors then). ``users``:
    the user factors' ``make_pair`` functions by name."""
    from stlens.core.source import ClipSource
    from stlens.pairs.compose import make_pairs
    from stlens.video.sources import open_data

    if isinstance(data, str | Path):
        data = open_data(at_input_spec(str(data), handle))
    if not isinstance(data, ClipSource):
        if isinstance(data, Iterable) and users:
            raise StlensError("`factors`: user factors add their pairs to those made from a source; `data` is an "
                              "iterable of pairs: put the user factor's pairs into it instead")
        if isinstance(data, Iterable):
            return data
        raise StlensError(f"`data` must be a spec string, a source (stlens.open_data) or an iterable of pairs, got "
                          f"{type(data).__name__}")
    method = flow_method(flow, handle)
    made = make_pairs(data, handle.input, pairs, stylizer=stylizer, seed=seed, flow=method, flow_cache=flow_cache)
    if len(factors) == 2:
        return made
    from stlens.pairs.factors import FactorPairs, further_pairs

    if method is not None:
        raise StlensError("`factors`: further factors are not made for two-stream (rgb, flow) pairs; measure "
                          "dynamic,static only")
    return FactorPairs(made, [further_pairs(name, data, handle.input, pairs, seed, code, users)
                              for code, name in enumerate(factors) if code >= 2])


def at_input_spec(data: str, handle: ModelHandle) -> str:
    """A ``synth:`` spec that names no ``frames``/``size`` gets the model's (its clips are used as rendered)."""
    if not data.startswith("synth:"):
        return data
    given = {item.partition("=")[0] for item in data.partition("?")[2].split("&") if item}
    extra = [f"{key}={value}" for key, value in (("frames", handle.input.frames), ("size", handle.input.size))
             if key not in given]
    if not extra:
        return data
    return data + ("&" if "?" in data else "?") + "&".join(extra)


def flow_method(choice: str, handle: ModelHandle) -> str | None:
    """The optical-flow method of ``flow`` for ``handle``: ``auto`` is ``tvl1`` for a two-input model, else none."""
    from stlens.core.handle import takes_two_inputs

    if choice not in FLOW_CHOICES:
        raise StlensError(f"`flow` must be one of {', '.join(FLOW_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return "tvl1" if takes_two_inputs(handle.module) else None
    return None if choice == "none" else choice


def _save_interrupted(result: MeasureResult, config: dict, folder, out: str | Path, checkpointed: bool) -> Path:
    """An interrupted measurement: its partial result goes into ``out`` only when that holds no complete run,
    otherwise into a fresh folder beside it."""
    from stlens.runs import fresh_sibling

    counted = sum(result.meta["pairs"].values())
    earlier = folder.previous is not None and folder.previous.get("status") == "complete"
    if earlier:
        folder.abandon()
        folder = fresh_sibling(folder.out, ".interrupted")
    saved = result.save(folder, config)
    kept = f"; the complete earlier run in {out} is unchanged" if earlier else ""
    if checkpointed:
        kept += f"; checkpoint saved: continue with `resume` and `out` {out}"
    _log.warning("interrupted after %d pairs: partial result in %s%s", counted, saved, kept)
    return saved


def _arguments(given: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments as config.json records them (what repeats the run): JSON values as they are, objects by
    their spec or type."""
    skip = {"progress", "meta", "offline", "min_pairs"}
    recorded: dict[str, Any] = {}
    for key, value in given.items():
        if key in skip or (key == "factors" and value is None) or (key == "units" and value == "video") or (
                key == "stylize_on" and value == "auto"):
            # (a default run's config stays as before)
            continue
        if isinstance(value, ModelHandle):
            value = value.spec
        elif isinstance(value, Path):
            value = str(value)
        elif key == "factors" and isinstance(value, list | tuple):  # user factors by name
            value = ",".join(v if isinstance(v, str) else str(v[0]) for v in value)
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        elif isinstance(value, torch.device):
            value = str(value)
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = getattr(getattr(value, "source", None), "spec", None) or getattr(value, "spec", None) or \
                f"<{type(value).__name__}>"
        recorded[key] = value
    return recorded
