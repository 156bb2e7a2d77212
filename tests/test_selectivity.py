"""stlens.selectivity: the index, the shift rule, classes served and the kinds against a hand computation; the
bootstrap against explicit resampling; a planted model whose units are known; the gallery (the exact clips of the
pass, re-drawn here, beside the channel's activation-maximization video); the CLI end to end on a synth world with a
measure run joined; bad inputs (exit 2 naming the option, nothing written)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import stlens
from stlens._version import FORMAT_VERSION
from stlens.cli import main
from stlens.errors import StlensError
from stlens.runs import MARKER, file_entry
from stlens.selectivity import index as si
from stlens.selectivity import load_selectivity

pytestmark = pytest.mark.usefixtures("one_thread")

# -------------------------------------------------------------------------------------------------------- maths

LABELS = np.array([0, 0, 1, 1, 2, 2])
RESPONSES = np.array([  # channels: class-0 unit (≥ 0), a unit with negative means, a dead unit
    [4.0, -1.0, 0.0], [2.0, -3.0, 0.0],
    [1.0, 1.0, 0.0], [1.0, 1.0, 0.0],
    [0.0, 2.0, 0.0], [0.0, 2.0, 0.0],
])


def test_the_index_and_the_rules_by_hand():
    means = si.class_means(RESPONSES, LABELS, 3)
    np.testing.assert_allclose(means, [[3, -2, 0], [1, 1, 0], [0, 2, 0]])
    # channel 0: all ≥ 0, not shifted: top 3, rest (1 + 0)/2 → (3 − .5)/(3 + .5); channel 1 shifted by +2 → 0, 3, 4:
    # top 4, rest 1.5 → 2.5/5.5; channel 2: all 0 → 0
    np.testing.assert_allclose(si.shifted(means)[:, 1], [0, 3, 4])
    np.testing.assert_allclose(si.selectivity_index(means), [2.5 / 3.5, 2.5 / 5.5, 0.0])
    # served: ≥ .5 · top — channel 0: {0} (1 < 1.5); channel 1: {1, 2} (3 ≥ 2); the dead channel none
    assert si.classes_served(means).tolist() == [1, 2, 0]
    # reference: median of the live channels' peaks (3, 4) = 3.5; responds: m > 0 and m ≥ .25 · 3.5 = .875
    assert si.layer_reference(means) == 3.5
    assert si.responding(means)[:, :2].T.tolist() == [[True, True, False], [False, True, True]]
    index = si.selectivity_index(means)
    assert si.kinds(means, index, index) == ["class-specific", "generic", "weak"]
    # the lower bound decides: an interval reaching under .5 is not class-specific
    assert si.kinds(means, np.array([0.4, 0.4, 0]), np.array([0.9, 0.6, 0]))[:2] == ["weak", "weak"]


def test_a_class_without_clips_is_left_out():
    means = si.class_means(RESPONSES, LABELS, 4)
    assert np.isnan(means[3]).all()
    np.testing.assert_allclose(si.selectivity_index(means), [2.5 / 3.5, 2.5 / 5.5, 0.0])
    assert si.classes_served(means).tolist() == [1, 2, 0]
    one_class = si.class_means(RESPONSES[:2], LABELS[:2], 3)
    assert np.isnan(si.selectivity_index(one_class)).all()


def test_the_bootstrap_is_explicit_resampling_of_clips():
    rng = np.random.default_rng(5)
    responses, labels = rng.random((12, 4)), np.repeat(np.arange(3), 4)
    low, high, replicates = si.bootstrap_bounds(responses, labels, 3, 50, seed=7)
    draws = np.random.default_rng([7, 0x5E1EC7]).multinomial(12, np.full(12, 1 / 12), size=50)
    by_hand = []
    for counts in draws:
        picked = np.repeat(np.arange(12), counts)  # the resampled clips, each as often as drawn
        means = np.full((3, 4), np.nan)
        for c in range(3):
            rows = [responses[i] for i in picked if labels[i] == c]
            if rows:
                means[c] = np.mean(rows, axis=0)
        by_hand.append(si.selectivity_index(means))
    by_hand = np.array(by_hand)
    np.testing.assert_allclose(low, np.nanpercentile(by_hand, 2.5, axis=0))
    np.testing.assert_allclose(high, np.nanpercentile(by_hand, 97.5, axis=0))
    np.testing.assert_allclose(replicates, np.nanmean(by_hand, axis=1))
    assert np.isnan(si.bootstrap_bounds(responses, labels, 3, 0, seed=7)[0]).all()


def test_top_clips_are_the_highest_responses_first():
    assert si.top_clips(RESPONSES, 2)[:, 0].tolist() == [0, 1]
    assert si.top_clips(RESPONSES, 2)[:, 1].tolist() == [4, 5]


def test_units_are_ranked_by_the_lower_bound_then_the_index():
    lows = [np.array([0.6, np.nan, 0.6, 0.2]), np.array([0.7, 0.6])]
    indices = [np.array([0.8, 0.9, 0.9, 0.9]), np.array([0.1, 0.8])]
    # 0.7 first; three units at 0.6: index 0.9, then 0.8 twice in layer-then-channel order; NaN left out
    assert si.ranked_units(lows, indices, 10) == [(1, 0), (0, 2), (0, 0), (1, 1), (0, 3)]
    assert si.ranked_units(lows, indices, 2) == [(1, 0), (0, 2)]


# ------------------------------------------------------------------------------------------------ planted model

class ClassClips:
    """Clip i has class i % 4; input channel 0 holds the class, channel 1 a small clip-specific jitter."""

    task = "classify"
    num_classes = 4

    def __init__(self, n: int = 32):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices, rng):
        x = torch.zeros(len(indices), 3, 2, 4, 4)
        for row, i in enumerate(indices):
            x[row, 0] = float(i % 4)
            x[row, 1] = 0.1 * ((i * 7) % 5) / 5
        return x, torch.tensor([int(i) % 4 for i in indices])


class Feature(nn.Module):
    """Channel 0 fires for class 0 only, channel 1 for every class alike, channel 2 never."""

    def forward(self, x):
        jitter = x[:, 1:2]
        only_zero = (x[:, 0:1] == 0).float() * (1 + jitter)
        return torch.cat([only_zero, 1 + jitter, torch.zeros_like(jitter)], dim=1)


class PlantedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.feat = Feature()
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        return self.head(self.feat(x).mean(dim=(2, 3, 4)))


def test_a_planted_model_gives_class_specific_generic_and_weak_units():
    result = stlens.selectivity(PlantedNet(), ClassClips(), ["feat"], batch_size=8, device="cpu", bootstrap=50,
                                top_k=3, progress=False, gallery=0)
    layer = result["feat"]
    assert layer.kinds == ["class-specific", "generic", "weak"]
    assert layer.index[0] == pytest.approx(1.0) and layer.low[0] == pytest.approx(1.0)
    assert layer.index[1] < 0.05 and layer.high[1] < 0.5 and layer.index[2] == 0.0
    assert layer.top_class[0] == 0 and layer.served.tolist() == [1, 4, 0]
    assert all(result.clip_labels[i] == 0 for i in layer.top[:, 0])
    np.testing.assert_allclose(layer.means[:, 2], 0.0)
    assert layer.summary["counts"] == {"class-specific": 1, "generic": 1, "weak": 1}
    assert "feat" in repr(result) and "&lt;" not in result._repr_html_()


def test_html_escapes_names():
    result = stlens.selectivity(PlantedNet(), ClassClips(8), ["feat"], device="cpu", bootstrap=0, progress=False,
                                gallery=0)
    result.model = "<b>x</b>"
    assert "<b>x</b>" not in result._repr_html_() and "&lt;b&gt;" in result._repr_html_()


# ------------------------------------------------------------------------------------------------------ gallery

FRAMES, SIZE, BATCH, SEED = 4, 32, 4, 5


def colours(rng: np.random.Generator) -> np.ndarray:
    """One clip: each frame one flat colour drawn from ``rng``."""
    return np.broadcast_to(rng.integers(0, 256, (FRAMES, 1, 1, 3), dtype=np.uint8), (FRAMES, SIZE, SIZE, 3)).copy()


class ColourClips:
    """Clip i has class i % 4; its frames are flat colours drawn from the batch's generator in batch order, so a clip
    is only found again by drawing its own batch with its own generator."""

    task = "classify"
    num_classes = 4

    def __init__(self, spec, n: int = 16):
        self.spec, self.n = spec, n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices, rng):
        from stlens.video.sampling import to_model_input

        clips = [to_model_input(colours(rng), self.spec) for _ in indices]
        return torch.stack(clips), torch.tensor([int(i) % 4 for i in indices])


def drawn(i: int) -> np.ndarray:
    """Clip i as the pass drew it, worked out here: batch i // BATCH, generator (SEED, batch), clips in order."""
    rng = np.random.default_rng((SEED, i // BATCH))
    for _ in range(i % BATCH):
        colours(rng)
    return colours(rng)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return stlens.load_model("stlens:i3d?width=4", frames=FRAMES, size=SIZE)


def test_the_gallery_shows_the_exact_clips_of_the_pass_and_the_channels_visualization(tiny, tmp_path):
    from PIL import Image

    from stlens.visualize.api import visualize
    from stlens.visualize.objectives import channel

    out = tmp_path / "s"
    result = stlens.selectivity(tiny, ColourClips(tiny.input), ["stage3", "stage4"], batch_size=BATCH,
                                device="cpu", bootstrap=10, top_k=3, seed=SEED, gallery=2, gallery_steps=2, out=out,
                                progress=False)
    rows = list(csv.DictReader(open(out / "selectivity.csv", newline="")))
    ranked = sorted(rows, key=lambda r: (-float(r["selectivity_lo"]), -float(r["selectivity"])))[:2]
    assert [(e["layer"], e["channel"]) for e in result.gallery] == [(r["layer"], int(r["channel"])) for r in ranked]
    videos = visualize(tiny, [channel(e["layer"], e["channel"]) for e in result.gallery], steps=2, device="cpu",
                       seed=SEED, natural_clips=0, progress=False, batch_size=2)
    shown = []
    for k, entry in enumerate(result.gallery):
        clips = [c["clip"] for c in entry["clips"]]
        assert clips == result[entry["layer"]].top[:, entry["channel"]].tolist() and len(clips) == 3
        panels = np.split(entry["frames"], 4, axis=2)
        for clip, panel in zip(clips, panels, strict=False):
            np.testing.assert_array_equal(panel, drawn(clip))
        np.testing.assert_array_equal(panels[3], videos.targets[k].rgb)
        shown += clips
        with Image.open(out / entry["gif"]) as gif:  # the GIF (upscaled, palette) holds the kept frames
            assert gif.n_frames == FRAMES and entry["gif"] == f"gallery/unit{k}.gif"
            for t in range(FRAMES):
                gif.seek(t)
                frame = np.asarray(gif.convert("RGB"))
                step = frame.shape[0] // SIZE
                first = frame[::step, ::step][:, :SIZE].astype(int)
                assert np.abs(first - drawn(clips[0])[t]).mean() < 3
    assert any(i >= BATCH for i in shown) and any(i % BATCH for i in shown)  # other batches and places were re-drawn
    doc = json.loads((out / "selectivity.json").read_text())
    assert doc["settings"]["gallery"] == 2 and doc["settings"]["gallery_steps"] == 2
    assert doc["gallery"] == [{k: v for k, v in e.items() if k != "frames"} for e in result.gallery]
    assert doc["gallery"][0]["clips"][0]["class"] == doc["gallery"][0]["clips"][0]["clip"] % 4
    again = load_selectivity(out)
    assert again.gallery == doc["gallery"]
    again.save(tmp_path / "copy")  # a loaded run keeps its gallery when saved elsewhere
    assert (tmp_path / "copy" / "gallery" / "unit1.gif").read_bytes() == (out / "gallery" / "unit1.gif").read_bytes()


def test_gallery_0_writes_none_and_never_visualizes(monkeypatch, tmp_path):
    import stlens.visualize.api

    def refuse(*args, **kwargs):
        raise AssertionError("visualize called")

    monkeypatch.setattr(stlens.visualize.api, "visualize", refuse)
    with pytest.raises(AssertionError, match="visualize called"):  # the check can fail: gallery=1 does call it
        stlens.selectivity(PlantedNet(), ClassClips(8), ["feat"], device="cpu", bootstrap=0, progress=False,
                           gallery=1)
    out = tmp_path / "s"
    result = stlens.selectivity(PlantedNet(), ClassClips(8), ["feat"], device="cpu", bootstrap=0, progress=False,
                                gallery=0, out=out)
    assert result.gallery == [] and not (out / "gallery").exists()
    assert json.loads((out / "selectivity.json").read_text())["gallery"] == []


def test_a_file_without_a_gallery_still_loads(tmp_path):
    out = tmp_path / "s"
    stlens.selectivity(PlantedNet(), ClassClips(8), ["feat"], device="cpu", bootstrap=0, progress=False, gallery=0,
                       out=out)
    doc = json.loads((out / "selectivity.json").read_text())
    del doc["gallery"]  # as written before the gallery
    (out / "selectivity.json").write_text(json.dumps(doc))
    marker = json.loads((out / MARKER).read_text())
    marker["files"]["selectivity.json"] = file_entry(out / "selectivity.json")  # as if the run had written it
    (out / MARKER).write_text(json.dumps(marker))
    assert load_selectivity(out).gallery == []


# ---------------------------------------------------------------------------------------------- CLI end to end

MODEL = ["--model", "stlens:i3d?width=4", "--frames", "4", "--size", "32"]
DATA = "synth:motion?split=test&n=16&seed=3"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("measured") / "m"
    assert main(["measure", *MODEL, "--data", "synth:motion?split=test&seed=11", "--pairs", "4", "--layers",
                 "stage3,stage4", "--bootstrap", "0", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    return out


def test_the_cli_writes_the_folder_with_the_measure_run_joined(measured, tmp_path):
    out = tmp_path / "s"
    assert main(["selectivity", *MODEL, "--data", DATA, "--layers", "stage3,stage4", "--from", str(measured),
                 "--bootstrap", "20", "--top-k", "2", "--batch-size", "8", "--device", "cpu", "--out", str(out),
                 "--gallery", "1", "--gallery-steps", "2", "--quiet"]) == 0
    assert {"selectivity.csv", "selectivity.json", "class_means.npz", "selectivity.png", "gallery"} <= {
        p.name for p in out.iterdir()}
    assert [p.name for p in (out / "gallery").iterdir()] == ["unit0.gif"]
    doc = json.loads((out / "selectivity.json").read_text())
    assert next(iter(doc)) == "format_version" and doc["format_version"] == FORMAT_VERSION
    assert [layer["layer"] for layer in doc["layers"]] == ["stage3", "stage4"] and doc["clips"] == 16
    assert len(doc["layers"][0]["top_clips"][0]) == 2 and "by_unit_class" in doc["layers"][0]
    assert doc["settings"]["gallery_steps"] == 2 and [e["gif"] for e in doc["gallery"]] == ["gallery/unit0.gif"]
    unit = doc["gallery"][0]
    top = doc["layers"][["stage3", "stage4"].index(unit["layer"])]["top_clips"][unit["channel"]]
    assert unit["clips"] == top  # the clips shown are the unit's top clips
    with open(out / "selectivity.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"layer", "channel", "selectivity", "selectivity_lo", "selectivity_hi", "top_class", "classes_served",
            "selectivity_kind", "unit_class", "r_dynamic", "r_static"} <= set(rows[0])
    units = {(r["layer"], r["channel"]): r for r in csv.DictReader(open(measured / "units.csv", newline=""))}
    for row in rows:
        assert row["unit_class"] == units[(row["layer"], row["channel"])]["class"]
        assert float(row["r_dynamic"]) == pytest.approx(float(units[(row["layer"], row["channel"])]["r_dynamic"]))
        assert float(row["selectivity_lo"]) <= float(row["selectivity_hi"])
    with np.load(out / "class_means.npz") as npz:
        assert npz["stage4"].shape == (len(doc["classes"]), doc["layers"][1]["channels"])
    loaded = load_selectivity(out)
    assert loaded.joined and loaded["stage4"].kinds == [r["selectivity_kind"] for r in rows if r["layer"] == "stage4"]
    np.testing.assert_allclose(loaded["stage4"].means, npz_means(out)["stage4"])


def npz_means(out):
    with np.load(out / "class_means.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize(("extra", "message"), [
    (["--top-k", "0"], "--top-k must be ≥ 1"),
    (["--gallery", "-1"], "--gallery must be ≥ 0"),
    (["--gallery-steps", "0"], "--gallery-steps must be ≥ 1"),
    (["--layers", "stage9"], "unknown layer 'stage9'"),
    (["--layers", "stage2"], "--from"),
])
def test_bad_inputs_exit_2_naming_the_option_and_write_nothing(measured, tmp_path, capsys, extra, message):
    out = tmp_path / "s"
    assert main(["selectivity", *MODEL, "--data", DATA, "--from", str(measured), "--device", "cpu", "--out", str(out),
                 "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and not re.search(r"`[a-z_]+`", err)  # Python names written as options
    assert not out.exists() or not any(p.name.startswith("selectivity") for p in out.iterdir())


def test_channel_counts_that_differ_are_refused_naming_the_layer(measured):
    with pytest.raises(StlensError, match="layer 'stage4' has .* channels there"):
        stlens.selectivity("stlens:i3d?width=8", DATA, "stage4", frames=4, size=32, from_run=measured, device="cpu",
                           bootstrap=0, progress=False)
