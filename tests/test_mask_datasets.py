"""Real mask data sets (video object segmentation): DAVIS-2016 and MoCA layouts, clips with aligned masks, and the
clear errors. Small folders are drawn here: a bright square moving over noise, at a place unique to each frame."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import stlens
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.flow import FLOW_BOUND
from stlens.video.maskclips import MaskClips, sample_window, valid_frames
from stlens.video.masks import MaskSource
from stlens.video.sampling import sample_clip
from stlens.video.source import video_source
from stlens.video.sources import open_data

HEIGHT, WIDTH, SIDE = 48, 64, 10
SPEC = InputSpec(frames=4, stride=1, size=32, resize=36)
LENGTHS = {"bear": 8, "car": 6, "dog": 10}


def corner(t: int) -> tuple[int, int]:
    """(top, left) of the square in frame t: unique per frame."""
    return 4 + 3 * t, 3 + 5 * t


def square(t: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    top, left = corner(t)
    mask[top:top + SIDE, left:left + SIDE] = True
    return mask


def write_sequence(frames: Path, masks: Path | None, n: int, seed: int = 0, palette: bool = False,
                   annotated: range | None = None) -> None:
    """n JPEG frames (noise with a white square) and, in ``masks``, 0/255 PNG masks (palette PNGs if asked) for the
    frames of ``annotated`` (default: all)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    frames.mkdir(parents=True)
    if masks is not None:
        masks.mkdir(parents=True)
    for t in range(n):
        image = rng.integers(0, 100, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[square(t)] = 255
        Image.fromarray(image).save(frames / f"{t:05d}.jpg", quality=95)
        if masks is None or t not in (annotated or range(n)):
            continue
        mask = Image.fromarray(square(t).astype(np.uint8) * (1 if palette else 255))
        if palette:
            mask = mask.convert("P")
            mask.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        mask.save(masks / f"{t:05d}.png")


def davis_root(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS"
    for i, (name, n) in enumerate(LENGTHS.items()):
        write_sequence(root / "JPEGImages/480p" / name, root / "Annotations/480p" / name, n, seed=i,
                       palette=name == "car")
    sets = root / "ImageSets/480p"
    sets.mkdir(parents=True)
    lines = [f"/JPEGImages/480p/{s}/{t:05d}.jpg /Annotations/480p/{s}/{t:05d}.png"
             for s in ("car", "bear") for t in range(LENGTHS[s])]
    (sets / "val.txt").write_text("\n".join(lines) + "\n")
    (sets / "train.txt").write_text("/JPEGImages/480p/dog/00000.jpg /Annotations/480p/dog/00000.png\n")
    (root / "ImageSets/2017").mkdir()
    (root / "ImageSets/2017/extra.txt").write_text("dog\nbear\n")
    return root


@pytest.fixture
def davis(tmp_path) -> Path:
    return davis_root(tmp_path)


def expected_window(mask: np.ndarray, window: tuple[np.ndarray, int, int]) -> np.ndarray:
    """A native mask resized as the frames are (short side 36, nearest) and cut at the window's crop."""
    from PIL import Image

    from stlens.video.io import scaled_size

    _, top, left = window
    resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
        scaled_size(WIDTH, HEIGHT, SPEC.resize), Image.NEAREST)) > 127
    return resized[top:top + SPEC.size, left:left + SPEC.size]


# ------------------------------------------------------------------------------------------------------------ DAVIS


def test_davis_lists_the_split_and_reads_frames_and_masks_aligned(davis):
    source = open_data(f"davis:{davis}?split=val")
    assert isinstance(source, MaskSource) and source.layout == "davis"
    assert [p.name for p in source.videos] == ["car", "bear"]  # the list's order
    for index, name in enumerate(["car", "bear"]):  # car: palette PNGs (index 1 = object)
        frames, masks, valid = source.read(index)
        assert frames.shape == (LENGTHS[name], HEIGHT, WIDTH, 3) and valid.all()
        for t in range(LENGTHS[name]):
            assert np.array_equal(masks[t], square(t))
            assert frames[t][square(t)].mean() > 200 > frames[t][~square(t)].mean()
    assert [p.name for p in open_data(f"davis:{davis}?split=train").videos] == ["dog"]
    assert [p.name for p in open_data(f"davis:{davis}?split=extra").videos] == ["dog", "bear"]  # plain names
    assert [p.name for p in open_data(f"davis:{davis}").videos] == ["bear", "car", "dog"]  # no split: all


