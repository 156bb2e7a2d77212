"""``stlens demo --segmentation``: the bundled segmenters measured (every stream and fusion stage) and their fusion
units visualized with RGB and flow optimized together, end to end through the CLI."""

from __future__ import annotations

import csv
import json

import pytest

from stlens.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "seg"
    assert main(["demo", "--segmentation", "--pairs", "8", "--steps", "4", "--quiet", "--out", str(out)]) == 0
    return out


def test_every_fusion_stage_of_both_segmenters_is_measured(demo):
    summary = json.loads((demo / "summary.json").read_text())
    fusion = {(r["model"], r["layer"]) for r in summary["rows"] if r["layer"].startswith("fusion.")}
    assert fusion == {(m, f"fusion.stage{k}") for m in ("avos-concat-none", "avos-gated-recip") for k in (1, 2, 3, 4)}
    streams = {r["layer"].split(".")[0] for r in summary["rows"]}
    assert streams == {"app", "mot", "fusion"}
    result = json.loads((demo / "avos-gated-recip" / "segment" / "result.json").read_text())
    assert result["weights"] == "bundled:avos-gated-recip" and result["flow"] == "dis"
    text = (demo / "summary.md").read_text()
    assert "| avos-concat-none | segment | fusion.stage4 |" in text


def most(units: list[dict], kind: str, other: str) -> list[dict]:
    """The 2 units most ``kind``: those of that class first, then by r_kind − r_other, then by channel."""
    return sorted(units, key=lambda u: (u["class"] != kind, float(u[f"r_{other}"]) - float(u[f"r_{kind}"]),
                                        int(u["channel"])))[:2]


def test_visualized_units_are_the_measured_extremes_with_a_flow_input(demo):
    summary = json.loads((demo / "summary.json").read_text())
    for model in ("avos-concat-none", "avos-gated-recip"):
        with open(demo / model / "segment" / "units.csv", newline="") as handle:
            units = [r for r in csv.DictReader(handle) if r["layer"] == "fusion.stage3"]
        by_dynamic, by_static = most(units, "dynamic", "static"), most(units, "static", "dynamic")
        wanted = [f"fusion.stage3_ch{r['channel']}" for r in by_dynamic + by_static]
        shown = [v["target"] for v in summary["visualized"] if v["model"] == model]
        assert shown == wanted
        for name in shown:
            folder = demo / model / "visualize" / name
            assert (folder / "video.gif").is_file() and (folder / "flow_paper.gif").is_file()
            target = json.loads((folder / "result.json").read_text())
            assert target["input_flow"]["mean_magnitude"] > 0  # the flow stack was optimized, not zeros
    report = (demo / "report.html").read_text()
    assert "avos-gated-recip" in report and 'stream="fusion"' in report


@pytest.mark.parametrize("args, message", [
    (["--segmentation", "--steps", "0"], "--steps ≥ 1"),
    (["--steps", "8"], "--steps belongs to stlens demo --segmentation"),
])
def test_bad_demo_options_are_refused_before_work(tmp_path, capsys, args, message):
    assert main(["demo", *args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
