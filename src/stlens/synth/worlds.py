"""The synthetic worlds: what decides a clip's label, and how a clip's motion and appearance are drawn.

Every clip has eight possible labels. Its random draws come from ``numpy.random.default_rng((seed, split_id, i))``
(split ids: train 0, test 1), in this order: label, direction, speed, shape, box size, appearance family (confounded
test split only), start position — the *plan* (``plan_clip``) — then its textures (``draw_appearance``). So clip i
never depends on the other clips or on the order they are read, and ``rerender`` can keep a clip's plan exactly while
drawing new textures from another generator. The segment task (``synth.segment``) draws its camera and distractor
from the same generator after all of these, so a classify clip's draws never change.

Directions: class k moves at the compass angle 2πk/8 measured counter-clockwise from east with up being north
(k = 0 east, 2 north = up the image, 4 west, 6 south); in image coordinates the velocity is speed·(cos θ, −sin θ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stlens.synth.render import SHAPES, displacements, place
from stlens.synth.textures import FAMILIES, TextureBank

NUM_CLASSES = 8
WORLDS: dict[str, str] = {
    "motion": "label = direction of motion (8 compass directions); shape, textures and speed independent of it",
    "appearance": "label = object appearance family (8 texture/colour families); direction uniform over 360°",
    "confounded": "train: direction k and appearance family k together; test: appearance family drawn at random, "
                  "so only motion generalizes",
    "camouflage": "label = direction; the object wears the background's own texture (invisible in frame 0, seen "
                  "through motion only)",
}
"""World name → what its label means."""

SPLITS = {"train": 0, "test": 1}
DIRECTIONS = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")
DEFAULT_SPEED = (1.0, 2.0)
"""Default speed range in px/frame at 64 px frames; scaled by size/64 at other sizes (same fraction of the frame)."""
OBJECT_SIZE = (0.3, 0.45)
"""Object box side range as a fraction of the frame (19-29 px at 64 px): with the default speeds the object stays
fully inside the frame for 16 frames in every direction."""
MIN_CONTRAST = 48.0
"""Least distance (RGB, 0-255) between object and background mean colours (backgrounds are redrawn up to 20 times)."""


def labelled_by_motion(world: str) -> bool:
    return world != "appearance"


def direction_velocity(degrees: float, speed: float) -> tuple[float, float]:
    """(u, v) in px/frame in image coordinates (v downwards) for a compass angle (counter-clockwise from east)."""
    t = math.radians(degrees)
    return speed * math.cos(t), -speed * math.sin(t)


@dataclass(frozen=True)
class ClipPlan:
    """Everything about a clip but its textures."""

    label: int
    motion_class: int | None  # compass direction index when the label is the direction, else None
    appearance_class: int | None  # the appearance family the world asks for (None: free choice)
    direction_deg: float
    speed: float
    velocity: tuple[float, float]
    shape: str
    box: tuple[int, int]  # (height, width)
    positions: np.ndarray  # (T, 2) int (x, y) of the box's top-left corner per frame


@dataclass(frozen=True)
class Appearance:
    """The textures of a clip: bank ids and the (y, x) offsets of the crops taken from them."""

    object_texture: int
    object_offset: tuple[int, int]
    background_texture: int
    background_offset: tuple[int, int]


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng((seed, SPLITS[split], index))


def rerender_rng(seed: int, split: str, index: int, appearance_seed: int) -> np.random.Generator:
    """The generator of a re-rendering's textures (a stream no clip's own generator can share)."""
    return np.random.default_rng((seed, SPLITS[split], index, appearance_seed, 1))


def draw_label(rng: np.random.Generator) -> int:
    return int(rng.integers(NUM_CLASSES))


def object_box(size: int) -> tuple[int, int]:
    lo = max(3, round(OBJECT_SIZE[0] * size))
    return lo, max(lo, round(OBJECT_SIZE[1] * size))


def plan_clip(rng: np.random.Generator, world: str, split: str, frames: int, size: int,
              speed: tuple[float, float]) -> ClipPlan:
    """Draw a clip's label, motion and geometry from its own generator (see the module docstring for the order)."""
    label = draw_label(rng)
    free_angle = float(rng.uniform(0.0, 360.0))
    degrees = free_angle if world == "appearance" else 360.0 * label / NUM_CLASSES
    pace = float(rng.uniform(*speed)) if speed[1] > speed[0] else float(speed[0])
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    lo, hi = object_box(size)
    height, width = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    if world == "appearance" or (world == "confounded" and split == "train"):
        appearance_class: int | None = label
    elif world == "confounded":
        appearance_class = int(rng.integers(NUM_CLASSES))
    else:
        appearance_class = None
    velocity = direction_velocity(degrees, pace)
    offsets = displacements(velocity, frames)
    x0 = place(offsets[:, 0], width, size, rng)
    y0 = place(offsets[:, 1], height, size, rng)
    positions = offsets + np.array([x0, y0])
    positions.setflags(write=False)
    return ClipPlan(label, label if labelled_by_motion(world) else None, appearance_class, degrees, pace, velocity,
                    shape, (height, width), positions)


def draw_appearance(rng: np.random.Generator, bank: TextureBank, plan: ClipPlan, size: int, camouflage: bool,
                    family: int | None) -> Appearance:
    """Textures for ``plan``: the object from family ``family`` (None: any texture of the bank), the background from
    the non-family pool, different from the object and contrasting in mean colour. For camouflage, one texture of
    the camouflage pool for both, the object's patch being the background under the object's frame-0 box (exact
    while that box lies inside the frame, as it does with the default speeds; otherwise the crop is clamped to the
    texture and frame 0 shows a seam)."""
    side = bank.images.shape[1]
    height, width = plan.box
    by, bx = (int(v) for v in rng.integers(0, side - size + 1, size=2))
    if camouflage:
        texture = int(bank.camouflage[int(rng.integers(len(bank.camouflage)))])
        x0, y0 = (int(v) for v in plan.positions[0])
        offset = (min(max(by + y0, 0), side - height), min(max(bx + x0, 0), side - width))
        return Appearance(texture, offset, texture, (by, bx))
    obj = bank.families[family] if family is not None else int(rng.integers(len(bank)))
    offset = (int(rng.integers(0, side - height + 1)), int(rng.integers(0, side - width + 1)))
    pool = bank.backgrounds
    for _ in range(20):
        background = int(pool[int(rng.integers(len(pool)))])
        if background != obj and np.linalg.norm(bank.means[background] - bank.means[obj]) >= MIN_CONTRAST:
            break
    else:
        background = next(int(b) for b in pool[int(rng.integers(len(pool))):] + pool if b != obj)
    return Appearance(obj, offset, background, (by, bx))


def class_names(world: str) -> tuple[str, ...]:
    return FAMILIES if world == "appearance" else DIRECTIONS