def test_davis_source_is_a_video_source_that_makes_pairs(davis):
    source = open_data(f"davis:{davis}?split=val")
    assert video_source(source, "making pairs") is source and len(source) == 2
    pairs = list(stlens.make_pairs(source, SPEC, 2, seed=0))
    assert len(pairs) == 4 and pairs[0].a.shape == (3, SPEC.frames, SPEC.size, SPEC.size)


def test_sample_window_draws_what_sample_clip_draws(davis):
    frames, _, _ = open_data(f"davis:{davis}").read(2, short_side=SPEC.resize)
    for random_crop in (False, True):
        idx, clip = sample_clip(frames, SPEC, np.random.default_rng(3), random_crop=random_crop)
        widx, top, left = sample_window(frames.shape[:3], SPEC, np.random.default_rng(3), random_crop=random_crop)
        assert np.array_equal(idx, widx)
        assert np.array_equal(clip, frames[widx, top:top + SPEC.size, left:left + SPEC.size])


@pytest.mark.parametrize("augment", [False, True])
def test_a_clip_batch_has_masks_cut_as_its_frames(davis, augment):
    source = open_data(f"davis:{davis}")
    clips = MaskClips(source, SPEC, augment=augment)
    assert len(clips) == 3 and clips.num_classes == 1 and clips.task == "segment"
    assert len(pickle.loads(pickle.dumps(clips))) == 3  # travels to DataLoader workers
    inputs, targets = clips.batch(np.array([0, 2, 1]), np.random.default_rng(5))
    assert inputs.shape == (3, 3, 4, 32, 32) and inputs.dtype == torch.float32
    assert targets.shape == (3, 4, 32, 32) and targets.dtype == torch.float32
    assert set(targets.unique().tolist()) == {0.0, 1.0} and valid_frames(targets).all()
    rng = np.random.default_rng(5)  # the same draws, clip by clip
    for b, video in enumerate([0, 2, 1]):
        window = sample_window(source.read(video, SPEC.resize)[0].shape[:3], SPEC, rng, random_crop=augment)
        assert np.array_equal(window[0], window[0][0] + np.arange(4))  # stride 1
        for k, t in enumerate(window[0]):
            assert np.array_equal(targets[b, k].numpy() > 0.5, expected_window(square(int(t)), window))
            bright = inputs[b, :, k].mean(dim=0) > 1.0  # the white square, normalized
            union = (bright | (targets[b, k] > 0.5)).sum()
            assert union == 0 or (bright & (targets[b, k] > 0.5)).sum() / union > 0.6  # square where its mask is


def test_two_stream_batches_carry_flow(davis):
    clips = MaskClips(open_data(f"davis:{davis}?flow=farneback"), SPEC, flow=True)
    assert clips.flow_method == "farneback"
    (rgb, flow), targets = clips.batch(np.array([0, 1]), np.random.default_rng(0))
    assert rgb.shape == (2, 3, 4, 32, 32) and flow.shape == (2, 2, 3, 32, 32) and targets.shape == (2, 4, 32, 32)
    assert flow.dtype == torch.float32 and flow.abs().max() <= 1.0 and torch.isfinite(flow).all()
    on_square = targets[:, :-1] > 0.5  # flow k moves frame k onto k + 1: the square's motion, 5 and 3 px × 36/48
    motion = [float(flow[:, c][on_square].mean()) * FLOW_BOUND for c in (0, 1)]
    assert motion == pytest.approx([3.75, 2.25], abs=0.75)
    assert MaskClips(open_data(f"davis:{davis}"), SPEC, flow=True).flow_method == "dis"


def test_two_stream_flow_is_cached_under_the_pairs_keys(davis, tmp_path):
    clips = MaskClips(open_data(f"davis:{davis}"), SPEC, flow=True, flow_cache=tmp_path / "flow")
    (_, first), _ = clips.batch(np.array([0]), np.random.default_rng(1))
    (_, again), _ = clips.batch(np.array([0]), np.random.default_rng(1))
    assert clips.flow_cache.misses == 1 and clips.flow_cache.hits == 1 and torch.equal(first, again)


# ------------------------------------------------------------------------------------------------------------- MoCA


