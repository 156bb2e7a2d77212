"""TimeSformer-like video transformer with divided space–time attention (Bertasius et al., ICML 2021), small."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches of every frame (a Conv3d with kernel and stride (1, p, p)) → tokens (B, N, D) with
    N = T·(H/p)·(W/p), ordered time-major (token t·S + s for frame t, patch s)."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(3, dim, (1, patch, patch), stride=(1, patch, patch))

    def grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """(T, H/p, W/p) for an input clip."""
        t, h, w = x.shape[2:]
        return t, h // self.patch, w // self.patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over the second axis of (B', L, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DividedBlock(nn.Module):
    """Pre-norm block: temporal attention (each patch position attends over the T frames), then spatial attention
    (each frame's S patches attend to each other), then an MLP; each with a residual. Tokens (B, T·S, D) in and out."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_time = nn.LayerNorm(dim)
        self.attn_time = Attention(dim, heads)
        self.norm_space = nn.LayerNorm(dim)
        self.attn_space = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = round(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """``x``: tokens (B, T·S, D) time-major; ``t``: the number of frames T (tokens do not carry the grid)."""
        b, n, d = x.shape
        s = n // t
        xt = x.reshape(b, t, s, d).transpose(1, 2).reshape(b * s, t, d)  # (B·S, T, D)
        xt = xt + self.attn_time(self.norm_time(xt))
        x = xt.reshape(b, s, t, d).transpose(1, 2).reshape(b * t, s, d)  # (B·T, S, D)
        x = x + self.attn_space(self.norm_space(x))
        x = x.reshape(b, n, d)
        return x + self.mlp(self.norm_mlp(x))


class TimeSformer(nn.Module):
    """TimeSformer-like: 8×8 patch embedding per frame (dim 96), learnable spatial (per patch position) and temporal
    (per frame) position embeddings, ``depth`` divided space–time blocks (temporal attention, then spatial, then MLP;
    pre-norm), final LayerNorm, mean of all tokens (no CLS token), linear head.

    Position embeddings are learnt for the training grid (``frames`` × (``size``/p)²) and resized on the fly when a
    clip has another length or size (linear in time, bicubic in space), so any T, H, W (H, W multiples of p) work.
    Taps on ``patch_embed`` and ``blocks.i`` see tokens (B, N, D), pooled by the mean over all N = T·(H/p)·(W/p)
    tokens. ``patch_embed`` is the tokens *before* the position embeddings (purely per-frame, order-blind).

    Temporal receptive field: 1 frame at ``patch_embed``; all T frames from ``blocks.0`` on (global temporal
    attention: each token of block i sees every frame at its own patch position, and after the spatial attention
    every frame at every position).
    """

    def __init__(self, num_classes: int = 8, dim: int = 96, depth: int = 4, heads: int = 4, patch: int = 8,
                 mlp_ratio: float = 4.0, frames: int = 16, size: int = 64, dropout: float = 0.0):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch)
        self.pos_space = nn.Parameter(torch.zeros(1, dim, size // patch, size // patch))
        self.pos_time = nn.Parameter(torch.zeros(1, dim, frames))
        nn.init.trunc_normal_(self.pos_space, std=0.02)
        nn.init.trunc_normal_(self.pos_time, std=0.02)
        self.blocks = nn.ModuleList([DividedBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.default_layers = ["patch_embed"] + [f"blocks.{i}" for i in range(depth)]
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def position(self, t: int, h: int, w: int) -> torch.Tensor:
        """Position embeddings for a T×h×w token grid: (1, T·h·w, D), time-major like the tokens."""
        space = self.pos_space
        if space.shape[2:] != (h, w):
            space = F.interpolate(space, size=(h, w), mode="bicubic", align_corners=False)
        time = self.pos_time
        if time.shape[2] != t:
            time = F.interpolate(time, size=t, mode="linear", align_corners=False)
        grid = time[:, :, :, None] + space.flatten(2)[:, :, None, :]  # (1, D, T, h·w)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = self.patch_embed.grid(x)
        tokens = self.patch_embed(x) + self.position(t, h, w)
        for block in self.blocks:
            tokens = block(tokens, t)
        return self.head(self.dropout(self.norm(tokens).mean(dim=1)))
