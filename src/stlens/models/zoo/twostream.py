"""Two-stream (RGB + optical flow) 3-D conv net with selectable fusion: late concatenation, or motion→appearance
cross connections that are additive (ST-ResNet) or multiplicative (ST-Multiplier)."""

from __future__ import annotations

import torch
from torch import nn

from stlens.models.zoo.blocks import BasicBlock, ClassifierHead, ConvBNReLU, Stem, align, widths

FUSIONS = ("concat", "additive", "multiplicative")


class Stream(nn.Module):
    """One I3D-like stream: ``stem → stage1 … stage4`` (3×3×3 basic blocks, temporal stride 2 in stages 3 and 4)."""

    def __init__(self, in_channels: int, width: int, blocks: int = 1):
        super().__init__()
        self.stem = Stem(in_channels, width, (3, 5, 5))
        cin, stages = width, []
        for cout, stride in zip(widths(width), [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)], strict=True):
            stages.append(nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, kt=3)
                                          for i in range(blocks)]))
            cin = cout
        self.stage1, self.stage2, self.stage3, self.stage4 = stages

    def stages(self) -> list[nn.Module]:
        return [self.stage1, self.stage2, self.stage3, self.stage4]


class Connection(nn.Module):
    """Motion→appearance connection: a 1×1×1 conv of the flow features, resampled to the RGB features' (T, H, W),
    injected into the RGB features: ``additive``: rgb + conv(flow); ``multiplicative``: rgb · 2σ(conv(flow)) (a gate
    in (0, 2), the identity when the conv output is 0)."""

    def __init__(self, channels: int, mode: str):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv3d(channels, channels, 1)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        motion = self.conv(align(flow, rgb.shape[2:]))
        if self.mode == "additive":
            return rgb + motion
        return rgb * (2 * torch.sigmoid(motion))


class Fusion(nn.Module):
    """Merges the last-stage features: the flow features are resampled to the RGB (T, H, W) (N flow fields vs. T
    frames), then ``concat``: 1×1×1 conv of [rgb, flow] along channels; ``additive``/``multiplicative``: the
    motion→appearance connection, then a 1×1×1 conv; BN and ReLU after the conv. Output (B, C, T', H', W')."""

    def __init__(self, channels: int, mode: str):
        super().__init__()
        self.mode = mode
        self.connection = None if mode == "concat" else Connection(channels, mode)
        self.conv = ConvBNReLU(2 * channels if mode == "concat" else channels, channels, 1)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        if self.connection is None:
            return self.conv(torch.cat([rgb, align(flow, rgb.shape[2:])], dim=1))
        return self.conv(self.connection(rgb, flow))


class TwoStream(nn.Module):
    """Two-stream network: ``forward(rgb (B, 3, T, H, W), flow (B, 2, N, H, W))`` → logits, any N ≥ 1 (N = T − 1 for
    flow between the sampled frames). Both streams are I3D-like (``rgb.*`` and ``flow.*``), widths w·(1, 2, 4, 8).

    ``fusion``:
    - ``concat`` — late fusion only (two-stream fusion, Feichtenhofer et al. 2016): the streams are independent until
      ``fusion`` concatenates their stage-4 features; ``rgb.*`` layers then carry appearance only.
    - ``additive`` — ST-ResNet (Feichtenhofer et al. 2016b): after stages 1–3, ``rgb = rgb + conv1x1(flow)``
      (``connections.0-2``); the fusion injects stage 4 the same way.
    - ``multiplicative`` — ST-Multiplier gating (Feichtenhofer et al. 2017): ``rgb = rgb · 2σ(conv1x1(flow))``.
    Flow features are resampled (trilinear) to the RGB features' (T, H, W) wherever the two meet.

    Temporal receptive field per stream (frames or flow fields): stem 3, stage1 7, stage2 11, stage3 17, stage4 29; with
    cross connections, ``rgb.stage{k+1}`` also sees what the flow stream's stage k saw.
    """

    def __init__(self, num_classes: int = 8, width: int = 16, fusion: str = "concat", blocks: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}'; choices: {', '.join(FUSIONS)}")
        self.fusion_mode = fusion
        self.rgb = Stream(3, width, blocks)
        self.flow = Stream(2, width, blocks)
        w = widths(width)
        self.connections = nn.ModuleList([] if fusion == "concat" else [Connection(c, fusion) for c in w[:3]])
        self.fusion = Fusion(w[-1], fusion)
        self.head = ClassifierHead(w[-1], num_classes, dropout)
        self.default_layers = ["rgb.stage2", "rgb.stage3", "rgb.stage4", "flow.stage2", "flow.stage3", "flow.stage4",
                               "fusion"]

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        a, m = self.rgb.stem(rgb), self.flow.stem(flow)
        stages = list(zip(self.rgb.stages(), self.flow.stages(), strict=True))
        for k, (rgb_stage, flow_stage) in enumerate(stages):
            a, m = rgb_stage(a), flow_stage(m)
            if k < len(self.connections):
                a = self.connections[k](a, m)
        return self.head(self.fusion(a, m))
