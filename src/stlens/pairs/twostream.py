"""Pairs for two-stream (RGB + optical flow) models: each input is a tuple ``(rgb (3, T, H, W), flow (2, N, H, W))``.

- dynamic pair: two styles of the RGB clip, the *same* flow;
- static pair: the same styled RGB clip, the flow and a jittered copy (direction rotated, magnitude rescaled).

As in the paper (Kowal et al., two-stream AVOS models), flow is computed on the *unstylized* frames, so both
members of a dynamic pair see exactly the motion of the real video. Frame shuffling is not used for these pairs:
the flow stream carries the motion, and jittering it is what removes the shared dynamics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stlens.core.pair import DYNAMIC, Pair
from stlens.errors import StlensError
from stlens.pairs.makers import VideoPairs
from stlens.video.flow import FLOW_BOUND, FLOW_METHODS, FlowCache, compute_flow, encode_flow, flow_clip, flow_jitter
from stlens.video.sampling import centre_crop, sample_clip, to_model_input
from stlens.video.stylizers import draw_style


def flow_indices(clip: np.ndarray, length: int, flow_frames: int | None,
                 segment: tuple[int, int] | None = None) -> np.ndarray:
    """The frames whose consecutive flow is taken: the clip's own frames (``flow_frames`` None: N = T − 1 fields
    between the sampled frames), or ``flow_frames + 1`` consecutive frames centred on the clip (N = ``flow_frames``
    fields of gap-1 flow, the stacked input of Simonyan & Zisserman), kept inside the video, or inside frames
    [start, end) of its ``segment`` when given (end exclusive, as in ``clip_indices``)."""
    if flow_frames is None:
        return np.asarray(clip)
    first, end = (0, length) if segment is None else (max(0, segment[0]), min(segment[1], length))
    centre = int(clip[len(clip) // 2])
    start = min(max(first, centre - flow_frames // 2), end - flow_frames - 1)
    return start + np.arange(flow_frames + 1)


@dataclass(kw_only=True)
class TwoStreamPairs(VideoPairs):
    """Iterable of two-stream ``Pair`` objects (``(rgb, flow)`` inputs) from a ``VideoSource``.

    The same quota, skipping and seeding as ``VideoPairs`` (the flow options are keyword-only). Flow is computed on
    the resized full frames, then centre-cropped like the RGB, and encoded with ``encode_flow`` (±``bound`` px →
    [-1, 1]). Where the source gives segments (Diving48), the clip and the frames of its flow lie inside
    [start, end) of the video's segment.

    Args:
        source: the videos (a ``VideoSource``, as for ``VideoPairs``).
        spec: how clips are sampled and normalized (the model's ``InputSpec``).
        pairs: pairs per factor.
        stylizer: the appearance change of the dynamic pairs (as for ``VideoPairs``).
        seed: the seed of the pairs' clips and styles.
        skipped: the videos skipped by the probe (filled by ``plan()``; leave empty).
        flow_method: ``tvl1`` (faithful, slow), ``dis`` or ``farneback``.
        flow_frames: None for flow between the T sampled frames (flow input (2, T − 1, H, W)), or L for L gap-1
            fields centred on the clip ((2, L, H, W)).
        cache: a ``FlowCache`` or a folder for one (None: no cache).
        bound: the flow magnitude in pixels encoded as ±1.

    Examples:
        >>> spec = stlens.InputSpec(frames=4, stride=1, size=32, resize=32)
        >>> pairs = stlens.TwoStreamPairs(stlens.open_data("sample:"), spec, pairs=1, flow_method="farneback")
        >>> rgb, flow = next(iter(pairs)).a
        >>> tuple(rgb.shape), tuple(flow.shape)
        ((3, 4, 32, 32), (2, 3, 32, 32))
    """

    flow_method: str = "tvl1"
    flow_frames: int | None = None
    cache: FlowCache | str | Path | None = None
    bound: float = FLOW_BOUND

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.flow_method not in FLOW_METHODS:
            raise StlensError(f"unknown flow method '{self.flow_method}'; choices: {', '.join(FLOW_METHODS)}")
        if self.flow_frames is None and self.spec.frames < 2:
            raise StlensError("two-stream pairs need clips of at least 2 frames (flow between sampled frames)")
        if self.flow_frames is not None and self.flow_frames < 1:
            raise StlensError(f"flow_frames must be ≥ 1, got {self.flow_frames}")
        if self.cache is not None and not isinstance(self.cache, FlowCache):
            self.cache = FlowCache(self.cache)

    def _min_frames(self) -> int:
        return self.spec.frames if self.flow_frames is None else max(self.spec.frames, self.flow_frames + 1)

    def _probe(self, path) -> tuple[int | None, bool] | None:
        probe = super()._probe(path)
        if probe is not None and self.flow_frames is not None and probe[0] < self.flow_frames + 1:
            self._skip(path, f"shorter than the flow stack ({probe[0]} < {self.flow_frames + 1} frames)")
            return None
        return probe

    def _flow(self, frames: np.ndarray, clip: np.ndarray, source: str) -> np.ndarray:
        """Cropped flow in pixels (N, size, size, 2) for the clip at indices ``clip`` (cached when asked)."""
        indices = flow_indices(clip, len(frames), self.flow_frames, segment=self._segment)

        def compute() -> np.ndarray:
            return np.ascontiguousarray(centre_crop(compute_flow(frames[indices], self.flow_method), self.spec.size))

        if self.cache is None:
            return compute()
        key = self.cache.key(source, self.flow_method, indices, frames.shape[1:3], self.spec.size)
        return self.cache.get_or_compute(key, compute)

    def _flow_input(self, flow: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(flow_clip(encode_flow(flow, self.bound)))

    def _pair(self, frames: np.ndarray, factor: int, rng: np.random.Generator, source: str) -> Pair:
        spec = self.spec
        idx, clip = sample_clip(frames, spec, rng, segment=self._segment)
        flow = self._flow(frames, idx, source)
        first, seed_a = draw_style(clip, self._stylizers, rng)
        rgb_a = to_model_input(first, spec)
        flow_a = self._flow_input(flow)
        if factor == DYNAMIC:
            second, _ = draw_style(clip, self._stylizers, rng, avoid=seed_a)
            return Pair(factor, (rgb_a, flow_a), (to_model_input(second, spec), flow_a), source)
        return Pair(factor, (rgb_a, flow_a), (rgb_a, self._flow_input(flow_jitter(flow, rng))), source)
