"""Building blocks shared by the zoo: conv–BN–ReLU units, residual blocks (2-D per frame, 3-D, (2+1)-D, X3D) and the
classifier head. All convolutions are ``Conv3d`` on (B, C, T, H, W); a 2-D (per-frame) convolution is a kernel
(1, k, k) with stride 1 in time."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]


def triple(value: int | Triple) -> Triple:
    return (value, value, value) if isinstance(value, int) else tuple(value)


def same_padding(kernel: int | Triple) -> Triple:
    return tuple(k // 2 for k in triple(kernel))


class ConvBNReLU(nn.Sequential):
    """Conv3d (no bias) → BatchNorm3d → ReLU (``relu=False`` leaves the ReLU out, for the last unit of a block)."""

    def __init__(self, cin: int, cout: int, kernel: int | Triple, stride: int | Triple = 1, groups: int = 1,
                 relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv3d(cin, cout, kernel, stride=stride, padding=same_padding(kernel), groups=groups, bias=False),
            nn.BatchNorm3d(cout),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Stem(nn.Sequential):
    """Input unit: one conv with spatial stride 2 (kernel ``kernel``) and a (1, 2, 2) max-pool: H, W shrink by 4."""

    def __init__(self, cin: int, cout: int, kernel: Triple):
        super().__init__(ConvBNReLU(cin, cout, kernel, stride=(1, 2, 2)),
                         nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))


def shortcut(cin: int, cout: int, stride: Triple) -> nn.Module:
    """Identity when the shape is kept, otherwise a strided 1×1×1 projection with BatchNorm."""
    if cin == cout and stride == (1, 1, 1):
        return nn.Identity()
    return nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block with kernels (kt, 3, 3) then (kt2, 3, 3): ``kt = kt2 = 1`` is a per-frame 2-D block (C2D),
    3 a 3-D block (I3D/R3D). The stride (t, s, s) sits in the first conv and the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int | Triple = 1, kt: int = 3, kt2: int | None = None):
        super().__init__()
        stride = triple(stride)
        kt2 = kt if kt2 is None else kt2
        self.conv1 = ConvBNReLU(cin, cout, (kt, 3, 3), stride=stride)
        self.conv2 = ConvBNReLU(cout, cout, (kt2, 3, 3), relu=False)
        self.shortcut = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def r2plus1d_mid(cin: int, cout: int, kt: int = 3, k: int = 3) -> int:
    """Mid channels of a (2+1)-D conv with as many parameters as the full kt×k×k conv (Tran et al., CVPR 2018)."""
    return max(1, (kt * k * k * cin * cout) // (k * k * cin + kt * cout))


class Conv2Plus1d(nn.Sequential):
    """(2+1)-D factorized conv: spatial (1, k, k) cin→mid, BN, ReLU, temporal (kt, 1, 1) mid→cout (no BN/ReLU: the
    caller adds them). Spatial stride goes to the spatial conv, temporal stride to the temporal conv."""

    def __init__(self, cin: int, cout: int, mid: int, stride: Triple = (1, 1, 1), kt: int = 3, k: int = 3):
        super().__init__(
            nn.Conv3d(cin, mid, (1, k, k), stride=(1, stride[1], stride[2]), padding=(0, k // 2, k // 2), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (kt, 1, 1), stride=(stride[0], 1, 1), padding=(kt // 2, 0, 0), bias=False),
        )


class Block2Plus1d(nn.Module):
    """Residual block of two (2+1)-D convs (R(2+1)D); the stride (t, s, s) sits in the first one."""

    def __init__(self, cin: int, cout: int, stride: int | Triple = 1):
        super().__init__()
        stride = triple(stride)
        self.conv1 = nn.Sequential(Conv2Plus1d(cin, cout, r2plus1d_mid(cin, cout), stride), nn.BatchNorm3d(cout),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1d(cout, cout, r2plus1d_mid(cout, cout)), nn.BatchNorm3d(cout))
        self.shortcut = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    """Channel attention: global average over T, H, W → bottleneck MLP → sigmoid gate per channel."""

    def __init__(self, channels: int, ratio: float = 0.0625, min_hidden: int = 8):
        super().__init__()
        hidden = max(min_hidden, round(channels * ratio))
        self.reduce = nn.Conv3d(channels, hidden, 1)
        self.expand = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.relu(self.reduce(x.mean(dim=(2, 3, 4), keepdim=True))))
        return x * torch.sigmoid(gate)


class X3DBlock(nn.Module):
    """X3D bottleneck: expand 1×1×1 → depthwise 3×3×3 (carries the stride) → optional squeeze-excite → project
    1×1×1, with a residual connection. ReLU everywhere (X3D uses swish after the depthwise conv)."""

    def __init__(self, cin: int, cout: int, expanded: int, stride: int | Triple = 1, se: bool = False):
        super().__init__()
        stride = triple(stride)
        self.expand = ConvBNReLU(cin, expanded, 1)
        self.depthwise = ConvBNReLU(expanded, expanded, 3, stride=stride, groups=expanded, relu=False)
        self.se = SqueezeExcite(expanded) if se else nn.Identity()
        self.project = ConvBNReLU(expanded, cout, 1, relu=False)
        self.shortcut = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.se(self.depthwise(self.expand(x))))
        return F.relu(self.project(y) + self.shortcut(x))


class ClassifierHead(nn.Module):
    """Global average over T, H, W, dropout, linear: (B, C, T, H, W) → (B, num_classes) logits."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(F.adaptive_avg_pool3d(x, 1).flatten(1)))


def align(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resample a (B, C, T, H, W) tensor to ``size`` = (T', H', W') by trilinear interpolation (identity if equal):
    how feature maps of different temporal lengths (T frames vs. N flow fields) are brought together."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)


def widths(width: int) -> list[int]:
    """Stage widths w, 2w, 4w, 8w."""
    return [width, 2 * width, 4 * width, 8 * width]
