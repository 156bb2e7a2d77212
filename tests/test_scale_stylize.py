"""``stlens stylize`` and ``stlens pairs check`` under torchrun (2 gloo processes on the CPU): the same files (same
bytes) and the same report as 1 process, and a rank that fails stops the run (docs/scaling.md, issue 16 part 2).

This module is also the user stylizer ``module:test_scale_stylize:fails_on_rank_1`` of the failing-rank test (with
the tests folder on PYTHONPATH), so it imports only the standard library, numpy and pytest at the top."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import launch
import numpy as np
import pytest

#: files that hold the run id (the marker also its time, and the sha256 of stylize.json, which holds the run id):
#: compared without those fields
RUN_ID_FIELDS = {"stylize.json": {"run_id"}, ".stlens-run.json": {"run_id", "created", "sha256"}}
STYLIZE = ["--stylizer", "palette", "--styles", "2", "--frames-max", "6", "--short-side", "32", "--seed", "5"]
CHECK = ["--stylizer", "palette,fourier", "--pairs", "3", "--frames", "6", "--size", "32", "--seed", "2"]


def fails_on_rank_1(clip: np.ndarray, seed: int) -> np.ndarray:
    """A stylizer that fails in the process of rank 1 only (``RANK`` is set by torchrun); the identity elsewhere."""
    if os.environ.get("RANK") == "1":
        raise ValueError("planted failure")
    return clip


def torchrun(verb: list[str], args: list[str], nproc: int = 2):
    return launch.torchrun([*verb, *args, "--quiet"], nproc)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, small_video) -> Path:
    """Three copies of the real clip and a broken file (source order: a, b, broken, c: rank 1 gets broken and c)."""
    data = tmp_path_factory.mktemp("data")
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (data / name).write_bytes(small_video.read_bytes())
    (data / "broken.mp4").write_bytes(b"not a video")
    return data


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def without(doc: object, fields: set[str]) -> object:
    """A JSON document without ``fields`` (at any depth)."""
    if isinstance(doc, dict):
        return {k: without(v, fields) for k, v in doc.items() if k not in fields}
    if isinstance(doc, list):
        return [without(v, fields) for v in doc]
    return doc


def assert_same_files(one: Path, other: Path) -> None:
    """Every file of two roots has the same bytes, except the run ids (and times) of RUN_ID_FIELDS' files."""
    a, b = files(one), files(other)
    assert sorted(a) == sorted(b)
    assert sum(name.endswith(".jpg") for name in a) == 3 * 2 * 6  # 3 videos × 2 styles × 6 frames
    for name in a:
        if name in RUN_ID_FIELDS:
            assert without(json.loads(a[name]), RUN_ID_FIELDS[name]) == \
                without(json.loads(b[name]), RUN_ID_FIELDS[name]), name
        else:
            assert a[name] == b[name], name


def test_two_processes_stylize_the_files_of_one(tmp_path, videos):
    from stlens.cli import main

    single, double = tmp_path / "single", tmp_path / "double"
    assert main(["stylize", "--data", str(videos), *STYLIZE, "--out", str(single), "--quiet"]) == 0
    run = torchrun(["stylize"], ["--data", str(videos), *STYLIZE, "--out", str(double)])
    assert run.returncode == 0, run.stderr
    assert_same_files(single, double)
    config = json.loads((double / "stylize.json").read_text())
    assert config["result"]["written"] == 3 and [b["source"].rsplit("/", 1)[-1] for b in config["result"]["bad"]] \
        == ["broken.mp4"]
    marker = json.loads((double / ".stlens-run.json").read_text())
    assert marker["status"] == "complete" and len(marker["folders"]) == 6

    # resume per video under torchrun: a video of rank 1 (c) lost in one style is written again, the rest skipped
    stamp = (double / "style_1" / "a" / "frame_00001.jpg").stat().st_mtime_ns
    for frame in (double / "style_2" / "c").iterdir():
        frame.unlink()
    (double / "style_2" / "c").rmdir()
    again = torchrun(["stylize"], ["--data", str(videos), *STYLIZE, "--out", str(double)])
    assert again.returncode == 0, again.stderr
    result = json.loads((double / "stylize.json").read_text())["result"]
    assert (result["written"], result["skipped"], result["frames"]) == (1, 2, 6)
    assert (double / "style_1" / "a" / "frame_00001.jpg").stat().st_mtime_ns == stamp
    assert {k: v for k, v in files(single).items() if k.endswith(".jpg")} == \
        {k: v for k, v in files(double).items() if k.endswith(".jpg")}


def test_two_processes_check_the_pairs_of_one(tmp_path, videos):
    from stlens.cli import main

    single, double = tmp_path / "single.json", tmp_path / "double.json"
    assert main(["pairs", "check", "--data", str(videos), *CHECK, "--out", str(single), "--quiet"]) == 0
    run = torchrun(["pairs", "check"], ["--data", str(videos), *CHECK, "--out", str(double)])
    assert run.returncode == 0, run.stderr
    report = json.loads(double.read_text())
    assert report["clips"] == 3 and set(report["stylizers"]) == {"palette", "fourier"}
    assert report == json.loads(single.read_text())  # the report has no timing fields: all of it is equal


def test_a_failing_rank_stops_the_stylize_run(tmp_path, videos):
    out = tmp_path / "out"
    args = ["--data", str(videos), "--stylizer", "module:test_scale_stylize:fails_on_rank_1", "--styles", "1",
            "--frames-max", "4", "--short-side", "32", "--out", str(out)]
    run = torchrun(["stylize"], args)
    assert run.returncode != 0
    assert "planted failure" in run.stderr
    # rank 0 stops at its next video (or while waiting for rank 1), unless torchrun stopped it first
    assert re.search(r"\(rank 0 of 2\): stopped because rank 1: \S*c\.mp4: the stylizer: ValueError: planted failure",
                     run.stderr) or "interrupted (SIGTERM) (rank 0 of 2)" in run.stderr
    # no result: the record stays the "running" one, to be resumed
    assert "result" not in json.loads((out / "stylize.json").read_text())
    assert json.loads((out / ".stlens-run.json").read_text())["status"] == "running"
    assert not (out / "style_1" / "c").exists()
