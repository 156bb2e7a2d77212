"""Layers of two-stream models grouped by stream for the report: appearance (``app.`` / ``rgb.``), motion (``mot.`` /
``flow.``), fusion (``fusion`` / ``fusion.``), then the rest ("other"), each group in the run's own order (so the
stages stay in order). A run none of whose layers has such a prefix is not grouped: one unlabelled group, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["STREAMS", "Group", "group_items", "is_grouped", "order", "stream_of"]

T = TypeVar("T")

#: (key, label, first name parts), in the order the groups are shown
STREAMS = (("appearance", "appearance", ("app", "rgb")), ("motion", "motion", ("mot", "flow")),
           ("fusion", "fusion", ("fusion",)))
OTHER = ("other", "other")


@dataclass
class Group:
    """One stream's layers: ``key`` (appearance / motion / fusion / other, or "" when the run is not grouped), its
    ``label`` (shown; "" when not grouped) and its items in the run's order."""

    key: str
    label: str
    items: list[Any]


def stream_of(name: str) -> str | None:
    """The stream of a layer name by its first dotted part (``app.stage1`` → appearance), None for any other."""
    head = str(name).split(".", 1)[0]
    return next((key for key, _, heads in STREAMS if head in heads), None)


def is_grouped(names: Sequence[str]) -> bool:
    """Whether a run's layers are shown grouped: at least one of them belongs to a stream."""
    return any(stream_of(n) is not None for n in names)


def group_items(items: Sequence[T], name: Callable[[T], str] = str) -> list[Group]:
    """``items`` (layers, rows, ...) grouped by the stream of ``name(item)`` in the fixed order, empty groups left
    out; one unlabelled group holding ``items`` as given when none has a stream prefix."""
    items = list(items)
    if not is_grouped([name(i) for i in items]):
        return [Group("", "", items)]
    groups = []
    for key, label in [(k, lab) for k, lab, _ in STREAMS] + [OTHER]:
        members = [i for i in items if (stream_of(name(i)) or OTHER[0]) == key]
        if members:
            groups.append(Group(key, label, members))
    return groups


def order(items: Sequence[T], name: Callable[[T], str] = str) -> list[T]:
    """``items`` in the grouped order (unchanged when not grouped)."""
    return [i for g in group_items(items, name) for i in g.items]
