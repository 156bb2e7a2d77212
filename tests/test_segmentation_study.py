"""benchmarks/segmentation_study.py: the tables are mean ± sd over seeds, with unit shares = count / channels; an
interrupted verb stops the study as an interrupt (exit 130), a failed one as a failure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from segmentation_study import Run, Settings, build_tables, study_settings  # noqa: E402


def fake_run(out: Path, variant: str, seed: int, dynamic: int, miou: float, drop: float) -> None:
    """Complete measure, eval and ablate steps of one (variant, seed), with the files the study reads."""
    run = Run(out, variant, seed)
    run.measure.mkdir(parents=True)
    layers = []
    for k in (1, 2, 3, 4):
        units = {"dynamic": dynamic, "static": 8 - dynamic, "joint": 0, "none": 0, "dead": 0}
        layers.append({"layer": f"fusion.stage{k}", "channels": 8, "units": units,
                       "units_ci95": {c: [v, v] for c, v in units.items()},
                       "percent": {"dynamic": 10.0 * (seed + 1), "static": 40.0, "residual": 50.0},
                       "ci95": {"dynamic": [5.0, 15.0], "static": [35.0, 45.0]}})
    (run.measure / "result.json").write_text(json.dumps({"layers": layers}))
    for folder, verb in ((run.measure, "measure"), (run.ablate, "ablate")):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".stlens-run.json").write_text(json.dumps({"verb": verb, "status": "complete", "files": {}}))
    scores = {f"{m}@{t}": miou for m in ("miou", "msr") for t in ("0.5", "0.2")}
    run.eval.write_text(json.dumps({"worlds": {"motion": scores, "camouflage": scores}}))
    rows = ["layer,select,k,draw,mode,masked,miou,drop_miou", "fusion.stage4,none,0,0,zero,0,0.8,0.0",
            f"fusion.stage4,dynamic,25,0,zero,2,{0.8 - drop},{drop}",
            "fusion.stage4,random-least-dynamic,25,0,zero,2,0.7,0.1",
            "fusion.stage4,random-least-dynamic,25,1,zero,2,0.5,0.3"]
    (run.ablate / "ablation.csv").write_text("\n".join(rows) + "\n")
    (run.ablate / "ablation.json").write_text(json.dumps({"selections": [
        {"layer": "fusion.stage4", "select": "dynamic", "k": 25.0, "draw": 0, "channels": [0, 1]},
        {"layer": "fusion.stage4", "select": "random-least-dynamic", "k": 25.0, "draw": 0, "channels": [2, 3]}]}))


def test_tables_are_mean_and_sd_over_seeds(tmp_path):
    with pytest.raises(SystemExit, match="holds no study"):
        build_tables(tmp_path)
    s = Settings.quick()
    s.ks = [25]
    (tmp_path / "study.json").write_text(json.dumps(study_settings(s)))
    fake_run(tmp_path, "gated-recip", 0, dynamic=2, miou=0.4, drop=0.1)
    fake_run(tmp_path, "gated-recip", 1, dynamic=4, miou=0.6, drop=0.3)
    v = build_tables(tmp_path)["variants"]["gated-recip"]
    share = v["layers"]["fusion.stage2"]["share"]["dynamic"]
    assert share["values"] == [0.25, 0.5] and share["mean"] == pytest.approx(0.375)
    assert share["sd"] == pytest.approx(0.1767767, abs=1e-6)  # sample sd (ddof 1)
    assert v["layers"]["fusion.stage2"]["percent"]["dynamic"]["mean"] == pytest.approx(15.0)
    assert v["eval"]["camouflage"]["miou@0.2"]["mean"] == pytest.approx(0.5)
    cell = v["masking"]["fusion.stage4"]["drop_miou"]["25"]
    assert cell["dynamic"]["mean"] == pytest.approx(0.2)
    assert cell["random-least-dynamic"]["values"] == pytest.approx([0.2, 0.2])  # the mean over draws, per seed
    assert v["masking"]["fusion.stage4"]["degenerate"]["25"] == []
    tables = (tmp_path / "tables.md").read_text()
    assert "| gated-recip | 0,1 | 0.500 ± 0.141 |" in tables
    assert "37.5 ± 17.7" in tables
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "plots" / "masking.png").is_file()


def test_an_interrupted_verb_stops_the_study_as_interrupted_and_a_failed_one_as_failed(monkeypatch, capsys):
    import segmentation_study

    from stlens.errors import StlensError
    from stlens.interrupts import EXIT_INTERRUPTED, Interrupted

    def interrupted():
        raise KeyboardInterrupt  # as after Ctrl-C inside stlens.ablate

    with pytest.raises(Interrupted, match="in stlens ablate"):
        segmentation_study.step("ablate", interrupted)
    monkeypatch.setattr(segmentation_study, "main", lambda: segmentation_study.step("ablate", interrupted))
    assert segmentation_study.run_main() == EXIT_INTERRUPTED
    assert "interrupted (in stlens ablate); run the same command to resume" in capsys.readouterr().out

    class Partial:  # what stlens.measure returns when interrupted: its partial result, saved
        meta = {"interrupted": True}

    with pytest.raises(Interrupted, match="in stlens measure"):
        segmentation_study.step("measure", Partial)

    def failed():
        raise StlensError("`clips` must be ≥ 1")

    with pytest.raises(SystemExit, match=r"stlens.ablate failed: `clips` must be ≥ 1"):
        segmentation_study.step("ablate", failed)
