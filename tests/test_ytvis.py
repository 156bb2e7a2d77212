"""ytvis: YouTube-VIS 2019/2021 and OVIS annotation files written in tmp_path (tiny JPEG videos, masks as compressed
RLE, uncompressed RLE and polygons), read back as instance clips."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.labelled import open_clips
from stlens.video.sources import open_data
from stlens.video.ytvis import YtvisClips, nearest, split_ids

LAYOUTS = ("youtube-vis-2019", "youtube-vis-2021", "ovis")
#: video name → (height, width, frames); category ids deliberately not contiguous
VIDEOS = {"aa01": (12, 16, 4), "bb02": (10, 14, 3), "cc03": (12, 20, 4), "dd04": (16, 12, 5)}
CATEGORIES = [{"id": 7, "name": "person"}, {"id": 2, "name": "cat"}, {"id": 40, "name": "zebra"}]
FLAT = InputSpec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def rect(height: int, width: int, top: int, left: int, rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[top:top + rows, left:left + cols] = True
    return mask


def compressed(mask: np.ndarray) -> dict:
    import pycocotools.mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, written independently of pycocotools: run lengths in column-major order, 0s first."""
    flat, counts, value, run = mask.flatten(order="F"), [], False, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def tracks_of(name: str, height: int, width: int, length: int) -> list[dict]:
    """The tracks of a video: ``masks`` (T, H, W) as written, the segmentations written, category id and crowd flag."""
    tracks = []
    a = [rect(height, width, 2, 1 + 2 * t, 5, 6) for t in range(length)]  # compressed RLE, moves right
    tracks.append({"masks": a, "segmentations": [compressed(m) for m in a], "category_id": 7, "iscrowd": 0})
    b = [rect(height, width, 6, 3, 3, 4) if t != 1 else np.zeros((height, width), bool) for t in range(length)]
    tracks.append({"masks": b, "segmentations": [None if t == 1 else uncompressed(m) for t, m in enumerate(b)],
                   "category_id": 40, "iscrowd": 0})
    if name in ("bb02", "cc03"):  # polygons: a rectangle x ∈ [2, 9), y ∈ [1, 4) covers those pixels
        c = [rect(height, width, 1, 2, 3, 7)] * length
        tracks.append({"masks": c, "segmentations": [[[2, 1, 9, 1, 9, 4, 2, 4]]] * length, "category_id": 2,
                       "iscrowd": 0})
    if name == "cc03":  # a crowd
        d = [rect(height, width, 8, 10, 4, 6)] * length
        tracks.append({"masks": d, "segmentations": [compressed(m) for m in d], "category_id": 2, "iscrowd": 1})
    if name == "dd04":  # only in frame 0
        e = [rect(height, width, 0, 0, 3, 3) if t == 0 else np.zeros((height, width), bool) for t in range(length)]
        tracks.append({"masks": e, "segmentations": [compressed(e[0])] + [None] * (length - 1), "category_id": 2,
                       "iscrowd": 0})
    return tracks


def frame_image(mask: np.ndarray, t: int) -> Image.Image:
    """Red where track A is, green = 60·t everywhere (to tell the frames apart)."""
    rgb = np.zeros((*mask.shape, 3), np.uint8)
    rgb[..., 0] = mask * 255
    rgb[..., 1] = 60 * t
    return Image.fromarray(rgb)


