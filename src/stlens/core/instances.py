"""Instance targets of video instance segmentation (VIS): what every instance source gives per clip and what a VIS
model predicts per clip. Shared by ``synth`` (instance worlds), ``video`` (``ytvis:``), ``models`` (the VIS family),
``train`` (``task=instances``) and the track-AP metric, so it lives at the bottom.

A batch of an instance source is ``(inputs, targets)`` with ``targets`` a ``list[Instances]`` (one per clip; clips
hold different numbers of instances, so they are not stacked). Masks are at the clip's crop size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stlens.errors import StlensError


@dataclass
class Instances:
    """The ground-truth instance tracks of one clip.

    ``masks`` bool (N, T, H, W): the track's mask in every frame (all False where the track is absent);
    ``classes`` int64 (N,): category index in [0, num_classes); ``track_ids`` int64 (N,): the instance's id in its
    video (stable across clips of the same video); ``crowd`` bool (N,): ``iscrowd`` tracks (ignored by AP, as
    YouTube-VIS does). A track is present in frame t when ``masks[n, t].any()``.
    """

    masks: np.ndarray
    classes: np.ndarray
    track_ids: np.ndarray
    crowd: np.ndarray

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
        self.crowd = np.asarray(self.crowd, dtype=bool).reshape(-1)
        n = len(self.classes)
        if self.masks.ndim != 4 or self.masks.shape[0] != n or len(self.track_ids) != n or len(self.crowd) != n:
            raise StlensError(f"instance targets disagree: masks {self.masks.shape}, {n} classes, "
                              f"{len(self.track_ids)} track ids, {len(self.crowd)} crowd flags")

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def present(self) -> np.ndarray:
        """bool (N, T): where each track has a mask."""
        return self.masks.reshape(*self.masks.shape[:2], -1).any(-1)

    @classmethod
    def empty(cls, frames: int, height: int, width: int) -> Instances:
        return cls(np.zeros((0, frames, height, width), bool), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros(0, bool))


@dataclass
class TrackPredictions:
    """A VIS model's predicted tracks for one clip: ``masks`` bool (Q, T, H, W), ``classes`` int64 (Q,) and
    ``scores`` float (Q,) (the confidence the track is of that class; AP ranks by it)."""

    masks: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.classes)
        if self.masks.ndim != 4 or self.masks.shape[0] != n or len(self.scores) != n:
            raise StlensError(f"track predictions disagree: masks {self.masks.shape}, {n} classes, "
                              f"{len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.classes)
