"""Cross-connections of the two-stream segmenter ``stlens:avos``: cascaded co-attention between the appearance
(``app``) and motion (``mot``) streams, after the official code of Kowal et al., TPAMI 2024
(``models/vos_models/cross_connections.py``: ``CoAttention``, ``CoAttentionRecip``, ``*Gated``).

Everything is per frame: the affinity of a frame's H·W appearance positions with the same frame's H·W motion positions
((H·W)² per frame; the whole clip would cost T² times more and the paper's image models have no time axis).

One round on the stream maps (p_a, p_m), each (B, C, T, H, W):

- self-attention ``sa_*``: q = p ⊙ softmax_HW(w·p + b) (one spatial softmax per frame);
- affinity S_ij = tanh(⟨K_a q_a,i , K_m q_m,j⟩) (``key_*``: 1×1×1 convs to d = max(4, C/16) channels; i an
  appearance position, j a motion position of the same frame);
- cross terms (L2-normalized over channels at each position):
  z_a,j = norm(Σ_i q_a,i S_ij) for the appearance stream (its values, gathered by the motion queries),
  z_m,i = norm(Σ_j q_m,j S_ij) for the motion stream;
- ``gated`` (RGating): g = σ(W_g [q_a; q_m]) (one map per receiving stream) and z ← z + (q·g + q) with the
  receiving stream's own q.

``rounds`` R cascaded rounds share the weights: rounds 1…R−1 refine the inputs of the next round,
p_a ← ReLU(p_a + z_a) and p_m ← ReLU(p_m + z_m) (``recip``) or ReLU(p_m + q_m) (``uni``, as the official code); the
terms of round R are returned. The streams then become app' = ReLU(app + z_a) and, for ``recip`` only,
mot' = ReLU(mot + z_m); ``uni`` leaves the motion stream unchanged (the official code adds the motion stream's own
self-attention there, which uses no appearance; it is left out so that the motion stream stays a function of the flow
alone). The paper's models use R = 5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlens.models.zoo.seghead import hidden_width

CROSS = ("none", "uni", "recip")


def per_frame(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) → (B·T, C, H·W)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h * w)


def from_frames(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B·T, C, H·W) → (B, C, T, H, W) with the B, T, H, W of ``like``."""
    b, _, t, h, w = like.shape
    return x.reshape(b, t, -1, h, w).transpose(1, 2)


class SelfAttention(nn.Module):
    """q = p ⊙ softmax over the H·W positions of each frame of a 1×1×1 conv score (one map per frame)."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Conv3d(channels, 1, 1)

    def weights(self, p: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, H, W): each frame's map sums to 1."""
        score = self.score(p)
        return torch.softmax(score.flatten(3), dim=-1).view_as(score)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return p * self.weights(p)


class CoAttention(nn.Module):
    """Cascaded co-attention of two C-channel streams (see the module docstring). ``forward(app, mot)`` returns the
    cross terms ``{"app": z_a}`` (``uni``) or ``{"app": z_a, "mot": z_m}`` (``recip``), each (B, C, T, H, W); the
    caller adds them to the streams (``stlens.models.zoo.avos.StreamStage``)."""

    def __init__(self, channels: int, mode: str = "recip", gated: bool = False, rounds: int = 1,
                 reduction: int = 16):
        super().__init__()
        if mode not in CROSS[1:]:
            raise ValueError(f"unknown cross-connection '{mode}'; choices: {', '.join(CROSS[1:])}")
        if rounds < 1:
            raise ValueError(f"rounds must be ≥ 1, got {rounds}")
        self.mode, self.rounds = mode, rounds
        dim = hidden_width(channels, reduction)
        self.sa_app = SelfAttention(channels)
        self.sa_mot = SelfAttention(channels)
        self.key_app = nn.Conv3d(channels, dim, 1)
        self.key_mot = nn.Conv3d(channels, dim, 1)
        self.gate = nn.Conv3d(2 * channels, 2 if mode == "recip" else 1, 1) if gated else None

    def affinity(self, qa: torch.Tensor, qm: torch.Tensor) -> torch.Tensor:
        """S (B·T, H·W app positions, H·W motion positions) = tanh(K_aᵀ K_m) per frame."""
        return torch.tanh(torch.bmm(per_frame(self.key_app(qa)).transpose(1, 2), per_frame(self.key_mot(qm))))

    def gates(self, qa: torch.Tensor, qm: torch.Tensor) -> torch.Tensor:
        """σ(W_g [q_a; q_m]): (B, 1 or 2, T, H, W) — channel 0 for the appearance stream, 1 for the motion stream."""
        return torch.sigmoid(self.gate(torch.cat([qa, qm], dim=1)))

    def round(self, pa: torch.Tensor, pm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One round: (q_a, q_m, z_a, z_m or None)."""
        qa, qm = self.sa_app(pa), self.sa_mot(pm)
        s = self.affinity(qa, qm)
        za = from_frames(F.normalize(torch.bmm(per_frame(qa), s), dim=1), qa)
        zm = from_frames(F.normalize(torch.bmm(per_frame(qm), s.transpose(1, 2)), dim=1), qm) \
            if self.mode == "recip" else None
        if self.gate is not None:
            g = self.gates(qa, qm)
            za = za + qa * g[:, :1] + qa
            if zm is not None:
                zm = zm + qm * g[:, 1:] + qm
        return qa, qm, za, zm

    def forward(self, app: torch.Tensor, mot: torch.Tensor) -> dict[str, torch.Tensor]:
        pa, pm = app, mot
        for r in range(self.rounds):
            qa, qm, za, zm = self.round(pa, pm)
            if r < self.rounds - 1:
                pa = F.relu(pa + za)
                pm = F.relu(pm + (qm if zm is None else zm))
        return {"app": za} if zm is None else {"app": za, "mot": zm}
