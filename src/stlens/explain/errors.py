"""``explain(errors=N)``: the misclassified clips, and the class visualizations of their predicted and true classes
shown beside their attribution overlays (out/errors/error<k>.gif)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from stlens.core.handle import ModelHandle
from stlens.video.labelled import LabelledClips

VIS_STEPS = 32
"""Activation-maximization steps per class visualization (small: a sketch of what the class looks like)."""


def find_errors(forward: Callable, labelled: LabelledClips, limit: int, batch_size: int, seed: int,
                device: torch.device) -> np.ndarray:
    """The indices of the first ``limit`` clips of ``labelled`` (in order) whose prediction differs from the label."""
    from stlens.measure.run import to_device

    found: list[int] = []
    for start in range(0, len(labelled), batch_size):
        indices = np.arange(start, min(len(labelled), start + batch_size))
        inputs, labels = labelled.batch(indices, np.random.default_rng((seed, start)))
        inputs = to_device(inputs if isinstance(inputs, tuple) else (inputs,), device)
        with torch.no_grad():
            predicted = forward(*inputs).float().argmax(1).cpu()
        found += [int(i) for i, p, y in zip(indices, predicted, labels.long().cpu(), strict=True) if p != y]
        if len(found) >= limit:
            break
    return np.asarray(found[:limit], np.int64)


def class_videos(handle: ModelHandle, classes: list[int], steps: int, device: torch.device, seed: int
                 ) -> dict[int, np.ndarray]:
    """uint8 (T, H, W, 3) activation-maximization videos (``stlens.visualize``, target ``class:K``) per class."""
    if not classes:
        return {}
    from stlens.visualize.api import visualize  # explain sits above visualize (docs/architecture.md)

    result = visualize(handle, [f"class:{k}" for k in classes], steps=steps, device=device, seed=seed,
                       natural_clips=0, progress=False, batch_size=len(classes))
    return {k: t.rgb for k, t in zip(classes, result.targets, strict=True)}


def error_frames(overlaid: np.ndarray, predicted: np.ndarray | None, true: np.ndarray | None) -> np.ndarray:
    """uint8 (T, H, 4W, 3): clip | attribution overlay (``overlaid``, (T, H, 2W, 3)) | predicted-class | true-class
    visualization (grey where a class has none; a visualization's frames are repeated or cut to the clip's)."""
    frames, height = overlaid.shape[:2]
    width = overlaid.shape[2] // 2

    def fit(video: np.ndarray | None) -> np.ndarray:
        if video is None or video.shape[1:3] != (height, width):
            return np.full((frames, height, width, 3), 128, np.uint8)
        return video[np.arange(frames) % len(video)]

    return np.concatenate([overlaid, fit(predicted), fit(true)], axis=2)