def test_moca_masks_mark_frames_without_one_unannotated(tmp_path):
    root = tmp_path / "MoCA"
    write_sequence(root / "JPEGImages/fox", root / "Annotations/fox", 8, annotated=range(0, 8, 2))
    source = open_data(f"moca:{root}")
    assert source.layout == "moca"
    frames, masks, valid = source.read(0)
    assert valid.tolist() == [True, False] * 4
    assert all(np.array_equal(masks[t], square(t)) for t in range(0, 8, 2)) and not masks[1::2].any()
    _, targets = MaskClips(source, SPEC).batch(np.array([0, 0]), np.random.default_rng(0))
    flags = valid_frames(targets)
    assert flags.any() and not flags.all()
    assert torch.isnan(targets[~flags]).all() and not torch.isnan(targets[flags]).any()


def test_moca_boxes_csv_fills_rectangles(tmp_path):
    root = tmp_path / "MoCA"
    write_sequence(root / "JPEGImages/crab", None, 6)
    write_sequence(root / "JPEGImages/fish", None, 6, seed=1)
    rows = [f"crab,{t:05d},{corner(t)[1]},{corner(t)[0]},{SIDE},{SIDE}" for t in (0, 3)]
    rows.append(f"fish,{4},{corner(4)[1]},{corner(4)[0]},{SIDE},{SIDE}")  # frame by number
    (root / "boxes.csv").write_text("sequence,frame,x,y,w,h\n" + "\n".join(rows) + "\n")
    source = open_data(f"moca:{root}?boxes=boxes.csv")
    assert source.layout == "moca-boxes"
    _, masks, valid = source.read(0)
    assert valid.tolist() == [True, False, False, True, False, False]
    assert np.array_equal(masks[0], square(0)) and np.array_equal(masks[3], square(3))
    _, masks, valid = source.read(1)
    assert valid.tolist() == [False] * 4 + [True, False] and np.array_equal(masks[4], square(4))


@pytest.mark.parametrize("header_row", [False, True])
def test_moca_annotations_csv_of_the_real_data_set(tmp_path, header_row):
    """MoCA's own annotations.csv (VGG Image Annotator 3 export: # preamble, header in a # CSV_HEADER comment, with
    or without a header row) in its default place."""
    root = tmp_path / "MoCA"
    write_sequence(root / "JPEGImages/arctic_fox", None, 6)
    top, left = corner(2)
    (root / "Annotations").mkdir()
    columns = "metadata_id,file_list,flags,temporal_coordinates,spatial_coordinates,metadata"
    (root / "Annotations/annotations.csv").write_text(
        "# Exported using VGG Image Annotator (http://www.robots.ox.ac.uk/~vgg/software/via)\n"
        f"# CSV_HEADER = {columns}\n" + (f"{columns}\n" if header_row else "")
        + f'"1_a","[""/arctic_fox/00002.jpg""]",0,"[]","[2,{left},{top},{SIDE},{SIDE}]","{{""1"":""1""}}"\n'
        '"1_b",/arctic_fox/00004.jpg,0,"[]","[]","{}"\n')
    _, masks, valid = open_data(f"moca:{root}").read(0)
    assert valid.tolist() == [False, False, True, False, False, False] and np.array_equal(masks[2], square(2))


def test_moca_mask_layout(tmp_path):
    root = tmp_path / "MoCA-Mask" / "TestDataset_per_sq"
    write_sequence(root / "hedgehog/Imgs", root / "hedgehog/GT", 6, annotated=range(0, 6, 5))
    write_sequence(root / "pygmy_seahorse/Imgs", root / "pygmy_seahorse/GT", 6, seed=2)
    source = open_data(f"moca:{root}")
    assert source.layout == "moca-mask" and [p.parent.name for p in source.videos] == ["hedgehog", "pygmy_seahorse"]
    assert source.read(0)[2].tolist() == [True, False, False, False, False, True] and source.read(1)[2].all()
    assert np.array_equal(source.read(1)[1][3], square(3))
    with pytest.raises(StlensError, match=r"MoCA-Mask splits here: TestDataset_per_sq \(use moca:.*/<split>\)"):
        open_data(f"moca:{root.parent}")


# ----------------------------------------------------------------------------------------------------------- errors


def test_error_missing_root(tmp_path):
    for prefix in ("davis", "moca"):
        with pytest.raises(StlensError, match=f"{prefix}: root folder not found: .*nowhere"):
            open_data(f"{prefix}:{tmp_path / 'nowhere'}")