def write_dataset(root: Path, layout: str, split: str = "train", annotated: bool = True,
                  videos: dict | None = None) -> tuple[Path, dict[int, dict]]:
    """A data set in ``layout`` under ``root``; returns its annotation file and per video id the tracks written."""
    annotations_file, frames = {
        "youtube-vis-2019": (root / f"{split}.json", root / split / "JPEGImages"),
        "youtube-vis-2021": (root / split / "instances.json", root / split / "JPEGImages"),
        "ovis": (root / f"annotations_{split}.json", root / split),
    }[layout]
    pattern = "img_{:07d}.jpg" if layout == "ovis" else "{:05d}.jpg"
    doc: dict = {"info": {}, "licenses": [], "videos": [], "categories": CATEGORIES,
                 "annotations": [] if annotated else None}
    written, next_id = {}, 100
    for vid, (name, (height, width, length)) in enumerate((videos or VIDEOS).items(), start=1):
        tracks = tracks_of(name, height, width, length)
        (frames / name).mkdir(parents=True, exist_ok=True)
        files = []
        for t in range(length):
            frame_image(tracks[0]["masks"][t], t).save(frames / name / pattern.format(t * 5), quality=100,
                                                       subsampling=0)
            files.append(f"{name}/{pattern.format(t * 5)}")
        Image.new("RGB", (width, height)).save(frames / name / "zz_unlisted.jpg")  # not in file_names: never read
        doc["videos"].append({"id": vid, "width": width, "height": height, "length": length, "file_names": files})
        for track in tracks:
            track["id"] = next_id
            if annotated:
                doc["annotations"].append({
                    "id": next_id, "video_id": vid, "category_id": track["category_id"], "iscrowd": track["iscrowd"],
                    "segmentations": track["segmentations"], "areas": [None] * length, "bboxes": [None] * length})
            next_id += 1
        written[vid] = {"name": name, "tracks": tracks}
    annotations_file.parent.mkdir(parents=True, exist_ok=True)
    annotations_file.write_text(json.dumps(doc))
    return annotations_file, written


def whole_clip(spec: InputSpec, length: int, resize: int, size: int) -> InputSpec:
    return InputSpec(frames=length, stride=1, size=size, resize=resize, mean=spec.mean, std=spec.std)


# ------------------------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_decodes_the_masks_written(tmp_path, layout):
    path, written = write_dataset(tmp_path, layout)
    source = open_data(f"ytvis:{tmp_path}")
    assert source.layout == layout and source.annotation_file == path and source.has_targets
    assert source.classes == ("cat", "person", "zebra") and source.category_ids == (2, 7, 40)
    assert [v.id for v in source.entries] == [1, 2, 3, 4]
    for vid, video in written.items():
        height, width, length = VIDEOS[video["name"]]
        short = min(height, width)
        clips = YtvisClips(source, whole_clip(FLAT, length, short, short))
        inputs, targets = clips.batch(np.array([clips.video_ids.index(vid)]), np.random.default_rng(0))
        top, left = (height - short) // 2, (width - short) // 2
        assert inputs.shape == (1, 3, length, short, short)
        green = inputs[0, 1].flatten(1).mean(1).numpy() * 255  # frames read in file_names order
        np.testing.assert_allclose(green, 60 * np.arange(length), atol=3)
        got = targets[0]
        present = [t for t in video["tracks"] if np.stack(t["masks"])[:, top:top + short, left:left + short].any()]
        assert got.track_ids.tolist() == [t["id"] for t in present]
        for n, track in enumerate(present):
            expected = np.stack(track["masks"])[:, top:top + short, left:left + short]
            np.testing.assert_array_equal(got.masks[n], expected)
            assert got.classes[n] == {2: 0, 7: 1, 40: 2}[track["category_id"]]
            assert got.crowd[n] == bool(track["iscrowd"])
        assert not got.masks[1, 1].any()  # the null frame of track B
    crowd = YtvisClips(source, whole_clip(FLAT, 4, 12, 12)).batch(np.array([1]), np.random.default_rng(0))[1][0]
    assert crowd.crowd.tolist() == [False, False, False, True]


def test_open_clips_gives_the_instances_task_and_refuses_others(tmp_path):
    write_dataset(tmp_path, "youtube-vis-2019")
    clips = open_clips(f"ytvis:{tmp_path}", whole_clip(FLAT, 3, 10, 10), task=None)
    assert clips.task == "instances" and clips.num_classes == 3 and clips.class_names == ("cat", "person", "zebra")
    assert len(clips) == len(VIDEOS) and clips.video_ids == (1, 2, 3, 4)
    assert clips.videos[0] == tmp_path / "train" / "JPEGImages" / "aa01"
    with pytest.raises(StlensError, match="instance targets.*not `task` classify"):
        open_clips(f"ytvis:{tmp_path}", whole_clip(FLAT, 3, 10, 10), task="classify")
    with pytest.raises(StlensError, match="two-stream"):
        open_clips(f"ytvis:{tmp_path}", whole_clip(FLAT, 3, 10, 10), flow=True, task=None)


