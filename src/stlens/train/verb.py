"""``stlens.train``: the verb. It checks every argument, joins a torchrun process group when launched under one and
runs the ``Trainer``; the run folder ``out`` is the Trainer's (resumed from its last checkpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from stlens.core import distributed
from stlens.errors import StlensError
from stlens.train.trainer import Callback, TrainConfig, Trainer


def train(model: str | TrainConfig, data: str | None = None, *, steps: int | None = None,
          out: str | Path | None = None, weights: str | None = None, frames: int | None = None,
          size: int | None = None, test_data: str | None = "auto", checkpoint_every_steps: int = 0,
          batch_size: int = 16, lr: float = 2e-3, eval_clips: int = 256, augment: bool = False,
          task: str = "classify", mask_threshold: float = 0.5, static_dropout: str | None = None,
          random_dropout: str | None = None, device: str = "auto", precision: str = "fp32",
          workers: int | None = None, seed: int = 0, offline: bool | None = None, callbacks: Sequence[Callback] = (),
          overwrite: bool = False, progress: bool = True, tensorboard: str | Path | None = None) -> dict[str, Any]:
    """Train ``model`` (a spec string: the checkpoints name it, e.g. ``stlens:i3d?classes=8``) on the labelled clips
    of ``data`` (``synth:WORLD?...`` or an annotation file with labels) for ``steps`` optimizer steps, into the run
    folder ``out``; returns the metrics of the last checkpoint. A ``TrainConfig`` may be given instead of ``model``
    (then nothing else is).

    ``out`` holds the checkpoints (``checkpoints/step_*.safetensors``), ``train_log.csv`` and config.json; a folder
    that holds an incomplete run of the same command is resumed from its last checkpoint, a complete one is left as
    it is (its final checkpoint is the result), another verb's run is refused; ``overwrite``: first remove the earlier
    train run in ``out`` (the files its run marker lists, nothing else) and train from step 0. ``test_data``:
    held-out clips (``auto``: a synth world's test split; None or ``none``: no test score).
    ``checkpoint_every_steps``: also save step 0 and every K steps (0: the final step only). ``batch_size``: clips
    per step. ``lr``: AdamW peak learning rate (warm-up, cosine decay). ``eval_clips``: clips for the train/test
    score at each checkpoint (0: none).
    ``task``: ``classify`` (cross-entropy; accuracy), ``segment`` (per-frame masks; mIoU, mSR, with
    ``mask_threshold``) or ``instances`` (instance tracks of a query-based model such as ``stlens:vis``: Hungarian
    matching, class + BCE + dice loss; the matched tracks' mean IoU; docs/vis.md).
    ``static_dropout``/``random_dropout``: StaticDropout after a layer, or its random control (docs/static_dropout.md).
    ``device``, ``precision`` (fp16 with a GradScaler) and ``workers`` (processes that make the pairs of
    StaticDropout's measurements) as for every verb. Under ``torchrun``: data-parallel, one GPU each;
    rank 0 writes ``out``. ``offline``: never download weights (True), download allowed (False), or as the
    environment says (None: ``STLENS_OFFLINE``/``HF_HUB_OFFLINE``); it holds for this call only.
    ``tensorboard``: a folder for TensorBoard event files of every ``metrics.jsonl`` line (``train/loss``,
    ``train/acc``, ``train/lr``, ``eval/train_acc``, ``eval/test_acc`` …; rank 0; needs the ``tensorboard``
    package).

    >>> stlens.train("stlens:i3d?classes=8", "synth:motion", steps=600, out="runs/i3d")  # doctest: +SKIP
    """
    if isinstance(model, TrainConfig):
        config = model
    else:
        if data is None or steps is None or out is None:
            missing = [n for n, v in (("data", data), ("steps", steps), ("out", out)) if v is None]
            raise StlensError(f"train needs {', '.join(f'`{n}`' for n in missing)}")
        if not isinstance(model, str):
            raise StlensError("`model` of train must be a spec string (its checkpoints name it), e.g. "
                              "'stlens:i3d?classes=8' or 'module:mypkg.models:make'")
        config = TrainConfig(model=model, data=data, steps=steps, out=str(out), weights=weights,
                             test_data=None if test_data == "none" else test_data,
                             checkpoint_every=checkpoint_every_steps, batch_size=batch_size, lr=lr, seed=seed,
                             eval_clips=eval_clips, augment=augment, frames=frames, size=size,
                             static_dropout=static_dropout, random_dropout=random_dropout, device=device,
                             precision=precision, workers=workers, task=task, mask_threshold=mask_threshold,
                             tensorboard=None if tensorboard is None else str(tensorboard))
    from stlens.core.device import resolve_device, resolve_precision
    from stlens.core.workers import resolve_workers

    target = resolve_device(distributed.rank_device(config.device, distributed.launched()))  # one GPU each
    resolve_precision(config.precision, target)
    resolve_workers(config.workers)
    config.validate()  # every option checked before any work
    from stlens.models.offline import offline_scope

    with offline_scope(offline), distributed.joined(target):
        return Trainer(config, callbacks, progress, overwrite).train()


TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig))
