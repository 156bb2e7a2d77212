"""The ``shortcut`` option: a static cue that predicts the class in most clips (ground truth for attribution).

Every frame of a clip shows a small solid patch (``CUE_SIDE`` of the frame: 6×6 px at 64 px) in its top-left corner,
painted over everything else. Its colour is ``CUE_COLOURS[k]`` for a class k: with probability ``shortcut`` the
clip's own label, else (the cue *lies*) one of the other classes, uniformly. The draw comes from a generator of its own
(``cue_rng``), so the clip's other draws, and so its pixels outside the cue, are those of the world without the
option. The object's masks lose the pixels the cue covers (they are the object's visible pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stlens.synth.worlds import NUM_CLASSES, SPLITS

CUE_SIDE = 6 / 64
"""The cue's side as a fraction of the frame (6 px at 64 px; at least 2 px)."""
CUE_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
               (255, 255, 255), (0, 0, 0))
"""The cue's RGB colour per class (8 classes)."""


@dataclass(frozen=True)
class Cue:
    """A clip's cue: the class it shows, whether that differs from the label, and its box (x, y, width, height)."""

    shown: int
    lies: bool
    box: tuple[int, int, int, int]

    def meta(self) -> dict:
        return {"class": self.shown, "lies": self.lies, "box": list(self.box), "colour": list(CUE_COLOURS[self.shown])}


def cue_side(size: int) -> int:
    return max(2, round(CUE_SIDE * size))


def cue_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The cue's generator (a stream neither the clip's nor a re-rendering's generator can share)."""
    return np.random.default_rng((seed, SPLITS[split], index, 2))


def draw_cue(seed: int, split: str, index: int, label: int, shortcut: float, size: int) -> Cue:
    """Clip ``index``'s cue: its label's with probability ``shortcut``, else another class's."""
    rng = cue_rng(seed, split, index)
    lies = bool(rng.random() >= shortcut)
    shown = (label + 1 + int(rng.integers(NUM_CLASSES - 1))) % NUM_CLASSES if lies else label
    side = cue_side(size)
    return Cue(shown, lies, (0, 0, side, side))


def paint_cue(frames: np.ndarray, cue: Cue, *masks: np.ndarray | None) -> None:
    """Paint ``cue`` on every frame (T, H, W, 3) in place and clear the pixels it covers in ``masks`` (T, H, W)."""
    x, y, width, height = cue.box
    frames[:, y:y + height, x:x + width] = CUE_COLOURS[cue.shown]
    for mask in masks:
        if mask is not None:
            mask[:, y:y + height, x:x + width] = False


def cue_mask(box: list[int] | tuple[int, ...], frames: int, height: int, width: int) -> np.ndarray:
    """The bool (T, H, W) mask of a cue box (x, y, width, height) on every frame."""
    mask = np.zeros((frames, height, width), bool)
    x, y, w, h = (int(v) for v in box)
    mask[:, y:y + h, x:x + w] = True
    return mask
