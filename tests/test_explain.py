"""stlens explain: attribution maps checked against planted models and a hand-computed Grad-CAM; the CLI's folder;
bad inputs refused before anything is written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("captum")

import stlens  # noqa: E402
from stlens.cli import main  # noqa: E402

T, S, T0 = 4, 16, 2


class Planted(nn.Module):
    """Class 0's logit is the mean of frame T0's top-left 8×8 corner; class 1's is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, T0, :8, :8].mean((1, 2, 3))
        return torch.stack([corner, torch.zeros_like(corner)], 1)


class Clips:
    """Random positive clips, all labelled 0."""

    num_classes = 2

    def __len__(self) -> int:
        return 3

    def batch(self, indices, rng):
        g = torch.Generator().manual_seed(int(indices[0]))
        return torch.rand(len(indices), 3, T, S, S, generator=g) + 0.5, torch.zeros(len(indices), dtype=torch.long)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3))


def test_integrated_gradients_find_the_planted_frame_and_corner():
    result = stlens.explain(Planted(), Clips(), method="ig", target=0, clips=3, steps=4, frames=T, size=S,
                            device="cpu", progress=False)
    maps = result.maps["rgb"]
    assert maps.shape == (3, T, S, S)
    np.testing.assert_allclose(maps.sum((1, 2, 3)), 1, atol=1e-5)
    assert (maps[:, T0, :8, :8].sum((1, 2)) >= 0.9).all()
    assert (result.curves.argmax(1) == T0).all()
    assert np.isnan(result.mask_shares).all()  # these clips have no masks


