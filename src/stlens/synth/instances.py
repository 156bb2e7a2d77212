"""The instance task of the synthetic worlds (``task=instances``): A..B textured objects per clip under the segment
task's moving camera, each with a class, a track id and its exact per-frame visible mask (``core.instances``).

Classes (``INSTANCE_CLASSES`` = 4) and their rules (``INSTANCE_WORLDS``): in ``motion`` an object's class is its
direction bin (class k: within ±22.5° of the compass angle 90°·k, k = 0 east, 1 north, 2 west, 3 south), its texture
any of the bank; in ``appearance`` its texture family (class k: family k of ``textures.FAMILIES``, the first four),
its direction uniform over 360°; in ``confounded`` both (train), or the family drawn at random (test). Speed, shape,
size, start and depth are drawn independently of the class in every world.

Draw order, from the clip's generator (``worlds.clip_rng``): the object count, then per object its class, direction
jitter, free angle, speed, shape, box (height, width), free family, anchor frame and anchor centre (x, y) — the
*plan*, whose camera (``camera.draw_camera``, given the first object's velocity) comes next — then the textures
(``draw_look``: per object a texture and crop offset, then the background), from the clip's generator or a
re-rendering's (``worlds.rerender_rng``; a re-rendering draws any texture of the bank for every object).

Objects are pasted back to front in drawing order (object 0 deepest), so a mask is the object's visible pixels and
the masks of one frame are disjoint. An object's box centre lies inside the frame at its anchor frame; it may enter
or leave the frame at other frames (its track is then absent there). Track ids are 1..N in drawing order; a track with
no visible pixel in the whole clip (hidden behind others throughout) is dropped, so ids may skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stlens.core.instances import Instances
from stlens.synth.camera import Camera, draw_camera
from stlens.synth.render import SHAPES, displacements, flow_from_masks, paste, shape_mask
from stlens.synth.segment import CONTRAST, FLAT_KINDS
from stlens.synth.textures import FAMILIES, TextureBank
from stlens.synth.worlds import direction_velocity

INSTANCE_CLASSES = 4
MOTION_CLASSES = ("east", "north", "west", "south")
BIN = 22.5
"""Half-width in degrees of a motion class's direction bin around 90°·k (bins are 45° wide, 45° apart)."""
INSTANCE_WORLDS: dict[str, str] = {
    "motion": "class = direction bin of the object's motion (k: 90°·k ± 22.5°: east, north, west, south); texture, "
              "shape, size and speed independent of it",
    "appearance": "class = texture family of the object (k: red stripes, orange grass, yellow diagonal stripes, green "
                  "checkerboard); direction uniform over 360°, shape, size and speed independent of it",
    "confounded": "train: direction bin k and texture family k together; test: family drawn at random, so only "
                  "motion generalizes",
}
"""World → what an instance's class means (``task=instances``; camouflage has no instance task)."""
DEFAULT_OBJECTS = (1, 3)
MAX_OBJECTS = 8
INSTANCE_SIZE = (0.2, 0.35)
"""Object box side range as a fraction of the frame (13-22 px at 64 px)."""


def class_names(world: str) -> tuple[str, ...]:
    return FAMILIES[:INSTANCE_CLASSES] if world == "appearance" else MOTION_CLASSES


@dataclass(frozen=True)
class Track:
    """One object's plan: track id, class, motion, shape, box (height, width), the family the world asks for (None:
    any texture) and the (T, 2) top-left (x, y) per frame."""

    track_id: int
    label: int
    direction_deg: float
    speed: float
    velocity: tuple[float, float]
    shape: str
    box: tuple[int, int]
    family: int | None
    positions: np.ndarray


@dataclass(frozen=True)
class InstancePlan:
    """Everything about an instance clip but its textures: the tracks back to front and the camera."""

    tracks: tuple[Track, ...]
    camera: Camera


@dataclass(frozen=True)
class InstanceLook:
    """The textures of an instance clip: per object a bank id and (y, x) crop offset, and the background's id."""

    textures: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    background: int


