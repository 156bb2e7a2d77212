"""SlowFast (Feichtenhofer et al., ICCV 2019), small: a wide Slow pathway on every α-th frame and a narrow Fast pathway
(β of the channels) on all frames, with lateral Fast→Slow connections."""

from __future__ import annotations

import torch
from torch import nn

from stlens.models.zoo.blocks import BasicBlock, ConvBNReLU, align, widths


class Lateral(nn.Module):
    """Fast→Slow connection: a time-strided conv (kernel 5×1×1, stride α, 2·C_fast channels out) whose output is
    concatenated to the Slow features. With T fast frames it gives ⌈T/α⌉ frames, the Slow length."""

    def __init__(self, fast_channels: int, alpha: int):
        super().__init__()
        self.conv = ConvBNReLU(fast_channels, 2 * fast_channels, (5, 1, 1), stride=(alpha, 1, 1))

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        lateral = self.conv(fast)
        return torch.cat([slow, align(lateral, slow.shape[2:])], dim=1)


class SlowFastStem(nn.Module):
    """(B, 3, T, H, W) → ``[slow, fast]``: the Slow input is frames 0, α, 2α, … (done here, inside the model); Slow
    conv 1×5×5, Fast conv 5×5×5, both spatial stride 2 then a (1, 2, 2) max-pool; then the Fast→Slow lateral."""

    def __init__(self, slow_channels: int, fast_channels: int, alpha: int):
        super().__init__()
        self.alpha = alpha
        def pool() -> nn.Module:
            return nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

        self.slow = nn.Sequential(ConvBNReLU(3, slow_channels, (1, 5, 5), stride=(1, 2, 2)), pool())
        self.fast = nn.Sequential(ConvBNReLU(3, fast_channels, (5, 5, 5), stride=(1, 2, 2)), pool())
        self.lateral = Lateral(fast_channels, alpha)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        slow, fast = self.slow(x[:, :, :: self.alpha]), self.fast(x)
        return [self.lateral(slow, fast), fast]


class SlowFastStage(nn.Module):
    """One stage of both pathways, taking and returning ``[slow, fast]``: residual blocks (Slow temporal kernel
    ``slow_kt``, 1 in early stages as in the paper; Fast always 3), then the Fast→Slow lateral (absent in the last
    stage, as in the paper), so the returned Slow tensor has ``slow_out + 2·fast_out`` channels when fused."""

    def __init__(self, slow_in: int, fast_in: int, slow_out: int, fast_out: int, stride: int, slow_kt: int,
                 blocks: int, alpha: int, lateral: bool):
        super().__init__()
        self.slow = nn.Sequential(*[BasicBlock(slow_in if i == 0 else slow_out, slow_out, (1, stride, stride) if i == 0
                                               else 1, kt=slow_kt, kt2=1) for i in range(blocks)])
        self.fast = nn.Sequential(*[BasicBlock(fast_in if i == 0 else fast_out, fast_out, (1, stride, stride) if i == 0
                                               else 1, kt=3, kt2=1) for i in range(blocks)])
        self.lateral = Lateral(fast_out, alpha) if lateral else None

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        slow, fast = self.slow(x[0]), self.fast(x[1])
        if self.lateral is not None:
            slow = self.lateral(slow, fast)
        return [slow, fast]


class SlowFastHead(nn.Module):
    """Global average of each pathway over T, H, W, concatenated, dropout, linear."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([p.mean(dim=(2, 3, 4)) for p in x], dim=1)
        return self.fc(self.dropout(pooled))


class SlowFast(nn.Module):
    """SlowFast: Slow pathway on T/α frames (α = 4) with widths w·(1, 2, 4, 8), Fast pathway on all T frames with
    β = 1/8 of those widths; lateral time-strided convs feed Fast into Slow after the stem and stages 1–3. As in the
    paper the Slow pathway has no temporal convs in its early stages (stem, stages 1–2: kernel 1 in time), only in
    stages 3–4 (first conv of each block 3×3×3); the Fast pathway has temporal kernels everywhere. No temporal stride.

    Every stage outputs ``[slow, fast]``, so tapping ``stage2`` gives latents ``stage2.0`` (Slow, with the fused
    lateral channels) and ``stage2.1`` (Fast). Temporal receptive field (input frames, 1 block per stage, stem and
    stages 1–4): Fast 5, 7, 9, 11, 13; Slow with the laterals 9, 11, 13, 21, 29 (its own convs see 1 frame until stage
    3; the rest comes through the laterals).
    """

    default_layers = ["stem", "stage1", "stage2", "stage3", "stage4"]

    def __init__(self, num_classes: int = 8, width: int = 32, alpha: int = 4, beta: float = 0.125, blocks: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        slow_w = widths(width)
        fast_w = [max(2, round(c * beta)) for c in slow_w]
        fast_stem = max(2, round(width * beta))
        self.stem = SlowFastStem(width, fast_stem, alpha)
        slow_in, fast_in = width + 2 * fast_stem, fast_stem
        stages = []
        for i, (slow_out, fast_out) in enumerate(zip(slow_w, fast_w, strict=True)):
            last = i == 3
            stages.append(SlowFastStage(slow_in, fast_in, slow_out, fast_out, stride=1 if i == 0 else 2,
                                        slow_kt=1 if i < 2 else 3, blocks=blocks, alpha=alpha, lateral=not last))
            slow_in, fast_in = slow_out + (0 if last else 2 * fast_out), fast_out
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.head = SlowFastHead(slow_in + fast_in, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            x = stage(x)
        return self.head(x)
