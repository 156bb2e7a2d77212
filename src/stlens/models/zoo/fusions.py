"""Stage fusions of the two-stream segmenter ``stlens:avos`` (after the official code of Kowal et al., TPAMI 2024,
``models/vos_models/fusions.py``), on (B, C, T, H, W) maps of the appearance (``app``) and motion (``mot``) streams.
Every pooling, gate and spatial conv works per frame, as the image models of the paper do. Each fusion returns
(B, C, T, H, W): the 2C fused channels are brought back to C by ``reduce`` (1×1×1 conv, BN, ReLU), so every fusion
feeds the same decoder.

- ``concat`` (FusionSeg): O = reduce([app; mot]).
- ``gated`` (MATNet): U = [app; mot]; O = reduce(U + g · A_sp ⊙ (E ⊙ U)), see ``GatedAttention``.
- ``convex`` (RTNet): a channel split then a spatial split, O = reduce([app·f·x; mot·(1−f)·(1−x)]), see
  ``ChannelSplit`` and ``SpatialSplit``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlens.models.zoo.blocks import ConvBNReLU
from stlens.models.zoo.seghead import frame_conv, frame_pool, hidden_width

FUSIONS = ("concat", "gated", "convex")


class ConcatFusion(nn.Module):
    """FusionSeg: O = reduce([app; mot]); no cross-talk, the fused map only feeds the decoder."""

    def __init__(self, channels: int):
        super().__init__()
        self.reduce = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, app: torch.Tensor, mot: torch.Tensor) -> torch.Tensor:
        return self.reduce(torch.cat([app, mot], dim=1))


class GatedAttention(nn.Module):
    """MATNet's gate on U (B, C, T, H, W): O = U + g · A_sp ⊙ (E ⊙ U), per frame, where
    h = ReLU(W₁ mean_HW(U)) (``squeeze``), E = σ(W₂ h) the SE channel gate (``excite``), A_sp = σ(conv7×7(max_c(E ⊙ U)))
    the spatial gate (``spatial``) and g = σ(w_g h) the global gate (``glob``). The official code has no sigmoid on
    A_sp (a BN instead); here A_sp ∈ (0, 1) like the other gates."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = hidden_width(channels, reduction)
        self.squeeze = nn.Conv3d(channels, hidden, 1)
        self.excite = nn.Conv3d(hidden, channels, 1)
        self.glob = nn.Conv3d(hidden, 1, 1)
        self.spatial = frame_conv(1, 1, 7)

    def gates(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E (B, C, T, 1, 1), A_sp (B, 1, T, H, W), g (B, 1, T, 1, 1)), all in (0, 1)."""
        h = F.relu(self.squeeze(frame_pool(u)))
        e = torch.sigmoid(self.excite(h))
        a_sp = torch.sigmoid(self.spatial((e * u).amax(dim=1, keepdim=True)))
        return e, a_sp, torch.sigmoid(self.glob(h))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        e, a_sp, g = self.gates(u)
        return u + g * a_sp * (e * u)


class GatedFusion(nn.Module):
    """MATNet: O = reduce(``attention``([app; mot])) (see ``GatedAttention``)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.attention = GatedAttention(2 * channels, reduction)
        self.reduce = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, app: torch.Tensor, mot: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.attention(torch.cat([app, mot], dim=1)))


class ChannelSplit(nn.Module):
    """RTNet's channel gate: f = σ(W₂ ReLU(W₁ mean_HW([app; mot]))) ∈ (0, 1)^C per frame; returns (app·f, mot·(1−f)),
    a convex split per channel (app·f + mot·(1−f) = app when mot = app)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = hidden_width(2 * channels, reduction)
        self.squeeze = nn.Conv3d(2 * channels, hidden, 1)
        self.excite = nn.Conv3d(hidden, channels, 1)

    def gate(self, app: torch.Tensor, mot: torch.Tensor) -> torch.Tensor:
        """f (B, C, T, 1, 1)."""
        return torch.sigmoid(self.excite(F.relu(self.squeeze(frame_pool(torch.cat([app, mot], dim=1))))))

    def forward(self, app: torch.Tensor, mot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.gate(app, mot)
        return app * f, mot * (1 - f)


class SpatialSplit(nn.Module):
    """RTNet's spatial gate: x = σ(conv7×7([mean_c app; max_c app; mean_c mot; max_c mot])) ∈ (0, 1) per pixel (no
    bias, as in the official code); returns [app·x; mot·(1−x)] (2C channels, the official concatenation; the sum of
    the two halves is app when mot = app)."""

    def __init__(self):
        super().__init__()
        self.conv = frame_conv(4, 1, 7, bias=False)

    def gate(self, app: torch.Tensor, mot: torch.Tensor) -> torch.Tensor:
        """x (B, 1, T, H, W)."""
        stats = [app.mean(dim=1, keepdim=True), app.amax(dim=1, keepdim=True), mot.mean(dim=1, keepdim=True),
                 mot.amax(dim=1, keepdim=True)]
        return torch.sigmoid(self.conv(torch.cat(stats, dim=1)))

    def forward(self, app: torch.Tensor, mot: torch.Tensor) -> torch.Tensor:
        x = self.gate(app, mot)
        return torch.cat([app * x, mot * (1 - x)], dim=1)


class ConvexFusion(nn.Module):
    """RTNet: O = reduce(``spatial``(*``channel``(app, mot))) = reduce([app·f·x; mot·(1−f)·(1−x)])."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channel = ChannelSplit(channels, reduction)
        self.spatial = SpatialSplit()
        self.reduce = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, app: torch.Tensor, mot: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.spatial(*self.channel(app, mot)))


def make_fusion(mode: str, channels: int) -> nn.Module:
    """The fusion module ``mode`` (one of ``FUSIONS``) for two C-channel streams."""
    if mode == "concat":
        return ConcatFusion(channels)
    if mode == "gated":
        return GatedFusion(channels)
    if mode == "convex":
        return ConvexFusion(channels)
    raise ValueError(f"unknown fusion '{mode}'; choices: {', '.join(FUSIONS)}")
