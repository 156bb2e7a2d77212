"""The measurement loop: batches of pairs → one forward per batch with all layers tapped → streaming moments."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens._version import __version__
from stlens.core import distributed
from stlens.core.device import AUTOCAST_DTYPES, autocast, exact_fp32, resolve_device, resolve_precision, warn_slow_bf16
from stlens.core.workers import resolve_workers
from stlens.errors import StlensError
from stlens.interrupts import deferred
from stlens.measure.accumulator import Accumulator
from stlens.measure.checkpoint import Checkpoint, refuse_unless_resuming
from stlens.measure.estimate import FACTORS
from stlens.measure.layer import estimate_layer
from stlens.measure.loading import (  # noqa: F401  (batches, pair_batches, to_device: part of this module's interface)
    InOrder,
    PairBatch,
    batches,
    indexable,
    pair_batches,
    stack_inputs,
    styled_where,
    to_device,
)
from stlens.measure.result import MeasureResult
from stlens.measure.units import check_units, instance_samples, query_layers
from stlens.models.inspect import random_init
from stlens.models.registry import ModelHandle, as_handle
from stlens.models.taps import LayerTaps, asked_by_name

MIN_PAIRS = 4
FEW_PAIRS = 16  # fewer pairs per factor than this: a warning that the CIs will be wide


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run_forward(module: nn.Module, batch, precision: str) -> Any:
    """One forward pass under inference mode, returning the model's output; with ``bf16``/``fp16``: autocast on the
    device type of the inputs (cpu, cuda) and channels_last_3d inputs."""
    if precision != "fp32" and precision not in AUTOCAST_DTYPES:
        raise StlensError(f"run_forward needs a resolved precision (fp32, bf16, fp16), got {precision}")
    reduced = precision in AUTOCAST_DTYPES

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if reduced and x.ndim == 5 else x

    batch = tuple(prepare(x) for x in batch) if isinstance(batch, tuple) else prepare(batch)
    first = batch[0] if isinstance(batch, tuple) else batch
    with torch.inference_mode(), autocast(first.device, precision):
        return module(*batch) if isinstance(batch, tuple) else module(batch)


def forward_or_explain(handle: ModelHandle, module: nn.Module, inputs, precision: str,
                       per_forward: str = "videos per forward (2 per pair)") -> Any:
    """Run one forward and return its output; a model error is re-raised naming the model, the input shape and the
    input spec; running out of memory names the batch as ``N per_forward``."""
    try:
        return run_forward(module, inputs, precision)
    except StlensError:
        raise
    except torch.OutOfMemoryError as exc:
        first = inputs[0] if isinstance(inputs, tuple) else inputs
        raise StlensError(f"{handle.spec} ran out of memory on {first.device} with {first.shape[0]} {per_forward}: "
                          f"use a smaller `batch_size`") from exc
    except Exception as exc:
        shapes = [tuple(x.shape) for x in inputs] if isinstance(inputs, tuple) else tuple(inputs.shape)
        spec = f" (input spec {handle.input})" if handle.spec_known else ""
        raise StlensError(f"{handle.spec} failed on an input of shape {shapes}{spec}: "
                          f"{type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _restore_layout(module: nn.Module, changed: bool):
    """Give the caller's module back in the default memory layout after a channels_last_3d (bf16/fp16) run."""
    try:
        yield
    finally:
        if changed:
            module.to(memory_format=torch.contiguous_format)


