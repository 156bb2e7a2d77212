"""stlens perturb --dataset-report: the verdict rules by hand, rows copied from the runs, refusals, and the CLI end to
end on the bundled models' synth worlds (known answers) and on an annotation-file dataset."""

from __future__ import annotations

import csv
import json
import math

import pytest

import stlens
from stlens.cli import main
from stlens.errors import StlensError
from stlens.perturb.dataset import dataset_report, dataset_verdict, load_dataset_report, run_verdict
from stlens.perturb.result import PerturbResult

pytestmark = pytest.mark.usefixtures("one_thread")
NAN = float("nan")


def test_run_verdict_by_hand():
    assert run_verdict(0.9, 0.6, 1.0) == "static"
    assert run_verdict(0.9, 0.5, 1.0) == "static"  # the bound itself counts
    assert run_verdict(0.1, -0.1, 0.49) == "dynamic"
    assert run_verdict(0.5, 0.3, 0.7) == "undecided"
    assert run_verdict(NAN, NAN, NAN) == "not above chance"
    assert run_verdict(0.7, 0.65, 0.8, threshold=0.7) == "undecided"


def test_dataset_verdict_by_hand():
    assert dataset_verdict(["static", "static", "not above chance"]) == "static-biased"
    assert dataset_verdict(["dynamic"]) == "dynamic"
    assert dataset_verdict(["static", "dynamic"]) == "models disagree"
    assert dataset_verdict(["static", "undecided"]) == "models disagree"
    assert dataset_verdict(["not above chance", "not above chance"]) == "undetermined"


def fake_run(model: str, data: str, freeze: tuple, shuffle: tuple, clean: float = 0.9,
             names: tuple = ("clean", "freeze", "shuffle")) -> PerturbResult:
    """A PerturbResult with the given freeze / shuffle retention (value, low, high)."""
    values = {"freeze": freeze, "shuffle": shuffle, "clean": (1.0, 1.0, 1.0)}
    rows = [{"perturbation": n, "kind": "motion", "metric": "top1", "score": clean if n == "clean" else 0.5,
             "score_lo": clean - 0.05 if n == "clean" else 0.4, "score_hi": clean + 0.05 if n == "clean" else 0.6,
             "retention": values[n][0], "retention_lo": values[n][1], "retention_hi": values[n][2],
             "chance": 0.125, "clips": 64} for n in names]
    return PerturbResult(settings={"model": model, "weights": None, "data": data}, metrics=["top1"], rows=rows)


