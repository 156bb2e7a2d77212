"""Pairs for ``stlens.measure`` from synthetic clips, with the ideal stylizer: re-rendering.

- dynamic pair (factor 0): the clip rendered with two different appearances (``SynthDataset.rerender``: exactly the
  same motion, shape and trajectory, new object and background textures; the two share no texture, only the
  object's shape and its motion, as a stylized real video keeps its edges), or, with another
  ``stylizer``, two styles of the rendered clip as ``VideoPairs`` makes them;
- static pair (factor 1): one appearance of the clip and a frame-shuffled copy (``frame_shuffle``).

Two-stream (``flow=True``): inputs are ``(rgb (3, T, H, W), flow (2, T-1, H, W))`` with the *ground-truth* flow
encoded by ``encode_flow``; dynamic pair = two appearances with the same flow; static pair = the same RGB with the
flow and a jittered copy (``flow_jitter``), as ``TwoStreamPairs`` does for real videos.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from stlens.core.pair import DYNAMIC, STATIC, Pair, frame_shuffle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.synth.render import SynthClip
from stlens.video.flow import FLOW_BOUND, encode_flow, flow_clip, flow_jitter
from stlens.video.sampling import to_model_input
from stlens.video.stylizers import draw_style, get_stylizer

if TYPE_CHECKING:  # (at run time the dataset imports this module, to make its pairs)
    from stlens.synth.dataset import SynthDataset

RERENDER = "rerender"


def _textures(clip: SynthClip) -> set[int]:
    return {clip.meta["object_texture"], clip.meta["background_texture"]}


@dataclass
class SynthPairs:
    """Iterable of ``Pair`` from a ``SynthDataset``: ``pairs`` per factor; pair i uses clip i mod len(dataset) for
    both factors and draws its appearances, styles and shuffles from a generator seeded with (seed, factor, i).

    Clips are used as rendered (no temporal subsampling, no crop): the model's ``spec.frames`` and ``spec.size``
    must equal the dataset's ``frames`` and ``size`` (else a ``StlensError`` says which options to pass); only the
    normalization (mean, std) of ``spec`` is applied.
    """

    dataset: SynthDataset
    spec: InputSpec
    pairs: int
    stylizer: str = RERENDER
    seed: int = 0
    flow: bool = False
    bound: float = FLOW_BOUND
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise StlensError(f"--pairs must be ≥ 1, got {self.pairs}")
        ds, spec = self.dataset, self.spec
        if (spec.frames, spec.size) != (ds.frames, ds.size):
            raise StlensError(
                f"{ds.spec} renders {ds.frames} frames of {ds.size}×{ds.size} px but the model takes {spec.frames} "
                f"frames of {spec.size}×{spec.size} px: open the data as "
                f"synth:{ds.world}?frames={spec.frames}&size={spec.size} (or pass --frames/--size matching the data)")
        self._stylizers = None if self.stylizer == RERENDER else get_stylizer(self.stylizer)

    @property
    def source(self) -> SynthDataset:
        return self.dataset

    def __len__(self) -> int:
        return 2 * self.pairs

    def _rerendered(self, index: int, rng: np.random.Generator, avoid: SynthClip | None = None) -> SynthClip:
        """A new appearance of clip ``index``; with ``avoid``, one sharing no texture with it (100 tries)."""
        for _ in range(100):
            clip = self.dataset.rerender(index, int(rng.integers(2**31)))
            if avoid is None or not (_textures(clip) & _textures(avoid)):
                break
        return clip

    def _appearances(self, index: int, factor: int, rng: np.random.Generator) -> tuple[list[np.ndarray], SynthClip]:
        """One (static) or two (dynamic) appearances of clip ``index``, and a clip with its masks/positions."""
        if self._stylizers is None:
            first = self._rerendered(index, rng)
            if factor == STATIC:
                return [first.frames], first
            return [first.frames, self._rerendered(index, rng, avoid=first).frames], first
        clip = self.dataset[index]
        styled, seed_a = draw_style(clip.frames, self._stylizers, rng)
        if factor == STATIC:
            return [styled], clip
        return [styled, draw_style(clip.frames, self._stylizers, rng, avoid=seed_a)[0]], clip

    def _pair(self, index: int, factor: int, rng: np.random.Generator) -> Pair:
        looks, clip = self._appearances(index, factor, rng)
        name = self.dataset.name(index)
        rgb_a = to_model_input(looks[0], self.spec)
        if not self.flow:
            second = looks[1] if factor == DYNAMIC else frame_shuffle(looks[0], rng)
            return Pair(factor, rgb_a, to_model_input(second, self.spec), name)
        flow = clip.flow()
        flow_a = torch.from_numpy(flow_clip(encode_flow(flow, self.bound)))
        if factor == DYNAMIC:
            return Pair(factor, (rgb_a, flow_a), (to_model_input(looks[1], self.spec), flow_a), name)
        jittered = torch.from_numpy(flow_clip(encode_flow(flow_jitter(flow, rng), self.bound)))
        return Pair(factor, (rgb_a, flow_a), (rgb_a, jittered), name)

    def __iter__(self) -> Iterator[Pair]:
        self.skipped = []
        for i in range(self.pairs):
            for factor in (DYNAMIC, STATIC):
                rng = np.random.default_rng((self.seed, factor, i))
                yield self._pair(i % len(self.dataset), factor, rng)
