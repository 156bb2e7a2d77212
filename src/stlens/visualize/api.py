"""``stlens.visualize``: activation maximization of units and classes of video and two-stream networks."""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stlens.core import distributed
from stlens.core.device import exact_fp32, resolve_device, resolve_precision, warn_slow_bf16
from stlens.core.handle import takes_two_inputs
from stlens.core.summary import MAX_ROWS, clip_lines, html_table
from stlens.errors import StlensError
from stlens.models.registry import ModelHandle, as_handle, load_model
from stlens.names import safe_name
from stlens.runs import RunFolder
from stlens.visualize import natural as nat
from stlens.visualize import outputs as writers
from stlens.visualize.objectives import Objective
from stlens.visualize.params import ParamFactory
from stlens.visualize.regularizers import Regularization
from stlens.visualize.render import (
    Capture,
    Job,
    OptimizerFactory,
    RenderConfig,
    Rendered,
    deprecated_batch,
    render,
    to_uint8,
)
from stlens.visualize.targets import Target, parse_target
from stlens.visualize.transforms import Transforms

log = logging.getLogger("stlens")


@dataclass(repr=False)
class TargetResult:
    """One optimized input and its numbers (``to_dict`` is the per-target JSON); its ``repr`` is one line."""

    name: str
    objective: str
    temporal_reg: float  # λ_T of this result (a sweep gives one result per target and value)
    seed: int
    rgb: np.ndarray  # uint8 (T, H, W, 3)
    flow: np.ndarray | None  # optimized flow input (N, H, W, 2) px of a two-stream model, else None
    value: float
    natural: dict | None
    regularizers: dict[str, float]
    history: list[float]
    status: str
    stopped_at: int | None
    seconds: float
    measured: dict | None = None
    stats: dict = field(default_factory=dict)
    video_flow: np.ndarray | None = None  # OpenCV (DIS) flow of the optimized RGB video, (T − 1, H, W, 2) px

    def cells(self) -> tuple[str, str, str, str, str]:
        """target, λ_T, objective value, ratio to the natural clips' mean, status: as printed."""
        nat_mean = self.natural["mean"] if self.natural else None
        ratio = f"{self.value / nat_mean:.2f}" if nat_mean is not None and nat_mean > 0 else "–"
        return self.name, f"{self.temporal_reg:g}", f"{self.value:.4g}", ratio, self.status

    def __repr__(self) -> str:
        flow = ", flow" if self.flow is not None else ""
        return (f"TargetResult({self.name!r}: {self.objective}, λ_T {self.temporal_reg:g}, value {self.value:.4g}, "
                f"{self.status}, video {'×'.join(map(str, self.rgb.shape))}{flow})")

    def to_dict(self) -> dict:
        nat_mean = self.natural["mean"] if self.natural else None
        # a ratio to a mean ≤ 0 means nothing (its sign flips with the mean's): null, as benchmarks/visualize_checks
        ratio = self.value / nat_mean if nat_mean is not None and nat_mean > 0 else None
        every = max(1, len(self.history) // 64)
        # the file's key stays "lambda_t" (as the lambda_t=<v> folders of a sweep): output names do not change
        return {
            "target": self.name, "objective": self.objective, "lambda_t": self.temporal_reg, "seed": self.seed,
            "status": self.status, "stopped_at_step": self.stopped_at,
            "objective_value": self.value, "natural": self.natural, "ratio_to_natural_mean": ratio,
            "regularizers": self.regularizers, **self.stats, "measured": self.measured,
            "seconds_per_target": round(self.seconds, 3),
            "history_every": every, "history": self.history[::every],
        }


@dataclass(repr=False)
class VisResult:
    """All targets (× λ_T values) of one ``visualize`` call, with the settings; ``save(dir)`` writes everything.

    Under ``torchrun`` each process renders a share of the targets: on rank 0 ``targets`` holds every result (those
    of the other ranks without ``video_flow``) and ``own`` the indices of its own; on the other ranks ``targets``
    holds only their own results and ``partial`` is True. ``save`` writes the per-target files of a process's own
    results, and summary.json, the mosaics and the legend only where the result is not partial (rank 0)."""

    targets: list[TargetResult]
    config: dict
    own: list[int] | None = None  # the indices in ``targets`` rendered by this process (None: all of them)
    partial: bool = False  # True on ranks other than 0 of a distributed run
    path: Path | None = None  # the run folder it was saved into (``visualize(out=...)``; rank 0)

    _HEAD = ("target", "λ_T", "value", "÷ natural", "status")

    def _caption(self) -> str:
        c = self.config
        weights = f" ({c['weights']})" if c.get("weights") else ""
        layers = c.get("layers") or c.get("layer")
        layers = ", ".join(map(str, layers)) if isinstance(layers, list | tuple) else layers
        partial = " (this process's share)" if self.partial else ""
        return f"{c.get('model')}{weights}, layers {layers}: {len(self.targets)} targets{partial}"

    def __repr__(self) -> str:
        width = max([len(t.name) for t in self.targets] + [6]) + 2
        lines = [f"{t.name:<{width}}{lam:>8}{value:>12}{ratio:>11}  {status}"
                 for t in self.targets for _, lam, value, ratio, status in [t.cells()]]
        head = f"{'target':<{width}}{'λ_T':>8}{'value':>12}{'÷ natural':>11}  status"
        return "\n".join([f"VisResult: {self._caption()}", head, "-" * len(head),
                          *clip_lines(lines, MAX_ROWS, "result.targets holds all")])

    def _repr_html_(self) -> str:
        """One row per target as HTML for Jupyter (every value escaped)."""
        return html_table(self._caption(), self._HEAD, [t.cells() for t in self.targets])

    def __getitem__(self, name: str) -> TargetResult:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def temporal_reg_values(self) -> list[float]:
        """The λ_T values, in order (one unless a sweep)."""
        return list(dict.fromkeys(t.temporal_reg for t in self.targets))

    def save(self, out: str | Path) -> Path:
        """Per target: video.gif, video.mp4, flow_paper.gif, flow_wheel.gif, result.json; per λ_T a mosaic.png
        (targets × frames); summary.json at the top. With several λ_T values each gets a ``lambda_t=<v>`` folder."""
        out = Path(out)
        sweep = len(self.config.get("temporal_reg") or self.temporal_reg_values()) > 1
        own = set(range(len(self.targets)) if self.own is None else self.own)
        for lam in self.temporal_reg_values():
            folder = out / f"lambda_t={lam:g}" if sweep else out  # folder name kept (λ_T is temporal_reg in Python)
            group = [(k, t) for k, t in enumerate(self.targets) if t.temporal_reg == lam]
            rows, labels = [], []
            for k, t in group:
                if k in own:
                    _save_target(folder / safe_name(t.name), t)
                rows.append(t.rgb)
                labels.append(t.name)
                if t.flow is not None:
                    rows.append(writers.flow_paper(t.flow, t.stats["flow_display_scale"]))
                    labels.append(f"{t.name} flow")
            if not self.partial:
                writers.write_png(folder / "mosaic.png", writers.mosaic(rows, labels))
        if self.partial:
            return out
        writers.write_png(out / "flow_wheel_legend.png", writers.wheel_legend())
        records = [t.to_dict() for t in self.targets]
        writers.write_json(out / "summary.json", {"config": self.config, "targets": records})
        return out


def _save_target(folder: Path, t: TargetResult) -> None:
    shown = t.flow if t.flow is not None else t.video_flow
    scale = t.stats["flow_display_scale"]
    writers.write_gif(folder / "video.gif", t.rgb)
    writers.write_mp4(folder / "video.mp4", t.rgb)
    writers.write_gif(folder / "flow_paper.gif", writers.flow_paper(shown, scale))
    writers.write_gif(folder / "flow_wheel.gif", writers.flow_wheel(shown, scale))
    writers.write_json(folder / "result.json", t.to_dict())


def _targets(target, layers: list[str], from_run) -> list[Target]:
    """The targets of ``target`` (a spec string, an ``Objective``, a ``Target`` or a list of them): a channel,
    neuron or top-* spec is made in each of ``layers``, in order."""
    items = target if isinstance(target, (list, tuple)) else [target]
    out: list[Target] = []
    for item in items:
        if isinstance(item, Objective):
            out.append(Target(item, _safe(item.name)))
        elif isinstance(item, Target):
            out.append(item)
        elif isinstance(item, str):
            per_layer = item.partition(":")[0] != "class" and len(layers) > 1
            for name in layers if per_layer else layers[:1] or [None]:
                out.extend(parse_target(item, name, from_run))
        else:
            raise StlensError(f"a target is a spec string or an Objective, got {type(item).__name__}")
    if not out:
        raise StlensError("no targets to visualize")
    return out


def layer_list(layers: str | Sequence[str] | None) -> list[str]:
    """``layers`` as a list of names: one name, ``L1,L2`` or a list; None: none."""
    if layers is None:
        return []
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    names = [name.strip() for name in items if name and name.strip()]
    if not names:
        raise StlensError(f"`layers` names no layer: {layers!r}")
    return names


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "target"


def _check(handle: ModelHandle, targets: Sequence[Target], two_stream: bool) -> None:
    """One dry forward on a grey clip: unknown layers and out-of-range channels/classes fail here, before optimizing."""
    inputs = list(handle.example_inputs(1))
    layers = list(dict.fromkeys(n for t in targets for n in t.objective.layers))
    with torch.no_grad(), Capture(handle.module, layers, handle.layout) as capture:
        acts = capture.run(inputs)
        for t in targets:
            t.objective(acts)


def _natural(handle, targets, two_stream, data, clips, seed) -> list[dict | None]:
    if not clips:
        return [None] * len(targets)
    inputs = [x.to(handle.device) for x in nat.natural_inputs(data, handle.input, two_stream, clips, seed)]
    layers = list(dict.fromkeys(n for t in targets for n in t.objective.layers))
    with torch.no_grad(), Capture(handle.module, layers, handle.layout) as capture:
        acts = capture.run(inputs)
        return [nat.summary(t.objective(acts).float().tolist()) for t in targets]


def _stats(r: Rendered, rgb: np.ndarray, video_flow: np.ndarray) -> dict:
    stats = {"frame_change_grey": nat.frame_change(rgb), "video_flow_opencv_dis": nat.mean_flow(video_flow)
             if len(video_flow) else None}
    shown = video_flow
    if r.flow is not None:
        flow = r.flow.permute(1, 2, 3, 0).numpy()
        stats["input_flow"] = nat.mean_flow(flow)
        stats["flow_frame_change_px"] = nat.frame_change(flow)
        shown = flow
    stats["flow_display_scale"] = writers.display_scale(shown)
    return stats


def _describe(setting: str | ParamFactory | OptimizerFactory) -> str:
    """A param/optimizer setting for summary.json: its name, or a factory's qualified name."""
    return setting if isinstance(setting, str) else getattr(setting, "__qualname__", type(setting).__qualname__)


_WARNED: set[str] = set()  # deprecated keywords already warned about (once per process)


def visualize(model: str | ModelHandle | nn.Module, target, *, layers: str | Sequence[str] | None = None,
              weights: str | None = None, frames: int | None = None, size: int | None = None,
              from_run: str | Path | None = None, steps: int = 256, lr: float = 0.05,
              param: str | ParamFactory = "fourier", temporal_reg: float | Sequence[float] = 1.0,
              batch_size: int = 8, precision: str = "fp32", seed: int = 0,
              optimizer: str | OptimizerFactory = "adam", data: str | None = None, natural_clips: int = 8,
              device: str | torch.device | None = "auto", out: str | Path | None = None, overwrite: bool = False,
              progress: bool = True, regularization: Regularization | None = None,
              transforms: Transforms | None = None, batch: int | None = None, layer: str | None = None) -> VisResult:
    """Optimize an input video (and, for two-stream models, a flow stack) so that each target responds maximally.

    The model, the optimized input, its transforms and regularizers all live on ``device`` (the starts and transforms
    are drawn on the CPU, so they are the same on every device). Under ``torchrun`` the jobs are split across the
    processes in whole batches of ``batch_size`` (contiguous shares, ``distributed.shard``), so every video is the
    same as in one process; see ``VisResult`` for what each process returns. With ``out``, rank 0 claims the folder,
    every process writes its own targets' files into it, and rank 0 writes summary.json and the mosaics and commits.
    A process that fails tells the others, which stop after their current batch.

    Args:
        model: a spec string (built after ``torch.manual_seed(seed)``, so an untrained model's weights — and with them
            the result — follow ``seed``), an ``nn.Module`` or a ``ModelHandle``.
        target: a spec (``class:0-7``, ``channel:0-15``, ``neuron:C@t,y,x``, ``top-dynamic:K`` / ``top-static:K`` /
            ``top-joint:K`` with ``from_run``), an ``Objective`` (``stlens.visualize.objectives``), or a list of them.
        layers: the layer of the channel, neuron and top-* targets, one dotted name or several (a list or
            ``L1,L2``): with several, those targets are made in each layer, in order.
        weights: the weights of a spec string (a file, ``bundled:NAME`` or a torchvision weights name).
        frames: frames per clip (a spec string's, or overriding a handle's input spec).
        size: crop size (a spec string's, or overriding a handle's input spec).
        from_run: a ``stlens measure`` run folder (or its result.json) whose units rank the top-* targets.
        steps: optimization steps.
        lr: the learning rate.
        param: the parameterization, ``fourier`` or ``pixel``, or a factory (``RenderConfig``).
        temporal_reg: λ_T (large = slow videos), or a list of values for a sweep (each target is rendered once per
            value).
        batch_size: targets optimized together, one per batch element; target i starts from seed ``seed + i``
            whatever the batching.
        precision: ``fp32`` (TF32 off on GPUs), ``bf16``, ``fp16`` (CUDA autocast, no loss scaling) or ``auto``
            (bf16 where native); checked before any work.
        seed: the seed of the starts (and of a spec string's untrained weights).
        optimizer: ``adam`` or ``mv``, or a factory (``RenderConfig``).
        data: natural clips to compare with (default: the synth world of a zoo model, ``sample:`` otherwise).
        natural_clips: how many natural clips (0: none).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:K`` or ``mps`` (None: where the model is; a spec string is then
            built on the CPU); checked before any work.
        out: the run folder (per target video.gif, video.mp4, flow_paper.gif, flow_wheel.gif, result.json; a
            mosaic.png per λ_T; summary.json), claimed before any work: a folder holding a complete run is refused
            unless ``overwrite``; an error or interrupt leaves ``out`` as it was.
        overwrite: replace a visualize run in ``out``, once the new one is complete.
        progress: log the progress.
        regularization: the regularizers (default: the paper's).
        transforms: the jitter, zoom and roll of the inputs (default: the paper's).
        batch: the deprecated alias of ``batch_size``.
        layer: the deprecated spelling of ``layers``.

    Returns:
        The ``VisResult``: per target (× λ_T) the optimized video, its objective value and status (it prints as a
        table; ``save(dir)`` writes the files).

    Examples:
        >>> result = stlens.visualize("stlens:c2d?classes=8&width=4", "channel:0-1", layers="stage4", frames=4,
        ...                           size=16, steps=2, natural_clips=0, progress=False)
        >>> print(result)  # doctest: +ELLIPSIS
        VisResult: stlens:c2d?classes=8&width=4, layers stage4: 2 targets
        ...
    """
    began = time.perf_counter()
    if layer is not None:
        if "layer" not in _WARNED:
            _WARNED.add("layer")
            warnings.warn("layer= is deprecated, use layers= (one name, a list or 'L1,L2')", FutureWarning,
                          stacklevel=2)
        if layers is not None and layer_list(layers) != layer_list(layer):
            raise StlensError(f"layer={layer!r} and layers={layers!r} disagree; pass layers only")
        layers = layer
    names = layer_list(layers)
    lams = [float(v) for v in (temporal_reg if isinstance(temporal_reg, (list, tuple)) else [temporal_reg])]
    if not lams or any(v < 0 or not np.isfinite(v) for v in lams):
        raise StlensError(f"`temporal_reg` values must be finite and ≥ 0, got {temporal_reg}")
    batch_size = deprecated_batch(batch, batch_size, 8)
    for ok, message in ((steps >= 1, f"`steps` must be ≥ 1, got {steps}"),
                        (batch_size >= 1, f"`batch_size` must be ≥ 1 (targets optimized together), got {batch_size}"),
                        (natural_clips >= 0, f"`natural_clips` must be ≥ 0 (0: none), got {natural_clips}")):
        if not ok:
            raise StlensError(message)
    world = distributed.launched()
    if isinstance(device, str):
        device = distributed.rank_device(device, world)
    place = None if device is None else resolve_device(device)  # checked before any work
    if place is not None or isinstance(model, str):
        resolve_precision(precision, place if place is not None else "cpu")
    if isinstance(model, str):
        torch.manual_seed(seed)  # before the model is built: an untrained model's weights follow the seed
    with distributed.joined(place) as world:
        run = None
        if out is not None:  # torchrun: rank 0 claims (every rank hears of a refusal), the ranks split the targets
            run = distributed.on_first_rank(world, lambda: RunFolder(out, "visualize", overwrite=overwrite).claim())
        group = distributed.Group(world) if world.distributed else None
        with distributed.failing_together(group, run):
            result = _visualize_here(model, target, began, world, group, layers=names, weights=weights,
                                     from_run=from_run, steps=steps, lr=lr, param=param, lams=lams,
                                     batch_size=batch_size, precision=precision, seed=seed, optimizer=optimizer,
                                     data=data, natural_clips=natural_clips, regularization=regularization,
                                     transforms=transforms, frames=frames, size=size, progress=progress,
                                     place=place)
        if out is not None:
            save_shared(result, run, group)  # commits on rank 0; abandons on any error
            result.path = Path(out)
    return result


def _visualize_here(model, target, began: float, world: distributed.World, group: distributed.Group | None, *,
                    layers: list[str], weights, from_run, steps, lr, param, lams: list[float], batch_size, precision,
                    seed, optimizer, data, natural_clips, regularization, transforms, frames, size, progress,
                    place: torch.device | None) -> VisResult:
    if isinstance(model, str):
        used = resolve_precision(precision, place if place is not None else "cpu")
        handle = load_model(model, weights, frames=frames, size=size, device=place)
    else:
        handle = as_handle(model)
        handle.input = handle.input.with_overrides(frames, size)
        used = resolve_precision(precision, place if place is not None else handle.device)
        if place is not None:
            handle.module.to(place)
    place = handle.device
    if used == "bf16":
        warn_slow_bf16(place)
    handle.module.eval()
    two_stream = takes_two_inputs(handle.module)
    if two_stream and handle.input.frames < 2:
        raise StlensError("two-stream models need at least 2 frames (flow between frames)")
    targets = _targets(target, layers, from_run)
    config = RenderConfig(steps=steps, lr=lr, param=param, optimizer=optimizer, batch_size=batch_size,
                          precision=used, reg=regularization or Regularization(),
                          transforms=transforms or Transforms())
    with exact_fp32(used == "fp32"):
        return _visualize(handle, targets, two_stream, config, lams, began, weights=weights,
                          layer=",".join(layers) or None, from_run=from_run, data=data, natural_clips=natural_clips,
                          seed=seed, progress=progress, world=world, group=group)


def share_of_jobs(jobs: int, batch_size: int, world: distributed.World) -> range:
    """The job indices of ``world.rank``: a contiguous share of whole batches of ``batch_size`` (the batches of one
    process), so that every batch, and with it every result, is the same as in one process."""
    batches = distributed.shard(-(-jobs // batch_size), world)
    return range(min(jobs, batches.start * batch_size), min(jobs, batches.stop * batch_size))


def _visualize(handle: ModelHandle, targets: list[Target], two_stream: bool, config: RenderConfig, lams: list[float],
               began: float, *, weights, layer, from_run, data, natural_clips, seed, progress,
               world: distributed.World, group: distributed.Group | None) -> VisResult:
    steps, lr, param, optimizer, batch_size = config.steps, config.lr, config.param, config.optimizer, config.batch_size
    _check(handle, targets, two_stream)
    if data is None and natural_clips:
        data = nat.default_data(handle, weights)
    natural = _natural(handle, targets, two_stream, data, natural_clips, seed)
    jobs = [Job(t.objective, seed + i, lam, t.name) for lam in lams for i, t in enumerate(targets)]
    spec = handle.input
    share = share_of_jobs(len(jobs), batch_size, world)
    if world.distributed and world.rank == 0 and -(-len(jobs) // batch_size) < world.size:
        log.warning("visualize: %d job(s) in batches of %d keep only %d of %d processes busy; `batch_size` %d would "
                    "use them all", len(jobs), batch_size, -(-len(jobs) // batch_size), world.size,
                    max(1, len(jobs) // world.size))

    def report(done: int, total: int) -> None:
        if progress:
            where = f" ({world.label})" if world.distributed else ""
            log.info("visualize: %d/%d targets%s (%.0f s)", done, total, where, time.perf_counter() - began)
        if group is not None:
            group.stop_if_failed()  # another process failed: stop after this batch

    rendered = render(handle.module, jobs[share.start:share.stop], spec.frames, spec.size, spec.mean, spec.std,
                      two_stream, config, report, layout=handle.layout)
    results = []
    for k, r in zip(share, rendered, strict=True):
        t = targets[k % len(targets)]
        rgb = to_uint8(r.rgb)
        flow = None if r.flow is None else r.flow.permute(1, 2, 3, 0).numpy().copy()
        moved = nat.video_flow(rgb) if len(rgb) > 1 else np.zeros((0, *rgb.shape[1:3], 2), np.float32)
        results.append(TargetResult(t.name, t.objective.name, r.job.temporal_reg, r.job.seed, rgb, flow, r.value,
                                    natural[k % len(targets)], r.regularizers, r.history, r.status, r.stopped_at,
                                    r.seconds, t.measured, _stats(r, rgb, moved), moved))
        if r.status != "ok":
            log.warning("visualize: %s stopped at step %s (NaN/inf); the other targets went on", t.name,
                        r.stopped_at)
    settings = {"model": handle.spec, "weights": weights, "two_stream": two_stream, "layer": layer,
                "from": None if from_run is None else str(from_run), "data": data, "natural_clips": natural_clips,
                "steps": steps, "lr": lr, "param": _describe(param), "optimizer": _describe(optimizer),
                "batch": batch_size,  # summary.json keeps its keys: "batch" is batch_size
                "precision": config.precision, "device": str(handle.device), "seed": seed,
                "temporal_reg": lams, "frames": spec.frames, "size": spec.size,
                "regularization": config.reg.to_dict(), "transforms": config.transforms.to_dict(),
                "processes": world.size, "seconds": round(time.perf_counter() - began, 2)}
    if group is None:
        return VisResult(results, settings)
    parts = group.gather_to_first([dataclasses.replace(t, video_flow=None) for t in results])
    if parts is None:
        return VisResult(results, settings, partial=True)
    everything = [t for part in parts for t in part]
    everything[share.start:share.stop] = results
    return VisResult(everything, settings, own=list(share))


def save_shared(result: VisResult, run, group: distributed.Group | None) -> None:
    """Save ``result`` into the staging folder of ``run`` (a claimed ``RunFolder`` on rank 0, None on the other
    ranks) and commit it: under torchrun rank 0 broadcasts the staging folder's path (``--out`` on a filesystem all
    machines share), every process writes its own targets' files there, and rank 0 commits once all have written.
    An error on any process abandons the run on every one."""
    try:
        staging = run.staging if run is not None else None
        if group is not None:
            staging = Path(group.broadcast(None if staging is None else str(staging)))
            error = None
            try:
                result.save(staging)
            except (OSError, StlensError) as exc:
                error = f"cannot write {staging}: {exc}"
            group.agree(error)  # every process has written its files (or one failed: all stop)
        else:
            result.save(staging)
        if run is not None:
            run.commit()
    except BaseException:
        if run is not None:
            run.abandon()
        raise
