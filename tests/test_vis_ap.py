"""Track AP wired into train, evaluate, ablate and report for a VIS model: every number is checked against
``track_ap`` / ``track_ap_bootstrap`` called directly on predictions made here (a forward of the same weights, with a
hook zeroing the same channels for a masked condition)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stlens
from stlens.cli import main
from stlens.errors import StlensError
from stlens.measure.trackap import SUMMARY, track_ap, track_ap_bootstrap
from stlens.models.zoo.vis import predict_tracks
from stlens.video.labelled import heldout_spec, open_clips

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "stlens:vis?width=8&queries=4&depth=1"
DATA = "synth:motion?task=instances&frames=4&size=32&n=8"
SHAPE = ["--frames", "4", "--size", "32"]
CLASSES = 4  # the synth instance worlds' categories
NAMES = ["east", "north", "west", "south"]


def _clips(data: str = DATA, count: int = 8):
    handle = stlens.load_model(MODEL, frames=4, size=32)
    clips = open_clips(data, handle.input, task=None)
    return clips.batch(np.arange(count), np.random.default_rng(0))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """Weights briefly fitted (30 AdamW steps, seeded) to the 8 clips of DATA, so that AP is well above 0."""
    from safetensors.torch import save_file

    from stlens.train.instances import clip_loss

    torch.manual_seed(0)
    module = stlens.load_model(MODEL, frames=4, size=32).module.train()
    inputs, targets = _clips()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    for _ in range(30):
        out = module(inputs)
        loss = torch.stack([clip_loss(out["logits"][i], out["masks"][i], t) for i, t in enumerate(targets)]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("vis") / "vis.safetensors"
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def _predict(weights: str, data: str = DATA, count: int = 8, zero: dict[str, list[int]] | None = None,
             threshold: float = 0.5):
    """(predicted tracks, targets) of the first ``count`` clips, made here; ``zero``: layer → channels zeroed by a
    forward hook (the channel axis: last for (B, Q, D) decoder outputs, 1 for (B, C, T, H, W) backbone outputs)."""
    module = stlens.load_model(MODEL, weights=weights, frames=4, size=32).module.eval()
    modules = dict(module.named_modules())
    hooks = []
    for layer, channels in (zero or {}).items():
        def hook(_module, _inputs, output, channels=channels):
            output = output.clone()
            if output.ndim == 3:
                output[..., channels] = 0
            else:
                output[:, channels] = 0
            return output
        hooks.append(modules[layer].register_forward_hook(hook))
    inputs, targets = _clips(data, count)
    with torch.no_grad():
        out = module(inputs)
    for h in hooks:
        h.remove()
    return predict_tracks(out, threshold), targets


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -------------------------------------------------------------------------------------------------------- evaluate


def test_evaluate_gives_track_ap_with_intervals_over_videos_and_per_class(weights, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", MODEL, "--weights", weights, "--data", DATA, *SHAPE, "--bootstrap", "200",
                 "--quiet", "--out", str(out)]) == 0
    doc = json.loads((out / "evaluation.json").read_text())
    predictions, targets = _predict(weights)
    direct = track_ap_bootstrap(predictions, targets, CLASSES, resamples=200, seed=0)
    plain = track_ap(predictions, targets, CLASSES)
    assert doc["task"] == "instances" and doc["clips"] == 8 and list(doc["metrics"]) == list(SUMMARY)
    assert plain["ap"] > 0.05 and plain["ap50"] > plain["ap75"]  # the fitted weights find tracks
    for name in SUMMARY:
        assert doc["metrics"][name] == pytest.approx(plain[name], abs=1e-12)
        assert doc["ci95"][name] == pytest.approx(direct["ci95"][name], abs=1e-12)
    assert doc["ci95"]["ap"][0] < doc["metrics"]["ap"] < doc["ci95"]["ap"][1]
    assert doc["settings"]["device"] == "cpu" and doc["settings"]["precision"] == "fp32"
    rows = _csv(out / "per_class.csv")
    assert list(rows[0]) == ["class", "name", "tracks", "ap", "ap_low", "ap_high"]
    tracks = np.bincount(np.concatenate([t.classes[~t.crowd] for t in targets]), minlength=CLASSES)
    assert [r["name"] for r in rows] == NAMES and [int(r["tracks"]) for r in rows] == tracks.tolist()
    for k, row in enumerate(rows):
        assert float(row["ap"]) == pytest.approx(plain["per_class"][k], abs=1e-12, nan_ok=True)
        assert float(row["ap_low"]) == pytest.approx(direct["per_class_ci95"][k][0], abs=1e-12, nan_ok=True)
    metrics = {r["metric"]: float(r["value"]) for r in _csv(out / "evaluation.csv")}
    assert metrics == pytest.approx({name: plain[name] for name in SUMMARY}, abs=1e-12)
    assert "per_class.csv" in json.loads((out / ".stlens-run.json").read_text())["files"]
    from stlens.train.evaluate import load_evaluation

    assert load_evaluation(out).per_class[0]["name"] == "east"


def test_evaluate_with_a_first_clip_count_and_another_mask_threshold(weights):
    result = stlens.evaluate(MODEL, DATA, weights=weights, frames=4, size=32, clips=5, batch_size=2,
                             mask_threshold=0.3, bootstrap=0, progress=False)
    predictions, targets = _predict(weights, count=5, threshold=0.3)
    plain = track_ap(predictions, targets, CLASSES)
    assert result.clips == 5 and result.metrics == pytest.approx({n: plain[n] for n in SUMMARY}, abs=1e-12)
    assert all(np.isnan(ci).all() for ci in result.ci95.values())  # no bootstrap: no interval
    assert "tracks" in result.table() and "east" in result.table()


def _official_valid(root: Path) -> None:
    """A YouTube-VIS 2019 official valid file: two videos of 4 frames, no annotations."""
    videos = []
    for vid, name in enumerate(("a", "b"), start=1):
        (root / "valid" / "JPEGImages" / name).mkdir(parents=True)
        files = []
        for t in range(4):
            Image.new("RGB", (32, 32), (40 * t, 80, 120)).save(root / "valid" / "JPEGImages" / name / f"{t:05d}.jpg")
            files.append(f"{name}/{t:05d}.jpg")
        videos.append({"id": vid, "width": 32, "height": 32, "length": 4, "file_names": files})
    doc = {"videos": videos, "categories": [{"id": 1, "name": "cat"}], "annotations": None}
    (root / "valid.json").write_text(json.dumps(doc))


def test_evaluate_and_ablate_refuse_data_without_targets(ablated, tmp_path):
    _official_valid(tmp_path)
    data = f"ytvis:{tmp_path}?split=valid"
    with pytest.raises(StlensError, match=r"has no annotations \(an official valid/test file\): evaluation \(track AP"
                                          r"\) needs instance targets; use split=valid_sub"):
        stlens.evaluate(MODEL, data, frames=4, size=32, progress=False)
    with pytest.raises(StlensError, match=r"has no annotations .*: ablation \(track AP\) needs instance targets"):
        stlens.ablate(MODEL, data, ablated[0], "decoder.0", "dynamic", 50, frames=4, size=32, progress=False)


# -------------------------------------------------------------------------------------------------------- training


def test_training_records_track_ap_and_the_report_shows_it(weights, tmp_path):
    out = tmp_path / "train"
    metrics = stlens.train(MODEL, DATA, weights=weights, steps=1, out=out, task="instances", frames=4, size=32,
                           batch_size=2, lr=1e-6, eval_clips=8, progress=False)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    line = [r for r in evals if r["kind"] == "eval"][-1]
    trained = str(out / "checkpoints" / "step_000001.safetensors")
    for split, data in (("train", DATA), ("test", heldout_spec(DATA))):
        predictions, targets = _predict(trained, data)
        direct = track_ap(predictions, targets, CLASSES)
        for name in SUMMARY:
            assert line[f"{split}_{name}"] == pytest.approx(direct[name], abs=1e-12), (split, name)
        assert 0.0 <= line[f"{split}_track_iou"] <= 1.0
    assert line["train_ap"] > 0.05 and metrics["test_ap"] == line["test_ap"]
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(page)]) == 0
    text = page.read_text()
    for label in ("test AP", "test AP50", "test AP75", "test track IoU", "train AP"):
        assert f"<th>{label}</th>" in text, label
    assert f"test AP <b>{line['test_ap']:.3f}</b>" in text


# ---------------------------------------------------------------------------------------------------------- ablate


@pytest.fixture(scope="module")
def ablated(weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    measured, out = root / "measured", root / "ablated"
    assert main(["measure", "--model", MODEL, "--weights", weights, "--data",
                 "synth:motion?frames=4&size=32&n=8&seed=5", *SHAPE, "--layers", "stage3,decoder.0", "--pairs", "8",
                 "--bootstrap", "0", "--quiet", "--out", str(measured)]) == 0
    assert main(["ablate", "--model", MODEL, "--weights", weights, "--data", DATA, *SHAPE, "--from", str(measured),
                 "--layers", "decoder.0,stage3", "--select", "dynamic,static,random,random-least-dynamic", "--k", "50",
                 "--draws", "1", "--bootstrap", "60", "--quiet", "--out", str(out)]) == 0
    return measured, out


def test_ablate_scores_track_ap_and_masked_ap_equals_a_hooked_forward(weights, ablated):
    measured, out = ablated
    doc = json.loads((out / "ablation.json").read_text())
    assert doc["metrics"] == list(SUMMARY) and doc["settings"]["intervals"] == "videos"
    rows = _csv(out / "ablation.csv")
    assert list(rows[0])[6:12] == ["ap", "ap_low", "ap_high", "drop_ap", "drop_ap_low", "drop_ap_high"]
    units = {(r["layer"], int(r["channel"])): r["class"] for r in _csv(measured / "units.csv")}
    assert sum(layer == "decoder.0" for layer, _ in units) == 16  # the decoder's D channels, ranked
    base_predictions, targets = _predict(weights)
    base = track_ap_bootstrap(base_predictions, targets, CLASSES, resamples=60, seed=0)
    checked = 0
    for row in rows:
        if row["select"] == "none":
            assert float(row["ap"]) == pytest.approx(base["ap"], abs=1e-12) and float(row["drop_ap"]) == 0.0
            continue
        chosen = next(s for s in doc["selections"] if (s["layer"], s["select"]) == (row["layer"], row["select"]))
        channels = 16 if row["layer"] == "decoder.0" else 32  # D = 2w; stage3: 4w
        assert int(row["masked"]) == len(chosen["channels"]) == channels // 2  # K = 50 %
        predictions, _ = _predict(weights, zero={row["layer"]: chosen["channels"]})
        masked = track_ap_bootstrap(predictions, targets, CLASSES, resamples=60, seed=0)
        assert float(row["ap"]) == pytest.approx(masked["ap"], abs=1e-12), row
        assert float(row["ap50"]) == pytest.approx(masked["ap50"], abs=1e-12)
        assert float(row["drop_ap"]) == pytest.approx(base["ap"] - masked["ap"], abs=1e-12)
        assert [float(row["ap_low"]), float(row["ap_high"])] == pytest.approx(masked["ci95"]["ap"], abs=1e-12)
        drops = base["replicates"]["ap"] - masked["replicates"]["ap"]  # unpaired: AP per resample, then the difference
        low, high = np.percentile(drops[np.isfinite(drops)], [2.5, 97.5])
        assert [float(row["drop_ap_low"]), float(row["drop_ap_high"])] == pytest.approx([low, high], abs=1e-12)
        checked += 1
    assert checked == 8
    assert any(float(r["drop_ap"]) != 0.0 for r in rows if r["layer"] == "decoder.0" and r["select"] != "none")
    per_class = _csv(out / "per_class.csv")
    assert list(per_class[0]) == ["layer", "select", "k", "draw", "mode", "class", "tracks", "ap"]
    assert len(per_class) == len(rows) * CLASSES
    first = [r for r in per_class if r["select"] == "none" and r["layer"] == "decoder.0"]
    assert [float(r["ap"]) for r in first] == pytest.approx(base["per_class"], abs=1e-12, nan_ok=True)
    assert (out / "ablation.png").stat().st_size > 0
    from stlens.ablate.result import load_ablation

    loaded = load_ablation(out)
    assert loaded.metrics[0] == "ap" and loaded.per_class[0]["tracks"] == int(first[0]["tracks"])


def test_the_report_shows_ablated_ap(ablated, tmp_path):
    _, out = ablated
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(page)]) == 0
    text = page.read_text()
    rows = _csv(out / "ablation.csv")
    base = next(r for r in rows if r["select"] == "none" and r["layer"] == "decoder.0")
    assert "<th>AP</th>" in text and "YouTube-VIS track AP" in text and "interval over videos" in text
    assert f'<b class="baseline">{float(base["ap"]):.3f}</b>' in text
    dynamic = next(r for r in rows if r["select"] == "dynamic" and r["layer"] == "decoder.0")
    assert f"<td>{float(dynamic['drop_ap']):+.3f}</td>" in text
