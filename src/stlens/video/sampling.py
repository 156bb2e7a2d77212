"""Clip sampling: T frames at a uniform stride, centre crop, and normalization to a (3, T, H, W) float tensor.

The chain every reader of videos follows: decode with ``stlens.video.io.read_clip_source(path, short_side=
spec.resize)``, draw a clip with ``sample_clip`` (frame indices and crop), change its appearance if asked, then
``to_model_input``."""

from __future__ import annotations

import functools

import numpy as np
import torch

from stlens.core.spec import InputSpec


def clip_stride(length: int, frames: int, stride: int) -> int | None:
    """The stride to use on a video of ``length`` frames: ``stride`` if the clip fits, else the largest that fits;
    None when the video is shorter than ``frames``."""
    if length < frames:
        return None
    if frames == 1:
        return stride
    return max(1, min(stride, (length - 1) // (frames - 1)))


def clip_indices(length: int, frames: int, stride: int, rng: np.random.Generator,
                 segment: tuple[int, int] | None = None) -> np.ndarray | None:
    """Frame indices of one clip with a random start, or None when the video is too short.

    ``segment``: (start, end) frames of the action (Diving48 annotations); the clip then lies inside
    [start, min(end, length)), and None is returned when that part is shorter than the clip. Without a segment the
    indices (and the draws from ``rng``) are those of the whole video."""
    offset = 0
    if segment is not None:
        first, end = segment
        offset = max(0, first)
        length = max(0, min(end, length) - offset)
    step = clip_stride(length, frames, stride)
    if step is None:
        return None
    span = (frames - 1) * step + 1
    start = int(rng.integers(0, length - span + 1))
    return offset + start + step * np.arange(frames)


def segment_of(source, index: int) -> tuple[int, int] | None:
    """The (start, end) segment of video ``index`` of a ``VideoSource`` (None when its source gives none)."""
    segments = getattr(source, "segments", ())
    return segments[index] if segments else None


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre crop (…, T, H, W, 3) frames to size×size (frames must be at least that large)."""
    height, width = frames.shape[-3:-1]
    top = max(0, (height - size) // 2)
    left = max(0, (width - size) // 2)
    return frames[..., top:top + size, left:left + size, :]


def sample_clip(frames: np.ndarray, spec: InputSpec, rng: np.random.Generator,
                segment: tuple[int, int] | None = None,
                random_crop: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """One clip of decoded frames (…, T, H, W, 3) — a video (an array, or a ``ClipFrames`` that decodes the clip's
    frames only), or the same video in several styles stacked in front —
    as ``spec`` samples it: ``spec.frames`` frames every ``spec.stride`` from a random start (inside ``segment`` when
    given; see ``clip_indices``), cropped to ``spec.size``×``spec.size`` at the centre or, with ``random_crop``, at a
    place drawn from ``rng`` after the start (top, then left).

    Returns (frame indices, uint8 clip (…, spec.frames, spec.size, spec.size, 3)), or None when the video (its
    segment) is shorter than a clip."""
    idx = clip_indices(frames.shape[-4], spec.frames, spec.stride, rng, segment=segment)
    if idx is None:
        return None
    clip = frames[idx] if frames.ndim == 4 else frames[..., idx, :, :, :]  # (a ClipFrames decodes only these)
    if not random_crop:
        return idx, centre_crop(clip, spec.size)
    height, width = clip.shape[-3:-1]
    top = int(rng.integers(0, height - spec.size + 1))
    left = int(rng.integers(0, width - spec.size + 1))
    return idx, clip[..., top:top + spec.size, left:left + spec.size, :]


def _normalize(frames: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x/255 − mean)/std per channel in float32, (T, H, W, 3) → (3, T, H, W): the arithmetic of every model input."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)
    x = (x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)
    return x.permute(3, 0, 1, 2).contiguous()


@functools.lru_cache(maxsize=16)
def _lookup(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``_normalize`` of the 256 values of each channel, (3, 256) float32: the same operations on the same floats,
    so a table look-up gives its results bit for bit."""
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1).reshape(1, 256, 1, 3)
    return _normalize(values, mean, std)[:, 0, :, 0].numpy().copy()


def to_model_input(frames: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """uint8 (T, H, W, 3) → normalized float32 (3, T, H, W), (x/255 − mean)/std per channel; for uint8 frames by a
    look-up table of those 256 results per channel (bit for bit the same numbers, without the float passes over
    the clip)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        return _normalize(frames, tuple(spec.mean), tuple(spec.std))
    table = _lookup(tuple(float(m) for m in spec.mean), tuple(float(s) for s in spec.std))
    out = np.empty((3, *frames.shape[:3]), np.float32)
    for c in range(3):
        np.take(table[c], frames[..., c], out=out[c])
    return torch.from_numpy(out)


def to_frames(clip: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """A normalised (3, T, H, W) model input → uint8 (T, H, W, 3) frames (the inverse of ``to_model_input``)."""
    mean = torch.tensor(spec.mean).view(3, 1, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1, 1)
    rgb = (clip.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round().byte()
    return rgb.permute(1, 2, 3, 0).numpy()
