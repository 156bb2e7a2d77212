"""``Pair``: two model inputs that share only motion (dynamic) or only appearance (static), and the operations that
make them: ``frame_shuffle`` (destroys motion, keeps appearance) and ``check_clip_frames``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stlens.core.instances import Instances
from stlens.errors import StlensError

DYNAMIC, STATIC = 0, 1


@dataclass
class Pair:
    """Two model inputs that share only motion (factor 0, dynamic) or only appearance (factor 1, static).

    Args:
        factor: 0 (dynamic: the same motion, another appearance) or 1 (static: the same appearance, frames
            shuffled); further factors are numbered on.
        a: the first input: a (3, T, H, W) tensor, or a tuple of tensors for models that take several
            (``(rgb, flow)``).
        b: the second input, of the same shapes as ``a``.
        source: the video the pair was drawn from (information only).
        index: the pair's global index in its source (set by indexable sources, ``None`` otherwise); the bootstrap
            weights of a pair are a function of (seed, index), so they do not depend on batching or on the process.
        targets: the ground-truth instance tracks of video a and of video b (an instance source's pairs: the
            per-instance measurement, ``units="instance"``), ``None`` otherwise.
        styles: None for model inputs; for a pair whose styling is left to the device (``VideoPairs.on_device``),
            a and b are the uint8 (T, H, W, 3) cropped clips and ``styles`` their two styles and frame orders
            (``stlens.video.device_stylizers.ClipStyle``), applied batched where the model runs.

    Examples:
        >>> import torch
        >>> pair = stlens.Pair(0, torch.zeros(3, 4, 16, 16), torch.ones(3, 4, 16, 16))
        >>> pair.factor, tuple(pair.a.shape)
        (0, (3, 4, 16, 16))
    """

    factor: int
    a: torch.Tensor
    b: torch.Tensor
    source: str = ""
    index: int | None = None
    targets: tuple[Instances, Instances] | None = None
    styles: tuple[Any, Any] | None = None


def check_clip_frames(frames: int) -> None:
    """Refuse clips of fewer than 2 frames: a static pair would be two identical clips (r_static = 1 everywhere)."""
    if frames < 2:
        raise StlensError(f"pairs need clips of at least 2 frames, got `frames` {frames}: a 1-frame clip and its "
                          f"frame-shuffled copy are the same clip, so every static pair would be two identical inputs")


def shuffle_order(frames: int, rng: np.random.Generator) -> np.ndarray:
    """The frame order ``frame_shuffle`` draws from ``rng`` for a clip of ``frames`` frames (never the identity when
    ``frames`` ≥ 2; the identity, drawing nothing, below): the same draws, so that the order can be sent to the
    device instead of the shuffled frames (``stlens.video.device_stylizers``)."""
    if frames < 2:
        return np.arange(frames)
    order = rng.permutation(frames)
    while np.array_equal(order, np.arange(frames)):
        order = rng.permutation(frames)
    return order


def frame_shuffle(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permute the T frames of a clip (never the identity when T ≥ 2; the order of ``shuffle_order``)."""
    if len(frames) < 2:
        return frames.copy()
    return frames[shuffle_order(len(frames), rng)]
