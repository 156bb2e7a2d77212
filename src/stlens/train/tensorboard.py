"""TensorBoard event files: the tracked percentages (``stlens track --tensorboard``, the training-loop callbacks) and a
training run's loss and scores (``stlens train --tensorboard``), written with ``torch.utils.tensorboard``'s
``SummaryWriter`` (the ``tensorboard`` package: ``pip install 'stlens[tensorboard]'``).

Tags: ``stlens/<layer>/dynamic``, ``stlens/<layer>/static``, ``stlens/<layer>/residual`` and ``stlens/<layer>/bias``
(percent of the layer's dims; the bias index) at the tracked step; ``train/<key>`` and ``eval/<key>`` for each number
of a ``metrics.jsonl`` line of ``stlens train`` (``train/loss``, ``train/acc``, ``train/lr``, ``eval/test_acc`` …).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stlens.errors import StlensError

#: the columns of a track row written as scalars, per layer
TRACKED = ("dynamic", "static", "residual", "bias")
#: the keys of a metrics line that are not scalars of the run
NOT_SCALARS = ("step", "kind", "seconds", "steps_averaged")


def require_tensorboard(option: str = "tensorboard") -> None:
    """Raise a ``StlensError`` naming ``option`` when the ``tensorboard`` package is missing (checked before any
    work)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise StlensError(f"`{option}` writes TensorBoard event files and needs the tensorboard package: "
                          f"pip install 'stlens[tensorboard]'") from None


def summary_writer(folder: str | Path, option: str = "tensorboard"):
    """A ``torch.utils.tensorboard.SummaryWriter`` writing event files into ``folder``."""
    require_tensorboard(option)
    from torch.utils.tensorboard import SummaryWriter

    Path(folder).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(folder))


def track_scalars(rows: Iterable[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """step → {tag: value} of track rows (``stlens/<layer>/dynamic`` …; missing values left out)."""
    found: dict[int, dict[str, float]] = {}
    for row in rows:
        for key in TRACKED:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                found.setdefault(int(row["step"]), {})[f"stlens/{row['layer']}/{key}"] = float(value)
    return found


def write_track(writer, rows: Iterable[dict[str, Any]]) -> None:
    """Add the scalars of track rows to ``writer`` at their steps and flush."""
    for step, scalars in sorted(track_scalars(rows).items()):
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
    writer.flush()


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """{tag: value} of one ``metrics.jsonl`` line of ``stlens train``: ``<kind>/<key>`` for each finite number."""
    kind = record.get("kind", "train")
    return {f"{kind}/{key}": float(value) for key, value in record.items()
            if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


def write_record(writer, record: dict[str, Any]) -> None:
    """Add one metrics line to ``writer`` at its step and flush."""
    for tag, value in record_scalars(record).items():
        writer.add_scalar(tag, value, int(record["step"]))
    writer.flush()
