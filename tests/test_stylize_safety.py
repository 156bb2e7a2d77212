"""``stlens stylize`` with hostile names and resumes (issue 13, parts 1, 5 and 6): names from the input become safe
folder names, nothing outside stlens' own video folders is ever removed, resume matches videos by path, size and time,
and a corrupt ``stylize.json`` is a clear error. Every case runs the CLI on real (small) video files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from stlens.cli import main
from stlens.names import safe_name, unique_safe_names

FAST = ["--stylizer", "fourier", "--styles", "2", "--frames-max", "3", "--short-side", "24", "--quiet"]
FRAMES = [f"frame_{t:05d}.jpg" for t in (1, 2, 3)]


def stylize(data, out, *extra: str) -> int:
    return main(["stylize", "--data", str(data), "--out", str(out), *FAST, *extra])


def videos(data: Path, *names: str, source: Path) -> Path:
    """Copies of the real clip ``source`` under ``data`` with the given (relative) names."""
    for name in names:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, data / name)
    return data


def user_files(out: Path) -> dict[Path, bytes]:
    """A user's own files in ``--out`` (and one level down) that stlens must leave alone."""
    files = {out / "notes.txt": b"mine\n", out / "keep" / "data.bin": b"\x00\x01"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def record(out: Path) -> dict:
    return json.loads((out / "stylize.json").read_text(encoding="utf-8"))


def check_layout(out: Path, count: int) -> list[str]:
    """Both styles hold the same ``count`` complete video folders with safe names; returns the names."""
    names = sorted(p.name for p in (out / "style_1").iterdir())
    assert len(names) == count and sorted(p.name for p in (out / "style_2").iterdir()) == names
    for name in names:
        assert name == safe_name(name) and "\n" not in name and not name.startswith(".")
        assert len(name.encode()) <= 200
        for k in (1, 2):
            assert sorted(p.name for p in (out / f"style_{k}" / name).iterdir()) == FRAMES
    assert sorted(v["name"] for v in record(out)["videos"]) == names
    return names


# ---------------------------------------------------------------------------------------------------------- names


def test_safe_name_rules():
    for text in ("", ".", "..", "...", "a/b", "a\\b", "a\x00b", "a\nb", "a\tb", ".hidden", "..a", "\u2028", "a\udcff"):
        name = safe_name(text)
        assert name and name not in (".", "..") and not name.startswith(".")
        assert not any(c in name for c in "/\\\x00\n\t\u2028") and name.encode("utf-8")  # no lone surrogate
        assert safe_name(name) == name  # idempotent
    assert [safe_name(t) for t in ("clip", "v_Biking_g01_c01", "日本語", "a b", "-x")] == \
        ["clip", "v_Biking_g01_c01", "日本語", "a b", "-x"]  # safe names are kept as they are
    assert safe_name("a/b") != safe_name("a\\b") != safe_name("a_b")  # a changed name carries a hash of the input
    long = "a" + "é" * 125  # 251 bytes: with ".mp4", a file name at the 255-byte limit
    cut = safe_name(long)
    assert len(cut.encode()) <= 200 and cut.startswith("aé") and cut.encode().decode() == cut
    assert safe_name(long[:-1]) != cut and len(safe_name(long, max_bytes=32).encode()) <= 32
    with pytest.raises(ValueError):
        safe_name("x", max_bytes=4)


def test_unique_safe_names():
    assert unique_safe_names(["clip", "clip", "x", "clip"]) == ["clip", "clip~2", "x", "clip~3"]
    assert unique_safe_names(["clip", "..", "."], taken={"clip"}) == ["clip~2", safe_name(".."), safe_name(".")]
    names = unique_safe_names(["é" * 150, "é" * 150])
    assert len(set(names)) == 2 and all(len(n.encode()) <= 200 for n in names)


# -------------------------------------------------------------------------------------------- part 1: safe names


def test_dot_names_delete_nothing(tmp_path, small_video):
    """``...mp4`` (stem ``..``: the old code removed all of --out) and ``..mp4`` (stem ``.``: the style folder)."""
    data = videos(tmp_path / "data", "...mp4", "..mp4", "a.mp4", source=small_video)
    out = tmp_path / "out"
    mine = user_files(out)
    assert stylize(data, out) == 0
    names = check_layout(out, 3)
    assert "a" in names
    assert {v["path"] for v in record(out)["videos"]} == {"...mp4", "..mp4", "a.mp4"}
    assert stylize(data, out) == 0  # resume: nothing removed, nothing written
    assert check_layout(out, 3) == names and record(out)["result"]["skipped"] == 3
    assert all(path.read_bytes() == content for path, content in mine.items())
    assert sorted(p.name for p in data.iterdir()) == ["...mp4", "..mp4", "a.mp4"]


def test_out_dot_keeps_the_users_files(tmp_path, small_video, monkeypatch):
    """``--out .`` in the user's own folder, with ``..mp4`` sorted among other videos."""
    data = videos(tmp_path / "data", "0.mp4", "..mp4", "z.mp4", source=small_video)
    work = tmp_path / "work"
    mine = user_files(work)
    monkeypatch.chdir(work)
    assert stylize(data, ".") == 0
    assert len(check_layout(work, 3)) == 3
    assert all(path.read_bytes() == content for path, content in mine.items())


def test_newline_name(tmp_path, small_video):
    data = videos(tmp_path / "data", "a\nb.mp4", "tab\there.mp4", source=small_video)
    out = tmp_path / "out"
    assert stylize(data, out) == 0
    check_layout(out, 2)
    assert {v["path"] for v in record(out)["videos"]} == {"a\nb.mp4", "tab\there.mp4"}


def test_multibyte_name_at_the_255_byte_limit(tmp_path, small_video):
    long = "a" + "é" * 125 + ".mp4"
    assert len(long.encode()) == 255
    data = videos(tmp_path / "data", long, "日本語の動画.mp4", source=small_video)
    out = tmp_path / "out"
    assert stylize(data, out) == 0
    names = check_layout(out, 2)
    assert "日本語の動画" in names
    assert any(n.startswith("aéé") and len(n.encode()) <= 200 for n in names)


@pytest.mark.parametrize("list_name", ["list.txt", "trainlist01.txt"])  # mmaction2 video list, UCF101 list
def test_path_like_names_in_an_annotation_list(tmp_path, small_video, list_name):
    """``a/../b.mp4`` and ``a/../..mp4`` listed in an annotation file (the ``..`` resolved by the filesystem)."""
    data = videos(tmp_path / "data", "b.mp4", "..mp4", "c.mp4", source=small_video)
    (data / "a").mkdir()
    listing = data / list_name
    listing.write_text("a/../b.mp4 1\na/../..mp4 1\nc.mp4 2\n", encoding="utf-8")
    out = tmp_path / "out"
    mine = user_files(out)
    assert stylize(listing, out) == 0
    check_layout(out, 3)
    config = record(out)
    assert config["root"] == str(data) and config["data_path"] == str(listing)
    assert sorted(v["path"] for v in config["videos"]) == ["..mp4", "b.mp4", "c.mp4"]
    assert all(path.read_bytes() == content for path, content in mine.items())
    assert listing.read_text(encoding="utf-8").startswith("a/../b.mp4")


# -------------------------------------------------------------------------------------------------- part 5: resume


def test_same_stem_videos_get_distinct_folders(tmp_path, small_video):
    """``setA/clip.mp4`` then, in the same --data, a new ``setB/clip.mp4``: setA keeps its folder, setB gets its own
    (the old code named both anew, by path, and left setA's first folder behind)."""
    data = videos(tmp_path / "data", "setA/clip.mp4", source=small_video)
    out = tmp_path / "out"
    assert stylize(data, out) == 0
    assert check_layout(out, 1) == ["clip"]
    stamp = (out / "style_1" / "clip" / FRAMES[0]).stat().st_mtime_ns
    videos(data, "setB/clip.mp4", source=small_video)
    assert stylize(data, out) == 0
    names = check_layout(out, 2)
    result = record(out)["result"]
    assert (result["written"], result["skipped"]) == (1, 1)
    assert {v["path"]: v["name"] for v in record(out)["videos"]} == {"setA/clip.mp4": "clip",
                                                                    "setB/clip.mp4": "setB__clip"}
    assert set(names) == {"clip", "setB__clip"}
    assert (out / "style_1" / "clip" / FRAMES[0]).stat().st_mtime_ns == stamp
    fresh = tmp_path / "fresh"  # both at once: distinct names from the start
    assert stylize(data, fresh) == 0
    assert set(check_layout(fresh, 2)) == {"setA__clip", "setB__clip"}


def test_resume_with_other_data_is_refused(tmp_path, small_video, capsys):
    """The issue's case: ``--data setA`` then ``--data setB`` into one --out used to report "already done"."""
    data = videos(tmp_path / "data", "setA/clip.mp4", "setB/clip.mp4", source=small_video)
    out = tmp_path / "out"
    assert stylize(data / "setA", out) == 0
    before = record(out)
    capsys.readouterr()
    assert stylize(data / "setB", out) == 2
    err = capsys.readouterr().err
    assert str(out) in err and str(data / "setA") in err and str(data / "setB") in err and "Traceback" not in err
    assert record(out) == before  # refused before any work
    assert stylize(f"{data / 'setA'}/", out) == 0  # the same folder, spelled otherwise, resumes


def test_a_changed_video_is_written_again(tmp_path, small_video, sample_dir):
    data = videos(tmp_path / "data", "a.mp4", "b.mp4", source=small_video)
    out = tmp_path / "out"
    assert stylize(data, out) == 0
    a_frame, b_frame = (out / "style_1" / v / FRAMES[0] for v in ("a", "b"))
    a_bytes, b_stamp = a_frame.read_bytes(), b_frame.stat().st_mtime_ns
    shutil.copyfile(sample_dir / "carphone_pristine.mp4", data / "a.mp4")  # other content, other size
    os.utime(data / "b.mp4", ns=(1, 1))  # only the time changes
    assert stylize(data, out) == 0
    result = record(out)["result"]
    assert (result["written"], result["skipped"], result["changed"]) == (2, 0, 2)
    assert a_frame.read_bytes() != a_bytes and b_frame.stat().st_mtime_ns != b_stamp
    assert check_layout(out, 2) == ["a", "b"]
    assert {v["path"]: v["size"] for v in record(out)["videos"]}["a.mp4"] == (data / "a.mp4").stat().st_size


def test_a_changed_video_folder_with_user_files_is_not_removed(tmp_path, small_video, capsys):
    data = videos(tmp_path / "data", "a.mp4", source=small_video)
    out = tmp_path / "out"
    assert stylize(data, out) == 0
    mine = out / "style_2" / "a" / "my_notes.txt"
    mine.write_text("mine")
    os.utime(data / "a.mp4", ns=(1, 1))
    assert stylize(data, out) == 2
    assert "my_notes.txt" in capsys.readouterr().err
    assert mine.read_text() == "mine" and sorted(p.name for p in mine.parent.iterdir()) == [*FRAMES, "my_notes.txt"]


def test_a_folder_stlens_did_not_write_is_left_alone(tmp_path, small_video):
    """A user's folder at a video's name: a new video takes another name and the folder stays as it is."""
    data = videos(tmp_path / "data", "clip.mp4", source=small_video)
    out = tmp_path / "out"
    (out / "style_1" / "clip").mkdir(parents=True)
    (out / "style_1" / "clip" / "mine.txt").write_text("mine")
    assert stylize(data, out) == 0
    assert sorted(p.name for p in (out / "style_1" / "clip").iterdir()) == ["mine.txt"]
    assert [v["name"] for v in record(out)["videos"]] == ["clip~2"]
    assert sorted(p.name for p in (out / "style_2" / "clip~2").iterdir()) == FRAMES


# ------------------------------------------------------------------------------------- part 6: corrupt stylize.json


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", '"text"',
                                     '{"stylizer": "fourier", "videos": "x", "root": 1}',
                                     '{"root": "/", "videos": [{"path": "a.mp4", "name": "..", "size": 1, '
                                     '"mtime_ns": 1}]}'])
