"""stlens ablate end to end: a real measure run of the bundled i3d-motion, then ablate through the CLI — the files,
the rows, the selections checked against units.csv, the baseline on the same clips, workers and the mean-mode second
pass giving the same numbers, run-folder rules, interrupts, and every bad input as one clear line (exit 2)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import stlens
from stlens.ablate.selection import Units, select_channels
from stlens.cli import main
from stlens.errors import StlensError
from stlens.measure.result import read_units

MODEL = ["--model", "stlens:i3d", "--weights", "bundled:i3d-motion"]
DATA = "synth:motion?split=test&n=24&seed=3"
FAST = [*MODEL, "--data", DATA, "--layers", "stage3,stage4", "--k", "25,50", "--draws", "2", "--batch-size", "8",
        "--bootstrap", "50", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A measure run of the motion model on other clips (seed 11) than those ablate evaluates (seed 3)."""
    out = tmp_path_factory.mktemp("measured") / "m"
    assert main(["measure", *MODEL, "--data", "synth:motion?split=test&seed=11", "--pairs", "8", "--layers",
                 "stage3,stage4", "--bootstrap", "0", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def ablated(measured, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablated") / "a"
    assert main(["ablate", *FAST, "--from", str(measured), "--select", "dynamic,static,joint,random,"
                 "random-least-dynamic,random-least-static", "--mode", "zero,mean", "--out", str(out)]) == 0
    return out


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_run_folder_holds_every_condition_and_a_baseline_per_layer_and_mode(ablated):
    marker = json.loads((ablated / ".stlens-run.json").read_text())
    assert marker["verb"] == "ablate" and marker["status"] == "complete"
    assert set(marker["files"]) == {"ablation.csv", "per_class.csv", "ablation.json", "ablation.png"}
    rows = _rows(ablated / "ablation.csv")
    # per layer and mode: 1 baseline + 2 K × (3 ranked + 3 random × 2 draws)
    assert len(rows) == 2 * 2 * (1 + 2 * (3 + 3 * 2))
    assert {r["select"] for r in rows} == {"none", "dynamic", "static", "joint", "random", "random-least-dynamic",
                                            "random-least-static"}
    assert list(rows[0])[:12] == ["layer", "select", "k", "draw", "mode", "masked", "top1", "top1_low", "top1_high",
                                  "drop_top1", "drop_top1_low", "drop_top1_high"]
    assert "top5" in rows[0]  # 8 classes
    baselines = [r for r in rows if r["select"] == "none"]
    assert len(baselines) == 4 and len({r["top1"] for r in baselines}) == 1  # the same clips for every condition
    for r in rows:
        top1, drop = float(r["top1"]), float(r["drop_top1"])
        assert abs(float(baselines[0]["top1"]) - top1 - drop) < 1e-12  # drop = baseline − masked
        assert float(r["drop_top1_low"]) <= drop + 1e-12 <= float(r["drop_top1_high"]) + 2e-12
    doc = json.loads((ablated / "ablation.json").read_text())
    assert doc["settings"]["clips"] == 24 and doc["settings"]["modes"] == ["zero", "mean"]
    assert doc["run_id"] == marker["run_id"]
    classes = _rows(ablated / "per_class.csv")
    base_classes = [r for r in classes if r["select"] == "none" and r["layer"] == "stage3" and r["mode"] == "zero"]
    assert sum(int(r["clips"]) for r in base_classes) == 24
    assert (ablated / "ablation.png").stat().st_size > 10_000


def test_the_masked_channels_follow_the_ranking_of_the_units_csv(ablated, measured):
    units = read_units(measured / "units.csv")
    doc = json.loads((ablated / "ablation.json").read_text())
    for s in doc["selections"]:
        entries = units[s["layer"]]
        layer = Units(s["layer"], np.array([e[1] for e in entries]), np.array([e[2] for e in entries]),
                      tuple(e[3] for e in entries))
        assert tuple(s["channels"]) == select_channels(layer, s["select"], s["k"], s["draw"], seed=0).channels
        dead = {e[0] for e in entries if e[3] == "dead"}
        assert not dead & set(s["channels"])
        assert len(s["channels"]) == min(s["asked"], len(entries) - len(dead))


def test_the_python_api_gives_the_cli_numbers(ablated, measured):
    result = stlens.ablate("stlens:i3d", DATA, measured, weights="bundled:i3d-motion", layers=["stage4"],
                           select=["dynamic", "random"], k=[25, 50], draws=2, mode="mean", batch_size=8, bootstrap=50,
                           progress=False, hold_bytes=0)  # mean mode decoding the clips again for its second pass
    frame = result.to_frame()
    cli = [r for r in _rows(ablated / "ablation.csv") if r["layer"] == "stage4" and r["mode"] == "mean"
           and r["select"] in ("none", "dynamic", "random")]
    assert len(frame) == len(cli) == 1 + 2 + 2 * 2
    for r in cli:
        same = (frame["select"] == r["select"]) & (frame["k"] == float(r["k"])) & (frame["draw"] == int(r["draw"]))
        mine = frame[same]
        assert float(mine["top1"].iloc[0]) == float(r["top1"])
    figure = result.plot()
    assert len(figure.axes) >= 1


def test_workers_give_the_same_files(measured, tmp_path):
    files = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert main(["ablate", *FAST, "--from", str(measured), "--select", "dynamic,random", "--k", "50",
                     "--workers", workers, "--out", str(out)]) == 0
        files[workers] = (out / "ablation.csv").read_text(), (out / "per_class.csv").read_text()
    assert files["0"] == files["2"]


def test_a_bug_in_clip_making_in_a_worker_is_one_line_naming_the_clips(measured, tmp_path, monkeypatch, capsys):
    from stlens.video.labelled import SynthClips

    item = SynthClips.item

    def broken_from_clip_8(self, index):  # not a StlensError: a bug of the clip source, inherited by forked workers
        if index >= 8:
            raise ValueError("bad clip")
        return item(self, index)

    monkeypatch.setattr(SynthClips, "item", broken_from_clip_8)
    out = tmp_path / "a"
    code = main(["ablate", *FAST, "--from", str(measured), "--select", "dynamic", "--k", "50", "--workers", "2",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "stlens: error: clips 8..15: ValueError: bad clip" in err and "Traceback" not in err
    assert not (out / "ablation.csv").exists()


def test_a_second_run_is_refused_and_an_interrupt_keeps_the_complete_one(measured, tmp_path, capsys, monkeypatch):
    out = tmp_path / "a"
    args = ["ablate", *FAST, "--from", str(measured), "--select", "dynamic", "--k", "50", "--out", str(out)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".stlens.lock"}
    capsys.readouterr()
    assert main(args) == 2
    assert "holds a complete" in capsys.readouterr().err
    from stlens.ablate import run as ablate_run

    calls = {"n": 0}
    real = ablate_run._Engine._forward

    def interrupted(self, inputs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, inputs)

    monkeypatch.setattr(ablate_run._Engine, "_forward", interrupted)
    assert main([*args, "--overwrite"]) == 130
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".stlens.lock"}
    assert after == before and not [p for p in out.iterdir() if p.name.startswith(".stlens-staging")]


def test_units_of_another_model_are_refused_before_the_data_is_read(tmp_path, capsys):
    other = tmp_path / "narrow"
    assert main(["measure", "--model", "stlens:i3d?width=4", "--data", "synth:motion?split=test&seed=11", "--pairs",
                 "8", "--layers", "stage3", "--bootstrap", "0", "--out", str(other), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["ablate", *MODEL, "--data", DATA, "--layers", "stage3", "--k", "50", "--from", str(other), "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "layer 'stage3' of stlens:i3d has 64 channels but the units of --from list 16" in err, err
    assert "Traceback" not in err and not (tmp_path / "x" / "ablation.csv").exists()


@pytest.mark.parametrize("extra, message", [
    (["--k", "0,50"], "--k must be in (0, 100]"),
    (["--k", "150"], "--k must be in (0, 100]"),
    (["--select", "dynamic,fast"], "--select: unknown selection 'fast'"),
    (["--mode", "noise"], "--mode must be zero and/or mean"),
    (["--layers", "stage2"], "layer 'stage2' is not in the units of"),
    (["--draws", "0"], "--draws must be ≥ 1"),
])
def test_bad_options_are_one_clear_line(measured, tmp_path, capsys, extra, message):
    assert main(["ablate", *FAST, "--from", str(measured), "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_data_without_labels_is_refused_naming_what_is_missing(measured, tmp_path, capsys):
    assert main(["ablate", *MODEL, "--data", "sample:", "--from", str(measured), "--layers", "stage3", "--k", "50",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has no labels, and this needs labelled clips" in err, err


class NoChannels(torch.nn.Module):
    """A model whose layer 'score' gives one number per clip (B,): no channel axis."""

    def __init__(self):
        super().__init__()
        self.score = torch.nn.Identity()

    def forward(self, x):
        return torch.stack([self.score(x.mean(dim=(1, 2, 3, 4))), -x.mean(dim=(1, 2, 3, 4))], dim=1)


def test_a_layer_without_a_channel_axis_is_refused(tmp_path):
    units = tmp_path / "units.csv"
    units.write_text("layer,channel,r_dynamic,r_static,class\nscore,0,0.5,0.1,dynamic\n")
    with pytest.raises(stlens.StlensError, match="layer 'score' gives an output of shape \\(1,\\): no channel axis"):
        stlens.ablate(NoChannels(), "synth:motion?split=test&n=4", units, k=[50], progress=False)


def test_a_two_stream_model_is_masked_through_its_rgb_and_flow_inputs(tmp_path):
    measured = tmp_path / "m"
    model = ["--model", "stlens:twostream", "--weights", "bundled:twostream-motion"]
    assert main(["measure", *model, "--data", "synth:motion?split=test&seed=11", "--pairs", "8", "--layers",
                 "fusion", "--bootstrap", "0", "--out", str(measured), "--quiet"]) == 0
    out = tmp_path / "a"
    assert main(["ablate", *model, "--data", "synth:motion?split=test&n=16&seed=3", "--from", str(measured),
                 "--select", "joint", "--k", "100", "--mode", "zero", "--bootstrap", "0", "--out", str(out),
                 "--quiet"]) == 0
    rows = {r["select"]: r for r in _rows(out / "ablation.csv")}
    fused = read_units(measured / "units.csv")["fusion"]
    assert int(rows["joint"]["masked"]) == len(fused) - sum(c == "dead" for *_, c in fused)
    # every live fused channel silenced: the classifier sees (nearly) a constant and falls towards one class
    assert float(rows["none"]["top1"]) >= 0.9 and float(rows["joint"]["top1"]) <= 0.5


def test_evaluating_the_measured_clips_is_warned_about(measured, tmp_path, caplog):
    assert main(["ablate", *MODEL, "--data", "synth:motion?split=test&seed=11", "--clips", "8", "--from",
                 str(measured), "--layers", "stage4", "--select", "dynamic", "--k", "50", "--bootstrap", "0",
                 "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert "ablate evaluates the clips the units were measured on" in caplog.text


def test_a_segmenter_is_scored_by_miou_and_msr(tmp_path):
    model = ["--model", "stlens:avos?fusion=gated&cc=recip&width=4"]
    measured = tmp_path / "m"
    assert main(["measure", *model, "--data", "synth:motion?task=segment&frames=8&size=64&seed=11", "--pairs", "8",
                 "--layers", "fusion.stage3", "--bootstrap", "0", "--out", str(measured), "--quiet"]) == 0
    out = tmp_path / "a"
    assert main(["ablate", *model, "--data", "synth:motion?task=segment&frames=8&size=64&split=test&n=6",
                 "--from", str(measured), "--select", "dynamic", "--k", "100", "--mask-threshold", "0.2",
                 "--bootstrap", "20", "--out", str(out), "--quiet"]) == 0
    rows = _rows(out / "ablation.csv")
    assert {"miou", "msr", "drop_miou", "drop_msr_high"} <= set(rows[0]) and "top1" not in rows[0]
    doc = json.loads((out / "ablation.json").read_text())
    assert doc["metrics"] == ["miou", "msr"] and doc["settings"]["mask_threshold"] == 0.2
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in rows)


def test_units_is_the_deprecated_spelling_of_from_run(measured):
    """``units`` means what one sample is in ``measure``; in ``ablate`` the measure run is ``from_run``."""
    with pytest.warns(FutureWarning, match="from_run"):
        old = stlens.ablate("stlens:i3d", DATA, units=measured, weights="bundled:i3d-motion", layers=["stage4"],
                            select="dynamic", k=[50], clips=8, bootstrap=0, progress=False)
    new = stlens.ablate("stlens:i3d", DATA, from_run=measured, weights="bundled:i3d-motion", layers=["stage4"],
                        select="dynamic", k=[50], clips=8, bootstrap=0, progress=False)
    assert repr(old.rows) == repr(new.rows)  # NaN-safe: bootstrap=0 leaves the intervals NaN
    with pytest.raises(StlensError, match="`from_run` is required"):
        stlens.ablate("stlens:i3d", DATA, weights="bundled:i3d-motion", progress=False)
    with pytest.raises(StlensError, match="`from_run` only"):
        stlens.ablate("stlens:i3d", DATA, measured, units=measured, progress=False)
