"""stlens report of stlens ablate folders: a real ablation of the bundled i3d-motion through the CLI, then the report's
ablation section checked against ablation.csv; names from user input escaped; damaged folders skipped with the
reason, as for measure runs."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_helpers import EVIL_LAYER, EVIL_VIDEO

from stlens.cli import main
from stlens.report.load import find_inputs
from stlens.runs import MARKER, file_entry

MODEL = ["--model", "stlens:i3d", "--weights", "bundled:i3d-motion"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """(measure run, ablate run) under one root: ablate ranks channels by the measure run (other clips)."""
    root = tmp_path_factory.mktemp("ablation")
    measured, ablated = root / "m", root / "a"
    assert main(["measure", *MODEL, "--data", "synth:motion?split=test&seed=11", "--pairs", "8", "--layers",
                 "stage3,stage4", "--bootstrap", "0", "--out", str(measured), "--quiet"]) == 0
    assert main(["ablate", *MODEL, "--data", "synth:motion?split=test&n=16&seed=3", "--from", str(measured),
                 "--layers", "stage3,stage4", "--select", "dynamic,random", "--k", "25,50", "--draws", "2", "--mode",
                 "zero", "--batch-size", "8", "--bootstrap", "50", "--out", str(ablated), "--quiet"]) == 0
    return measured, ablated


class Section(HTMLParser):
    """Of the element with id ``wanted``: each <h3> heading → the rows (cell texts) of the tables after it, the
    text of <b class="baseline"> per heading, every start tag, and the href of links."""

    def __init__(self, wanted: str):
        super().__init__()
        self.wanted, self.depth = wanted, 0
        self.panels: dict[str, list[list[str]]] = {}
        self.baselines: dict[str, str] = {}
        self.hrefs: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self._heading: str | None = None
        self._capture: str | None = None
        self._buffer = ""
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth == 0:
            if tag == "section" and attrs.get("id") == self.wanted:
                self.depth = 1
            return
        if tag == "section":
            self.depth += 1
        if tag == "a":
            self.hrefs.append(attrs.get("href") or "")
        if tag == "img":
            self.imgs.append(attrs)
        if tag == "tr":
            self._row = []
        if tag in ("h3", "td") or (tag == "b" and attrs.get("class") == "baseline"):
            self._capture, self._buffer = tag, ""

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag == "section":
            self.depth -= 1
        if tag == self._capture:
            text = self._buffer.strip()
            if tag == "h3":
                self._heading = text
                self.panels.setdefault(text, [])
            elif tag == "td" and self._row is not None:
                self._row.append(text)
            elif tag == "b":
                self.baselines[self._heading] = text
            self._capture = None
        if tag == "tr" and self._row:
            self.panels[self._heading].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)
            if self._capture:
                self._buffer += data


def section(html: str, wanted: str = "ablation-1") -> Section:
    parsed = Section(wanted)
    parsed.feed(html)
    assert parsed.depth == 0 and parsed.panels, f"no section {wanted}"
    return parsed


def csv_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "ablation.csv", newline="") as f:
        return list(csv.DictReader(f))


def remark(folder: Path) -> None:
    """Rewrite the marker's file entries after a file was edited on purpose (as if the run had written it)."""
    marker = json.loads((folder / MARKER).read_text())
    marker["files"] = {name: file_entry(folder / name) for name in marker["files"] if (folder / name).is_file()}
    (folder / MARKER).write_text(json.dumps(marker))


def report(tmp_path: Path, *inputs: Path, name: str = "r.html") -> str:
    out = tmp_path / name
    assert main(["report", *map(str, inputs), "--examples", "0", "--out", str(out)]) == 0
    return out.read_text()


