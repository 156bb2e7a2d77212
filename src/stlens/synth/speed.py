"""``speed`` pairs (docs/factors.md): two clips of a synth world rendered at one speed from their ground truth, with
another object (shape), other textures and another direction — they share the speed of motion and nothing else the
world draws on purpose."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from stlens.core.pair import Pair
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.synth.render import SynthClip
from stlens.synth.worlds import object_box
from stlens.video.sampling import to_model_input

SPEED_RANGE = (0.5, 4.0)
"""The speeds of speed pairs in px/frame at 64 px (scaled by size/64), capped so every object stays in frame."""


def speed_range(frames: int, size: int) -> tuple[float, float]:
    """(lo, hi) px/frame: ``SPEED_RANGE`` scaled by size/64, hi capped at (size − largest box side)/(frames − 1), so
    the largest object crosses at most the free width in any direction and stays whole in every frame."""
    lo, hi = (s * size / 64 for s in SPEED_RANGE)
    hi = min(hi, (size - object_box(size)[1]) / max(frames - 1, 1))
    return min(lo, hi), hi


def _differs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Another direction, shape and object texture, and no texture in common."""
    textures = ({a["object_texture"], a["background_texture"]} & {b["object_texture"], b["background_texture"]})
    return a["direction_deg"] != b["direction_deg"] and a["shape"] != b["shape"] and not textures


@dataclass
class SpeedPairs:
    """``pairs`` speed pairs of a synth dataset (a ``SynthDataset``): pair i draws a speed s uniform in
    ``speed_range`` from a generator seeded with (seed, code, i), opens the same world with speed=s-s (every clip
    then moves at exactly s px/frame and starts where it stays in frame) and renders its clip i mod n and a clip j
    drawn from the same generator whose direction, shape and textures all differ (``_differs``, 100 tries)."""

    dataset: Any
    spec: InputSpec
    pairs: int
    seed: int = 0
    code: int = 2

    def __post_init__(self) -> None:
        ds = self.dataset
        if (self.spec.frames, self.spec.size) != (ds.frames, ds.size):
            raise StlensError(f"`factors`: speed pairs are rendered at {ds.frames} frames of {ds.size} px but the "
                              f"model takes {self.spec.frames} frames of {self.spec.size} px")
        if len(ds) < 2:
            raise StlensError(f"`factors`: speed pairs need a world of at least 2 clips, {ds.spec} has {len(ds)}")

    def __len__(self) -> int:
        return self.pairs

    def clips(self, i: int) -> tuple[SynthClip, SynthClip]:
        """The two clips of pair ``i`` (their ``meta`` holds the rendering parameters)."""
        rng = np.random.default_rng((self.seed, self.code, i))
        speed = float(rng.uniform(*speed_range(self.dataset.frames, self.dataset.size)))
        world = dataclasses.replace(self.dataset, speed=(speed, speed), spec="")
        first = i % len(world)
        meta = world.describe(first)
        for _ in range(100):
            other = int(rng.integers(len(world) - 1))
            other += other >= first
            if _differs(meta, world.describe(other)):
                break
        return world[first], world[other]

    def __getitem__(self, i: int) -> Pair:
        a, b = self.clips(i)
        name = f"{a.meta['name']}+{b.meta['index']:06d}@{a.meta['speed']:.3g}px/frame"
        return Pair(self.code, to_model_input(a.frames, self.spec), to_model_input(b.frames, self.spec), name)
