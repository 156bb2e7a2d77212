"""Input parameterizations: an RGB video (pixels or a space-time Fourier basis with 1/f scaling and decorrelated colour)
and, for two-stream models, a flow stack bounded to ±20 px, optimized jointly.

A ``VideoParam`` holds raw leaf tensors, one batch element per target, each initialized from its target's own seed (so
a target gets the same start whether it is optimized alone or in a batch). ``rgb()`` gives (B, 3, T, H, W) in [0, 1]
(a sigmoid of the raw values), ``flow()`` (B, 2, N, H, W) in pixels, ``20·tanh`` of the raw values.

The render loop takes a parameterization as a factory, ``seeds → Parameterization`` (lucent's ``param_f``);
``video_param(kind, ...)`` is the factory of the built-in ones. A new parameterization is a new factory: any object
with ``parameters()``, ``rgb()`` and ``flow()`` as below, whose parameters have the batch (one job each) first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from stlens.errors import StlensError
from stlens.video.flow import FLOW_BOUND

PARAMS = ("pixel", "fourier")

#: square root of an RGB colour-correlation matrix (natural images; the matrix lucid/lucent use to decorrelate colour)
COLOR_CORRELATION_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


def color_matrix() -> torch.Tensor:
    """The colour-correlation square root with its largest column norm scaled to 1."""
    m = torch.tensor(COLOR_CORRELATION_SQRT, dtype=torch.float32)
    return m / m.norm(dim=0).max()


def spectrum_scale(frames: int, height: int, width: int, decay: float = 1.0) -> torch.Tensor:
    """1/f^decay weights of the rfftn(T, H, W) coefficients, f = |(f_t, f_y, f_x)| in cycles/sample, floored at
    1/max(T, H, W) (so the DC term gets the largest weight, max(T, H, W)^decay)."""
    ft = torch.fft.fftfreq(frames)[:, None, None]
    fy = torch.fft.fftfreq(height)[None, :, None]
    fx = torch.fft.rfftfreq(width)[None, None, :]
    f = torch.sqrt(ft ** 2 + fy ** 2 + fx ** 2)
    return 1.0 / f.clamp_min(1.0 / max(frames, height, width)) ** decay


class Parameterization(Protocol):
    """What the render loop optimizes for ``B`` jobs: leaf tensors (batch first) and the inputs they give."""

    def parameters(self) -> list[torch.Tensor]:
        """The leaf tensors to optimize, each (B, ...): element k belongs to job k."""

    def rgb(self) -> torch.Tensor:
        """(B, 3, T, H, W) in [0, 1]."""

    def flow(self) -> torch.Tensor | None:
        """(B, 2, N, H, W) flow in pixels for two-stream models, None for RGB-only models."""


ParamFactory = Callable[[Sequence[int]], Parameterization]
"""seeds (one per job) → the parameterization of those jobs, element k drawn from ``seeds[k]`` alone."""


def _raw(kind: str, channels: int, shape: tuple[int, int, int], seeds: Sequence[int], sd: float,
         device: torch.device | None = None) -> torch.Tensor:
    """Raw parameters (B, ...) — element k drawn from ``torch.Generator().manual_seed(seeds[k])`` (on the CPU, so
    the start is the same on every device), then put on ``device``."""
    frames, height, width = shape
    if kind == "pixel":
        size: tuple[int, ...] = (channels, frames, height, width)
    else:
        size = (channels, frames, height, width // 2 + 1, 2)
    out = [torch.randn(size, generator=torch.Generator().manual_seed(int(s))) * sd for s in seeds]
    return torch.stack(out).to(device).requires_grad_(True)


@dataclass
class VideoParam:
    """RGB video (and optionally a flow stack) for ``len(seeds)`` targets; see the module docstring."""

    kind: str
    frames: int
    size: int
    seeds: Sequence[int]
    flow_fields: int | None = None  # N flow fields (two-stream models), None for RGB-only models
    sd: float = 0.01
    decay: float = 1.0
    flow_bound: float = FLOW_BOUND
    device: torch.device | None = None  # where the parameters live (default the CPU)

    def __post_init__(self) -> None:
        if self.kind not in PARAMS:
            raise StlensError(f"unknown parameterization '{self.kind}'; choices: {', '.join(PARAMS)}")
        self.rgb_raw = _raw(self.kind, 3, (self.frames, self.size, self.size), self.seeds, self.sd, self.device)
        self.flow_raw = None
        if self.flow_fields is not None:
            flow_seeds = [s + 7_919 for s in self.seeds]
            self.flow_raw = _raw(self.kind, 2, (self.flow_fields, self.size, self.size), flow_seeds, self.sd,
                                 self.device)
        self._colour = color_matrix().to(self.device)
        self._scale_rgb = spectrum_scale(self.frames, self.size, self.size, self.decay).to(self.device)
        self._scale_flow = (spectrum_scale(self.flow_fields, self.size, self.size, self.decay).to(self.device)
                            if self.flow_fields is not None else None)

    def parameters(self) -> list[torch.Tensor]:
        return [p for p in (self.rgb_raw, self.flow_raw) if p is not None]

    def _spatial(self, raw: torch.Tensor, scale: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        if self.kind == "pixel":
            return raw
        spectrum = torch.view_as_complex(raw.contiguous()) * scale
        return torch.fft.irfftn(spectrum, s=shape, dim=(-3, -2, -1), norm="ortho") / 4.0

    def rgb(self) -> torch.Tensor:
        """(B, 3, T, H, W) in [0, 1]; the Fourier version is colour-decorrelated before the sigmoid."""
        x = self._spatial(self.rgb_raw, self._scale_rgb, (self.frames, self.size, self.size))
        if self.kind == "fourier":
            x = torch.einsum("dc,bcthw->bdthw", self._colour, x)
        return torch.sigmoid(x)

    def flow(self) -> torch.Tensor | None:
        """(B, 2, N, H, W) flow in pixels, each component in (−bound, bound); None for RGB-only models."""
        if self.flow_raw is None:
            return None
        x = self._spatial(self.flow_raw, self._scale_flow, (self.flow_fields, self.size, self.size))
        return self.flow_bound * torch.tanh(x)


def video_param(kind: str, frames: int, size: int, flow_fields: int | None = None, **options) -> ParamFactory:
    """The factory of a built-in parameterization: seeds → ``VideoParam(kind, frames, size, seeds, flow_fields,
    **options)`` (``kind``: pixel | fourier, checked here, before any rendering)."""
    if kind not in PARAMS:
        raise StlensError(f"unknown parameterization '{kind}'; choices: {', '.join(PARAMS)}")

    def make(seeds: Sequence[int]) -> VideoParam:
        return VideoParam(kind, frames, size, seeds, flow_fields=flow_fields, **options)

    return make


def normalize_rgb(rgb: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[0, 1] video (B, 3, T, H, W) → the model's input, (x − mean)/std per channel."""
    m = torch.tensor(mean, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1, 1)
    s = torch.tensor(std, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1, 1)
    return (rgb - m) / s


def encode_flow_input(flow: torch.Tensor, bound: float = FLOW_BOUND) -> torch.Tensor:
    """Flow in pixels → the two-stream input (``stlens.video.flow.encode_flow``: clip to ±bound, /bound)."""
    return flow.clamp(-bound, bound) / bound

