"""The measurement loop: batches of pairs → one forward per batch with all layers tapped → streaming moments."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens._version import __version__
from stlens.core.pair import Pair
from stlens.errors import StlensError
from stlens.measure.layer import estimate_layer
from stlens.measure.moments import PairedMoments
from stlens.measure.result import MeasureResult
from stlens.models.inspect import random_init
from stlens.models.registry import ModelHandle, as_handle
from stlens.models.taps import LayerTaps, asked_by_name

MIN_PAIRS = 8
PRECISIONS = ("fp32", "bf16")


def _as_pair(item) -> Pair:
    if isinstance(item, Pair):
        return item
    if isinstance(item, (tuple, list)) and len(item) == 3:
        return Pair(int(item[0]), item[1], item[2])
    raise StlensError(f"a pair must be a stlens Pair or a (factor, a, b) tuple, got {type(item).__name__}")


def batches(pairs: Iterable, batch_size: int) -> Iterator[list[Pair]]:
    """Group pairs into lists of ``batch_size`` (the last one may be shorter)."""
    if batch_size < 1:
        raise StlensError(f"--batch-size must be ≥ 1, got {batch_size}")
    batch: list[Pair] = []
    for item in pairs:
        batch.append(_as_pair(item))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def stack_inputs(inputs: list) -> torch.Tensor | tuple:
    """Stack per-video inputs into a batch; tuple inputs (multi-input models) are stacked element-wise."""
    if isinstance(inputs[0], (tuple, list)):
        return tuple(torch.stack([x[i] for x in inputs]) for i in range(len(inputs[0])))
    return torch.stack(inputs)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512_BF16 or AMX); without them bf16 convolutions are very slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # cannot tell (not Linux): do not warn
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_forward(module: nn.Module, batch, precision: str) -> None:
    """One forward pass under inference mode; bf16 autocast with channels_last_3d inputs when asked."""
    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if precision == "bf16" and x.ndim == 5 else x

    batch = tuple(prepare(x) for x in batch) if isinstance(batch, tuple) else prepare(batch)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        module(*batch) if isinstance(batch, tuple) else module(batch)


def _forward_or_explain(handle: ModelHandle, module: nn.Module, inputs, precision: str) -> None:
    """Run one forward; a model error is re-raised naming the model, the input shape and the input spec."""
    try:
        run_forward(module, inputs, precision)
    except StlensError:
        raise
    except Exception as exc:
        shapes = [tuple(x.shape) for x in inputs] if isinstance(inputs, tuple) else tuple(inputs.shape)
        spec = f" (input spec {handle.input})" if handle.spec_known else ""
        raise StlensError(f"{handle.spec} failed on an input of shape {shapes}{spec}: "
                          f"{type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _restore_layout(module: nn.Module, changed: bool):
    """Give the caller's module back in the default memory layout after a channels_last_3d (bf16) run."""
    try:
        yield
    finally:
        if changed:
            module.to(memory_format=torch.contiguous_format)


