"""The optimizer loop: K jobs (objective, seed, λ_T) optimized in one batch, one job per batch element.

Batch elements never interact (models run in eval mode), each job draws its start and its transforms from its own
seed, and its regularizer weights are its own: a job gives the same result batched or alone, up to floating-point
differences of batched kernels (see docs/visualize.md). A job whose objective or penalty turns NaN/inf is stopped at
its last finite input and reported; the others go on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from stlens.core.handle import Layout, channels_first
from stlens.errors import StlensError
from stlens.models.taps import flatten_output, resolve_layers
from stlens.visualize.objectives import LOGITS, Objective
from stlens.visualize.params import VideoParam, encode_flow_input, normalize_rgb
from stlens.visualize.regularizers import Regularization, regularizer_values, weight_of
from stlens.visualize.transforms import Transforms, apply, draw

OPTIMIZERS = ("adam", "mv")


@dataclass(frozen=True)
class Job:
    """One visualization: maximize ``objective`` from the start drawn with ``seed`` under temporal weight λ_T."""

    objective: Objective
    seed: int
    temporal: float
    label: str = ""


@dataclass
class RenderConfig:
    steps: int = 256
    lr: float = 0.05
    param: str = "fourier"
    optimizer: str = "adam"
    batch: int = 8
    precision: str = "fp32"
    reg: Regularization = field(default_factory=Regularization)
    transforms: Transforms = field(default_factory=Transforms)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or not self.lr > 0:
            raise StlensError(f"steps and batch must be ≥ 1 and lr > 0, got {self.steps}, {self.batch}, {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise StlensError(f"unknown optimizer '{self.optimizer}'; choices: {', '.join(OPTIMIZERS)}")
        if self.precision not in ("fp32", "bf16"):
            raise StlensError(f"unknown precision '{self.precision}'; choices: fp32, bf16")


@dataclass
class Rendered:
    """What the loop produced for one job: the input as floats (rgb (3, T, H, W) in [0, 1], flow (2, N, H, W) in px
    or None), the final objective (no transform), every regularizer's unweighted value, the objective every step."""

    job: Job
    rgb: torch.Tensor
    flow: torch.Tensor | None
    value: float
    regularizers: dict[str, float]
    history: list[float]
    status: str = "ok"
    stopped_at: int | None = None
    seconds: float = 0.0


