"""``stlens:avos``: a small two-stream (RGB + optical flow) video object segmenter in the MATNet family of the
fusion / cross-connection study of Kowal et al. (TPAMI 2024): an appearance and a motion stream, a fusion after every
stage, optional co-attention cross-connections after stages 2–4, and a mask decoder on the fused maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlens.models.zoo.blocks import BasicBlock, ConvBNReLU, align, widths
from stlens.models.zoo.crossconn import CROSS, CoAttention
from stlens.models.zoo.fusions import FUSIONS, make_fusion
from stlens.models.zoo.seghead import SEG_INPUT, SEG_STRIDES, MaskDecoder

STAGES = ("stage1", "stage2", "stage3", "stage4")


class StreamStage(nn.Module):
    """One stage of a stream: ``block`` (3-D basic blocks), applied by the model, then the merge of the cross term
    the stream receives. ``forward(pre, term)`` takes the block's output ``pre`` and returns the stream after its
    cross-connection, ReLU(pre + term), or ``pre`` itself when the stream receives none (stage 1, ``cc=none``, the
    motion stream under ``cc=uni``): the output of ``app.stageK`` / ``mot.stageK`` is what goes on to the next stage
    and to the fusion, that of ``app.stageK.block`` the stage before any cross term."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int], blocks: int, kt: int):
        super().__init__()
        self.block = nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, kt=kt)
                                     for i in range(blocks)])

    def forward(self, pre: torch.Tensor, term: torch.Tensor | None = None) -> torch.Tensor:
        return pre if term is None else F.relu(pre + term)


class Stream(nn.Module):
    """``stem`` (a (kt, 5, 5) conv, spatial stride 2) then ``stage1 … stage4`` (widths w, 2w, 4w, 8w; spatial stride 2
    in stages 2–4, none in time: T is kept throughout)."""

    def __init__(self, in_channels: int, width: int, blocks: int, kt: int):
        super().__init__()
        self.stem = ConvBNReLU(in_channels, width, (kt, 5, 5), stride=(1, 2, 2))
        cin = width
        for name, cout, stride in zip(STAGES, widths(width), SEG_STRIDES, strict=True):
            setattr(self, name, StreamStage(cin, cout, stride, blocks, kt))
            cin = cout

    def stages(self) -> list[StreamStage]:
        return [getattr(self, name) for name in STAGES]


def flow_to_frames(flow: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Bring flow (B, 2, N, H', W') to the clip's (T, H, W): N = T − 1 fields (between consecutive frames) get the
    last field repeated, so that frame t carries the flow t → t+1 and the last frame that of the frame before; N = T
    is kept; another N, or another H', W', is resampled (trilinear; flow values are not rescaled)."""
    frames = size[0]
    if flow.shape[2] == frames - 1:
        flow = torch.cat([flow, flow[:, :, -1:]], dim=2)
    return align(flow, size)


class AVOS(nn.Module):
    """Two-stream segmenter: ``forward(rgb (B, 3, T, H, W), flow (B, 2, T − 1, H, W))`` → per-frame mask logits
    (B, T, H, W) at the input resolution (see ``flow_to_frames`` for other flow lengths).

    Streams ``app`` (RGB) and ``mot`` (flow), each ``stem`` → ``stage1…4`` (the paper's res2–res5; 3-D basic blocks with
    temporal kernel ``kt``, ``kt=1`` a per-frame 2-D net like the paper's ResNets); after stages 2–4 the cross-
    connection ``cc.stageK`` (``cc``: ``none``, ``uni``, ``recip``; ``cc_gate``, ``rounds``: see
    ``stlens.models.zoo.crossconn``); after every stage the fusion ``fusion.stageK`` (``fusion``: ``concat``,
    ``gated``, ``convex``: see ``stlens.models.zoo.fusions``) of the two streams after their cross-connections; the
    fused maps feed only the ``decoder`` (``MaskDecoder``, width 2w). Defaults: MATNet (gated fusion, one-way
    co-attention), with one round instead of five.

    Default layers, in forward order: ``app.stageK``, ``mot.stageK``, ``fusion.stageK`` for K = 1…4 — each stream
    *after* its cross-connection (``app.stageK.block``: before it; ``cc.stageK`` outputs the cross terms, latents
    ``cc.stageK.app`` and ``cc.stageK.mot``).
    """

    input_spec = SEG_INPUT

    def __init__(self, fusion: str = "gated", cc: str = "uni", cc_gate: bool = False, rounds: int = 1,
                 width: int = 8, blocks: int = 1, kt: int = 3):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}'; choices: {', '.join(FUSIONS)}")
        if cc not in CROSS:
            raise ValueError(f"unknown cross-connection cc='{cc}'; choices: {', '.join(CROSS)}")
        if kt % 2 == 0:
            raise ValueError(f"kt must be odd (the time axis is kept), got {kt}")
        self.fusion_mode, self.cc_mode = fusion, cc
        self.app = Stream(3, width, blocks, kt)
        self.mot = Stream(2, width, blocks, kt)
        w = widths(width)
        if cc != "none":
            self.cc = nn.ModuleDict({name: CoAttention(c, cc, cc_gate, rounds)
                                     for name, c in zip(STAGES[1:], w[1:], strict=True)})
        self.fusion = nn.ModuleDict({name: make_fusion(fusion, c) for name, c in zip(STAGES, w, strict=True)})
        self.decoder = MaskDecoder(w, 2 * width)
        self.default_layers = [f"{part}.{s}" for s in STAGES for part in ("app", "mot", "fusion")]

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        size = tuple(rgb.shape[2:])
        a, m = self.app.stem(rgb), self.mot.stem(flow_to_frames(flow, size))
        fused = []
        for name, app_stage, mot_stage in zip(STAGES, self.app.stages(), self.mot.stages(), strict=True):
            a, m = app_stage.block(a), mot_stage.block(m)
            terms = self.cc[name](a, m) if self.cc_mode != "none" and name in self.cc else {}
            a, m = app_stage(a, terms.get("app")), mot_stage(m, terms.get("mot"))
            fused.append(self.fusion[name](a, m))
        return self.decoder(fused, size)