def test_rows_are_the_runs_numbers_and_the_verdicts_follow(tmp_path):
    a = fake_run("stlens:a", "synth:x", (0.8, 0.6, 0.95), (0.9, 0.8, 1.0))
    b = fake_run("stlens:b", "synth:x", (0.7, 0.55, 0.85), (NAN, NAN, NAN))
    ref = fake_run("stlens:m", "synth:motion", (0.0, -0.05, 0.05), (0.3, 0.2, 0.4))
    report = dataset_report([a, b], reference=ref, out=tmp_path / "ds")
    assert report.verdict == "static-biased" and report.reference_verdict == "dynamic"
    assert [r["role"] for r in report.rows] == ["model", "model", "reference"]
    assert report.rows[0]["freeze_lo"] == 0.6 and report.rows[1]["freeze_hi"] == 0.85
    assert report.rows[0]["clean"] == 0.9 and report.rows[0]["chance"] == 0.125 and report.rows[0]["clips"] == 64
    assert math.isnan(report.rows[1]["shuffle"])
    with (tmp_path / "ds" / "dataset.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["verdict"] for r in rows] == ["static", "static", "dynamic"] and rows[1]["shuffle"] == "nan"
    doc = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert doc["format_version"] >= 1 and doc["verdict"] == "static-biased" and doc["rows"][1]["shuffle"] is None
    loaded = load_dataset_report(tmp_path / "ds")
    assert loaded.verdict == "static-biased" and loaded.rows[2]["freeze"] == 0.0
    assert "static-biased" in report.table() and (tmp_path / "ds" / "dataset.png").stat().st_size > 1000

    not_dynamic = fake_run("stlens:m", "synth:motion", (0.6, 0.3, 0.9), (0.3, 0.2, 0.4))
    assert "does not show" in dataset_report([a], reference=not_dynamic).reference_verdict


def test_refusals_name_the_argument(tmp_path):
    a = fake_run("stlens:a", "synth:x", (0.8, 0.6, 0.95), (0.9, 0.8, 1.0))
    with pytest.raises(StlensError, match="different datasets"):
        dataset_report([a, fake_run("stlens:b", "synth:y", (0.8, 0.6, 0.9), (0.8, 0.6, 0.9))])
    with pytest.raises(StlensError, match="no shuffle rows"):
        dataset_report([fake_run("stlens:b", "synth:x", (0.8, 0.6, 0.9), (0, 0, 0), names=("clean", "freeze"))])
    with pytest.raises(StlensError, match="`reference` is a run on synth:x"):
        dataset_report([a], reference=a)
    with pytest.raises(StlensError, match="`freeze_threshold`"):
        dataset_report([a], freeze_threshold=1.0)
    with pytest.raises(StlensError, match="`runs`: .*not a folder written by stlens perturb"):
        dataset_report([tmp_path], out=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # nothing written when the runs cannot be read


N = 32


def perturb_run(tmp_path, model: str, world: str) -> str:
    out = tmp_path / f"{model}-{world}"
    assert main(["perturb", "--model", f"stlens:{model}", "--weights", f"bundled:{model}-{world}", "--data",
                 f"synth:{world}?split=test&n={N}&seed=5", "--perturbations", "freeze,shuffle", "--bootstrap", "200",
                 "--quiet", "--out", str(out)]) == 0
    return str(out)


def test_cli_known_answers_on_the_synth_worlds(tmp_path, capsys):
    """The appearance world comes out static-biased, the motion reference dynamic (bundled i3d models)."""
    appearance = perturb_run(tmp_path, "i3d", "appearance")
    motion = perturb_run(tmp_path, "i3d", "motion")
    out = tmp_path / "report"
    assert main(["perturb", "--dataset-report", appearance, "--reference", motion, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "static-biased" in printed and "dataset.csv" in printed
    report = stlens.perturb.load_dataset_report(out)
    assert report.verdict == "static-biased" and report.reference_verdict == "dynamic"
    model, reference = report.rows
    assert model["freeze_lo"] >= 0.5 and reference["freeze_hi"] < 0.5
    assert main(["perturb", "--dataset-report", motion, "--quiet", "--out", str(tmp_path / "motion")]) == 0
    assert stlens.perturb.load_dataset_report(tmp_path / "motion").verdict == "dynamic"
    # run-folder rules: a complete report is not replaced without --overwrite
    assert main(["perturb", "--dataset-report", appearance, "--quiet", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "named"), [
    (["--dataset-report", "RUN", "--model", "stlens:i3d"], "--model"),
    (["--model", "stlens:i3d", "--data", "synth:motion", "--reference", "RUN"], "--reference"),
    (["--model", "stlens:i3d"], "--data"),
    (["--dataset-report", "MISSING"], "--dataset-report"),
])
def test_cli_refusals_exit_2_naming_the_option(tmp_path, capsys, argv, named):
    argv = [str(tmp_path / a) if a in ("RUN", "MISSING") else a for a in argv]
    assert main(["perturb", *argv, "--quiet", "--out", str(tmp_path / "out")]) == 2
    assert named in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_annotation_file_dataset_with_a_model_at_chance(tmp_path, small_video, capsys):
    """Any annotation-file dataset: a random model is not above chance, so the dataset is undetermined."""
    data = tmp_path / "data"
    for name in ("jump/a.mp4", "jump/b.mp4", "run/c.mp4", "run/d.mp4"):
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(small_video.read_bytes())
    annotations = tmp_path / "val_list_videos.txt"
    annotations.write_text("jump/a.mp4 0\njump/b.mp4 0\nrun/c.mp4 1\nrun/d.mp4 1\n")
    run = tmp_path / "run"
    assert main(["perturb", "--model", "stlens:c2d?classes=2&width=8", "--frames", "4", "--size", "32", "--data",
                 f"{annotations}?root={data}", "--perturbations", "freeze,shuffle", "--bootstrap", "50", "--quiet",
                 "--out", str(run)]) == 0
    assert main(["perturb", "--dataset-report", str(run), "--quiet", "--out", str(tmp_path / "ds")]) == 0
    report = stlens.perturb.load_dataset_report(tmp_path / "ds")
    assert report.rows[0]["data"] == f"{annotations}?root={data}"
    assert report.rows[0]["verdict"] == "not above chance" and report.verdict == "undetermined"


def test_report_shows_the_dataset_report_and_skips_a_damaged_one(tmp_path):
    from stlens.report import build_report

    a = fake_run("stlens:<b>a</b>", "synth:x", (0.8, 0.6, 0.95), (0.9, 0.8, 1.0))
    ref = fake_run("stlens:m", "synth:motion", (0.0, -0.05, 0.05), (0.3, 0.2, 0.4))
    dataset_report([a], reference=ref, out=tmp_path / "good")
    dataset_report([a], out=tmp_path / "bad")
    document = tmp_path / "bad" / "dataset.json"
    document.write_text(document.read_text().replace('"verdict": "static-biased"', '"verdict": "dynamic"'))
    html = build_report([tmp_path / "good", tmp_path / "bad"], tmp_path / "report.html").read_text()
    assert "dataset report: synth:x" in html and "<strong>static-biased</strong>" in html
    assert "[0.600, 0.950]" in html and "&lt;b&gt;a&lt;/b&gt;" in html and "<b>a</b>" not in html
    assert "data:image/png;base64," in html
    skipped = html[html.index("Skipped"):] if "Skipped" in html else html[html.lower().index("skipped"):]
    assert str(tmp_path / "bad") in skipped and "dataset.json" in skipped
