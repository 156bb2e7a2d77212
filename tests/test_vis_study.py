"""benchmarks/vis_study.py: the tables are mean ± sd over seeds of what the run folders hold, and a step whose run
folder is complete is skipped (the study resumes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from vis_study import Settings, collect, complete, markdown, run_one  # noqa: E402


def _mark(folder: Path, verb: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".stlens-run.json").write_text(json.dumps({"verb": verb, "status": "complete", "files": {}}))


def fake_run(out: Path, world: str, seed: int, stage3: float, decoder: float, ap: float, dominant: float,
             control: float) -> None:
    root = out / "runs" / f"{world}-s{seed}"
    for verb in ("train", "measure", "evaluate", "ablate"):
        _mark(root / verb, verb)
    layers = [{"layer": "stage3", "percent": {"dynamic": stage3, "static": 50.0 - stage3}},
              {"layer": "decoder.1", "percent": {"dynamic": decoder, "static": 50.0 - decoder}}]
    (root / "measure" / "result.json").write_text(json.dumps({"layers": layers}))
    (root / "evaluate" / "evaluation.json").write_text(json.dumps({"metrics": {"ap": ap, "ap50": 2 * ap,
                                                                               "ap75": ap / 2}}))
    factor = "dynamic" if world == "motion" else "static"
    rows = [{"select": "none", "drop_ap": 0.0}, {"select": factor, "drop_ap": dominant},
            {"select": f"random-least-{factor}", "drop_ap": control}]
    (root / "ablate" / "ablation.json").write_text(json.dumps({"rows": rows}))


def test_tables_are_mean_and_sd_over_seeds(tmp_path):
    s = Settings.quick()
    s.seeds, s.depth = [0, 1], 2
    fake_run(tmp_path, "motion", 0, stage3=10.0, decoder=20.0, ap=0.2, dominant=0.10, control=0.02)
    fake_run(tmp_path, "motion", 1, stage3=14.0, decoder=30.0, ap=0.4, dominant=0.20, control=0.04)
    summary = collect(s, tmp_path)["motion"]
    assert summary["layers"]["decoder.1"]["dynamic"]["mean"] == pytest.approx(25.0)
    assert summary["layers"]["decoder.1"]["dynamic"]["sd"] == pytest.approx(5.0)  # population sd of 20, 30
    assert summary["queries_minus_backbone_dynamic"]["values"] == pytest.approx([10.0, 16.0])
    assert summary["ap"]["ap50"]["mean"] == pytest.approx(0.6)
    assert summary["drop_ap"]["dominant"]["mean"] == pytest.approx(0.15)
    assert summary["drop_ap"]["control"]["mean"] == pytest.approx(0.03)
    text = markdown(s, collect(s, tmp_path), {})
    assert "| decoder.1 | 25.0 ± 5.0 | 25.0 ± 5.0 |" in text
    assert collect(s, tmp_path)["appearance"]["ap"]["ap"]["n"] == 0  # nothing run there: no numbers, no error


def test_complete_steps_are_skipped(tmp_path, monkeypatch):
    s = Settings.quick()
    fake_run(tmp_path, "motion", 0, 10.0, 20.0, 0.2, 0.1, 0.0)
    import stlens

    def refuse(*args, **kwargs):
        raise AssertionError("a complete step ran again")

    for verb in ("train", "measure", "evaluate", "ablate"):
        monkeypatch.setattr(stlens, verb, refuse)
    log: dict[str, float] = {}
    run_one(s, tmp_path, "motion", 0, log)
    assert log == {}
    assert complete(tmp_path / "runs" / "motion-s0" / "train", "train")
    assert not complete(tmp_path / "runs" / "motion-s0" / "train", "measure")
