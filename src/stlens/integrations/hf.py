"""``BiasCallback``: the static/dynamic bias of the model a Hugging Face ``transformers.Trainer`` trains, every N steps.

Needs ``transformers`` (``pip install 'stlens[hf]'``, which also brings ``accelerate``, the ``Trainer``'s, and
``tensorboard``); ``import stlens`` does not import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from stlens.errors import StlensError
from stlens.integrations.live import LiveTrack

try:
    from transformers import TrainerCallback
except ImportError:
    raise StlensError("stlens.integrations.hf needs transformers: pip install 'stlens[hf]'") from None


def default_logdir(args) -> str:
    """Where the callback writes its event files by default: ``args.logging_dir`` (transformers 4), else
    ``$TENSORBOARD_LOGGING_DIR``, else ``<output_dir>/runs`` (beside the ``Trainer``'s own TensorBoard runs)."""
    folder = getattr(args, "logging_dir", None) or os.environ.get("TENSORBOARD_LOGGING_DIR")
    return folder or os.path.join(args.output_dir, "runs")


class BiasCallback(TrainerCallback):
    """Measure the static/dynamic bias of the model being trained every ``every`` optimizer steps (and at step 0 and
    at the end of training) on fixed pairs; write it as TensorBoard scalars (``stlens/<layer>/dynamic``, ``static``,
    ``residual``, ``bias``) and as a ``stlens track`` folder into ``out``.

    Arguments: ``data``, ``layers``, ``every`` (``state.global_step``, the optimizer steps), ``out``, ``model``
    (a spec string describing the attribute ``attribute`` of the model given to the ``Trainer`` — default ``model``;
    the model itself when it has none —, a ``ModelHandle``, or None), ``pairs``, ``stylizer``, ``frames``, ``size``,
    ``bootstrap``, ``threshold``, ``seed``, ``batch_size``, ``workers``, ``overwrite``: as for
    ``stlens.integrations.lightning.BiasCallback``. ``tensorboard``: the folder of the event files (None:
    ``default_logdir(args)``; False: none).

    Each measurement runs on the main process only (``state.is_world_process_zero``), on the model's device, in eval
    mode, without gradients, in fp32, through ``stlens track``'s code (``train.tracking.measure_rows``); the training
    modes are restored. The percentages at step s equal those ``stlens track`` computes from the ``checkpoint-s/``
    folder the ``Trainer`` saves at step s (``save_steps``), with the same data, pairs, seed and layers.

    Returns nothing; ``callback.result()`` is the ``TrackResult`` so far.

    >>> from stlens.integrations.hf import BiasCallback  # doctest: +SKIP
    >>> callback = BiasCallback("synth:motion?split=test&n=400", "stage3,stage4", every=100,  # doctest: +SKIP
    ...                         out="runs/track", model="stlens:i3d")
    >>> transformers.Trainer(model, args, train_dataset=data, callbacks=[callback]).train()  # doctest: +SKIP
    """

    def __init__(self, data, layers: str | list[str] | None = "default", every: int = 100,
                 out: str | Path | None = None, *, model=None, attribute: str | None = "model", pairs: int = 64,
                 stylizer: str | None = None, frames: int | None = None, size: int | None = None,
                 bootstrap: int = 200, threshold: float = 0.5, seed: int = 0, batch_size: int = 4, workers: int = 0,
                 overwrite: bool = False, tensorboard: str | Path | bool | None = None):
        self.live = LiveTrack(data, layers, every, out, model=model, attribute=attribute, pairs=pairs,
                              stylizer=stylizer, frames=frames, size=size, bootstrap=bootstrap, threshold=threshold,
                              seed=seed, batch_size=batch_size, workers=workers, overwrite=overwrite,
                              framework="hf")
        if tensorboard is not False:
            from stlens.train.tensorboard import require_tensorboard

            require_tensorboard()
        self.tensorboard = tensorboard
        self.logdir: str | None = None
        self._writer = None

    def _measure(self, args, step: int) -> None:
        scalars = self.live.measure(step)
        if self.tensorboard is False:
            return
        if self._writer is None:
            from stlens.train.tensorboard import summary_writer

            self.logdir = str(self.tensorboard) if self.tensorboard not in (None, True) else default_logdir(args)
            self._writer = summary_writer(self.logdir)
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if model is None:
            raise StlensError("the Trainer gave the callback no model")
        if not self.live.started:
            self.live.start(model)
        if state.global_step == 0:  # (a resumed run starts at its checkpoint's step)
            self._measure(args, 0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.live.due(state.global_step):
            self._measure(args, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.live.started:
            return
        if not self.live.measured(state.global_step):
            self._measure(args, state.global_step)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.live.finish()

    def result(self):
        """The ``TrackResult`` measured so far (main process)."""
        return self.live.result()
