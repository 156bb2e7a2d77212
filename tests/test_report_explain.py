"""stlens report of stlens explain folders: a real explain run (with its errors gallery) of a tiny untrained i3d,
then the report's explain section checked against explain.json; names escaped; damaged and newer-format folders
skipped with the reason."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import pytest

import stlens
from stlens.cli import main
from stlens.report.explain import explain_view, load_explain_run
from stlens.runs import MARKER, file_entry
from stlens.synth.worlds import class_names

pytest.importorskip("captum")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exrep") / "x"
    assert main(["explain", "--model", "stlens:i3d?width=4", "--data", "synth:motion?n=12", "--frames", "4", "--size",
                 "16", "--errors", "1", "--error-steps", "2", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    return out


def remark(folder: Path) -> None:
    """Rewrite the marker's checksums as if the run had written the files as they are now."""
    marker = json.loads((folder / MARKER).read_text())
    marker["files"] = {name: file_entry(folder / name) for name in marker["files"]}
    (folder / MARKER).write_text(json.dumps(marker))


def _section(html: str) -> str:
    return re.search(r'<section id="explain-1" class="explain">(.*?)</section>', html, re.S).group(1)


def _cells(fragment: str) -> list[str]:
    return [c.strip() for c in re.findall(r"<td>(.*?)</td>", fragment, re.S)]


def test_the_section_shows_the_summary_curve_and_gifs(run, tmp_path):
    doc = json.loads((run / "explain.json").read_text())
    summary = doc["summary"]
    html = stlens.report([run], out=tmp_path / "r.html", examples=0).read_text()
    part = _section(html)
    assert doc["model"] in part and doc["settings"]["layer"] in part and doc["method"] in part
    assert f"{summary['clips']} clips" in part and f"accuracy {summary['accuracy']:.3f}" in part

    def shown(v):
        return "–" if v is None else f"{v:.3f}"

    table = _cells(re.search(r'<table class="explain-summary">(.*?)</table>', part, re.S).group(1))
    expected = ["mask share", shown(summary["mask_share"]), "Spearman ρ, shuffled", shown(summary["spearman_shuffled"]),
                "Spearman ρ, restyled", shown(summary["spearman_restyled"])]
    assert table == expected  # no cue in synth:motion: no cue-share row
    curve = _cells(re.search(r'<table class="explain-curve">(.*?)</table>', part, re.S).group(1))
    assert curve == [f"{v:.3f}" for v in summary["mean_mass_per_frame"]]
    overlays = sorted(run.glob("explain_clip*.gif"))
    assert overlays and part.count('alt="attribution overlay of clip') == len(overlays)
    errors = doc["errors"]
    assert len(errors) >= 1 and part.count('alt="misclassified clip') == len(errors)
    names = doc["classes"]
    assert names == list(class_names("motion"))  # explain.json records the world's class names
    for e in errors:
        assert f"clip {e['clip']} · predicted {names[e['predicted']]} ({e['predicted']}) · true " \
               f"{names[e['label']]} ({e['label']})" in part
    rows = list(csv.DictReader((run / "explain.csv").open()))
    clips = _cells(re.search(r'<table class="explain-clips">(.*?)</table>', part, re.S).group(1))
    assert clips == [cell for r in rows for cell in (
        r["clip"], f"{names[int(r['label'])]} ({r['label']})", f"{names[int(r['predicted'])]} ({r['predicted']})",
        f"{names[int(r['target'])]} ({r['target']})", f"{float(r['probability']):.3f}", f"{float(r['mask_share']):.3f}",
        *(("–" if r[k] == "nan" else f"{float(r[k]):.3f}") for k in ("spearman_shuffled", "spearman_restyled")))]
    assert [r["label_name"] for r in rows] == [names[int(r["label"])] for r in rows]
    view = explain_view(load_explain_run(run))
    gif = view["errors"][0]["uri"]
    assert base64.b64decode(gif.split(",", 1)[1]) == (run / errors[0]["gif"]).read_bytes()


def test_names_are_escaped_and_damaged_or_newer_runs_skipped(run, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(run, evil)
    doc = json.loads((evil / "explain.json").read_text())
    doc["model"] = "<script>alert(1)</script>"
    doc["classes"] = ["<i>c</i>"] * len(doc["classes"])  # names shown in the per-clip table and the captions
    (evil / "explain.json").write_text(json.dumps(doc))
    remark(evil)
    cut = tmp_path / "cut"  # a truncated explain.json: its checksum no longer matches
    shutil.copytree(run, cut)
    text = (cut / "explain.json").read_text()
    (cut / "explain.json").write_text(text[: len(text) // 2])
    newer = tmp_path / "newer"
    shutil.copytree(run, newer)
    doc = json.loads((newer / "explain.json").read_text())
    doc["format_version"] = 999
    (newer / "explain.json").write_text(json.dumps(doc))
    remark(newer)
    html = stlens.report([evil, cut, newer], out=tmp_path / "r.html", examples=0).read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<i>c</i>" not in html and "&lt;i&gt;c&lt;/i&gt; (" in html
    skipped = re.search(r'<section id="skipped">(.*?)</section>', html, re.S).group(1)
    reasons = {Path(s).name: r for s, r in re.findall(r"<li><code>(.*?)</code>: (.*?)</li>", skipped, re.S)}
    assert set(reasons) == {"cut", "newer"}
    assert "explain.json" in reasons["cut"] and "format_version 999" in reasons["newer"]
    assert 'id="explain-1"' in html and 'id="explain-2"' not in html