def test_gradcam_is_the_hand_computed_map():
    net = tiny_net()
    result = stlens.explain(net, Clips(), method="gradcam", layer="2", target="label", clips=1, frames=T, size=S,
                            device="cpu", progress=False)
    got = result.maps["rgb"][0]
    assert got.shape == (T, S, S) and got.min() >= 0 and abs(got.sum() - 1) < 1e-5
    x, _ = Clips().batch(np.array([0]), None)
    kept = {}
    net[2].register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    logit = net(x)[0, 0]
    a = kept["a"]
    (g,) = torch.autograd.grad(logit, a)
    cam = torch.relu((g.mean((2, 3, 4), keepdim=True) * a).sum(1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=(T, S, S), mode="trilinear", align_corners=False)[0, 0].detach().numpy()
    np.testing.assert_allclose(got, cam / cam.sum(), rtol=1e-4, atol=1e-7)


def test_the_cli_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    assert main(["explain", "--model", "stlens:i3d?width=4", "--data", "synth:motion?n=4", "--frames", "4", "--size",
                 "32", "--clips", "2", "--method", "ig", "--steps", "2", "--device", "cpu", "--out", str(out),
                 "--quiet"]) == 0
    rows = list(csv.DictReader((out / "explain.csv").open()))
    assert len(rows) == 2 and list(rows[0])[:6] == ["clip", "label", "predicted", "target", "score", "probability"]
    assert {f"mass_frame_{t}" for t in range(4)} | {"mask_share", "spearman_shuffled", "spearman_restyled"} <= set(
        rows[0])
    assert all(0 <= float(r["mask_share"]) <= 1 for r in rows)  # synth worlds give masks
    assert abs(sum(float(rows[0][f"mass_frame_{t}"]) for t in range(4)) - 1) < 1e-4
    with np.load(out / "attributions.npz") as npz:
        assert sorted(npz.files) == ["clip0", "clip1"] and npz["clip0"].shape == (4, 32, 32)
        assert npz["clip0"].dtype == np.float32
    doc = json.loads((out / "explain.json").read_text())
    assert "format_version" in doc and doc["settings"]["method"] == "ig" and doc["summary"]["clips"] == 2
    assert (out / "explain_clip0.gif").is_file()


@pytest.mark.parametrize(("extra", "option"), [(["--method", "lime"], "--method"), (["--layers", "nope"], "--layers"),
                                                (["--method", "ig", "--steps", "0"], "--steps")])
def test_bad_inputs_exit_2_naming_the_option(tmp_path, capsys, extra, option):
    out = tmp_path / "run"
    argv = ["explain", "--model", "stlens:i3d?width=4", "--data", "synth:motion?n=2", "--frames", "4", "--size", "16",
            "--clips", "1", "--device", "cpu", "--out", str(out), "--quiet", *extra]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and option in capsys.readouterr().err
    assert not (out / "explain.csv").exists() and not (out / "explain.json").exists()


class CueReader(nn.Module):
    """Class 0's logit is the sum of the 2×2 top-left corner (the cue box of a 16 px shortcut world)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, :, :2, :2].sum((1, 2, 3, 4))
        return torch.stack([corner, torch.zeros_like(corner)], 1)


def test_cue_share_is_the_mass_in_the_cue_box_and_only_where_the_data_has_cues(tmp_path):
    data = "synth:motion?n=3&frames=4&size=16&shortcut=0.5"
    result = stlens.explain(CueReader(), data, method="ig", target=0, clips=3, steps=2, frames=T, size=S,
                            device="cpu", progress=False, out=tmp_path / "cue")
    np.testing.assert_allclose(result.cue_shares, 1, atol=1e-5)  # all of the map lies in the cue box
    assert (result.mask_shares < 0.5).all()
    rows = list(csv.DictReader((tmp_path / "cue" / "explain.csv").open()))
    assert [float(r["cue_share"]) for r in rows] == pytest.approx([1, 1, 1], abs=1e-4)
    assert json.loads((tmp_path / "cue" / "explain.json").read_text())["summary"]["cue_share"] == pytest.approx(1)
    plain = stlens.explain(CueReader(), "synth:motion?n=1&frames=4&size=16", method="ig", target=0, clips=1, steps=2,
                           frames=T, size=S, device="cpu", progress=False)
    assert plain.cue_shares is None and "cue_share" not in plain.csv_text() and "cue_share" not in plain.summary


def test_errors_explains_only_misclassified_clips_with_class_visualizations(tmp_path):
    out = tmp_path / "err"
    assert main(["explain", "--model", "stlens:i3d?width=4", "--data", "synth:motion?n=12", "--frames", "4", "--size",
                 "16", "--errors", "2", "--error-steps", "2", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "explain.json").read_text())
    errors = doc["errors"]
    assert 1 <= len(errors) <= 2 and doc["settings"]["errors"] == 2
    rows = list(csv.DictReader((out / "explain.csv").open()))
    assert [r["clip"] for r in rows] == [e["clip"] for e in errors]
    for e, r in zip(errors, rows, strict=True):
        assert e["predicted"] != e["label"] and int(r["predicted"]) == e["predicted"] and int(r["label"]) == e["label"]
        assert (out / e["gif"]).is_file()
    assert sorted(p.name for p in (out / "errors").iterdir()) == [f"error{k}.gif" for k in range(len(errors))]


F0 = 1  # the flow field the planted two-input model reads


class PlantedTwoInput(nn.Module):
    """Class 0's logit: the sum of rgb frame T0's top-left 8×8 corner plus twice the sum of flow field F0's
    bottom-right 8×8 corner (linear, so integrated gradients from zero are exactly input × weight)."""

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        logit = rgb[:, :, T0, :8, :8].sum((1, 2, 3)) + 2 * flow[:, :, F0, 8:, 8:].sum((1, 2, 3))
        return torch.stack([logit, torch.zeros_like(logit)], 1)


class TwoInputClips:
    """Random positive rgb clips with random signed flow (B, 2, T − 1, S, S), labelled 0."""

    num_classes = 2

    def __len__(self) -> int:
        return 2

    def batch(self, indices, rng):
        g = torch.Generator().manual_seed(int(indices[0]) + 7)
        rgb = torch.rand(len(indices), 3, T, S, S, generator=g) + 0.5
        flow = torch.randn(len(indices), 2, T - 1, S, S, generator=g)
        return (rgb, flow), torch.zeros(len(indices), dtype=torch.long)


def test_integrated_gradients_give_a_flow_map_that_follows_the_flow_input():
    result = stlens.explain(PlantedTwoInput(), TwoInputClips(), method="ig", target=0, clips=2, steps=3, frames=T,
                            size=S, batch_size=2, device="cpu", progress=False)
    assert list(result.maps) == ["rgb", "flow"]
    (rgb, flow), _ = TwoInputClips().batch(np.array([0, 1]), None)
    expected = np.zeros((2, T - 1, S, S))  # |flow × 2| summed over its two channels, in the read corner only
    expected[:, F0, 8:, 8:] = (2 * flow[:, :, F0, 8:, 8:]).abs().sum(1).numpy()
    np.testing.assert_allclose(result.maps["flow"], expected / expected.sum((1, 2, 3), keepdims=True), rtol=1e-4,
                               atol=1e-7)
    assert (result.maps["rgb"][:, T0, :8, :8].sum((1, 2)) > 1 - 1e-5).all()  # the rgb map stays on its own corner


def test_a_two_stream_model_gets_an_rgb_and_a_flow_map_per_clip(tmp_path):
    out = tmp_path / "ts"
    assert main(["explain", "--model", "stlens:twostream", "--weights", "bundled:twostream-motion", "--data",
                 "synth:motion?split=test&n=4", "--frames", "4", "--size", "32", "--clips", "2", "--method", "ig",
                 "--steps", "2", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "explain.json").read_text())
    assert doc["inputs"] == ["rgb", "flow"] and doc["summary"]["clips"] == 2
    with np.load(out / "attributions.npz") as npz:
        assert sorted(npz.files) == ["clip0_flow", "clip0_rgb", "clip1_flow", "clip1_rgb"]
        for i in range(2):
            assert npz[f"clip{i}_rgb"].shape == (4, 32, 32) and npz[f"clip{i}_flow"].shape == (3, 32, 32)
            for key in (f"clip{i}_rgb", f"clip{i}_flow"):
                assert npz[key].dtype == np.float32 and npz[key].min() >= 0
                assert abs(float(npz[key].sum(dtype=np.float64)) - 1) < 1e-4
            assert not np.allclose(npz[f"clip{i}_flow"], npz[f"clip{i}_rgb"][:3])  # its own map, not a copy
    rows = list(csv.DictReader((out / "explain.csv").open()))
    assert len(rows) == 2 and all(value not in (None, "") for r in rows for value in r.values())
    for r in rows:
        assert abs(sum(float(r[f"mass_frame_{t}"]) for t in range(4)) - 1) < 1e-4
        assert 0 <= float(r["mask_share"]) <= 1 and r["label_name"] == doc["classes"][int(r["label"])]
