"""``stlens:seg3d``: an RGB-only video segmenter — a 3-D conv encoder over the clip and the mask decoder of
``stlens:avos``, giving per-frame mask logits; the one-stream reference for the two-stream segmenters."""

from __future__ import annotations

import torch
from torch import nn

from stlens.models.zoo.blocks import BasicBlock, ConvBNReLU, widths
from stlens.models.zoo.seghead import SEG_INPUT, SEG_STRIDES, MaskDecoder

STAGE_NAMES = ["stage1", "stage2", "stage3", "stage4"]


class Seg3D(nn.Module):
    """``forward(clip (B, 3, T, H, W))`` → mask logits (B, T, H, W) at the input resolution.

    ``stem`` (a (kt, 5, 5) conv, spatial stride 2), ``stage1…4`` (3-D basic blocks with temporal kernel ``kt``, widths
    w, 2w, 4w, 8w, spatial stride 2 in stages 2–4, no temporal stride), ``decoder`` (``MaskDecoder`` on the four
    stage maps, width 2w). The encoder is the appearance stream of ``stlens:avos`` with the same options. Default
    layers: ``stage1–4``. Temporal receptive field (frames, ``kt=3``, 1 block per stage): stem 3, stage1 7, stage2 11,
    stage3 15, stage4 19.
    """

    input_spec = SEG_INPUT
    default_layers = STAGE_NAMES

    def __init__(self, width: int = 8, blocks: int = 1, kt: int = 3):
        super().__init__()
        if kt % 2 == 0:
            raise ValueError(f"kt must be odd (the time axis is kept), got {kt}")
        self.stem = ConvBNReLU(3, width, (kt, 5, 5), stride=(1, 2, 2))
        cin = width
        for name, cout, stride in zip(STAGE_NAMES, widths(width), SEG_STRIDES, strict=True):
            setattr(self, name, nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1,
                                                           kt=kt) for i in range(blocks)]))
            cin = cout
        self.decoder = MaskDecoder(widths(width), 2 * width)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x, features = self.stem(clip), []
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            features.append(x)
        return self.decoder(features, tuple(clip.shape[2:]))
