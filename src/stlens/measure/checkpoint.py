"""Checkpoints of a long measurement (``--checkpoint-every``, ``--resume``): the merged moments and the position
reached, saved atomically at the end of a batch, every N pairs and when the run is interrupted (SIGTERM is what Slurm
sends before preemption).

A checkpoint is one ``rank-R-of-W.npz`` per process in a folder (``OUT/.stlens-checkpoint`` for the CLI): flat
arrays only (read with ``allow_pickle=False``) and a fingerprint of what fixes the pairs and the numbers — model,
weights, input, data, number of pairs, layers, stylizer, flow, seed, bootstrap, precision, latents, processes. A
resumed run continues from the saved position with the same batch boundaries, so its result equals that of an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stlens.core.damaged import expect, load_npz, reading
from stlens.core.distributed import World
from stlens.errors import StlensError
from stlens.interrupts import deferred
from stlens.measure.accumulator import Accumulator

FOLDER = ".stlens-checkpoint"
#: fingerprint keys → the option that sets them (for messages)
OPTIONS = {"model": "`model`", "weights": "`weights`", "input": "`frames`/`size`", "data": "`data`",
           "pairs": "`pairs` (pairs planned)", "layers": "`layers`", "stylizer": "`stylizer`", "flow": "`flow`",
           "seed": "`seed`", "bootstrap": "`bootstrap`", "precision": "`precision`", "save_latents": "`save_latents`",
           "processes": "the number of processes (torchrun --nproc-per-node × nodes)"}


def files(folder: str | Path) -> list[Path]:
    """The checkpoint files in ``folder`` (none when it does not exist)."""
    folder = Path(folder)
    return sorted(folder.glob("rank-*-of-*.npz")) if folder.is_dir() else []


def refuse_unless_resuming(folder: str | Path, resume: bool) -> None:
    """Before any work: a checkpoint of an unfinished run is never overwritten by a run that does not resume it."""
    found = files(folder)
    if found and not resume:
        names = ", ".join(p.name for p in found)
        raise StlensError(f"{folder} holds a checkpoint of an unfinished measurement ({names}): continue it with "
                          f"`resume`, or delete that folder to start over")


def remove(folder: str | Path) -> None:
    """Delete the checkpoint files (stlens wrote them) and the folder when that leaves it empty."""
    folder = Path(folder)
    for path in files(folder):
        path.unlink(missing_ok=True)
    for stale in folder.glob(".rank-*.tmp") if folder.is_dir() else []:
        stale.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


class Checkpoint:
    """The checkpoint file of one process of a run."""

    def __init__(self, folder: str | Path, every: int, world: World, fingerprint: dict[str, Any]):
        if every < 0:
            raise StlensError(f"`checkpoint_every_pairs` must be ≥ 0 (pairs; 0: only when interrupted), got {every}")
        self.folder = Path(folder)
        self.every = every
        self.world = world
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back
        self._saved_at = 0

    @property
    def path(self) -> Path:
        return self.folder / f"rank-{self.world.rank}-of-{self.world.size}.npz"

    def load(self) -> Accumulator | None:
        """The saved accumulator of this process, or None when there is no checkpoint; a checkpoint of another run
        (another fingerprint) is refused naming the option that differs."""
        found = files(self.folder)
        if not found:
            return None
        if self.path not in found:
            names = ", ".join(p.name for p in found)
            raise StlensError(f"`resume`: {self.folder} holds {names}, written by another number of processes than "
                              f"this run's {self.world.size}; resume with the same number of processes")
        advice = f"delete {self.folder} to start over (the measurement restarts from its first pair)"
        state = load_npz(self.path, advice)
        with reading(self.path, advice):
            saved = json.loads(str(state.pop("fingerprint")))
            expect(self.path, isinstance(saved, dict), "its fingerprint is not an object", advice)
        differ = [key for key in OPTIONS if saved.get(key) != self.fingerprint.get(key)]
        if differ:
            said = "; ".join(f"{OPTIONS[k]}: {saved.get(k)!r} there, {self.fingerprint.get(k)!r} now" for k in differ)
            raise StlensError(f"`resume`: {self.path} belongs to another measurement ({said}); use the same "
                              f"options, or delete {self.folder} to start over")
        with reading(self.path, advice):
            acc = Accumulator.from_state(state)
        self._saved_at = acc.pairs
        return acc

    def due(self, acc: Accumulator) -> bool:
        return self.every > 0 and acc.pairs - self._saved_at >= self.every

    def save(self, acc: Accumulator) -> None:
        """Write the accumulator atomically (a temporary file renamed over the last checkpoint); signals wait."""
        with deferred():
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".rank-{self.world.rank}-", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, fingerprint=np.asarray(json.dumps(self.fingerprint)), **acc.state())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self._saved_at = acc.pairs
