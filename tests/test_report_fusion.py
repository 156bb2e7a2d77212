"""The report's side-by-side table of a two-stream run (Feichtenhofer's claim 1: fusion units are joint): per stage
the appearance, motion and fusion units by class, checked against units.csv of a real run, and its verdict."""

from __future__ import annotations

import csv
import re
import sys
import textwrap
from collections import Counter
from html import unescape
from pathlib import Path

import pytest

import stlens
from stlens.cli import main
from stlens.report.fusion import fusion_table
from stlens.report.load import load_result

EVIL = "<b>x</b>"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fusion") / "ts"
    assert main(["measure", "--model", "stlens:twostream", "--weights", "bundled:twostream-motion", "--data",
                 "synth:motion?split=test&n=16", "--pairs", "8", "--bootstrap", "0", "--out", str(out),
                 "--quiet"]) == 0
    return out


def _counts(run: Path) -> dict[str, Counter]:
    with open(run / "units.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    counts: dict[str, Counter] = {}
    for r in rows:
        counts.setdefault(r["layer"], Counter())[r["class"]] += 1
    return counts


def _table(html: str) -> str:
    start = html.index('<table class="fusion-table">')
    return html[start:html.index("</table>", start)]


def test_table_matches_units_csv(run, tmp_path):
    counts = _counts(run)
    table = fusion_table(load_result(run))
    assert [c for c, _ in table["columns"]] == ["appearance", "motion", "fusion"]
    stages = [r["stage"] for r in table["rows"]]
    assert stages[-1] == "fusion" and set(stages[:-1]) == {"stage2", "stage3", "stage4"}
    html = Path(stlens.report(run, tmp_path / "r.html", examples=0)).read_text()
    body = _table(html)
    rows = re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", body, re.S)
    assert [r[0] for r in rows] == stages
    for stage, cells in rows:
        texts = [unescape(t) for t in re.findall(r"<td[^>]*>(.*?)</td>", cells)]
        assert len(texts) == 9
        for i, prefix in enumerate(("rgb.", "flow.", "")):
            layer = prefix + stage if stage != "fusion" or not prefix else None
            got = texts[3 * i:3 * i + 3]
            if layer is None or (stage == "fusion") != (prefix == ""):
                assert got == ["–"] * 3
                continue
            total = sum(counts[layer].values())
            assert got == [f"{100 * counts[layer][k] / total:.1f}" for k in ("static", "dynamic", "joint")]
    joint = {layer: 100 * c["joint"] / sum(c.values()) for layer, c in counts.items()}
    line = f"fusion: joint {joint['fusion']:.1f}% vs {joint['rgb.stage4']:.1f}% / {joint['flow.stage4']:.1f}%"
    assert line in unescape(html)
    holds = joint["fusion"] > max(joint["rgb.stage4"], joint["flow.stage4"])
    assert table["holds"] is holds
    assert ("more joint than either stream" if holds else "not more joint than both streams") in html


NET = textwrap.dedent(f'''
    import torch
    from torch import nn


    class Streams(nn.Module):
        """Two tiny streams and a fusion layer; the stage of both streams has an HTML-injection name."""

        def __init__(self):
            super().__init__()
            self.rgb = nn.Module()
            self.rgb.add_module({EVIL!r}, nn.Conv3d(3, 4, 3, padding=1))
            self.flow = nn.Module()
            self.flow.add_module({EVIL!r}, nn.Conv3d(3, 4, (3, 1, 1), padding=(1, 0, 0)))
            self.fusion = nn.Conv3d(8, 4, 1)

        def forward(self, x):
            a = torch.relu(getattr(self.rgb, {EVIL!r})(x))
            m = torch.relu(getattr(self.flow, {EVIL!r})(x))
            return self.fusion(torch.cat([a, m], 1)).mean(dim=(2, 3, 4))


    def build():
        torch.manual_seed(0)
        return Streams()
''')


def test_table_escapes_layer_names(tmp_path, monkeypatch):
    (tmp_path / "evil_streams.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["measure", "--model", "module:evil_streams:build", "--data", "synth:motion?frames=4&size=32",
                     "--frames", "4", "--size", "32", "--layers", f"rgb.{EVIL},flow.{EVIL},fusion", "--pairs", "8",
                     "--bootstrap", "0", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    finally:
        sys.modules.pop("evil_streams", None)
    html = Path(stlens.report(tmp_path / "run", tmp_path / "r.html", examples=0)).read_text()
    assert EVIL not in html
    body = _table(html)
    assert "<tr><td>&lt;b&gt;x&lt;/b&gt;</td>" in body
    assert 'title="rgb.&lt;b&gt;x&lt;/b&gt; (4 channels)"' in body
    assert "rgb.&lt;b&gt;x&lt;/b&gt; / flow.&lt;b&gt;x&lt;/b&gt;" in html


def test_no_table_for_a_one_stream_run(run):
    result = load_result(run)
    result.layers = [r for r in result.layers if not r.layer.startswith("flow.")]
    assert fusion_table(result) is None
