"""``synth:<world>?n=..&frames=..&size=..&seed=..&split=..&speed=lo-hi[&task=classify|segment|instances
&distractor=0|1&objects=A..B&flow=truth|dis|tvl1|farneback&flow_cache=FOLDER][&shortcut=P]``: procedural clips with
ground truth.

A ``SynthDataset`` renders clip i on demand from its own seeded generator (see ``worlds``), so clips are identical on
every access and in any order, and nothing is stored. It is a ``stlens.core.source.ClipSource`` (``spec``, ``len``,
``labels``, ``missing``, ``name(i)``) that makes its own pairs (``make_pairs``, see ``stlens.synth.pairs``).

``task=segment`` (``stlens.synth.segment``) adds a moving camera and an optional distractor to each clip, whose
target is then its object mask; its ``flow()`` is estimated from the frames (``flow=dis`` by default; ``true_flow()``
is the ground truth), optionally cached on disk (``flow_cache``). Classify clips (the default) are unchanged.

``task=instances`` (``stlens.synth.instances``) renders ``objects`` = A..B objects per clip under the moving camera,
each with a class, a track id and its visible mask: clip i is an ``InstanceClip`` whose target is its ``Instances``.

``shortcut=P`` (``stlens.synth.shortcut``) paints a corner cue whose colour gives the class in a share P of the clips
(the cue lies in the others); without it nothing changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, ClassVar

import numpy as np

from stlens.core.source import PairSource
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.synth import instances, segment, worlds
from stlens.synth.instances import INSTANCE_CLASSES, INSTANCE_WORLDS, InstanceClip
from stlens.synth.render import SynthClip, render_clip, shape_mask
from stlens.synth.segment import Scene, SegmentLook
from stlens.synth.shortcut import Cue, draw_cue, paint_cue
from stlens.synth.textures import texture_bank
from stlens.synth.worlds import DEFAULT_SPEED, NUM_CLASSES, SPLITS, WORLDS, Appearance, ClipPlan
from stlens.video.flow import FLOW_METHODS, FlowCache, compute_flow

OPTIONS = ("n", "frames", "size", "seed", "split", "speed", "task", "distractor", "objects", "flow", "flow_cache",
           "shortcut")
TASKS = ("classify", "segment", "instances")
DEFAULT_N = {"train": 2000, "test": 400}
TRUTH = "truth"
FLOWS = (TRUTH, *FLOW_METHODS)
"""``flow`` choices: the ground truth, or an optical-flow estimate from the frames."""
DEFAULT_FLOW = {"classify": TRUTH, "segment": "dis", "instances": "dis"}


def estimate_flow(method: str, cache: str | None, frames: np.ndarray) -> np.ndarray:
    """``compute_flow(frames, method)``, through a ``FlowCache`` in ``cache`` when given (keyed by the method and a
    hash of the frames; stored and returned as float16-rounded float32)."""
    if cache is None:
        return compute_flow(frames, method)
    digest = hashlib.sha256(f"synth-flow/v1/{method}/{frames.shape}".encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    return FlowCache(cache).get_or_compute(digest.hexdigest()[:32], lambda: compute_flow(frames, method))


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise StlensError(f"synth option {name} must be an integer, got '{value}'") from None


def _parse_float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise StlensError(f"synth option {name} must be a number, got '{value}'") from None


def _parse_speed(value: str) -> tuple[float, float]:
    lo, sep, hi = value.partition("-")
    try:
        speed = (float(lo), float(hi if sep else lo))
    except ValueError:
        raise StlensError(f"synth option speed must be LO-HI or V in px/frame (e.g. speed=1.5-3), got '{value}'") \
            from None
    return speed


def _parse_objects(value: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("..")
    try:
        return int(lo), int(hi if sep else lo)
    except ValueError:
        raise StlensError(f"synth option objects must be A..B or N objects per clip (e.g. objects=1..3), got "
                          f"'{value}'") from None


@dataclass(frozen=True, eq=False)
class SynthDataset:
    """Procedural clips of a textured object moving over a textured background (see ``WORLDS`` for the worlds).

    ``n`` clips (default 2000 for train, 400 for test) of ``frames`` frames at ``size``×``size`` px; ``speed`` is the
    (lo, hi) range in px/frame (default 1-2 px/frame at 64 px, scaled with size). Objects start where their whole
    trajectory stays inside the frame (no wrapping, no bouncing: one direction per clip). ``ds[i]`` renders clip i.

    ``task`` "classify" (the label is the target) or "segment" (the mask is the target: moving camera, ``distractor``
    0 or 1); ``flow_method`` what ``clip.flow()`` gives ("truth", or an estimator of ``stlens.video.flow``; None: the
    task's default, truth for classify and dis for segment), ``flow_cache`` a folder caching estimated flow.
    ``shortcut`` (None: no cue) the probability that a clip's corner cue shows its own class (``synth.shortcut``).
    ``task`` "instances": ``objects`` (A, B) objects per clip (default 1..3), clips are ``InstanceClip``s and
    ``num_classes`` is ``INSTANCE_CLASSES`` (``synth.instances``).
    """

    world: str = "motion"
    n: int | None = None
    frames: int = 16
    size: int = 64
    seed: int = 0
    split: str = "train"
    speed: tuple[float, float] | None = None
    spec: str = ""
    task: str = "classify"
    distractor: int = 0
    flow_method: str | None = None
    flow_cache: str | None = None
    shortcut: float | None = None
    objects: tuple[int, int] | None = None

    num_classes: ClassVar[int] = NUM_CLASSES
    missing: ClassVar[tuple] = ()  # every clip is rendered: none is ever missing (``ClipSource.missing``)

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise StlensError(f"unknown synthetic world '{self.world}'; choices: {', '.join(WORLDS)}")
        if self.split not in SPLITS:
            raise StlensError(f"synth option split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        n = DEFAULT_N[self.split] if self.n is None else self.n
        speed = self.speed if self.speed is not None else tuple(s * self.size / 64 for s in DEFAULT_SPEED)
        checks = [(n >= 1, f"n must be ≥ 1, got {n}"), (self.frames >= 2, f"frames must be ≥ 2, got {self.frames}"),
                  (self.size >= 16, f"size must be ≥ 16, got {self.size}"),
                  (self.seed >= 0, f"seed must be ≥ 0, got {self.seed}"),
                  (0 <= speed[0] <= speed[1], f"speed must be 0 ≤ lo ≤ hi px/frame, got {speed[0]}-{speed[1]}")]
        for ok, message in checks + self._segment_checks():
            if not ok:
                raise StlensError(f"synth option {message}")
        object.__setattr__(self, "n", int(n))
        object.__setattr__(self, "speed", (float(speed[0]), float(speed[1])))
        object.__setattr__(self, "flow_method", self.flow_method or DEFAULT_FLOW[self.task])
        if self.task == "instances":
            object.__setattr__(self, "objects", tuple(int(v) for v in self.objects or instances.DEFAULT_OBJECTS))
            object.__setattr__(self, "num_classes", INSTANCE_CLASSES)
        if not self.spec:
            object.__setattr__(self, "spec", self.canonical_spec)

    def _segment_checks(self) -> list[tuple[bool, str]]:
        flow = self.flow_method or DEFAULT_FLOW.get(self.task, TRUTH)
        return [(self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got '{self.task}'"),
                (self.distractor in (0, 1), f"distractor must be 0 or 1, got {self.distractor}"),
                (self.distractor == 0 or self.task == "segment", "distractor=1 needs task=segment"),
                (flow in FLOWS, f"flow must be one of {', '.join(FLOWS)}, got '{flow}'"),
                (self.flow_cache is None or flow != TRUTH,
                 "flow_cache needs an estimated flow (flow=dis|tvl1|farneback)"),
                (self.shortcut is None or 0.0 <= self.shortcut <= 1.0,
                 f"shortcut must be a probability in [0, 1], got {self.shortcut}")] + self._instance_checks()

    def _instance_checks(self) -> list[tuple[bool, str]]:
        if self.task != "instances":
            return [(self.objects is None, "objects needs task=instances")]
        lo, hi = self.objects or instances.DEFAULT_OBJECTS
        return [(self.world in INSTANCE_WORLDS,
                 f"task=instances needs a world among {', '.join(INSTANCE_WORLDS)}, got '{self.world}'"),
                (1 <= lo <= hi <= instances.MAX_OBJECTS,
                 f"objects must be A..B with 1 ≤ A ≤ B ≤ {instances.MAX_OBJECTS}, got {lo}..{hi}"),
                (self.shortcut is None, "shortcut needs task=classify or task=segment, not task=instances")]

    @property
    def canonical_spec(self) -> str:
        """The spec with every option spelled out, but for ``task``, ``distractor`` and ``flow`` at their classify
        defaults (so classify specs read as before), ``shortcut`` when unset, and ``flow_cache`` (where, not what)."""
        lo, hi = self.speed
        extra = f"&task={self.task}" if self.task != "classify" else ""
        extra += "&objects={}..{}".format(*self.objects) if self.task == "instances" else ""
        extra += "&distractor=1" if self.distractor else ""
        extra += f"&flow={self.flow_method}" if self.flow_method != DEFAULT_FLOW[self.task] else ""
        extra += f"&shortcut={self.shortcut:g}" if self.shortcut is not None else ""
        return (f"synth:{self.world}?n={self.n}&frames={self.frames}&size={self.size}&seed={self.seed}"
                f"&split={self.split}&speed={lo:g}-{hi:g}{extra}")

    def __len__(self) -> int:
        return self.n

    @cached_property
    def labels(self) -> tuple[int, ...]:
        """The label of every clip (drawn first from each clip's generator: nothing is rendered); empty for
        ``task=instances`` (a clip holds several classes: see its ``Instances``)."""
        if self.task == "instances":
            return ()
        return tuple(worlds.draw_label(worlds.clip_rng(self.seed, self.split, i)) for i in range(self.n))

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names: compass directions, or appearance families for the ``appearance`` world (the first four of
        each for ``task=instances``)."""
        if self.task == "instances":
            return instances.class_names(self.world)
        return worlds.class_names(self.world)

    def name(self, index: int) -> str:
        """Clip ``index``'s name, ``synth:<world>/<split>/<index>``."""
        return f"synth:{self.world}/{self.split}/{index:06d}"

    def _index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"clip {index} out of range for {self.n} clips")
        return index

    def _plan(self, index: int) -> tuple[ClipPlan, np.random.Generator]:
        rng = worlds.clip_rng(self.seed, self.split, index)
        return worlds.plan_clip(rng, self.world, self.split, self.frames, self.size, self.speed), rng

    def _appearance(self, plan: ClipPlan, rng: np.random.Generator, own: bool) -> Appearance:
        family = plan.appearance_class if own else None
        return worlds.draw_appearance(rng, texture_bank(self.size), plan, self.size, self.world == "camouflage", family)

    def _draw(self, index: int, appearance_seed: int | None) -> tuple[ClipPlan, Appearance, Scene | None,
                                                                        SegmentLook | None]:
        """Clip ``index``'s plan and textures (drawn afresh from ``appearance_seed`` unless None), and for the segment
        task its scene (from the clip's generator, after its own textures) and segment textures."""
        plan, rng = self._plan(index)
        segmenting = self.task == "segment"
        # the clip's own textures: its look, or (re-rendering a segment clip) the draws its scene comes after
        own = self._appearance(plan, rng, own=True) if appearance_seed is None or segmenting else None
        scene = None
        if segmenting:
            side = texture_bank(self.size).images.shape[1]
            scene = segment.draw_scene(rng, self.frames, self.size, side, plan.velocity, self.speed,
                                       bool(self.distractor))
        if appearance_seed is None:
            look = own
        else:
            rng = worlds.rerender_rng(self.seed, self.split, index, int(appearance_seed))
            look = self._appearance(plan, rng, own=False)
        if scene is None:
            return plan, look, None, None
        extra = segment.segment_look(rng, texture_bank(self.size), look.object_texture, look.background_texture,
                                     scene, self.world == "camouflage")
        return plan, look, scene, extra

    def _meta(self, index: int, plan: ClipPlan, look: Appearance, appearance_seed: int | None,
              scene: Scene | None = None, extra: SegmentLook | None = None) -> dict[str, Any]:
        meta = self._classify_meta(index, plan, look, appearance_seed)
        bank = texture_bank(self.size)
        if self.flow_method != TRUTH:
            meta["flow"] = self.flow_method
        if self.shortcut is not None:
            meta["cue"] = self._cue(index, plan.label).meta()
        if scene is None:
            return meta
        meta = segment.with_background(meta, extra, bank)
        if self.world == "camouflage":
            meta["object_offset"] = None  # the object wears frame 0's background under its box
        return {**meta, "task": self.task, **segment.scene_meta(scene, extra, bank, self.frames)}

    def _classify_meta(self, index: int, plan: ClipPlan, look: Appearance,
                       appearance_seed: int | None) -> dict[str, Any]:
        bank = texture_bank(self.size)
        family = look.object_texture if look.object_texture in bank.families else None
        return {
            "name": self.name(index), "world": self.world, "split": self.split, "index": index, "seed": self.seed,
            "frames": self.frames, "size": self.size, "label": plan.label, "class_name": self.classes[plan.label],
            "motion_class": plan.motion_class, "object_family": family,
            "direction_deg": plan.direction_deg, "speed": plan.speed, "velocity": list(plan.velocity),
            "shape": plan.shape, "box": list(plan.box), "start": [int(v) for v in plan.positions[0]],
            "positions": plan.positions.tolist(),
            "object_texture": look.object_texture, "object_texture_name": bank.names[look.object_texture],
            "object_offset": list(look.object_offset),
            "background_texture": look.background_texture,
            "background_texture_name": bank.names[look.background_texture],
            "background_offset": list(look.background_offset), "appearance_seed": appearance_seed,
        }

    def _cue(self, index: int, label: int) -> Cue:
        return draw_cue(self.seed, self.split, index, label, float(self.shortcut), self.size)

    def _with_cue(self, clip: SynthClip, index: int) -> SynthClip:
        """``clip`` with its cue painted (``shortcut``; unchanged without it)."""
        if self.shortcut is not None:
            paint_cue(clip.frames, self._cue(index, clip.label), clip.masks, clip.distractor_masks)
        return clip

    def _estimator(self) -> Callable[[np.ndarray], np.ndarray] | None:
        return None if self.flow_method == TRUTH else partial(estimate_flow, self.flow_method, self.flow_cache)

    def _render(self, index: int, appearance_seed: int | None) -> SynthClip | InstanceClip:
        if self.task == "instances":
            return self._render_instances(index, appearance_seed)
        return self._with_cue(self._render_clip(index, appearance_seed), index)

    def _render_clip(self, index: int, appearance_seed: int | None) -> SynthClip:
        plan, look, scene, extra = self._draw(index, appearance_seed)
        meta = self._meta(index, plan, look, appearance_seed, scene, extra)
        if scene is not None:
            return self._render_segment(plan, look, scene, extra, meta)
        images = texture_bank(self.size).images
        (height, width), (oy, ox), (by, bx) = plan.box, look.object_offset, look.background_offset
        background = images[look.background_texture, by:by + self.size, bx:bx + self.size]
        sprite = images[look.object_texture, oy:oy + height, ox:ox + width]
        frames, masks = render_clip(background, sprite, shape_mask(plan.shape, height, width), plan.positions,
                                    self.frames)
        return SynthClip(frames, masks, plan.label, meta, plan.positions, estimator=self._estimator())

    def _render_segment(self, plan: ClipPlan, look: Appearance, scene: Scene, extra: SegmentLook,
                        meta: dict[str, Any]) -> SynthClip:
        images = texture_bank(self.size).images
        sprite = None
        if self.world != "camouflage":
            (height, width), (oy, ox) = plan.box, look.object_offset
            sprite = images[look.object_texture, oy:oy + height, ox:ox + width]
        out = segment.render_scene(images, plan.shape, plan.box, plan.positions, sprite, extra, scene, self.frames,
                                   self.size)
        d = scene.distractor
        return SynthClip(out.frames, out.masks, plan.label, meta, plan.positions, camera=scene.camera,
                         distractor_masks=out.distractor_masks, distractor_positions=None if d is None else d.positions,
                         estimator=self._estimator())

    def _render_instances(self, index: int, appearance_seed: int | None) -> InstanceClip:
        """Instance clip ``index`` (``synth.instances``): its plan from the clip's generator, its textures from it too
        or, re-rendering, from ``appearance_seed``'s."""
        bank = texture_bank(self.size)
        rng = worlds.clip_rng(self.seed, self.split, index)
        plan = instances.plan_instances(rng, self.world, self.split, self.frames, self.size, bank.images.shape[1],
                                        self.speed, self.objects)
        if appearance_seed is not None:
            rng = worlds.rerender_rng(self.seed, self.split, index, int(appearance_seed))
        look = instances.draw_look(rng, bank, plan, own=appearance_seed is None)
        meta = {"name": self.name(index), "world": self.world, "split": self.split, "index": index, "seed": self.seed,
                "frames": self.frames, "size": self.size, "task": self.task, "appearance_seed": appearance_seed}
        if self.flow_method != TRUTH:
            meta["flow"] = self.flow_method
        return instances.instance_clip(bank.images, bank, plan, look, self.frames, self.size, meta, self._estimator(),
                                       self.classes)

    def __getitem__(self, index: int) -> SynthClip | InstanceClip:
        return self._render(self._index(index), None)

    def describe(self, index: int) -> dict[str, Any]:
        """Clip ``index``'s ``meta`` without rendering it (an instance clip is rendered: ``dropped`` needs masks)."""
        index = self._index(index)
        if self.task == "instances":
            return self._render_instances(index, None).meta
        plan, look, scene, extra = self._draw(index, None)
        return self._meta(index, plan, look, None, scene, extra)

    def rerender(self, index: int, appearance_seed: int) -> SynthClip | InstanceClip:
        """Clip ``index`` with the same label, motion, shape, box and trajectory (so the same masks and ground-truth
        flow) — for the segment task also the same camera and distractor motion, for the instance task every object's
        and the camera — but object, background (and distractor) textures drawn afresh from ``appearance_seed`` (any
        texture of the bank for the objects, whatever the world; camouflage keeps object texture = background
        texture)."""
        return self._render(self._index(index), int(appearance_seed))

    def render_parts(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Clip ``index`` taken apart (``stlens perturb``'s background-only and object-only; classify clips only):
        the clip rendered from the same plan and textures *without* its object, uint8 (T, H, W, 3) (the world's
        static background on every frame, with the shortcut cue where there is one), and the object's visible pixels
        in the clip, bool (T, H, W) (its ``masks``)."""
        if self.task != "classify":
            raise StlensError(f"render_parts: {self.spec} has task={self.task}; only classify clips are taken apart "
                              f"(a segment clip's masks are its targets)")
        index = self._index(index)
        clip = self._render(index, None)
        plan, look, _, _ = self._draw(index, None)
        (by, bx) = look.background_offset
        background = texture_bank(self.size).images[look.background_texture, by:by + self.size, bx:bx + self.size]
        frames = np.repeat(background[None], self.frames, axis=0)
        if self.shortcut is not None:
            paint_cue(frames, self._cue(index, plan.label))
        return frames, np.asarray(clip.masks, bool)

    def make_pairs(self, spec: InputSpec, pairs: int, *, stylizer: str | None = None, seed: int = 0,
                   flow: str | None = None, flow_cache=None) -> PairSource:
        """Pairs for ``stlens.measure`` (``stlens.make_pairs`` calls this): see ``SynthPairs``. ``stylizer`` None:
        ``rerender`` (the clip rendered with new textures); ``flow`` (any method): two-stream pairs with the clips'
        own ``flow()`` — the dataset's ``flow`` option decides it (ground truth for classify, estimated for segment),
        not this method, and ``flow_cache`` is unused (the dataset's ``flow_cache`` option is)."""
        from stlens.synth.pairs import RERENDER, SynthPairs

        return SynthPairs(self, spec, pairs, RERENDER if stylizer is None else stylizer, seed, flow=flow is not None)

    def speed_pairs(self, spec: InputSpec, pairs: int, seed: int = 0, code: int = 2) -> PairSource:
        """``speed`` pairs (``stlens.synth.speed.SpeedPairs``): two clips at one speed, all else different."""
        from stlens.synth.speed import SpeedPairs

        if self.task == "instances":
            raise StlensError(f"`factors`: speed pairs need a one-object world (task=classify or segment), "
                              f"{self.spec} has task=instances")
        return SpeedPairs(self, spec, pairs, seed, code)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray | list]:
        """Clips ``indices`` stacked: frames uint8 (B, T, H, W, 3) and labels int64 (B,) (``task=instances``: a
        list of B ``Instances``)."""
        indices = list(indices)
        x = np.empty((len(indices), self.frames, self.size, self.size, 3), np.uint8)
        y = np.empty(len(indices), np.int64)
        targets = []
        for k, i in enumerate(indices):
            clip = self[i]
            x[k] = clip.frames
            if self.task == "instances":
                targets.append(clip.instances)
            else:
                y[k] = clip.label
        return x, (targets if self.task == "instances" else y)


def open_synth(spec: str) -> SynthDataset:
    """``synth:<world>[?option=value&...]`` → a ``SynthDataset``. Worlds: see ``WORLDS``; options: ``n``,
    ``frames``, ``size``, ``seed``, ``split`` (train|test), ``speed`` (LO-HI px/frame), ``task``
    (classify|segment|instances), ``distractor`` (0|1), ``objects`` (A..B), ``flow`` (truth|dis|tvl1|farneback),
    ``flow_cache`` (a folder), ``shortcut`` (P in [0, 1])."""
    spec = str(spec)
    if not spec.startswith("synth:"):
        raise StlensError(f"not a synth spec: {spec} (expected synth:<world>?n=...)")
    world, _, query = spec.removeprefix("synth:").partition("?")
    if world not in WORLDS:
        raise StlensError(f"unknown synthetic world '{world}' in {spec}; choices: {', '.join(WORLDS)}")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key not in OPTIONS:
            raise StlensError(f"unknown synth option '{key}' in {spec}; valid options: {', '.join(OPTIONS)}")
        if not sep:
            raise StlensError(f"synth option {key} needs a value ({key}=...) in {spec}")
        if key in options or (key == "flow" and "flow_method" in options):
            raise StlensError(f"synth option {key} given twice in {spec}")
        if key in ("split", "task", "flow_cache"):
            options[key] = value
        elif key == "flow":
            options["flow_method"] = value
        elif key == "speed":
            options[key] = _parse_speed(value)
        elif key == "shortcut":
            options[key] = _parse_float(key, value)
        elif key == "objects":
            options[key] = _parse_objects(value)
        else:
            options[key] = _parse_int(key, value)
    return SynthDataset(world=world, spec=spec, **options)