def _progress(total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pair", desc="measure", disable=not enabled or None, leave=False)


def measure(model: nn.Module | ModelHandle, pairs: Iterable, layers: str | list[str] | None = "default", *,
            batch_size: int = 4, precision: str = "fp32", bootstrap: int = 200, threshold: float = 0.5,
            seed: int = 0, save_latents: bool = False, min_pairs: int = MIN_PAIRS, progress: bool = True,
            meta: dict[str, Any] | None = None) -> MeasureResult:
    """Measure static and dynamic information in each layer of ``model`` from ``pairs``.

    ``pairs`` yields ``Pair`` objects (or ``(factor, a, b)`` tuples; factor 0 = dynamic, 1 = static) whose inputs are
    (3, T, H, W) tensors or tuples of tensors for multi-input models. Both videos of each pair go in the same batch;
    every layer is captured in one forward pass and pooled in its hook; statistics are streamed, so memory does not
    grow with the number of pairs (unless ``save_latents``).
    """
    handle = as_handle(model)
    if precision not in PRECISIONS:
        raise StlensError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision}")
    if not 0.0 <= threshold < 1.0:
        raise StlensError(f"--threshold must be in [0, 1), got {threshold}")
    module = handle.module.eval()
    if precision == "bf16":
        if not cpu_has_native_bf16():
            warnings.warn("this CPU has no native bf16 (AVX512_BF16/AMX): bf16 convolutions take a slow fallback "
                          "path (measured 128-380x slower than fp32 for r3d_18 on an AVX2-only CPU); prefer fp32",
                          RuntimeWarning, stacklevel=2)
        module.to(memory_format=torch.channels_last_3d)
    moments: dict[str, PairedMoments] = {}
    kept: dict[str, list[np.ndarray]] = {}
    factors: list[int] = []
    forward_seconds = 0.0
    interrupted: BaseException | None = None
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    start = time.perf_counter()
    total = len(pairs) if hasattr(pairs, "__len__") else None
    with (LayerTaps(module, handle.layers(layers), layout=handle.layout) as taps, _progress(total, progress) as bar,
          _restore_layout(module, precision == "bf16")):
        try:
            for batch in batches(pairs, batch_size):
                n = len(batch)
                inputs = stack_inputs([p.a for p in batch] + [p.b for p in batch])
                taps.reset(batch=2 * n)
                tick = time.perf_counter()
                _forward_or_explain(handle, module, inputs, precision)
                forward_seconds += time.perf_counter() - tick
                factor = np.array([p.factor for p in batch])
                for name, pooled in taps.checked(strict=asked_by_name(layers)).items():
                    pooled = pooled.numpy()
                    a, b = pooled[:n], pooled[n:]
                    if name not in moments:
                        moments[name] = PairedMoments(a.shape[1], bootstrap=bootstrap, seed=seed)
                    for f in (0, 1):
                        if (factor == f).any():
                            moments[name].update(f, a[factor == f], b[factor == f])
                    if save_latents:
                        kept.setdefault(f"{name}/a", []).append(a)
                        kept.setdefault(f"{name}/b", []).append(b)
                factors.extend(int(f) for f in factor)
                bar.update(n)
        except KeyboardInterrupt as exc:
            # Keep what was measured: stop here and return the result of the pairs so far (if there are enough).
            if not moments or len({tuple(m.n) for m in moments.values()}) != 1:
                raise
            interrupted = exc
            warnings.warn(f"interrupted after {len(factors)} pairs: the result covers only these", RuntimeWarning,
                          stacklevel=2)
    if not moments:
        raise StlensError("no pairs were measured (the pair source was empty)")
    counts = next(iter(moments.values())).n
    if interrupted and counts.min() < min_pairs:
        raise interrupted  # too few pairs for a partial result: nothing to keep
    if counts.min() < min_pairs:
        raise StlensError(f"only {counts[0]} dynamic and {counts[1]} static pairs; at least {min_pairs} per factor "
                          f"are needed (use more --pairs or more videos)")
    layers_out = [estimate_layer(name, m, threshold) for name, m in moments.items()]
    elapsed = time.perf_counter() - start
    info = {
        "stlens_version": __version__, "model": handle.spec, "weights": handle.weights,
        "data": getattr(pairs, "source", None) and pairs.source.spec, "seed": seed, "threshold": threshold,
        "bootstrap": bootstrap, "pairs": {"dynamic": int(counts[0]), "static": int(counts[1])},
        "skipped": list(getattr(pairs, "skipped", [])), "precision": precision, "random_init": random_init(handle),
        "stylizer": getattr(pairs, "stylizer", None), "flow": getattr(pairs, "flow_method", None),
    }
    if interrupted:
        info["interrupted"] = True
    info.update(meta or {})
    latents = None
    if save_latents:
        latents = {"factor": np.asarray(factors, dtype=np.int64)}
        latents.update({key: np.concatenate(parts).astype(np.float32) for key, parts in kept.items()})
    timing = {"seconds": round(elapsed, 3), "forward_seconds": round(forward_seconds, 3),
              "pairs_per_second": round(len(factors) / elapsed, 3)}
    settings = {"batch_size": batch_size, "precision": precision, "bootstrap": bootstrap, "threshold": threshold,
                "seed": seed, "save_latents": save_latents}
    config = run_config(handle, pairs, layers, settings, started, timing)
    return MeasureResult(info, layers_out, timing, moments, latents, config=config)


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