def plan_instances(rng: np.random.Generator, world: str, split: str, frames: int, size: int, side: int,
                   speed: tuple[float, float], objects: tuple[int, int]) -> InstancePlan:
    """Draw the objects and the camera of a clip from its generator (see the module docstring for the order)."""
    count = int(rng.integers(objects[0], objects[1] + 1))
    lo, hi = max(3, round(INSTANCE_SIZE[0] * size)), max(3, round(INSTANCE_SIZE[1] * size))
    tracks = []
    for k in range(count):
        label = int(rng.integers(INSTANCE_CLASSES))
        jitter, free = float(rng.uniform(-BIN, BIN)), float(rng.uniform(0.0, 360.0))
        pace = float(rng.uniform(*speed)) if speed[1] > speed[0] else float(speed[0])
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        height, width = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        free_family = int(rng.integers(INSTANCE_CLASSES))
        anchor = int(rng.integers(frames))
        cx, cy = (int(v) for v in rng.integers(0, size, size=2))
        degrees = free if world == "appearance" else (90.0 * label + jitter) % 360.0
        if world == "appearance" or (world == "confounded" and split == "train"):
            family: int | None = label
        else:
            family = free_family if world == "confounded" else None
        velocity = direction_velocity(degrees, pace)
        offsets = displacements(velocity, frames)
        start = np.array([cx - width // 2, cy - height // 2]) - offsets[anchor]
        positions = offsets + start
        positions.setflags(write=False)
        tracks.append(Track(k + 1, label, degrees, pace, velocity, shape, (height, width), family, positions))
    camera = draw_camera(rng, size, frames, side, tracks[0].velocity)
    return InstancePlan(tuple(tracks), camera)


def draw_look(rng: np.random.Generator, bank: TextureBank, plan: InstancePlan, own: bool) -> InstanceLook:
    """Per object (back to front) its texture — its family where the world asks for one and ``own``, else any
    texture of the bank — and crop offset; then a textured, non-family background used by no object and contrasting
    in mean colour with every object (20 tries)."""
    side = bank.images.shape[1]
    textures, offsets = [], []
    for track in plan.tracks:
        family = track.family if own else None
        textures.append(bank.families[family] if family is not None else int(rng.integers(len(bank))))
        height, width = track.box
        offsets.append((int(rng.integers(0, side - height + 1)), int(rng.integers(0, side - width + 1))))
    pool = [i for i in bank.backgrounds if bank.kinds[i] not in FLAT_KINDS and i not in textures]
    for _ in range(20):
        background = int(pool[int(rng.integers(len(pool)))])
        if all(np.linalg.norm(bank.means[background] - bank.means[t]) >= CONTRAST for t in textures):
            break
    return InstanceLook(tuple(textures), tuple(offsets), background)


def render_instances(images: np.ndarray, plan: InstancePlan, look: InstanceLook, frames: int,
                     size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, H, W, 3) and every planned object's visible masks bool (N, T, H, W): the camera's background,
    then the objects pasted back to front, each hiding the pixels it covers from the objects behind it."""
    video = plan.camera.render(images[look.background], size, frames)
    masks = np.zeros((len(plan.tracks), frames, size, size), bool)
    for k, (track, texture, (oy, ox)) in enumerate(zip(plan.tracks, look.textures, look.offsets, strict=True)):
        height, width = track.box
        sprite = images[texture, oy:oy + height, ox:ox + width]
        drawn = paste(video, sprite, shape_mask(track.shape, height, width), track.positions)
        masks[:k] &= ~drawn
        masks[k] = drawn
    return video, masks


@dataclass(frozen=True, eq=False)
class InstanceClip:
    """One rendered instance clip: ``frames`` uint8 (T, H, W, 3), ``instances`` (the kept tracks, back to front),
    ``meta`` (JSON-serialisable), ``positions`` (per kept track its (T, 2) box top-left), its ``camera`` and an
    optional flow ``estimator`` (as ``SynthClip``)."""

    frames: np.ndarray
    instances: Instances
    meta: dict[str, Any]
    positions: tuple[np.ndarray, ...]
    camera: Camera
    estimator: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def masks(self) -> np.ndarray:
        """bool (T, H, W): the union of the instance masks (every object's visible pixels)."""
        return self.instances.masks.any(0)

    def flow(self) -> np.ndarray:
        """float32 (T-1, H, W, 2): the ground truth, or the flow estimated from the frames with an ``estimator``."""
        return self.true_flow() if self.estimator is None else self.estimator(self.frames)

    def true_flow(self) -> np.ndarray:
        """Each object's displacement on its visible pixels of frame t, the camera's background motion elsewhere."""
        flow = self.camera.flow(self.frames.shape[1], len(self.frames))
        for masks, positions in zip(self.instances.masks, self.positions, strict=True):
            flow = flow_from_masks(masks, positions, flow)
        return flow


def instance_clip(images: np.ndarray, bank: TextureBank, plan: InstancePlan, look: InstanceLook, frames: int,
                  size: int, meta: dict[str, Any], estimator: Callable[[np.ndarray], np.ndarray] | None,
                  class_names: tuple[str, ...]) -> InstanceClip:
    """Render ``plan`` in ``look`` and keep the tracks with a visible pixel; ``meta`` gains ``objects`` (per planned
    track, kept or not), ``dropped`` (the ids of tracks never visible), ``textures``, ``background_texture`` and
    ``camera``."""
    video, masks = render_instances(images, plan, look, frames, size)
    kept = masks.reshape(len(masks), -1).any(1)
    tracks = plan.tracks
    shown = [t for t, k in zip(tracks, kept, strict=True) if k]
    instances = Instances(masks[kept], [t.label for t in shown], [t.track_id for t in shown],
                          np.zeros(len(shown), bool))
    objects = [{"track_id": t.track_id, "class": t.label, "class_name": class_names[t.label], "depth": k,
                "direction_deg": t.direction_deg, "speed": t.speed, "velocity": list(t.velocity), "shape": t.shape,
                "box": list(t.box), "positions": t.positions.tolist(), "texture": tex,
                "texture_name": bank.names[tex], "offset": list(off)}
               for k, (t, tex, off) in enumerate(zip(tracks, look.textures, look.offsets, strict=True))]
    meta = {**meta, "objects": objects, "dropped": [t.track_id for t, k in zip(tracks, kept, strict=True) if not k],
            "textures": [*look.textures, look.background], "background_texture": look.background,
            "background_texture_name": bank.names[look.background], "camera": plan.camera.meta(frames)}
    return InstanceClip(video, instances, meta, tuple(t.positions for t in shown), plan.camera, estimator)
