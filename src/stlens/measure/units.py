"""What one sample of the estimator is: a video (``units="video"``, the default: each layer's output pooled per
video) or an instance (``units="instance"``: a VIS model's query layers taken at the query matched to each
ground-truth track present in both videos of a pair; docs/vis.md).

Per instance, in each video of a pair the queries are matched to the ground-truth tracks by the training matcher
(``stlens.measure.matching.matched``: Hungarian on class + BCE + dice costs, crowd tracks left out). A track found in
both videos (by track id, with a mask in each) gives one sample: at a query layer (``query_layers``, outputs
(B, Q, D)) the matched query's embedding in video a and in video b; at any other layer (backbone, pixel decoder:
per-frame maps, not per query) the two videos' pooled latents, so every layer is measured over the same samples. A
sample carries its pair's factor and global index, so it shares the pair's bootstrap weight.
"""

from __future__ import annotations

import numpy as np
import torch

from stlens.core.instances import Instances
from stlens.errors import StlensError
from stlens.measure.matching import matched

UNITS = ("video", "instance")
NO_TARGETS = ("`units` instance needs pairs that carry the ground-truth instance tracks of both videos (an instance "
              "source: synth:<world>?task=instances), but `data` gives pairs without them")
_FIX = "use the model's trained weights, or `precision` fp32"


def check_units(units: str) -> None:
    """Refuse a ``units`` other than ``video`` or ``instance``."""
    if units not in UNITS:
        raise StlensError(f"`units` must be one of {', '.join(UNITS)}, got {units!r}")


def query_layers(module: torch.nn.Module, spec: str) -> list[str]:
    """The layers of a query-based VIS model whose outputs are one row per query (``module.query_layers``); an error
    naming ``units`` for any other model."""
    found = getattr(module, "query_layers", None)
    if not found:
        raise StlensError(f"`units` instance needs a query-based video instance segmenter (stlens:vis: one query per "
                          f"track), but {spec} has no query layers; use `units` video")
    return list(found)


def _check_output(output) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(output, dict) and "logits" in output and "masks" in output):
        kind = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise StlensError(f"`units` instance needs a model whose output is {{'logits': (B, Q, K + 1), 'masks': "
                          f"(B, Q, T, H, W)}}, got {kind}")
    return output["logits"], output["masks"]


def track_queries(logits: torch.Tensor, masks: torch.Tensor, instances: Instances) -> dict[int, int]:
    """Track id → the query matched to it in one video (logits (Q, K + 1), mask logits (Q, T, H, W)), for the
    non-crowd tracks with a mask in some frame; in the order of the tracks."""
    if tuple(masks.shape[1:]) != tuple(instances.masks.shape[1:]):
        raise StlensError(f"`units` instance: the model's masks are {tuple(masks.shape[1:])} (T, H, W) but the "
                          f"instance targets' are {tuple(instances.masks.shape[1:])}")
    rows, cols, _, _ = matched(logits.float(), masks.float(), instances, _FIX)
    keep = ~instances.crowd
    ids = instances.track_ids[keep]
    shown = instances.present[keep].any(1)
    found = {int(ids[c]): int(r) for r, c in zip(rows, cols, strict=True) if shown[c]}
    return {int(t): found[int(t)] for t in ids if int(t) in found}


def instance_samples(factor: np.ndarray, index: np.ndarray, targets: list, latents: dict[str, np.ndarray],
                     outputs: dict[str, torch.Tensor], output, queries: list[str]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The per-instance samples of a batch of n pairs: (factor (m,), index (m,), layer → (2m, C) latents, the m a
    samples then the m b samples).

    ``targets``: per pair the ``Instances`` of its two videos; ``latents``: layer → (2n, C) pooled latents (the n
    first videos, then the n second ones); ``outputs``: the unpooled (2n, Q, D) outputs of the ``queries`` layers;
    ``output``: the model's output dict. Samples come pair by pair, in the order of video a's tracks."""
    logits, masks = _check_output(output)
    n = len(factor)
    video_a, video_b, query_a, query_b, owner = [], [], [], [], []
    for i in range(n):
        if targets[i] is None:
            raise StlensError(NO_TARGETS)
        first, second = targets[i]
        in_a = track_queries(logits[i], masks[i], first)
        in_b = track_queries(logits[n + i], masks[n + i], second)
        for track, query in in_a.items():
            if track in in_b:
                video_a.append(i)
                video_b.append(n + i)
                query_a.append(query)
                query_b.append(in_b[track])
                owner.append(i)
    owner_ = np.asarray(owner, dtype=np.int64)
    rows = np.asarray(video_a + video_b, dtype=np.int64)
    picked = np.asarray(query_a + query_b, dtype=np.int64)
    samples = {}
    for name, pooled in latents.items():
        if name in queries:
            raw = outputs[name]
            samples[name] = raw[torch.as_tensor(rows, device=raw.device),
                                torch.as_tensor(picked, device=raw.device)].float().cpu().numpy()
        else:
            samples[name] = pooled[rows]
    return np.asarray(factor)[owner_], np.asarray(index)[owner_], samples
