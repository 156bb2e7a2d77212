"""stlens report for segmentation models: layers grouped by stream (appearance, motion, fusion, other), unit-class
shares with their CIs, and the mIoU / mSR of segmentation training runs and tracks; real runs through the CLI."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest

import stlens
from stlens.cli import main
from stlens.measure.estimate import CLASSES
from stlens.report import plots, write_plots
from stlens.report.load import find_inputs
from stlens.report.streams import group_items, order

AVOS = "stlens:avos?fusion=gated&cc=recip"
SEGMENT_DATA = "synth:motion?task=segment&frames=4&size=32"
SMALL = ["--frames", "4", "--size", "32"]
EVIL = "<script>alert(1)</script>"
EVIL_DATA = "<img src=x onerror=alert(5)>"

NET = textwrap.dedent(f'''
    import torch
    from torch import nn


    class Streams(nn.Module):
        """Two tiny streams; the appearance stream's layer is registered under an HTML-injection name."""

        def __init__(self):
            super().__init__()
            self.app = nn.Module()
            self.app.add_module({EVIL!r}, nn.Conv3d(3, 4, 3, padding=1))
            self.mot = nn.Module()
            self.mot.stage1 = nn.Conv3d(3, 4, (3, 1, 1), padding=(1, 0, 0))

        def forward(self, x):
            a = torch.relu(getattr(self.app, {EVIL!r})(x))
            return (a + torch.relu(self.mot.stage1(x))).mean(dim=(2, 3, 4))


    def build():
        torch.manual_seed(0)
        return Streams()
