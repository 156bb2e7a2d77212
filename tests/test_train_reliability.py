"""stlens train / track under failure (issue 13): --eval-clips 0, an evaluation that raises, a truncated or corrupt
last checkpoint, a corrupt run config.json, and metrics lines that a resume leaves exactly as an uninterrupted run's."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

import stlens.train.trainer as trainer_module
from stlens.cli import main
from stlens.errors import StlensError
from stlens.train import TrainConfig, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "module:conftest:tiny_classifier"
DATA = "synth:motion?n=16&frames=4&size=16&seed=0"


def train_args(out, steps: int = 6, every: int = 3, eval_clips: int = 4) -> list[str]:
    return ["train", "--model", MODEL, "--data", DATA, "--frames", "4", "--size", "16", "--steps", str(steps),
            "--checkpoint-every", str(every), "--batch-size", "4", "--eval-clips", str(eval_clips), "--out",
            str(out), "--quiet"]


def track_args(run, out) -> list[str]:
    return ["track", "--model", MODEL, "--checkpoints", str(run), "--data", DATA, "--layers", "stem", "--pairs", "8",
            "--bootstrap", "0", "--out", str(out), "--quiet"]


def metrics(run, timing: bool = False) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return lines if timing else [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def weights(run, step: int):
    return run / "checkpoints" / f"step_{step:06d}.safetensors"


def files(run) -> dict:
    """The checkpoint files by name: bytes, or for a JSON its content without timing."""
    found = {}
    for path in (run / "checkpoints").iterdir():
        found[path.name] = path.read_bytes()
        if path.name.endswith(".json"):
            info = json.loads(found[path.name])
            (info.get("log") or {}).pop("seconds", None)
            found[path.name] = info
    return found


def fresh_model():
    from stlens.models.registry import load_model

    return load_model(MODEL, frames=4, size=16).module


def test_eval_clips_zero_trains_and_keeps_every_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert main(train_args(run, steps=4, every=2, eval_clips=0)) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [0, 2, 4]
    info = json.loads(weights(run, 4).with_suffix(".json").read_text())
    assert info["metrics"] == {"step": 4, "loss": info["metrics"]["loss"]}  # no accuracies, no division by zero
    assert [r["step"] for r in metrics(run) if r["kind"] == "eval"] == [0, 2, 4]
    load_checkpoint(weights(run, 4), fresh_model())


def test_negative_eval_clips_is_refused_before_any_work(tmp_path, capsys):
    assert main(train_args(tmp_path / "run", eval_clips=-1)) == 2
    assert "--eval-clips" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(StlensError, match="log_every"):
        TrainConfig(model=MODEL, data=DATA, steps=1, out=str(tmp_path), log_every=0).validate()


def test_an_evaluation_that_raises_keeps_the_weights_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    straight = tmp_path / "straight"
    assert main(train_args(straight)) == 0
    real = trainer_module.accuracy
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # step 0 evaluates (train + test), then the evaluation at step 3 raises
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("evaluation exploded")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "accuracy", flaky)
    run = tmp_path / "run"
    assert main(train_args(run)) == 2
    err = capsys.readouterr().err
    assert "evaluation exploded" in err and "step 3" in err and "resume" in err
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [0, 3]  # the weights of step 3 are on disk
    model = fresh_model()
    load_checkpoint(weights(run, 3), model)
    assert all(torch.equal(v, load_file(str(weights(straight, 3)))[k]) for k, v in model.state_dict().items())

    monkeypatch.setattr(trainer_module, "accuracy", real)
    assert main(train_args(run)) == 0  # resumes from step 3, evaluates it, and goes on to the same end
    assert metrics(run) == metrics(straight)
    assert weights(run, 6).read_bytes() == weights(straight, 6).read_bytes()
    assert json.loads(weights(run, 3).with_suffix(".json").read_text())["metrics"] == \
        json.loads(weights(straight, 3).with_suffix(".json").read_text())["metrics"]


def test_metrics_logging_that_raises_at_a_checkpoint_keeps_the_weights(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = trainer_module.Trainer._log

    def failing(self, record):
        if record["step"] == 6 and record["kind"] == "train":
            raise OSError(28, "No space left on device")
        real(self, record)

    monkeypatch.setattr(trainer_module.Trainer, "_log", failing)
    assert main(train_args(run)) == 2
    assert "No space left" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [0, 3, 6]
    monkeypatch.setattr(trainer_module.Trainer, "_log", real)
    straight = tmp_path / "straight"
    assert main(train_args(straight)) == 0
    assert main(train_args(run)) == 0  # the lost line and the evaluation of step 6 are written on resume
    assert metrics(run) == metrics(straight)


@pytest.mark.parametrize("damage", ["truncate_weights", "truncate_state", "invalid_json"])
def test_a_damaged_last_checkpoint_is_skipped_by_track_and_train_resume(tmp_path, caplog, damage):
    run = tmp_path / "run"
    assert main(train_args(run)) == 0
    good = files(run)
    target = {"truncate_weights": weights(run, 6), "invalid_json": weights(run, 6).with_suffix(".json"),
              "truncate_state": weights(run, 6).with_name("step_000006.state.safetensors")}[damage]
    bad = b'{"step": 6, "metr' if damage == "invalid_json" else target.read_bytes()[: target.stat().st_size // 2]
    target.write_bytes(bad)

    caplog.set_level(logging.WARNING, logger="stlens")
    assert main(track_args(run, tmp_path / "track")) == 0
    saved = json.loads((tmp_path / "track" / "track.json").read_text())
    if damage == "truncate_state":  # track reads only the weights and the info: step 6 is still fine for it
        assert saved["meta"]["steps"] == [0, 3, 6]
    else:
        assert saved["meta"]["steps"] == [0, 3]
        assert str(target) in caplog.text and "skipped" in caplog.text
    assert target.read_bytes() == bad  # never deleted or changed

    caplog.clear()
    assert main(train_args(run)) == 0
    assert str(target) in caplog.text and "step 3" in caplog.text
    # the resumed run wrote step 6 again, the same bytes; the damaged file is kept beside it
    assert {k: v for k, v in files(run).items() if k in good} == good
    assert (target.parent / (target.name + ".corrupt")).read_bytes() == bad


def test_a_damaged_only_checkpoint_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, steps=2, every=0)) == 0
    target = weights(run, 2)
    target.write_bytes(target.read_bytes()[:40])
    capsys.readouterr()
    assert main(train_args(run, steps=2, every=0)) == 2
    assert str(target) in capsys.readouterr().err
    assert main(track_args(run, tmp_path / "track")) == 2
    assert str(target) in capsys.readouterr().err
    with pytest.raises(StlensError, match="step_000002.safetensors"):
        load_checkpoint(target, fresh_model())
    assert len(target.read_bytes()) == 40


@pytest.mark.parametrize("text", ['{"model": "x", ', "[1, 2]\n", ""])
def test_a_corrupt_run_config_is_refused_and_left_alone(tmp_path, capsys, text):
    run = tmp_path / "run"
    assert main(train_args(run, steps=2, every=0)) == 0
    (run / "config.json").write_text(text)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(train_args(run, steps=4, every=0)) == 2
    assert str(run / "config.json") in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_resumed_run_writes_the_metrics_lines_of_an_uninterrupted_run(tmp_path, monkeypatch):
    straight, run = tmp_path / "straight", tmp_path / "run"
    args = train_args(straight, steps=8)  # log_every 10: one train line at step 8, averaging all 8 steps
    assert main(args) == 0
    real = trainer_module.learning_rate

    def interrupt_at_step_5(step, config):
        if step == 4:  # learning_rate(step - 1) is asked for at the start of step 5
            raise KeyboardInterrupt
        return real(step, config)

    monkeypatch.setattr(trainer_module, "learning_rate", interrupt_at_step_5)
    assert main(train_args(run, steps=8)) == 130
    with open(run / "metrics.jsonl", "a") as handle:  # and a line cut short by a kill
        handle.write('{"step": 5, "lo')
    monkeypatch.setattr(trainer_module, "learning_rate", real)
    assert main(train_args(run, steps=8)) == 0  # resumes from step 3: steps 1-3 still count in the first line
    assert metrics(run) == metrics(straight)
    line = [r for r in metrics(run) if r["kind"] == "train"][-1]
    assert line["step"] == 8 and line["steps_averaged"] == 8
    assert weights(run, 8).read_bytes() == weights(straight, 8).read_bytes()


def test_metrics_logging_that_fails_between_checkpoints_is_a_clear_error(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = trainer_module.Trainer._log

    def failing(self, record):
        if record["step"] == 4:
            raise PermissionError(13, "Permission denied", str(self.out / "metrics.jsonl"))
        real(self, record)

    monkeypatch.setattr(trainer_module.Trainer, "_log", failing)
    config = TrainConfig(model=MODEL, data=DATA, steps=6, out=str(run), checkpoint_every=3, batch_size=4, frames=4,
                         size=16, eval_clips=4, log_every=2)
    with pytest.raises(StlensError, match="metrics.jsonl at step 4.*resume"):
        trainer_module.Trainer(config, progress=False).train()
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [0, 3]
    monkeypatch.setattr(trainer_module.Trainer, "_log", real)
    trainer_module.Trainer(config, progress=False).train()
    assert [r["step"] for r in metrics(run) if r["kind"] == "train"] == [2, 4, 6]
    assert all(r["steps_averaged"] == 2 for r in metrics(run) if r["kind"] == "train")


def test_overwrite_replaces_a_complete_train_run_and_keeps_the_users_files(tmp_path):
    """Without --overwrite a rerun into a complete run leaves it as it is; with it, the files the run marker lists
    are removed and the run starts again from step 0; a file of the user's stays."""
    out = tmp_path / "run"
    assert main(train_args(out, steps=6, every=3)) == 0
    (out / "notes.txt").write_text("mine")
    first = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert main(train_args(out, steps=4, every=2)) == 0  # already trained: left as it is
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")) == first
    assert main([*train_args(out, steps=4, every=2), "--overwrite"]) == 0
    second = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    steps = lambda names: sorted({int(name[5:11]) for name in names})  # noqa: E731
    assert steps(first) == [0, 3, 6] and steps(second) == [0, 2, 4]  # nothing of the first run is left
    assert (out / "notes.txt").read_text() == "mine"
    marker = json.loads((out / ".stlens-run.json").read_text())
    assert marker["status"] == "complete" and "notes.txt" not in marker["files"]
