"""``stlens train``: cross-entropy training of a video model on labelled clips, with checkpoints for tracking.

Batches are drawn from a generator seeded with (seed, step), so a resumed run sees exactly the batches an
uninterrupted run would; the model is initialised from ``seed``; the optimizer moments and torch RNG state travel
with every checkpoint. Output folder::

    DIR/config.json                     the run (model spec and options, data, optimizer, seed, input spec)
    DIR/metrics.jsonl                   one JSON line per log step / evaluation (step, loss, train/test accuracy)
    DIR/checkpoints/step_NNNNNN.*       weights (.safetensors), info (.json), optimizer + RNG (.state.safetensors)

A "train" line of ``metrics.jsonl`` averages the loss and batch accuracy of the ``steps_averaged`` steps since the
previous train line; the running sums travel with every checkpoint, so a resumed run writes the same lines as an
uninterrupted one (all but ``seconds``). At a checkpoint step the weights, optimizer and RNG state are saved *before*
the evaluation runs and before the metrics are logged: if either fails, the checkpoint is complete on disk, the error
says so, and running the same command again resumes from it (its missing metrics line and evaluation are redone).
An unreadable last checkpoint is skipped (with a warning naming it) and the run resumes from the previous one.

``device`` (``auto``: CUDA when available) holds the model, the optimizer state and each batch; ``precision`` bf16 or
fp16 runs the forward passes under autocast (fp16 with a ``GradScaler``), fp32 runs with TF32 off. config.json
records both as asked and as resolved (``device_resolved``, ``precision_resolved``). Checkpoints are written from the
CPU and read onto the CPU, then copied to the model's device, so a run resumes on another device; the precision may
not change on resume.

Under ``torchrun`` (a process group from ``stlens.core.distributed``) training is data-parallel
(``DistributedDataParallel``: gloo on CPUs, NCCL on GPUs, one GPU per process). The global batch of ``batch_size``
clip indices of a step is drawn as in one process; rank r of W trains on the contiguous piece
``distributed.shard(batch_size, world)`` of it. Each rank's loss is its sum of cross-entropies × W / batch_size, so
DDP's average of the ranks' gradients is the gradient of the global batch's mean loss (for any split, also when the
pieces differ in size by one); the logged loss, batch accuracy and the non-finite check use the sums over all ranks.
Rank 0 alone claims and locks the run folder (every rank learns of a refusal), writes config.json, metrics.jsonl,
dropout.jsonl and the checkpoints, and evaluates (the other ranks wait at the next step). Every rank resumes from the
same checkpoint (weights, optimizer, RNG); a rank that fails tells the others, which stop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens._version import __version__
from stlens.core import distributed
from stlens.core.device import autocast, exact_fp32, resolve_device, resolve_precision, warn_slow_bf16
from stlens.core.handle import ModelHandle, takes_two_inputs
from stlens.core.workers import resolve_workers
from stlens.errors import StlensError
from stlens.files import check_format, versioned, write_json, write_text
from stlens.models.registry import load_model
from stlens.runs import RunFolder
from stlens.train.checkpoints import (
    Checkpoint,
    CorruptCheckpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    set_aside,
    update_info,
)
from stlens.train.tasks import evaluate_clips, task_for
from stlens.video.labelled import LabelledClips, heldout_spec, open_clips

log = logging.getLogger("stlens")

#: config fields that must match for a resume (``steps`` may grow: the schedule then follows the new length)
RESUME_KEYS = ("model", "weights", "data", "seed", "batch_size", "lr", "weight_decay", "frames", "size",
               "static_dropout", "random_dropout", "precision_resolved", "task", "mask_threshold")
#: the value of a resume key in a config.json written before the key was recorded
RESUME_DEFAULTS = {"precision_resolved": "fp32", "task": "classify", "mask_threshold": 0.5}


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
    device: str = "auto"
    precision: str = "fp32"
    workers: int | None = None  # processes that make the pairs of the StaticDropout measurements
    task: str = "classify"  # or segment, instances (stlens.train.tasks)
    mask_threshold: float = 0.5  # segment, instances: a pixel is the object where sigmoid(logit) > this
    tensorboard: str | None = None  # a folder for TensorBoard event files of the metrics lines (train.tensorboard)

    def validate(self) -> None:
        if self.steps < 1:
            raise StlensError(f"`steps` must be ≥ 1, got {self.steps}")
        if self.eval_clips < 0:
            raise StlensError(f"`eval_clips` must be ≥ 0 (0: no accuracy evaluation), got {self.eval_clips}")
        if self.log_every < 1:
            raise StlensError(f"log_every must be ≥ 1, got {self.log_every}")
        if self.checkpoint_every < 0:
            raise StlensError(f"`checkpoint_every_steps` must be ≥ 0, got {self.checkpoint_every}")
        if self.batch_size < 1:
            raise StlensError(f"`batch_size` must be ≥ 1, got {self.batch_size}")
        if not self.lr > 0:
            raise StlensError(f"`lr` must be > 0, got {self.lr}")
        if self.static_dropout and self.random_dropout:
            raise StlensError("`static_dropout` and `random_dropout` are two arms of an experiment: give one")
        task_for(self.task, self.mask_threshold)
        if self.task != "classify" and (self.static_dropout or self.random_dropout):
            raise StlensError("`static_dropout`/`random_dropout` are for `task` classify")
        if self.tensorboard is not None:
            from stlens.train.tensorboard import require_tensorboard

            require_tensorboard()


#: a callback sees (step just finished, model, trainer); it may change the model (e.g. re-select dropout channels).
#: It is also called once before the first step with the step training resumes from (0 for a new run).
Callback = Callable[[int, nn.Module, "Trainer"], None]


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def accuracy(model: nn.Module, clips: LabelledClips, count: int, batch_size: int, seed: int,
             precision: str = "fp32") -> float:
    """Top-1 accuracy (eval mode) on the first ``count`` clips: ``evaluate_clips`` with the ``Accuracy`` metric (the
    same clips, seed and autocast as every other evaluation)."""
    from stlens.measure.scores import Accuracy

    if min(count, len(clips)) < 1:
        raise StlensError("accuracy needs at least one clip")
    scores = evaluate_clips(model, clips, count, batch_size, seed, Accuracy(clips.num_classes), precision)
    return float(scores["top1"].mean())


@dataclass
class Trainer:
    config: TrainConfig
    callbacks: Sequence[Callback] = ()
    progress: bool = True
    overwrite: bool = False  # remove the earlier train run in out first (runs.RunFolder.resume)
    handle: ModelHandle = field(init=False)

    def __post_init__(self) -> None:
        self.world = distributed.current()
        self.writes = self.world.rank == 0  # rank 0 (a single process) writes the run folder
        self.group = distributed.Group(self.world) if self.world.distributed else None
        self.config.validate()
        if self.config.batch_size < self.world.size:
            raise StlensError(f"`batch_size` {self.config.batch_size} is split over {self.world.size} processes: "
                              f"give at least one clip per process")

        def claim() -> RunFolder:
            folder = RunFolder(self.config.out, "train", overwrite=self.overwrite)
            folder.resume()  # before any work: refuses a folder that holds another verb's run, or is in use
            return folder

        # rank 0 claims the folder; in a distributed run every rank learns whether that went well
        self.folder: RunFolder | None = distributed.on_first_rank(self.world, claim, self.group)
        try:
            with self._stopping_the_others():
                self._setup()
        except BaseException:
            if self.folder is not None:
                self.folder.release()
            raise

    @contextmanager
    def _stopping_the_others(self) -> Iterator[None]:
        """In a distributed run: an error here tells the other ranks (they stop at their next step), and an error
        caused by another rank that failed first (a broken collective) is reported as that rank's."""
        if self.group is None:
            yield
            return
        try:
            yield
        except Exception as exc:
            self.group.stop_if_failed()  # another rank failed first: its message, not a broken connection's
            self.group.fail_with(exc)
            raise

    def _setup(self) -> None:
        # checked before any work; under torchrun auto/cuda mean this process's GPU (cuda:LOCAL_RANK)
        self.device = resolve_device(distributed.rank_device(self.config.device, self.world))
        self.precision = resolve_precision(self.config.precision, self.device)
        self.workers = resolve_workers(self.config.workers)
        torch.manual_seed(self.config.seed)
        self.handle = load_model(self.config.model, self.config.weights, frames=self.config.frames,
                                 size=self.config.size, device=self.device)
        self.model = self.handle.module
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.two_stream = takes_two_inputs(self.model)
        self.task = task_for(self.config.task, self.config.mask_threshold)
        self.train_clips = open_clips(self.config.data, self.handle.input, flow=self.two_stream,
                                      augment=self.config.augment, task=self.task.name)
        test = heldout_spec(self.config.data) if self.config.test_data == "auto" else self.config.test_data
        self.test_clips = (open_clips(test, self.handle.input, flow=self.two_stream, task=self.task.name) if test
                           else None)
        self._check_classes()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.out = Path(self.config.out)
        self.checkpoints = self.out / "checkpoints"
        self.callbacks = list(self.callbacks)
        self.dropout = self._dropout_schedule()
        if self.dropout is not None:
            self.callbacks.append(self.dropout)
        self._damaged: dict[int, Path] = {}  # step → an unreadable checkpoint skipped on resume (kept, never deleted)
        self._running: tuple[list[float], int, int] = ([], 0, 0)  # losses, correct, seen since the last train line
        self._unevaluated: Checkpoint | None = None  # a resumed checkpoint whose evaluation did not finish
        self._last_metrics: dict[str, Any] = {}
        self._writer = None  # the TensorBoard writer of ``tensorboard``, opened at the first metrics line

    def _dropout_schedule(self):
        """The StaticDropout (or random-channel control) schedule of ``--static-dropout`` / ``--random-dropout``."""
        text = self.config.static_dropout or self.config.random_dropout
        if not text:
            return None
        from stlens.pairs.compose import make_pairs
        from stlens.train.static_dropout import DropoutPlan, DropoutSchedule
        from stlens.video.sources import open_data

        plan = DropoutPlan.parse(text, random=bool(self.config.random_dropout))
        pairs = make_pairs(open_data(self.config.data), self.handle.input, plan.pairs, seed=self.config.seed,
                           flow="tvl1" if self.two_stream else None)
        piece = distributed.shard(self.config.batch_size, self.world)
        # every rank measures its share of the selection's pairs (stlens.measure merges them): the same channels on
        # every rank; rank 0 logs them. Each rank draws the global batch's masks and keeps the rows of its piece.
        return DropoutSchedule(plan, self.handle, pairs, seed=self.config.seed, log_path=self.out / "dropout.jsonl",
                               precision=self.precision, workers=self.workers, writes=self.writes,
                               rows=(self.config.batch_size, piece.start, piece.stop) if self.world.distributed
                               else None)

    def _check_classes(self) -> None:
        from stlens.measure.run import to_device

        inputs, targets = self.train_clips.batch(np.arange(1), np.random.default_rng(0))
        probe = to_device(inputs, self.device)
        self.model.eval()
        with torch.inference_mode(), autocast(self.device, self.precision):
            logits = self.model(*probe) if isinstance(probe, tuple) else self.model(probe)
        self.task.check(logits, targets, self.train_clips.num_classes, self.config.model, self.config.data)

    def run_config(self) -> dict[str, Any]:
        return versioned({"stlens_version": __version__, **dataclasses.asdict(self.config),
                "model_config": getattr(self.model, "stlens_config", None),
                "input": dataclasses.asdict(self.handle.input), "two_stream": self.two_stream,
                "test_data_resolved": heldout_spec(self.config.data) if self.config.test_data == "auto"
                else self.config.test_data, "train_clips": len(self.train_clips),
                "num_classes": self.train_clips.num_classes, "device_resolved": str(self.device),
                "precision_resolved": self.precision, "processes": self.world.size,
                "run_id": self.folder.run_id if self.folder is not None else None})

    def _resume(self) -> int:
        """Load the last complete checkpoint when the folder holds a compatible run; returns the next step."""
        config_path = self.out / "config.json"
        found = list_checkpoints(self.checkpoints)
        if not config_path.is_file():
            if found:
                raise StlensError(f"{self.out} has checkpoints but no config.json: use another `out`")
            return 0
        previous = self._read_config(config_path)
        current = self.run_config()
        before = {k: previous.get(k, RESUME_DEFAULTS.get(k)) for k in RESUME_KEYS}
        changed = [k for k in RESUME_KEYS if before[k] != current.get(k)]
        if changed:
            diffs = ", ".join(f"{k}: {before[k]!r} → {current.get(k)!r}" for k in changed)
            raise StlensError(f"{self.out} holds a different run ({diffs}); use another `out` or the same settings")
        if not found:
            return 0
        checkpoint = self._load_last_readable(found)
        info = checkpoint.info
        running = info.get("running") or {}
        self._running = ([float(x) for x in running.get("losses", [])], int(running.get("correct", 0)),
                         int(running.get("seen", 0)))
        evaluated = info.get("evaluated", True)  # checkpoints of stlens ≤ 0.1.0 were saved after their evaluation
        self._unevaluated = None if evaluated else checkpoint
        self._last_metrics = dict(info.get("metrics") or {})
        if self.writes:
            self._truncate_metrics(checkpoint.step, evaluated, info.get("log"))
            log.warning("resuming %s from step %d", self.out, checkpoint.step)
        return checkpoint.step + 1

    def _agreed_start(self) -> int:
        """``_resume`` on every rank (each loads the same checkpoint), then every rank agrees that it went well and on
        the step; a single process just resumes."""
        if self.group is None:
            return self._resume()
        start, error = 0, None
        try:
            start = self._resume()
        except StlensError as exc:
            error = str(exc)
        self.group.agree(error)
        starts = self.group.gather(start)
        if len(set(starts)) > 1:
            raise StlensError(f"the processes found different checkpoints to resume from in {self.checkpoints} "
                              f"(next steps {starts} by rank): is `out` on a filesystem that every process sees?")
        return start

    @staticmethod
    def _read_config(path: Path) -> dict[str, Any]:
        """The config.json of the run in ``--out``; a clear error (the file left as it is) when it is unreadable."""
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StlensError(f"{path} cannot be read ({exc}); it records the run in this folder, so it is left as it "
                              f"is: repair it, or use another `out`") from None
        if not isinstance(previous, dict):
            raise StlensError(f"{path} is not a stlens train config (a JSON object, found {type(previous).__name__});"
                              f" it is left as it is: repair it, or use another `out`")
        check_format(previous, path)
        return previous

    def _load_last_readable(self, found: list[tuple[int, Path]]) -> Checkpoint:
        """Load the last checkpoint that can be read, skipping (never deleting) damaged later ones with a warning."""
        damaged: list[tuple[int, Path, CorruptCheckpoint]] = []
        for step, weights in reversed(found):
            try:
                checkpoint = load_checkpoint(weights, self.model, self.optimizer)
            except CorruptCheckpoint as exc:
                damaged.append((step, weights, exc))
                continue
            for bad_step, bad, exc in damaged:
                if self.writes:
                    log.warning("skipped the damaged checkpoint %s (%s); resuming from step %d. Its files are kept: "
                                "when step %d is written again they are renamed to *.corrupt", bad, exc, step,
                                bad_step)
                self._damaged[bad_step] = bad
            return checkpoint
        problems = "; ".join(str(exc) for _, _, exc in damaged)
        raise StlensError(f"no checkpoint in {self.checkpoints} can be read ({problems}). Nothing was changed: move "
                          f"the damaged files away to train from the start, or use another `out`")

    def _truncate_metrics(self, step: int, evaluated: bool = True, line: dict[str, Any] | None = None) -> None:
        """Keep the metrics lines up to the resumed ``step`` (its eval line only when its evaluation finished), and
        restore its train ``line`` when logging it had failed."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        kept, unreadable = [], 0
        for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(text)
                at = int(record["step"])
            except (ValueError, TypeError, KeyError):
                unreadable += bool(text.strip())
                continue
            if at < step or (at == step and (evaluated or record.get("kind") != "eval")):
                kept.append(record)
        if unreadable:
            log.warning("dropped %d unreadable line(s) of %s (an interrupted write)", unreadable, path)
        if line is not None and not any(r["step"] == step and r.get("kind") == "train" for r in kept):
            kept.append(line)
        write_text(path, "".join(json.dumps(record) + "\n" for record in kept))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.config.tensorboard is not None:  # (rank 0 alone logs)
            from stlens.train.tensorboard import summary_writer, write_record

            if self._writer is None:
                self._writer = summary_writer(self.config.tensorboard)
            write_record(self._writer, record)

    def evaluate(self) -> dict[str, float]:
        """Train (and test) accuracy — or, for ``--task segment``, mIoU (and test mSR); for ``--task instances``
        the matched tracks' mean IoU and track AP (ap, ap50, ap75, ar1, ar10) over the clips — on the first
        ``eval_clips`` clips; empty with ``eval_clips`` 0."""
        c = self.config
        result = {}
        for split, clips in (("train", self.train_clips), ("test", self.test_clips)):
            if c.eval_clips > 0 and clips is not None and len(clips) > 0:
                if self.task.name == "classify":
                    result[f"{split}_acc"] = accuracy(self.model, clips, c.eval_clips, 2 * c.batch_size, c.seed,
                                                      self.precision)
                else:
                    metric = self.task.metric(clips.num_classes)
                    scores = evaluate_clips(self.model, clips, c.eval_clips, 2 * c.batch_size, c.seed, metric,
                                            self.precision)
                    result.update(self.task.evaluation(scores, split))
                    if callable(getattr(metric, "summary", None)):  # a set-level score (track AP) of these clips
                        result.update({f"{split}_{name}": value for name, value in metric.summary().items()})
        return result

    @contextmanager
    def _saved(self, step: int, weights: Path) -> Iterator[None]:
        """Turn a failure after the checkpoint ``weights`` was saved into a clear error that says how to resume."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - any failure of evaluation or logging: the weights are safe
            raise StlensError(f"evaluation or metrics logging at step {step} failed ({type(exc).__name__}: {exc}); "
                              f"the checkpoint {weights} is complete: run the same command again to resume from it "
                              f"(its evaluation is then redone)") from exc

    def _evaluate_checkpoint(self, step: int, loss: float | None, weights: Path) -> None:
        metrics = {"step": step, "loss": loss, **self.evaluate()}
        self._log({**metrics, "kind": "eval"})
        update_info(weights, {"metrics": metrics, "evaluated": True})
        self._last_metrics = metrics

    def _checkpoint(self, step: int, loss: float | None, line: dict[str, Any] | None = None) -> None:
        """Save first (complete, marked not yet evaluated), then log ``line`` (the train line of this step, if any),
        then evaluate and rewrite the checkpoint's JSON with the metrics."""
        if step in self._damaged:
            moved = set_aside(self._damaged.pop(step))
            log.warning("kept the damaged checkpoint of step %d as %s", step, ", ".join(str(p) for p in moved))
        losses, correct, seen = self._running
        info = {"metrics": {"step": step, "loss": loss}, "config": self.run_config(), "evaluated": False,
                "log": line, "running": {"losses": losses, "correct": correct, "seen": seen}}
        weights = save_checkpoint(self.checkpoints, step, self.model, self.optimizer, info)
        self._last_metrics = info["metrics"]
        self._mark()
        with self._saved(step, weights):
            if line is not None:
                self._log(line)
            self._evaluate_checkpoint(step, loss, weights)
        self._mark()

    def _is_checkpoint_step(self, step: int) -> bool:
        every = self.config.checkpoint_every
        return step == self.config.steps or (every > 0 and step % every == 0)

    def run_files(self) -> list[str]:
        """The files of this run, relative to the run folder (what the run marker lists)."""
        names = [n for n in ("config.json", "metrics.jsonl", "dropout.jsonl") if (self.out / n).is_file()]
        if self.checkpoints.is_dir():
            names += [str(p.relative_to(self.out)) for p in sorted(self.checkpoints.iterdir())
                      if p.is_file() and not p.name.startswith(".")]
        return names

    def _mark(self, status: str = "running") -> None:
        if self.folder is not None:
            self.folder.mark(self.run_files(), status)

    def train(self) -> dict[str, Any]:
        """Train to ``config.steps`` (resuming when possible); returns the final metrics. The run folder is marked
        (``.stlens-run.json``) after every checkpoint and released at the end."""
        try:
            with self._stopping_the_others():
                metrics = self._train()
            self._mark("complete")
            return metrics
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self.folder is not None:
                self.folder.release()

    def _train(self) -> dict[str, Any]:
        if self.precision == "bf16":
            warn_slow_bf16(self.device)
        with exact_fp32(self.precision == "fp32"):
            return self._train_steps()

    def _train_steps(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from stlens.measure.run import to_device

        c = self.config
        if self.writes:
            self.out.mkdir(parents=True, exist_ok=True)
        start = self._agreed_start()
        if self.writes:
            write_json(self.out / "config.json", self.run_config())
            if start == 0 and c.checkpoint_every > 0 and not list_checkpoints(self.checkpoints):
                self._checkpoint(0, None)
        if start == 0:
            start = 1
        if start > c.steps and self.writes:
            log.warning("%s is already trained to step %d", self.out, start - 1)
        for callback in self.callbacks:
            callback(start - 1, self.model, self)
        if self._unevaluated is not None and self.writes:  # the resumed checkpoint's evaluation did not finish
            pending, self._unevaluated = self._unevaluated, None
            with self._saved(pending.step, pending.weights):
                self._evaluate_checkpoint(pending.step, pending.info.get("metrics", {}).get("loss"), pending.weights)
        self.model.train()
        net = self._parallel()
        piece = distributed.shard(c.batch_size, self.world)
        losses, correct, seen = self._running
        began = time.perf_counter()
        bar = tqdm(range(start, c.steps + 1), desc="train", disable=not self.progress or not self.writes,
                   initial=start - 1, total=c.steps)
        for step in bar:
            if self.group is not None:
                self.group.stop_if_failed()
            rng = np.random.default_rng((c.seed, step))
            indices = rng.integers(0, len(self.train_clips), c.batch_size)
            if self.world.distributed:  # this rank's piece of the global batch; clip positions from its own stream
                indices = indices[piece.start:piece.stop]
                rng = np.random.default_rng((c.seed, step, self.world.rank + 1))
            inputs, labels = self.train_clips.batch(indices, rng)
            inputs = to_device(inputs, self.device)
            if isinstance(labels, torch.Tensor):  # instance targets (a list of Instances) go over in the loss
                labels = labels.to(self.device)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(step - 1, c)
            with autocast(self.device, self.precision):
                logits = net(*inputs) if isinstance(inputs, tuple) else net(inputs)
                summed = self.task.loss_sum(logits, labels)
                if self.world.distributed:
                    loss = summed * (self.world.size / c.batch_size)  # DDP averages: the global mean's gradient
                else:
                    loss = summed / len(labels)
            right = self.task.score_sum(logits, labels)
            if self.world.distributed:
                value, right, count = self._summed(summed, right, len(labels))
                value /= c.batch_size
            else:
                value, count = float(loss.detach()), len(labels)
            if not math.isfinite(value):
                raise StlensError(f"loss became {value} at step {step}: lower `lr` (checkpoints so far are "
                                  f"kept in {self.checkpoints})")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # fp16: scaled (GradScaler); otherwise as it is
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(value)
            correct += right
            seen += count
            for callback in self.callbacks:
                callback(step, self.model, self)
            record = None
            if step % c.log_every == 0 or step == c.steps:
                record = {"step": step, "loss": float(np.mean(losses)), self.task.running: correct / seen,
                          "steps_averaged": len(losses), "lr": learning_rate(step - 1, c),
                          "seconds": round(time.perf_counter() - began, 2), "kind": "train"}
                bar.set_postfix(loss=f"{record['loss']:.3f}", score=f"{record[self.task.running]:.2f}")
                losses, correct, seen = [], 0, 0
            self._running = (losses, correct, seen)
            if not self.writes:
                continue
            if self._is_checkpoint_step(step):
                self._checkpoint(step, value, record)
                self.model.train()
            elif record is not None:
                try:
                    self._log(record)
                except OSError as exc:
                    raise StlensError(f"cannot append to {self.out / 'metrics.jsonl'} at step {step} ({exc}); the "
                                      f"checkpoints so far are kept in {self.checkpoints}: run the same command "
                                      f"again to resume from the last one") from exc
        bar.close()
        if self.group is not None:  # the final checkpoint (and its evaluation) is rank 0's: every rank returns its
            self._last_metrics = self.group.broadcast(self._last_metrics)  # metrics
        return dict(self._last_metrics)

    def _parallel(self) -> nn.Module:
        """The model as the training steps call it: wrapped in ``DistributedDataParallel`` under torchrun (the
        gradients are averaged over the ranks in the backward pass), else the model itself."""
        if not self.world.distributed:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids, output_device=ids[0] if ids else None)

    def _summed(self, loss_sum: torch.Tensor, right: float, count: int) -> tuple[float, float, int]:
        """(loss sum, score sum — correct clips, or IoUs — and clips) of the step summed over the ranks (one small
        all-reduce)."""
        totals = torch.stack([loss_sum.detach().double(), torch.tensor(float(right), dtype=torch.float64,
                              device=loss_sum.device), torch.tensor(float(count), dtype=torch.float64,
                              device=loss_sum.device)])
        torch.distributed.all_reduce(totals)
        value, right_all, count_all = totals.tolist()
        return value, (int(round(right_all)) if self.task.name == "classify" else right_all), int(round(count_all))


def train(config: TrainConfig, callbacks: Sequence[Callback] = (), progress: bool = True) -> dict[str, Any]:
    """Train a model as ``config`` says; see ``Trainer``. Returns the metrics of the last checkpoint."""
    return Trainer(config, callbacks, progress).train()
