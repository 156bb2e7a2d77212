"""Random robustness transforms applied to the optimized input at every step, drawn per target from the target's own
generator: a spatial shift (jitter), a small zoom, and a temporal roll. The RGB video and the flow stack of a
two-stream model get the same transform; a zoom by s also multiplies the flow vectors by s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from stlens.errors import StlensError


@dataclass(frozen=True)
class Transforms:
    """``jitter``: shift of up to ±jitter px in x and y; ``scale``: zoom factor range; ``temporal_roll``: circular
    shift of up to ±frames along time (0 by default: the roll puts the last frame next to the first, a motion jump)."""

    jitter: int = 2
    scale: tuple[float, float] = (0.95, 1.05)
    temporal_roll: int = 0

    def __post_init__(self) -> None:
        if self.jitter < 0 or self.temporal_roll < 0:
            raise StlensError(f"jitter and temporal_roll must be ≥ 0, got {self.jitter}, {self.temporal_roll}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise StlensError(f"scale range must be 0 < lo ≤ hi, got {self.scale}")

    @property
    def identity(self) -> bool:
        return self.jitter == 0 and self.scale == (1.0, 1.0) and self.temporal_roll == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "scale": list(self.scale)}


@dataclass(frozen=True)
class Draw:
    """One step's transform for every batch element: shifts (B, 2) px (x, y), zooms (B,), rolls (B,) frames."""

    shift: torch.Tensor
    zoom: torch.Tensor
    roll: list[int]


def draw(transforms: Transforms, generators: Sequence[torch.Generator]) -> Draw:
    """Draw one transform per element, each from its own generator (same numbers batched or alone)."""
    shifts, zooms, rolls = [], [], []
    for gen in generators:
        j, r = transforms.jitter, transforms.temporal_roll
        shifts.append(torch.randint(-j, j + 1, (2,), generator=gen).float())
        lo, hi = transforms.scale
        zooms.append(lo + (hi - lo) * torch.rand((), generator=gen))
        rolls.append(int(torch.randint(-r, r + 1, (), generator=gen)))
    return Draw(torch.stack(shifts), torch.stack(zooms), rolls)


def _warp(x: torch.Tensor, d: Draw) -> torch.Tensor:
    """Zoom about the centre by d.zoom and shift by d.shift px, per element; reflection at the borders."""
    b, c, t, h, w = x.shape
    zoom, shift = d.zoom.to(x.device), d.shift.to(x.device)  # drawn on the CPU (the same numbers on any device)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0 / zoom
    theta[:, 1, 1] = 1.0 / zoom
    theta[:, 0, 2] = -2.0 * shift[:, 0] / w
    theta[:, 1, 2] = -2.0 * shift[:, 1] / h
    flat = x.reshape(b, c * t, h, w)
    grid = F.affine_grid(theta, [b, c * t, h, w], align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="reflection", align_corners=False).view_as(x)


def apply(x: torch.Tensor, d: Draw, transforms: Transforms, is_flow: bool = False) -> torch.Tensor:
    """Apply the drawn transform to a (B, D, T, H, W) video (``is_flow``: also scale the vectors by the zoom)."""
    if transforms.jitter or transforms.scale != (1.0, 1.0):
        x = _warp(x, d)
        if is_flow:
            x = x * d.zoom.view(-1, 1, 1, 1, 1).to(device=x.device, dtype=x.dtype)
    if transforms.temporal_roll and any(d.roll):
        x = torch.stack([torch.roll(x[k], r, dims=1) if r else x[k] for k, r in enumerate(d.roll)])
    return x
