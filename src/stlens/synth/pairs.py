"""Pairs for ``stlens.measure`` from synthetic clips, with the ideal stylizer: re-rendering.

- dynamic pair (factor 0): the clip rendered with two different appearances (``SynthClips.rerender``: exactly the
  same motion, shape and trajectory, new object and background textures; the two share no texture, only the
  object's shape and its motion, as a stylized real video keeps its edges), or, with another
  ``stylizer``, two styles of the rendered clip as ``VideoPairs`` makes them;
- static pair (factor 1): one appearance of the clip and a frame-shuffled copy (``frame_shuffle``).

Two-stream (``flow=True``): inputs are ``(rgb (3, T, H, W), flow (2, T-1, H, W))`` with the clip's ``flow()`` (the
*ground-truth* flow for the classify task, the flow *estimated* from the first appearance's frames for the segment
task or any ``flow=`` estimator) encoded by ``encode_flow``; dynamic pair = two appearances with the same flow; static
pair = the same RGB with the flow and a jittered copy (``flow_jitter``), as ``TwoStreamPairs`` does for real videos.
Re-renderings keep a segment clip's camera and distractor motion, and every object and the camera of an instance
clip (``task=instances``), so its two appearances differ in textures only.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stlens.core.instances import Instances
from stlens.core.pair import DYNAMIC, STATIC, Pair, frame_shuffle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.synth.render import SynthClip, SynthClips
from stlens.video.flow import FLOW_BOUND, encode_flow, flow_clip, flow_jitter
from stlens.video.sampling import to_model_input
from stlens.video.stylizers import draw_style, get_stylizer

RERENDER = "rerender"


def _textures(clip: SynthClip) -> set[int]:
    if "textures" in clip.meta:  # instance task: every object's texture and the background
        return set(clip.meta["textures"])
    distractor = clip.meta.get("distractor")  # segment task only
    extra = {distractor["texture"]} if distractor else set()
    return {clip.meta["object_texture"], clip.meta["background_texture"], *extra}


def _targets(clips: list, factor: int) -> tuple[Instances, Instances] | None:
    """The instance tracks of both videos of a pair of instance clips (``task=instances``; the static pair's second
    video is the first's, before its frames are shuffled); None for other clips."""
    if not all(isinstance(getattr(clip, "instances", None), Instances) for clip in clips):
        return None
    return (clips[0].instances, clips[-1].instances)


def _reordered(instances: Instances, order: np.ndarray) -> Instances:
    """``instances`` with the frames of every mask in ``order`` (those of a frame-shuffled clip)."""
    return Instances(instances.masks[:, order], instances.classes, instances.track_ids, instances.crowd)


@dataclass
class SynthPairs:
    """Iterable of ``Pair`` from a ``SynthClips``: ``pairs`` per factor; pair i uses clip i mod len(dataset) for
    both factors and draws its appearances, styles and shuffles from a generator seeded with (seed, factor, i).

    Clips are used as rendered (no temporal subsampling, no crop): the model's ``spec.frames`` and ``spec.size``
    must equal the dataset's ``frames`` and ``size`` (else a ``StlensError`` says which options to pass); only the
    normalization (mean, std) of ``spec`` is applied.

    Indexable like ``VideoPairs`` (for worker processes): ``ps[k]`` is pair k alone (pair i = k // 2, dynamic at even
    k, static at odd k), ``[ps[k] for k in range(len(ps))] == list(ps)``; ``plan()`` has nothing to probe (nothing is
    ever skipped); ``spans()`` gives the two pairs of each pair index. Pickles without its stylizer functions.
    """

    dataset: SynthClips
    spec: InputSpec
    pairs: int
    stylizer: str = RERENDER
    seed: int = 0
    flow: bool = False
    bound: float = FLOW_BOUND
    skipped: list[dict[str, str]] = field(default_factory=list)
    # The stylizer functions (None: re-rendering); never pickled (a module: stylizer may not pickle).
    _stylizer_list: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def flow_method(self) -> str | None:
        """The flow of two-stream pairs, as results record it: the dataset's (``truth``, or the estimator of a
        segment world); None for RGB pairs."""
        return getattr(self.dataset, "flow_method", None) if self.flow else None

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise StlensError(f"`pairs` must be ≥ 1, got {self.pairs}")
        ds, spec = self.dataset, self.spec
        if (spec.frames, spec.size) != (ds.frames, ds.size):
            raise StlensError(
                f"{ds.spec} renders {ds.frames} frames of {ds.size}×{ds.size} px but the model takes {spec.frames} "
                f"frames of {spec.size}×{spec.size} px: open the data as "
                f"synth:{ds.world}?frames={spec.frames}&size={spec.size} (or pass `frames`/`size` matching the data)")
        self._stylizer_list = None if self.stylizer == RERENDER else get_stylizer(self.stylizer)

    @property
    def _stylizers(self) -> list | None:
        if self._stylizer_list is None and self.stylizer != RERENDER:  # after unpickling
            self._stylizer_list = get_stylizer(self.stylizer)
        return self._stylizer_list

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stylizer_list": None}

    @property
    def source(self) -> SynthClips:
        return self.dataset

    def __len__(self) -> int:
        return 2 * self.pairs

    def plan(self) -> SynthPairs:
        """Nothing to probe (every clip renders): ``skipped`` is empty. Returns ``self``."""
        self.skipped = []
        return self

    def spans(self) -> tuple[range, ...]:
        """The global pair indices of each pair index i (its dynamic and its static pair, the same clip)."""
        return tuple(range(2 * i, 2 * i + 2) for i in range(self.pairs))

    def __getitem__(self, index: int) -> Pair:
        """Pair ``index`` (negative counts from the end): pair i = index // 2 of clip i mod len(dataset), dynamic at
        even and static at odd indices, drawn from a generator seeded with (seed, factor, i)."""
        k = operator.index(index)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        i, odd = divmod(k, 2)
        factor = STATIC if odd else DYNAMIC
        pair = self._pair(i % len(self.dataset), factor, np.random.default_rng((self.seed, factor, i)))
        pair.index = k
        return pair

    def _rerendered(self, index: int, rng: np.random.Generator, avoid: SynthClip | None = None) -> SynthClip:
        """A new appearance of clip ``index``; with ``avoid``, one sharing no texture with it (100 tries)."""
        for _ in range(100):
            clip = self.dataset.rerender(index, int(rng.integers(2**31)))
            if avoid is None or not (_textures(clip) & _textures(avoid)):
                break
        return clip

    def _appearances(self, index: int, factor: int, rng: np.random.Generator
                     ) -> tuple[list[np.ndarray], list[SynthClip]]:
        """One (static) or two (dynamic) appearances of clip ``index``, and the clip each comes from (masks,
        positions, instances; one clip for both styles of a stylizer)."""
        if self._stylizers is None:
            first = self._rerendered(index, rng)
            if factor == STATIC:
                return [first.frames], [first]
            second = self._rerendered(index, rng, avoid=first)
            return [first.frames, second.frames], [first, second]
        clip = self.dataset[index]
        styled, seed_a = draw_style(clip.frames, self._stylizers, rng)
        if factor == STATIC:
            return [styled], [clip]
        return [styled, draw_style(clip.frames, self._stylizers, rng, avoid=seed_a)[0]], [clip, clip]

    def _pair(self, index: int, factor: int, rng: np.random.Generator) -> Pair:
        looks, clips = self._appearances(index, factor, rng)
        clip = clips[0]
        name = self.dataset.name(index)
        rgb_a = to_model_input(looks[0], self.spec)
        targets = _targets(clips, factor)
        if not self.flow:
            if factor == DYNAMIC:
                return Pair(factor, rgb_a, to_model_input(looks[1], self.spec), name, targets=targets)
            if targets is None:
                return Pair(factor, rgb_a, to_model_input(frame_shuffle(looks[0], rng), self.spec), name)
            order = frame_shuffle(np.arange(len(looks[0])), rng)  # the same draw as shuffling the frames themselves
            return Pair(factor, rgb_a, to_model_input(looks[0][order], self.spec), name,
                        targets=(targets[0], _reordered(targets[1], order)))
        flow = clip.flow()
        flow_a = torch.from_numpy(flow_clip(encode_flow(flow, self.bound)))
        if factor == DYNAMIC:
            return Pair(factor, (rgb_a, flow_a), (to_model_input(looks[1], self.spec), flow_a), name,
                        targets=targets)
        jittered = torch.from_numpy(flow_clip(encode_flow(flow_jitter(flow, rng), self.bound)))
        return Pair(factor, (rgb_a, flow_a), (rgb_a, jittered), name, targets=targets)

    def __iter__(self) -> Iterator[Pair]:
        """The pairs in index order (``self[0]``, ``self[1]``, ...)."""
        self.plan()
        for k in range(len(self)):
            yield self[k]
