"""Rendering a synthetic clip: a textured sprite pasted over a static textured background along an integer
trajectory, with the per-pixel object masks and the ground-truth optical flow.

Positions are integers: the object's top-left corner at frame t is ``start + round(t · velocity)`` (cumulative
rounding, so a fractional speed is kept on average and the position never drifts). The object's texture moves with
the object; in the classify task the background never moves (the segment task's moving camera: ``synth.segment``).
All frames are pasted at once with fancy indexing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from stlens.synth.camera import Camera

SHAPES = ("square", "disc", "triangle", "diamond", "cross")
"""Object shapes; each is drawn inside an h×w box (h and w drawn independently, so discs may be ellipses)."""


@lru_cache(maxsize=1024)
def shape_mask(shape: str, height: int, width: int) -> np.ndarray:
    """The bool (height, width) mask of ``shape`` filling its box (read-only, cached)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    y = (ys + 0.5) / height * 2 - 1  # pixel centres in [-1, 1]
    x = (xs + 0.5) / width * 2 - 1
    if shape == "square":
        mask = np.ones((height, width), bool)
    elif shape == "disc":
        mask = x**2 + y**2 <= 1.0
    elif shape == "triangle":  # apex up, base at the bottom
        mask = np.abs(x) <= (y + 1) / 2
    elif shape == "diamond":
        mask = np.abs(x) + np.abs(y) <= 1.0
    elif shape == "cross":
        mask = (np.abs(x) <= 0.34) | (np.abs(y) <= 0.34)
    else:
        raise ValueError(f"unknown shape {shape!r}; choices: {', '.join(SHAPES)}")
    mask.setflags(write=False)
    return mask


def displacements(velocity: tuple[float, float], frames: int) -> np.ndarray:
    """Integer offsets (T, 2) as (x, y) of the object at frame t from frame 0: ``round(t · velocity)``."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    return np.round(t * np.asarray(velocity, np.float64)[None, :]).astype(np.int64)


def place(offsets: np.ndarray, extent: int, frame: int, rng: np.random.Generator) -> int:
    """The start coordinate along one axis: uniform among those that keep the object (``extent`` px) inside the
    frame (``frame`` px) on every frame; when none does (too fast, too long), the trajectory is centred and the
    object leaves the frame partly at both ends (its mask then covers only the visible part)."""
    lo, hi = -int(offsets.min()), frame - extent - int(offsets.max())
    if lo <= hi:
        return int(rng.integers(lo, hi + 1))
    return (lo + hi) // 2


def paste(video: np.ndarray, sprite: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Paste ``sprite`` (h, w, 3) with shape ``mask`` (h, w) into ``video`` (T, H, W, 3) in place, its top-left
    corner at ``positions`` (T, 2) (x, y) per frame (may lie partly outside); returns its visible pixels (T, H, W)."""
    frames, height, width = video.shape[:3]
    masks = np.zeros((frames, height, width), bool)
    sy, sx = np.nonzero(mask)
    t = np.repeat(np.arange(frames), len(sy))
    ys = np.tile(sy, frames) + np.repeat(positions[:, 1], len(sy))
    xs = np.tile(sx, frames) + np.repeat(positions[:, 0], len(sx))
    colours = sprite[sy, sx]
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    if inside.all():
        video[t, ys, xs] = np.tile(colours, (frames, 1))
        masks[t, ys, xs] = True
    else:
        video[t[inside], ys[inside], xs[inside]] = np.tile(colours, (frames, 1))[inside]
        masks[t[inside], ys[inside], xs[inside]] = True
    return masks


def render_clip(background: np.ndarray, sprite: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, H, W, 3) and masks bool (T, H, W).

    ``background`` (H, W, 3) is the static background, ``sprite`` (h, w, 3) the object's texture, ``mask`` (h, w)
    its shape, ``positions`` (T, 2) the (x, y) of the sprite's top-left corner per frame (may lie partly outside).
    """
    height, width = background.shape[:2]
    video = np.empty((frames, height, width, 3), np.uint8)
    video[:] = background
    return video, paste(video, sprite, mask, positions)


def flow_from_masks(masks: np.ndarray, positions: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Ground-truth flow float32 (T-1, H, W, 2) in px, (u, v) = (x, y): on the object's pixels of frame t the
    displacement of the object from frame t to t + 1; elsewhere ``base`` (modified in place), or zero (the classify
    task's background is static)."""
    steps = np.diff(np.asarray(positions, np.float32), axis=0)  # (T-1, 2)
    flow = np.zeros((*masks[:-1].shape, 2), np.float32) if base is None else base
    t, y, x = np.nonzero(masks[:-1])
    flow[t, y, x] = steps[t]
    return flow


@dataclass(frozen=True, eq=False)
class SynthClip:
    """One rendered clip: ``frames`` uint8 (T, H, W, 3), ``masks`` bool (T, H, W) (the object's visible pixels: the
    target of the segment task), ``label``, ``meta`` (JSON-serialisable: class, direction, speed, velocity, shape,
    box, start and per-frame positions, texture ids/names/offsets; for the segment task also ``task``, ``camera``,
    ``distractor`` and ``flow``) and ``positions`` (T, 2) int, the (x, y) of the object's box per frame.

    Segment clips also carry their ``camera`` (``synth.camera.Camera``) and the distractor's visible pixels
    ``distractor_masks`` (T, H, W) and box positions ``distractor_positions`` (None without a distractor).

    ``flow()`` is computed on request (it is larger than the clip itself): the ground truth ``true_flow()``, or, where
    the clip has an ``estimator`` (``flow=dis|tvl1|farneback``, the segment task's default), the estimate from the
    frames.
    """

    frames: np.ndarray
    masks: np.ndarray
    label: int
    meta: dict[str, Any]
    positions: np.ndarray
    camera: Camera | None = None
    distractor_masks: np.ndarray | None = None
    distractor_positions: np.ndarray | None = None
    estimator: Callable[[np.ndarray], np.ndarray] | None = None

    def flow(self) -> np.ndarray:
        """float32 (T-1, H, W, 2) in px, (u, v) = (rightwards, downwards), field t moving frame t onto t + 1: the
        ground truth (``true_flow``), or the optical flow estimated from the frames where the clip has an
        ``estimator``."""
        return self.true_flow() if self.estimator is None else self.estimator(self.frames)

    def true_flow(self) -> np.ndarray:
        """The ground-truth flow, float32 (T-1, H, W, 2): the object's displacement on the object's pixels of frame
        t, the distractor's on its visible pixels, the camera's background motion elsewhere (zero without a
        camera)."""
        if self.camera is None:
            return flow_from_masks(self.masks, self.positions)
        base = self.camera.flow(self.frames.shape[1], len(self.frames))
        if self.distractor_masks is not None:
            base = flow_from_masks(self.distractor_masks, self.distractor_positions, base)
        return flow_from_masks(self.masks, self.positions, base)


class SynthClips(Protocol):
    """What pair making needs of a synthetic dataset (``SynthDataset`` is one): its spec, world and clip size, its
    clips by index, a clip re-rendered with new textures, and a name per clip. ``synth.pairs`` depends on this
    protocol, not on ``synth.dataset``, which imports ``synth.pairs`` to make its pairs."""

    spec: str
    world: str
    frames: int
    size: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SynthClip: ...

    def rerender(self, index: int, appearance_seed: int) -> SynthClip: ...

    def name(self, index: int) -> str: ...
