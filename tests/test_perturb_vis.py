"""stlens perturb on video instance segmentation: the bootstrap of track AP against ``track_ap`` (and COCOeval) on
the resampled sets of clips, instance masks reordered with the frames (a planted model), the CLI end to end on the
bundled VIS model."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from test_perturb import SPEC, planted
from test_trackap import _coco_eval, _random_set
from torch import nn

import stlens
from stlens.cli import main
from stlens.core.instances import Instances
from stlens.measure.trackap import SUMMARY, TrackMatches, track_ap
from stlens.models.zoo.vis import predict_tracks
from stlens.perturb.perturbations import Context, retrack
from stlens.perturb.run import union_tracks
from stlens.perturb.stats import bootstrap_indices, set_replicates

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = ((255, 40, 40), (40, 255, 40), (40, 40, 255))


class PlantedTracks:
    """Instance data, 3 classes: per clip two 4×2 bars of two different classes, pure red / green / blue, moving
    1 px right per frame over a dark, still, textured background (16 × 16, 8 frames)."""

    num_classes = 3
    task = "instances"

    def __init__(self, n: int = 8):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: np.ndarray, rng: np.random.Generator):
        from stlens.video.sampling import to_model_input

        clips, targets = [], []
        for i in indices:
            r = np.random.default_rng(int(i))
            frames = r.integers(0, 40, size=(1, 16, 16, 3)).repeat(8, axis=0).astype(np.uint8)
            classes = r.permutation(3)[:2]
            masks = np.zeros((2, 8, 16, 16), bool)
            for n, (top, k) in enumerate(zip((1 + int(r.integers(0, 3)), 9 + int(r.integers(0, 3))), classes,
                                             strict=True)):
                for t in range(8):
                    masks[n, t, top:top + 4, t:t + 2] = True
                frames[masks[n]] = COLOURS[k]
            clips.append(to_model_input(frames, SPEC))
            targets.append(Instances(masks, classes, np.arange(2), np.zeros(2, bool)))
        return torch.stack(clips), targets


class ColourTracks(nn.Module):
    """Query k (k < 3): the pixels where channel k is bright, class k; query 3: a ghost of query 0's mask one row
    lower, class 0, its confidence set by the clip's background (above or below query 0's). Blind to motion."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        bright = 10 * (x - 0.5)  # normalised: 255 → 2, 40 → −1.4
        masks = torch.stack([bright[:, k] - bright[:, [c for c in range(3) if c != k]].amax(1).clamp_min(0)
                             for k in range(3)], dim=1)
        masks = torch.cat([masks, masks[:, :1].roll(1, dims=3)], dim=1)
        logits = torch.zeros(len(x), 4, 4)
        logits[:, torch.arange(3), torch.arange(3)] = 6.0
        logits[:, 3, 0] = 6 + 4 * (x[:, 2, 0, 0, 0] + 1.5)
        return {"logits": logits, "masks": masks}


def test_bootstrap_ap_equals_track_ap_on_the_resampled_clips(tmp_path):
    predictions, targets = _random_set(5, videos=12, frames=2, classes=3)
    matches = TrackMatches(3)
    matches.add(predictions, targets)
    index = bootstrap_indices(12, 40, seed=3)
    kept = np.ones(12, bool)
    kept[[2, 7]] = False  # clips a perturbation leaves unscored drop out of every resample
    values = set_replicates(lambda v: matches.score(v)[0], kept, index, SUMMARY)
    checked = 0
    for r in (0, 1, 9, 30):
        row = index[r][kept[index[r]]]
        assert len(set(row.tolist())) < len(row)  # a clip drawn twice counts twice
        direct = track_ap([predictions[i] for i in row], [targets[i] for i in row], 3)
        for name in SUMMARY:
            assert values[name][r] == pytest.approx(direct[name], abs=1e-12, nan_ok=True), name
        checked += 1
    # and COCOeval on one resampled set, a repeated clip as a new video id
    row = index[0][kept[index[0]]]
    stats = _coco_eval([predictions[i] for i in row], [targets[i] for i in row], 3, tmp_path).stats
    assert values["ap"][0] == pytest.approx(stats[0], abs=1e-6) and values["ap50"][0] == pytest.approx(stats[1],
                                                                                                       abs=1e-6)
    assert checked == 4 and 0 < values["ap"][0] < 1


