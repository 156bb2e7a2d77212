"""``stlens visualize`` end to end through the CLI on tiny zoo models: files written, sweep, two-stream, errors."""

from __future__ import annotations

import json

import av
import pytest
from PIL import Image

import stlens
from stlens.cli import main

TINY = ["--model", "stlens:i3d?width=4", "--frames", "4", "--size", "16", "--steps", "3", "--natural-clips", "2",
        "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_writes_every_output(tmp_path):
    out = tmp_path / "viz"
    assert main(["visualize", *TINY, "--target", "class:0-1", "--batch-size", "2", "--out", str(out)]) == 0
    for name in ("class_0", "class_1"):
        folder = out / name
        gif = Image.open(folder / "video.gif")
        assert gif.n_frames == 4 and gif.size == (128, 128)
        assert Image.open(folder / "flow_paper.gif").n_frames == 3
        assert Image.open(folder / "flow_wheel.gif").n_frames == 3
        with av.open(str(folder / "video.mp4")) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert sum(1 for _ in container.decode(stream)) == 4
        record = json.loads((folder / "result.json").read_text())
        assert record["status"] == "ok" and record["natural"]["clips"] == 2
        assert set(record["regularizers"]) == {"rgb.lp_norm", "rgb.spatial_tv", "rgb.temporal_variation",
                                               "rgb.range_bound"}
        assert record["frame_change_grey"] >= 0 and "direction_deg" in record["video_flow_opencv_dis"]
    mosaic = Image.open(out / "mosaic.png")
    assert mosaic.size[0] > 4 * 64 and mosaic.size[1] > 2 * 64
    summary = json.loads((out / "summary.json").read_text())
    assert [t["target"] for t in summary["targets"]] == ["class_0", "class_1"]
    assert summary["config"]["temporal_reg"] == [1.0]


def test_cli_temporal_sweep_and_top_dynamic(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "units.csv").write_text("layer,channel,r_dynamic,r_static,class\n"
                                   "stage1,0,0.1,0.9,static\nstage1,1,0.8,0.1,dynamic\nstage1,2,0.6,0.2,dynamic\n"
                                   "stage1,3,0.9,0.95,joint\n")
    (run / "result.json").write_text("{}")
    out = tmp_path / "sweep"
    code = main(["visualize", *TINY, "--layers", "stage1", "--target", "top-dynamic:2", "--from",
                 str(run / "result.json"), "--temporal-reg", "0,10", "--out", str(out)])
    assert code == 0
    for lam in ("0", "10"):
        names = sorted(p.name for p in (out / f"lambda_t={lam}").iterdir() if p.is_dir())
        assert names == ["stage1_ch1", "stage1_ch2"]
        record = json.loads((out / f"lambda_t={lam}" / "stage1_ch1" / "result.json").read_text())
        assert record["lambda_t"] == float(lam) and record["measured"]["class"] == "dynamic"


def test_two_stream_joint_rgb_and_flow(tmp_path):
    result = stlens.visualize("stlens:twostream?width=4", "class:2", frames=4, size=16, steps=3, natural_clips=2,
                              out=tmp_path / "ts")
    t = result.targets[0]
    assert t.flow.shape == (3, 16, 16, 2) and abs(t.flow).max() <= 20.0
    record = json.loads((tmp_path / "ts" / "class_2" / "result.json").read_text())
    assert "flow.temporal_variation" in record["regularizers"] and "direction_deg" in record["input_flow"]
    assert Image.open(tmp_path / "ts" / "class_2" / "flow_paper.gif").n_frames == 3


@pytest.mark.parametrize("extra, message", [
    (["--layers", "stage9", "--target", "channel:0"], "stage9"),
    (["--layers", "stage1", "--target", "channel:0-99"], "out of range"),
    (["--target", "class:42"], "class 42"),
    (["--target", "pixels:3"], "unknown target"),
    (["--layers", "stage1", "--target", "top-static:3"], "--from"),
    (["--target", "class:0", "--temporal-reg", "-1"], "temporal-reg"),
])
def test_cli_errors_exit_2(tmp_path, capsys, extra, message):
    assert main(["visualize", *TINY, *extra, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_same_seed_same_files_on_an_untrained_model(tmp_path):
    """The model's random weights follow --seed: two runs write byte-identical videos and mosaics."""
    import torch

    untrained = [*TINY[:TINY.index("--natural-clips")], "--natural-clips", "0", "--quiet", "--target", "class:0-1"]
    outs = []
    for k, seed in enumerate(("5", "5", "6")):
        torch.randn(k + 1)  # whatever ran before must not matter
        outs.append(tmp_path / f"run{k}")
        assert main(["visualize", *untrained, "--seed", seed, "--out", str(outs[-1])]) == 0
    first, again, other = outs
    for name in ("class_0/video.gif", "class_1/video.gif", "mosaic.png"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
        assert (first / name).read_bytes() != (other / name).read_bytes(), name
    records = [json.loads((out / "class_0" / "result.json").read_text()) for out in (first, again)]
    for record in records:
        record.pop("seconds_per_target")
    assert records[0] == records[1]


def test_python_seed_builds_the_same_untrained_model():
    import torch

    results = []
    for k in range(2):
        torch.randn(k + 1)
        results.append(stlens.visualize("stlens:i3d?width=4", "class:0", frames=4, size=16, steps=2,
                                        natural_clips=0, seed=1))
    assert (results[0].targets[0].rgb == results[1].targets[0].rgb).all()


def test_old_batch_spellings_still_work_and_warn(tmp_path, caplog):
    out = tmp_path / "old"
    with caplog.at_level("WARNING", logger="stlens"):
        assert main(["visualize", *TINY, "--target", "class:0-1", "--batch", "1", "--natural-clips", "0",
                     "--out", str(out)]) == 0
    assert "--batch is deprecated; use --batch-size" in caplog.text
    assert json.loads((out / "summary.json").read_text())["config"]["batch"] == 1
    with pytest.warns(FutureWarning, match="batch_size"):
        result = stlens.visualize("stlens:i3d?width=4", "class:0", frames=4, size=16, steps=1, natural_clips=0,
                                  batch=2)
    assert result.config["batch"] == 2
