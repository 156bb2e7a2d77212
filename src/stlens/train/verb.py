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
    """Train ``model`` on the labelled clips of ``data`` for ``steps`` optimizer steps, into the run folder ``out``.

    ``out`` holds the checkpoints (``checkpoints/step_*.safetensors``), ``train_log.csv`` and config.json; a folder
    that holds an incomplete run of the same command is resumed from its last checkpoint, a complete one is left as
    it is (its final checkpoint is the result), another verb's run is refused. Under ``torchrun``: data-parallel, one
    GPU each; rank 0 writes ``out``.

    Args:
        model: a spec string (the checkpoints name it, e.g. ``stlens:i3d?classes=8``), or a ``TrainConfig`` (then
            nothing else is given).
        data: the training clips: ``synth:WORLD?...`` or an annotation file with labels.
        steps: optimizer steps.
        out: the run folder.
        weights: initial weights (a file, ``bundled:NAME`` or a torchvision weights name).
        frames: frames per clip (default: the model's).
        size: crop size (default: the model's).
        test_data: held-out clips (``auto``: a synth world's test split; None or ``none``: no test score).
        checkpoint_every_steps: also save step 0 and every K steps (0: the final step only).
        batch_size: clips per step.
        lr: AdamW peak learning rate (warm-up, cosine decay).
        eval_clips: clips for the train/test score at each checkpoint (0: none).
        augment: a random crop of each training clip instead of the centre crop.
        task: ``classify`` (cross-entropy; accuracy), ``segment`` (per-frame masks; mIoU, mSR, with
            ``mask_threshold``) or ``instances`` (instance tracks of a query-based model such as ``stlens:vis``:
            Hungarian matching, class + BCE + dice loss; the matched tracks' mean IoU; docs/vis.md).
        mask_threshold: the mask threshold of the segmentation scores.
        static_dropout: StaticDropout after a layer, ``LAYER:p=0.5:select=static...`` (docs/static_dropout.md).
        random_dropout: its random control, in the same form.
        device: ``auto``, ``cpu``, ``cuda[:K]`` or ``mps``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (with a GradScaler), or ``auto``.
        workers: processes that make the pairs of StaticDropout's measurements.
        seed: the seed of the weights, the clips and their order.
        offline: never download weights (True), download allowed (False), or as the environment says (None:
            ``STLENS_OFFLINE``/``HF_HUB_OFFLINE``); it holds for this call only.
        callbacks: called as ``callback(step, module, trainer)`` after each step (e.g. a ``BiasTracker``).
        overwrite: first remove the earlier train run in ``out`` (the files its run marker lists, nothing else) and
            train from step 0.
        progress: show a progress bar.
        tensorboard: a folder for TensorBoard event files of every ``metrics.jsonl`` line (``train/loss``,
            ``train/acc``, ``train/lr``, ``eval/train_acc``, ``eval/test_acc`` …; rank 0; needs the ``tensorboard``
            package).

    Returns:
        The metrics of the last checkpoint (``step``, ``loss``, and the scores when ``eval_clips``).

    Examples:
        >>> import tempfile
        >>> metrics = stlens.train("stlens:c2d?classes=8&width=4", "synth:motion?n=16&frames=4&size=16", steps=2,
        ...                        out=tempfile.mkdtemp(), frames=4, size=16, batch_size=4, eval_clips=0, workers=0,
        ...                        progress=False)
        >>> metrics["step"]
        2
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
