"""``stlens perturb`` end to end on every labelled source (docs/behaviour.md): the CLI on small real files written
here, with a tiny untrained model of the source's kind, and perturb.csv checked row by row (perturbations, metrics,
clips, scores in [0, 1]); the Python API once on a non-synth source.

Already covered elsewhere: synth: classify worlds (test_perturb.py), synth: instance worlds (test_perturb_vis.py) and
the mmaction2 video list (test_perturb_dataset.py)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_mask_datasets import SIDE, corner, davis_root, write_sequence
from test_ytvis import write_dataset

import stlens
from stlens.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = ["--frames", "4", "--size", "32"]
CLASSIFIER = "stlens:c2d?classes={}&width=8"
SEGMENTER = "stlens:seg3d?width=4"
VIS = "stlens:vis?classes=3&width=8&queries=4&depth=1"
PERTURBATIONS = ("freeze", "palette")
COMMON = ["--perturbations", ",".join(PERTURBATIONS), "--bootstrap", "20", "--batch-size", "4", "--quiet"]


def run_cli(model: str, data: str, out: Path) -> list[dict[str, str]]:
    assert main(["perturb", "--model", model, *SHAPE, "--data", data, *COMMON, "--out", str(out)]) == 0
    with (out / "perturb.csv").open() as f:
        return list(csv.DictReader(f))


def check_rows(rows: list[dict[str, str]], metrics: tuple[str, ...], clips: int, frozen: int | None = None) -> None:
    """One row per (condition, metric) in order, every row over ``clips`` clips (freeze over ``frozen`` where given),
    scores and chance in [0, 1], the clean row retaining all of itself (or NaN when clean is not above chance)."""
    assert [(r["perturbation"], r["metric"]) for r in rows] == [(p, m) for p in ("clean", *PERTURBATIONS)
                                                                for m in metrics]
    for r in rows:
        assert int(r["clips"]) == (frozen if frozen is not None and r["perturbation"] == "freeze" else clips), r
        for column in ("score", "score_lo", "score_hi", "chance"):
            assert 0.0 <= float(r[column]) <= 1.0, (r["perturbation"], r["metric"], column, r[column])
        assert float(r["score_lo"]) <= float(r["score"]) <= float(r["score_hi"])
    for r in rows[:len(metrics)]:
        assert float(r["drop"]) == 0.0 and (math.isnan(float(r["retention"])) or float(r["retention"]) == 1.0)


# ------------------------------------------------------------------------------------------------ classify sources


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def frame_folder(path: Path, n: int = 8) -> Path:
    from PIL import Image

    path.mkdir(parents=True)
    rng = np.random.default_rng(len(str(path)))
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path / f"img_{i + 1:05d}.jpg")
    return path


def kinetics(tmp: Path, video: bytes) -> str:
    ann = tmp / "val.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\n"
                   "zumba,aaa,10,20,val\nabseiling,bbb,0,10,val\nzumba,ccc,5,15,val\n")
    for name in ("zumba/aaa_000010_000020.mp4", "abseiling/bbb_000000_000010.mp4", "ccc_000005_000015.mp4"):
        put(tmp / "k400" / name, video)
    return f"{ann}?root={tmp / 'k400'}"


def pyslowfast(tmp: Path, video: bytes) -> str:
    for name in ("a", "b", "c"):
        put(tmp / "videos" / f"{name}.mp4", video)
    ann = tmp / "val.csv"
    ann.write_text("videos/a.mp4 0\nvideos/b.mp4 1\nvideos/c.mp4 1\n")
    return str(ann)


def ssv2(tmp: Path, video: bytes) -> str:
    (tmp / "something-something-v2-labels.json").write_text(
        json.dumps({"Putting something on something": "0", "Pushing something from left to right": "1"}))
    ann = tmp / "something-something-v2-validation.json"
    ann.write_text(json.dumps([
        {"id": "11", "template": "Putting [something] on [something]", "label": "a", "placeholders": []},
        {"id": "22", "template": "Pushing [something] from left to right", "label": "b", "placeholders": []},
        {"id": "33", "template": "Putting [something] on [something]", "label": "c", "placeholders": []}]))
    for name in ("11", "22", "33"):
        put(tmp / "videos" / f"{name}.webm", video)
    return f"{ann}?root={tmp / 'videos'}"


def diving48(tmp: Path, video: bytes) -> str:
    ann = tmp / "Diving48_V2_test.json"
    ann.write_text(json.dumps([{"vid_name": "clipA", "label": 1, "start_frame": 0, "end_frame": 30},
                               {"vid_name": "clipB", "label": 0, "start_frame": 2, "end_frame": 8},
                               {"vid_name": "clipC", "label": 1, "start_frame": 10, "end_frame": 40}]))
    put(tmp / "clipA.mp4", video)
    frame_folder(tmp / "clipB")
    put(tmp / "clipC.mp4", video)
    return str(ann)


def ucf101(tmp: Path, video: bytes) -> str:
    lists = tmp / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n")
    names = ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Archery/v_Archery_g01_c01.avi",
             "Archery/v_Archery_g02_c01.avi")
    (lists / "testlist01.txt").write_text("".join(f"{n}\r\n" for n in names))
    for name in names:
        put(tmp / "UCF-101" / name, video)
    return str(lists / "testlist01.txt")


def rawframes(tmp: Path, video: bytes) -> str:
    for name in ("jump/v1", "run/v2", "run/v3"):
        frame_folder(tmp / "rawframes" / name)
    ann = tmp / "rawframes" / "val_list_rawframes.txt"
    ann.write_text("jump/v1 8 0\nrun/v2 8 1\nrun/v3 8 1\n")
    return str(ann)


def class_folders(tmp: Path, video: bytes) -> str:
    for name in ("bike/1.mp4", "bike/2.mp4", "walk/1.mp4"):
        put(tmp / "root" / name, video)
    return f"classes:{tmp / 'root'}"


CLASSIFY_SOURCES = {"kinetics": kinetics, "pyslowfast": pyslowfast, "ssv2": ssv2, "diving48": diving48,
                    "ucf101": ucf101, "mmaction-rawframes": rawframes, "classes": class_folders}


@pytest.mark.parametrize("source", CLASSIFY_SOURCES)
def test_cli_on_each_labelled_video_source(tmp_path, small_video, source):
    data = CLASSIFY_SOURCES[source](tmp_path, small_video.read_bytes())
    rows = run_cli(CLASSIFIER.format(2), data, tmp_path / "run")
    check_rows(rows, ("top1",), clips=3)
    assert float(rows[0]["chance"]) == 0.5
    doc = json.loads((tmp_path / "run" / "perturb.json").read_text())
    assert doc["settings"]["data"] == data and doc["settings"]["task"] == "classify"


# ---------------------------------------------------------------------------------------------- segmentation sources


def moca(tmp: Path) -> str:
    """MoCA: masks for every other frame (the frames without one are left out of the scores)."""
    root = tmp / "MoCA"
    write_sequence(root / "JPEGImages/fox", root / "Annotations/fox", 8, annotated=range(0, 8, 2))
    write_sequence(root / "JPEGImages/owl", root / "Annotations/owl", 6, seed=1, annotated=range(0, 6, 2))
    return f"moca:{root}"


def moca_boxes(tmp: Path) -> str:
    """MoCA with a boxes CSV: a box in a few frames of each sequence."""
    root = tmp / "MoCA"
    write_sequence(root / "JPEGImages/crab", None, 6)
    write_sequence(root / "JPEGImages/fish", None, 6, seed=1)
    rows = [f"{s},{t:05d},{corner(t)[1]},{corner(t)[0]},{SIDE},{SIDE}" for s in ("crab", "fish") for t in range(6)]
    (root / "boxes.csv").write_text("sequence,frame,x,y,w,h\n" + "\n".join(rows) + "\n")
    return f"moca:{root}?boxes=boxes.csv"


def moca_mask(tmp: Path) -> str:
    root = tmp / "MoCA-Mask" / "TestDataset_per_sq"
    write_sequence(root / "hedgehog/Imgs", root / "hedgehog/GT", 6, annotated=range(0, 6, 2))
    write_sequence(root / "seahorse/Imgs", root / "seahorse/GT", 6, seed=2)
    return f"moca:{root}"


SEGMENT_SOURCES = {"davis": lambda tmp: f"davis:{davis_root(tmp)}?split=val", "moca": moca, "moca-boxes": moca_boxes,
                   "moca-mask": moca_mask, "synth": lambda tmp: "synth:motion?task=segment&n=3&frames=4&size=32"}


@pytest.mark.parametrize("source", SEGMENT_SOURCES)
def test_cli_on_each_segmentation_source(tmp_path, source):
    data = SEGMENT_SOURCES[source](tmp_path)
    rows = run_cli(SEGMENTER, data, tmp_path / "run")
    clips = 3 if source == "synth" else 2
    # sparse masks (moca, moca-mask: every other frame): freeze holds the annotated frame nearest the middle, so
    # every clip (a 4-frame window always holds an annotated frame) is scored under freeze too
    check_rows(rows, ("miou", "msr"), clips)
    doc = json.loads((tmp_path / "run" / "perturb.json").read_text())
    assert doc["settings"]["task"] == "segment" and doc["settings"]["clips"] == clips


# -------------------------------------------------------------------------------------------------- instance sources


VIS_VIDEOS = {"aa01": (32, 40, 5), "cc03": (36, 32, 4), "dd04": (32, 32, 5)}


@pytest.mark.parametrize("layout", ["youtube-vis-2019", "youtube-vis-2021", "ovis"])
def test_cli_on_youtube_vis_and_ovis(tmp_path, layout):
    write_dataset(tmp_path / "vis", layout, videos=VIS_VIDEOS)
    rows = run_cli(VIS, f"ytvis:{tmp_path / 'vis'}", tmp_path / "run")
    check_rows(rows, ("ap", "ap50"), clips=3)
    assert all(r["follow_rate"] == "nan" for r in rows)
    doc = json.loads((tmp_path / "run" / "perturb.json").read_text())
    assert doc["settings"]["task"] == "instances" and doc["settings"]["classes"] == 3


# ------------------------------------------------------------------------------------------------------ Python API


def test_python_api_on_class_folders(tmp_path, small_video):
    root = tmp_path / "root"
    for name in ("bike/1.mp4", "bike/2.mp4", "walk/1.mp4", "walk/2.mp4"):
        put(root / name, small_video.read_bytes())
    shutil.copy(small_video, root / "walk" / "3.mp4")
    result = stlens.perturb(CLASSIFIER.format(2), f"classes:{root}", perturbations=PERTURBATIONS, frames=4, size=32,
                            bootstrap=20, batch_size=4, progress=False, out=tmp_path / "run")
    assert result.settings["clips"] == 5 and result.settings["task"] == "classify"
    assert [(r["perturbation"], r["metric"]) for r in result.rows] == [("clean", "top1"), ("freeze", "top1"),
                                                                       ("palette", "top1")]
    for name in ("clean", *PERTURBATIONS):
        assert 0.0 <= result.row(name, "top1")["score"] <= 1.0
    assert result.row("clean", "top1")["chance"] == 0.5
    assert (tmp_path / "run" / "perturb.csv").is_file()


def test_a_source_without_labels_is_refused_naming_the_labelled_sources(tmp_path, small_video, capsys):
    for name in ("a.mp4", "b.mp4"):
        put(tmp_path / "videos" / name, small_video.read_bytes())
    out = tmp_path / "run"
    assert main(["perturb", "--model", CLASSIFIER.format(2), *SHAPE, "--data", str(tmp_path / "videos"), *COMMON,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no labels, and this needs labelled clips" in err and "classes:ROOT" in err and "ytvis:" in err
    assert not (out / "perturb.csv").exists()
