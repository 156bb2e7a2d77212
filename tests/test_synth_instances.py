"""The instance task of the synthetic worlds (``task=instances``): masks checked against independently placed shapes
and depth order, occlusion, tracks leaving the frame, the class rules of the motion and appearance worlds,
determinism, re-rendering and pairs, labelled clips and the options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import stlens
from stlens.core.instances import Instances
from stlens.core.pair import DYNAMIC, STATIC
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.synth import SynthPairs, open_synth, texture_bank
from stlens.synth.camera import Camera
from stlens.synth.instances import InstanceLook, InstancePlan, Track, instance_clip
from stlens.synth.render import shape_mask
from stlens.video.labelled import open_clips

BASE = "frames=8&size=64"
SPEC = InputSpec(frames=8, size=64)


def world(name: str = "motion", extra: str = "", n: int = 12) -> stlens.synth.SynthDataset:
    return open_synth(f"synth:{name}?n={n}&{BASE}&task=instances{extra}")


def placed(shape: str, box: list[int], positions, size: int) -> np.ndarray:
    """The whole shape at each frame's position, cut to the frame (T, size, size): built without the renderer."""
    out = np.zeros((len(positions), size, size), bool)
    pad = 200
    for t, (x0, y0) in enumerate(positions):
        canvas = np.zeros((size + 2 * pad, size + 2 * pad), bool)
        canvas[pad + y0:pad + y0 + box[0], pad + x0:pad + x0 + box[1]] = shape_mask(shape, *box)
        out[t] = canvas[pad:pad + size, pad:pad + size]
    return out


def expected_visible(meta: dict) -> np.ndarray:
    """Every planned object's visible pixels (N, T, H, W): its whole shape minus the shapes of the objects in front."""
    shapes = np.stack([placed(o["shape"], o["box"], o["positions"], meta["size"]) for o in meta["objects"]])
    front = np.zeros_like(shapes[0])
    visible = np.zeros_like(shapes)
    for k in range(len(shapes) - 1, -1, -1):  # front to back
        visible[k] = shapes[k] & ~front
        front |= shapes[k]
    return visible


def direction_bin(positions) -> int:
    """The motion class from the trajectory alone: the compass angle of the whole displacement, in 90° bins."""
    dx, dy = np.asarray(positions[-1]) - np.asarray(positions[0])
    return int(round(math.degrees(math.atan2(-dy, dx)) / 90.0)) % 4


# ---- masks --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["motion", "appearance"])
def test_masks_are_exactly_the_visible_pixels_in_depth_order(name):
    ds = world(name)
    bank = texture_bank(64)
    for i in range(len(ds)):
        clip = ds[i]
        meta = clip.meta
        visible = expected_visible(meta)
        assert meta["background_texture"] not in [o["texture"] for o in meta["objects"]]
        ids = [o["track_id"] for o in meta["objects"]]
        kept = [ids.index(t) for t in clip.instances.track_ids]
        np.testing.assert_array_equal(clip.instances.masks, visible[kept])
        assert meta["dropped"] == [t for t in ids if t not in clip.instances.track_ids]
        assert clip.instances.masks.sum(0).max() <= 1  # the masks of one frame are disjoint ...
        np.testing.assert_array_equal(clip.masks, visible.any(0))  # ... and partition the union of the shapes
        # every visible pixel shows its object's texture, every other pixel the camera's background
        background = clip.camera.render(bank.images[meta["background_texture"]], 64, 8)
        expected = background.copy()
        for o, masks in zip(meta["objects"], visible, strict=True):
            (oy, ox), (h, w) = o["offset"], o["box"]
            sprite = bank.images[o["texture"], oy:oy + h, ox:ox + w]
            for t, (x0, y0) in enumerate(o["positions"]):
                ys, xs = np.nonzero(masks[t])
                expected[t, ys, xs] = sprite[ys - y0, xs - x0]
        np.testing.assert_array_equal(clip.frames, expected)


