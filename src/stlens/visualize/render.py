"""The optimizer loop: K jobs (objective, seed, λ_T) optimized in one batch, one job per batch element.

The loop takes its parameterization and its optimizer as objects (lucent's shape): ``param``, seeds → a
``Parameterization`` (``stlens.visualize.params``), and ``optimizer``, parameters → a ``torch.optim.Optimizer``.
``render`` resolves the string settings of ``RenderConfig`` (``param="fourier"``, ``optimizer="adam"``) to those
objects before the loop, so a new parameterization or optimizer is a new factory, not a change to the loop.

Batch elements never interact (models run in eval mode), each job draws its start and its transforms from its own
seed, and its regularizer weights are its own: a job gives the same result batched or alone, up to floating-point
differences of batched kernels (see docs/visualize.md). A job whose objective or penalty turns NaN/inf is stopped at
its last finite input and reported; the others go on.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field

import numpy as np
import torch
from torch import nn

from stlens.core.device import autocast
from stlens.core.handle import Layout, channels_first, module_device
from stlens.errors import StlensError
from stlens.models.taps import flatten_output, resolve_layers
from stlens.visualize.objectives import LOGITS, Objective
from stlens.visualize.params import (
    PARAMS,
    Parameterization,
    ParamFactory,
    encode_flow_input,
    normalize_rgb,
    video_param,
)
from stlens.visualize.regularizers import Regularization, penalty, regularizer_values
from stlens.visualize.transforms import Transforms, apply, draw

OptimizerFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
"""parameters → the optimizer that updates them (lucent's ``optimizer``), e.g.
``lambda params: torch.optim.Adam(params, lr=0.05)``."""


@dataclass(frozen=True)
class Job:
    """One visualization: maximize ``objective`` from the start drawn with ``seed`` under temporal weight
    ``temporal_reg`` (λ_T; large = slow, small = fast)."""

    objective: Objective
    seed: int
    temporal_reg: float
    label: str = ""


def deprecated_batch(batch: int | None, batch_size: int, default: int, stacklevel: int = 3) -> int:
    """``batch`` is the deprecated spelling of ``batch_size``: warn (``stacklevel`` as in ``warnings.warn`` called
    here; 3 = the caller of the function that took ``batch``), and use it (an error if ``batch_size`` was also given
    with another value)."""
    if batch is None:
        return batch_size
    warnings.warn("batch= is deprecated, use batch_size= (the same name as in stlens.measure)", FutureWarning,
                  stacklevel=stacklevel)
    if batch_size != default and batch_size != batch:
        raise StlensError(f"batch={batch} and batch_size={batch_size} disagree; pass batch_size only")
    return batch


@dataclass
class RenderConfig:
    """The loop's settings. ``param`` and ``optimizer``: a built-in's name (``PARAMS``, ``OPTIMIZERS``) or a factory
    (``ParamFactory``: seeds → parameterization; ``OptimizerFactory``: parameters → optimizer, ``lr`` then unused).
    ``batch_size``: jobs optimized together (``batch`` is its deprecated alias)."""

    steps: int = 256
    lr: float = 0.05
    param: str | ParamFactory = "fourier"
    optimizer: str | OptimizerFactory = "adam"
    batch_size: int = 8
    precision: str = "fp32"
    reg: Regularization = field(default_factory=Regularization)
    transforms: Transforms = field(default_factory=Transforms)
    batch: InitVar[int | None] = None

    def __post_init__(self, batch: int | None) -> None:
        self.batch_size = deprecated_batch(batch, self.batch_size, 8, stacklevel=4)
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise StlensError(f"steps and batch_size must be ≥ 1 and lr > 0, got {self.steps}, {self.batch_size}, "
                              f"{self.lr}")
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            raise StlensError(f"unknown optimizer '{self.optimizer}'; choices: {', '.join(OPTIMIZERS)}")
        if isinstance(self.param, str) and self.param not in PARAMS:
            raise StlensError(f"unknown parameterization '{self.param}'; choices: {', '.join(PARAMS)}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise StlensError(f"unknown precision '{self.precision}'; choices: fp32, bf16, fp16 (visualize resolves "
                              f"auto)")


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


OPTIMIZERS: dict[str, Callable[[list[torch.Tensor], float], torch.optim.Optimizer]] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "mv": lambda params, lr: MomentumAdaGrad(params, lr=lr),
}
"""The built-in optimizers by name: (parameters, lr) → optimizer."""


def param_factory(param: str | ParamFactory, frames: int, size: int, two_stream: bool,
                  device: torch.device | None = None) -> ParamFactory:
    """``param`` as a factory: a name of ``PARAMS`` gives ``video_param`` (RGB, plus a flow stack of frames − 1
    fields for two-stream models) on ``device`` (the model's; default the CPU); a factory is returned as it is."""
    if callable(param):
        return param
    return video_param(param, frames, size, flow_fields=frames - 1 if two_stream else None, device=device)


def optimizer_factory(optimizer: str | OptimizerFactory, lr: float) -> OptimizerFactory:
    """``optimizer`` as a factory: a name of ``OPTIMIZERS`` with learning rate ``lr``; a factory as it is."""
    if callable(optimizer):
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise StlensError(f"unknown optimizer '{optimizer}'; choices: {', '.join(OPTIMIZERS)}")
    make = OPTIMIZERS[optimizer]
    return lambda params: make(params, lr)


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


def _model_inputs(rgb: torch.Tensor, flow: torch.Tensor | None, mean, std,
                  device: torch.device | None = None) -> list[torch.Tensor]:
    """The model's inputs, on ``device`` (the model's) when the parameterization lives elsewhere (a user factory that
    makes CPU tensors): the copy is differentiable."""
    inputs = [normalize_rgb(rgb, mean, std)]
    if flow is not None:
        inputs.append(encode_flow_input(flow))
    return inputs if device is None else [x.to(device) for x in inputs]


def _objective_values(jobs: Sequence[Job], acts: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([job.objective(_slice(acts, k)).float().reshape(1) for k, job in enumerate(jobs)])


def _restore(params: Parameterization, index: int, saved: Sequence[torch.Tensor]) -> None:
    """Put back element ``index`` of every parameter from ``saved`` (a snapshot of ``params.parameters()``)."""
    with torch.no_grad():
        for param, old in zip(params.parameters(), saved, strict=True):
            param[index] = old[index]


def render_batch(module: nn.Module, jobs: Sequence[Job], param: ParamFactory, optimizer: OptimizerFactory, mean, std,
                 config: RenderConfig, layout: Layout = channels_first) -> list[Rendered]:
    """Optimize ``jobs`` together (one batch element each) on the input ``param([job.seed ...])``, updated by
    ``optimizer(parameters)``; see the module docstring. Of ``config`` the loop reads steps, precision, reg and
    transforms (its param, optimizer, lr and batch_size are resolved by ``render``)."""
    began = time.perf_counter()
    b = len(jobs)
    layers = list(dict.fromkeys(name for job in jobs for name in job.objective.layers))
    params = param([job.seed for job in jobs])
    opt = optimizer(params.parameters())
    model_device = module_device(module)
    work = params.parameters()[0].device  # where the input, the transforms and the regularizers are computed
    gens = [torch.Generator().manual_seed(job.seed + 1_000_003) for job in jobs]  # CPU draws: the same on any device
    temporal_reg = torch.tensor([job.temporal_reg for job in jobs], dtype=torch.float32, device=work)
    active = torch.ones(b, dtype=torch.bool, device=work)
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
                with autocast(model_device, config.precision):
                    acts = capture.run(_model_inputs(rgb_t, flow_t, mean, std, model_device))
                values = _objective_values(jobs, acts).to(work)
                loss_each = penalty(regularizer_values(rgb, flow, config.reg), config.reg, temporal_reg) - values
                finite = torch.isfinite(loss_each)
                for k in range(b):
                    history[k].append(float(values[k].detach()) if active[k] else float("nan"))
                    if active[k] and not finite[k]:
                        active[k], stopped[k] = False, step
                        _restore(params, k, good)
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
                        _restore(params, k, good)
            with torch.no_grad():
                rgb, flow = params.rgb(), params.flow()
                acts = capture.run(_model_inputs(rgb, flow, mean, std, model_device))
                final = _objective_values(jobs, acts).to(work)
                regs = regularizer_values(rgb, flow, config.reg)
    finally:
        for p, on in zip(module.parameters(), grads_on, strict=True):
            p.requires_grad_(on)
    seconds = (time.perf_counter() - began) / b
    out = []
    for k, job in enumerate(jobs):
        out.append(Rendered(
            job, rgb[k].detach().cpu().clone(), None if flow is None else flow[k].detach().cpu().clone(),
            float(final[k]),
            {name: float(v[k]) for name, v in regs.items()}, history[k],
            "ok" if stopped[k] is None else "nan", stopped[k], seconds))
    return out


def render(module: nn.Module, jobs: Sequence[Job], frames: int, size: int, mean, std, two_stream: bool,
           config: RenderConfig, progress=None, layout: Layout = channels_first) -> list[Rendered]:
    """All jobs in batches of ``config.batch_size`` (in order). ``config.param`` and ``config.optimizer`` are resolved
    to factories here (``frames``, ``size`` and ``two_stream`` shape the built-in parameterizations only)."""
    param = param_factory(config.param, frames, size, two_stream, module_device(module))
    optimizer = optimizer_factory(config.optimizer, config.lr)
    results: list[Rendered] = []
    for start in range(0, len(jobs), config.batch_size):
        chunk = jobs[start:start + config.batch_size]
        results.extend(render_batch(module, chunk, param, optimizer, mean, std, config, layout))
        if progress is not None:
            progress(len(results), len(jobs))
    return results


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [0, 1] → uint8 (T, H, W, 3)."""
    return (rgb.clamp(0, 1).permute(1, 2, 3, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
