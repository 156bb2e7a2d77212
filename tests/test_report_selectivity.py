"""stlens report of stlens selectivity folders: a real selectivity run (a measure run joined) of a tiny untrained
i3d, then the report's selectivity section checked against selectivity.csv and its gallery against the GIFs; names
from the files escaped; a damaged GIF shown as a note; damaged and newer-format folders skipped with the reason."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import stlens
from stlens.cli import main
from stlens.report.selectivity import load_selectivity_run, selectivity_view
from stlens.runs import MARKER, file_entry

MODEL = ["--model", "stlens:i3d?width=4", "--frames", "4", "--size", "32"]
KINDS = ("class-specific", "generic", "weak")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("selrep")
    measured, out = root / "m", root / "s"
    assert main(["measure", *MODEL, "--data", "synth:motion?split=test&seed=11", "--pairs", "4", "--layers",
                 "stage3,stage4", "--bootstrap", "0", "--device", "cpu", "--out", str(measured), "--quiet"]) == 0
    assert main(["selectivity", *MODEL, "--data", "synth:motion?split=test&n=16&seed=3", "--layers", "stage3,stage4",
                 "--from", str(measured), "--bootstrap", "20", "--top-k", "2", "--batch-size", "8", "--device",
                 "cpu", "--gallery", "2", "--gallery-steps", "2", "--out", str(out), "--quiet"]) == 0
    return out


class Tables(HTMLParser):
    """The cell texts of every table row inside the <section> with id ``wanted``, its <img> tags and the texts of
    its <figcaption>s."""

    def __init__(self, wanted: str):
        super().__init__()
        self.wanted, self.inside, self.cell, self.caption = wanted, False, None, None
        self.rows: list[list[str]] = []
        self.imgs: list[dict] = []
        self.captions: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.inside = attrs.get("id") == self.wanted
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = ""
        elif self.inside and tag == "img":
            self.imgs.append(attrs)
        elif self.inside and tag == "figcaption":
            self.caption = ""

    def handle_endtag(self, tag):
        if tag == "section":
            self.inside = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None
        elif tag == "figcaption" and self.caption is not None:
            self.captions.append(" ".join(self.caption.split()))
            self.caption = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.caption is not None:
            self.caption += data


def section(html: str) -> Tables:
    parser = Tables("selectivity-1")
    parser.feed(html)
    return parser


def csv_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "selectivity.csv", newline="") as f:
        return list(csv.DictReader(f))


def remark(folder: Path) -> None:
    """Rewrite the marker's file entries after a file was edited on purpose (as if the run had written it)."""
    marker = json.loads((folder / MARKER).read_text())
    marker["files"] = {name: file_entry(folder / name) for name in marker["files"] if (folder / name).is_file()}
    (folder / MARKER).write_text(json.dumps(marker))


def test_the_section_shows_the_per_layer_table_and_the_top_units_from_the_files(run, tmp_path):
    html = stlens.report([run], out=tmp_path / "r.html", examples=0).read_text()
    assert 'href="#selectivity-1"' in html
    parsed = section(html)
    rows, doc = csv_rows(run), json.loads((run / "selectivity.json").read_text())
    present = {r["unit_class"] for r in rows}
    unit_classes = [c for c in ("dynamic", "static", "joint") if c in present] + sorted(
        present - {"dynamic", "static", "joint"})
    assert len(unit_classes) >= 2
    for c in unit_classes:
        assert f"<th>mean SI {c} (units)</th>" in html
    layer_rows = [r for r in parsed.rows if len(r) == 7 + len(unit_classes)]
    assert [r[0] for r in layer_rows] == ["stage3", "stage4"]
    for cells in layer_rows:
        mine = [r for r in rows if r["layer"] == cells[0]]
        assert int(cells[1]) == len(mine)
        for column, kind in enumerate(KINDS, start=2):
            assert float(cells[column]) == pytest.approx(100 * np.mean([r["selectivity_kind"] == kind for r in mine]),
                                                         abs=0.0501)
        assert float(cells[5]) == pytest.approx(np.nanmean([float(r["selectivity"]) for r in mine]), abs=5e-4)
        for column, unit_class in enumerate(unit_classes, start=7):
            picked = [float(r["selectivity"]) for r in mine if r["unit_class"] == unit_class]
            if picked:
                mean, units = re.fullmatch(r"(\S+) \((\d+)\)", cells[column]).groups()
                assert float(mean) == pytest.approx(np.nanmean(picked), abs=5e-4) and int(units) == len(picked)
            else:
                assert cells[column] == "–"
    top = [r for r in parsed.rows if len(r) == 9]
    ranked = sorted(rows, key=lambda r: (-float(r["selectivity_lo"]), -float(r["selectivity"])))[:10]
    assert len(top) == 10
    for cells, row in zip(top, ranked, strict=True):
        assert cells[:2] == [row["layer"], row["channel"]]
        assert float(cells[2]) == pytest.approx(float(row["selectivity"]), abs=5e-4)
        low, high = map(float, re.fullmatch(r"\[(\S+), (\S+)\]", cells[3]).groups())
        assert (low, high) == pytest.approx((float(row["selectivity_lo"]), float(row["selectivity_hi"])), abs=5e-4)
        assert cells[4] == doc["classes"][int(row["top_class"])]  # the class name, not its index
        assert cells[5:8] == [row["classes_served"], row["selectivity_kind"], row["unit_class"]]
        clips = doc["layers"][["stage3", "stage4"].index(row["layer"])]["top_clips"][int(row["channel"])]
        assert cells[8] == ", ".join(f"{c['id']} ({doc['classes'][c['class']]})" for c in clips)
    assert len(parsed.imgs) == 3 and parsed.imgs[0]["src"].startswith("data:image/png;base64,")


