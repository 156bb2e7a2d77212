"""Optical flow for two-stream (RGB + flow) models: computation (OpenCV), the two-stream encoding, flow stacks,
flow jitter (the static pair of a two-stream model) and a disk cache.

Flow arrays are float32 (N, H, W, 2) in pixels: ``[..., 0]`` = u (rightwards), ``[..., 1]`` = v (downwards); field k
moves frame k onto frame k + 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stlens.core.damaged import reading
from stlens.errors import StlensError
from stlens.files import atomic_write

log = logging.getLogger("stlens")

FLOW_METHODS = ("tvl1", "dis", "farneback")
FLOW_BOUND = 20.0
"""Flow is clipped to ±20 px before scaling, as in the TV-L1 flow sets used to train two-stream nets (TSN, I3D)."""

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _flow_fn(method: str) -> FlowFn:
    """A ``(prev_grey, next_grey) → (H, W, 2)`` function for ``method`` (one OpenCV object per call of this)."""
    import cv2

    if method == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda prev, nxt: dis.calc(prev, nxt, None)
    if method == "farneback":
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise StlensError(f"unknown flow method '{method}'; choices: {', '.join(FLOW_METHODS)}")


def to_grey(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 (T, H, W, 3) → grey uint8 (T, H, W) (ITU-R 601 luma, as ``cv2.COLOR_RGB2GRAY``)."""
    import cv2

    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])


def compute_flow(frames: np.ndarray, method: str = "tvl1") -> np.ndarray:
    """Optical flow between consecutive frames of an RGB uint8 clip (T, H, W, 3) → float32 (T-1, H, W, 2) in pixels.

    ``tvl1`` (Dual TV-L1, ``cv2.optflow``) is the faithful default: the flow that two-stream nets were trained on.
    ``dis`` (DIS, preset medium) and ``farneback`` are much faster approximations. Input is converted to grey.
    """
    flow_fn = _flow_fn(method)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 2:
        raise StlensError(f"compute_flow needs an RGB clip (T ≥ 2, H, W, 3), got shape {frames.shape}")
    grey = to_grey(frames.astype(np.uint8, copy=False))
    flows = [flow_fn(grey[k], grey[k + 1]) for k in range(len(grey) - 1)]
    return np.stack(flows).astype(np.float32, copy=False)


def encode_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """The two-stream network input: flow clipped to ±``bound`` px and scaled to [-1, 1] (float32).

    This is the float form of the 8-bit flow images of TSN/I3D-style data sets (see ``quantize_flow``) after the
    usual ``x / 127.5 - 1`` input scaling, without the quantization step.
    """
    return (np.clip(flow, -bound, bound) / bound).astype(np.float32)


