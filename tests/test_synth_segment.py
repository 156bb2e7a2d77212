"""The segment task of the synthetic worlds (``task=segment``): classify clips unchanged, masks checked against the
pixels, the moving camera, the distractor, estimated flow (and its cache), re-rendering, options and determinism."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from stlens.core.pair import DYNAMIC
from stlens.errors import StlensError
from stlens.models.registry import InputSpec
from stlens.synth import SynthDataset, SynthPairs, open_synth, texture_bank
from stlens.synth.render import shape_mask
from stlens.video.flow import compute_flow, encode_flow, flow_clip

TINY = "frames=6&size=32"


def segment(world: str = "motion", extra: str = "", n: int = 8) -> SynthDataset:
    return open_synth(f"synth:{world}?n={n}&{TINY}&task=segment{extra}")


def centroids(masks: np.ndarray) -> np.ndarray:
    """(T, 2) mask centroids as (x, y)."""
    return np.array([(xs.mean(), ys.mean()) for ys, xs in (np.nonzero(m) for m in masks)])


def bare_background(clip) -> np.ndarray:
    """The clip's background alone, seen through its camera (T, H, W, 3)."""
    texture = texture_bank(clip.meta["size"]).images[clip.meta["background_texture"]]
    return clip.camera.render(texture, clip.meta["size"], clip.meta["frames"])


def placed(shape: str, box: list[int], positions: np.ndarray, size: int) -> np.ndarray:
    """The shape's pixels at each frame's position, cut to the frame (T, size, size) bool: built independently of
    the renderer's fancy indexing."""
    out = np.zeros((len(positions), size, size), bool)
    for t, (x0, y0) in enumerate(positions):
        canvas = np.zeros((size + 2 * 200, size + 2 * 200), bool)
        canvas[200 + y0:200 + y0 + box[0], 200 + x0:200 + x0 + box[1]] = shape_mask(shape, *box)
        out[t] = canvas[200:200 + size, 200:200 + size]
    return out


# ---- the classify task is unchanged -----------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["motion", "camouflage"])
def test_classify_is_the_default_and_bit_identical(world):
    default = open_synth(f"synth:{world}?n=5&{TINY}")
    explicit = open_synth(f"synth:{world}?n=5&{TINY}&task=classify&distractor=0&flow=truth")
    assert default.canonical_spec == explicit.canonical_spec == \
        f"synth:{world}?n=5&frames=6&size=32&seed=0&split=train&speed=0.5-1"
    seg = segment(world, n=5)
    for i in range(5):
        a, b = default[i], explicit[i]
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.flow(), b.flow())
        np.testing.assert_array_equal(a.flow(), a.true_flow())
        assert a.meta == b.meta and a.camera is None and a.estimator is None
        assert not {"task", "camera", "distractor", "flow"} & set(a.meta)
        # the segment clip of the same index keeps the classify clip's plan and object
        s = seg[i]
        np.testing.assert_array_equal(s.positions, a.positions)
        assert (s.label, s.meta["shape"], s.meta["object_texture"]) == (a.label, a.meta["shape"],
                                                                           a.meta["object_texture"])
    assert seg.labels == default.labels
    np.testing.assert_array_equal(SynthDataset("motion", n=2)[1].frames, open_synth("synth:motion?n=2")[1].frames)


def test_classify_with_an_estimated_flow():
    ds = open_synth(f"synth:motion?n=2&{TINY}&flow=farneback")
    clip = ds[0]
    np.testing.assert_array_equal(clip.frames, open_synth(f"synth:motion?n=2&{TINY}")[0].frames)
    np.testing.assert_array_equal(clip.flow(), compute_flow(clip.frames, "farneback"))
    assert ds.canonical_spec.endswith("&flow=farneback") and clip.meta["flow"] == "farneback"


# ---- masks against the pixels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["motion", "appearance", "confounded"])
def test_masks_are_where_the_object_is_drawn(world):
    ds = segment(world)
    for i in range(len(ds)):
        clip = ds[i]
        drawn = (clip.frames != bare_background(clip)).any(axis=-1)
        assert not (drawn & ~clip.masks).any()  # nothing but the object differs from the bare background
        assert drawn[clip.masks].mean() > 0.5  # and the object mostly does (its texture is not the background's)
        np.testing.assert_array_equal(clip.masks, placed(clip.meta["shape"], clip.meta["box"], clip.positions, 32))


