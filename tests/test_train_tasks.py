"""The training tasks: the segmentation loss against a hand computation (BCE over annotated pixels + soft IoU per
clip, unannotated frames counting for nothing) and the option checks."""

from __future__ import annotations

import math

import pytest
import torch

from stlens.errors import StlensError
from stlens.train import TrainConfig
from stlens.train.tasks import Segment, segmentation_loss, task_for


def test_segmentation_loss_by_hand():
    logits = torch.tensor([[[[0.0, 2.0]], [[-1.0, 0.0]]]])  # (B=1, T=2, H=1, W=2)
    masks = torch.tensor([[[[0.0, 1.0]], [[float("nan"), float("nan")]]]])  # frame 1 unannotated
    p0, p1 = 0.5, 1 / (1 + math.exp(-2.0))
    bce = (-math.log(1 - p0) - math.log(p1)) / 2  # mean over the two annotated pixels
    inter, union = p1 * 1, (p0 + 0 - 0) + (p1 + 1 - p1)
    expected = bce + 1 - (inter + 1) / (union + 1)
    assert math.isclose(float(segmentation_loss(logits, masks)[0]), expected, rel_tol=1e-6)


def test_the_loss_is_per_clip_and_falls_as_the_prediction_improves():
    masks = torch.zeros(2, 3, 4, 4)
    masks[:, :, 1:3, 1:3] = 1
    good = (masks * 2 - 1) * 6
    losses = segmentation_loss(torch.stack([good[0], torch.zeros(3, 4, 4)]), masks)
    assert losses.shape == (2,) and losses[0] < 0.05 < losses[1]


def test_segment_running_score_is_the_mean_iou():
    masks = torch.zeros(2, 1, 2, 2)
    masks[:, :, 0, 0] = 1
    perfect = (masks * 2 - 1) * 9
    assert Segment().score_sum(perfect, masks) == 2.0


def test_bad_task_options_are_refused_naming_them():
    with pytest.raises(StlensError, match="`task` must be one of classify, segment"):
        task_for("detect")
    with pytest.raises(StlensError, match="`mask_threshold` must be in"):
        TrainConfig(model="stlens:i3d", data="synth:motion", steps=1, out="x", task="segment",
                    mask_threshold=1.5).validate()
    with pytest.raises(StlensError, match="are for `task` classify"):
        TrainConfig(model="stlens:i3d", data="synth:motion", steps=1, out="x", task="segment",
                    static_dropout="stage4:p=0.5").validate()


WORLD = "synth:motion?task=segment&frames=4&size=32&n=16"
REST = ["--frames", "4", "--size", "32", "--task", "segment", "--batch-size", "4", "--eval-clips", "4", "--quiet"]
SEGMENT = ["train", "--model", "stlens:avos?width=4", "--data", WORLD, *REST]


def test_train_segment_end_to_end_and_resume(tmp_path):
    import json

    from stlens.cli import main
    from stlens.train import list_checkpoints, load_checkpoint

    out = tmp_path / "seg"
    assert main([*SEGMENT, "--steps", "2", "--checkpoint-every", "2", "--out", str(out)]) == 0
    assert main([*SEGMENT, "--steps", "4", "--checkpoint-every", "2", "--out", str(out)]) == 0  # resumes at 2
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(0.0 <= r["test_miou"] <= 1.0 and 0.0 <= r["test_msr"] <= 1.0 and "train_miou" in r for r in evals)
    assert all(math.isfinite(r["loss"]) and "batch_miou" in r for r in lines if r["kind"] == "train")
    assert json.loads((out / "config.json").read_text())["task"] == "segment"
    step, weights = list_checkpoints(out / "checkpoints")[-1]
    import stlens

    assert step == 4 and load_checkpoint(weights, stlens.load_model("stlens:avos?width=4").module).step == 4


def test_train_segment_refuses_a_classifier_and_a_world_without_task_segment(tmp_path, capsys):
    from stlens.cli import main

    classifier = ["train", "--model", "stlens:i3d?width=4", "--data", WORLD, *REST]
    assert main([*classifier, "--steps", "1", "--out", str(tmp_path / "a")]) == 2
    assert "needs per-frame mask logits (B, T, H, W)" in capsys.readouterr().err
    no_task = ["train", "--model", "stlens:avos?width=4", "--data", "synth:motion?frames=4&size=32&n=16", *REST]
    assert main([*no_task, "--steps", "1", "--out", str(tmp_path / "b")]) == 2
    assert "add task=segment to synth:motion" in capsys.readouterr().err
