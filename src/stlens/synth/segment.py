"""The segment task of the synthetic worlds (``task=segment``): a moving camera and an optional moving distractor
around the target object, whose per-frame mask is the target.

What a segment clip adds to the classify clip of the same index (whose plan and textures it keeps):

- a ``Camera`` (``stlens.synth.camera``): the background pans and zooms; the target keeps its plan's screen
  trajectory (it is not carried by the camera), so it moves relative to the background by its own velocity minus the
  background's;
- with ``distractor=1``, a ``Distractor``: a second, smaller sprite (box side 15-25% of the frame against 30-45% for the
  target) with its own shape, direction and speed, drawn *behind* the target and never in the mask;
- flat backgrounds (solid colours, gradients) replaced by a textured one, so that the camera's motion is visible.

Draw order: the clip's generator, after the classify draws (plan, then textures), draws the camera (``draw_camera``)
then the distractor's motion (``draw_distractor``): the *scene*, which re-renderings keep. The generator of the
textures (the clip's own, or the re-rendering's) then draws the segment textures (``segment_look``). For camouflage,
target and distractor wear the patch of frame 0's background under their frame-0 box (exactly: they are invisible on
frame 0 where nothing overlaps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from stlens.synth.camera import Camera, draw_camera
from stlens.synth.render import SHAPES, displacements, paste, place, shape_mask
from stlens.synth.textures import TextureBank

TASKS = ("classify", "segment")
DISTRACTOR_SIZE = (0.15, 0.25)
"""Distractor box side range as a fraction of the frame (smaller than the target's 0.3-0.45: size tells them apart)."""
FLAT_KINDS = ("solid", "gradient")
"""Texture kinds on which camera motion is invisible: never a segment clip's background."""
CONTRAST = 48.0
"""Least distance (RGB) between mean colours of a replaced background and the object, or a distractor and the
background (as ``worlds.MIN_CONTRAST``)."""


@dataclass(frozen=True)
class Distractor:
    """The distractor's motion: shape, box (height, width), velocity (px/frame), (T, 2) top-left (x, y) per frame."""

    shape: str
    box: tuple[int, int]
    direction_deg: float
    speed: float
    velocity: tuple[float, float]
    positions: np.ndarray


@dataclass(frozen=True)
class Scene:
    """What a segment clip adds to its plan: the camera and the distractor (None without one)."""

    camera: Camera
    distractor: Distractor | None


@dataclass(frozen=True)
class SegmentLook:
    """The segment textures: the background texture (the plan's, unless flat), the distractor's texture and crop
    offset (None without a distractor; offset None for camouflage, whose sprites come from frame 0)."""

    background_texture: int
    distractor_texture: int | None
    distractor_offset: tuple[int, int] | None


def draw_distractor(rng: np.random.Generator, frames: int, size: int, speed: tuple[float, float]) -> Distractor:
    """Shape, box, direction, speed and start of the distractor, in that order; it stays in the frame when it can."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    lo, hi = max(3, round(DISTRACTOR_SIZE[0] * size)), max(3, round(DISTRACTOR_SIZE[1] * size))
    height, width = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    degrees = float(rng.uniform(0.0, 360.0))
    pace = float(rng.uniform(*speed)) if speed[1] > speed[0] else float(speed[0])
    velocity = (pace * math.cos(math.radians(degrees)), -pace * math.sin(math.radians(degrees)))
    offsets = displacements(velocity, frames)
    x0 = place(offsets[:, 0], width, size, rng)
    y0 = place(offsets[:, 1], height, size, rng)
    positions = offsets + np.array([x0, y0])
    positions.setflags(write=False)
    return Distractor(shape, (height, width), degrees, pace, velocity, positions)


def draw_scene(rng: np.random.Generator, frames: int, size: int, side: int, velocity: tuple[float, float],
               speed: tuple[float, float], distractor: bool) -> Scene:
    """The camera, then the distractor's motion (with ``distractor``), from the clip's generator."""
    camera = draw_camera(rng, size, frames, side, velocity)
    return Scene(camera, draw_distractor(rng, frames, size, speed) if distractor else None)


def _textured(bank: TextureBank, avoid: set[int], against: int, rng: np.random.Generator) -> int:
    """A non-family, non-flat texture not in ``avoid``, contrasting in mean colour with ``against`` (20 tries)."""
    pool = [i for i in bank.backgrounds if bank.kinds[i] not in FLAT_KINDS and i not in avoid]
    for _ in range(20):
        pick = int(pool[int(rng.integers(len(pool)))])
        if np.linalg.norm(bank.means[pick] - bank.means[against]) >= CONTRAST:
            return pick
    return pick


def segment_look(rng: np.random.Generator, bank: TextureBank, object_texture: int, background_texture: int,
                 scene: Scene, camouflage: bool) -> SegmentLook:
    """The background (redrawn when flat, never for camouflage) then the distractor's texture and offset."""
    background = background_texture
    if not camouflage and bank.kinds[background] in FLAT_KINDS:
        background = _textured(bank, {object_texture}, object_texture, rng)
    if scene.distractor is None:
        return SegmentLook(background, None, None)
    if camouflage:
        return SegmentLook(background, background, None)
    texture = _textured(bank, {object_texture, background}, background, rng)
    side = bank.images.shape[1]
    height, width = scene.distractor.box
    offset = (int(rng.integers(0, side - height + 1)), int(rng.integers(0, side - width + 1)))
    return SegmentLook(background, texture, offset)


def camouflage_sprite(camera: Camera, texture: np.ndarray, first: np.ndarray, position: np.ndarray,
                      box: tuple[int, int]) -> np.ndarray:
    """The patch of frame 0's background (``first``, (S, S, 3)) under a box at ``position`` (x, y), continued
    through the camera outside the frame."""
    size = first.shape[0]
    (height, width), (x0, y0) = box, (int(position[0]), int(position[1]))
    sprite = camera.sample(texture, 0, size, (x0, y0), (height, width))
    ya, yb, xa, xb = max(y0, 0), min(y0 + height, size), max(x0, 0), min(x0 + width, size)
    if ya < yb and xa < xb:
        sprite[ya - y0:yb - y0, xa - x0:xb - x0] = first[ya:yb, xa:xb]
    return sprite


@dataclass(frozen=True)
class Rendered:
    """A rendered segment clip: frames, the target's masks and the distractor's visible masks (None without one)."""

    frames: np.ndarray
    masks: np.ndarray
    distractor_masks: np.ndarray | None


def render_scene(images: np.ndarray, plan_shape: str, plan_box: tuple[int, int], positions: np.ndarray,
                 object_sprite: np.ndarray | None, look: SegmentLook, scene: Scene, frames: int,
                 size: int) -> Rendered:
    """The camera's background, the distractor pasted over it, then the target over both. ``object_sprite`` None:
    camouflage (the sprites are frame 0's background under their boxes)."""
    texture = images[look.background_texture]
    video = scene.camera.render(texture, size, frames)
    d = scene.distractor
    d_sprite = None
    if d is not None:
        if look.distractor_offset is None:
            d_sprite = camouflage_sprite(scene.camera, texture, video[0], d.positions[0], d.box)
        else:
            (oy, ox), (h, w) = look.distractor_offset, d.box
            d_sprite = images[look.distractor_texture, oy:oy + h, ox:ox + w]
    if object_sprite is None:
        object_sprite = camouflage_sprite(scene.camera, texture, video[0], positions[0], plan_box)
    d_masks = None if d is None else paste(video, d_sprite, shape_mask(d.shape, *d.box), d.positions)
    masks = paste(video, object_sprite, shape_mask(plan_shape, *plan_box), positions)
    if d_masks is not None:
        d_masks &= ~masks
    return Rendered(video, masks, d_masks)


def scene_meta(scene: Scene, look: SegmentLook, bank: TextureBank, frames: int) -> dict[str, Any]:
    """The ``camera`` and ``distractor`` entries of a segment clip's ``meta``."""
    d = scene.distractor
    distractor = None if d is None else {
        "shape": d.shape, "box": list(d.box), "direction_deg": d.direction_deg, "speed": d.speed,
        "velocity": list(d.velocity), "positions": d.positions.tolist(), "texture": look.distractor_texture,
        "texture_name": bank.names[look.distractor_texture],
        "offset": None if look.distractor_offset is None else list(look.distractor_offset)}
    return {"camera": scene.camera.meta(frames), "distractor": distractor}


def with_background(meta: dict[str, Any], look: SegmentLook, bank: TextureBank) -> dict[str, Any]:
    """``meta`` with the segment background (the camera decides the crop: no offset)."""
    return {**meta, "background_texture": look.background_texture,
            "background_texture_name": bank.names[look.background_texture], "background_offset": None}