def nearest_by_fractions(native: int, size: int) -> list[int]:
    """Nearest neighbour with pixel centres aligned, one output pixel at a time in exact rationals."""
    return [int((Fraction(2 * i + 1, 2) * Fraction(native, size)).__floor__()) for i in range(size)]


def test_resize_and_crop_match_an_independent_nearest_neighbour(tmp_path):
    _, written = write_dataset(tmp_path, "ovis")
    source = open_data(f"ytvis:{tmp_path}")
    for native, size in [(12, 24), (12, 17), (16, 9), (20, 7), (5, 5)]:
        assert nearest(native, size).tolist() == nearest_by_fractions(native, size)
    # video aa01 (12×16) upscaled ×2: every mask pixel is the native pixel (r // 2, c // 2)
    spec = InputSpec(frames=4, stride=1, size=20, resize=24, mean=FLAT.mean, std=FLAT.std)
    _, (got,) = YtvisClips(source, spec).batch(np.array([0]), np.random.default_rng(0))
    top, left = (24 - 20) // 2, (32 - 20) // 2
    native = np.stack(written[1]["tracks"][0]["masks"])
    up = native.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(got.masks[0], up[:, top:top + 20, left:left + 20])
    # cc03 (12×20) at a non-integer scale (short side 17 → 17×28), random crops: the masks follow the frames' window
    spec = InputSpec(frames=2, stride=1, size=15, resize=17, mean=FLAT.mean, std=FLAT.std)
    clips = YtvisClips(source, spec, augment=True)
    rows, cols = nearest_by_fractions(12, 17), nearest_by_fractions(20, 28)
    tracks = written[3]["tracks"]
    windows = set()
    for seed in range(12):
        inputs, (got,) = clips.batch(np.array([2]), np.random.default_rng(seed))
        frames = np.rint(inputs[0, 1, :, 0, 0].numpy() * 255 / 60).astype(int)  # the frame indices sampled
        red = inputs[0, 0].numpy() > 0.5
        scaled = np.stack(tracks[0]["masks"])[frames][:, rows][:, :, cols]
        hits = [(top, left) for top in range(17 - 15 + 1) for left in range(28 - 15 + 1)
                if (scaled[:, top:top + 15, left:left + 15] == got.masks[0]).all()]
        assert hits, seed
        windows.add(hits[0])
        # the frames show track A (red) where its mask is, away from the edges blurred by the bilinear resize
        inner = got.masks[0].copy()
        for axis in (1, 2):
            inner &= np.roll(got.masks[0], 1, axis) & np.roll(got.masks[0], -1, axis)
        near = got.masks[0].copy()
        for axis in (1, 2):
            near |= np.roll(got.masks[0], 1, axis) | np.roll(got.masks[0], -1, axis)
        assert red[inner].all() and not red[~near].any()
        top, left = hits[0]
        for n, track in enumerate(t for t in tracks if t["id"] in got.track_ids.tolist()):
            expected = np.stack(track["masks"])[frames][:, rows][:, :, cols][:, top:top + 15, left:left + 15]
            np.testing.assert_array_equal(got.masks[n], expected)
    assert len(windows) > 1  # the crop moves


def test_tracks_absent_from_every_sampled_frame_are_dropped(tmp_path):
    write_dataset(tmp_path, "youtube-vis-2021")
    source = open_data(f"ytvis:{tmp_path}")
    spec = InputSpec(frames=2, stride=1, size=12, resize=12, mean=FLAT.mean, std=FLAT.std)
    seen = {}
    for seed in range(20):
        inputs, (got,) = YtvisClips(source, spec).batch(np.array([3]), np.random.default_rng(seed))
        first = int(np.rint(inputs[0, 1, 0, 0, 0].item() * 255 / 60))
        seen[first] = got.track_ids.tolist()
        assert got.present.any(axis=1).all()
    ids = [t for t in range(100, 200)]
    only_frame0 = max(seen[0])
    assert set(seen) == {0, 1, 2, 3} and only_frame0 in ids
    assert all(only_frame0 not in tracks for first, tracks in seen.items() if first > 0)


# ------------------------------------------------------------------------------------------------------------- splits