def test_ablation_section_shows_the_numbers_of_ablation_csv(folders, tmp_path):
    _, ablated = folders
    html = report(tmp_path, ablated)
    assert 'id="run-' not in html and 'id="skipped"' not in html  # the ablate folder alone: no measure section
    parsed = section(html)
    rows = csv_rows(ablated)
    assert set(parsed.panels) >= {"stage3 · mode zero", "stage4 · mode zero", "Reproduce"}
    for layer in ("stage3", "stage4"):
        heading = f"{layer} · mode zero"
        base = next(r for r in rows if r["layer"] == layer and r["select"] == "none")
        assert parsed.baselines[heading] == f"{float(base['top1']):.3f}"
        table = {(cells[0], cells[1]): cells for cells in parsed.panels[heading]}
        assert set(table) == {("dynamic", "25"), ("dynamic", "50"), ("random", "25"), ("random", "50")}
        for (select, k), cells in table.items():
            here = [r for r in rows if r["layer"] == layer and r["select"] == select and r["k"] == k]
            top1 = np.array([float(r["top1"]) for r in here])
            drop = np.array([float(r["drop_top1"]) for r in here])
            # select, K, masked, draws, top-1, sd over draws, drop, 95% CI of drop
            assert cells[2] == here[0]["masked"] and int(cells[3]) == len(here) == (2 if select == "random" else 1)
            assert cells[4] == f"{top1.mean():.3f}" and cells[6] == f"{drop.mean():+.3f}"
            if select == "random":
                assert cells[5] == f"{top1.std():.3f}" and cells[7] == "(mean of draws)"
            else:
                low, high = float(here[0]["drop_top1_low"]), float(here[0]["drop_top1_high"])
                assert cells[5] == "–" and cells[7] == f"[{low:+.3f}, {high:+.3f}]"
    # a drop that is not zero, so that the check above means something
    dyn = next(r for r in rows if r["layer"] == "stage3" and r["select"] == "dynamic" and r["k"] == "50")
    assert float(dyn["drop_top1"]) > 0.1
    # the line saying what was ablated, the figure (the run's own ablation.png), the command
    text = " ".join("".join(parsed.text).split())
    settings = json.loads((ablated / "ablation.json").read_text())["settings"]
    for part in ("model stlens:i3d", "weights bundled:i3d-motion", "data synth:motion?split=test&n=16&seed=3",
                 "16 clips", f"channels ranked by the measure run {Path(settings['units']).parent}"):
        assert part in text
    assert "stlens ablate --model stlens:i3d" in text and "--select dynamic,random --k 25,50" in text
    [img] = parsed.imgs
    assert img["src"].startswith("data:image/png;base64,") and int(img["width"]) > 300
    import base64

    assert base64.b64decode(img["src"].split(",", 1)[1]) == (ablated / "ablation.png").read_bytes()


def test_ablation_found_beside_its_measure_run_and_linked_to_it(folders, tmp_path):
    measured, ablated = folders
    found = find_inputs([measured.parent])  # the root holding both: found the way nested measure runs are
    assert found.runs == [measured] and found.ablations == [ablated] and not found.skipped
    html = report(tmp_path, measured.parent)
    assert 'id="run-1"' in html and 'id="ablation-2"' not in html and 'id="skipped"' not in html
    parsed = section(html)
    assert "#run-1" in parsed.hrefs  # the measure run that ranked the channels is in this report
    assert '<a href="#ablation-1">ablation: bundled:i3d-motion' in html  # in the navigation
    both = report(tmp_path, measured, ablated, name="both.html")
    assert section(both).panels == parsed.panels


def test_names_from_user_input_are_escaped(folders, tmp_path):
    _, ablated = folders
    evil = tmp_path / "evil"
    shutil.copytree(ablated, evil)
    doc = json.loads((evil / "ablation.json").read_text())
    for row in doc["rows"]:
        row["layer"] = EVIL_LAYER if row["layer"] == "stage3" else row["layer"]
        row["select"] = "<b>bold</b>" if row["select"] == "dynamic" else row["select"]
    doc["settings"]["data"] = EVIL_VIDEO
    doc["settings"]["model"] = "module:x\"><script>alert(4)</script>"
    doc["settings"]["units"] = "/tmp/<svg onload=alert(5)>/units.csv"
    (evil / "ablation.json").write_text(json.dumps(doc))
    remark(evil)
    html = report(tmp_path, evil)
    assert 'id="skipped"' not in html
    for raw in (EVIL_LAYER, EVIL_VIDEO, "<script>alert(4)", "<svg onload", "<b>bold</b>"):
        assert raw not in html
    for escaped in ("&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt;",
                    "&lt;svg onload=alert(5)&gt;", "&lt;b&gt;bold&lt;/b&gt;"):
        assert escaped in html
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script", html, re.S)
    assert len(scripts) == html.count("<script") == 2 and not any("alert" in body for body in scripts)
    parsed = section(html)
    assert f"{EVIL_LAYER} · mode zero" in parsed.panels  # shown as text
    assert ("<b>bold</b>", "25") in {(c[0], c[1]) for c in parsed.panels[f"{EVIL_LAYER} · mode zero"]}


