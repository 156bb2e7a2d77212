"""stlens perturb joined to a measure run (``from_run`` / ``--from``) and the perturb sections of stlens report: the
representation block equals result.json's numbers, another model's run is refused before any work, the section's
table equals perturb.csv with names from input escaped, damaged runs are skipped with the reason, and the cross-run
table and Spearman ρ against hand computations."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_perturb import FirstFrameColour, PlantedClips, planted

import stlens
from stlens.cli import main
from stlens.errors import StlensError
from stlens.measure.result import LayerResult, MeasureResult
from stlens.perturb.result import COLUMNS, PerturbResult
from stlens.report.load import find_inputs
from stlens.report.perturb import spearman

pytestmark = pytest.mark.usefixtures("one_thread")

EVIL_MODEL = "<b>evil</b>:net"


def measure_run(out: Path, model: str, weights: str | None, dynamic: list[float], ci: bool = True) -> Path:
    """A measure run folder written through MeasureResult.save: one layer per value of ``dynamic``."""
    layers = [LayerResult(layer=f"layer{i}", channels=4, score={"dynamic": 0.1, "static": 0.2},
                          dims={"dynamic": 1, "static": 1, "residual": 2},
                          percent={"dynamic": d, "static": 60.0 - d / 2, "residual": 40.0 - d / 2},
                          ci95={"dynamic": [d - 1.5, d + 2.25], "static": [59.0 - d / 2, 61.5 - d / 2]} if ci else {},
                          units={"dynamic": 1, "static": 1, "joint": 1, "none": 1, "dead": 0}, units_ci95={},
                          bias=0.1, bias_ci95=None, r_dynamic=np.zeros(4), r_static=np.zeros(4),
                          classes=["none"] * 4) for i, d in enumerate(dynamic)]
    meta = {"model": model, "weights": weights, "data": "synth:motion", "threshold": 0.5,
            "pairs": {"dynamic": 8, "static": 8}}
    MeasureResult(meta, layers, {"seconds": 1.0}).save(out, config={})
    return out


def row(name: str, kind: str, score: float, retention: float, note: str = "") -> dict:
    values = dict.fromkeys(COLUMNS, float("nan"))
    return values | {"perturbation": name, "kind": kind, "metric": "top1", "score": score, "score_lo": score - 0.05,
                     "score_hi": score + 0.05, "drop": 1 - score, "drop_lo": 0.9 - score, "drop_hi": 1.1 - score,
                     "retention": retention, "retention_lo": retention - 0.1, "retention_hi": retention + 0.1,
                     "chance": 0.125, "clips": 64, "note": note}


def perturb_run(out: Path, model: str, shuffle: float, palette: float, dynamic: float | None = None) -> Path:
    """A complete perturb run written through PerturbResult.save; with ``dynamic`` a representation block whose
    last layer has that dynamic %."""
    rows = [row("clean", "clean", 1.0, 1.0), row("shuffle", "motion", 0.5, shuffle),
            row("palette", "appearance", 0.9, palette, note="a <i>note</i>")]
    block = None if dynamic is None else {
        "from_run": f"runs/{model}", "run_id": "abc", "model": model, "weights": None, "data": "synth:x",
        "layers": [{"layer": "early", "channels": 4, "dynamic": 1.0, "dynamic_ci95": [0.5, 1.5], "static": 50.0,
                    "static_ci95": None},
                   {"layer": "last<x>", "channels": 8, "dynamic": dynamic, "dynamic_ci95": [dynamic - 2, dynamic + 3],
                    "static": 40.0, "static_ci95": [38.0, 42.0]}]}
    settings = {"model": model, "weights": None, "data": "synth:motion?n=64", "clips": 64, "bootstrap": 100,
                "seed": 0, "precision": "fp32", "device": "cpu"}
    PerturbResult(settings, ["top1"], rows, {"seconds": 2.0}, representation=block).save(out)
    return out


def test_join_equals_result_json_and_is_saved(tmp_path):
    measured = measure_run(tmp_path / "m", "FirstFrameColour", None, [12.5, 33.0])
    result = stlens.perturb(planted(FirstFrameColour()), PlantedClips(8), perturbations="shuffle,palette",
                            bootstrap=20, progress=False, from_run=measured, out=tmp_path / "p")
    doc = json.loads((measured / "result.json").read_text())
    block = json.loads((tmp_path / "p" / "perturb.json").read_text())["representation"]
    assert block["from_run"] == str(measured) and block["run_id"] == doc["run_id"]
    assert [x["layer"] for x in block["layers"]] == [x["layer"] for x in doc["layers"]]
    for got, want in zip(block["layers"], doc["layers"], strict=True):
        assert got["dynamic"] == want["percent"]["dynamic"] and got["static"] == want["percent"]["static"]
        assert got["dynamic_ci95"] == want["ci95"]["dynamic"] and got["static_ci95"] == want["ci95"]["static"]
    assert block["layers"][1]["dynamic_ci95"] == [31.5, 35.25]  # as written above
    assert stlens.perturb.load_perturb(tmp_path / "p").representation == block == result.representation
    with (tmp_path / "p" / "perturb.csv").open() as f:
        assert next(csv.reader(f)) == COLUMNS  # perturb.csv is unchanged
    assert "layer1 dynamic 33.0%" in repr(result)
    plain = stlens.perturb(planted(FirstFrameColour()), PlantedClips(8), perturbations="shuffle", bootstrap=0,
                           progress=False, out=tmp_path / "q")
    assert plain.representation is None
    assert "representation" not in json.loads((tmp_path / "q" / "perturb.json").read_text())
    no_ci = measure_run(tmp_path / "m0", "FirstFrameColour", None, [5.0], ci=False)
    joined = stlens.perturb(planted(FirstFrameColour()), PlantedClips(4), perturbations="shuffle", bootstrap=0,
                            progress=False, from_run=no_ci)
    assert joined.representation["layers"][0]["dynamic_ci95"] is None


def test_join_refuses_another_model_before_any_work(tmp_path, capsys):
    other = measure_run(tmp_path / "m", "FirstFrameColour", None, [10.0])
    with pytest.raises(StlensError, match="`from_run` .* measured model FirstFrameColour"):
        stlens.perturb(planted(FirstFrameColour()), PlantedClips(4), from_run=measure_run(
            tmp_path / "w", "FirstFrameColour", "mine.pt", [1.0]), progress=False)
    with pytest.raises(StlensError, match="`from_run`.*missing"):
        stlens.perturb(planted(FirstFrameColour()), PlantedClips(4), from_run=tmp_path, progress=False)
    out = tmp_path / "p"
    assert main(["perturb", "--model", "stlens:i3d", "--weights", "bundled:i3d-motion", "--data",
                 "synth:motion?split=test&n=4", "--from", str(other), "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--from" in err and "FirstFrameColour" in err and "stlens:i3d" in err and not out.exists()


def test_cli_joins_a_measure_run_of_the_same_model(tmp_path):
    measured = measure_run(tmp_path / "m", "stlens:i3d", "bundled:i3d-motion", [20.0, 70.0])
    out = tmp_path / "p"
    assert main(["perturb", "--model", "stlens:i3d", "--weights", "bundled:i3d-motion", "--data",
                 "synth:motion?split=test&n=4&seed=5", "--perturbations", "shuffle", "--bootstrap", "10", "--from",
                 str(measured), "--quiet", "--out", str(out)]) == 0
    doc = json.loads((out / "perturb.json").read_text())
    assert [x["dynamic"] for x in doc["representation"]["layers"]] == [20.0, 70.0]
    assert doc["settings"]["arguments"]["from_run"] == str(measured)


class Cells(HTMLParser):
    """The cell texts of every table row inside the element with id ``wanted``, and its text."""

    def __init__(self, wanted: str):
        super().__init__()
        self.wanted, self.depth, self.rows, self.text = wanted, 0, [], []
        self._row: list[str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        if self.depth == 0:
            if tag == "section" and dict(attrs).get("id") == self.wanted:
                self.depth = 1
            return
        if tag == "section":
            self.depth += 1
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag == "section":
            self.depth -= 1
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)
            if self._cell is not None:
                self._cell += data


def cells(html: str, wanted: str) -> Cells:
    parser = Cells(wanted)
    parser.feed(html)
    assert parser.depth == 0 and parser.text, f"no section {wanted}"
    return parser


def test_report_section_shows_the_rows_escaped(tmp_path):
    run = perturb_run(tmp_path / "p", EVIL_MODEL, 0.3, 0.95, dynamic=44.0)
    html = Path(stlens.report([run], tmp_path / "r.html", examples=0)).read_text()
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;:net" in html
    assert "<i>note</i>" not in html and "last<x>" not in html
    section = cells(html, "perturb-1")
    with (run / "perturb.csv").open() as f:
        written = list(csv.DictReader(f))
    body = [r for r in section.rows if r[0] in ("clean", "shuffle", "palette")][:3]
    for got, want in zip(body, written, strict=True):
        assert got[0] == want["perturbation"] and got[2] == f"{float(want['score']):.3f}"
        assert got[3] == f"[{float(want['score_lo']):.3f}, {float(want['score_hi']):.3f}]"
        assert got[4] == f"{float(want['drop']):+.3f}" and got[6] == f"{float(want['retention']):.3f}"
        assert got[7] == f"[{float(want['retention_lo']):.3f}, {float(want['retention_hi']):.3f}]"
        assert got[8] == "0.125" and got[9] == "64" and got[10] == "–"
    assert body[2][12] == "a <i>note</i>"
    text = " ".join(section.text)
    assert EVIL_MODEL in text and "synth:motion?n=64" in text and "64 clips" in text
    assert ["last<x>", "8", "44.0", "[42.0, 47.0]", "40.0", "[38.0, 42.0]"] in section.rows
    assert ["early", "4", "1.0", "[0.5, 1.5]", "50.0", "–"] in section.rows
    assert re.search(r'<section id="perturb-1".*?<img src="data:image/png;base64,', html, re.S)
    assert 'id="perturb-across"' not in html  # one run: no cross-run section


def test_damaged_newer_and_incomplete_runs_are_skipped(tmp_path):
    good = perturb_run(tmp_path / "good", "m", 0.3, 0.9)
    damaged = perturb_run(tmp_path / "damaged", "m", 0.3, 0.9)
    (damaged / "perturb.json").write_text((damaged / "perturb.json").read_text().replace('"m"', '"n"'))
    newer = perturb_run(tmp_path / "newer", "m", 0.3, 0.9)
    marker = newer / ".stlens-run.json"
    doc = json.loads(marker.read_text())
    doc["format_version"] = 99
    marker.write_text(json.dumps(doc))
    partial = perturb_run(tmp_path / "partial", "m", 0.3, 0.9)
    marker = partial / ".stlens-run.json"
    doc = json.loads(marker.read_text())
    doc["status"] = "running"
    marker.write_text(json.dumps(doc))
    found = find_inputs([tmp_path])
    assert set(found.perturbs) == {good, damaged, newer, partial}
    html = Path(stlens.report([tmp_path], tmp_path / "r.html", examples=0)).read_text()
    skipped = " ".join(cells(html, "skipped").text)
    assert "damaged" in skipped and "perturb.json" in skipped
    assert "newer" in skipped and "99" in skipped
    assert "partial" in skipped and "not completely written" in skipped
    assert 'id="perturb-1"' in html and 'id="perturb-2"' not in html


def test_spearman_against_hand_ranks():
    x, y = np.array([10.0, 20, 30, 40, 50]), np.array([0.9, 0.7, 0.8, 0.2, 0.1])
    rho, low, high = spearman(x, y, resamples=200)
    assert rho == pytest.approx(1 - 6 * (16 + 1 + 1 + 4 + 16) / (5 * (25 - 1)))  # −0.9: Σd² = 38
    assert -1 <= low <= rho <= high <= 1
    tied_x, tied_y = np.array([1.0, 2, 2, 3]), np.array([1.0, 3, 2, 4])
    ranks_x, ranks_y = np.array([1, 2.5, 2.5, 4]), np.array([1.0, 3, 2, 4])  # ties share their mean rank
    assert spearman(tied_x, tied_y)[0] == pytest.approx(np.corrcoef(ranks_x, ranks_y)[0, 1])
    assert spearman(np.array([1.0, 2, np.nan, 3]), np.array([3.0, 2, 5, 1]))[0] == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2, 3]))[0])


def test_cross_run_table_and_rho(tmp_path):
    dynamic = [10.0, 20.0, 30.0, 40.0, 50.0]
    shuffle = [0.9, 0.7, 0.8, 0.2, 0.1]
    palette = [0.1, 0.3, 0.2, 0.6, 0.95]
    runs = [perturb_run(tmp_path / f"r{i}", f"model{i}", s, p, dynamic=d)
            for i, (d, s, p) in enumerate(zip(dynamic, shuffle, palette, strict=True))]
    runs.append(perturb_run(tmp_path / "plain", "model-plain", 0.5, 0.5))  # no from_run: not a point
    html = Path(stlens.report(runs, tmp_path / "r.html", examples=0)).read_text()
    section = cells(html, "perturb-across")
    rho_rows = {r[0]: r for r in section.rows if r[0].endswith("retention") and len(r) == 4}
    assert rho_rows["shuffle retention"][1:3] == ["5", "-0.90"]
    assert rho_rows["palette retention"][1:3] == ["5", "0.90"]  # ranks 1, 3, 2, 4, 5: Σd² = 2
    low, high = (float(v) for v in rho_rows["shuffle retention"][3].strip("[]").split(", "))
    assert -1 <= low <= -0.9 <= high <= 1
    points = [r for r in section.rows if r[0].isdigit()]
    assert len(points) == 5
    for got, d, s, p in zip(points, dynamic, shuffle, palette, strict=True):
        assert got[2] == "last<x>" and got[3] == f"{d:.1f}" and got[4] == f"[{d - 2:.1f}, {d + 3:.1f}]"
        assert got[6] == f"{s:.3f}" and got[7] == f"[{s - 0.1:.3f}, {s + 0.1:.3f}]"
        assert got[8] == "–" and got[10] == f"{p:.3f}"  # these runs have no appearance-free row
    assert "appearance-free" in " ".join(section.text)
    few = Path(stlens.report(runs[:3], tmp_path / "few.html", examples=0)).read_text()
    rows = {r[0]: r for r in cells(few, "perturb-across").rows if r[0].endswith("retention") and len(r) == 4}
    assert rows["shuffle retention"][1:] == ["3", "-0.50", "not meaningful"]  # Σd² = 6
