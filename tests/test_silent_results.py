"""Silent wrong results (issue 13, part 7): 1-frame clips, layers that give no per-video tensor, a bad video sorted
last, truncated videos, random-init models and a meaningless ratio to the natural mean — each now refused, named or
said out loud. Through the CLI on small real files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_mp4
from PIL import Image
from torch import nn

from stlens.cli import main
from stlens.video.io import decode_video

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "module:conftest:tiny_video_net"
ODD = "module:test_silent_results:odd_net"
FAST = ["--frames", "4", "--size", "32", "--pairs", "8", "--batch-size", "8", "--bootstrap", "0", "--quiet"]


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ---------------------------------------------------------------------------------------------------- a model with
#                                                                      layers that give no per-video tensor output
class Describe(nn.Module):
    """Returns a dict without tensors (a non-tensor output)."""

    def forward(self, x: torch.Tensor) -> dict:
        return {"shape": list(x.shape)}


class OddNet(nn.Module):
    """stem (5-D, fine) → describe (not a tensor) → frame_conv on (B·T, C, H, W) frames (first axis not the batch)
    → head (fine); ``unused`` is never called."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(3, 6, 3, padding=1)
        self.describe = Describe()
        self.frame_conv = nn.Conv2d(6, 6, 3, padding=1)
        self.unused = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        self.describe(x)
        b, c, t, h, w = x.shape
        frames = self.frame_conv(x.transpose(1, 2).reshape(b * t, c, h, w))
        x = frames.reshape(b, t, c, h, w).transpose(1, 2)
        return self.head(x.mean(dim=(2, 3, 4)))


def odd_net() -> nn.Module:
    torch.manual_seed(0)
    return OddNet()


# ------------------------------------------------------------------------------------------------------- 1-frame clips
def test_one_frame_clips_are_refused_before_any_work(tmp_path, small_video, capsys):
    out = tmp_path / "out"
    args = ["measure", "--model", TINY, *FAST, "--data", str(small_video), "--out", str(out)]
    args[args.index("--frames") + 1] = "1"
    assert main(args) == 2
    err = error_of(capsys)
    assert "at least 2 frames" in err and "--frames 1" in err
    assert not (out / "result.json").exists()


# ------------------------------------------------------------------------------------------ layers with no tensor out
@pytest.mark.parametrize(("layers", "named", "why"), [
    ("stem,describe", "describe", "the output is a dict without tensors, not a tensor"),
    ("unused", "unused", "never called in the forward"),
    ("stem,frame_conv", "frame_conv", "first axis is not the 16 videos of the batch"),
])
def test_a_layer_asked_by_name_that_gives_no_per_video_tensor_is_named(tmp_path, small_video, capsys, layers,
                                                                        named, why):
    out = tmp_path / "out"
    code = main(["measure", "--model", ODD, *FAST, "--layers", layers, "--data", str(small_video), "--out", str(out)])
    err = error_of(capsys)
    assert code == 2, err
    assert f"'{named}'" in err and why in err, err
    assert "pair source was empty" not in err
    assert not (out / "result.json").exists()


def test_default_layers_that_give_no_per_video_tensor_are_skipped_with_one_warning(tmp_path, small_video, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="stlens"):
        code = main(["measure", "--model", ODD, *FAST, "--data", str(small_video), "--out", str(out)])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert [layer["layer"] for layer in result["layers"]] == ["stem", "head"]
    skipping = [r.getMessage() for r in caplog.records if "layer(s), which give no per-video tensor" in r.getMessage()]
    assert len(skipping) == 1
    assert all(name in skipping[0] for name in ("describe", "frame_conv (64, 6, 32, 32)", "unused"))


def test_timesformer_all_layers_skips_the_attention_internals(tmp_path, small_video, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="stlens"):
        code = main(["measure", "--model", "stlens:timesformer?dim=16&heads=2&depth=1", *FAST, "--layers", "all",
                     "--data", str(small_video), "--out", str(out)])
    assert code == 0
    layers = [layer["layer"] for layer in json.loads((out / "result.json").read_text())["layers"]]
    assert {"patch_embed", "blocks.0", "blocks.0.mlp", "head"} <= set(layers)
    assert not any("attn" in name or "norm_time" in name for name in layers)
    assert "blocks.0.attn_time (" in warnings_of(caplog) and "blocks.0.attn_space (" in warnings_of(caplog)


# -------------------------------------------------------------------------------------------------- shares of pairs
@pytest.fixture
def two_good_one_bad_last(tmp_path, small_video) -> Path:
    data = tmp_path / "videos"
    data.mkdir()
    shutil.copy(small_video, data / "a.mp4")
    shutil.copy(small_video, data / "b.mp4")
    (data / "zzz.mp4").write_bytes(b"this is not a video " * 50)
    return data