def test_damaged_ablation_folders_are_skipped_with_the_reason(folders, tmp_path):
    measured, ablated = folders
    edited = tmp_path / "edited"  # ablation.json changed after the run: the marker's sha256 no longer matches
    shutil.copytree(ablated, edited)
    doc = json.loads((edited / "ablation.json").read_text())
    doc["rows"][1]["top1"] = 0.0
    (edited / "ablation.json").write_text(json.dumps(doc))
    broken = tmp_path / "broken"  # invalid JSON, the marker updated: the line of the problem is named
    shutil.copytree(ablated, broken)
    (broken / "ablation.json").write_text('{"stlens_ablation": 1, "rows": [')
    remark(broken)
    unmarked = tmp_path / "unmarked"  # copied without its marker
    shutil.copytree(ablated, unmarked)
    (unmarked / MARKER).unlink()
    gutted = tmp_path / "gutted"  # valid JSON without the rows
    shutil.copytree(ablated, gutted)
    doc = json.loads((gutted / "ablation.json").read_text())
    del doc["rows"]
    (gutted / "ablation.json").write_text(json.dumps(doc))
    remark(gutted)
    nofigure = tmp_path / "nofigure"  # the figure lost: the tables are still shown, with a note
    shutil.copytree(ablated, nofigure)
    (nofigure / "ablation.png").unlink()
    html = report(tmp_path, measured, edited, broken, unmarked, gutted, nofigure)
    skipped = html[html.index('id="skipped"'):html.index('id="comparison"')]
    assert f"{edited / 'ablation.json'}: changed since the run wrote it" in skipped
    assert f"{broken / 'ablation.json'}: damaged or truncated (invalid JSON at line 1" in skipped
    assert f"{unmarked}: no run marker" in skipped
    assert f"{gutted / 'ablation.json'}: no &#39;rows&#39;" in skipped
    assert str(nofigure) not in skipped
    assert html.count('<section id="ablation-') == 1 and html.count('<section id="run-') == 1
    parsed = section(html)
    assert not parsed.imgs and f"{nofigure / 'ablation.png'}: missing, but listed" in "".join(parsed.text)


def test_only_damaged_ablations_is_an_error(folders, tmp_path, capsys):
    _, ablated = folders
    edited = tmp_path / "edited"
    shutil.copytree(ablated, edited)
    with open(edited / "ablation.json", "a") as f:
        f.write(" ")
    assert main(["report", str(edited), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "nothing to report" in err and "changed since the run wrote it" in err
    assert not (tmp_path / "r.html").exists()
    assert main(["report", "--plots-only", str(ablated), "--out", str(tmp_path / "plots")]) == 2
    assert f"an ablate run; its figure is {ablated / 'ablation.png'}" in capsys.readouterr().err


def test_an_ablation_without_bootstrap_shows_no_intervals(folders, tmp_path):
    measured, _ = folders
    out = tmp_path / "a0"
    assert main(["ablate", *MODEL, "--data", "synth:motion?split=test&n=8&seed=3", "--from", str(measured),
                 "--layers", "stage4", "--select", "static", "--k", "50", "--mode", "zero", "--batch-size", "8",
                 "--bootstrap", "0", "--out", str(out), "--quiet"]) == 0
    parsed = section(report(tmp_path, out))
    base = next(r for r in csv_rows(out) if r["select"] == "none")
    assert parsed.baselines["stage4 · mode zero"] == f"{float(base['top1']):.3f}"
    [cells] = parsed.panels["stage4 · mode zero"]
    assert cells[:2] == ["static", "50"] and cells[7] == "–"  # no interval: not "[nan, nan]"
    assert "95% CI –" in " ".join("".join(parsed.text).split())


@pytest.mark.browser
def test_ablation_report_renders_in_chromium(folders, tmp_path):
    from test_browser import CHROMIUM, render

    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (make browser-test)")
    measured, ablated = folders
    page = tmp_path / "report.html"
    assert main(["report", str(measured), str(ablated), "--examples", "0", "--out", str(page)]) == 0
    dom, pixels, log = render(page, tmp_path, height=4000)
    assert re.search(r'<html[^>]*data-script-errors="0"', dom) and re.search(r'<body[^>]*data-report-ready="1"', dom)
    assert "Uncaught" not in log and "Refused to" not in log
    images = re.search(r'<body[^>]*data-images="(\d+) loaded, (\d+) broken"', dom)
    assert images and int(images[1]) == 5 and images[2] == "0"  # 3 run figures, the comparison, ablation.png
    assert 'id="ablation-1"' in dom and pixels.std() > 20
