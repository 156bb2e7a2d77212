"""File format versions (docs/formats.md §0): every JSON stlens writes carries the integer ``format_version``; loaders
read every version up to ``FORMAT_VERSION`` (a file without the field is version 1, e.g. tests/fixtures/format_v1,
a measure run written before the field existed) and refuse a newer one naming both versions. Also: results print as
a short summary (``repr``) and escaped HTML."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import stlens
from stlens._version import FORMAT_VERSION, __version__
from stlens.ablate.result import AblationResult, load_ablation
from stlens.errors import StlensError
from stlens.files import check_format, read_json, read_versioned, versioned
from stlens.measure.layer import LayerResult
from stlens.measure.result import MeasureResult
from stlens.report.ablation import load_ablation as report_ablation
from stlens.report.tracks import load_track
from stlens.runs import MARKER, RunFolder, file_entry, read_marker
from stlens.train.evaluate import EvaluateResult, load_evaluation
from stlens.train.tracking import TrackResult

V1 = Path(__file__).parent / "fixtures" / "format_v1"
NEWER = FORMAT_VERSION + 1


def newer_message(path: Path) -> str:
    """The refusal of a file of format ``NEWER``, as a regex."""
    return (rf"{path}: format_version {NEWER} was written by a newer stlens \(this one reads up to "
            rf"{FORMAT_VERSION}\); upgrade stlens")


def rewrite(path: Path, change) -> None:
    """Edit the JSON at ``path`` with ``change(doc)`` and record the new file in the folder's marker (so that only the
    format, not the checksum, can refuse it)."""
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    marker_path = path.parent / MARKER
    if marker_path.is_file() and path.name != MARKER:
        marker = json.loads(marker_path.read_text())
        if path.name in marker["files"]:
            marker["files"][path.name] = file_entry(path)
            marker_path.write_text(json.dumps(marker))


def set_version(version):
    def change(doc: dict) -> None:
        doc["format_version"] = version
    return change


# ----------------------------------------------------------------------------------------------------- the helpers

def test_check_format_reads_a_missing_field_as_1_and_refuses_newer_or_non_integers(tmp_path):
    path = tmp_path / "x.json"
    assert check_format({"a": 1}, path) == 1
    assert check_format({"format_version": FORMAT_VERSION}, path) == FORMAT_VERSION
    with pytest.raises(StlensError, match=newer_message(path)):
        check_format({"format_version": NEWER}, path)
    for bad in ("2", 2.0, True, None, 0):
        with pytest.raises(StlensError, match=f"{path}: format_version .* is not a positive integer"):
            check_format({"format_version": bad}, path)
    assert list(versioned({"b": 1, "format_version": 1})) == ["format_version", "b"]
    assert versioned({"b": 1})["format_version"] == FORMAT_VERSION


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": [')
    with pytest.raises(StlensError, match=rf"{path}: damaged or truncated \(invalid JSON at line 1"):
        read_json(path)
    path.write_text("[1]")
    with pytest.raises(StlensError, match=f"{path}: not a thing"):
        read_versioned(path, "thing")
    with pytest.raises(StlensError, match=f"{tmp_path / 'none.json'}: cannot read"):
        read_json(tmp_path / "none.json")


def test_version_is_0_2_0_and_the_format_2():
    assert __version__ == stlens.__version__ == "0.2.0" and FORMAT_VERSION == 2


# ----------------------------------------------------------------------------------------------- measure run folder

def test_a_run_of_format_1_loads(tmp_path):
    doc = json.loads((V1 / "result.json").read_text())
    assert "format_version" not in doc and doc["stlens_version"] != __version__  # the fixture is what it claims
    result = stlens.load_result(V1)
    assert [r.layer for r in result.layers] == ["stage1", "stage2"]
    assert result.meta["stlens_version"] == doc["stlens_version"] and "format_version" not in result.meta
    assert result.run_id == read_marker(V1)["run_id"]
    assert len(result["stage2"].classes) == result["stage2"].channels == 32


def test_a_run_written_now_carries_the_format_and_reads_back(tmp_path):
    out = tmp_path / "again"
    stlens.load_result(V1).save(out)
    for name in ("result.json", "config.json", MARKER):
        assert json.loads((out / name).read_text())["format_version"] == FORMAT_VERSION, name
        assert next(iter(json.loads((out / name).read_text()))) == "format_version"
    assert "stlens_run" not in json.loads((out / MARKER).read_text())
    again = stlens.load_result(out)
    assert [r.percent for r in again.layers] == [r.percent for r in stlens.load_result(V1).layers]


@pytest.mark.parametrize("name", ["result.json", "config.json", MARKER])
def test_a_run_of_a_newer_format_is_refused_naming_both_versions(tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(V1, run)
    rewrite(run / name, set_version(NEWER))
    with pytest.raises(StlensError, match=newer_message(run / name)):
        stlens.load_result(run)


def test_a_non_integer_format_version_is_refused_naming_the_file(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(V1, run)
    rewrite(run / "result.json", set_version("two"))
    with pytest.raises(StlensError, match=f"{run / 'result.json'}: format_version 'two' is not a positive integer"):
        stlens.load_result(run)


# ------------------------------------------------------------------------------------------------------ run marker

def test_the_run_marker_carries_the_format_and_a_newer_one_is_refused(tmp_path):
    folder = RunFolder(tmp_path / "run", "measure")
    folder.claim()
    (folder.staging / "result.json").write_text("{}")
    folder.commit()
    marker = read_marker(tmp_path / "run")
    assert marker["format_version"] == FORMAT_VERSION and marker["verb"] == "measure"
    rewrite(tmp_path / "run" / MARKER, set_version(NEWER))
    with pytest.raises(StlensError, match=newer_message(tmp_path / "run" / MARKER)):
        read_marker(tmp_path / "run")
    assert read_marker(V1)["verb"] == "measure"  # format 1 (``stlens_run``, no format_version)


# --------------------------------------------------------------------------------------------------------- ablation

def ablation() -> AblationResult:
    rows = []
    for select, k, top1 in (("none", 0, 0.75), ("dynamic", 50, 0.5)):
        rows.append({"layer": "stage4", "select": select, "k": k, "draw": 0, "mode": "zero", "masked": k // 10,
                     "top1": top1, "top1_low": top1 - 0.1, "top1_high": top1 + 0.1, "drop_top1": 0.75 - top1,
                     "drop_top1_low": 0.0, "drop_top1_high": 0.3})
    settings = {"model": "module:<evil>:build", "weights": None, "data": "synth:motion", "clips": 8,
                "modes": ["zero"], "layers": ["stage4"], "metrics": ["top1"], "arguments": {}}
    return AblationResult(settings, ["top1"], {"top1": {"value": 0.75, "low": 0.65, "high": 0.85}}, rows,
                          [{"layer": "stage4", "select": "dynamic", "k": 50, "draw": 0, "channels": [1, 2, 3, 4, 5],
                            "asked": 5, "short": False}])


def test_ablation_json_carries_the_format_old_stlens_ablation_reads_newer_is_refused(tmp_path):
    out = tmp_path / "ablate"
    ablation().save(out)
    path = out / "ablation.json"
    doc = json.loads(path.read_text())
    assert doc["format_version"] == FORMAT_VERSION and "stlens_ablation" not in doc
    assert load_ablation(out).rows[1]["top1"] == 0.5 and report_ablation(out).doc["run_id"] == doc["run_id"]

    def as_format_1(doc: dict) -> None:
        del doc["format_version"]
        doc["stlens_ablation"] = 1

    rewrite(path, as_format_1)
    assert load_ablation(out).rows[1]["top1"] == 0.5 and report_ablation(out).doc["stlens_ablation"] == 1
    rewrite(path, lambda doc: doc.pop("stlens_ablation"))
    for load in (load_ablation, report_ablation):
        with pytest.raises(StlensError, match=f"{path}: not a stlens ablation"):
            load(out)
    rewrite(path, set_version(NEWER))
    for load in (load_ablation, report_ablation):
        with pytest.raises(StlensError, match=newer_message(path)):
            load(out)


# ------------------------------------------------------------------------------------------------------ evaluation

def evaluation() -> EvaluateResult:
    return EvaluateResult("stlens:i3d", "synth:motion", "classify", 10, {"top1": 0.5}, {"top1": [0.25, 0.75]})


def test_evaluation_json_of_format_1_reads_and_newer_is_refused(tmp_path):
    out = tmp_path / "eval"
    evaluation().save(out)
    path = out / "evaluation.json"
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION
    rewrite(path, set_version(1))  # as stlens wrote it before the format was shared
    assert load_evaluation(out).metrics == {"top1": 0.5}
    rewrite(path, set_version(NEWER))
    with pytest.raises(StlensError, match=newer_message(path)):
        load_evaluation(out)


# ----------------------------------------------------------------------------------------------------------- track

def track(steps: int = 2, layers: int = 1) -> TrackResult:
    rows = [{"step": s, "layer": f"layer{i}", "channels": 8, "dynamic": 10.0 + s, "dynamic_lo": 9.0,
             "dynamic_hi": 30.0, "static": 20.0, "static_lo": 15.0, "static_hi": 25.0, "residual": 70.0 - s,
             "bias": 0.5, "units_dynamic": 1, "units_static": 2, "units_joint": 0, "units_none": 5,
             "units_dead": 0, **dict.fromkeys(("train_acc", "test_acc", "train_miou", "test_miou", "test_msr"))}
            for s in range(steps) for i in range(layers)]
    return TrackResult(rows, {"model": "module:<evil>:build", "data": "synth:motion", "pairs": 16})


def test_track_json_carries_the_format_and_a_newer_one_is_refused(tmp_path):
    out = tmp_path / "track"
    track().save(out, plots=False)
    path = out / "track.json"
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION
    assert list(load_track(out)["step"]) == [0, 1]
    rewrite(path, lambda doc: doc.pop("format_version"))  # format 1
    assert list(load_track(out)["step"]) == [0, 1]
    rewrite(path, set_version(NEWER))
    with pytest.raises(StlensError, match=newer_message(path)):
        load_track(out)


# ------------------------------------------------------------------------------------------------------ the reprs

def many_units(layers: int = 4, channels: int = 512) -> MeasureResult:
    rng = np.random.default_rng(0)
    made = [LayerResult(layer=f"block{i}.conv<{i}>", channels=channels, score={"dynamic": 0.1, "static": 0.2},
                        dims={"dynamic": 100, "static": 200, "residual": channels - 300},
                        percent={"dynamic": 19.5, "static": 39.1, "residual": 41.4},
                        ci95={"dynamic": [18.0, 21.0], "static": None}, units={"dynamic": 1, "static": 2},
                        units_ci95={}, bias=0.33, bias_ci95=None, r_dynamic=rng.random(channels),
                        r_static=rng.random(channels), classes=["none"] * channels) for i in range(layers)]
    meta = {"model": "module:<evil>:build", "weights": None, "data": "synth:motion", "threshold": 0.5,
            "pairs": {"dynamic": 64, "static": 64}}
    return MeasureResult(meta, made, {"seconds": 1.0}, run_id="abc")


def test_measure_result_prints_a_short_summary_and_escaped_html():
    result = many_units()
    text = repr(result)
    assert len(text.splitlines()) < 40 and str(result) == text
    assert "module:<evil>:build" in text and all(f"block{i}.conv<{i}>" in text for i in range(4))
    assert "array(" not in text and "r_dynamic" not in text
    page = result._repr_html_()
    assert "&lt;evil&gt;" in page and "<evil>" not in page and "block3.conv&lt;3&gt;" in page
    assert len(repr(result.layers[0]).splitlines()) == 1 and "array(" not in repr(result.layers[0])
    long = repr(many_units(layers=100, channels=4))
    assert len(long.splitlines()) < 40 and "70 more rows" in long


def test_ablation_and_track_results_print_short_and_escape_html():
    result = ablation()
    text = repr(result)
    assert text.startswith("AblationResult: module:<evil>:build on synth:motion") and "stage4" in text
    assert "baseline top1 0.750 [0.650, 0.850]" in text and len(text.splitlines()) < 40
    assert "&lt;evil&gt;" in result._repr_html_() and "<evil>" not in result._repr_html_()
    tracked = track(steps=50, layers=2)
    text = repr(tracked)
    assert text.startswith("TrackResult: module:<evil>:build") and "layer1" in text and len(text.splitlines()) < 40
    assert "layer1: converged at step" in text  # the convergence lines are never clipped
    page = tracked._repr_html_()
    assert "&lt;evil&gt;" in page and "<evil>" not in page and page.count("<tr>") == 101


def test_json_safe_replaces_every_nan_and_infinity_with_null():
    import math

    import numpy as np

    from stlens.files import json_safe

    doc = {"a": math.nan, "b": [1.0, math.inf, (np.float64("nan"), -math.inf)], "c": {"d": 2, "e": "x"}, "f": None}
    assert json_safe(doc) == {"a": None, "b": [1.0, None, [None, None]], "c": {"d": 2, "e": "x"}, "f": None}
    assert json.loads(json.dumps(json_safe(doc), allow_nan=False))  # valid JSON