def test_corrupt_stylize_json_is_a_clear_error(tmp_path, small_video, capsys, content):
    data = videos(tmp_path / "data", "a.mp4", source=small_video)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stylize.json").write_text(content, encoding="utf-8")
    assert stylize(data, out) == 2
    err = capsys.readouterr().err
    assert str(out / "stylize.json") in err and "Traceback" not in err
    # refused before any work (the lock file is stlens' own and holds nothing)
    assert sorted(p.name for p in out.iterdir() if p.name != ".stlens.lock") == ["stylize.json"]
    assert (out / "stylize.json").read_text(encoding="utf-8") == content


def test_out_that_is_a_file_is_a_clear_error(tmp_path, small_video, capsys):
    data = videos(tmp_path / "data", "a.mp4", source=small_video)
    (tmp_path / "out").write_text("a file")
    assert stylize(data, tmp_path / "out") == 2
    assert "not a folder" in capsys.readouterr().err


def test_resume_of_a_root_without_video_records(tmp_path, small_video):
    """A ``stylize.json`` of stlens 0.1.0 (no ``videos``): its folders, named by the same rule, count as done."""
    data = videos(tmp_path / "data", "a.mp4", "b.mp4", source=small_video)
    out = tmp_path / "out"
    assert stylize(data, out) == 0
    old = {k: v for k, v in record(out).items() if k not in ("videos", "root", "data_path", "result")}
    (out / "stylize.json").write_text(json.dumps(old), encoding="utf-8")
    assert stylize(data, out) == 0
    assert record(out)["result"]["skipped"] == 2 and check_layout(out, 2) == ["a", "b"]
