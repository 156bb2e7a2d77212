"""``stlens train``: cross-entropy training of a video model on labelled clips, with checkpoints for tracking.

Batches are drawn from a generator seeded with (seed, step), so a resumed run sees exactly the batches an
uninterrupted run would; the model is initialised from ``seed``; the optimizer moments and torch RNG state travel
with every checkpoint. Output folder::

    DIR/config.json                     the run (model spec and options, data, optimizer, seed, input spec)
    DIR/metrics.jsonl                   one JSON line per log step / evaluation (step, loss, train/test accuracy)
    DIR/checkpoints/step_NNNNNN.*       weights (.safetensors), info (.json), optimizer + RNG (.state.safetensors)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlens import __version__
from stlens.errors import StlensError
from stlens.files import write_json, write_text
from stlens.models.registry import ModelHandle, load_model
from stlens.train.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from stlens.train.data import LabelledClips, heldout_spec, open_clips

log = logging.getLogger("stlens")

#: config fields that must match for a resume (``steps`` may grow: the schedule then follows the new length)
RESUME_KEYS = ("model", "weights", "data", "seed", "batch_size", "lr", "weight_decay", "frames", "size",
               "static_dropout", "random_dropout")


@dataclass
class TrainConfig:
    """What ``stlens train`` runs. ``checkpoint_every`` 0 saves only the final step; otherwise step 0, every K
    steps and the final step are saved. ``test_data`` "auto" is a synth world's test split (none for videos)."""

    model: str
    data: str
    steps: int
    out: str
    weights: str | None = None
    test_data: str | None = "auto"
    checkpoint_every: int = 0
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    eval_clips: int = 256
    log_every: int = 10
    augment: bool = False
    frames: int | None = None
    size: int | None = None
    static_dropout: str | None = None
    random_dropout: str | None = None

    def validate(self) -> None:
        if self.steps < 1:
            raise StlensError(f"--steps must be ≥ 1, got {self.steps}")
        if self.checkpoint_every < 0:
            raise StlensError(f"--checkpoint-every must be ≥ 0, got {self.checkpoint_every}")
        if self.batch_size < 1:
            raise StlensError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if not self.lr > 0:
            raise StlensError(f"--lr must be > 0, got {self.lr}")
        if self.static_dropout and self.random_dropout:
            raise StlensError("--static-dropout and --random-dropout are two arms of an experiment: give one")


#: a callback sees (step just finished, model, trainer); it may change the model (e.g. re-select dropout channels).
#: It is also called once before the first step with the step training resumes from (0 for a new run).
Callback = Callable[[int, nn.Module, "Trainer"], None]


def takes_two_inputs(module: nn.Module) -> bool:
    """True for two-stream models whose forward takes (rgb, flow); an explicit ``module.stlens_inputs`` (set by
    ``stlens.models.adapters.adapt_inputs``: 1, the module takes one clip) wins over the forward signature."""
    declared = getattr(module, "stlens_inputs", None)
    if declared is not None:
        return declared == 2
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return len(params) >= 2


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def accuracy(model: nn.Module, clips: LabelledClips, count: int, batch_size: int, seed: int) -> float:
    """Top-1 accuracy (eval mode) on the first ``count`` clips; video clips are drawn with a fixed seed."""
    was_training = model.training
    model.eval()
    count = min(count, len(clips))
    correct = 0
    rng = np.random.default_rng((seed, 7))
    for start in range(0, count, batch_size):
        inputs, labels = clips.batch(np.arange(start, min(count, start + batch_size)), rng)
        logits = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        correct += int((logits.argmax(1) == labels).sum())
    model.train(was_training)
    return correct / count


