"""A verb's arguments checked before any work: the shared predicates, the first failed check raised as a
``StlensError`` (its message names the Python argument), and the device and precision resolved."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from stlens.errors import StlensError


def whole(value: Any, least: int) -> bool:
    """``value`` is an integer (not a bool) ≥ ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def labelled_data(data: Any) -> bool:
    """``data`` is a labelled data spec (a string or path) or a ``LabelledClips``-like object (``batch``, ``len``)."""
    return isinstance(data, str | Path) or (hasattr(data, "batch") and hasattr(data, "__len__"))


def raise_first_failed(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise the message of the first (ok, message) check that is not ok."""
    for ok, message in checks:
        if not ok:
            raise StlensError(message)


def checked_device(device: str | torch.device | None, precision: str) -> torch.device | None:
    """The device a verb runs on, with ``precision`` checked for it (None: the module's own device)."""
    if device is None:
        return None
    from stlens.core.device import resolve_device, resolve_precision

    found = resolve_device(device)
    resolve_precision(precision, found)
    return found
