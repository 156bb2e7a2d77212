"""``stlens:vis`` and ``task=instances``: the shapes of every tap and output, the Hungarian matcher against a brute
force, the losses, cost and track IoU against hand computations, ``predict_tracks`` on a hand-made output, and short
CPU training runs (Python and CLI, resume) on a tiny in-test instance source."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

import stlens
from stlens.core import registry
from stlens.core.instances import Instances
from stlens.errors import StlensError
from stlens.models.taps import LayerTaps
from stlens.models.zoo.vis import predict_tracks
from stlens.train.instances import (
    BCE_WEIGHT,
    CLASS_WEIGHT,
    DICE_WEIGHT,
    NO_OBJECT_WEIGHT,
    TrackIoU,
    clip_loss,
    hungarian,
    match_cost,
    track_ious,
)

FRAMES, SIZE, SQUARE = 4, 32, 8


class ToyInstances:
    """1–2 bright squares moving on noise; class 0 moves right, class 1 moves down. Follows the LabelledClips
    protocol with ``task = "instances"``: ``batch`` gives (clips (B, 3, T, H, W), list[Instances])."""

    task = "instances"
    num_classes = 2
    frames, size = FRAMES, SIZE

    def __init__(self, n: int = 16):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def item(self, index: int) -> tuple[torch.Tensor, Instances]:
        rng = np.random.default_rng(index)
        clip = rng.uniform(-0.5, 0.5, (3, FRAMES, SIZE, SIZE)).astype(np.float32)
        count = 1 + index % 2
        masks = np.zeros((count, FRAMES, SIZE, SIZE), bool)
        classes = rng.integers(0, 2, count)
        for k in range(count):
            y, x = (2 + 16 * k, 2) if classes[k] == 0 else (2, 2 + 16 * k)
            for t in range(FRAMES):
                dy, dx = (0, 4 * t) if classes[k] == 0 else (4 * t, 0)
                masks[k, t, y + dy:y + dy + SQUARE, x + dx:x + dx + SQUARE] = True
            clip[:, masks[k]] = 1.5
        return torch.from_numpy(clip), Instances(masks, classes, np.arange(count), np.zeros(count, bool))

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, list[Instances]]:
        items = [self.item(int(i)) for i in indices]
        return torch.stack([x for x, _ in items]), [y for _, y in items]


def open_toy(spec: str) -> ToyInstances:
    return ToyInstances(int(spec.partition(":")[2] or 16))


@pytest.fixture
def toy_data(monkeypatch):
    monkeypatch.setitem(registry.DATA_SOURCES, "toyvis", f"{__name__}:open_toy")
    return "toyvis:16"


def test_every_tap_and_the_output_have_their_shapes():
    handle = stlens.load_model("stlens:vis")  # defaults: width 32, 10 queries, 3 layers, 4 classes, 8×64×64
    model = handle.module
    assert handle.inputs == 1 and (handle.input.frames, handle.input.size) == (8, 64)
    assert handle.default_layers == ["stage1", "stage2", "stage3", "pixel_decoder", "decoder.0", "decoder.1",
                                     "decoder.2"]
    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: seen.__setitem__(name, tuple(out.shape)))
        for name in [*handle.default_layers, "stem", "memory"]]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 64, 64))
    for hook in hooks:
        hook.remove()
    assert seen == {"stem": (2, 32, 8, 32, 32), "stage1": (2, 32, 8, 32, 32), "stage2": (2, 64, 8, 16, 16),
                    "stage3": (2, 128, 8, 8, 8), "pixel_decoder": (2, 64, 8, 32, 32), "memory": (2, 8 * 64, 64),
                    "decoder.0": (2, 10, 64), "decoder.1": (2, 10, 64), "decoder.2": (2, 10, 64)}
    assert set(out) == {"logits", "masks"}
    assert out["logits"].shape == (2, 10, 5) and out["masks"].shape == (2, 10, 8, 64, 64)
    with LayerTaps(model, handle.default_layers) as taps, torch.no_grad():  # stlens' taps pool every layer
        taps.reset(batch=2)
        model(torch.randn(2, 3, 8, 64, 64))
        latents = taps.checked(strict=True)
    assert {k: tuple(v.shape) for k, v in latents.items()} == {
        "stage1": (2, 32), "stage2": (2, 64), "stage3": (2, 128), "pixel_decoder": (2, 64), "decoder.0": (2, 64),
        "decoder.1": (2, 64), "decoder.2": (2, 64)}


def test_options_flow_and_other_clip_sizes():
    handle = stlens.load_model("stlens:vis?flow=true&classes=3&queries=5&depth=2&width=8", frames=4, size=32)
    assert handle.inputs == 2 and handle.default_layers[-1] == "decoder.1"
    rgb, flow = handle.example_inputs(2)
    assert flow.shape == (2, 2, 3, 32, 32)
    out = handle.module(rgb, flow)
    assert out["logits"].shape == (2, 5, 4) and out["masks"].shape == (2, 5, 4, 32, 32)
    with pytest.raises(StlensError, match="width must be ≤ 64"):
        stlens.load_model("stlens:vis?width=128")
    with pytest.raises(StlensError, match="unknown option 'layers'"):
        stlens.load_model("stlens:vis?layers=2")


def test_measure_runs_on_the_vis_model(tmp_path):
    result = stlens.measure("stlens:vis?width=8&queries=4&depth=1", "synth:motion?frames=4&size=32&n=8",
                            layers="stage3,decoder.0", frames=4, size=32, pairs=4, bootstrap=0, progress=False)
    assert {layer.layer: layer.channels for layer in result.layers} == {"stage3": 32, "decoder.0": 16}


def brute_force(cost: np.ndarray) -> float:
    q, n = cost.shape
    return min(sum(cost[r, c] for c, r in enumerate(rows)) for rows in itertools.permutations(range(q), n))


def test_hungarian_agrees_with_a_brute_force_over_permutations():
    rng = np.random.default_rng(0)
    for _ in range(40):
        q = int(rng.integers(1, 6))
        n = int(rng.integers(1, q + 1))
        cost = rng.normal(size=(q, n))
        rows, cols = hungarian(torch.from_numpy(cost))
        assert len(set(rows)) == len(rows) == n and sorted(cols) == list(range(n))
        assert math.isclose(cost[rows, cols].sum(), brute_force(cost), abs_tol=1e-12)
    with pytest.raises(StlensError, match="not finite.*`lr`"):
        hungarian(torch.tensor([[float("nan")]]))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(x: float, g: float) -> float:
    return -(g * math.log(sig(x)) + (1 - g) * math.log(1 - sig(x)))


def test_match_cost_by_hand():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]])  # Q=2, K=2 (+ no-object)
    masks = torch.tensor([[2.0, -1.0], [0.5, 0.0]]).reshape(2, 1, 1, 2)  # (Q, T=1, H=1, W=2)
    targets = torch.tensor([[1.0, 0.0]]).reshape(1, 1, 1, 2)
    cost = match_cost(logits, masks, torch.tensor([1]), targets)
    for q, (lg, mk) in enumerate([([1.0, 0.0, 0.0], [2.0, -1.0]), ([0.0, 2.0, -1.0], [0.5, 0.0])]):
        prob = math.exp(lg[1]) / sum(math.exp(v) for v in lg)
        b = (bce(mk[0], 1) + bce(mk[1], 0)) / 2
        dice = 1 - (2 * sig(mk[0]) + 1) / (sig(mk[0]) + sig(mk[1]) + 1 + 1)
        expected = CLASS_WEIGHT * -prob + BCE_WEIGHT * b + DICE_WEIGHT * dice
        assert math.isclose(float(cost[q, 0]), expected, rel_tol=1e-6)


def test_clip_loss_by_hand_crowd_left_out():
    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [2.0, 0.0, 0.0]])  # Q=3, K=2
    masks = torch.tensor([[3.0, -2.0], [-1.0, -1.0], [0.0, 1.0]]).reshape(3, 1, 1, 2)
    gt = Instances(np.array([[[[True, False]]], [[[False, True]]]]), [1, 0], [7, 8], [False, True])  # 2nd: crowd
    # query 0 (class 1 likely, mask on pixel 0) matches the only non-crowd track; queries 1, 2 target no-object
    wanted, weights = [1, 2, 2], [1.0, NO_OBJECT_WEIGHT, NO_OBJECT_WEIGHT]
    rows = [[0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [2.0, 0.0, 0.0]]
    ce = [-(r[w] - math.log(sum(math.exp(v) for v in r))) for r, w in zip(rows, wanted, strict=True)]
    ce_mean = sum(c * w for c, w in zip(ce, weights, strict=True)) / sum(weights)
    b = (bce(3.0, 1) + bce(-2.0, 0)) / 2
    dice = 1 - (2 * sig(3.0) + 1) / (sig(3.0) + sig(-2.0) + 1 + 1)
    expected = CLASS_WEIGHT * ce_mean + BCE_WEIGHT * b + DICE_WEIGHT * dice
    assert math.isclose(float(clip_loss(logits, masks, gt)), expected, rel_tol=1e-6)
    nothing = Instances.empty(1, 1, 2)  # no tracks: every query targets no-object, no mask term
    ce_all = sum(-(r[2] - math.log(sum(math.exp(v) for v in r))) for r in rows) / 3
    assert math.isclose(float(clip_loss(logits, masks, nothing)), CLASS_WEIGHT * ce_all, rel_tol=1e-6)


def test_track_iou_by_hand():
    masks = torch.full((2, 2, 2, 2), -5.0)  # Q=2, T=2, 2×2
    masks[0, 0, 0, :] = 5.0  # query 0: the top row of frame 0
    masks[1, :, :, 0] = 5.0  # query 1: the left column of both frames
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    truth = np.zeros((2, 2, 2, 2), bool)
    truth[0, 0, 0, :] = True
    truth[0, 1, 0, 0] = True  # track 0: 3 pixels, query 0 covers 2 of them → IoU 2/3
    truth[1, :, :, 0] = True
    truth[1, 0, 1, 1] = True  # track 1: 5 pixels, query 1 covers 4 → IoU 4/5
    gt = Instances(truth, [0, 1], [0, 1], [False, False])
    assert np.allclose(track_ious(logits, masks, gt), [2 / 3, 4 / 5])
    out = {"logits": logits[None].repeat(2, 1, 1), "masks": masks[None].repeat(2, 1, 1, 1, 1)}
    scores = TrackIoU().scores(out, [gt, Instances.empty(2, 2, 2)])["track_iou"]
    assert math.isclose(scores[0], (2 / 3 + 4 / 5) / 2) and math.isnan(scores[1])


def test_predict_tracks_on_a_hand_made_output():
    logits = torch.log(torch.tensor([[[0.6, 0.1, 0.3], [0.2, 0.1, 0.7]]]))  # one clip, Q=2, K=2
    masks = torch.full((1, 2, 1, 1, 3), -10.0)
    masks[0, 0, 0, 0, :2] = torch.tensor([math.log(0.9 / 0.1), math.log(0.7 / 0.3)])  # p = 0.9, 0.7, ~0
    (tracks,) = predict_tracks({"logits": logits, "masks": masks})
    assert tracks.classes.tolist() == [0, 0]  # query 1's best is no-object: its best real class is 0
    assert tracks.masks[:, 0, 0].tolist() == [[True, True, False], [False, False, False]]
    assert np.allclose(tracks.scores, [0.6 * (0.9 + 0.7) / 2, 0.0], atol=1e-6)
    (strict,) = predict_tracks({"logits": logits, "masks": masks}, threshold=0.8)
    assert strict.masks[0, 0, 0].tolist() == [True, False, False] and math.isclose(strict.scores[0], 0.6 * 0.9,
                                                                                   rel_tol=1e-5)


def test_predict_tracks_feeds_track_ap():
    from stlens.measure.trackap import track_ap

    _, (gt, other) = ToyInstances().batch(np.array([1, 3]), None)  # two clips with two tracks each
    logits = torch.full((2, 3, 3), -9.0)
    masks = torch.full((2, 3, FRAMES, SIZE, SIZE), -9.0)
    for b, inst in enumerate((gt, other)):
        for q in range(len(inst)):
            logits[b, q, inst.classes[q]] = 9.0
            masks[b, q][torch.from_numpy(inst.masks[q])] = 9.0
        logits[b, 2, 2] = 9.0  # the third query says no-object, with an empty mask: score 0
    tracks = predict_tracks({"logits": logits, "masks": masks})
    assert track_ap(tracks, [gt, other], num_classes=2)["ap"] == pytest.approx(1.0)


MODEL = "stlens:vis?width=8&queries=4&depth=2&classes=2"


def test_training_lowers_the_loss(tmp_path, toy_data):
    from stlens.train import TrainConfig

    config = TrainConfig(model=MODEL, data=toy_data, steps=12, out=str(tmp_path / "run"), task="instances",
                         frames=FRAMES, size=SIZE, batch_size=4, lr=3e-3, warmup=3, log_every=4, eval_clips=4)
    metrics = stlens.train(config, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12]
    assert train[-1]["loss"] < 0.75 * train[0]["loss"], [r["loss"] for r in train]
    assert 0.0 <= metrics["train_track_iou"] <= 1.0 and "batch_track_iou" in train[0]


def test_cli_train_instances_and_resume(tmp_path, toy_data):
    from stlens.cli import main
    from stlens.train import list_checkpoints

    out = tmp_path / "cli"
    args = ["train", "--model", MODEL, "--data", toy_data, "--task", "instances", "--frames", str(FRAMES), "--size",
            str(SIZE), "--batch-size", "2", "--eval-clips", "2", "--checkpoint-every-steps", "2", "--quiet",
            "--out", str(out)]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4"]) == 0  # resumes from step 2
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["kind"] == "eval"] == [0, 2, 4]
    assert all(0.0 <= r["train_track_iou"] <= 1.0 for r in evals if r["kind"] == "eval")
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [0, 2, 4]
    assert json.loads((out / "config.json").read_text())["task"] == "instances"


def test_trains_on_the_synth_instance_world(tmp_path):
    metrics = stlens.train("stlens:vis?width=8&queries=4&depth=1", "synth:motion?task=instances&frames=4&size=32&n=8",
                           steps=2, out=tmp_path / "synth", task="instances", frames=FRAMES, size=SIZE, batch_size=2,
                           eval_clips=2, progress=False)
    assert 0.0 <= metrics["train_track_iou"] <= 1.0 and 0.0 <= metrics["test_track_iou"] <= 1.0


def test_instances_refuses_other_models_and_data(tmp_path, toy_data, capsys):
    from stlens.cli import main

    rest = ["--task", "instances", "--frames", str(FRAMES), "--size", str(SIZE), "--batch-size", "2", "--steps", "1",
            "--quiet"]
    assert main(["train", "--model", "stlens:seg3d?width=4", "--data", toy_data, *rest, "--out",
                 str(tmp_path / "a")]) == 2
    assert "needs a video instance segmenter" in capsys.readouterr().err
    assert main(["train", "--model", MODEL, "--data", "synth:motion?frames=4&size=32&n=8", *rest, "--out",
                 str(tmp_path / "b")]) == 2
    assert "add task=instances to synth:motion" in capsys.readouterr().err
