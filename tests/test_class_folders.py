"""``classes:ROOT``: a folder-per-class layout (``ROOT/<class>/<video>``) as a labelled source, end to end through
evaluate, selectivity and train, and its errors."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import stlens
from stlens.errors import StlensError
from stlens.video.classfolders import open_classes
from stlens.video.sources import open_data

MODEL = "stlens:i3d?width=4&classes=2"
SMALL = {"frames": 4, "size": 32}


@pytest.fixture()
def root(small_video, tmp_path) -> Path:
    """ROOT/bike/{1,2}.mp4, ROOT/walk/1.mp4 (copies of one real clip) and a stray text file."""
    root = tmp_path / "root"
    for cls, count in (("walk", 1), ("bike", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            shutil.copy(small_video, root / cls / f"{i + 1}.mp4")
    (root / "walk" / "notes.txt").write_text("not a video")
    return root


def test_labels_are_sorted_class_folders(root, caplog):
    with caplog.at_level(logging.WARNING, logger="stlens"):
        source = open_data(f"classes:{root}")
    assert source.classes == ("bike", "walk")
    assert [(v.parent.name, v.name) for v in source.videos] == [("bike", "1.mp4"), ("bike", "2.mp4"),
                                                               ("walk", "1.mp4")]
    assert source.labels == (0, 0, 1)
    assert "notes.txt" in caplog.text and "not videos" in caplog.text


def test_evaluate_and_selectivity_end_to_end(root, tmp_path):
    scores = stlens.evaluate(MODEL, f"classes:{root}", **SMALL, batch_size=2, bootstrap=0)
    assert scores.clips == 3 and scores.settings["data_classes"] == 2
    assert [(c["class"], c["clips"]) for c in scores.per_class] == [(0, 2), (1, 1)]
    out = tmp_path / "sel"
    stlens.selectivity(MODEL, f"classes:{root}", layers="default", out=out, **SMALL, batch_size=2, gallery=1,
                       gallery_steps=2)  # the gallery re-draws video clips
    saved = json.loads((out / "selectivity.json").read_text())
    assert saved["classes"] == ["bike", "walk"] and saved["clip_labels"] == [0, 0, 1]
    assert [e["gif"] for e in saved["gallery"]] == ["gallery/unit0.gif"] and (out / "gallery" / "unit0.gif").is_file()


def test_train_takes_class_folders(root, tmp_path):
    from stlens.cli import main

    assert main(["train", "--model", MODEL, "--frames", "4", "--size", "32", "--data", f"classes:{root}", "--steps",
                 "1", "--batch-size", "2", "--eval-clips", "2", "--out", str(tmp_path / "t"), "--quiet"]) == 0


@pytest.mark.parametrize(("make", "match"), [
    (lambda r: (r / "empty").mkdir(), "empty.*holds no videos"),
    (lambda r: shutil.copy(r / "walk" / "1.mp4", r / "loose.mp4"), "loose.mp4.*has no class"),
    (lambda r: [shutil.rmtree(p) for p in list(r.iterdir())], "no class folders"),
])
def test_errors_name_the_folder(root, make, match):
    make(root)
    with pytest.raises(StlensError, match=match):
        open_classes(f"classes:{root}")


def test_missing_root(tmp_path):
    with pytest.raises(StlensError, match="nowhere.*is not a folder"):
        open_data(f"classes:{tmp_path / 'nowhere'}")