def test_sub_splits_are_seeded_disjoint_and_cover_the_training_videos(tmp_path):
    write_dataset(tmp_path, "youtube-vis-2019")
    ids = lambda spec: [v.id for v in open_data(spec).entries]  # noqa: E731
    train, valid = ids(f"ytvis:{tmp_path}?split=train_sub"), ids(f"ytvis:{tmp_path}?split=valid_sub")
    assert len(valid) == 1 and sorted(train + valid) == [1, 2, 3, 4]  # 0.2 of 4 videos, at least one
    assert ids(f"ytvis:{tmp_path}?split=valid_sub&seed=0") == valid  # deterministic
    half = ids(f"ytvis:{tmp_path}?split=valid_sub&valid_fraction=0.5&seed=3")
    assert len(half) == 2 and not set(half) & set(ids(f"ytvis:{tmp_path}?split=train_sub&valid_fraction=0.5&seed=3"))
    many = list(range(1, 101))
    draws = {tuple(sorted(split_ids(many, "valid_sub", 0.2, seed))) for seed in range(5)}
    assert len(draws) == 5 and all(len(d) == 20 for d in draws)  # the seed changes the split
    assert split_ids(many[::-1], "valid_sub", 0.2, 1) == split_ids(many, "valid_sub", 0.2, 1)  # order of the file
    assert split_ids(many, "train_sub", 0.2, 1) == set(many) - split_ids(many, "valid_sub", 0.2, 1)
    assert ids(f"ytvis:{tmp_path}?split=all") == [1, 2, 3, 4]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_official_valid_file_opens_without_targets(tmp_path, layout):
    path, _ = write_dataset(tmp_path, layout, split="valid", annotated=False)
    spec = whole_clip(FLAT, 3, 10, 10)
    clips = open_clips(f"ytvis:{tmp_path}?split=valid", spec, task=None)
    assert clips.has_targets is False and len(clips) == len(VIDEOS)
    clips = YtvisClips(open_data(f"ytvis:{tmp_path}?split=valid"), spec)
    assert clips.inputs(np.arange(2), np.random.default_rng(0)).shape == (2, 3, 3, 10, 10)
    with pytest.raises(StlensError, match="has no annotations.*needs instance targets"):
        clips.batch(np.arange(2), np.random.default_rng(0))
    with pytest.raises(StlensError, match="has no annotations.*training"):
        clips.require_targets("training")
    with pytest.raises(StlensError, match=f"{path}: split=train_sub splits a training file's annotated videos"):
        open_data(f"ytvis:{path}?split=train_sub")


def test_an_explicit_file_with_a_frames_folder(tmp_path):
    path, _ = write_dataset(tmp_path / "data", "ovis")
    moved = tmp_path / "elsewhere.json"
    moved.write_text(path.read_text())
    source = open_data(f"ytvis:{moved}?frames={tmp_path / 'data' / 'train'}&split=valid_sub&seed=2")
    assert source.layout == "file" and len(source.entries) == 1
    assert open_data(f"ytvis:{path}").frames_root == tmp_path / "data" / "train"  # OVIS's folder guessed
    with pytest.raises(StlensError, match="no frames folder found.*frames=DIR"):
        open_data(f"ytvis:{moved}")


# ------------------------------------------------------------------------------------------------------------- errors


def broken(tmp_path: Path, layout: str, change) -> tuple[Path, str]:
    path, _ = write_dataset(tmp_path, layout)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path, f"ytvis:{tmp_path}"


def _drop_segmentation(doc):
    doc["annotations"][3]["segmentations"].pop()


def _unknown_category(doc):
    doc["annotations"][3]["category_id"] = 99


def _wrong_rle_size(doc):
    doc["annotations"][3]["segmentations"][2]["size"] = [11, 14]


def _bad_length(doc):
    doc["videos"][1]["length"] = 9


@pytest.mark.parametrize("change, says", [
    (_drop_segmentation, "annotation 103: 2 segmentations but the video has 3 frames"),
    (_unknown_category, "annotation 103: unknown category id 99"),
    (_wrong_rle_size, "annotation 103, frame 2: RLE size [11, 14] is not the video's height×width [10, 14]"),
    (_bad_length, "length 9 but 3 file_names"),
])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_broken_annotations_name_the_file_and_video(tmp_path, layout, change, says):
    path, spec = broken(tmp_path, layout, change)
    with pytest.raises(StlensError) as error:
        open_data(spec)
    assert str(error.value).startswith(f"{path}: video 2") and says in str(error.value), error.value