''')


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A measure run of avos, one of an ordinary i3d, a segmentation training run, and a measure run of a two-stream
    net with a hostile layer name."""
    root = tmp_path_factory.mktemp("seg")
    out = {name: root / name for name in ("avos", "i3d", "train", "evil")}
    assert main(["measure", "--model", AVOS, *SMALL, "--data", SEGMENT_DATA, "--pairs", "8", "--bootstrap", "20",
                 "--out", str(out["avos"]), "--quiet"]) == 0
    assert main(["measure", "--model", "stlens:i3d?width=4", *SMALL, "--data", "synth:motion?frames=4&size=32",
                 "--pairs", "8", "--bootstrap", "20", "--out", str(out["i3d"]), "--quiet"]) == 0
    assert main(["train", "--model", AVOS, *SMALL, "--data", SEGMENT_DATA + "&n=16", "--task", "segment", "--steps",
                 "2", "--batch-size", "2", "--eval-clips", "4", "--checkpoint-every", "2", "--out",
                 str(out["train"]), "--quiet"]) == 0
    (root / "streams.py").write_text(NET)
    sys.path.insert(0, str(root))
    try:
        assert main(["measure", "--model", "module:streams:build", "--data", "synth:motion?frames=8&size=32",
                     "--frames", "8", "--size", "32", "--layers", f"app.{EVIL},mot.stage1", "--pairs", "8",
                     "--bootstrap", "20", "--out", str(out["evil"]), "--quiet"]) == 0
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("streams", None)
    return out


class Page(HTMLParser):
    """The tables of a page: per table its attributes and its tbodies, each with its attributes and rows (row class,
    cell texts); the <script> elements counted."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self.scripts = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        elif tag == "table":
            self.tables.append({"attrs": attrs, "head": [], "bodies": []})
        elif tag == "tbody" and self.tables:
            self.tables[-1]["bodies"].append({"attrs": attrs, "rows": []})
        elif tag == "tr" and self.tables and self.tables[-1]["bodies"]:
            self.tables[-1]["bodies"][-1]["rows"].append({"class": attrs.get("class"), "cells": []})
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables:
            text = "".join(self._cell).strip()
            table = self.tables[-1]
            if tag == "th" and not table["bodies"]:
                table["head"].append(text)
            elif table["bodies"]:
                table["bodies"][-1]["rows"][-1]["cells"].append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def page(html: str) -> Page:
    parsed = Page()
    parsed.feed(html)
    return parsed


def section(html: str, anchor: str) -> str:
    start = html.index(f'id="{anchor}"')
    return html[start:html.index("</section>", start)]


def report(tmp_path: Path, *folders: Path) -> str:
    out = tmp_path / "report.html"
    assert main(["report", *map(str, folders), "--out", str(out), "--examples", "0"]) == 0
    return out.read_text()


def run_tables(html: str, anchor: str = "run-1") -> tuple[dict, dict]:
    """The per-layer table and the unit-share table of a run's section."""
    tables = page(section(html, anchor)).tables
    layers = next(t for t in tables if t["attrs"].get("class") == "sortable")
    shares = next(t for t in tables if t["attrs"].get("class") == "sortable unit-shares")
    return layers, shares


def layer_names(body: dict) -> list[str]:
    return [row["cells"][0] for row in body["rows"] if row["class"] != "stream-label"]


def test_streams_order_and_labels():
    names = ["head", "flow.stage2", "rgb.stage2", "fusion", "cc.stage2.gate", "app.stage1", "mot.stage1",
             "fusion.stage1", "rgb.stage3", "app.stage2.block"]
    groups = group_items(names)
    assert [(g.key, g.label) for g in groups] == [("appearance", "appearance"), ("motion", "motion"),
                                                  ("fusion", "fusion"), ("other", "other")]
    assert [g.items for g in groups] == [["rgb.stage2", "app.stage1", "rgb.stage3", "app.stage2.block"],
                                         ["flow.stage2", "mot.stage1"], ["fusion", "fusion.stage1"],
                                         ["head", "cc.stage2.gate"]]
    plain = ["stage4", "stage1", "rgbx.stage1", "application"]
    assert [(g.label, g.items) for g in group_items(plain)] == [("", plain)] and order(plain) == plain


def test_avos_run_grouped_by_stream(runs, tmp_path):
    html = report(tmp_path, runs["avos"])
    result = json.loads((runs["avos"] / "result.json").read_text())
    measured = [entry["layer"] for entry in result["layers"]]
    assert measured[:3] == ["app.stage1", "mot.stage1", "fusion.stage1"]  # the run's own order interleaves streams
    for table in run_tables(html):
        bodies = table["bodies"]
        assert [b["attrs"].get("data-stream") for b in bodies] == ["appearance", "motion", "fusion"]
        for body, label, prefix in zip(bodies, ("appearance", "motion", "fusion"), ("app", "mot", "fusion"),
                                       strict=True):
            assert body["rows"][0]["class"] == "stream-label" and body["rows"][0]["cells"] == [label]
            assert layer_names(body) == [f"{prefix}.stage{k}" for k in range(1, 5)]  # stage order kept
    # the figures: bars in the grouped order, a label above each group
    loaded = stlens.load_result(runs["avos"])
    for fig in (plots.grouped_layer_bars(loaded), plots.grouped_unit_classes(loaded)):
        ax = fig.axes[0]
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [f"{p}.stage{k}" for p in ("app", "mot", "fusion") for k in range(1, 5)]
        (top,) = ax.child_axes
        assert [t.get_text() for t in top.get_xticklabels()] == ["appearance", "motion", "fusion"]
        assert list(top.get_xticks()) == [1.5, 5.5, 9.5]
    bars = plots.grouped_layer_bars(loaded).axes[0].containers[0]  # the dynamic bars, in the grouped order
    assert [b.get_height() for b in bars] == [loaded[n].percent["dynamic"] for n in ticks]


def test_ordinary_run_is_not_grouped(runs, tmp_path):
    html = report(tmp_path, runs["i3d"])
    body = html[html.index("<main>"):html.index("</main>")]  # (the style sheet and script name the class)
    assert "stream-label" not in body and "data-stream" not in body and 'class="stream"' not in body
    for name in ("appearance", "motion", "fusion"):
        assert f">{name}<" not in body
    result = json.loads((runs["i3d"] / "result.json").read_text())
    for table in run_tables(html):
        (body,) = table["bodies"]
        assert body["attrs"] == {} and layer_names(body) == [entry["layer"] for entry in result["layers"]]
    loaded = stlens.load_result(runs["i3d"])
    for fig in (plots.grouped_layer_bars(loaded), plots.grouped_unit_classes(loaded)):
        assert not fig.axes[0].child_axes  # no group labels
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [r.layer for r in loaded.layers]


@pytest.mark.parametrize("name", ["avos", "i3d"])
def test_unit_class_shares_are_counts_over_channels(runs, tmp_path, name):
    html = report(tmp_path, runs[name])
    layers, shares = run_tables(html)
    assert shares["head"] == ["layer", "C"] + [h for k in CLASSES for h in (f"{k} % of C", "95% CI")]
    rows = {row["cells"][0]: row["cells"] for body in shares["bodies"] for row in body["rows"]
            if row["class"] != "stream-label"}
    counts = {row["cells"][0]: row["cells"][7] for body in layers["bodies"] for row in body["rows"]
              if row["class"] != "stream-label"}
    result = json.loads((runs[name] / "result.json").read_text())
    assert set(rows) == {entry["layer"] for entry in result["layers"]}
    for entry in result["layers"]:
        c = entry["channels"]
        cells = rows[entry["layer"]]
        assert cells[1] == str(c)
        assert counts[entry["layer"]] == "/".join(str(entry["units"][k]) for k in CLASSES)  # the counts stay
        for i, key in enumerate(CLASSES):
            low, high = entry["units_ci95"][key]
            assert cells[2 + 2 * i] == f"{100 * entry['units'][key] / c:.1f}"
            assert cells[3 + 2 * i] == f"[{100 * low / c:.1f}, {100 * high / c:.1f}]"
        assert abs(sum(float(cells[2 + 2 * i]) for i in range(len(CLASSES))) - 100) < 0.3


def test_segmentation_training_run_shows_miou(runs, tmp_path):
    train = runs["train"]
    assert find_inputs([train]).trainings == [train]
    lines = [json.loads(line) for line in (train / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r["kind"] == "eval"]
    last = evals[-1]
    html = report(tmp_path, train)
    assert 'id="skipped"' not in html
    part = section(html, "trainings")
    assert "task <b>segment</b>" in part
    assert (f"at step {last['step']}: test mIoU <b>{last['test_miou']:.3f}</b> · test mSR "
            f"<b>{last['test_msr']:.3f}</b> · train mIoU <b>{last['train_miou']:.3f}</b>") in part
    (table,) = page(part).tables
    assert table["head"] == ["step", "loss", "test mIoU", "test mSR", "train mIoU"]
    assert [r["cells"] for r in table["bodies"][0]["rows"]] == [
        [str(r["step"]), "–" if r["loss"] is None else f"{r['loss']:.3f}", f"{r['test_miou']:.3f}",
         f"{r['test_msr']:.3f}", f"{r['train_miou']:.3f}"] for r in evals]
    assert "accuracy" not in part and "data:image/png;base64," in part
    # a classifier's run (no task in config.json): accuracy, as labelled
    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "config.json").write_text(json.dumps({"model": "stlens:i3d", "data": "synth:motion"}))
    (classifier / "metrics.jsonl").write_text(
        '{"step": 0, "loss": null, "train_acc": 0.125, "test_acc": 0.25, "kind": "eval"}\n'
        '{"step": 5, "loss": 2.0, "batch_acc": 0.5, "kind": "train"}\n'
        '{"step": 5, "loss": 1.5, "train_acc": 0.5, "test_acc": 0.375, "kind": "eval"}\n{"step": 6, "lo')
    part = section(report(tmp_path, classifier), "trainings")
    assert "at step 5: test accuracy <b>0.375</b> · train accuracy <b>0.500</b>" in part
    assert "mIoU" not in part and "1 line(s) of metrics.jsonl could not be read" in part
    # plots-only writes its figure
    written = write_plots([train], tmp_path / "plots")
    assert {p.name for p in written} == {"training_0.png", "training_0.svg"}


def test_segmentation_ablation_is_shown_in_miou(runs, tmp_path):
    ablated = tmp_path / "ablate"
    assert main(["ablate", "--model", AVOS, *SMALL, "--data", SEGMENT_DATA + "&split=test&n=8", "--from",
                 str(runs["avos"]), "--layers", "fusion.stage3", "--select", "dynamic,static", "--k", "50", "--mode",
                 "zero", "--batch-size", "4", "--bootstrap", "20", "--out", str(ablated), "--quiet"]) == 0
    html = report(tmp_path, ablated)
    assert 'id="skipped"' not in html
    part = section(html, "ablation-1")
    with open(ablated / "ablation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    base = next(r for r in rows if r["select"] == "none")
    assert f'unmasked baseline mIoU <b class="baseline">{float(base["miou"]):.3f}</b>' in part
    (table,) = page(part).tables
    assert table["head"][:8] == ["select", "K %", "masked", "draws", "mIoU", "sd over draws", "drop",
                                 "95% CI of drop"]
    assert [r["cells"][:7] for r in table["bodies"][0]["rows"]] == [
        [r["select"], "50", r["masked"], "1", f"{float(r['miou']):.3f}", "–", f"{float(r['drop_miou']):+.3f}"]
        for r in rows if r["select"] != "none"]
    assert "intersection over union" in part and "top-1" not in part


def test_track_scores_of_segmentation_and_classifier_runs(runs, tmp_path):
    train = runs["train"]
    evals = [r for r in map(json.loads, (train / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    steps = [r["step"] for r in evals]
    # a track as stlens track writes it for a segmentation run: no score columns; the run's metrics.jsonl gives them
    track = tmp_path / "track"
    track.mkdir()
    rows = [{"step": s, "layer": layer, "channels": 8, "dynamic": 10.0 + s, "dynamic_lo": None, "dynamic_hi": None,
             "static": 30.0, "static_lo": None, "static_hi": None, "train_acc": None, "test_acc": None}
            for s in steps for layer in ("fusion.stage4", "app.stage4", "mot.stage4")]
    (track / "track.json").write_text(json.dumps({"meta": {"checkpoints": str(train / "checkpoints")}, "rows": rows}))
    # a classifier's track and a segmentation track with its own columns
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "track.csv").write_text("step,layer,dynamic,static,train_acc,test_acc\n0,stem,1,2,0.1,0.2\n"
                                     "9,stem,3,4,0.6,0.55\n")
    own = tmp_path / "own"
    own.mkdir()
    (own / "track.csv").write_text("step,layer,dynamic,static,train_miou,test_miou,test_msr\n"
                                   "4,stage1,1,2,0.3,0.25,0.125\n")
    html = report(tmp_path, track, plain, own)
    part = section(html, "tracks")
    blocks = part.split("<h3>")[1:]
    last = evals[-1]
    assert (f"task segment (from <code>{train / 'metrics.jsonl'}</code>), at step {last['step']}:\n"
            f"test mIoU <b>{last['test_miou']:.3f}</b> · test mSR <b>{last['test_msr']:.3f}</b> · train mIoU "
            f"<b>{last['train_miou']:.3f}</b>") in blocks[0]
    assert blocks[0].index("app.stage4 dynamic") < blocks[0].index("mot.stage4 dynamic") < blocks[0].index(
        "fusion.stage4 dynamic")
    assert '<b class="stream">appearance</b>' in blocks[0]
    assert "task classify, at step 9:\ntest accuracy <b>0.550</b> · train accuracy <b>0.600</b>" in blocks[1]
    assert "mIoU" not in blocks[1] and "stream" not in blocks[1]
    assert "task segment, at step 4:\ntest mIoU <b>0.250</b> · test mSR <b>0.125</b> · train mIoU <b>0.300</b>" in (
        blocks[2])


def test_hostile_names_are_escaped(runs, tmp_path):
    hostile = tmp_path / "hostile-train"
    shutil.copytree(runs["train"], hostile)
    config = json.loads((hostile / "config.json").read_text())
    config["data"] = EVIL_DATA
    (hostile / "config.json").write_text(json.dumps(config))
    html = report(tmp_path, runs["evil"], hostile)
    assert EVIL not in html and EVIL_DATA not in html and "<img src=x" not in html
    assert f"app.{EVIL}".replace("<", "&lt;").replace(">", "&gt;") in html
    assert EVIL_DATA.replace("<", "&lt;").replace(">", "&gt;") in section(html, "trainings")
    parsed = page(html)
    assert parsed.scripts == 2  # the report's own two
    layers, shares = run_tables(html)
    for table in (layers, shares):
        assert [b["attrs"].get("data-stream") for b in table["bodies"]] == ["appearance", "motion"]
        assert layer_names(table["bodies"][0]) == [f"app.{EVIL}"]  # the text, read back unescaped
        assert layer_names(table["bodies"][1]) == ["mot.stage1"]