def test_occlusion_where_two_objects_cross():
    ds = world(extra="&objects=2..3", n=40)
    crossings = 0
    for i in range(len(ds)):
        clip = ds[i]
        objects = clip.meta["objects"]
        shapes = [placed(o["shape"], o["box"], o["positions"], 64) for o in objects]
        for back in range(len(objects)):
            for front in range(back + 1, len(objects)):
                overlap = shapes[back] & shapes[front]
                if not overlap.any():
                    continue
                crossings += 1
                masks = dict(zip(clip.instances.track_ids.tolist(), clip.instances.masks, strict=True))
                assert not (masks[objects[back]["track_id"]] & overlap).any()  # hidden where they cross
                assert (overlap <= (shapes[back] & ~masks[objects[back]["track_id"]])).all()
                ahead = np.any([masks[o["track_id"]] for o in objects[front:] if o["track_id"] in masks], axis=0)
                assert (overlap <= ahead).all()  # the front object (or one ahead of it) is seen there
    assert crossings >= 3


def test_a_track_leaving_the_frame_has_absent_frames():
    ds = world(extra="&speed=4-5", n=20)
    leaving = 0
    for i in range(len(ds)):
        clip = ds[i]
        inside = {o["track_id"]: placed(o["shape"], o["box"], o["positions"], 64).reshape(8, -1).any(1)
                  for o in clip.meta["objects"]}
        for n, track in enumerate(clip.instances.track_ids):
            present = clip.instances.present[n]
            assert not (present & ~inside[int(track)]).any()  # never seen where its shape is outside the frame
            if not inside[int(track)].all():
                leaving += 1
                assert not present.all() and present.any()
                np.testing.assert_array_equal(clip.instances.masks[n][~inside[int(track)]], False)
    assert leaving >= 3


def test_a_track_never_visible_is_dropped():
    bank = texture_bank(32)
    positions = np.tile([[4, 4]], (6, 1))
    camera = Camera((32.0, 32.0), (0.0, 0.0), 1.0)
    plan = InstancePlan((Track(1, 2, 180.0, 0.0, (0.0, 0.0), "disc", (6, 6), None, positions + 3),
                         Track(2, 0, 0.0, 0.0, (0.0, 0.0), "square", (14, 14), None, positions)), camera)
    look = InstanceLook((5, 6), ((0, 0), (0, 0)), 30)
    clip = instance_clip(bank.images, bank, plan, look, 6, 32, {"size": 32}, None, ("a", "b", "c", "d"))
    assert clip.meta["dropped"] == [1] and clip.instances.track_ids.tolist() == [2]
    assert clip.instances.classes.tolist() == [0] and clip.instances.masks.shape == (1, 6, 32, 32)


# ---- classes ------------------------------------------------------------------------------------------------------


def test_motion_world_class_is_the_direction_bin_whatever_the_texture():
    ds = world(n=40)
    seen: dict[int, set[int]] = {}
    for i in range(len(ds)):
        clip = ds[i]
        by_id = {o["track_id"]: o for o in clip.meta["objects"]}
        for track, cls in zip(clip.instances.track_ids, clip.instances.classes, strict=True):
            o = by_id[int(track)]
            assert cls == o["class"] == direction_bin(o["positions"])
            seen.setdefault(int(cls), set()).add(o["texture"])
        again = ds.rerender(i, appearance_seed=3)  # same motion, other textures: same classes
        assert again.meta["textures"] != clip.meta["textures"]
        np.testing.assert_array_equal(again.instances.classes, clip.instances.classes)
    assert all(len(textures) >= 3 for textures in seen.values()) and len(seen) == 4


def test_appearance_world_class_is_the_texture_family_whatever_the_motion():
    ds = world("appearance", n=40)
    families = texture_bank(64).families
    bins: dict[int, set[int]] = {}
    for i in range(len(ds)):
        clip = ds[i]
        by_id = {o["track_id"]: o for o in clip.meta["objects"]}
        for track, cls in zip(clip.instances.track_ids, clip.instances.classes, strict=True):
            o = by_id[int(track)]
            assert o["texture"] == families[int(cls)]
            bins.setdefault(int(cls), set()).add(direction_bin(o["positions"]))
    assert ds.classes == ("red stripes", "orange grass", "yellow diagonal stripes", "green checkerboard")
    assert all(len(b) >= 3 for b in bins.values()) and len(bins) == 4  # one family, many motions


