"""What the training-loop callbacks share (``stlens.integrations.lightning``, ``stlens.integrations.hf``): the model
being trained found and described, the fixed pairs made as ``stlens track`` makes them, a ``BiasTracker`` that
measures through ``stlens track``'s own ``measure_rows``, and the track folder written with ``TrackResult.save``.
It imports no training framework."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

from torch import nn

from stlens.errors import StlensError

log = logging.getLogger("stlens")


def resolve_handle(model, attribute: str | None, root: nn.Module, frames: int | None = None,
                   size: int | None = None):
    """The ``ModelHandle`` of the video model inside the module a framework trains (``root``).

    ``model``: a ``ModelHandle`` (used as it is: its module must be the one trained); a model spec string (e.g.
    ``stlens:c2d?classes=2``, as given to ``stlens track --model``): its input spec and default layers describe the
    module ``root.<attribute>`` (or ``root`` itself when it has no such attribute), whose weights must have the same
    keys and shapes; or None: ``root.<attribute>`` (or ``root``) as a bare module, whose layers must then be named.

    >>> handle = resolve_handle("stlens:c2d?classes=2&width=4", "model", lightning_module)  # doctest: +SKIP
    """
    from stlens.core.handle import ModelHandle
    from stlens.models.registry import as_handle, load_model

    if isinstance(model, ModelHandle):
        return model
    inner = getattr(root, attribute, None) if attribute else None
    module = inner if isinstance(inner, nn.Module) else root
    if model is None:
        return as_handle(module)
    if not isinstance(model, str):
        raise StlensError(f"`model` must be a ModelHandle, a model spec string or None, got {type(model).__name__}")
    described = load_model(model, None, frames=frames, size=size, device="cpu")
    own = {k: tuple(v.shape) for k, v in described.module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if own != theirs:
        where = f"its attribute `{attribute}`" if module is not root else "the module trained"
        differ = sorted(k for k in set(own) | set(theirs) if own.get(k) != theirs.get(k))
        raise StlensError(f"`model` {model} does not describe {where} ({type(module).__name__}): their weights' keys "
                          f"or shapes differ (e.g. {differ[:3]}); give the spec of the video model (with its "
                          f"`frames`/`size`) and the `attribute` that holds it")
    return dataclasses.replace(described, module=module)


class LiveTrack:
    """The bias of the model being trained, measured every ``every`` steps (``due``/``measure``), and its track
    folder. ``start(root)`` (rank 0, before the first measurement) finds the model, claims ``out`` and makes the
    pairs; ``finish()`` writes the folder with its plots. The arguments are the callbacks' (``BiasCallback``)."""

    def __init__(self, data: str | Iterable, layers: str | list[str] | None = "default", every: int = 100,
                 out: str | Path | None = None, *, model=None, attribute: str | None = "model", pairs: int = 64,
                 stylizer: str | None = None, frames: int | None = None, size: int | None = None,
                 bootstrap: int = 200, threshold: float = 0.5, seed: int = 0, batch_size: int = 4, workers: int = 0,
                 overwrite: bool = False, framework: str = ""):
        from stlens.train.tracking import _check

        if not isinstance(every, int) or every < 1:
            raise StlensError(f"`every` must be an integer ≥ 1 (steps between measurements), got {every!r}")
        _check(pairs=pairs, batch_size=batch_size, bootstrap=bootstrap, threshold=threshold)
        self.data, self.layers, self.every, self.out = data, layers, every, out
        self.model, self.attribute, self.pairs, self.stylizer = model, attribute, pairs, stylizer
        self.frames, self.size, self.bootstrap, self.threshold = frames, size, bootstrap, threshold
        self.seed, self.batch_size, self.workers, self.overwrite = seed, batch_size, workers, overwrite
        self.framework = framework
        self.tracker = None
        self.folder = None
        self.handle = None

    @property
    def started(self) -> bool:
        return self.tracker is not None

    def start(self, root: nn.Module) -> None:
        """Find the video model in ``root``, claim ``out`` (before any work) and make the fixed pairs."""
        from stlens.core.handle import module_device
        from stlens.runs import RunFolder
        from stlens.train.tracking import BiasTracker, cache_pairs, track_pairs

        handle = resolve_handle(self.model, self.attribute, root, self.frames, self.size)
        names = handle.layers(self.layers)
        if self.out is not None:
            self.folder = RunFolder(self.out, "track", overwrite=self.overwrite).claim()
        try:
            if isinstance(self.data, str):
                fixed = track_pairs(handle, self.data, self.pairs, stylizer=self.stylizer, seed=self.seed,
                                    workers=self.workers)
            else:
                fixed = cache_pairs(self.data)
            meta = {"model": self.model if isinstance(self.model, str) else handle.spec, "checkpoints": None,
                    "data": self.data if isinstance(self.data, str) else type(self.data).__name__,
                    "layers": names, "pairs": self.pairs, "seed": self.seed, "bootstrap": self.bootstrap,
                    "threshold": self.threshold, "frames": handle.input.frames, "size": handle.input.size,
                    "device": str(module_device(handle.module)), "precision": "fp32", "every": self.every,
                    "framework": self.framework, "skipped": []}
            self.tracker = BiasTracker(fixed, names, self.every, handle=handle, bootstrap=self.bootstrap,
                                       threshold=self.threshold, seed=self.seed, batch_size=self.batch_size,
                                       meta=meta)
        except BaseException:
            if self.folder is not None:
                self.folder.abandon()
                self.folder = None
            raise
        self.handle = handle

    def measured(self, step: int) -> bool:
        return self.tracker is not None and any(r["step"] == step for r in self.tracker.rows)

    def due(self, step: int) -> bool:
        """Whether step ``step`` is a multiple of ``every`` not measured yet."""
        return self.started and step % self.every == 0 and not self.measured(step)

    def measure(self, step: int) -> dict[str, float]:
        """Measure the model now as step ``step`` (eval mode, no gradients, fp32; the modes restored), update the
        staged track files; returns the TensorBoard scalars of the step (``stlens/<layer>/dynamic`` …)."""
        from stlens.train.tensorboard import track_scalars

        rows = self.tracker.measure_now(step, self.handle.module)
        if self.folder is not None:
            self.tracker.result().save(self.folder.staging, plots=False)
        return track_scalars(rows).get(step, {})

    def finish(self, status: str = "complete") -> Path | None:
        """Write the track folder (``track.csv``, ``track.json``, ``track_<layer>.png``) into ``out``; without any
        measurement the claim is given up and ``out`` stays as it was."""
        folder, self.folder = self.folder, None
        if folder is None:
            return None
        if self.tracker is None or not self.tracker.rows:
            folder.abandon()
            return None
        try:
            self.tracker.result().save(folder.staging, plots=True)
        except BaseException:
            folder.abandon()
            raise
        return folder.commit(status)

    def result(self):
        """The ``TrackResult`` measured so far."""
        if self.tracker is None:
            raise StlensError("the callback has measured nothing yet (training has not started)")
        return self.tracker.result()