@dataclass
class Trainer:
    config: TrainConfig
    callbacks: Sequence[Callback] = ()
    progress: bool = True
    handle: ModelHandle = field(init=False)

    def __post_init__(self) -> None:
        self.config.validate()
        torch.manual_seed(self.config.seed)
        self.handle = load_model(self.config.model, self.config.weights, frames=self.config.frames,
                                 size=self.config.size)
        self.model = self.handle.module
        self.two_stream = takes_two_inputs(self.model)
        self.train_clips = open_clips(self.config.data, self.handle.input, flow=self.two_stream,
                                      augment=self.config.augment)
        test = heldout_spec(self.config.data) if self.config.test_data == "auto" else self.config.test_data
        self.test_clips = open_clips(test, self.handle.input, flow=self.two_stream) if test else None
        self._check_classes()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.out = Path(self.config.out)
        self.checkpoints = self.out / "checkpoints"
        self.callbacks = list(self.callbacks)
        self.dropout = self._dropout_schedule()
        if self.dropout is not None:
            self.callbacks.append(self.dropout)

    def _dropout_schedule(self):
        """The StaticDropout (or random-channel control) schedule of ``--static-dropout`` / ``--random-dropout``."""
        text = self.config.static_dropout or self.config.random_dropout
        if not text:
            return None
        from stlens.pairs.makers import make_pairs
        from stlens.train.static_dropout import DropoutPlan, DropoutSchedule
        from stlens.video.sources import open_data

        plan = DropoutPlan.parse(text, random=bool(self.config.random_dropout))
        pairs = make_pairs(open_data(self.config.data), self.handle.input, plan.pairs, seed=self.config.seed,
                           flow="tvl1" if self.two_stream else None)
        return DropoutSchedule(plan, self.handle, pairs, seed=self.config.seed, log_path=self.out / "dropout.jsonl")

    def _check_classes(self) -> None:
        probe = self.train_clips.batch(np.arange(1), np.random.default_rng(0))[0]
        self.model.eval()
        with torch.inference_mode():
            logits = self.model(*probe) if isinstance(probe, tuple) else self.model(probe)
        if logits.ndim != 2 or logits.shape[1] < self.train_clips.num_classes:
            raise StlensError(f"{self.config.model} outputs {tuple(logits.shape)} but {self.config.data} has "
                              f"{self.train_clips.num_classes} classes (set classes= in the model spec)")

    def run_config(self) -> dict[str, Any]:
        return {"stlens_version": __version__, **dataclasses.asdict(self.config),
                "model_config": getattr(self.model, "stlens_config", None),
                "input": dataclasses.asdict(self.handle.input), "two_stream": self.two_stream,
                "test_data_resolved": heldout_spec(self.config.data) if self.config.test_data == "auto"
                else self.config.test_data, "train_clips": len(self.train_clips),
                "num_classes": self.train_clips.num_classes}

    def _resume(self) -> int:
        """Load the last complete checkpoint when the folder holds a compatible run; returns the next step."""
        config_path = self.out / "config.json"
        found = list_checkpoints(self.checkpoints)
        if not config_path.is_file():
            if found:
                raise StlensError(f"{self.out} has checkpoints but no config.json: use another --out")
            return 0
        previous = json.loads(config_path.read_text())
        current = self.run_config()
        changed = [k for k in RESUME_KEYS if previous.get(k) != current.get(k)]
        if changed:
            diffs = ", ".join(f"{k}: {previous.get(k)!r} → {current.get(k)!r}" for k in changed)
            raise StlensError(f"{self.out} holds a different run ({diffs}); use another --out or the same settings")
        if not found:
            return 0
        step, weights = found[-1]
        load_checkpoint(weights, self.model, self.optimizer)
        self._truncate_metrics(step)
        log.warning("resuming %s from step %d", self.out, step)
        return step + 1

    def _truncate_metrics(self, step: int) -> None:
        path = self.out / "metrics.jsonl"
        if path.is_file():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            write_text(path, "".join(line + "\n" for line in kept))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def evaluate(self) -> dict[str, float]:
        c = self.config
        result = {"train_acc": accuracy(self.model, self.train_clips, c.eval_clips, 2 * c.batch_size, c.seed)}
        if self.test_clips is not None:
            result["test_acc"] = accuracy(self.model, self.test_clips, c.eval_clips, 2 * c.batch_size, c.seed)
        return result

    def _checkpoint(self, step: int, loss: float | None) -> None:
        metrics = {"step": step, "loss": loss, **self.evaluate()}
        self._log({**metrics, "kind": "eval"})
        save_checkpoint(self.checkpoints, step, self.model, self.optimizer,
                        {"metrics": metrics, "config": self.run_config()})

    def _is_checkpoint_step(self, step: int) -> bool:
        every = self.config.checkpoint_every
        return step == self.config.steps or (every > 0 and step % every == 0)

    def train(self) -> dict[str, Any]:
        """Train to ``config.steps`` (resuming when possible); returns the final metrics."""
        from tqdm.auto import tqdm

        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        start = self._resume()
        write_json(self.out / "config.json", self.run_config())
        if start == 0 and c.checkpoint_every > 0 and not list_checkpoints(self.checkpoints):
            self._checkpoint(0, None)
        if start == 0:
            start = 1
        if start > c.steps:
            log.warning("%s is already trained to step %d", self.out, start - 1)
        for callback in self.callbacks:
            callback(start - 1, self.model, self)
        self.model.train()
        losses: list[float] = []
        correct = seen = 0
        began = time.perf_counter()
        bar = tqdm(range(start, c.steps + 1), desc="train", disable=not self.progress, initial=start - 1,
                   total=c.steps)
        for step in bar:
            rng = np.random.default_rng((c.seed, step))
            inputs, labels = self.train_clips.batch(rng.integers(0, len(self.train_clips), c.batch_size), rng)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(step - 1, c)
            logits = self.model(*inputs) if isinstance(inputs, tuple) else self.model(inputs)
            loss = F.cross_entropy(logits, labels)
            if not torch.isfinite(loss):
                raise StlensError(f"loss became {float(loss)} at step {step}: lower --lr (checkpoints so far are "
                                  f"kept in {self.checkpoints})")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            for callback in self.callbacks:
                callback(step, self.model, self)
            if step % c.log_every == 0 or step == c.steps:
                record = {"step": step, "loss": float(np.mean(losses)), "batch_acc": correct / seen,
                          "lr": learning_rate(step - 1, c), "seconds": round(time.perf_counter() - began, 2),
                          "kind": "train"}
                self._log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['batch_acc']:.2f}")
                losses, correct, seen = [], 0, 0
            if self._is_checkpoint_step(step):
                self._checkpoint(step, float(loss.detach()))
                self.model.train()
        bar.close()
        final = list_checkpoints(self.checkpoints)
        if not final:
            return {}
        return json.loads(final[-1][1].with_suffix(".json").read_text())["metrics"]


def train(config: TrainConfig, callbacks: Sequence[Callback] = (), progress: bool = True) -> dict[str, Any]:
    """Train a model as ``config`` says; see ``Trainer``. Returns the metrics of the last checkpoint."""
    return Trainer(config, callbacks, progress).train()
