"""Annotation files as data sources: each format, missing files, format override and malformed files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import stlens
from stlens.errors import StlensError
from stlens.models.registry import InputSpec
from stlens.video.annotations import detect_format
from stlens.video.sources import open_data


@pytest.fixture
def video_bytes(small_video) -> bytes:
    return small_video.read_bytes()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def frame_folder(path: Path, n: int = 5) -> Path:
    from PIL import Image

    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path / f"img_{i + 1:05d}.jpg")
    return path


def names(source) -> list[str]:
    return [p.name for p in source.videos]


def missing_names(source) -> list[str]:
    return [Path(m["source"]).name for m in source.missing]


def test_kinetics_csv(tmp_path, video_bytes, caplog):
    ann = tmp_path / "annotations" / "val.csv"
    ann.parent.mkdir()
    ann.write_text("label,youtube_id,time_start,time_end,split\n"
                   "zumba,aaa,10,20,val\n"
                   "air drumming,bbb,0,10,val\n"
                   "abseiling,ccc,5,15,val\n"
                   "zumba,ddd,30,40,val\n")
    root = tmp_path / "k400"
    put(root / "zumba" / "aaa_000010_000020.mp4", video_bytes)
    put(root / "val" / "air drumming" / "bbb_000000_000010.mp4", video_bytes)  # <root>/<split>/<label>/
    put(root / "ddd_000030_000040.mp4", video_bytes)  # flat
    assert detect_format(ann) == "kinetics"
    with caplog.at_level(logging.WARNING, logger="stlens"):
        source = open_data(f"{ann}?root={root}")
    assert names(source) == ["aaa_000010_000020.mp4", "bbb_000000_000010.mp4", "ddd_000030_000040.mp4"]
    assert source.labels == (2, 1, 2)  # sorted classes: abseiling, air drumming, zumba
    assert source.classes == ("abseiling", "air drumming", "zumba")  # named also when its only video is missing
    assert source.segments == ()
    assert missing_names(source) == ["ccc_000005_000015.mp4"]
    assert source.missing[0]["reason"] == f"listed in {ann} but not found"
    assert len([r for r in caplog.records if "not found" in r.getMessage()]) == 1


def test_pyslowfast_csv(tmp_path, video_bytes):
    put(tmp_path / "videos" / "a.mp4", video_bytes)
    put(tmp_path / "videos" / "with space.mp4", video_bytes)
    ann = tmp_path / "train.csv"
    ann.write_text(f"videos/a.mp4 3\n{tmp_path}/videos/with space.mp4 7\nvideos/gone.mp4 1\n")
    assert detect_format(ann) == "pyslowfast"
    source = open_data(ann)
    assert names(source) == ["a.mp4", "with space.mp4"]
    assert source.labels == (3, 7)
    assert source.classes == ()  # a path-label list does not name its classes
    assert missing_names(source) == ["gone.mp4"]


def test_ssv2_json(tmp_path, video_bytes):
    (tmp_path / "something-something-v2-labels.json").write_text(
        json.dumps({"Putting something on something": "5", "Pushing something from left to right": "12"}))
    ann = tmp_path / "something-something-v2-validation.json"
    ann.write_text(json.dumps([
        {"id": "11", "template": "Putting [something] on [something]", "label": "putting a cup on a table",
         "placeholders": ["a cup", "a table"]},
        {"id": "22", "template": "Pushing [something] from left to right", "label": "pushing a pen",
         "placeholders": ["a pen"]},
        {"id": "33", "template": "Putting [something] on [something]", "label": "x", "placeholders": []},
    ]))
    put(tmp_path / "videos" / "11.webm", video_bytes)
    put(tmp_path / "videos" / "22.webm", video_bytes)
    source = open_data(f"{ann}?root={tmp_path / 'videos'}")
    assert names(source) == ["11.webm", "22.webm"]
    assert source.labels == (5, 12)
    assert len(source.classes) == 13 and source.classes[5] == "Putting something on something"
    assert source.classes[12] == "Pushing something from left to right" and source.classes[0] == "0"
    assert missing_names(source) == ["33.webm"]

    (tmp_path / "something-something-v2-labels.json").unlink()
    assert open_data(f"{ann}?root={tmp_path / 'videos'}").labels == ()


def test_diving48_json(tmp_path, video_bytes):
    ann = tmp_path / "Diving48_V2_test.json"
    ann.write_text(json.dumps([
        {"vid_name": "clipA_00001", "label": 4, "start_frame": 0, "end_frame": 30},
        {"vid_name": "clipB_00002", "label": 0, "start_frame": 7, "end_frame": 40},
        {"vid_name": "clipC_00003", "label": 9, "start_frame": 1, "end_frame": 2},
    ], indent=1))
    put(tmp_path / "clipA_00001.mp4", video_bytes)
    frame_folder(tmp_path / "clipB_00002")
    source = open_data(ann)
    assert names(source) == ["clipA_00001.mp4", "clipB_00002"]
    assert source.videos[1].is_dir()
    assert source.labels == (4, 0)
    assert source.segments == ((0, 30), (7, 40))
    assert missing_names(source) == ["clipC_00003.mp4"]


def test_ucf101_lists(tmp_path, video_bytes):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                           "Archery/v_Archery_g08_c01.avi 2\r\n"
                                           "Archery/v_Archery_g09_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n"
                                          "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    videos = tmp_path / "UCF-101"  # beside the list folder: found without ?root=
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g08_c01.avi",
                 "Archery/v_Archery_g01_c01.avi"):
        put(videos / name, video_bytes)
    assert detect_format(lists / "trainlist01.txt") == "ucf101"
    train = open_data(lists / "trainlist01.txt")
    assert names(train) == ["v_ApplyEyeMakeup_g08_c01.avi", "v_Archery_g08_c01.avi"]
    assert train.labels == (0, 1)
    assert train.classes == ("ApplyEyeMakeup", "Archery")
    assert missing_names(train) == ["v_Archery_g09_c01.avi"]

    test = open_data(lists / "testlist01.txt")
    assert names(test) == ["v_Archery_g01_c01.avi"]
    assert test.labels == (1,)
    assert missing_names(test) == ["v_ApplyEyeMakeup_g01_c01.avi"]

    (lists / "classInd.txt").unlink()
    assert open_data(lists / "testlist01.txt").labels == ()


def test_mmaction_video_list(tmp_path, video_bytes):
    put(tmp_path / "data" / "jump" / "v1.mp4", video_bytes)
    put(tmp_path / "data" / "run" / "v2.mp4", video_bytes)
    ann = tmp_path / "val_list_videos.txt"
    ann.write_text("jump/v1.mp4 0\nrun/v2.mp4 1\nrun/v3.mp4 1\n")
    assert detect_format(ann) == "mmaction-video"
    source = open_data(f"{ann}?root={tmp_path / 'data'}")
    assert names(source) == ["v1.mp4", "v2.mp4"]
    assert source.labels == (0, 1)
    assert missing_names(source) == ["v3.mp4"]


def test_mmaction_rawframe_list(tmp_path):
    frame_folder(tmp_path / "rawframes" / "jump" / "v1")
    frame_folder(tmp_path / "rawframes" / "run" / "v2")
    ann = tmp_path / "rawframes" / "train_list_rawframes.txt"
    ann.write_text("jump/v1 5 3\nrun/v2 5 8\nrun/v9 12 8\n")
    assert detect_format(ann) == "mmaction-rawframes"
    source = open_data(ann)
    assert names(source) == ["v1", "v2"]
    assert source.labels == (3, 8)
    assert missing_names(source) == ["v9"]


def test_pairs_from_annotation_list_skip_missing(tmp_path, video_bytes):
    put(tmp_path / "a.mp4", video_bytes)
    ann = tmp_path / "list.txt"
    ann.write_text("missing.mp4 0\na.mp4 1\n")
    pairs = stlens.make_pairs(open_data(ann), InputSpec(frames=4, stride=1, size=32, resize=36), pairs=2)
    made = list(pairs)
    assert len(made) == 4 and all(p.source.endswith("a.mp4") for p in made)
    assert pairs.skipped == [{"source": str(tmp_path / "missing.mp4"), "reason": f"listed in {ann} but not found"}]


def test_format_override(tmp_path, video_bytes):
    put(tmp_path / "Archery" / "v_1.avi", video_bytes)
    ann = tmp_path / "my_split.txt"
    ann.write_text("Archery/v_1.avi 2\n")
    assert open_data(ann).labels == (2,)  # detected as an mmaction video list: label as written
    source = open_data(f"ann:ucf101:{ann}")
    assert source.labels == (1,)  # UCF101: 1-indexed → 0-indexed
    assert source.spec == f"ann:ucf101:{ann}"
    with pytest.raises(StlensError, match="FORMAT one of kinetics"):
        open_data(f"ann:hmdb:{ann}")


def test_undetectable_format_asks_for_override(tmp_path):
    ann = tmp_path / "notes.txt"
    ann.write_text("just some words\n")
    with pytest.raises(StlensError, match=r"cannot tell the annotation format .*ann:FORMAT:"):
        open_data(ann)


def test_malformed_files_name_file_and_line(tmp_path, video_bytes):
    put(tmp_path / "a.mp4", video_bytes)
    ann = tmp_path / "list.txt"
    ann.write_text("a.mp4 0\n\na.mp4 zero\n")
    with pytest.raises(StlensError, match=rf"{ann}:3: expected an integer, got 'zero'"):
        open_data(f"ann:mmaction-video:{ann}")

    bad_json = tmp_path / "Diving48_V2_train.json"
    bad_json.write_text('[\n{"vid_name": "a", "label": 1},\n{"vid_name": "b" "label": 2}\n]')
    with pytest.raises(StlensError, match=rf"{bad_json}:3: invalid JSON"):
        open_data(f"ann:diving48:{bad_json}")

    csv_file = tmp_path / "k.csv"
    csv_file.write_text("label,youtube_id,time_start,time_end,split\nzumba,aaa,10,20,val\nzumba,bbb,x,20,val\n")
    with pytest.raises(StlensError, match=rf"{csv_file}:3: bad time_start"):
        open_data(csv_file)


def test_all_missing_is_an_error(tmp_path):
    ann = tmp_path / "list.txt"
    ann.write_text("gone1.mp4 0\ngone2.mp4 1\n")
    with pytest.raises(StlensError, match=rf"none of the 2 files listed in {ann}.*gone1.mp4, .*gone2.mp4"):
        open_data(ann)
