"""Shared parts of the segmentation models (``stlens:avos``, ``stlens:seg3d``): their input spec, a per-frame
spatial conv, the channel width of small gates, and the coarse-to-fine mask decoder."""

from __future__ import annotations

import torch
from torch import nn

from stlens.core.spec import InputSpec
from stlens.models.zoo.blocks import ConvBNReLU, align

#: 8 consecutive frames, 64×64, the zoo's normalization (mean 0.5, std 0.25 per channel)
SEG_INPUT = InputSpec(frames=8, stride=1, size=64, resize=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

#: stage strides (t, s, s): no temporal stride anywhere (one mask per frame); stages 2–4 halve H and W
SEG_STRIDES = [(1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2)]


def frame_conv(cin: int, cout: int, kernel: int, bias: bool = True) -> nn.Conv3d:
    """A per-frame 2-D conv on (B, C, T, H, W): kernel (1, k, k), 'same' padding."""
    return nn.Conv3d(cin, cout, (1, kernel, kernel), padding=(0, kernel // 2, kernel // 2), bias=bias)


def hidden_width(channels: int, reduction: int = 16, minimum: int = 4) -> int:
    """Bottleneck width of a gate: ``channels // reduction``, at least ``minimum`` (the tiny widths of the zoo)."""
    return max(minimum, channels // reduction)


def frame_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over H, W per frame: (B, C, T, H, W) → (B, C, T, 1, 1) (the 'global' pool of an image model)."""
    return x.mean(dim=(3, 4), keepdim=True)


class MaskDecoder(nn.Module):
    """Coarse-to-fine decoder: ``lateral.k`` (1×1×1 conv → ``dim`` channels) of each stage map, then from the coarsest
    m₄ = lateral₄(f₄), m_k = refine_k(lateral_k(f_k) + up(m_{k+1})) (``refine`` = per-frame 3×3 conv), and ``head``
    (per-frame 3×3 conv → 1 channel) upsampled to the input (T, H, W). Output (B, T, H, W) mask logits."""

    def __init__(self, channels: list[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList([ConvBNReLU(c, dim, 1) for c in channels])
        self.refine = nn.ModuleList([ConvBNReLU(dim, dim, (1, 3, 3)) for _ in channels[:-1]])
        self.head = frame_conv(dim, 1, 3)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int, int]) -> torch.Tensor:
        m = self.lateral[-1](features[-1])
        for k in range(len(features) - 2, -1, -1):
            lateral = self.lateral[k](features[k])
            m = self.refine[k](lateral + align(m, lateral.shape[2:]))
        return align(self.head(m), tuple(size)).squeeze(1)