def test_the_gallery_shows_each_gif_with_its_caption(run, tmp_path):
    html = stlens.report([run], out=tmp_path / "r.html", examples=0).read_text()
    parsed = section(html)
    doc, rows = json.loads((run / "selectivity.json").read_text()), csv_rows(run)
    gifs = [img["src"] for img in parsed.imgs if img["src"].startswith("data:image/gif;base64,")]
    assert len(doc["gallery"]) == 2 and len(gifs) == 2
    for entry, uri, caption in zip(doc["gallery"], gifs, parsed.captions, strict=True):
        assert base64.b64decode(uri.split(",", 1)[1]) == (run / entry["gif"]).read_bytes()
        row = next(r for r in rows if (r["layer"], int(r["channel"])) == (entry["layer"], entry["channel"]))
        clips = ", ".join(f"{c['id']} ({doc['classes'][c['class']]})" for c in entry["clips"])
        assert caption == (f"{row['layer']} · channel {row['channel']} · SI {float(row['selectivity']):.3f} "
                           f"[{float(row['selectivity_lo']):.3f}, {float(row['selectivity_hi']):.3f}] · top class "
                           f"{doc['classes'][int(row['top_class'])]} · {row['selectivity_kind']} top clips: {clips}")
    ranked = sorted(rows, key=lambda r: (-float(r["selectivity_lo"]), -float(r["selectivity"])))[:2]
    assert [(e["layer"], e["channel"]) for e in doc["gallery"]] == [(r["layer"], int(r["channel"])) for r in ranked]


def test_a_damaged_gif_is_a_note_and_a_run_without_a_gallery_shows_none(run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "gallery" / "unit1.gif").write_bytes(b"GIF89a cut")
    view = selectivity_view(load_selectivity_run(damaged))
    assert view["gallery"][0]["uri"].startswith("data:image/gif") and view["gallery"][1]["uri"] is None
    assert "unit1.gif" in view["gallery"][1]["note"]
    html = stlens.report([damaged], out=tmp_path / "r.html", examples=0).read_text()
    assert len([i for i in section(html).imgs if i["src"].startswith("data:image/gif")]) == 1
    older = tmp_path / "older"  # written before the gallery: no key, no GIFs
    shutil.copytree(run, older)
    shutil.rmtree(older / "gallery")
    doc = json.loads((older / "selectivity.json").read_text())
    del doc["gallery"]
    (older / "selectivity.json").write_text(json.dumps(doc))
    remark(older)
    html = stlens.report([older], out=tmp_path / "r2.html", examples=0).read_text()
    assert 'id="selectivity-1"' in html and "Gallery of units" not in html


def test_names_from_the_files_are_escaped(run, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(run, evil)
    doc = json.loads((evil / "selectivity.json").read_text())
    doc["classes"] = ["<b>x</b>" for _ in doc["classes"]]
    doc["model"] = "<script>alert(1)</script>"
    doc["gallery"][0]["clips"][0]["id"] = "<i>clip</i>"
    doc["gallery"][1]["layer"] = "<u>layer</u>"
    (evil / "selectivity.json").write_text(json.dumps(doc))
    remark(evil)
    view = selectivity_view(load_selectivity_run(evil))
    assert view["top"][0]["top_class"] == "<b>x</b>"  # plain values: the template escapes them
    assert view["gallery"][0]["clips"][0].startswith("<i>clip</i>") and view["gallery"][1]["layer"] == "<u>layer</u>"
    html = stlens.report([evil], out=tmp_path / "r.html", examples=0).read_text()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<i>clip</i>" not in html and "&lt;i&gt;clip&lt;/i&gt;" in html
    assert "<u>layer</u>" not in html and "&lt;u&gt;layer&lt;/u&gt;" in html


def test_damaged_and_newer_runs_are_listed_as_skipped(run, tmp_path):
    cut = tmp_path / "cut"  # a truncated selectivity.json: its checksum no longer matches
    shutil.copytree(run, cut)
    text = (cut / "selectivity.json").read_text()
    (cut / "selectivity.json").write_text(text[: len(text) // 2])
    newer = tmp_path / "newer"  # a format this stlens does not read (marker rewritten as if the run wrote it)
    shutil.copytree(run, newer)
    doc = json.loads((newer / "selectivity.json").read_text())
    doc["format_version"] = 999
    (newer / "selectivity.json").write_text(json.dumps(doc))
    remark(newer)
    cut_remarked = tmp_path / "cut2"  # truncated and re-marked: the JSON itself is unreadable
    shutil.copytree(cut, cut_remarked)
    remark(cut_remarked)
    html = stlens.report([run, cut, newer, cut_remarked], out=tmp_path / "r.html", examples=0).read_text()
    skipped = re.search(r'<section id="skipped">(.*?)</section>', html, re.S).group(1)
    items = re.findall(r"<li><code>(.*?)</code>: (.*?)</li>", skipped, re.S)
    reasons = {Path(source).name: reason for source, reason in items}
    assert set(reasons) == {"cut", "newer", "cut2"}
    assert "selectivity.json" in reasons["cut"] and "Traceback" not in skipped
    assert "format_version 999" in reasons["newer"] and "newer stlens" in reasons["newer"]
    assert "selectivity.json" in reasons["cut2"]
    assert 'id="selectivity-1"' in html and 'id="selectivity-2"' not in html
