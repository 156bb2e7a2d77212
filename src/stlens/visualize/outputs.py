"""Writers for visualizations: animated GIF (PIL), MP4 (PyAV, H.264), flow rendered two ways, mosaic PNG, JSON.

Flow displays (flow (N, H, W, 2) in px, ``scale`` = the px value shown at full strength):
- ``flow_paper``: the paper's code — R = u, G = v, B = |flow|, zero at mid-grey: R = 128 + 127·u/s, G = 128 + 127·v/s,
  B = 128 + 107·|f|/s (B rises from 128 to 235), clipped;
- ``flow_wheel``: the standard colour wheel — hue = direction (east red, north yellow-green, west cyan, south
  violet; counter-clockwise from east with up = north), saturation = |f|/s, white = no motion.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stlens.files import atomic_write, versioned

FRAME_MS = 150
"""Frame duration of the animations (the paper's renders use 150 ms)."""


def display_scale(flow: np.ndarray, floor: float = 0.5) -> float:
    """The 99th percentile of |u|, |v| over a flow clip (at least ``floor`` px): the value shown at full strength."""
    if flow.size == 0:
        return floor
    return max(floor, float(np.percentile(np.abs(flow), 99)))


def flow_paper(flow: np.ndarray, scale: float) -> np.ndarray:
    """(N, H, W, 2) px → uint8 (N, H, W, 3): R = u, G = v, B = |flow|, zero at mid-grey (see the module docstring)."""
    u, v = flow[..., 0] / scale, flow[..., 1] / scale
    mag = np.sqrt(u ** 2 + v ** 2)
    rgb = np.stack([128 + 127 * u, 128 + 127 * v, 128 + 107 * mag], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def flow_wheel(flow: np.ndarray, scale: float) -> np.ndarray:
    """(N, H, W, 2) px → uint8 (N, H, W, 3): hue = compass direction, saturation = magnitude/scale, value 1."""
    import cv2

    u, v = flow[..., 0], flow[..., 1]
    angle = np.degrees(np.arctan2(-v, u)) % 360.0
    sat = np.clip(np.sqrt(u ** 2 + v ** 2) / scale, 0, 1)
    hsv = np.stack([angle / 2.0, sat * 255.0, np.full_like(sat, 255.0)], axis=-1).astype(np.uint8)
    return np.stack([cv2.cvtColor(f, cv2.COLOR_HSV2RGB) for f in hsv])


def wheel_legend(size: int = 64) -> np.ndarray:
    """A colour-wheel legend image (size × size): the colour of a flow vector pointing from the centre."""
    r = np.linspace(-1, 1, size)
    x, y = np.meshgrid(r, r)
    legend = flow_wheel(np.stack([x, y], axis=-1)[None], 1.0)[0]
    legend[np.hypot(x, y) > 1] = 255
    return legend


def upscale(frames: np.ndarray, minimum: int = 128) -> np.ndarray:
    """Nearest-neighbour upscale (T, H, W, 3) by the smallest integer making the short side ≥ ``minimum``."""
    factor = max(1, math.ceil(minimum / min(frames.shape[1:3])))
    return frames.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else frames


def write_gif(path: str | Path, frames: np.ndarray, frame_ms: int = FRAME_MS) -> Path:
    """Looping animated GIF of uint8 (T, H, W, 3) frames."""
    from PIL import Image

    images = [Image.fromarray(f) for f in upscale(frames)]

    def write(f) -> None:
        buf = io.BytesIO()
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0,
                       optimize=False, disposal=1)
        f.write(buf.getvalue())

    return atomic_write(path, write)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 1000.0 / FRAME_MS) -> Path:
    """H.264 MP4 (yuv420p, via PyAV) of uint8 (T, H, W, 3) frames (upscaled; sides made even)."""
    import av

    frames = upscale(frames)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2

    def write(f) -> None:
        buf = io.BytesIO()
        with av.open(buf, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "18"}
            for frame in frames:
                packet = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
                container.mux(stream.encode(packet))
            container.mux(stream.encode())
        f.write(buf.getvalue())

    return atomic_write(path, write)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    from PIL import Image

    def write(f) -> None:
        Image.fromarray(image).save(f, format="PNG")

    return atomic_write(path, write)


def write_json(path: str | Path, record: dict) -> Path:
    """``record`` with its ``format_version`` (docs/formats.md §0); NaN allowed (an objective may be undefined)."""
    text = json.dumps(versioned(record), indent=2, allow_nan=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def mosaic(rows: Sequence[np.ndarray], labels: Sequence[str], gap: int = 2, max_frames: int = 16) -> np.ndarray:
    """One row per clip (each uint8 (T, H, W, 3); up to ``max_frames`` frames evenly picked), a label strip on the
    left, white gaps."""
    from PIL import Image, ImageDraw

    rows = [upscale(r, 64) for r in rows]
    h, w = max(r.shape[1] for r in rows), max(r.shape[2] for r in rows)
    cols = min(max_frames, max(len(r) for r in rows))
    label_w = 8 + 6 * max((len(s) for s in labels), default=0)
    canvas = np.full((len(rows) * (h + gap) + gap, label_w + cols * (w + gap) + gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        picks = np.linspace(0, len(row) - 1, min(cols, len(row))).round().astype(int)
        for j, t in enumerate(picks):
            y, x = gap + i * (h + gap), label_w + gap + j * (w + gap)
            canvas[y:y + row.shape[1], x:x + row.shape[2]] = row[t]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i, text in enumerate(labels):
        draw.text((4, gap + i * (h + gap) + h // 2 - 5), text, fill=(0, 0, 0))
    return np.asarray(image)
