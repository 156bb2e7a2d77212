"""One owner of the measure run folder (stlens.measure.result): a result saved from Python is as complete as one saved
by the CLI, and what is saved loads back."""

from __future__ import annotations

import json

import pytest

import stlens
from stlens.cli import main


def test_a_result_saved_from_python_has_its_command_and_pair_examples(tmp_path):
    handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion")
    pairs = stlens.make_pairs(stlens.open_data("synth:motion?split=test&n=32&seed=0"), handle.input, 8, seed=0)
    result = stlens.measure(handle, pairs, "stage4", batch_size=4, bootstrap=20, progress=False)
    result.save(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["command"] == "measure" and config["input"]["frames"] == handle.input.frames
    args = config["arguments"]
    assert (args["model"], args["weights"], args["pairs"], args["layers"]) == ("stlens:i3d", "bundled:i3d-motion", 8,
                                                                               "stage4")
    loaded = stlens.load_result(tmp_path / "run")
    assert loaded.config == config and loaded.to_dict() == json.loads((tmp_path / "run" / "result.json").read_text())
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.html"), "--examples", "1"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "unknown (config.json names no command)" not in page
    assert "stlens measure --model stlens:i3d --weights bundled:i3d-motion" in page
    assert "data:image/gif;base64," in page  # the example pairs were remade from the saved config


def test_visualize_reads_units_through_the_store(tmp_path):
    from stlens.measure.result import units_of

    handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion")
    pairs = stlens.make_pairs(stlens.open_data("synth:motion?split=test&n=32&seed=0"), handle.input, 8, seed=0)
    result = stlens.measure(handle, pairs, "stage3", batch_size=4, bootstrap=0, progress=False)
    result.save(tmp_path / "run")
    rows = units_of(tmp_path / "run" / "result.json", "stage3")
    assert [r["channel"] for r in rows] == list(range(result["stage3"].channels))
    assert [r["r_dynamic"] for r in rows] == [float(v) for v in result["stage3"].r_dynamic]


def test_old_option_spellings_still_work_and_warn(tmp_path, small_video, caplog, capsys):
    """One name per concept: `pairs check --clips` (was --n and --pairs, which means pairs per factor everywhere
    else) are deprecated aliases; `stylize --size` (the crop everywhere else) is an error naming --short-side."""
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(small_video, data / "a.mp4")
    with pytest.raises(SystemExit) as exit_info:
        main(["stylize", "--data", str(data), "--stylizer", "palette", "--styles", "1", "--frames-max", "2",
              "--size", "24", "--quiet", "--out", str(tmp_path / "styled")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--size was removed from this command: use --short-side" in err
    assert not (tmp_path / "styled").exists()
    with caplog.at_level("WARNING", logger="stlens"):
        assert main(["pairs", "check", "--data", str(data), "--stylizer", "palette", "--n", "1", "--frames", "4",
                     "--size", "32", "--quiet", "--out", str(tmp_path / "check.json")]) == 0
    assert "--n is deprecated; use --clips" in caplog.text
    assert json.loads((tmp_path / "check.json").read_text())["clips"] == 1


def test_measure_cli_on_every_kind_of_source_records_its_stylizer(tmp_path):
    common = ["--pairs", "8", "--bootstrap", "0", "--layers", "stage4", "--quiet"]
    assert main(["measure", "--model", "stlens:i3d", "--weights", "bundled:i3d-motion", "--data",
                 "synth:motion?split=test&n=32&seed=0", *common, "--out", str(tmp_path / "synth")]) == 0
    assert json.loads((tmp_path / "synth" / "result.json").read_text())["stylizer"] == "rerender"
    assert main(["measure", "--model", "stlens:i3d", "--weights", "bundled:i3d-motion", "--data", "sample:",
                 "--frames", "4", *common, "--out", str(tmp_path / "sample")]) == 0
    assert json.loads((tmp_path / "sample" / "result.json").read_text())["stylizer"] == "palette"