def test_missing_frames_name_the_file_and_video(tmp_path):
    path, _ = write_dataset(tmp_path, "youtube-vis-2019")
    later = tmp_path / "train" / "JPEGImages" / "dd04" / "00010.jpg"
    later.unlink()
    clips = YtvisClips(open_data(f"ytvis:{tmp_path}"), whole_clip(FLAT, 5, 12, 12))
    with pytest.raises(StlensError) as error:
        clips.batch(np.array([clips.video_ids.index(4)]), np.random.default_rng(0))
    assert str(error.value) == f"{later}: frame 2 of video 4 of {path} not found"
    first = tmp_path / "train" / "JPEGImages" / "bb02" / "00000.jpg"
    first.unlink()
    with pytest.raises(StlensError) as error:  # the first frame of every video is looked for when opening
        open_data(f"ytvis:{tmp_path}")
    assert str(error.value) == f"{first}: frame 0 of video 2 of {path} not found"


def test_a_frame_of_another_size_than_the_json_says(tmp_path):
    path, _ = write_dataset(tmp_path, "youtube-vis-2021")
    frame = tmp_path / "train" / "JPEGImages" / "aa01" / "00005.jpg"
    Image.new("RGB", (10, 10)).save(frame)
    with pytest.raises(StlensError, match=f"{frame}: frame 1 of video 1 is 10x10 px but .*instances.json gives 16x12"):
        YtvisClips(open_data(f"ytvis:{tmp_path}"), whole_clip(FLAT, 4, 12, 12)).batch(np.array([0]),
                                                                                       np.random.default_rng(0))


def test_files_that_are_not_youtube_vis_and_unknown_splits(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    (tmp_path / "train" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(StlensError, match=rf"{tmp_path / 'train.json'}: not a YouTube-VIS/OVIS annotation file.*"
                                          r"found images, annotations, categories"):
        open_data(f"ytvis:{tmp_path}")
    (tmp_path / "train.json").write_text("{not json")
    with pytest.raises(StlensError, match=rf"{tmp_path / 'train.json'}: not valid JSON \(line 1"):
        open_data(f"ytvis:{tmp_path}")
    with pytest.raises(StlensError, match="unknown split 'val'; splits: all, train_sub, valid_sub, valid, test"):
        open_data(f"ytvis:{tmp_path}?split=val")
    with pytest.raises(StlensError, match="unknown option 'fraction=0.3'"):
        open_data(f"ytvis:{tmp_path}?fraction=0.3")
    with pytest.raises(StlensError, match="valid_fraction must lie strictly between 0 and 1"):
        open_data(f"ytvis:{tmp_path}?split=train_sub&valid_fraction=1")
    with pytest.raises(StlensError, match="no YouTube-VIS or OVIS annotation file for split test"):
        open_data(f"ytvis:{tmp_path}?split=test")


def test_a_broken_file_exits_with_code_2_from_the_cli(tmp_path, capsys, monkeypatch):
    from stlens.cli import main

    monkeypatch.chdir(tmp_path)
    path, spec = broken(tmp_path / "data", "ovis", _unknown_category)
    code = main(["evaluate", "--model", "module:conftest:tiny_video_net", "--data", spec, "--frames", "2",
                 "--size", "8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}: video 2, annotation 103: unknown category id 99" in err, err


def test_sources_hash_and_copy_for_worker_processes(tmp_path):
    import copy
    import pickle

    write_dataset(tmp_path, "youtube-vis-2019")
    clips = YtvisClips(open_data(f"ytvis:{tmp_path}"), whole_clip(FLAT, 3, 10, 10))
    assert hash(clips.source) == hash(open_data(f"ytvis:{tmp_path}"))
    assert pickle.dumps(clips)  # spawned DataLoader workers receive the clips pickled
    again = copy.deepcopy(clips)
    one, two = clips.batch(np.arange(4), np.random.default_rng(5)), again.batch(np.arange(4), np.random.default_rng(5))
    for a, b in zip(one[1], two[1], strict=True):
        assert (a.masks == b.masks).all() and (a.track_ids == b.track_ids).all()
    assert (one[0] == two[0]).all()