def test_error_missing_jpegimages_folder(tmp_path):
    (tmp_path / "JPEGImages/1080p").mkdir(parents=True)
    with pytest.raises(StlensError, match=r"JPEGImages/480p.*resolutions here: 1080p"):
        open_data(f"davis:{tmp_path}")
    with pytest.raises(StlensError, match=r"MoCA frames folder not found: .*JPEGImages"):
        open_data(f"moca:{tmp_path / 'JPEGImages'}")


def test_error_listed_sequence_missing(davis):
    (davis / "ImageSets/480p/val.txt").write_text("bear\ncat\n")
    with pytest.raises(StlensError, match=r"val\.txt:2: sequence 'cat' is listed but its folder .*480p/cat"):
        open_data(f"davis:{davis}?split=val")


def test_error_mask_count_differs_from_frame_count(davis):
    (davis / "Annotations/480p/car/00005.png").unlink()
    with pytest.raises(StlensError, match=r"Annotations/480p/car has 5 masks but .*JPEGImages/480p/car has 6 frames"):
        open_data(f"davis:{davis}")


def test_error_moca_mask_naming_no_frame(tmp_path):
    root = tmp_path / "MoCA"
    write_sequence(root / "JPEGImages/fox", root / "Annotations/fox", 4)
    (root / "Annotations/fox/00003.png").rename(root / "Annotations/fox/00009.png")
    with pytest.raises(StlensError, match=r"Annotations/fox has 4 masks but .*JPEGImages/fox has 4 frames, and 1 "
                                          r"masks name no frame \(first: 00009.png\)"):
        open_data(f"moca:{root}")


def test_error_mask_size_differs_from_its_frame(davis):
    from PIL import Image

    Image.fromarray(np.zeros((24, 32), np.uint8)).save(davis / "Annotations/480p/bear/00003.png")
    source = open_data(f"davis:{davis}")
    with pytest.raises(StlensError, match=r"bear/00003\.png: mask is 32x24 px but its frame .*bear/00003\.jpg is "
                                          r"64x48 px"):
        source.read(0)


def test_error_unreadable_png(davis):
    (davis / "Annotations/480p/dog/00002.png").write_bytes(b"not a png")
    with pytest.raises(StlensError, match=r"dog/00002\.png: cannot read mask image"):
        open_data(f"davis:{davis}").read(2)


def test_error_empty_split(davis):
    (davis / "ImageSets/480p/val.txt").write_text("\n\n")
    with pytest.raises(StlensError, match=r"val\.txt: split 'val' lists no sequences"):
        open_data(f"davis:{davis}?split=val")
    with pytest.raises(StlensError, match=r"no list for split 'test'.*splits found: extra, train, val"):
        open_data(f"davis:{davis}?split=test")


@pytest.mark.parametrize(("row", "message"), [
    ("crab,00001,4,5,x,10", r"boxes\.csv:3: expected numbers for x, y, w, h"),
    ("crab,00001,4,5", r"boxes\.csv:3: expected 6 fields, got 4"),
    ("crab,00001,4,5,-3,10", r"boxes\.csv:3: box width and height must be ≥ 0"),
    ("crab,00042,4,5,10,10", r"boxes\.csv:3: frame '00042' of sequence 'crab' is not in .*JPEGImages/crab"),
], ids=["not-a-number", "too-few-fields", "negative-size", "unknown-frame"])
def test_error_bad_boxes_row(tmp_path, row, message):
    root = tmp_path / "MoCA"
    write_sequence(root / "JPEGImages/crab", None, 3)
    (root / "boxes.csv").write_text(f"sequence,frame,x,y,w,h\ncrab,00000,1,1,5,5\n{row}\n")
    with pytest.raises(StlensError, match=message):
        open_data(f"moca:{root}?boxes={root / 'boxes.csv'}")


def test_error_unknown_option_and_no_annotations(davis, tmp_path):
    with pytest.raises(StlensError, match=r"unknown option 'splits=val'; options: split, resolution"):
        open_data(f"davis:{davis}?splits=val")
    write_sequence(tmp_path / "MoCA/JPEGImages/crab", None, 3)
    with pytest.raises(StlensError, match=r"no MoCA annotations: .*annotations\.csv"):
        open_data(f"moca:{tmp_path / 'MoCA'}")
