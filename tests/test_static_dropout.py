"""StaticDropout / RandomChannelDropout: which channels, at what rate, rescaling, eval identity, bad input, and the
``stlens train --static-dropout`` schedule end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import stlens
from stlens.cli import main
from stlens.errors import StlensError
from stlens.train import static_dropout as sd
from stlens.train.static_dropout import DropoutPlan, DropoutSchedule, select_channels

MODEL = "module:conftest:tiny_classifier"
DATA = "synth:motion?n=16&frames=8&size=16&seed=0"


def test_drops_only_chosen_whole_maps_at_rate_p_and_rescales():
    p, chosen = 0.3, [1, 4]
    x = torch.rand(3000, 6, 2, 3, 3) + 0.5  # strictly positive: a zero can only come from the dropout
    drop = stlens.StaticDropout(chosen, p=p, generator=torch.Generator().manual_seed(0)).train()
    y = drop(x)
    others = [c for c in range(6) if c not in chosen]
    assert torch.equal(y[:, others], x[:, others])
    kept = (y[:, chosen] != 0).reshape(3000, 2, -1)
    assert torch.equal(kept.all(-1), kept.any(-1))  # the whole T×H×W map is dropped or kept together
    zero = ~kept[..., 0]
    survivors = y[:, chosen][~zero]
    assert torch.allclose(survivors, x[:, chosen][~zero] / (1 - p), rtol=1e-6, atol=0)
    sigma = math.sqrt(p * (1 - p) / zero.numel())
    assert abs(zero.float().mean().item() - p) < 4 * sigma
    for c in range(2):  # each channel on its own, and clips drawn independently
        assert abs(zero[:, c].float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / 3000)
    assert 0 < zero.all(1).float().mean().item() < 2 * p * p  # both dropped together ≈ p², not p
    assert abs(y[:, chosen].mean().item() / x[:, chosen].mean().item() - 1) < 0.03  # expectation kept


def test_identity_in_eval_and_4d_inputs():
    x = torch.randn(5, 4, 3, 6, 6)
    drop = stlens.StaticDropout([0, 2], p=0.9)
    assert torch.equal(drop.eval()(x), x)
    image = torch.rand(200, 4, 5, 5) + 1
    y = drop.train()(image)
    assert torch.equal(y[:, [1, 3]], image[:, [1, 3]]) and (y[:, 0] == 0).any()


def test_set_channels_replaces_the_set_and_p_zero_is_identity():
    x = torch.rand(400, 5, 2, 2, 2) + 1
    drop = stlens.StaticDropout([0], p=0.5).train()
    drop.set_channels([3])
    y = drop(x)
    assert torch.equal(y[:, :3], x[:, :3]) and (y[:, 3] == 0).any()
    assert torch.equal(stlens.StaticDropout([1], p=0.0).train()(x), x)


def test_random_channel_dropout_draws_count_channels():
    drop = stlens.RandomChannelDropout(5, 20, p=0.5, seed=1)
    first = drop.channels.tolist()
    assert len(first) == 5 and len(set(first)) == 5 and max(first) < 20
    drop.redraw(np.random.default_rng(2))
    assert len(drop.channels) == 5 and drop.channels.tolist() != first
    with pytest.raises(StlensError, match="count"):
        stlens.RandomChannelDropout(0, 20)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_bad_p_is_an_error(p):
    with pytest.raises(StlensError, match=r"\[0, 1\)"):
        stlens.StaticDropout([0], p=p)


def test_empty_set_and_channels_in_the_wrong_place_are_errors():
    with pytest.raises(StlensError, match="empty"):
        stlens.StaticDropout([], p=0.5)
    drop = stlens.StaticDropout([1], p=0.5, layer="blocks.3").train()
    with pytest.raises(StlensError, match="blocks.3.*channels in dim 1"):
        drop(torch.randn(2, 10, 8))  # tokens (B, N, D)
    with pytest.raises(StlensError, match="channel 7 does not exist"):
        stlens.StaticDropout([7]).train()(torch.randn(2, 4, 2, 2, 2))


def test_selection_by_class_and_by_margin():
    r_static = np.array([0.875, 0.5, 0.75, 0.5, 0.75])  # binary fractions: the margin ties are exact
    r_dynamic = np.array([0.125, 0.25, 0.5, 0.0, 0.5])
    classes = ["static", "none", "joint", "static", "joint"]
    assert select_channels(r_static, r_dynamic, classes, "static") == [0, 3]
    # margins 0.75, 0.25, 0.25, 0.5, 0.25 → top 2 = channels 0, 3; top 3 adds the first of the ties (channel 1)
    assert select_channels(r_static, r_dynamic, classes, "topk", 2) == [0, 3]
    assert select_channels(r_static, r_dynamic, classes, "topk", 3) == [0, 1, 3]


def test_spec_parsing_and_bad_specs():
    plan = DropoutPlan.parse("stage4:p=0.3:select=topk:8:every=50:start=10")
    assert (plan.layer, plan.p, plan.select, plan.k, plan.every, plan.start) == ("stage4", 0.3, "topk", 8, 50, 10)
    assert DropoutPlan.parse("stage2", random=True).select == "static"
    for bad, message in [("stage4:p=1", r"\[0, 1\)"), ("stage4:select=topk", "K ≥ 1"), ("stage4:q=2", "unknown"),
                         ("p=0.5", "layer name"), ("stage4:select=best", "static or topk"),
                         ("stage4:every=x", "number")]:
        with pytest.raises(StlensError, match=message):
            DropoutPlan.parse(bad)


def _schedule(plan: str, random: bool = False) -> DropoutSchedule:
    handle = stlens.load_model(MODEL, frames=8, size=16)
    pairs = stlens.make_pairs(stlens.open_data(DATA), handle.input, 8, seed=0)
    return DropoutSchedule(DropoutPlan.parse(plan, random=random), handle, pairs, seed=0)


def test_schedule_applies_dropout_after_the_layer_in_training_only(monkeypatch):
    schedule = _schedule("stem:p=0.5:select=topk:3:every=2")
    schedule(0, schedule.handle.module)
    chosen = schedule.dropout.channels.tolist()
    assert len(chosen) == 3 and schedule.selections[0]["step"] == 0
    stem = schedule.handle.module.stem
    x = torch.randn(16, 3, 8, 16, 16)
    seen = {}
    stem.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))  # runs after the dropout hook
    schedule.handle.module.train()(x)
    out = seen.pop("out")
    others = [c for c in range(8) if c not in chosen]
    assert (out[:, chosen].flatten(2).amax(-1) == 0).any()  # some whole maps dropped
    assert (out[:, others].flatten(2).amax(-1) > 0).all()
    schedule.handle.module.eval()(x)
    assert (seen.pop("out")[:, chosen].flatten(2).amax(-1) > 0).all()
    assert not schedule.due(1) and schedule.due(2)
    monkeypatch.setattr(sd, "select_channels", lambda *a, **k: [])
    with pytest.warns(RuntimeWarning, match="no static channels at step 2"):
        schedule(2, schedule.handle.module)
    assert len(schedule.dropout.channels) == 0


def test_empty_first_selection_is_an_error(monkeypatch):
    schedule = _schedule("stem:select=static")
    monkeypatch.setattr(sd, "select_channels", lambda *a, **k: [])
    with pytest.raises(StlensError, match="no static channels at step 0"):
        schedule(0, schedule.handle.module)


def test_random_control_draws_the_same_count_at_random():
    schedule = _schedule("stem:select=topk:3:every=1", random=True)
    static = _schedule("stem:select=topk:3:every=1")
    for step in range(3):
        schedule(step, schedule.handle.module)
        static(step, static.handle.module)
    assert [len(s["channels"]) for s in schedule.selections] == [3, 3, 3]
    assert len({tuple(s["channels"]) for s in schedule.selections}) > 1  # redrawn


def test_train_cli_with_static_and_random_dropout(tmp_path):
    common = ["train", "--model", MODEL, "--data", DATA, "--test-data", "none", "--frames", "8", "--size", "16",
              "--steps", "2", "--batch-size", "4", "--eval-clips", "4", "--quiet"]
    spec = "stage:p=0.5:select=topk:4:every=2:pairs=8"
    assert main(common + ["--static-dropout", spec, "--out", str(tmp_path / "s")]) == 0
    log = [json.loads(line) for line in (tmp_path / "s" / "dropout.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 2] and all(len(r["channels"]) == 4 for r in log)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["static_dropout"] == spec
    assert main(common + ["--random-dropout", spec, "--out", str(tmp_path / "r")]) == 0
    log = [json.loads(line) for line in (tmp_path / "r" / "dropout.jsonl").read_text().splitlines()]
    assert all(r["random"] and len(r["channels"]) == 4 for r in log)


def test_train_cli_rejects_bad_dropout_input(tmp_path, capsys):
    common = ["train", "--model", MODEL, "--data", DATA, "--test-data", "none", "--frames", "8", "--size", "16",
              "--steps", "2", "--batch-size", "4", "--eval-clips", "4", "--quiet"]
    assert main(common + ["--static-dropout", "head:select=topk:2:pairs=8", "--out", str(tmp_path / "a")]) == 2
    assert "'head'" in capsys.readouterr().err  # a (B, classes) output has no channel maps
    assert main(common + ["--static-dropout", "stag:p=0.5", "--out", str(tmp_path / "b")]) == 2
    assert "unknown layer 'stag'" in capsys.readouterr().err
    assert main(common + ["--static-dropout", "stage:p=1.2", "--out", str(tmp_path / "c")]) == 2
    assert main(common + ["--static-dropout", "stage", "--random-dropout", "stage", "--out", str(tmp_path / "d")]) == 2
