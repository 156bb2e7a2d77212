"""Per-clip numbers of an attribution map: the temporal curve, the share inside the object mask and the
static/dynamic split (rank correlation with the map of a frame-shuffled and of a restyled copy); the copies."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from stlens.core.spec import InputSpec
from stlens.video.sampling import to_frames  # moved down: selectivity uses it too


def temporal_curve(attribution: np.ndarray) -> np.ndarray:
    """The map's mass per frame (T,) of a (T, H, W) map."""
    return attribution.reshape(len(attribution), -1).sum(1)


def mask_share(attribution: np.ndarray, mask: np.ndarray | None) -> float:
    """The share of the map's mass inside the (T, H, W) object mask (NaN without a mask)."""
    if mask is None:
        return float("nan")
    return float(attribution[np.asarray(mask, bool)].sum() / max(attribution.sum(), 1e-30))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps over their pixels (NaN when one is constant)."""
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a.ravel(), b.ravel()).statistic)


def shuffle_order(frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random frame order that moves at least one frame (for ≥ 2 frames)."""
    order = rng.permutation(frames)
    while frames > 1 and np.array_equal(order, np.arange(frames)):
        order = rng.permutation(frames)
    return order


def unshuffle(attribution: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The map of a clip shown in ``order`` (its frame j is the original frame order[j]) put back in time order."""
    back = np.empty_like(attribution)
    back[order] = attribution
    return back


def restyled(clip: torch.Tensor, spec: InputSpec, seed: int) -> torch.Tensor:
    """The clip with the palette stylizer's colours (same on every frame: the motion is kept)."""
    from stlens.video.sampling import to_model_input
    from stlens.video.stylizers import palette

    return to_model_input(palette(to_frames(clip, spec), seed), spec).to(clip.device, clip.dtype)


def overlay(frames: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """uint8 (T, H, 2W, 3): each frame beside it with the map (scaled to the clip's peak) laid over in colour."""
    from matplotlib import colormaps

    peak = max(float(attribution.max()), 1e-30)
    heat = (colormaps["inferno"](attribution / peak)[..., :3] * 255).astype(np.float32)
    mixed = (0.45 * frames.astype(np.float32) + 0.55 * heat).clip(0, 255).astype(np.uint8)
    return np.concatenate([frames, mixed], axis=2)
