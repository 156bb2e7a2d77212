"""stlens report: a self-contained, escaped HTML report from a real measurement; skipped runs; plots; load_result."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_helpers import EVIL_BROKEN, EVIL_LAYER, EVIL_VIDEO, make_evil_run

import stlens
from stlens._version import FORMAT_VERSION
from stlens.cli import main
from stlens.report.load import find_inputs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_evil_run(tmp_path_factory.mktemp("evil"))


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of every <script> element."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def test_report_is_self_contained_and_escapes_names(run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = out.read_text()
    tags = parse(html)
    # self-contained: every src/href is a data: URI or an in-page anchor, nothing is fetched
    links = [(tag, k, v) for tag, attrs in tags.tags for k, v in attrs.items() if k in ("src", "href")]
    assert links and all(v.startswith("data:") or v.startswith("#") for _, _, v in links), links
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert any(v.startswith("data:image/png;base64,") for _, k, v in links if k == "src")
    assert any(v.startswith("data:image/gif;base64,") for _, k, v in links if k == "src")  # example pairs
    # the injected names appear as text, never as markup
    assert EVIL_LAYER not in html and EVIL_VIDEO not in html and "<svg onload" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html  # the video (frame folder) name, in the pair captions
    assert EVIL_BROKEN.replace("<", "&lt;").replace(">", "&gt;") in html  # the undecodable video (skipped)
    assert not any("onerror" in attrs or "onload" in attrs for _, attrs in tags.tags)
    assert sum(tag == "script" for tag, _ in tags.tags) == 2 and not any("alert" in s for s in tags.scripts)
    # the content: the table row of the injected layer, its percentages, the exact command and the seed
    result = json.loads((run / "result.json").read_text())
    row = next(r for r in result["layers"] if r["layer"] == EVIL_LAYER)
    assert f"{row['percent']['dynamic']:.1f}" in html and f"{row['percent']['static']:.1f}" in html
    assert "stlens measure --model module:evilnet:build" in html and "seed 0" in html
    assert "--target top-dynamic:8 --from" in html  # how to make the unit gallery


def test_report_lists_bad_runs_as_skipped_and_keeps_the_rest(run, tmp_path):
    missing = tmp_path / "missing"
    shutil.copytree(run, missing)
    (missing / "units.csv").unlink()
    old = tmp_path / "old"
    shutil.copytree(run, old)
    doc = json.loads((old / "result.json").read_text())
    doc["format_version"] = FORMAT_VERSION + 1  # written by a newer stlens
    (old / "result.json").write_text(json.dumps(doc))
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "result.json").write_text('{"layers": [')
    nowhere = tmp_path / "nowhere"
    moved = tmp_path / "moved"  # a good run whose data folder is gone: no example pairs, a note instead
    shutil.copytree(run, moved)
    doc = json.loads((moved / "result.json").read_text())
    doc["data"] = str(tmp_path / "gone")
    (moved / "result.json").write_text(json.dumps(doc))
    (moved / ".stlens-run.json").unlink()  # edited by hand: an unmarked folder, loaded with a warning
    out = tmp_path / "r.html"
    assert main(["report", str(run), str(missing), str(old), str(broken), str(nowhere), str(moved), "--out",
                 str(out)]) == 0
    html = out.read_text()
    skipped = html[html.index('id="skipped"'):html.index('id="comparison"')]
    assert f"{missing}: missing units.csv" in skipped
    assert (f"format_version {FORMAT_VERSION + 1} was written by a newer stlens (this one reads up to "
            f"{FORMAT_VERSION})") in skipped
    assert f"{broken / 'result.json'}: damaged or truncated (invalid JSON at line 1" in skipped
    assert f"{nowhere}</code>: not found" in skipped
    assert str(moved) not in skipped and str(run) + "</code>" not in skipped
    assert html.count('<section id="run-') == 2  # the good run and the one with its data gone
    assert "pairs not shown: data source not found" in html


def test_report_of_nothing_usable_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_plots_only_writes_png_and_svg(run, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(run, other)
    out = tmp_path / "plots"
    assert main(["report", "--plots-only", str(run), str(other), "--out", str(out)]) == 0
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["comparison.png", "run/channels.png", "run/classes.png", "run/layers.png",
                    "second/channels.png", "second/classes.png", "second/layers.png"]
    for png in out.rglob("*.png"):
        pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert pixels.shape[0] > 100 and pixels.std() > 5  # a drawn figure, not a blank canvas
        svg = png.with_suffix(".svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "&lt;script&gt;" in (out / "run" / "layers.svg").read_text()  # the layer name as escaped SVG text
    # default: a plots/ folder inside the run
    single = tmp_path / "single"
    shutil.copytree(run, single)
    assert main(["report", "--plots-only", str(single)]) == 0
    assert sorted(p.name for p in (single / "plots").iterdir()) == sorted(
        f"{n}.{e}" for n in ("layers", "classes", "channels") for e in ("png", "svg"))


def test_load_result_round_trips_the_files(run, tmp_path):
    loaded = stlens.load_result(run)
    assert loaded.to_dict() == json.loads((run / "result.json").read_text())
    units = loaded.units_frame()
    assert units["layer"].tolist().count(EVIL_LAYER) == loaded[EVIL_LAYER].channels == 8
    loaded.save(tmp_path / "again", json.loads((run / "config.json").read_text()))
    assert loaded.run_id != json.loads((run / "result.json").read_text())["run_id"]  # a save is a new run
    for name in ("result.json", "layers.csv", "units.csv", "config.json"):
        again = (tmp_path / "again" / name).read_text().replace(loaded.run_id, "ID")
        first = (run / name).read_text().replace(json.loads((run / "result.json").read_text())["run_id"], "ID")
        assert again == first, name


def test_load_result_errors_name_the_file(run, tmp_path):
    with pytest.raises(stlens.StlensError, match="not a folder"):
        stlens.load_result(tmp_path / "none")
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    lines = (bad / "units.csv").read_text().splitlines()
    (bad / "units.csv").write_text("\n".join(lines[:-1]) + "\n")  # one channel row lost
    with pytest.raises(stlens.StlensError, match=r"units.csv: changed since the run wrote it"):
        stlens.load_result(bad)
    (bad / ".stlens-run.json").unlink()  # an unmarked folder (stlens 0.1.0): the files themselves are checked
    with pytest.raises(stlens.StlensError, match=r"units.csv: layer .* has 7 channel rows, result.json says 8"):
        stlens.load_result(bad)
    (bad / "units.csv").write_text("\n".join(lines[:2] + [lines[2].rsplit(",", 1)[0] + ",weird"]) + "\n")
    with pytest.raises(stlens.StlensError, match="units.csv, line 3: unknown class 'weird'"):
        stlens.load_result(bad)
    doc = json.loads((run / "result.json").read_text())
    doc["stlens_version"] = "9.0.0"  # information only: another stlens version reads alike
    (bad / "result.json").write_text(json.dumps(doc))
    shutil.copy(run / "units.csv", bad / "units.csv")
    assert stlens.load_result(bad).meta["stlens_version"] == "9.0.0"
    doc["format_version"] = FORMAT_VERSION + 1
    (bad / "result.json").write_text(json.dumps(doc))
    with pytest.raises(stlens.StlensError, match=f"result.json: format_version {FORMAT_VERSION + 1} was written by"):
        stlens.load_result(bad)
    assert stlens.load_result(bad, check_version=False).meta["stlens_version"] == "9.0.0"  # read anyway


def test_notebook_html_and_plot(run):
    result = stlens.load_result(run)
    html = result._repr_html_()
    assert EVIL_LAYER not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tags = parse(html)
    assert [t for t, _ in tags.tags].count("tr") == 1 + len(result.layers)
    figure = result.plot()
    bars = figure.axes[0].containers[0]  # the dynamic segments, bottom of each stack
    assert [b.get_height() for b in bars] == [layer.percent["dynamic"] for layer in result.layers]
    stacked = figure.axes[0].containers[1]
    assert [b.get_y() for b in stacked] == [layer.percent["dynamic"] for layer in result.layers]
    assert len(result.plot("channels").axes) >= len(result.layers)
    with pytest.raises(stlens.StlensError, match="unknown plot kind 'pie'"):
        result.plot("pie")


def test_demo_root_nesting_and_track_and_gallery(run, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(run, root / "modelA" / "synth")
    shutil.copytree(run, root / "modelB" / "sample")
    shutil.copytree(run, root / "modelA" / "synth" / "vis_not")  # nested copy inside a run is a run of its own
    track = tmp_path / "track"
    track.mkdir()
    rows = ["step,layer,channels,dynamic,dynamic_lo,dynamic_hi,static,static_lo,static_hi"]
    for step in (0, 100, 200):
        for layer, base in (("stem", 10.0), (EVIL_LAYER, 20.0)):
            rows.append(f"{step},{layer},8,{base + step / 20},{base},{base + 15},{40 - step / 20},30,45")
    (track / "track.csv").write_text("\n".join(rows) + "\n")
    (track / "step_000100").mkdir()
    shutil.copytree(run, track / "step_000100" / "measure")  # per-step runs belong to the track
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (0, 128, 255)]
    vis = tmp_path / "vis"  # the stlens visualize layout: summary.json, <target>/video.gif, flow_paper.gif, result.json
    records = [{"target": "top-dynamic_ch3", "objective": "channel", "lambda_t": 0.5, "objective_value": 2.25},
               {"target": "top-static_ch5", "objective": "channel", "lambda_t": 0.5, "objective_value": 1.0}]
    for record in records:
        (vis / record["target"]).mkdir(parents=True)
        for name in ("video.gif", "flow_paper.gif", "flow_wheel.gif"):
            frames[0].save(vis / record["target"] / name, save_all=True, append_images=frames[1:], loop=0)
        (vis / record["target"] / "result.json").write_text(json.dumps(record))
    (vis / "summary.json").write_text(json.dumps({"config": {"model": "stlens:c2d", "layer": EVIL_LAYER},
                                                  "targets": records}))
    loose = tmp_path / "loose"  # any folder of GIF + JSON
    loose.mkdir()
    frames[0].save(loose / "channel_3.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (loose / "channel_3.json").write_text(json.dumps({"layer": EVIL_LAYER, "target": "channel:3", "steps": 64}))
    found = find_inputs([root, track, vis, loose])
    assert [p.relative_to(tmp_path).as_posix() for p in found.runs] == [
        "demo/modelA/synth", "demo/modelA/synth/vis_not", "demo/modelB/sample"]
    assert found.tracks == [track] and found.visuals == [vis, loose] and not found.skipped
    out = tmp_path / "r.html"
    assert main(["report", str(root), str(track), str(vis), str(loose), "--out", str(out), "--examples", "0"]) == 0
    html = out.read_text()
    assert html.count('<section id="run-') == 3 and 'id="pairs"' not in html
    tracks = html[html.index('id="tracks"'):html.index('id="gallery"')]
    assert "3 steps (0 … 200)" in tracks and "data:image/png;base64," in tracks
    assert "stem dynamic 20.0 % / static 30.0 %" in tracks  # the last step's values: 10 + 200/20, 40 − 200/20
    gallery = html[html.index('id="gallery"'):]
    assert gallery.count("data:image/gif;base64,") == 2 * 2 + 1  # RGB + flow per target, and the loose GIF
    assert "<b>top-dynamic_ch3</b> · objective channel · lambda_t 0.5 · objective_value 2.25" in gallery
    assert "layer <code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in gallery  # the visualize settings
    assert "<b>channel_3.gif</b> · layer &lt;script&gt;alert(1)&lt;/script&gt;" in gallery
    assert EVIL_LAYER not in html


def test_load_track_json_forms(tmp_path):
    from stlens.report.tracks import load_track

    (tmp_path / "track.json").write_text(json.dumps({"rows": [
        {"step": 5, "layers": [{"layer": "a", "percent": {"dynamic": 12.5, "static": 30.0},
                                "ci95": {"dynamic": [10.0, 15.0], "static": [25.0, 35.0]}}]},
        {"step": 1, "layers": [{"layer": "a", "percent": {"dynamic": 2.5, "static": 40.0},
                                "ci95": {"dynamic": None, "static": None}}]},
    ]}))
    table = load_track(tmp_path)
    assert table["step"].tolist() == [1, 5] and table["dynamic"].tolist() == [2.5, 12.5]
    assert table.loc[1, "dynamic_low"] == 10.0 and table.loc[1, "static_high"] == 35.0
    (tmp_path / "track.json").write_text(json.dumps([{"epoch": 1, "dyn": 3}]))
    with pytest.raises(stlens.StlensError, match="no dynamic percent column"):
        load_track(tmp_path)


def test_figures_show_the_numbers(run):
    from stlens.report import plots

    result = stlens.load_result(run)
    layer = result[EVIL_LAYER]
    scatter = plots.channel_scatter(result, [EVIL_LAYER])
    points = np.concatenate([c.get_offsets() for c in scatter.axes[0].collections])
    expected = np.stack([layer.r_static, layer.r_dynamic], axis=1)
    assert sorted(map(tuple, points)) == sorted(map(tuple, expected))  # every channel once, at (r_S, r_D)
    lines = scatter.axes[0].get_lines()
    assert [ln.get_xdata()[0] for ln in lines[:1]] == [result.meta["threshold"]]  # the vertical τ line
    comparison = plots.model_comparison([("a", layer), ("b", result["stem"])])
    marks = [c.lines[0] for c in comparison.axes[0].containers]  # the data line of each errorbar
    centres = [(float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in marks]
    assert centres == [(layer.percent["static"], layer.percent["dynamic"]),
                       (result["stem"].percent["static"], result["stem"].percent["dynamic"])]
    classes = plots.unit_classes(result)
    tops = [sum(b.get_height() for c in classes.axes[0].containers for b in [c[i]]) for i in range(2)]
    assert np.allclose(tops, 100.0)  # the class shares of each layer add up to all channels