def quantize_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Flow in pixels → uint8 as flow JPEG/PNG sets store it: clip to ±``bound``, 128 = zero, 0 = −bound.

    ``q = clip(round(128 + 128·x/bound), 0, 255)``; +bound saturates at 255 (one step short of 256). One step is
    ``bound/128`` px. (dense_flow's ``255·(x + b)/(2b)`` differs by at most half a step.)
    """
    scaled = 128.0 + 128.0 * np.clip(flow, -bound, bound) / bound
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """uint8 flow image (128 = zero) → flow in pixels (float32); inverse of ``quantize_flow`` up to half a step."""
    return ((q.astype(np.float32) - 128.0) * (bound / 128.0)).astype(np.float32)


def flow_stack(flow: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """``length`` consecutive flow fields (N, H, W, 2) from ``start`` → the (2L, H, W) input of a 2-D flow net,
    channels interleaved u₀, v₀, u₁, v₁, … (Simonyan & Zisserman 2014)."""
    if length < 1 or start < 0 or start + length > len(flow):
        raise StlensError(f"cannot stack {length} flow fields from {start}: only {len(flow)} fields")
    fields = flow[start:start + length]  # (L, H, W, 2)
    return np.ascontiguousarray(fields.transpose(0, 3, 1, 2).reshape(2 * length, *flow.shape[1:3]))


def flow_clip(flow: np.ndarray) -> np.ndarray:
    """Flow fields (N, H, W, 2) → the (2, N, H, W) clip input of a 3-D flow net (I3D-style)."""
    return np.ascontiguousarray(flow.transpose(3, 0, 1, 2))


def jitter_params(rng: np.random.Generator, angle: tuple[float, float] = (30.0, 180.0),
                  scale: tuple[float, float] = (0.3, 3.0), min_scale: float = 1.25) -> tuple[float, float]:
    """Draw a rotation (degrees, |θ| uniform in ``angle``, random sign) and a magnitude factor (log-uniform in
    ``scale`` with the factors within ×/÷ ``min_scale`` of 1 left out)."""
    theta = float(rng.uniform(*angle)) * (1.0 if rng.random() < 0.5 else -1.0)
    low, high, gap = np.log(scale[0]), np.log(scale[1]), np.log(min_scale)
    below, above_start = max(0.0, min(-gap, high) - low), max(gap, low)
    above = max(0.0, high - above_start)
    if below + above <= 0:
        raise StlensError(f"flow jitter: no magnitude factor in {scale} outside ×/÷{min_scale}")
    u = float(rng.uniform(0.0, below + above))
    log_factor = low + u if u < below else above_start + (u - below)
    return theta, float(np.exp(log_factor))


def rotate_scale_flow(flow: np.ndarray, degrees: float, factor: float) -> np.ndarray:
    """Rotate every flow vector by ``degrees`` in the (u, v) plane and multiply its length by ``factor``."""
    t = np.deg2rad(degrees)
    c, s = factor * np.cos(t), factor * np.sin(t)
    u, v = flow[..., 0], flow[..., 1]
    return np.stack([c * u - s * v, s * u + c * v], axis=-1).astype(np.float32)


def flow_jitter(flow: np.ndarray, rng: np.random.Generator, angle: tuple[float, float] = (30.0, 180.0),
                scale: tuple[float, float] = (0.3, 3.0), min_scale: float = 1.25) -> np.ndarray:
    """A new direction and magnitude for the motion of a whole clip (one draw for all its fields).

    The vector-space meaning of the paper's static pair for two-stream nets, which jitters hue (direction) and
    saturation (magnitude) of colour-coded flow images; applied in pixels, before ``encode_flow``.
    """
    degrees, factor = jitter_params(rng, angle, scale, min_scale)
    return rotate_scale_flow(flow, degrees, factor)


def _video_stamp(video: str | Path) -> dict[str, object]:
    path = Path(video)
    try:
        stat = path.stat()
        return {"video": str(path.resolve()), "mtime_ns": stat.st_mtime_ns, "bytes": stat.st_size}
    except OSError:
        return {"video": str(path), "mtime_ns": None, "bytes": None}


@dataclass
class FlowCache:
    """Flow fields on disk, one compressed ``.npz`` per (video path, mtime, size in bytes, method, frame indices,
    frame shape, crop). Stored as ``dtype`` (float16 by default); what ``get_or_compute`` returns always went through
    that dtype, so a run gives the same numbers whether the cache was cold or warm. Writes are atomic."""

    root: str | Path
    dtype: str = "float16"
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def key(self, video: str | Path, method: str, indices: Sequence[int], shape: Sequence[int],
            crop: int | None = None) -> str:
        """A hash of everything the flow depends on (a changed video file changes its mtime or size)."""
        fields = {**_video_stamp(video), "method": method, "indices": [int(i) for i in indices],
                  "shape": [int(s) for s in shape], "crop": crop}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> np.ndarray | None:
        """The cached flow (float32) or None when absent or unreadable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with reading(path, "delete it; it is recomputed"), np.load(path, allow_pickle=False) as stored:
                return stored["flow"].astype(np.float32)
        except StlensError as exc:  # a damaged entry is recomputed and written again
            log.warning("flow cache: %s (recomputed now)", exc)
            return None

    def save(self, key: str, flow: np.ndarray) -> np.ndarray:
        """Store ``flow``; returns it as read back (rounded to the cache dtype)."""
        stored = np.asarray(flow).astype(self.dtype)
        atomic_write(self.path(key), lambda f: np.savez_compressed(f, flow=stored))
        return stored.astype(np.float32)

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The flow under ``key``, computed with ``compute()`` and stored on a miss."""
        found = self.load(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        return self.save(key, compute())
