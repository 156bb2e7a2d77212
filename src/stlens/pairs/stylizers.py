"""Appearance stylizers: deterministic from a seed and identical on every frame of a clip (no added flicker)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stlens.errors import StlensError

Stylizer = Callable[[np.ndarray, int], np.ndarray]
"""A stylizer maps a uint8 clip (T, H, W, 3) and a style seed to a restyled uint8 clip of the same shape."""


def palette_tables(seed: int, knots: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A random 3×3 colour-mixing matrix and three smooth 256-entry tone curves, from ``seed``.

    The mixing matrix is a random rotation of colour space blended with the identity, so every output channel
    keeps the image's luminance edges; each curve is a smooth (cubic) interpolation through random knots.
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.diag(r))
    blend = rng.uniform(0.3, 1.0)
    mix = blend * np.abs(rotation) + (1 - blend) * np.eye(3)
    mix /= mix.sum(axis=1, keepdims=True)
    xs = np.linspace(0.0, 1.0, knots)
    grid = np.linspace(0.0, 1.0, 256)
    curves = []
    for _ in range(3):
        ys = np.clip(xs + rng.normal(0.0, 0.35, size=knots), 0.0, 1.0)
        if rng.random() < 0.5:
            ys = ys[::-1]  # an inverting curve: strong appearance change, same edges
        # Catmull-Rom-like smoothing through the knots via a cubic polynomial fit of low degree.
        coeffs = np.polyfit(xs, ys, deg=3)
        curves.append(np.clip(np.polyval(coeffs, grid), 0.0, 1.0))
    return mix, np.stack(curves)


def palette(clip: np.ndarray, seed: int) -> np.ndarray:
    """Restyle a clip with random smooth per-channel colour curves plus channel mixing (same on every frame)."""
    mix, curves = palette_tables(seed)
    mixed = np.clip(clip.astype(np.float32) @ mix.T.astype(np.float32), 0, 255).astype(np.uint8)
    out = np.empty_like(mixed)
    for channel in range(3):
        lut = np.round(curves[channel] * 255.0).astype(np.uint8)
        out[..., channel] = lut[mixed[..., channel]]
    return out


def identity(clip: np.ndarray, seed: int) -> np.ndarray:
    """No restyling (useful as a control: dynamic pairs become identical videos)."""
    return clip


STYLIZERS: dict[str, Stylizer] = {"palette": palette, "identity": identity}


def get_stylizer(names: str) -> list[tuple[str, Stylizer]]:
    """Parse ``--stylizer NAME[,NAME...]`` into named stylizers."""
    chosen = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name not in STYLIZERS:
            raise StlensError(f"unknown stylizer '{name}'; choices: {', '.join(STYLIZERS)}")
        chosen.append((name, STYLIZERS[name]))
    if not chosen:
        raise StlensError("--stylizer needs at least one name")
    return chosen
