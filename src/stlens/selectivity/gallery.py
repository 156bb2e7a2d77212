"""``selectivity(gallery=N)``: the N most selective units (``index.ranked_units``), each as one GIF of its top clips
side by side and, last, the activation-maximization video of its channel (``stlens.visualize``; gallery/unit<k>.gif).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stlens.core.handle import ModelHandle
from stlens.errors import StlensError
from stlens.selectivity import index as si
from stlens.video.labelled import LabelledBatches, LabelledClips

GALLERY = 4
"""Units shown by default."""
GALLERY_STEPS = 32
"""Activation-maximization steps per unit by default (small: a sketch of what the channel looks for)."""


def clip_frames(labelled: LabelledClips, clips: list[int], count: int, batch_size: int, seed: int,
                handle: ModelHandle) -> dict[int, np.ndarray]:
    """uint8 (T, H, W, 3) rgb frames of the clips numbered ``clips``, exactly as the pass drew them: clip i came in
    batch b = i // ``batch_size`` of ``LabelledBatches`` (generator ``(seed, b)``), so each batch needed is drawn
    again, once."""
    from stlens.core.workers import checked
    from stlens.video.sampling import to_frames

    batches = LabelledBatches(labelled, count, batch_size, seed)
    found: dict[int, np.ndarray] = {}
    for b in sorted({int(i) // batch_size for i in clips}):
        inputs, _ = next(checked([batches[b]]))
        rgb = inputs[0] if isinstance(inputs, tuple | list) else inputs  # two-stream: (rgb, flow)
        for i in clips:
            if int(i) // batch_size == b:
                found[int(i)] = to_frames(rgb[int(i) - b * batch_size], handle.input)
    return found


def channel_videos(handle: ModelHandle, units: list[tuple[str, int]], steps: int, device: torch.device, seed: int,
                   precision: str) -> list[np.ndarray]:
    """uint8 (T, H, W, 3) activation-maximization videos (``stlens.visualize``, objective ``channel(layer, c)``) of
    ``units``, optimized together in one batch."""
    if not units:
        return []
    from stlens.visualize.api import visualize  # selectivity sits above visualize (docs/architecture.md)
    from stlens.visualize.objectives import channel

    was_training = handle.module.training
    try:
        result = visualize(handle, [channel(layer, c) for layer, c in units], steps=steps, device=device, seed=seed,
                           natural_clips=0, progress=False, batch_size=len(units), precision=precision)
    except StlensError as exc:
        raise StlensError(f"`gallery`: the activation-maximization videos failed: {exc} (gallery=0 leaves them "
                          f"out)") from None
    finally:
        handle.module.train(was_training)
    return [t.rgb for t in result.targets]


def unit_frames(clips: list[np.ndarray], video: np.ndarray | None) -> np.ndarray:
    """uint8 (T, H, (k + 1)·W, 3): the unit's top clips left to right, then its activation-maximization video (its
    frames repeated or cut to the clips'; grey where it has another size)."""
    frames, height, width = clips[0].shape[:3]
    if video is None or video.shape[1:3] != (height, width):
        video = np.full((frames, height, width, 3), 128, np.uint8)
    return np.concatenate([*clips, video[np.arange(frames) % len(video)]], axis=2)


def gallery_entries(handle: ModelHandle, labelled: LabelledClips, layers: list, clip_ids: list[str],
                    labels: np.ndarray, *, gallery: int, steps: int, count: int, batch_size: int, seed: int,
                    device: torch.device, precision: str) -> list[dict[str, Any]]:
    """Per unit of the gallery (the ``gallery`` first of ``index.ranked_units``): its layer, channel, GIF name,
    the clips shown (``clip``, ``id``, ``class``, ``response``) and ``frames`` (``unit_frames``, written on save)."""
    ranked = si.ranked_units([layer.low for layer in layers], [layer.index for layer in layers], gallery)
    if not ranked:
        return []
    units = [(layers[at].layer, channel) for at, channel in ranked]
    wanted = sorted({int(i) for at, channel in ranked for i in layers[at].top[:, channel]})
    frames = clip_frames(labelled, wanted, count, batch_size, seed, handle)
    videos = channel_videos(handle, units, steps, device, seed, precision)
    entries = []
    for k, ((at, channel), video) in enumerate(zip(ranked, videos, strict=True)):
        layer = layers[at]
        clips = [int(i) for i in layer.top[:, channel]]
        entries.append({
            "layer": layer.layer, "channel": int(channel), "gif": f"gallery/unit{k}.gif",
            "clips": [{"clip": i, "id": clip_ids[i], "class": int(labels[i]),
                       "response": float(layer.top_responses[j, channel])} for j, i in enumerate(clips)],
            "frames": unit_frames([frames[i] for i in clips], video)})
    return entries