class MomentumAdaGrad(torch.optim.Optimizer):
    """The update of Mahendran & Vedaldi's natural pre-images: G ← ρG + g², m ← μm − g/(1/lr + √G), x ← x + m."""

    def __init__(self, params, lr: float, momentum: float = 0.9, decay: float = 0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum, decay=decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["G"] = torch.zeros_like(p)
                    state["m"] = torch.zeros_like(p)
                state["G"].mul_(group["decay"]).addcmul_(p.grad, p.grad)
                step = p.grad / (1.0 / group["lr"] + state["G"].sqrt())
                state["m"].mul_(group["momentum"]).sub_(step)
                p.add_(state["m"])


class _Stop(Exception):
    """Raised by the last needed hook: the rest of the forward cannot change the captured activations."""


class Capture(contextlib.AbstractContextManager):
    """Forward hooks keeping the un-pooled outputs of ``layers`` (with gradients); ``LOGITS`` = the model output.
    Outputs that ``layout`` calls channels-last ((B, T, H, W, C), e.g. Swin3D's) are kept channels-first, so that an
    objective's channel index always means the channel axis."""

    def __init__(self, module: nn.Module, layers: Sequence[str], layout: Layout = channels_first):
        self.module = module
        self.layout = layout
        self.want_logits = LOGITS in layers
        named = [name for name in layers if name != LOGITS]
        self.layers = resolve_layers(module, named) if named else []
        self.acts: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> Capture:
        modules = dict(self.module.named_modules())
        for name in self.layers:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            if name in self.acts:  # a module called twice: keep the first call
                return
            tensors = flatten_output(name, output)
            if not tensors:
                raise StlensError(f"layer '{name}' returns no tensor ({type(output).__name__})")
            tensor = tensors[0][1]
            if tensor.ndim in (4, 5) and self.layout(name) == "channels_last":
                tensor = tensor.movedim(-1, 1)
            self.acts[name] = tensor
            if not self.want_logits and len(self.acts) == len(self.layers):
                raise _Stop
        return hook

    def run(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        self.acts = {}
        try:
            out = self.module(*inputs)
            if self.want_logits:
                self.acts[LOGITS] = out if isinstance(out, torch.Tensor) else flatten_output(LOGITS, out)[0][1]
        except _Stop:
            pass
        return self.acts


def _slice(acts: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    return {name: value[k:k + 1] for name, value in acts.items()}


def _model_inputs(rgb: torch.Tensor, flow: torch.Tensor | None, mean, std) -> list[torch.Tensor]:
    inputs = [normalize_rgb(rgb, mean, std)]
    if flow is not None:
        inputs.append(encode_flow_input(flow))
    return inputs


def _objective_values(jobs: Sequence[Job], acts: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([job.objective(_slice(acts, k)).float().reshape(1) for k, job in enumerate(jobs)])


def _penalty(values: dict[str, torch.Tensor], reg: Regularization, temporal: torch.Tensor) -> torch.Tensor:
    total = torch.zeros_like(temporal)
    for name, value in values.items():
        weight = temporal if name.endswith("temporal_variation") else weight_of(name, reg)
        total = total + weight * value
    return total


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def render_batch(module: nn.Module, jobs: Sequence[Job], frames: int, size: int, mean, std, two_stream: bool,
                 config: RenderConfig, layout: Layout = channels_first) -> list[Rendered]:
    """Optimize ``jobs`` together (one batch element each); see the module docstring."""
    began = time.perf_counter()
    b = len(jobs)
    layers = list(dict.fromkeys(name for job in jobs for name in job.objective.layers))
    params = VideoParam(config.param, frames, size, [job.seed for job in jobs],
                        flow_fields=frames - 1 if two_stream else None)
    opt = (torch.optim.Adam(params.parameters(), lr=config.lr) if config.optimizer == "adam"
           else MomentumAdaGrad(params.parameters(), lr=config.lr))
    gens = [torch.Generator().manual_seed(job.seed + 1_000_003) for job in jobs]
    temporal = torch.tensor([job.temporal for job in jobs], dtype=torch.float32)
    active = torch.ones(b, dtype=torch.bool)
    stopped: list[int | None] = [None] * b
    good = [p.detach().clone() for p in params.parameters()]
    history: list[list[float]] = [[] for _ in jobs]
    grads_on = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        with Capture(module, layers, layout) as capture:
            for step in range(config.steps):
                opt.zero_grad(set_to_none=False)
                rgb, flow = params.rgb(), params.flow()
                d = draw(config.transforms, gens)
                rgb_t = apply(rgb, d, config.transforms)
                flow_t = apply(flow, d, config.transforms, is_flow=True) if flow is not None else None
                with _autocast(config.precision):
                    acts = capture.run(_model_inputs(rgb_t, flow_t, mean, std))
                values = _objective_values(jobs, acts)
                loss_each = _penalty(regularizer_values(rgb, flow, config.reg), config.reg, temporal) - values
                finite = torch.isfinite(loss_each)
                for k in range(b):
                    history[k].append(float(values[k].detach()) if active[k] else float("nan"))
                    if active[k] and not finite[k]:
                        active[k], stopped[k] = False, step
                        params.restore(k, good)
                with torch.no_grad():
                    keep = active & finite
                    good = [torch.where(keep.view(-1, *[1] * (p.ndim - 1)), p, g)
                            for p, g in zip(params.parameters(), good, strict=True)]
                if not bool(active.any()):
                    break
                torch.where(active, loss_each, torch.zeros_like(loss_each)).sum().backward()
                with torch.no_grad():
                    for p in params.parameters():
                        p.grad[~active] = 0.0
                        p.grad.nan_to_num_(0.0, 0.0, 0.0)
                opt.step()
                for k in range(b):
                    if not active[k]:
                        params.restore(k, good)
            with torch.no_grad():
                rgb, flow = params.rgb(), params.flow()
                acts = capture.run(_model_inputs(rgb, flow, mean, std))
                final = _objective_values(jobs, acts)
                regs = regularizer_values(rgb, flow, config.reg)
    finally:
        for p, on in zip(module.parameters(), grads_on, strict=True):
            p.requires_grad_(on)
    seconds = (time.perf_counter() - began) / b
    out = []
    for k, job in enumerate(jobs):
        out.append(Rendered(
            job, rgb[k].detach().clone(), None if flow is None else flow[k].detach().clone(), float(final[k]),
            {name: float(v[k]) for name, v in regs.items()}, history[k],
            "ok" if stopped[k] is None else "nan", stopped[k], seconds))
    return out


def render(module: nn.Module, jobs: Sequence[Job], frames: int, size: int, mean, std, two_stream: bool,
           config: RenderConfig, progress=None, layout: Layout = channels_first) -> list[Rendered]:
    """All jobs in batches of ``config.batch`` (in order)."""
    results: list[Rendered] = []
    for start in range(0, len(jobs), config.batch):
        chunk = jobs[start:start + config.batch]
        results.extend(render_batch(module, chunk, frames, size, mean, std, two_stream, config, layout))
        if progress is not None:
            progress(len(results), len(jobs))
    return results


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [0, 1] → uint8 (T, H, W, 3)."""
    return (rgb.clamp(0, 1).permute(1, 2, 3, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