def test_masks_of_an_object_leaving_the_frame_cover_its_visible_part_only():
    ds = open_synth(f"synth:motion?n=6&{TINY}&task=segment&speed=7-8")
    for i in range(len(ds)):
        clip = ds[i]
        full = shape_mask(clip.meta["shape"], *clip.meta["box"]).sum()
        areas = clip.masks.sum(axis=(1, 2))
        assert areas.min() < full and areas.max() <= full
        np.testing.assert_array_equal(clip.masks, placed(clip.meta["shape"], clip.meta["box"], clip.positions, 32))
        drawn = (clip.frames != bare_background(clip)).any(axis=-1)
        assert not (drawn & ~clip.masks).any()


@pytest.mark.parametrize("world", ["motion", "camouflage"])
def test_mask_centroid_moves_by_the_plan_velocity(world):
    ds = segment(world, n=12)
    for i in range(len(ds)):
        clip = ds[i]
        areas = clip.masks.sum(axis=(1, 2))
        assert areas.min() == areas.max() > 20  # whole object in frame: not carried by the camera
        c = centroids(clip.masks)
        np.testing.assert_allclose((c[-1] - c[0]) / 5, clip.meta["velocity"], atol=0.5 / 5 + 1e-9)


def test_rerender_keeps_plan_camera_and_distractor_and_changes_textures():
    for world in ("motion", "camouflage"):
        ds = segment(world, "&distractor=1", n=4)
        for i in range(len(ds)):
            clip, again = ds.rerender(i, 3), ds.rerender(i, 4)
            np.testing.assert_array_equal(clip.masks, again.masks)
            np.testing.assert_array_equal(clip.distractor_masks, again.distractor_masks)
            np.testing.assert_array_equal(clip.true_flow(), again.true_flow())
            assert clip.camera == again.camera == ds[i].camera
            assert clip.meta["distractor"]["positions"] == again.meta["distractor"]["positions"]
            assert np.abs(clip.frames.astype(int) - again.frames).mean() > 10
            np.testing.assert_array_equal(clip.frames, ds.rerender(i, 3).frames)
            if world == "camouflage":
                assert clip.meta["object_texture"] == clip.meta["background_texture"]
                assert clip.meta["distractor"]["texture"] == clip.meta["background_texture"]


# ---- the camera ---------------------------------------------------------------------------------------------------


def test_the_background_moves_with_segment_and_not_with_classify():
    for task, moving in (("classify", False), ("segment", True)):
        ds = open_synth(f"synth:motion?n=6&{TINY}&task={task}")
        for i in range(len(ds)):
            clip = ds[i]
            outside = ~(clip.masks[:-1] | clip.masks[1:])
            changed = (clip.frames[:-1] != clip.frames[1:]).any(axis=-1)[outside].mean()
            assert changed > 0.3 if moving else changed == 0
            if moving:
                camera = clip.meta["camera"]
                assert np.hypot(*camera["pan"]) >= 0.5 * 32 / 64 - 1e-9 and 0.98 <= camera["zoom"] <= 1.02


