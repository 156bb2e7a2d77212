"""``MaskClips``: the ``LabelledClips`` (see ``labelled``) of a ``MaskSource`` for segmentation — clips with their
per-frame masks, sampled, resized and cropped exactly alike.

``batch(indices, rng) -> (inputs, targets)``: inputs float32 (B, 3, T, S, S) normalized with the model's
``InputSpec`` (for two-stream models a tuple ``(rgb, flow)``, flow float32 (B, 2, T − 1, S, S) from ``compute_flow``
on the sampled frames, encoded with ``encode_flow``); targets float32 (B, T, S, S): 1 object, 0 background, and NaN on
every pixel of an unannotated frame (``valid_frames`` gives the (B, T) flags). ``num_classes`` is 1 (one foreground
class) and ``task`` is ``"segment"``; ``len()`` is the number of usable sequences, one clip each per draw.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.flow import FLOW_METHODS, FlowCache, compute_flow, encode_flow, flow_clip
from stlens.video.masks import MaskSource
from stlens.video.sampling import sample_clip, to_model_input

log = logging.getLogger("stlens")

DEFAULT_FLOW = "dis"


def sample_window(shape: tuple[int, int, int], spec: InputSpec, rng: np.random.Generator,
                  random_crop: bool = False) -> tuple[np.ndarray, int, int] | None:
    """Where ``sample_clip`` would take a clip of frames of ``shape`` (T, H, W) with the same ``rng`` draws: (frame
    indices, top, left); None when the video is shorter than a clip. Frames, masks and flow cut at this window are
    sampled alike."""
    length, height, width = shape
    rows, cols = np.meshgrid(np.arange(height, dtype=np.int32), np.arange(width, dtype=np.int32), indexing="ij")
    grid = np.broadcast_to(np.stack([rows, cols], axis=-1), (length, height, width, 2))
    drawn = sample_clip(grid, spec, rng, random_crop=random_crop)
    if drawn is None:
        return None
    idx, corner = drawn
    return idx, int(corner[0, 0, 0, 0]), int(corner[0, 0, 0, 1])


def valid_frames(targets: torch.Tensor) -> torch.Tensor:
    """Which frames of mask targets (B, T, H, W) are annotated: (B, T) bool (an unannotated frame is all NaN)."""
    return ~targets.isnan().flatten(2).all(dim=2)


@dataclass
class MaskClips:
    """Clips of a ``MaskSource`` with their masks (see the module docstring). Sequences shorter than a clip or
    without any annotated frame are left out (listed in ``skipped``). ``augment``: a random crop instead of the
    centre crop (the same for frames, masks and flow). ``flow_method``: None takes the source's ``flow=`` option,
    else ``dis``. ``flow_cache``: a ``FlowCache`` or folder (the keys of ``TwoStreamPairs``' centre-cropped flow)."""

    source: MaskSource
    spec: InputSpec
    flow: bool = False
    augment: bool = False
    flow_method: str | None = None
    flow_cache: FlowCache | str | Path | None = None
    cache_size: int = 16
    num_classes: int = field(default=1, init=False)
    task: str = field(default="segment", init=False)
    skipped: list[dict[str, str]] = field(default_factory=list, init=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, MaskSource):
            raise StlensError(f"{getattr(self.source, 'spec', self.source)}: segmentation clips need a data set with "
                              f"masks (davis:ROOT or moca:ROOT)")
        self.flow_method = self.flow_method or self.source.flow_method or DEFAULT_FLOW
        if self.flow_method not in FLOW_METHODS:
            raise StlensError(f"unknown flow method '{self.flow_method}'; choices: {', '.join(FLOW_METHODS)}")
        if self.flow and self.spec.frames < 2:
            raise StlensError("two-stream clips need at least 2 frames (flow between sampled frames)")
        if self.flow_cache is not None and not isinstance(self.flow_cache, FlowCache):
            self.flow_cache = FlowCache(self.flow_cache)
        self.indices = []
        for i, (video, track) in enumerate(zip(self.source.videos, self.source.tracks, strict=True)):
            reason = (f"shorter than a clip ({len(track.frames)} < {self.spec.frames} frames)"
                      if len(track.frames) < self.spec.frames else None if track.annotated else "no annotated frame")
            if reason:
                self.skipped.append({"source": str(video), "reason": reason})
            else:
                self.indices.append(i)
        if self.skipped:
            log.warning("%d of %d sequences of %s left out: %s (first: %s)", len(self.skipped), len(self.source),
                        self.source.spec, self.skipped[0]["reason"], self.skipped[0]["source"])
        if not self.indices:
            raise StlensError(f"{self.source.spec}: no sequence has a clip's {self.spec.frames} frames and an "
                              f"annotated frame")

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        self._cache[index] = self.source.read(self.indices[index], short_side=self.spec.resize)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return self._cache[index]

    def _flow(self, index: int, frames: np.ndarray, idx: np.ndarray, top: int, left: int) -> torch.Tensor:
        size = self.spec.size
        crop = None if self.augment else size

        def compute() -> np.ndarray:
            flow = compute_flow(frames[idx], self.flow_method)
            return flow if crop is None else np.ascontiguousarray(flow[:, top:top + size, left:left + size])

        if self.flow_cache is None:
            flow = compute()
        else:
            video = self.source.videos[self.indices[index]]
            key = self.flow_cache.key(video, self.flow_method, idx, frames.shape[1:3], crop)
            flow = self.flow_cache.get_or_compute(key, compute)
        if crop is None:
            flow = flow[:, top:top + size, left:left + size]
        return torch.from_numpy(flow_clip(encode_flow(flow)))

    def item(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor | tuple, torch.Tensor]:
        """Clip ``index`` (of the usable sequences): (input, target (T, S, S)) as in the module docstring."""
        index = int(index)
        frames, masks, valid = self._read(index)
        idx, top, left = sample_window(frames.shape[:3], self.spec, rng, random_crop=self.augment)
        window = (idx, slice(top, top + self.spec.size), slice(left, left + self.spec.size))
        rgb = to_model_input(frames[window], self.spec)
        target = torch.from_numpy(masks[window].astype(np.float32))
        target[torch.from_numpy(~valid[idx])] = float("nan")
        if not self.flow:
            return rgb, target
        return (rgb, self._flow(index, frames, idx, top, left)), target

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor | tuple, torch.Tensor]:
        items = [self.item(i, rng) for i in indices]
        inputs = [x for x, _ in items]
        if isinstance(inputs[0], tuple):
            stacked: torch.Tensor | tuple = tuple(torch.stack([x[k] for x in inputs]) for k in range(2))
        else:
            stacked = torch.stack(inputs)
        return stacked, torch.stack([y for _, y in items])


def open_mask_clips(data: str, spec: InputSpec, flow: bool = False, augment: bool = False) -> MaskClips:
    """Segmentation clips from a data spec (``davis:ROOT?...``, ``moca:ROOT?...``)."""
    from stlens.video.sources import open_data

    return MaskClips(open_data(data), spec, flow=flow, augment=augment)