def test_confounded_world_ties_motion_and_family_on_train_only():
    families = texture_bank(64).families
    train, test = world("confounded", n=30), world("confounded", "&split=test", n=30)
    pairs = [(o["class"], o["texture"], direction_bin(o["positions"])) for i in range(30)
             for o in train[i].meta["objects"]]
    assert all(t == families[c] and b == c for c, t, b in pairs)
    pairs = [(o["class"], o["texture"]) for i in range(30) for o in test[i].meta["objects"]]
    assert sum(t != families[c] for c, t in pairs) >= len(pairs) // 2


# ---- determinism, re-rendering and pairs --------------------------------------------------------------------------


def test_deterministic_by_seed_and_index_in_any_order():
    a, b = world(n=6), world(n=6)
    for i in (5, 0, 3):
        x, y = a[i], b[i]
        np.testing.assert_array_equal(x.frames, y.frames)
        np.testing.assert_array_equal(x.instances.masks, y.instances.masks)
        np.testing.assert_array_equal(x.instances.classes, y.instances.classes)
        assert x.meta == y.meta == a.describe(i)
    other = open_synth(f"synth:motion?n=6&{BASE}&task=instances&seed=1")
    assert not np.array_equal(a[0].frames, other[0].frames)
    counts = {len(world(extra="&objects=2..3", n=30)[i].meta["objects"]) for i in range(30)}
    assert counts == {2, 3}


def test_rerender_keeps_tracks_and_camera_and_changes_every_texture():
    ds = world(extra="&objects=3..3", n=4)
    for i in range(4):
        clip, again = ds[i], ds.rerender(i, appearance_seed=11)
        for key in ("camera", "dropped"):
            assert again.meta[key] == clip.meta[key]
        for old, new in zip(clip.meta["objects"], again.meta["objects"], strict=True):
            assert {k: v for k, v in old.items() if k not in ("texture", "texture_name", "offset")} == \
                {k: v for k, v in new.items() if k not in ("texture", "texture_name", "offset")}
        np.testing.assert_array_equal(again.instances.masks, clip.instances.masks)
        np.testing.assert_array_equal(again.instances.track_ids, clip.instances.track_ids)
        np.testing.assert_array_equal(again.true_flow(), clip.true_flow())
        assert not np.array_equal(again.frames, clip.frames)


def test_pairs_rerender_all_objects_and_shuffle_frames():
    ds = world(n=4)
    pairs = SynthPairs(ds, SPEC, pairs=4, seed=2)
    first = pairs._rerendered(1, np.random.default_rng(0))
    second = pairs._rerendered(1, np.random.default_rng(1), avoid=first)
    assert not set(first.meta["textures"]) & set(second.meta["textures"])  # no object or background texture shared
    np.testing.assert_array_equal(first.instances.masks, second.instances.masks)
    for p in pairs:
        a, b = p.a.numpy(), p.b.numpy()
        if p.factor == DYNAMIC:
            assert not np.array_equal(a, b)
        else:
            assert p.factor == STATIC
            frames_a, frames_b = [{x.tobytes() for x in v.transpose(1, 0, 2, 3)} for v in (a, b)]
            assert frames_a == frames_b and not np.array_equal(a, b)
    two = SynthPairs(ds, SPEC, pairs=1, flow=True)
    assert two.flow_method == "dis"
    (rgb_a, flow_a), (rgb_b, flow_b) = two[0].a, two[0].b  # dynamic: two appearances, one flow
    assert flow_a.shape == (2, 7, 64, 64) and torch.equal(flow_a, flow_b) and not torch.equal(rgb_a, rgb_b)


def test_measure_on_an_instance_world():
    from conftest import TemporalMeanEncoder

    torch.manual_seed(0)
    pairs = stlens.make_pairs(stlens.open_data(f"synth:motion?n=16&{BASE}&task=instances"), SPEC, pairs=16)
    result = stlens.measure(TemporalMeanEncoder(channels=8), pairs, ["frame_conv"], bootstrap=0, progress=False)
    layer = result["frame_conv"]
    live = np.array([c != "dead" for c in layer.classes])
    assert live.sum() >= 4
    np.testing.assert_allclose(layer.r_static[live], 1.0, atol=1e-5)  # order-blind: shuffling changes nothing
    assert layer.score["static"] > layer.score["dynamic"]


