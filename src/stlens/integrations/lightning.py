"""``BiasCallback``: the static/dynamic bias of the model a PyTorch Lightning ``Trainer`` trains, every N steps.

Needs ``lightning`` (``pip install 'stlens[lightning]'``); ``import stlens`` does not import this module. The callback
subclasses ``lightning.pytorch.Callback`` (the ``pytorch_lightning`` package when only that one is installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stlens.errors import StlensError
from stlens.integrations.live import LiveTrack

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise StlensError("stlens.integrations.lightning needs PyTorch Lightning: pip install 'stlens[lightning]'"
                          ) from None


class BiasCallback(Callback):
    """Measure the static/dynamic bias of the model being trained every ``every`` optimizer steps (and at step 0 and
    at the end of training) on fixed pairs; log it to the trainer's loggers (TensorBoard by default:
    ``stlens/<layer>/dynamic``, ``static``, ``residual``, ``bias``) and write a ``stlens track`` folder into ``out``.

    Arguments: ``data``: the data spec the pairs are made from, as ``stlens track --data`` (``pairs`` per factor,
    ``stylizer``, ``seed``: as for track), or a pair source / list of pairs made by the caller. ``layers``: layer
    names of the video model (``default``, ``all``, a list or ``L1,L2``). ``every``: steps between measurements
    (``trainer.global_step``, the optimizer steps). ``out``: the track folder (None: none; a folder holding a
    complete run is refused unless ``overwrite``), written when training ends (``interrupted`` when it fails).
    ``model``: what the video model is — a model spec string (as ``stlens track --model``) describing the
    LightningModule's attribute ``attribute`` (default ``model``; the LightningModule itself when it has none), a
    ``ModelHandle`` of the module trained, or None (the module bare: name its layers). ``frames``/``size``: the
    spec's input, as given to ``load_model``. ``bootstrap``, ``threshold``, ``batch_size`` (pairs per forward; keep
    ``stlens track``'s 4 to compare), ``workers`` (processes that make the pairs): as for track. ``tensorboard``: a
    folder for event files of its own, besides the loggers (None: the loggers only).

    Each measurement runs on rank 0 only (``trainer.is_global_zero``), on the model's device, in eval mode, without
    gradients, in fp32, through the same code as ``stlens track`` (``train.tracking.measure_rows``); the training
    modes are restored. The percentages at step s equal those ``stlens track`` computes from a checkpoint saved at
    step s (``ModelCheckpoint(every_n_train_steps=...)``) with the same data, pairs, seed and layers.

    Returns nothing; ``callback.result()`` is the ``TrackResult`` so far.

    >>> from stlens.integrations.lightning import BiasCallback  # doctest: +SKIP
    >>> callback = BiasCallback("synth:motion?split=test&n=400", "stage3,stage4", every=100,  # doctest: +SKIP
    ...                         out="runs/track", model="stlens:i3d")
    >>> lightning.Trainer(callbacks=[callback], max_steps=1000).fit(module, loader)  # doctest: +SKIP
    """

    def __init__(self, data, layers: str | list[str] | None = "default", every: int = 100,
                 out: str | Path | None = None, *, model=None, attribute: str | None = "model", pairs: int = 64,
                 stylizer: str | None = None, frames: int | None = None, size: int | None = None,
                 bootstrap: int = 200, threshold: float = 0.5, seed: int = 0, batch_size: int = 4, workers: int = 0,
                 overwrite: bool = False, tensorboard: str | Path | None = None):
        super().__init__()
        self.live = LiveTrack(data, layers, every, out, model=model, attribute=attribute, pairs=pairs,
                              stylizer=stylizer, frames=frames, size=size, bootstrap=bootstrap, threshold=threshold,
                              seed=seed, batch_size=batch_size, workers=workers, overwrite=overwrite,
                              framework="lightning")
        if tensorboard is not None:
            from stlens.train.tensorboard import require_tensorboard

            require_tensorboard()
        self.tensorboard = tensorboard
        self._writer = None

    def _measure(self, trainer, step: int) -> None:
        scalars = self.live.measure(step)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        if self.tensorboard is not None:
            from stlens.train.tensorboard import summary_writer

            if self._writer is None:
                self._writer = summary_writer(self.tensorboard)
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, step)
            self._writer.flush()

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        if not self.live.started:
            self.live.start(pl_module)
        if trainer.global_step == 0:  # (a resumed fit starts at its checkpoint's step)
            self._measure(trainer, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.is_global_zero and self.live.due(trainer.global_step):
            self._measure(trainer, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.live.started:
            return
        if not self.live.measured(trainer.global_step):
            self._measure(trainer, trainer.global_step)
        self._close()
        self.live.finish()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.is_global_zero:
            self._close()
            self.live.finish("interrupted")

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def result(self):
        """The ``TrackResult`` measured so far (rank 0)."""
        return self.live.result()