def test_perturb_intervals_recompute_track_ap_on_each_resample():
    data, model = PlantedTracks(10), ColourTracks()
    result = stlens.perturb(planted(model), data, batch_size=4, bootstrap=60, seed=2, progress=False,
                            perturbations="freeze,palette")
    inputs, targets = data.batch(np.arange(10), np.random.default_rng(0))
    with torch.no_grad():
        predictions = predict_tracks(model(inputs))
    clean = result.row("clean", "ap")
    assert result.metrics == ["ap", "ap50"] and result.settings["task"] == "instances"
    assert clean["score"] == pytest.approx(track_ap(predictions, targets, 3)["ap"], abs=1e-12)
    assert 0.2 < clean["score"] < 1.0  # the ghost wins some clips: AP neither 0 nor 1
    index = bootstrap_indices(10, 60, seed=2)
    direct = {name: [track_ap([predictions[i] for i in row], [targets[i] for i in row], 3)[name] for row in index]
              for name in ("ap", "ap50")}
    for name in ("ap", "ap50"):
        row = result.row("clean", name)
        assert (row["score_lo"], row["score_hi"]) == pytest.approx(tuple(np.percentile(direct[name], [2.5, 97.5])))
        frozen = result.row("freeze", name)  # the same predictions: drop 0 on every resample
        assert frozen["score"] == pytest.approx(row["score"]) and frozen["drop_lo"] == frozen["drop_hi"] == 0.0
    # chance: the union baseline (every class, the union of the clip's masks, score 1) on the clean targets
    chance = track_ap([union_tracks(t, 3) for t in targets], targets, 3)
    assert clean["chance"] == pytest.approx(chance["ap"]) and 0 < chance["ap"] < clean["score"]
    palette = result.row("palette", "ap")
    assert palette["score"] < clean["score"] and palette["drop_lo"] <= palette["drop"] <= palette["drop_hi"]
    assert palette["retention"] == pytest.approx((palette["score"] - chance["ap"]) / (clean["score"] - chance["ap"]))
    assert all(math.isnan(r["follow_rate"]) for r in result.rows)


class ColourOnly(ColourTracks):
    """Only the three colour queries, no ghost: AP 1 on every clip whatever the frame order."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        return {"logits": out["logits"][:, :3], "masks": out["masks"][:, :3]}


def test_temporal_perturbations_reorder_the_instance_masks():
    data = PlantedTracks(6)
    result = stlens.perturb(planted(ColourOnly()), data, batch_size=3, bootstrap=20, progress=False,
                            perturbations="freeze,shuffle,reverse,stride,static-mix")
    for name in ("clean", "freeze", "shuffle", "reverse", "stride"):  # the masks follow the frames
        assert result.row(name, "ap")["score"] == 1.0 and result.row(name, "ap50")["score"] == 1.0, name
    mixed = result.row("static-mix", "ap")  # every clip its own "class": a still of another clip is blended in
    assert mixed["clips"] == 6 and 0.0 <= mixed["score"] <= 1.0
    # by hand: freeze repeats the middle frame's masks; targets kept in their order would not match
    _, targets = data.batch(np.arange(2), np.random.default_rng(0))
    context = Context(np.arange(2), np.arange(2), SPEC, 0)
    context.orders = [np.full(8, 4), np.arange(8)[::-1]]
    moved = retrack(targets, context)
    assert np.array_equal(moved[0].masks, targets[0].masks[:, [4] * 8])
    assert np.array_equal(moved[1].masks, targets[1].masks[:, ::-1]) and moved[1].classes.tolist() == \
        targets[1].classes.tolist()
    with torch.no_grad():
        frozen = predict_tracks(ColourOnly()(data.batch(np.arange(2), None)[0][:, :, [4] * 8]))
    assert track_ap(frozen[:1], moved[:1], 3)["ap"] == 1.0 and track_ap(frozen[:1], targets[:1], 3)["ap"] < 0.5


def test_cli_on_the_bundled_vis_model(tmp_path, capsys):
    out = tmp_path / "vis"
    assert main(["perturb", "--model", "stlens:vis?classes=4&width=32&queries=10", "--weights",
                 "bundled:vis-appearance", "--data", "synth:appearance?task=instances&frames=8&size=64&split=test&n=16",
                 "--clips", "8", "--perturbations", "freeze,palette", "--bootstrap", "50", "--out", str(out)]) == 0
    assert "ap" in capsys.readouterr().out
    with (out / "perturb.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["perturbation"], r["metric"]) for r in rows] == [(p, m) for p in ("clean", "freeze", "palette")
                                                                for m in ("ap", "ap50")]
    for r in rows:
        for column in ("score", "score_lo", "score_hi", "chance"):
            assert 0.0 <= float(r[column]) <= 1.0, (r["perturbation"], column)
        assert int(r["clips"]) == 8 and r["follow_rate"] == "nan"
    clean = rows[0]
    assert float(clean["score"]) > float(clean["chance"]) and float(clean["retention"]) == 1.0
    loaded = stlens.perturb.load_perturb(out)
    assert loaded.metrics == ["ap", "ap50"] and loaded.settings["task"] == "instances"
