"""Single-pathway convolutional video nets: C2D, I3D (ResNet-style 3-D), R(2+1)D and X3D, all laid out as
``stem → stage1 → stage2 → stage3 → stage4 → head``.

Common shape at the default input (B, 3, 16, 64, 64): the stem takes H, W to 16×16; stage1 keeps it; stages 2–4 halve
it (8, 4, 2 px); channels w, 2w, 4w, 8w. ``head`` = global average over T, H, W + linear. Temporal receptive fields
below are counted in input frames for one output position of the named layer.
"""

from __future__ import annotations

import torch
from torch import nn

from stlens.models.zoo.blocks import BasicBlock, Block2Plus1d, ClassifierHead, ConvBNReLU, Stem, X3DBlock, widths

STAGE_LAYERS = ["stem", "stage1", "stage2", "stage3", "stage4"]


class StagedNet(nn.Module):
    """``head(stage4(stage3(stage2(stage1(stem(x))))))`` for (B, 3, T, H, W) clips."""

    default_layers = STAGE_LAYERS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            x = stage(x)
        return self.head(x)


def _stages(block, stem_width: int, stage_widths: list[int], strides: list[tuple[int, int, int]], blocks: int,
            **kwargs) -> list[nn.Sequential]:
    stages, cin = [], stem_width
    for cout, stride in zip(stage_widths, strides, strict=True):
        units = [block(cin, cout, stride, **kwargs)] + [block(cout, cout, 1, **kwargs) for _ in range(blocks - 1)]
        stages.append(nn.Sequential(*units))
        cin = cout
    return stages


class C2D(StagedNet):
    """C2D: a 2-D ResNet applied to every frame independently — every conv has kernel (1, k, k) and stride 1 in time —
    and the only temporal operation is the global average over T, H, W before the linear head.

    Temporal receptive field: 1 frame at every tapped layer. Logits are invariant to the order of the frames by
    construction (BatchNorm is per channel, the pooling is a mean), so a frame-shuffled clip gives the same output: the
    reference *static-only* network.
    """

    def __init__(self, num_classes: int = 8, width: int = 16, blocks: int = 1, dropout: float = 0.0):
        super().__init__()
        w = widths(width)
        self.stem = Stem(3, width, (1, 5, 5))
        self.stage1, self.stage2, self.stage3, self.stage4 = _stages(
            BasicBlock, width, w, [(1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2)], blocks, kt=1)
        self.head = ClassifierHead(w[-1], num_classes, dropout)


class I3D(StagedNet):
    """I3D-style 3-D ResNet (R3D-like): every conv is 3×3×3 (stem 3×5×5); stages 3 and 4 also stride 2 in time
    (T: 16 → 16, 16, 8, 4 across stages 1–4).

    Temporal receptive field (frames, 1 block per stage): stem 3, stage1 7, stage2 11, stage3 17, stage4 29.
    """

    def __init__(self, num_classes: int = 8, width: int = 16, blocks: int = 1, dropout: float = 0.0):
        super().__init__()
        w = widths(width)
        self.stem = Stem(3, width, (3, 5, 5))
        self.stage1, self.stage2, self.stage3, self.stage4 = _stages(
            BasicBlock, width, w, [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)], blocks, kt=3)
        self.head = ClassifierHead(w[-1], num_classes, dropout)


class R2Plus1D(StagedNet):
    """R(2+1)D: every 3×3×3 conv factorized into a spatial 1×3×3 conv to ``mid`` channels, BN, ReLU, and a temporal
    3×1×1 conv (mid chosen so that the pair has the parameters of the full 3-D conv, Tran et al. 2018); the stem is
    1×5×5 then 3×1×1. Same strides as I3D (temporal stride 2 in stages 3 and 4).

    Temporal receptive field (frames, 1 block per stage): stem 3, stage1 7, stage2 11, stage3 17, stage4 29.
    """

    def __init__(self, num_classes: int = 8, width: int = 16, blocks: int = 1, dropout: float = 0.0):
        super().__init__()
        w = widths(width)
        mid = max(8, width // 2)
        self.stem = nn.Sequential(
            ConvBNReLU(3, mid, (1, 5, 5), stride=(1, 2, 2)),
            ConvBNReLU(mid, width, (3, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.stage1, self.stage2, self.stage3, self.stage4 = _stages(
            Block2Plus1d, width, w, [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)], blocks)
        self.head = ClassifierHead(w[-1], num_classes, dropout)


class X3D(StagedNet):
    """X3D-like (Feichtenhofer 2020, XS/S flavour): a 1×3×3 conv, a max-pool and a depthwise 5×1×1 temporal conv as
    stem, then
    stages of depthwise-separable bottlenecks (expand 1×1×1 by ``expansion``, depthwise 3×3×3, squeeze-excite on every
    other block, project 1×1×1) on narrow channels; full temporal resolution throughout (no temporal stride). Unlike
    X3D there is no 1×1×1 expansion before the pool and ReLU replaces swish.

    Temporal receptive field of the convolutions (frames, blocks (1, 2, 2, 2)): stem 5, stage1 7, stage2 11, stage3 15,
    stage4 19; with ``se=True`` (default) the squeeze-excite gates pool over the whole clip, so from stage1 on every
    output is modulated by all T frames.
    """

    def __init__(self, num_classes: int = 8, width: int = 24, expansion: float = 2.25,
                 blocks: tuple[int, int, int, int] | int = (1, 2, 2, 2), se: bool = True, dropout: float = 0.0):
        super().__init__()
        counts = [blocks] * 4 if isinstance(blocks, int) else list(blocks)
        w = widths(width)
        self.stem = nn.Sequential(
            ConvBNReLU(3, width, (1, 3, 3), stride=(1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            ConvBNReLU(width, width, (5, 1, 1), groups=width),
        )
        cin, stages = width, []
        for cout, count, spatial in zip(w, counts, (1, 2, 2, 2), strict=True):
            units = []
            for i in range(count):
                units.append(X3DBlock(cin, cout, round(cout * expansion), stride=(1, spatial, spatial) if i == 0 else 1,
                                      se=se and i % 2 == 0))
                cin = cout
            stages.append(nn.Sequential(*units))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.head = ClassifierHead(w[-1], num_classes, dropout)
