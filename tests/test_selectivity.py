"""stlens.selectivity: the index, the shift rule, classes served and the kinds against a hand computation; the
bootstrap against explicit resampling; a planted model whose units are known; the CLI end to end on a synth world
with a measure run joined; bad inputs (exit 2 naming the option, nothing written)."""

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
                                top_k=3, progress=False)
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
    result = stlens.selectivity(PlantedNet(), ClassClips(8), ["feat"], device="cpu", bootstrap=0, progress=False)
    result.model = "<b>x</b>"
    assert "<b>x</b>" not in result._repr_html_() and "&lt;b&gt;" in result._repr_html_()


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
                 "--quiet"]) == 0
    assert {"selectivity.csv", "selectivity.json", "class_means.npz", "selectivity.png"} <= {
        p.name for p in out.iterdir()}
    doc = json.loads((out / "selectivity.json").read_text())
    assert next(iter(doc)) == "format_version" and doc["format_version"] == FORMAT_VERSION
    assert [layer["layer"] for layer in doc["layers"]] == ["stage3", "stage4"] and doc["clips"] == 16
    assert len(doc["layers"][0]["top_clips"][0]) == 2 and "by_unit_class" in doc["layers"][0]
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
