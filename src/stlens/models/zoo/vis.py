"""``stlens:vis``: a small query-based video instance segmenter (the Mask2Former-VIS / SeqFormer / VITA design): a
per-frame 2-D conv backbone, a pixel decoder giving per-frame pixel embeddings, and a transformer decoder whose
learned queries attend over the tokens of every frame of the clip, so that one query is one instance track.

``forward`` returns a dict ``{"logits": (B, Q, K + 1), "masks": (B, Q, T, H, W)}``: class logits with a last
no-object class, and mask logits at the clip size. ``predict_tracks`` turns it into ``TrackPredictions``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlens.core.instances import TrackPredictions
from stlens.errors import StlensError
from stlens.models.zoo.avos import flow_to_frames
from stlens.models.zoo.blocks import BasicBlock, ConvBNReLU, align
from stlens.models.zoo.seghead import SEG_INPUT, frame_conv

STAGES = ("stage1", "stage2", "stage3")


class PixelDecoder(nn.Module):
    """FPN-style top-down decoder of the stage maps: ``lateral.k`` (1×1×1 conv → ``dim``) per stage, from the coarsest
    m₃ = lateral₃(f₃), m_k = refine_k(lateral_k(f_k) + up(m_{k+1})), then ``embed`` (per-frame 1×1 conv). Output: the
    per-frame pixel embeddings (B, D, T, h, w) at the resolution of stage 1 (H/2, W/2)."""

    def __init__(self, channels: list[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList([ConvBNReLU(c, dim, 1) for c in channels])
        self.refine = nn.ModuleList([ConvBNReLU(dim, dim, (1, 3, 3)) for _ in channels[:-1]])
        self.embed = frame_conv(dim, dim, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        m = self.lateral[-1](features[-1])
        for k in range(len(features) - 2, -1, -1):
            lateral = self.lateral[k](features[k])
            m = self.refine[k](lateral + align(m, lateral.shape[2:]))
        return self.embed(m)


class Memory(nn.Module):
    """The tokens the queries attend to: the last stage map projected to ``dim`` (1×1×1 conv) plus learned spatial
    and temporal position embeddings (resized when a clip has another T, h, w), flattened time-major to (B, T·h·w, D)
    — the tokens of every frame of the clip."""

    def __init__(self, channels: int, dim: int, frames: int, grid: int):
        super().__init__()
        self.proj = nn.Conv3d(channels, dim, 1)
        self.pos_space = nn.Parameter(torch.zeros(1, dim, grid, grid))
        self.pos_time = nn.Parameter(torch.zeros(1, dim, frames))
        nn.init.trunc_normal_(self.pos_space, std=0.02)
        nn.init.trunc_normal_(self.pos_time, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        t, h, w = x.shape[2:]
        space = self.pos_space if self.pos_space.shape[2:] == (h, w) else F.interpolate(
            self.pos_space, size=(h, w), mode="bilinear", align_corners=False)
        time = self.pos_time if self.pos_time.shape[2] == t else F.interpolate(
            self.pos_time, size=t, mode="linear", align_corners=False)
        x = x + time[:, :, :, None, None] + space[:, :, None]
        return x.flatten(2).transpose(1, 2)


def attention_mask(mask_logits: torch.Tensor, grid: tuple[int, int, int], heads: int = 1) -> torch.Tensor:
    """Mask2Former's masked-attention mask: mask logits (B, Q, T', H', W') → bool (B·heads, Q, T·h·w), True where a
    query may *not* attend. The logits are resized to the memory grid ``grid`` = (T, h, w) (trilinear,
    ``align_corners=False``; bilinear per frame when T' = T), a token is open where sigmoid(logit) > 0.5, and a query
    with no open token is left fully open. Tokens are time-major, as ``Memory`` flattens them."""
    b, q = mask_logits.shape[:2]
    if tuple(mask_logits.shape[2:]) != tuple(grid):
        mask_logits = F.interpolate(mask_logits.flatten(0, 1).unsqueeze(1).float(), size=grid, mode="trilinear",
                                    align_corners=False).squeeze(1).unflatten(0, (b, q))
    blocked = (mask_logits.sigmoid() <= 0.5).flatten(2)
    blocked &= ~blocked.all(-1, keepdim=True)
    return blocked.repeat_interleave(heads, dim=0)


class DecoderLayer(nn.Module):
    """One transformer decoder layer (post-norm, as Mask2Former): cross-attention of the queries over the clip's
    memory tokens (restricted by ``attn_mask`` when given: bool (B·heads, Q, tokens), True = blocked), self-attention
    among the queries, an FFN; each with a residual and LayerNorm. The query position embeddings are added to the
    queries and keys of both attentions. (B, Q, D) in and out."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm_cross(x + self.cross(x + pos, memory, memory, attn_mask=attn_mask, need_weights=False)[0])
        q = x + pos
        x = self.norm_self(x + self.self_attn(q, q, x, need_weights=False)[0])
        return self.norm_ffn(x + self.ffn(x))


class VIS(nn.Module):
    """Query-based video instance segmenter: ``forward(clip (B, 3, T, H, W)[, flow (B, 2, T − 1, H, W)])`` →
    ``{"logits": (B, Q, K + 1), "masks": (B, Q, T, H, W)}`` (class logits, the last class is no-object; mask logits
    at the clip size).

    Backbone, per frame (no temporal kernel anywhere before the decoder): ``stem`` (5×5 conv, stride 2), ``stage1–3``
    (2-D basic blocks, widths w, 2w, 4w, stride 2 in stages 2–3: H/2, H/4, H/8). ``pixel_decoder``
    (``PixelDecoder``): pixel embeddings (B, D, T, H/2, W/2), D = 2w. ``memory`` (``Memory``): the stage-3 map as
    tokens (B, T·H/8·W/8, D) with space–time position embeddings. ``decoder.0…L−1`` (``DecoderLayer``): ``queries``
    learned queries, each layer's output (B, Q, D). Heads on the last layer: ``class_head`` (linear → K + 1) and
    ``mask_embed`` (3-layer MLP → D); mask logits = ⟨mask embedding, pixel embedding⟩ per frame, bilinearly upsampled
    to H, W. ``flow=True``: the encoded flow (``flow_to_frames``) joins the RGB as two more stem channels (early
    fusion) and the model takes ``(rgb, flow)``. ``masked=True``: Mask2Former's masked attention — before each
    decoder layer the mask head is applied to the current queries (the learned ``query_feat`` before ``decoder.0``)
    and each query's cross-attention is restricted to the memory tokens inside its mask (``attention_mask``); no
    new parameters, the final heads unchanged (default False: plain cross-attention).

    Default layers: ``stage1–3``, ``pixel_decoder``, ``decoder.0…L−1``. Temporal receptive field: 1 frame up to
    ``pixel_decoder`` and ``memory``; every frame from ``decoder.0`` on. ``query_layers``: the layers whose output is
    one (B, Q, D) row per query (``decoder.k``, ``class_head``, ``mask_embed``), measured per instance with
    ``stlens.measure(..., units="instance")``.
    """

    input_spec = SEG_INPUT

    def __init__(self, num_classes: int = 4, width: int = 32, queries: int = 10, depth: int = 3, heads: int = 4,
                 flow: bool = False, masked: bool = False):
        super().__init__()
        if width > 64:
            raise ValueError(f"width must be ≤ 64 (a small zoo model), got {width}")
        dim = 2 * width
        if dim % heads:
            raise ValueError(f"2·width = {dim} is not divisible by heads {heads}")
        self.num_classes, self.flow, self.masked, self.heads = num_classes, flow, masked, heads
        if flow:
            self.stlens_inputs = 2
        self.stem = ConvBNReLU(5 if flow else 3, width, (1, 5, 5), stride=(1, 2, 2))
        channels = [width, 2 * width, 4 * width]
        cin = width
        for name, cout, stride in zip(STAGES, channels, [1, (1, 2, 2), (1, 2, 2)], strict=True):
            setattr(self, name, BasicBlock(cin, cout, stride, kt=1))
            cin = cout
        spec = self.input_spec
        self.pixel_decoder = PixelDecoder(channels, dim)
        self.memory = Memory(channels[-1], dim, spec.frames, spec.size // 8)
        self.query_feat = nn.Embedding(queries, dim)
        self.query_pos = nn.Embedding(queries, dim)
        self.decoder = nn.ModuleList([DecoderLayer(dim, heads, 4 * dim) for _ in range(depth)])
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim),
                                        nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.default_layers = [*STAGES, "pixel_decoder"] + [f"decoder.{i}" for i in range(depth)]
        self.query_layers = [f"decoder.{i}" for i in range(depth)] + ["class_head", "mask_embed"]

    def forward(self, clip: torch.Tensor, flow: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        size = tuple(clip.shape[2:])
        if self.flow:
            if flow is None:
                raise StlensError("stlens:vis?flow=true takes (rgb, flow): `flow` is missing")
            clip = torch.cat([clip, flow_to_frames(flow, size).to(clip.dtype)], dim=1)
        x, features = self.stem(clip), []
        for name in STAGES:
            x = getattr(self, name)(x)
            features.append(x)
        pixels = self.pixel_decoder(features)
        memory = self.memory(features[-1])
        b = clip.shape[0]
        q = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)
        pos = self.query_pos.weight.unsqueeze(0).expand(b, -1, -1)
        grid = (pixels.shape[2], *features[-1].shape[3:])
        for layer in self.decoder:
            attn_mask = None
            if self.masked:
                attn_mask = attention_mask(self.mask_logits(q, pixels).detach(), grid, self.heads)
            q = layer(q, memory, pos, attn_mask)
        logits = self.class_head(q)
        masks = self.mask_logits(q, pixels)
        if masks.shape[-2:] != size[1:]:
            masks = F.interpolate(masks.flatten(0, 1), size=size[1:], mode="bilinear", align_corners=False
                                  ).unflatten(0, masks.shape[:2])
        return {"logits": logits, "masks": masks}

    def mask_logits(self, q: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, Q, T, h, w) of queries (B, Q, D) on pixel embeddings (B, D, T, h, w)."""
        return torch.einsum("bqd,bdthw->bqthw", self.mask_embed(q), pixels)


@torch.no_grad()
def predict_tracks(output: dict[str, torch.Tensor], threshold: float = 0.5) -> list[TrackPredictions]:
    """One ``TrackPredictions`` per clip of a VIS output: one track per query, with its best class other than
    no-object; mask = sigmoid(mask logit) > ``threshold``; score = that class's probability × the mean mask
    probability inside the mask (0 for an empty mask), as Mask2Former ranks its predictions."""
    if not 0.0 < threshold < 1.0:
        raise StlensError(f"`threshold` must be in (0, 1), got {threshold}")
    logits, masks = output["logits"].float(), output["masks"].float()
    probs = logits.softmax(-1)[..., :-1]  # the no-object class is never a track's class
    class_prob, classes = probs.max(-1)
    mask_prob = masks.sigmoid()
    binary = mask_prob > threshold
    inside = (mask_prob * binary).flatten(2).sum(-1) / binary.flatten(2).sum(-1).clamp_min(1)
    scores = class_prob * inside
    return [TrackPredictions(binary[i].cpu().numpy(), classes[i].cpu().numpy(), scores[i].cpu().numpy())
            for i in range(len(logits))]