def test_a_bad_video_sorted_last_does_not_cost_its_share_of_pairs(tmp_path, two_good_one_bad_last, capsys):
    out = tmp_path / "out"
    args = ["measure", "--model", TINY, *FAST, "--data", str(two_good_one_bad_last), "--out", str(out)]
    args[args.index("--pairs") + 1] = "9"  # 3 per video if the bad one counted: only 6 would be made
    assert main(args) == 0, error_of(capsys)
    result = json.loads((out / "result.json").read_text())
    assert result["pairs"] == {"dynamic": 9, "static": 9}
    assert [Path(s["source"]).name for s in result["skipped"]] == ["zzz.mp4"]
    assert "cannot decode" in result["skipped"][0]["reason"]


def test_a_video_that_passes_the_probe_but_cannot_be_read_is_an_error_naming_it(tmp_path, small_video, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    shutil.copy(small_video, data / "a.mp4")
    folder = data / "b_frames"
    folder.mkdir()
    for t, frame in enumerate(decode_video(small_video, max_frames=8)):
        Image.fromarray(frame).save(folder / f"frame_{t:03d}.png")
    (folder / "frame_004.png").write_bytes(b"not a png")  # the folder counts 8 frames; the fifth cannot be read
    code = main(["measure", "--model", TINY, *FAST, "--data", str(data), "--out", str(tmp_path / "out")])
    err = error_of(capsys)
    assert code == 2
    assert "frame_004.png" in err and "cannot read image" in err


@pytest.mark.parametrize("tenths", [5, 6])
def test_a_truncated_mp4_is_used_with_a_warning_giving_the_frames_read(tmp_path, small_video, caplog, capsys,
                                                                      tenths):
    whole = write_mp4(tmp_path / "whole.mp4", decode_video(small_video), faststart=True)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * tenths // 10])
    read = len(decode_video(cut))  # PyAV's threaded decoder stops quietly at the cut
    assert 4 <= read < 40
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="stlens"):
        # in the main process, so that caplog sees the warning (a worker prints it to its own stderr)
        code = main(["measure", "--model", TINY, *FAST, "--workers", "0", "--data", str(cut), "--out", str(out)])
    assert code == 0, error_of(capsys)
    assert f"read only {read} of the 40 frames" in warnings_of(caplog)
    assert json.loads((out / "result.json").read_text())["pairs"] == {"dynamic": 8, "static": 8}


# ---------------------------------------------------------------------------------------------------- random weights
def test_a_random_init_measurement_says_so_in_terminal_result_and_report(tmp_path, small_video, capsys):
    random_run, trained_run = tmp_path / "random", tmp_path / "trained"
    assert main(["measure", "--model", "stlens:i3d?width=4", *FAST, "--data", str(small_video),
                 "--out", str(random_run)]) == 0
    err = error_of(capsys)
    assert "stlens: WARNING: stlens:i3d?width=4 has random weights (no --weights given)" in err
    assert json.loads((random_run / "result.json").read_text())["random_init"] is True

    assert main(["measure", "--model", TINY, *FAST, "--data", str(small_video), "--out", str(trained_run)]) == 0
    assert "random weights" not in error_of(capsys)  # a module: spec may hold trained weights: no warning
    assert json.loads((trained_run / "result.json").read_text())["random_init"] is None

    report = tmp_path / "report.html"
    assert main(["report", str(random_run), str(trained_run), "--examples", "0", "--out", str(report)]) == 0
    html = report.read_text()
    assert html.count('<p class="warn">Random weights:') == 1
    assert "<code>stlens:i3d?width=4</code> was measured without trained weights" in html
    assert html.count('<span class="warn">(random weights)</span>') == 1


# -------------------------------------------------------------------------------------------- ratio to natural mean
class Negative(nn.Module):
    """Activations that are negative on every natural clip: their mean is < 0, so a ratio to it means nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.nn.functional.softplus(x) - 1.0


class NegativeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(3, 4, 3, padding=1)
        self.negative = Negative()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.negative(self.stem(x)).mean(dim=(2, 3, 4)))


def negative_net() -> nn.Module:
    torch.manual_seed(0)
    return NegativeNet()


def test_visualize_writes_null_ratio_for_a_negative_natural_mean_and_the_report_shows_a_dash(tmp_path, small_video):
    out = tmp_path / "vis"
    assert main(["visualize", "--model", "module:test_silent_results:negative_net", "--frames", "4", "--size", "16",
                 "--layers", "negative", "--target", "channel:0", "--steps", "2", "--natural-clips", "2",
                 "--data", str(small_video), "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "negative_ch0" / "result.json").read_text())
    assert record["natural"]["mean"] < 0
    assert record["ratio_to_natural_mean"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"][0]["ratio_to_natural_mean"] is None
    report = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(report)]) == 0
    assert "ratio_to_natural_mean –" in report.read_text()