def _progress(total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pair", desc="measure", disable=not enabled or None, leave=False)


def measure(model: nn.Module | ModelHandle, pairs: Iterable, layers: str | list[str] | None = "default", *,
            batch_size: int = 4, precision: str = "fp32", device: str | torch.device | None = None,
            bootstrap: int = 200, threshold: float = 0.5, seed: int = 0, save_latents: bool = False,
            min_pairs: int = MIN_PAIRS, progress: bool = True, meta: dict[str, Any] | None = None,
            workers: int | None = None, checkpoint: str | Path | None = None, checkpoint_every: int = 0,
            resume: bool = False, split: bool = True, factors: list[str] | tuple[str, ...] = FACTORS,
            units: str = "video", stylize_on: str = "auto") -> MeasureResult:
    """Measure static and dynamic information in each layer of ``model`` from ``pairs``.

    ``pairs`` yields ``Pair`` objects (or ``(factor, a, b)`` tuples; factor 0 = dynamic, 1 = static) whose inputs are
    (3, T, H, W) tensors or tuples of tensors for multi-input models. Both videos of each pair go in the same batch;
    every layer is captured in one forward pass and pooled in its hook; statistics are streamed, so memory does not
    grow with the number of pairs (unless ``save_latents``).

    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:K`` or ``mps`` — the model is moved there and each batch of pairs
    goes there; the latents are pooled there and only the pooled (videos, channels) means come back to the CPU.
    Default None: where the model is. ``precision``: ``fp32`` (default), ``bf16`` (CPU or CUDA autocast), ``fp16``
    (CUDA autocast) or ``auto`` (bf16 where the CPU or GPU has native bf16, else fp32; see ``resolve_precision``).
    result.json records the device and the precision used.

    ``workers``: processes that make the pairs (decode, stylize, optical flow) while the model runs, for an
    indexable pair source (``make_pairs`` gives one); None (default) = ``default_workers()`` (min(4, CPUs − 1));
    0 = in the main process. Plain iterables (generators, lists) are always read in the main process. The result
    does not depend on ``workers`` (see ``pair_batches``).

    Under ``torchrun`` (or any initialized ``torch.distributed`` process group) each process measures its share of
    the pairs (``distributed.shard``) and the shares are merged in rank order: every process returns the same
    result (the latents only on rank 0), equal to a single process's (see ``core.distributed``). ``split=False``:
    measure all the pairs in this process even under ``torch.distributed`` (e.g. ``track``, whose ranks split
    checkpoints, not pairs).

    ``checkpoint``: a folder for checkpoints (``measure.checkpoint``), written every ``checkpoint_every`` pairs
    (0: only when interrupted) and when the run is interrupted; ``resume``: continue from the checkpoint there (a
    run without a checkpoint starts at the first pair). The checkpoint is left in place: the caller removes it once
    the result is saved (``checkpoint.remove``).

    ``factors``: the factor names in the order of the pairs' factor codes (``dynamic``, ``static`` first; the
    default has only these). Each further factor gets its score, dims, percent and CI in result.json and an
    r_<factor> column in units.csv; it joins the softmax, so it changes the dims of the others (docs/factors.md).

    ``units``: ``video`` (default: one sample per pair, each layer pooled per video) or ``instance`` (a query-based
    VIS model on pairs that carry instance targets: one sample per ground-truth track present in both videos, the
    matched query's embedding at the query layers; ``stlens.measure.units``, docs/vis.md).

    ``stylize_on``: where the video pairs' ``palette``/``fourier`` styling and frame shuffling run — ``workers`` (with
    the decoding, as numpy), ``device`` (batched torch operations where the model runs: the workers send the uint8
    clips and the styles; equal within float rounding, docs/scaling.md) or ``auto`` (default: ``device`` on a CUDA
    device when the pairs allow it, else ``workers``; on the CPU the result is that of the workers, bit for bit).
    """
    check_units(units)
    factors = tuple(factors)
    workers = resolve_workers(workers)
    handle = as_handle(model)
    world = distributed.current() if split else distributed.World()
    device = distributed.rank_device(device, world) if isinstance(device, str) else device
    target = handle.device if device is None else resolve_device(device)
    used = resolve_precision(precision, target)
    if not 0.0 <= threshold < 1.0:
        raise StlensError(f"`threshold` must be in [0, 1), got {threshold}")
    if batch_size < 1:
        raise StlensError(f"`batch_size` must be ≥ 1, got {batch_size}")
    per_instance = units == "instance"
    queries = query_layers(handle.module, handle.spec) if per_instance else []
    group = distributed.Group(world) if world.distributed else None
    planned = dict(seed=seed, bootstrap=bootstrap, precision=used, save_latents=save_latents)
    if factors != FACTORS:  # (a default run's checkpoint fingerprint stays as before)
        planned["factors"] = list(factors)
    if per_instance:
        planned["units"] = units
    plan = _Plan.make(handle, pairs, layers, world, group, planned)
    pairs, styled_on = styled_where(pairs, stylize_on, target)  # (a copy of the planned pairs when on the device)
    if styled_on == "device":  # (a default run's checkpoint fingerprint stays as before)
        plan.fingerprint["stylize_on"] = styled_on
    saver = None
    if checkpoint is not None:
        saver = Checkpoint(checkpoint, checkpoint_every, world, plan.fingerprint)
        refuse_unless_resuming(checkpoint, resume)
    acc = (saver.load() if saver is not None and resume else None)
    if acc is None:
        acc = Accumulator(bootstrap, seed, save_latents, position=plan.share.start, factors=factors)
    elif not plan.share.start <= acc.position <= plan.share.stop:
        raise StlensError(f"`resume`: {saver.path} stopped at pair {acc.position}, outside this process's pairs "
                          f"{plan.share.start}..{plan.share.stop - 1}; delete {saver.folder} to start over")
    resumed_at = acc.pairs
    todo = range(acc.position, plan.share.stop) if plan.total is not None else range(acc.position, 1 << 62)
    module = handle.module.eval()
    if device is not None:
        module.to(target)
    if used == "bf16":
        warn_slow_bf16(target)
    if used != "fp32":
        module.to(memory_format=torch.channels_last_3d)
    forward_seconds = 0.0
    in_order = InOrder(todo.start)
    interrupted: BaseException | None = None
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    total = len(todo) if plan.total is not None else (len(pairs) if hasattr(pairs, "__len__") else None)
    with (LayerTaps(module, handle.layers(layers), layout=handle.layout, keep=queries) as taps,
          _progress(total, progress and world.rank == 0) as bar,
          _restore_layout(module, used != "fp32"), exact_fp32(used == "fp32"),
          pair_batches(pairs, batch_size, workers, target, seed, None if todo.start == 0 and plan.whole else todo)
          as made):
        try:
            for start, made_batch in made:
                batch = made_batch if isinstance(made_batch, PairBatch) else PairBatch.of(made_batch)
                n = len(batch)
                inputs = batch.model_inputs(target)  # (stylized there when the styling was left to the device)
                taps.reset(batch=2 * n)
                tick = time.perf_counter()
                output = forward_or_explain(handle, module, inputs, used)
                _synchronize(target)  # so that forward_seconds times the forward, not its launch
                forward_seconds += time.perf_counter() - tick
                pooled = {name: latents.cpu().numpy()  # (2n, C): the only copy back, once per batch and layer
                          for name, latents in taps.checked(strict=asked_by_name(layers)).items()}
                if per_instance:  # the matched queries' embeddings, taken now (the taps are reset by the next batch)
                    index = np.array([start + j if k is None else k for j, k in enumerate(batch.index)])
                    pooled = (index, instance_samples(batch.factor, index, batch.targets, pooled, taps.outputs,
                                                      output, queries))
                in_order.put(start, n, (batch, pooled))
                for first, (done, latents) in in_order.ready():  # batches from workers may come out of order
                    # one batch enters every layer's moments or none: an interrupt waits for the block to end, so
                    # that the pairs measured so far stay usable (the same count in every layer)
                    with deferred():
                        if per_instance:
                            index, (sample_factor, sample_index, samples) = latents
                            acc.add(sample_factor, sample_index, samples, pairs=(done.factor, index))
                        else:
                            index = np.array([first + j if k is None else k for j, k in enumerate(done.index)])
                            acc.add(done.factor, index, latents)
                    bar.update(len(done))
                    if saver is not None and saver.due(acc):
                        saver.save(acc)
                if group is not None:
                    group.stop_if_failed()
        except KeyboardInterrupt as exc:
            if saver is not None and acc.consistent():
                saver.save(acc)  # what Slurm's SIGTERM before preemption is for
                logging.getLogger("stlens").warning("%sinterrupted after %d pairs: checkpoint saved in %s (continue "
                                                    "with `resume`)", f"{world.label}: " if world.distributed else "",
                                                    acc.pairs - resumed_at, saver.path)
            # Keep what was measured: stop here and return the result of the pairs so far (if there are enough) —
            # of a single process only: the other ranks of a distributed run are being stopped too.
            if world.distributed or not acc.moments or not acc.consistent():
                raise
            interrupted = exc
            warnings.warn(f"interrupted after {acc.pairs} pairs: the result covers only these", RuntimeWarning,
                          stacklevel=2)
        except Exception as exc:
            if group is not None:
                group.fail_with(exc)
            raise
    if group is not None:
        if saver is not None and not interrupted:
            saver.save(acc)  # the other ranks may take a while: an interrupt while waiting for them loses nothing
        group.stop_if_failed()
        acc = _merged(acc, group)
    if not acc.moments:
        raise StlensError("no pairs were measured (the pair source was empty)")
    counts = next(iter(acc.moments.values())).n
    what = "instance samples" if per_instance else "pairs"
    if interrupted and counts.min() < min_pairs:
        raise interrupted  # too few pairs for a partial result: nothing to keep
    if counts.min() < min_pairs:
        raise StlensError(f"only {_counted(counts, factors)} {what}; at least {min_pairs} per factor are needed (use "
                          f"more `pairs` or more videos)")
    if counts.min() < FEW_PAIRS and not interrupted:
        logging.getLogger("stlens").warning("only %s %s: the estimate is noisy (wide CIs); use 64 or more %s "
                                            "per factor for a result", _counted(counts, factors), what, what)
    layers_out = [estimate_layer(name, m, threshold, factors) for name, m in acc.moments.items()]
    elapsed = time.perf_counter() - clock
    info = {
        "stlens_version": __version__, "model": handle.spec, "weights": handle.weights,
        "data": getattr(pairs, "source", None) and pairs.source.spec, "seed": seed, "threshold": threshold,
        "bootstrap": bootstrap, "pairs": {name: int(counts[i]) for i, name in enumerate(factors)},
        "skipped": list(getattr(pairs, "skipped", [])), "precision": used, "device": str(target),
        "random_init": random_init(handle), "stylizer": getattr(pairs, "stylizer", None),
        "flow": getattr(pairs, "flow_method", None),
    }
    if per_instance:  # (a default run's result.json stays as before)
        info["pairs"] = acc.counts()
        info["units"] = units
        info["instances"] = {name: int(counts[i]) for i, name in enumerate(factors)}
    if styled_on == "device":  # (a default run's result.json stays as before)
        info["stylize_on"] = styled_on
    if interrupted:
        info["interrupted"] = True
    info.update(meta or {})
    measured = acc.pairs - resumed_at if not world.distributed else acc.pairs
    timing = {"seconds": round(elapsed, 3), "forward_seconds": round(forward_seconds, 3),
              "pairs_per_second": round(measured / elapsed, 3)}
    settings = {"batch_size": batch_size, "workers": workers, "device": str(target) if device is None else str(device),
                "precision": precision, "bootstrap": bootstrap, "threshold": threshold, "seed": seed,
                "save_latents": save_latents}
    if factors != FACTORS:
        settings["factors"] = ",".join(factors)
    if per_instance:
        settings["units"] = units
    if styled_on == "device":
        settings["stylize_on"] = styled_on
    config = run_config(handle, pairs, layers, settings, started, timing)
    config["processes"] = world.size
    if resumed_at:
        config["resumed_after_pairs"] = resumed_at  # (this process's, measured before it was interrupted)
    return MeasureResult(info, layers_out, timing, acc.moments, acc.latents(), config=config)


def _counted(counts: np.ndarray, factors: tuple[str, ...]) -> str:
    """``8 dynamic and 8 static`` (the default factors) or ``8 dynamic, 8 static and 8 playback``."""
    named = [f"{int(n)} {name}" for n, name in zip(counts, factors, strict=True)]
    return ", ".join(named[:-1]) + " and " + named[-1]


class _Plan:
    """What a measurement will do before it does it: the number of pairs (None for a plain iterable), this
    process's share of them and the fingerprint that a checkpoint must match. In a distributed run every rank
    checks that all ranks planned the same pairs (an error on any rank stops all, naming it)."""

    def __init__(self, total: int | None, share: range, fingerprint: dict[str, Any]):
        self.total = total
        self.share = share
        self.fingerprint = fingerprint

    @property
    def whole(self) -> bool:
        return self.total is None or self.share == range(self.total)

    @classmethod
    def make(cls, handle: ModelHandle, pairs, layers, world: distributed.World, group: distributed.Group | None,
             settings: dict[str, Any]) -> _Plan:
        error = None
        plan = None
        try:
            if world.distributed and not indexable(pairs):
                raise StlensError("a distributed run needs an indexable pair source (stlens.make_pairs or a synth: "
                                  "world), so that each process makes its own share of the pairs")
            total = len(pairs.plan()) if indexable(pairs) else None
            share = distributed.shard(total, world) if total is not None else range(0, 1 << 62)
            source = getattr(pairs, "source", None)
            spec = handle.input
            fingerprint = {"model": handle.spec, "weights": handle.weights,
                           "input": [spec.frames, spec.size] if handle.spec_known else None,
                           "data": getattr(source, "spec", None), "pairs": total,
                           "layers": handle.layers(layers), "stylizer": getattr(pairs, "stylizer", None),
                           "flow": getattr(pairs, "flow_method", None), "processes": world.size, **settings}
            plan = cls(total, share, fingerprint)
        except StlensError as exc:
            if group is None:
                raise
            error = str(exc)
        if group is not None:
            group.agree(error)
            totals = group.gather(plan.total)
            if len(set(totals)) != 1:
                raise StlensError(f"the processes planned different numbers of pairs ({totals}, in rank order): "
                                  f"each machine must see the same `data`")
        return plan


def _merged(acc: Accumulator, group: distributed.Group) -> Accumulator:
    """Every rank's accumulator merged in rank order (= global pair order); latents travel to rank 0 only."""
    kept, acc.kept = acc.kept, {}
    parts = group.gather(acc)
    latents = group.gather_to_first(kept if acc.save_latents else None)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    if latents is not None and acc.save_latents:
        merged.kept = {}
        for rank_kept in latents:
            for key, chunks in rank_kept.items():
                merged.kept.setdefault(key, []).extend(chunks)
    elif acc.save_latents:
        merged.save_latents = False  # ranks other than 0 return no latents
    return merged


def run_config(handle: ModelHandle, pairs, layers, settings: dict[str, Any], started: str,
               timing: dict[str, float]) -> dict[str, Any]:
    """config.json of a measurement: the command that repeats it (``stlens measure`` arguments), the input spec, the
    layers, versions and timing — so that a result saved from Python is as complete as one saved by the CLI."""
    import dataclasses
    import platform

    spec = handle.input
    source = getattr(pairs, "source", None)
    arguments = {"model": handle.spec, "weights": handle.weights, "frames": spec.frames, "size": spec.size,
                 "data": getattr(source, "spec", None),
                 "layers": layers if layers is None or isinstance(layers, str) else ",".join(layers),
                 "pairs": getattr(pairs, "pairs", None), "stylizer": getattr(pairs, "stylizer", None),
                 "flow": getattr(pairs, "flow_method", None), **settings}
    return {"command": "measure", "arguments": arguments,
            "input": dataclasses.asdict(spec) | {"mean": list(spec.mean), "std": list(spec.std)},
            "layers": handle.layers(layers), "stlens_version": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "started": started, "timing": timing}
