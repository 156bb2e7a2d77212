"""Pair-quality check: metrics against hand-made cases and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stlens.cli import main
from stlens.pairs.quality import end_point_error, warp_back, warping_error


def test_end_point_error_by_hand():
    a = np.zeros((2, 3, 3, 2), dtype=np.float32)
    b = a.copy()
    b[..., 0] = 3.0
    b[..., 1] = 4.0
    assert end_point_error(a, b) == pytest.approx(5.0)


def test_warping_error_is_zero_for_an_exact_translation():
    rng = np.random.default_rng(0)
    texture = rng.uniform(0, 255, size=(40, 40)).astype(np.float32)
    frames = np.stack([np.roll(texture, shift=t, axis=1) for t in range(3)])  # 1 px right per frame
    backward = np.zeros((2, 40, 40, 2), dtype=np.float32)
    backward[..., 0] = -1.0  # pixel x at t+1 came from x − 1 at t
    assert np.allclose(warp_back(frames[0], backward[0])[:, 1:], frames[1][:, 1:])
    # only the first column (1 of 40) has no source pixel inside the frame
    assert warping_error(frames, backward) < 0.05 * warping_error(frames, np.zeros_like(backward))


def test_pairs_check_cli_on_real_video(tmp_path, small_video):
    out = tmp_path / "check.json"
    code = main(["pairs", "check", "--data", str(small_video), "--stylizer", "palette,identity", "--pairs", "2",
                 "--frames", "4", "--size", "32", "--examples", "--quiet", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    ident, pal = report["stylizers"]["identity"], report["stylizers"]["palette"]
    assert ident["flow_epe"] == 0.0 and ident["appearance_change"]["colour"] == 0.0
    assert abs(ident["temporal_flicker"]) < 1e-9
    assert pal["appearance_change"]["colour"] > 10
    assert 0 < report["shuffle"]["fraction_of_frames_moved"] <= 1
    assert (tmp_path / "check" / "palette_clip0.gif").is_file()


def always_fails(clip: np.ndarray, style: int) -> np.ndarray:
    """A user stylizer (module:test_quality:always_fails) with a bug: it fails on any clip."""
    raise ZeroDivisionError("a bug in the user's stylizer")


def test_pairs_check_workers_give_the_report_of_the_main_process(tmp_path, small_video):
    """palette and fourier are numpy and deterministic, so the reports are equal to the bit. (npr, OpenCV's filters,
    differed in the 3rd digit between the main process and a forked worker late in a long test session — not
    reproduced in a fresh process, nor by changing cv2's thread count — so it is not part of this comparison.)"""
    reports = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}.json"
        assert main(["pairs", "check", "--data", str(small_video), "--stylizer", "palette,fourier", "--clips", "3",
                     "--frames", "4", "--size", "32", "--example-gifs", "--workers", workers, "--quiet",
                     "--out", str(out)]) == 0
        reports[workers] = json.loads(out.read_text())
        assert (tmp_path / f"w{workers}" / "fourier_clip1.gif").is_file()  # written by a worker with --workers 2
    assert reports["2"] == reports["0"] and reports["0"]["clips"] == 3


def test_pairs_check_a_stylizer_failing_in_a_worker_is_one_clear_line(tmp_path, small_video, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "check.json"
    code = main(["pairs", "check", "--data", str(small_video), "--stylizer", "module:test_quality:always_fails",
                 "--pairs", "2", "--frames", "4", "--size", "32", "--workers", "2", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "ZeroDivisionError: a bug in the user's stylizer" in err and "Traceback" not in err.split(
        "stlens: error")[-1]
    assert not out.exists()
