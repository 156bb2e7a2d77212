"""What the report's views of run folders share: ``RunView`` (a run folder as the report reads it) and the
formatting of numbers and intervals in its tables ("–" where there is no number: a NaN, a null, ``--bootstrap 0``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunView:
    """A run folder as the report reads it: ``doc`` (its json, checked), its ``marker``, a label and, where the
    report reads the run's table too, its ``rows``."""

    path: Path
    doc: dict[str, Any]
    marker: dict[str, Any]
    label: str = ""
    rows: list[dict[str, str]] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.doc.get("settings")
        return settings if isinstance(settings, dict) else {}


def is_number(value: Any) -> bool:
    """An int or float (not a bool); NaN included."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def number_text(value: Any, digits: int = 3, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals (``sign``: always signed), or "–" when it is not a number or NaN."""
    if not is_number(value) or math.isnan(float(value)):
        return "–"
    return f"{float(value):+.{digits}f}" if sign else f"{float(value):.{digits}f}"


def interval_text(low: Any, high: Any, digits: int = 3, sign: bool = False) -> str:
    """"[low, high]", or "–" unless both ends are numbers (not NaN)."""
    if "–" in (number_text(low), number_text(high)):
        return "–"
    return f"[{number_text(low, digits, sign)}, {number_text(high, digits, sign)}]"
