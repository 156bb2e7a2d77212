"""The moving camera of the segment task: the background pans and zooms, rendered by sampling a crop of the
(2·size)² background texture per frame.

Frame t shows the texture around the crop centre ``centre + t · pan`` (texture px) at ``zoom**t`` texture px per frame
pixel: frame pixel (x, y) shows texture point ``centre + t · pan + ((x, y) − (size − 1)/2) · zoom**t`` (pixel centres
at integer coordinates, bilinear sampling). ``zoom`` > 1 widens the crop (the camera zooms out: the background
shrinks on screen), < 1 narrows it. The crop stays inside the texture on every frame (``draw_camera`` slows the pan
and the zoom of long clips until it does), so no border is ever sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

PAN_SPEED = (0.5, 1.5)
"""Pan speed range in texture px/frame at 64 px frames (≈ screen px/frame), scaled by size/64."""
ZOOM_RATE = (0.98, 1.02)
"""Per-frame crop scale factor range (uniform), before ``ZOOM_LIMIT``."""
ZOOM_LIMIT = 1.4
"""Bound on the total scale change over a clip: zoom**(T−1) stays within [1/1.4, 1.4] (the zoom rate of long clips is
shrunk in log space)."""
MIN_RELATIVE = 0.5
"""Least speed (px/frame at 64 px, scaled) of the object relative to the background at the frame centre on frame 0:
a pan that would carry the background along with the object is turned by 90° (about 5% of clips at the defaults)."""
MARGIN = 1.0
"""Texture px kept between a crop and the texture's border (room for bilinear sampling)."""


@dataclass(frozen=True)
class Camera:
    """A clip's camera: crop centre at frame 0 (x, y) in texture px, pan (x, y) in texture px/frame, per-frame zoom."""

    centre: tuple[float, float]
    pan: tuple[float, float]
    zoom: float

    def scale(self, t: float) -> float:
        """Texture px per frame pixel at frame t."""
        return self.zoom ** t

    def matrix(self, t: int, size: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """The 2×3 map from output pixel (x, y) to texture coordinates at frame t, for an output whose pixel (0, 0) is
        frame pixel ``origin`` (x, y) (``cv2.warpAffine`` with ``WARP_INVERSE_MAP``)."""
        k, h = self.scale(t), (size - 1) / 2
        cx, cy = (c + t * p for c, p in zip(self.centre, self.pan, strict=True))
        return np.array([[k, 0.0, cx + (origin[0] - h) * k], [0.0, k, cy + (origin[1] - h) * k]], np.float64)

    def sample(self, texture: np.ndarray, t: int, size: int, origin: tuple[int, int] = (0, 0),
               shape: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 (h, w, 3): what frame t shows of ``texture`` from frame pixel ``origin`` (x, y) on (default: the
        whole size×size frame); outside the frame, the texture continued (mirrored beyond its border)."""
        import cv2

        height, width = shape if shape is not None else (size, size)
        return cv2.warpAffine(texture, self.matrix(t, size, origin), (width, height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)

    def render(self, texture: np.ndarray, size: int, frames: int) -> np.ndarray:
        """The background video uint8 (T, size, size, 3) seen through the camera."""
        return np.stack([self.sample(texture, t, size) for t in range(frames)])

    def flow(self, size: int, frames: int) -> np.ndarray:
        """The background's ground-truth flow float32 (T−1, size, size, 2): where each frame pixel's texture point is
        on the next frame, minus the pixel."""
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
        flow = np.empty((frames - 1, size, size, 2), np.float32)
        for t in range(frames - 1):
            k = self.scale(t + 1)
            flow[t, :, :, 0] = (offsets * (1 / self.zoom - 1) - self.pan[0] / k)[None, :]
            flow[t, :, :, 1] = (offsets * (1 / self.zoom - 1) - self.pan[1] / k)[:, None]
        return flow

    def velocity(self, t: int = 0) -> tuple[float, float]:
        """The background's screen velocity (px/frame) at the frame centre between frames t and t + 1."""
        k = self.scale(t + 1)
        return -self.pan[0] / k, -self.pan[1] / k

    def meta(self, frames: int) -> dict[str, Any]:
        """JSON-serialisable description (``velocity``: screen px/frame at the centre, frame 0 → 1)."""
        return {"centre": list(self.centre), "pan": list(self.pan), "zoom": self.zoom,
                "scale_last": self.scale(frames - 1), "velocity": list(self.velocity())}


def zoom_rate(raw: float, frames: int) -> float:
    """``raw`` with its log shrunk so that raw**(frames − 1) stays within ±``ZOOM_LIMIT``."""
    widest = (frames - 1) * max(abs(math.log(r)) for r in ZOOM_RATE)
    return math.exp(math.log(raw) * min(1.0, math.log(ZOOM_LIMIT) / widest)) if widest > 0 else raw


def fit_pan(pan: np.ndarray, reach: np.ndarray, side: int) -> np.ndarray:
    """``pan`` (2,) slowed (same direction) until crops reaching ``reach[t]`` texture px either side of their centre
    at frame t fit together in a texture of ``side`` px: |s − t|·|pan| ≤ side − 1 − reach[s] − reach[t]."""
    steps = np.abs(np.arange(len(reach))[:, None] - np.arange(len(reach))[None, :])
    room = side - 1 - reach[:, None] - reach[None, :]
    factor = 1.0
    for p in np.abs(pan):
        moving = steps * p > 0
        if moving.any():
            factor = min(factor, float((room[moving] / (steps[moving] * p)).min()))
    return pan * max(factor, 0.0)


def centre_range(pan: float, reach: np.ndarray, side: int) -> tuple[float, float]:
    """The frame-0 crop centres along one axis that keep every frame's crop inside the texture."""
    t = np.arange(len(reach))
    return float((reach - t * pan).max()), float((side - 1 - reach - t * pan).min())


def draw_camera(rng: np.random.Generator, size: int, frames: int, side: int,
                object_velocity: tuple[float, float]) -> Camera:
    """A camera for a clip of ``frames`` frames of ``size`` px over a texture of ``side`` px: zoom rate, pan angle, pan
    speed and the frame-0 crop centre drawn in that order (five draws)."""
    unit = size / 64
    zoom = zoom_rate(float(rng.uniform(*ZOOM_RATE)), frames)
    angle = float(rng.uniform(0.0, 2 * math.pi))
    speed = float(rng.uniform(*PAN_SPEED)) * unit
    where = rng.random(2)
    pan = np.array([speed * math.cos(angle), -speed * math.sin(angle)])
    relative = np.asarray(object_velocity) + pan / zoom  # object velocity minus the background's (−pan/zoom)
    if np.hypot(*relative) < MIN_RELATIVE * unit:  # turned a quarter (not reversed: less bias against the object)
        pan = np.array([-pan[1], pan[0]])
    reach = (size - 1) / 2 * zoom ** np.arange(frames) + MARGIN
    pan = fit_pan(pan, reach, side)
    centre = []
    for axis in range(2):
        lo, hi = centre_range(float(pan[axis]), reach, side)
        centre.append(lo + float(where[axis]) * max(hi - lo, 0.0))
    return Camera((centre[0], centre[1]), (float(pan[0]), float(pan[1])), zoom)