def test_true_flow_is_each_objects_step_on_its_visible_pixels():
    clip = world(n=1)[0]
    flow = clip.true_flow()
    camera = clip.camera.flow(64, 8)
    union = clip.masks[:-1]
    np.testing.assert_array_equal(flow[~union], camera[~union])
    for masks, o in zip(clip.instances.masks, clip.meta["objects"], strict=True):
        steps = np.diff(np.asarray(o["positions"], np.float32), axis=0)
        for t in range(7):
            np.testing.assert_array_equal(flow[t][masks[t]], np.broadcast_to(steps[t], flow[t][masks[t]].shape))


# ---- labelled clips and options -----------------------------------------------------------------------------------


def test_labelled_clips_give_instance_targets():
    spec = f"synth:appearance?n=5&{BASE}&task=instances"
    clips = open_clips(spec, SPEC, task=None)
    assert clips.num_classes == 4 and len(clips) == 5
    x, targets = clips.batch(np.arange(3), np.random.default_rng(0))
    assert x.shape == (3, 3, 8, 64, 64) and isinstance(targets, list) and len(targets) == 3
    ds = open_synth(spec)
    for i, target in enumerate(targets):
        assert isinstance(target, Instances)
        np.testing.assert_array_equal(target.masks, ds[i].instances.masks)
        np.testing.assert_array_equal(target.classes, ds[i].instances.classes)
    assert open_clips(spec, SPEC, task="instances").batch([0], None)[1][0].track_ids.tolist() == \
        targets[0].track_ids.tolist()
    frames, listed = ds.batch([0, 1])
    assert frames.shape == (2, 8, 64, 64, 3) and len(listed) == 2
    with pytest.raises(StlensError, match="`task` instances needs an instance world: add task=instances"):
        open_clips(f"synth:motion?n=5&{BASE}", SPEC, task="instances")
    with pytest.raises(StlensError, match="`task` classify.*task=instances"):
        open_clips(spec, SPEC, task="classify")


def test_spec_meta_and_defaults():
    ds = world()
    assert ds.objects == (1, 3) and ds.num_classes == 4 and ds.labels == ()
    assert ds.canonical_spec == f"synth:motion?n=12&{BASE}&seed=0&split=train&speed=1-2&task=instances&objects=1..3"
    assert open_synth(ds.canonical_spec).describe(2) == ds.describe(2)
    assert open_synth(f"synth:motion?n=2&{BASE}&task=instances&objects=2").objects == (2, 2)
    assert open_synth(f"synth:motion?n=2&{BASE}").num_classes == 8  # other tasks unchanged
    assert ds.classes == ("east", "north", "west", "south")
    with pytest.raises(StlensError, match="speed pairs"):
        ds.speed_pairs(SPEC, 2)


@pytest.mark.parametrize("extra, message", [
    ("&task=instances&objects=3..1", "objects must be A..B with 1 ≤ A ≤ B ≤ 8, got 3..1"),
    ("&task=instances&objects=0", "objects must be A..B with 1 ≤ A ≤ B ≤ 8, got 0..0"),
    ("&task=instances&objects=9", "objects must be A..B"),
    ("&task=instances&objects=many", "objects must be A..B or N objects per clip"),
    ("&task=segment&objects=2", "objects needs task=instances"),
    ("&task=instances&shortcut=0.5", "shortcut needs task=classify or task=segment"),
    ("&task=instances&distractor=1", "distractor=1 needs task=segment"),
    ("&task=tracks", "task must be one of classify, segment, instances"),
])
def test_bad_instance_options(extra, message):
    with pytest.raises(StlensError, match=f"synth option {message}"):
        open_synth(f"synth:motion?n=2&{BASE}{extra}")


def test_camouflage_has_no_instance_task():
    with pytest.raises(StlensError, match="task=instances needs a world among motion, appearance, confounded"):
        open_synth(f"synth:camouflage?n=2&{BASE}&task=instances")
