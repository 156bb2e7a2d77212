"""Pairs from a pre-stylized dataset (``stylized:ROOT``, the paper's ``style_k/<video>/<frames>`` layout).

Dynamic pair: the same clip indices read from two different styles k1 ≠ k2 of one video (same motion, other
appearance). Static pair: one style's clip and its frame-shuffled copy (same appearance, motion destroyed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stlens.errors import StlensError
from stlens.models.registry import InputSpec
from stlens.pairs.makers import DYNAMIC, Pair, VideoPairs, frame_shuffle
from stlens.video.io import read_clip_source
from stlens.video.sampling import centre_crop, clip_indices, to_model_input
from stlens.video.sources import VideoSource


class StylizedPairs(VideoPairs):
    """Iterable of ``Pair`` from a stylized source, with the interface and behaviour of ``VideoPairs``: ``pairs`` per
    factor spread evenly over the videos, pair i of video v drawn from a generator seeded with (seed, v, factor, i),
    and videos missing in a style, unreadable or shorter than a clip skipped and listed in ``skipped``.

    Each video is read once in every style (short side resized); ``stylizer`` is fixed to ``"stylized"``.
    """

    def __init__(self, source: VideoSource, spec: InputSpec, pairs: int, seed: int = 0):
        super().__init__(source, spec, pairs, stylizer="stylized", seed=seed)

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise StlensError(f"--pairs must be ≥ 1, got {self.pairs}")
        if len(self.source.styles) < 2:
            found = ", ".join(p.name for p in self.source.styles) or "none"
            raise StlensError(f"{self.source.spec}: dynamic pairs need ≥ 2 style_k folders (found: {found})")

    def _frames(self, path) -> np.ndarray | None:
        """The video in every style, stacked (K, T, H, W, 3) and cut to the shortest style; None when skipped."""
        name = Path(path).name
        missing = [style.name for style in self.source.styles if not (style / name).is_dir()]
        if missing:
            self._skip(path, f"missing in {', '.join(missing)}")
            return None
        try:
            styled = [read_clip_source(style / name, short_side=self.spec.resize) for style in self.source.styles]
        except StlensError as exc:
            self._skip(path, str(exc))
            return None
        if len({clip.shape[1:] for clip in styled}) > 1:
            self._skip(path, "frames differ in size between styles")
            return None
        length = min(len(clip) for clip in styled)
        if length < self.spec.frames:
            self._skip(path, f"shorter than the clip ({length} < {self.spec.frames} frames)")
            return None
        return np.stack([clip[:length] for clip in styled])

    def _pair(self, frames: np.ndarray, factor: int, rng: np.random.Generator, source: str) -> Pair:
        spec = self.spec
        idx = clip_indices(frames.shape[1], spec.frames, spec.stride, rng)
        if factor == DYNAMIC:
            k1, k2 = rng.choice(len(frames), size=2, replace=False)
            first, second = centre_crop(frames[k1, idx], spec.size), centre_crop(frames[k2, idx], spec.size)
        else:
            first = centre_crop(frames[int(rng.integers(len(frames))), idx], spec.size)
            second = frame_shuffle(first, rng)
        return Pair(factor, to_model_input(first, spec), to_model_input(second, spec), source)
