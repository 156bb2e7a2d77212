"""Synthetic worlds (stlens.synth): determinism, ground truth (masks, flow, labels) checked against the pixels, the
re-rendering stylizer, pairs for measure (RGB and two-stream) and spec errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TemporalMeanEncoder

import stlens
from stlens.core.pair import DYNAMIC, STATIC
from stlens.core.source import ClipSource
from stlens.errors import StlensError
from stlens.models.registry import InputSpec
from stlens.synth import WORLDS, SynthDataset, SynthPairs, open_synth, texture_bank
from stlens.synth.worlds import DEFAULT_SPEED
from stlens.video.flow import encode_flow, flow_clip

SPEC = InputSpec(frames=16, size=64, resize=64)


def centroids(masks: np.ndarray) -> np.ndarray:
    """(T, 2) mask centroids as (x, y)."""
    out = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def compass(dx: float, dy: float) -> int:
    """Nearest of the 8 compass directions (0 east, 2 north = up the image) of an image-space displacement."""
    return int(np.round(np.degrees(np.arctan2(-dy, dx)) / 45.0)) % 8


# ---- determinism and shapes -------------------------------------------------------------------------------------


def test_clips_are_deterministic_in_any_order():
    spec = "synth:motion?n=12&seed=3"
    forward = [open_synth(spec)[i] for i in range(12)]
    ds = open_synth(spec)
    backward = {i: ds[i] for i in reversed(range(12))}
    for i, clip in enumerate(forward):
        np.testing.assert_array_equal(clip.frames, backward[i].frames)
        np.testing.assert_array_equal(clip.masks, backward[i].masks)
        assert clip.meta == backward[i].meta
    np.testing.assert_array_equal(ds[-1].frames, forward[11].frames)


def test_seeds_and_splits_give_different_clips():
    base = open_synth("synth:motion?n=4")[2].frames
    assert not np.array_equal(base, open_synth("synth:motion?n=4&seed=1")[2].frames)
    assert not np.array_equal(base, open_synth("synth:motion?n=4&split=test")[2].frames)
    assert open_synth("synth:motion").labels[:50] != open_synth("synth:motion?split=test").labels[:50]


@pytest.mark.parametrize("world", list(WORLDS))
def test_shapes_dtypes_and_json_meta(world):
    ds = open_synth(f"synth:{world}?n=3")
    clip = ds[1]
    assert clip.frames.shape == (16, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (16, 64, 64) and clip.masks.dtype == bool
    flow = clip.flow()
    assert flow.shape == (15, 64, 64, 2) and flow.dtype == np.float32
    meta = json.loads(json.dumps(clip.meta))
    assert meta["label"] == clip.label == ds.labels[1]
    assert meta["world"] == world and meta["name"] == ds.name(1) == f"synth:{world}/train/000001"
    assert ds.num_classes == 8 and len(ds.classes) == 8
    assert ds.missing == () and isinstance(ds, ClipSource)


def test_other_sizes_and_defaults():
    ds = open_synth("synth:appearance?frames=8&size=32&n=2")
    assert ds[0].frames.shape == (8, 32, 32, 3) and ds[0].flow().shape == (7, 32, 32, 2)
    big = open_synth("synth:motion?size=96&n=1")[0]
    assert big.frames.shape == (16, 96, 96, 3) and big.masks[0].sum() > 0
    assert len(open_synth("synth:motion")) == 2000 and len(open_synth("synth:motion?split=test")) == 400
    ds = open_synth("synth:motion?n=5&seed=2&split=test&speed=1-2")
    assert (ds.world, ds.split, ds.frames, ds.size, ds.seed, ds.speed) == ("motion", "test", 16, 64, 2, (1.0, 2.0))
    assert ds.spec == "synth:motion?n=5&seed=2&split=test&speed=1-2"
    assert SynthDataset("camouflage", n=7).spec.startswith("synth:camouflage?n=7&frames=16&size=64")
    x, y = ds.batch([0, 3])
    assert x.shape == (2, 16, 64, 64, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert y.tolist() == [ds.labels[0], ds.labels[3]]


def test_labels_do_not_render(monkeypatch):
    ds = open_synth("synth:confounded?n=40")
    expected = [ds[i].label for i in range(40)]

    def fail(*args, **kwargs):
        raise AssertionError("labels must not render")

    monkeypatch.setattr("stlens.synth.dataset.render_clip", fail)
    assert list(open_synth("synth:confounded?n=40").labels) == expected


# ---- ground truth against the pixels ----------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["motion", "appearance", "camouflage"])
def test_masks_move_by_the_metadata_velocity(world):
    ds = open_synth(f"synth:{world}?n=24&seed=5")
    for i in range(len(ds)):
        clip = ds[i]
        areas = clip.masks.sum(axis=(1, 2))
        assert areas.min() == areas.max() > 50  # whole object in frame on every frame
        c = centroids(clip.masks)
        per_frame = (c[-1] - c[0]) / (len(c) - 1)
        np.testing.assert_allclose(per_frame, clip.meta["velocity"], atol=0.5 / 15 + 1e-9)
        assert np.hypot(*per_frame) == pytest.approx(clip.meta["speed"], abs=0.05)
        assert DEFAULT_SPEED[0] - 0.05 <= np.hypot(*per_frame) <= DEFAULT_SPEED[1] + 0.05


@pytest.mark.parametrize("world", ["motion", "camouflage", "confounded"])
def test_motion_labels_match_direction_and_trajectory(world):
    ds = open_synth(f"synth:{world}?n=48&seed=1")
    for i in range(len(ds)):
        clip = ds[i]
        assert clip.meta["direction_deg"] == pytest.approx(45.0 * clip.label)
        c = centroids(clip.masks)
        assert compass(*(c[-1] - c[0])) == clip.label == clip.meta["motion_class"]
    assert set(ds.labels) == set(range(8))


def test_ground_truth_flow_is_centroid_displacement_and_warps_the_object():
    ds = open_synth("synth:motion?n=6&seed=4")
    for i in range(len(ds)):
        clip = ds[i]
        flow, c = clip.flow(), centroids(clip.masks)
        for t in range(len(flow)):
            on = flow[t][clip.masks[t]]
            np.testing.assert_allclose(on, np.broadcast_to(c[t + 1] - c[t], on.shape), atol=1e-6)
            assert not flow[t][~clip.masks[t]].any()
            ys, xs = np.nonzero(clip.masks[t])  # the object's pixels land where the flow sends them
            u, v = flow[t][ys, xs].T.astype(int)
            np.testing.assert_array_equal(clip.frames[t + 1][ys + v, xs + u], clip.frames[t][ys, xs])


def test_appearance_world_labels_are_object_families_and_directions_are_free():
    ds = open_synth("synth:appearance?n=400")
    bank = texture_bank(64)
    octants = {k: set() for k in range(8)}
    for i in range(len(ds)):
        meta = ds.describe(i)
        assert meta["object_texture"] == bank.families[meta["label"]] and meta["object_family"] == meta["label"]
        assert meta["motion_class"] is None
        octants[meta["label"]].add(int(meta["direction_deg"] // 45))
    assert all(len(seen) >= 5 for seen in octants.values())
    # from the pixels: the object's mean colour is nearest to its own family's mean colour
    hits = 0
    family_means = bank.means[list(bank.families)]
    for i in range(48):
        clip = ds[i]
        colour = clip.frames[clip.masks].astype(np.float32).mean(axis=0)
        hits += int(np.argmin(np.linalg.norm(family_means - colour, axis=1)) == clip.label)
    assert hits >= 44


def test_confounded_world_cues_agree_in_train_and_not_in_test():
    train = open_synth("synth:confounded?n=200")
    for i in range(len(train)):
        meta = train.describe(i)
        assert meta["motion_class"] == meta["object_family"] == meta["label"]
    test = open_synth("synth:confounded?n=400&split=test")
    metas = [test.describe(i) for i in range(len(test))]
    assert all(m["motion_class"] == m["label"] for m in metas)
    disagree = np.mean([m["object_family"] != m["label"] for m in metas])
    assert 0.8 < disagree < 0.95  # ≈ 7/8: appearance drawn independently of the label


def test_camouflage_object_is_invisible_in_frame_zero_but_moves():
    ds = open_synth("synth:camouflage?n=24&seed=2")
    for i in range(len(ds)):
        clip = ds[i]
        assert clip.meta["object_texture"] == clip.meta["background_texture"]
        assert texture_bank(64).kinds[clip.meta["object_texture"]] in ("natural", "dots", "fine-noise")
        # where the object was at frame 0 and has left by the last frame, the last frame shows the bare
        # background: frame 0 showed exactly the same pixels there, so the object had no edge at all
        uncovered = clip.masks[0] & ~clip.masks[-1]
        assert uncovered.sum() > 20
        np.testing.assert_array_equal(clip.frames[0][uncovered], clip.frames[-1][uncovered])
        assert np.linalg.norm(centroids(clip.masks)[-1] - centroids(clip.masks)[0]) > 15
    # the same check fails on a world where the object has its own texture
    motion = open_synth("synth:motion?n=8&seed=2")
    differs = [not np.array_equal(c.frames[0][m], c.frames[-1][m])
               for c in (motion[i] for i in range(8)) for m in [c.masks[0] & ~c.masks[-1]]]
    assert all(differs)


@pytest.mark.parametrize("world", list(WORLDS))
def test_rerender_keeps_motion_and_changes_appearance(world):
    ds = open_synth(f"synth:{world}?n=6")
    for i in range(len(ds)):
        clip, again = ds[i], ds.rerender(i, 11)
        np.testing.assert_array_equal(clip.masks, again.masks)
        np.testing.assert_array_equal(clip.flow(), again.flow())
        assert again.label == clip.label and again.meta["positions"] == clip.meta["positions"]
        assert not np.array_equal(clip.frames, again.frames)
        assert np.abs(clip.frames.astype(int) - again.frames).mean() > 10
        np.testing.assert_array_equal(again.frames, ds.rerender(i, 11).frames)
        assert not np.array_equal(again.frames, ds.rerender(i, 12).frames)
        if world == "camouflage":
            assert again.meta["object_texture"] == again.meta["background_texture"]


# ---- pairs and measure ------------------------------------------------------------------------------------------


def _tensors(pair):
    parts = []
    for x in (pair.a, pair.b):
        parts.extend(x if isinstance(x, tuple) else (x,))
    return parts


def test_make_pairs_on_synth_data():
    source = stlens.open_data("synth:motion?n=16")
    assert isinstance(source, SynthDataset)
    pairs = stlens.make_pairs(source, SPEC, pairs=8)
    assert isinstance(pairs, SynthPairs) and len(pairs) == 16 and pairs.skipped == []
    made = list(pairs)
    assert [p.factor for p in made] == [DYNAMIC, STATIC] * 8
    for p in made:
        assert p.a.shape == p.b.shape == (3, 16, 64, 64) and p.a.dtype == torch.float32
        assert p.source.startswith("synth:motion/train/")
        if p.factor == STATIC:  # same frames in another order
            assert not torch.equal(p.a, p.b)
            assert sorted(map(lambda f: f.sum().item(), p.a.unbind(1))) == pytest.approx(
                sorted(map(lambda f: f.sum().item(), p.b.unbind(1))))
        else:
            assert (p.a - p.b).abs().mean() > 0.1
    again = list(stlens.make_pairs(stlens.open_data("synth:motion?n=16"), SPEC, pairs=8))
    assert all(torch.equal(x, y) for p, q in zip(made, again, strict=True)
               for x, y in zip(_tensors(p), _tensors(q), strict=True))
    other = list(stlens.make_pairs(source, SPEC, pairs=8, seed=1))
    assert not torch.equal(made[0].a, other[0].a)


def test_synth_pairs_with_a_video_stylizer():
    ds = open_synth("synth:appearance?n=4")
    made = list(SynthPairs(ds, SPEC, pairs=3, stylizer="palette"))
    assert len(made) == 6 and [p.factor for p in made] == [0, 1] * 3
    assert not torch.equal(made[0].a, made[0].b)


def test_two_stream_synth_pairs():
    ds = open_synth("synth:motion?n=4")
    made = list(SynthPairs(ds, SPEC, pairs=4, flow=True))
    assert len(made) == 8
    for p in made:
        (rgb_a, flow_a), (rgb_b, flow_b) = p.a, p.b
        assert rgb_a.shape == rgb_b.shape == (3, 16, 64, 64) and flow_a.shape == flow_b.shape == (2, 15, 64, 64)
        index = int(p.source.rsplit("/", 1)[1])
        expected = torch.from_numpy(flow_clip(encode_flow(ds[index].flow())))
        assert torch.equal(flow_a, expected)
        if p.factor == DYNAMIC:
            assert torch.equal(flow_a, flow_b) and not torch.equal(rgb_a, rgb_b)
        else:
            assert torch.equal(rgb_a, rgb_b) and not torch.equal(flow_a, flow_b)


def test_pairs_refuse_a_mismatched_input_spec():
    with pytest.raises(StlensError, match="size=112"):
        SynthPairs(open_synth("synth:motion?n=4"), InputSpec(frames=16, size=112), pairs=2)
    with pytest.raises(StlensError, match="frames=8"):
        stlens.make_pairs(open_synth("synth:motion?n=4"), InputSpec(frames=8, size=64), pairs=2)


def test_measure_temporal_mean_encoder_on_synth_pairs_is_static():
    torch.manual_seed(0)
    pairs = stlens.make_pairs(stlens.open_data("synth:motion?n=24"), SPEC, pairs=24)
    result = stlens.measure(TemporalMeanEncoder(channels=12), pairs, ["frame_conv"], bootstrap=0, progress=False)
    layer = result["frame_conv"]
    live = np.array([c != "dead" for c in layer.classes])
    assert live.sum() >= 6
    np.testing.assert_allclose(layer.r_static[live], 1.0, atol=1e-5)  # order-blind: shuffling changes nothing
    assert layer.score["static"] > layer.score["dynamic"]


# ---- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ("synth:nope", "choices: motion, appearance, confounded, camouflage"),
    ("synth:", "unknown synthetic world"),
    ("synth:motion?n=abc", "n must be an integer, got 'abc'"),
    ("synth:motion?colour=red", "unknown synth option 'colour'.*n, frames, size, seed, split, speed"),
    ("synth:motion?split=val", "split must be one of train, test"),
    ("synth:motion?speed=fast", "speed must be LO-HI"),
    ("synth:motion?speed=3-1", "speed must be 0 ≤ lo ≤ hi"),
    ("synth:motion?n=0", "n must be ≥ 1"),
    ("synth:motion?size=8", "size must be ≥ 16"),
    ("synth:motion?n=3&n=4", "given twice"),
    ("synth:motion?n", "needs a value"),
])
def test_bad_specs(spec, message):
    with pytest.raises(StlensError, match=message):
        stlens.open_data(spec)
    with pytest.raises(IndexError):
        open_synth("synth:motion?n=3")[3]