def test_true_background_flow_follows_the_camera():
    ds = segment("motion", n=6)
    ys, xs = np.mgrid[0:32, 0:32]
    for i in range(len(ds)):  # the texture point under each pixel of frame t lies under pixel + flow on frame t + 1
        clip = ds[i]
        flow, outside = clip.true_flow(), ~clip.masks
        for t in range(5):
            before, after = clip.camera.matrix(t, 32), clip.camera.matrix(t + 1, 32)
            u, v = flow[t][..., 0], flow[t][..., 1]
            on_t = np.stack([before[0, 0] * xs + before[0, 2], before[1, 1] * ys + before[1, 2]])
            on_next = np.stack([after[0, 0] * (xs + u) + after[0, 2], after[1, 1] * (ys + v) + after[1, 2]])
            np.testing.assert_allclose(on_next[:, outside[t]], on_t[:, outside[t]], atol=1e-4)
    # and in pixels (64 px: finer textures alias at 32 px): the next bare background warped back by the flow matches
    # frame t far better than unwarped or warped by the reversed flow
    ds = open_synth("synth:motion?n=6&frames=4&size=64&task=segment")
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    errors = np.zeros(3)
    for i in range(len(ds)):
        clip = ds[i]
        flow, bare = clip.true_flow(), bare_background(clip).astype(np.float32)
        for t in range(3):
            for k, sign in enumerate((1, 0, -1)):
                warped = cv2.remap(bare[t + 1], xs + sign * flow[t][..., 0], ys + sign * flow[t][..., 1],
                                   cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                errors[k] += np.abs(warped[4:60, 4:60] - bare[t][4:60, 4:60]).mean()
    assert errors[0] < 0.6 * errors[1] and errors[0] < 0.5 * errors[2]


def test_camouflage_object_is_invisible_on_frame_zero_but_masked_and_moving():
    ds = segment("camouflage", n=12)
    motion = segment("motion", n=12)
    for i in range(len(ds)):
        clip, bare = ds[i], bare_background(ds[i])
        assert clip.masks[0].sum() > 20
        np.testing.assert_array_equal(clip.frames[0], bare[0])  # exactly the background on frame 0
        assert (clip.frames[-1] != bare[-1]).any(axis=-1)[clip.masks[-1]].mean() > 0.3  # seen once it moved
        # texture statistics: on frame 0 the object's region looks like the background around it (its mean colour
        # is within half a standard deviation of the ring's); in the motion world (the DAVIS analogue) it is drawn
        ring = cv2.dilate(clip.masks[0].astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~clip.masks[0]
        inside, around = clip.frames[0][clip.masks[0]].astype(float), clip.frames[0][ring].astype(float)
        assert np.abs(inside.mean(0) - around.mean(0)).max() < 0.5 * around.std(0).max() + 8
        other = motion[i]
        assert (other.frames[0] != bare_background(other)[0]).any(axis=-1)[other.masks[0]].mean() > 0.5


# ---- the distractor ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["motion", "camouflage"])
def test_the_distractor_moves_and_is_not_in_the_mask(world):
    ds = segment(world, "&distractor=1")
    assert ds.canonical_spec.endswith("&task=segment&distractor=1")
    for i in range(len(ds)):
        clip = ds[i]
        d, meta = clip.distractor_masks, clip.meta["distractor"]
        assert d.any(axis=(1, 2)).all() and not (d & clip.masks).any()
        assert meta["box"][0] * meta["box"][1] < clip.meta["box"][0] * clip.meta["box"][1]  # smaller
        drawn = (clip.frames != bare_background(clip)).any(axis=-1)
        assert not (drawn & ~(clip.masks | d)).any()
        if world == "motion":
            assert drawn[d].mean() > 0.5
        positions = np.array(meta["positions"])
        np.testing.assert_array_equal(positions, clip.distractor_positions)
        np.testing.assert_allclose((positions[-1] - positions[0]) / 5, meta["velocity"], atol=0.5 / 5 + 1e-9)
        if np.hypot(*meta["velocity"]) > 0.3:
            assert not np.array_equal(d[0], d[-1])
        flow = clip.true_flow()  # the distractor's own motion on its pixels
        t, y, x = np.nonzero(d[:-1])
        np.testing.assert_allclose(flow[t, y, x], np.diff(positions, axis=0)[t])


# ---- estimated flow -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["motion", "camouflage"])
def test_estimated_flow_sees_the_camera_and_the_relative_motion(world):
    ds = segment(world, n=12)
    angles, ratios, camera = [], [], []
    for i in range(len(ds)):
        clip = ds[i]
        flow, truth = clip.flow(), clip.true_flow()
        assert flow.shape == truth.shape == (5, 32, 32, 2) and flow.dtype == np.float32
        assert not np.array_equal(flow, truth)
        relative, true_relative, background, true_background = [], [], [], []
        for t in range(5):
            around = ~cv2.dilate(clip.masks[t].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            background.append(flow[t][around].mean(0))
            true_background.append(truth[t][around].mean(0))
            relative.append(flow[t][clip.masks[t]].mean(0) - background[-1])
            true_relative.append(truth[t][clip.masks[t]].mean(0) - true_background[-1])
        e, g, b, c = (np.mean(x, 0) for x in (relative, true_relative, background, true_background))
        angles.append(np.degrees(np.arccos(np.clip(e @ g / np.linalg.norm(e) / np.linalg.norm(g), -1, 1))))
        ratios.append(e @ g / (g @ g))
        camera.append(b @ c / (c @ c))
    # DIS sees the camera's motion of the background (≈ 95% of it) and the direction of the object's motion relative
    # to the background, whose size it underestimates (≈ 50-70% of it at 32 px)
    assert min(camera) > 0.2 and np.median(camera) > 0.7
    assert np.median(angles) < 15 and np.percentile(angles, 75) < 30
    assert 0.3 < np.median(ratios) < 1.3


def test_flow_option_and_cache(tmp_path):
    ds = open_synth(f"synth:motion?n=3&{TINY}&task=segment&flow=farneback&flow_cache={tmp_path}")
    assert ds.canonical_spec.endswith("&task=segment&flow=farneback")  # the cache is where, not what
    assert "flow_cache" in ds.spec
    clip = ds[1]
    first = clip.flow()
    assert len(list(tmp_path.rglob("*.npz"))) == 1
    np.testing.assert_array_equal(first, ds[1].flow())
    np.testing.assert_allclose(first, compute_flow(clip.frames, "farneback"), atol=0.02)
    assert ds.rerender(1, 5).flow().shape == first.shape and len(list(tmp_path.rglob("*.npz"))) == 2
    np.testing.assert_array_equal(segment(n=2)[1].flow(), compute_flow(segment(n=2)[1].frames, "dis"))


def test_two_stream_pairs_use_the_estimated_flow():
    ds = segment("camouflage", "&distractor=1", n=3)
    spec = InputSpec(frames=6, size=32, resize=32)
    made = list(SynthPairs(ds, spec, pairs=3, flow=True))
    for p in made:
        (rgb_a, flow_a), (rgb_b, flow_b) = p.a, p.b
        assert rgb_a.shape == (3, 6, 32, 32) and flow_a.shape == (2, 5, 32, 32)
        clip = ds[int(p.source.rsplit("/", 1)[1])]
        assert not torch.equal(flow_a, torch.from_numpy(flow_clip(encode_flow(clip.true_flow()))))
        if p.factor == DYNAMIC:
            assert torch.equal(flow_a, flow_b) and not torch.equal(rgb_a, rgb_b)
    assert len(list(SynthPairs(ds, spec, pairs=2))) == 4
    # results record the flow the pairs carry: the segment world's estimate, the ground truth of classify, none
    assert SynthPairs(ds, spec, pairs=1, flow=True).flow_method == "dis"
    assert SynthPairs(segment("camouflage", "&flow=farneback", n=3), spec, 1, flow=True).flow_method == "farneback"
    classify = open_synth("synth:motion?frames=6&size=32&n=3")
    assert SynthPairs(classify, spec, pairs=1, flow=True).flow_method == "truth"
    assert SynthPairs(ds, spec, pairs=1).flow_method is None


# ---- metadata, options, determinism ---------------------------------------------------------------------------


def test_segment_meta_and_labels():
    ds = segment("motion", "&distractor=1")
    clip = ds[2]
    meta = json.loads(json.dumps(clip.meta))
    assert meta["task"] == "segment" and meta["flow"] == "dis" and meta["background_offset"] is None
    assert set(meta["camera"]) == {"centre", "pan", "zoom", "scale_last", "velocity"}
    assert set(meta["distractor"]) >= {"shape", "box", "velocity", "positions", "texture", "texture_name"}
    assert texture_bank(32).kinds[meta["background_texture"]] not in ("solid", "gradient")
    assert clip.label == meta["label"] == ds.labels[2] and ds.num_classes == 8
    assert ds.describe(2) == clip.meta


@pytest.mark.parametrize("option, message", [
    ("task=detect", "task must be one of classify, segment, instances, got 'detect'"),
    ("task=segment&distractor=2", "distractor must be 0 or 1, got 2"),
    ("task=segment&distractor=yes", "distractor must be an integer"),
    ("distractor=1", "distractor=1 needs task=segment"),
    ("task=segment&flow=magic", "flow must be one of truth, tvl1, dis, farneback, got 'magic'"),
    ("flow_cache=/tmp/x", "flow_cache needs an estimated flow"),
    ("task=segment&flow=dis&flow=tvl1", "flow given twice"),
])
def test_bad_segment_options(option, message):
    with pytest.raises(StlensError, match=message):
        open_synth(f"synth:motion?{option}")


def test_segment_clips_are_deterministic_in_any_order():
    spec = f"synth:camouflage?n=6&{TINY}&task=segment&distractor=1&seed=4"
    forward = [open_synth(spec)[i] for i in range(6)]
    ds = open_synth(spec)
    backward = {i: ds[i] for i in reversed(range(6))}
    for i, clip in enumerate(forward):
        np.testing.assert_array_equal(clip.frames, backward[i].frames)
        np.testing.assert_array_equal(clip.masks, backward[i].masks)
        np.testing.assert_array_equal(clip.flow(), backward[i].flow())
        assert clip.meta == backward[i].meta
    again = open_synth(open_synth(spec).canonical_spec)
    np.testing.assert_array_equal(again[3].frames, forward[3].frames)
    assert not np.array_equal(open_synth(spec.replace("seed=4", "seed=5"))[3].frames, forward[3].frames)
