"""stlens train: schedule, checkpoints (safetensors + JSON, exact resume), metrics, CLI end to end on synth clips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stlens.cli import main
from stlens.core.handle import takes_two_inputs
from stlens.errors import StlensError
from stlens.train import TrainConfig, Trainer, list_checkpoints, load_checkpoint, train
from stlens.train.checkpoints import optimizer_tensors, restore_optimizer
from stlens.train.trainer import learning_rate

MODEL = "module:conftest:tiny_classifier"
DATA = "synth:motion?n=64&frames=8&size=32&seed=0"


def config(tmp_path, **changes) -> TrainConfig:
    base = dict(model=MODEL, data=DATA, steps=6, out=str(tmp_path / "run"), checkpoint_every=3, batch_size=4,
                frames=8, size=32, eval_clips=16, log_every=2, warmup=2)
    return TrainConfig(**{**base, **changes})


def test_learning_rate_warms_up_then_decays_to_zero():
    c = TrainConfig(model="m", data="d", steps=100, out="o", lr=1.0, warmup=10)
    assert learning_rate(0, c) == pytest.approx(0.1)
    assert learning_rate(9, c) == pytest.approx(1.0)
    assert learning_rate(55, c) == pytest.approx(0.5)  # halfway through the cosine
    assert learning_rate(100, c) == pytest.approx(0.0, abs=1e-12)


def test_two_input_models_are_recognised():
    class Two(torch.nn.Module):
        def forward(self, rgb, flow):
            return rgb

    class One(torch.nn.Module):
        def forward(self, x, scale: float = 1.0):
            return x

    assert takes_two_inputs(Two()) and not takes_two_inputs(One())


def test_optimizer_state_round_trips_through_tensors_and_json():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    tensors, scalars = optimizer_tensors(opt)
    other = torch.optim.AdamW(model.parameters(), lr=0.5)
    restore_optimizer(other, tensors, json.loads(json.dumps(scalars)))
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(other.state_dict()["state"][0][key]))
    assert other.param_groups[0]["lr"] == 0.1


def test_training_writes_checkpoints_metrics_and_learns(tmp_path):
    few = "synth:appearance?n=8&frames=8&size=32&seed=0"  # 8 clips: a tiny net can fit them in 30 steps
    metrics = train(config(tmp_path, data=few, steps=30, checkpoint_every=10, lr=1e-2, batch_size=8, eval_clips=8),
                    progress=False)
    run = tmp_path / "run"
    steps = [s for s, _ in list_checkpoints(run / "checkpoints")]
    assert steps == [0, 10, 20, 30]
    info = json.loads((run / "checkpoints" / "step_000030.json").read_text())
    assert info["config"]["model_config"] == {"name": "tiny_classifier", "options": {"classes": 8}}
    assert info["config"]["test_data_resolved"].startswith("synth:appearance?") and "split=test" in \
        info["config"]["test_data_resolved"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in lines if r["kind"] == "train"]
    assert [r["step"] for r in lines if r["kind"] == "eval"] == [0, 10, 20, 30]
    assert set(metrics) >= {"step", "loss", "train_acc", "test_acc"} and metrics["step"] == 30
    assert np.mean(train_losses[-3:]) < 0.8 * np.mean(train_losses[:3])  # it learns something
    assert metrics["train_acc"] >= 0.5  # chance is 1/8
    weights = load_file(str(run / "checkpoints" / "step_000030.safetensors"))
    assert "stem.1.running_mean" in weights


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = Trainer(config(tmp_path / "a"), progress=False)
    straight.train()
    first = Trainer(config(tmp_path / "b", steps=3), progress=False)
    first.train()
    resumed = Trainer(config(tmp_path / "b", steps=6), progress=False)
    resumed.train()
    a = straight.model.state_dict()
    b = resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "eval"] == [0, 3, 6]


def test_a_different_run_in_the_same_folder_is_refused(tmp_path):
    train(config(tmp_path, steps=2, checkpoint_every=0), progress=False)
    with pytest.raises(StlensError, match="different run.*seed"):
        Trainer(config(tmp_path, steps=2, seed=1), progress=False).train()


def test_checkpoint_loads_into_a_fresh_model(tmp_path):
    trainer = Trainer(config(tmp_path), progress=False)
    trainer.train()
    fresh = Trainer(config(tmp_path / "other", seed=5), progress=False).model
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_000006.safetensors", fresh)
    assert checkpoint.step == 6
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in trainer.model.state_dict().items())


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(StlensError, match="`steps`"):
        train(config(tmp_path, steps=0), progress=False)
    with pytest.raises(StlensError, match="frames"):
        Trainer(config(tmp_path, frames=16), progress=False)
    with pytest.raises(StlensError, match="no labels"):
        Trainer(config(tmp_path, data="sample:"), progress=False)


def test_cli_train_then_measure_with_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", MODEL, "--data", DATA, "--frames", "8", "--size", "32", "--steps", "4",
                 "--batch-size", "4", "--eval-clips", "8", "--out", str(out), "--quiet"]) == 0
    weights = out / "checkpoints" / "step_000004.safetensors"
    assert main(["measure", "--model", MODEL, "--weights", str(weights), "--data", DATA, "--frames", "8",
                 "--size", "32", "--pairs", "8", "--bootstrap", "0", "--out", str(tmp_path / "m"), "--quiet"]) == 0
    result = json.loads((tmp_path / "m" / "result.json").read_text())
    assert result["weights"] == str(weights)
    assert [layer["layer"] for layer in result["layers"]] == ["stem", "stage", "head"]
