"""The texture bank of the synthetic worlds: real textures and photos from scikit-image next to generated patterns.

The bank is built once per frame size (``texture_bank(size)``, cached) from a fixed seed, so it is the same in every
process; rendering a clip is then only array indexing into it. Each texture is a square (2·size)² RGB uint8 image,
large enough to crop a full background and, for the camouflage world, the object's patch from around it.

Contents (ids are positions in the bank):

- ids 0-7: the eight appearance families (class k of the ``appearance`` world): a distinct pattern in a distinct hue
  each (red stripes, orange grass, yellow diagonal stripes, green checkerboard, cyan brick, blue dots, magenta
  blotches, white gravel);
- the general pool: stripes at six angles, checkerboards, random dots, smooth noise at four scales, solid colours,
  gradients, the grey textures ``brick``, ``grass`` and ``gravel`` of scikit-image colourised with random duotone
  tints, and random patches of the photos ``astronaut``, ``chelsea``, ``coffee``, ``rocket``, ``coins``, ``camera``,
  ``moon``, ``hubble_deep_field`` and ``immunohistochemistry`` (grey ones tinted).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BANK_SEED = 20_240_601
"""Fixed seed of the bank's random choices (colours, crops): the bank never depends on a clip's seed."""

FAMILIES = ("red stripes", "orange grass", "yellow diagonal stripes", "green checkerboard", "cyan brick",
            "blue dots", "magenta blotches", "white gravel")
"""Names of the eight appearance families (the classes of the ``appearance`` world), in class order."""

CAMOUFLAGE_KINDS = ("natural", "dots", "fine-noise")
"""Texture kinds dense enough in detail that a moving copy of the texture is seen through motion alone (stripes,
checkerboards and smooth textures are left out: their shifted copies can be invisible even in motion)."""

NATURAL = ("brick", "grass", "gravel")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins", "camera", "moon", "hubble_deep_field",
          "immunohistochemistry")


@dataclass(frozen=True, eq=False)
class TextureBank:
    """Textures (K, S, S, 3) uint8 with their names, kinds and mean colours, and the id pools the worlds draw from."""

    images: np.ndarray
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    means: np.ndarray  # (K, 3) float32 mean RGB of each texture
    families: tuple[int, ...]  # ids of the 8 appearance families
    backgrounds: tuple[int, ...]  # ids a background may use (every texture that is not a family)
    camouflage: tuple[int, ...]  # ids the camouflage world uses for object and background alike

    def __len__(self) -> int:
        return len(self.images)


# ---- generated patterns (float images in [0, 1], shape (S, S)) --------------------------------------------------


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    return ys, xs


def stripes(side: int, period: float, degrees: float, duty: float = 0.5) -> np.ndarray:
    """Binary stripes of ``period`` px across the direction ``degrees``."""
    ys, xs = _grid(side)
    t = np.deg2rad(degrees)
    phase = (xs * np.cos(t) + ys * np.sin(t)) / period
    return (phase % 1.0 < duty).astype(np.float32)


def checkerboard(side: int, cell: float) -> np.ndarray:
    ys, xs = _grid(side)
    return ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)


def dots(side: int, radius: float, density: float, rng: np.random.Generator, grid: bool = False) -> np.ndarray:
    """Discs of ``radius`` px: on a jittered grid (``grid``) or at random places covering ≈ ``density`` of the area."""
    import cv2

    image = np.zeros((side, side), np.uint8)
    if grid:
        step = 3.2 * radius
        centres = [(x + rng.uniform(-0.3, 0.3) * radius, y + rng.uniform(-0.3, 0.3) * radius)
                   for y in np.arange(step / 2, side, step) for x in np.arange(step / 2, side, step)]
    else:
        count = int(density * side * side / (np.pi * radius**2))
        centres = list(zip(rng.uniform(0, side, count), rng.uniform(0, side, count), strict=True))
    for x, y in centres:
        cv2.circle(image, (int(round(x * 4)), int(round(y * 4))), int(round(radius * 4)), 255, -1, cv2.LINE_AA, 2)
    return image.astype(np.float32) / 255.0


def smooth_noise(side: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise blurred by ``sigma`` px, stretched to [0, 1]."""
    import cv2

    noise = rng.normal(size=(side, side)).astype(np.float32)
    if sigma > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    lo, hi = np.percentile(noise, [1, 99])
    return np.clip((noise - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def gradient(side: int, degrees: float) -> np.ndarray:
    ys, xs = _grid(side)
    t = np.deg2rad(degrees)
    ramp = xs * np.cos(t) + ys * np.sin(t)
    return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)


def duotone(grey: np.ndarray, dark, light) -> np.ndarray:
    """Colourise a [0, 1] grey image: 0 → ``dark``, 1 → ``light`` (RGB 0-255) → uint8 (S, S, 3)."""
    dark, light = np.asarray(dark, np.float32), np.asarray(light, np.float32)
    return np.clip(np.round(dark + grey[..., None] * (light - dark)), 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, lo: float = 0.0, hi: float = 255.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=3)


# ---- scikit-image textures and photos ---------------------------------------------------------------------------


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = image[..., :3]
    return image


def patch(image: np.ndarray, side: int, rng: np.random.Generator, fraction: tuple[float, float]) -> np.ndarray:
    """A random square crop covering ``fraction`` of the image's short side, resized to side×side."""
    import cv2

    height, width = image.shape[:2]
    crop = int(min(height, width) * rng.uniform(*fraction))
    top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    region = np.ascontiguousarray(image[top:top + crop, left:left + crop])
    interpolation = cv2.INTER_AREA if crop >= side else cv2.INTER_LINEAR
    return cv2.resize(region, (side, side), interpolation=interpolation)


def _grey01(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32) / 255.0
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


# ---- the bank -----------------------------------------------------------------------------------------------------


def _families(side: int, unit: float, rng: np.random.Generator) -> list[np.ndarray]:
    """The eight appearance families (see ``FAMILIES``): a distinct pattern in a distinct hue each."""
    dark = (25, 25, 30)
    brick, grass, gravel = (patch(_skimage(n), side, rng, (0.45, 0.55)) for n in NATURAL)
    return [
        duotone(stripes(side, 8 * unit, 90), dark, (230, 40, 35)),
        duotone(_grey01(grass), (60, 25, 0), (255, 150, 30)),
        duotone(stripes(side, 9 * unit, 45), dark, (245, 225, 40)),
        duotone(checkerboard(side, 5 * unit), dark, (40, 205, 60)),
        duotone(_grey01(brick), (0, 45, 55), (60, 230, 240)),
        duotone(dots(side, 2.2 * unit, 0.0, rng, grid=True), (220, 225, 235), (35, 70, 235)),
        duotone(smooth_noise(side, 2.5 * unit, rng) > 0.5, dark, (230, 50, 225)),
        duotone(_grey01(gravel), (110, 110, 110), (255, 255, 255)),
    ]


def _pool(side: int, unit: float, rng: np.random.Generator) -> list[tuple[str, str, np.ndarray]]:
    """The general pool as (name, kind, image)."""
    out: list[tuple[str, str, np.ndarray]] = []
    for degrees in (0, 30, 60, 90, 120, 150):
        period = rng.uniform(6, 16) * unit
        out.append((f"stripes {degrees}°", "stripes",
                    duotone(stripes(side, period, degrees, rng.uniform(0.3, 0.7)), _colour(rng), _colour(rng))))
    for cell in (3, 5, 8, 12):
        out.append((f"checkerboard {cell}px", "checker",
                    duotone(checkerboard(side, cell * unit), _colour(rng), _colour(rng))))
    for k, radius in enumerate((1.2, 1.8, 2.5, 3.5)):
        out.append((f"random dots {k}", "dots",
                    duotone(dots(side, radius * unit, 0.3, rng), _colour(rng), _colour(rng))))
    for sigma in (0.8, 1.5, 4.0, 8.0):
        kind = "fine-noise" if sigma < 2 else "noise"
        out.append((f"noise σ={sigma}", kind, duotone(smooth_noise(side, sigma * unit, rng), _colour(rng),
                                                      _colour(rng))))
        channels = np.stack([smooth_noise(side, sigma * unit, rng) for _ in range(3)], axis=-1)
        out.append((f"colour noise σ={sigma}", kind, np.round(channels * 255).astype(np.uint8)))
    for k in range(6):
        colour = np.clip(np.round(_colour(rng, 20, 235)), 0, 255).astype(np.uint8)
        out.append((f"solid {k}", "solid", np.broadcast_to(colour, (side, side, 3)).copy()))
    for k in range(4):
        out.append((f"gradient {k}", "gradient", duotone(gradient(side, rng.uniform(0, 360)), _colour(rng),
                                                         _colour(rng))))
    for name in NATURAL:
        image = _skimage(name)
        for k in range(3):
            grey = _grey01(patch(image, side, rng, (0.3, 0.6)))
            out.append((f"{name} {k}", "natural", duotone(grey, _colour(rng, 0, 120), _colour(rng, 120, 255))))
    for name in PHOTOS:
        image = _skimage(name)
        for k in range(2):
            crop = patch(image, side, rng, (0.35, 0.7))
            if crop.ndim == 2:
                crop = duotone(_grey01(crop), _colour(rng, 0, 100), _colour(rng, 150, 255))
            out.append((f"{name} {k}", "photo", crop))
    return out


@lru_cache(maxsize=8)
def texture_bank(size: int) -> TextureBank:
    """The bank for frames of ``size`` px (textures of 2·size px; pattern scales grow with size/64). Cached."""
    side = 2 * size
    unit = size / 64.0
    rng = np.random.default_rng(BANK_SEED)
    families = _families(side, unit, rng)
    pool = _pool(side, unit, rng)
    images = np.stack(families + [image for _, _, image in pool])
    images.setflags(write=False)
    names = FAMILIES + tuple(name for name, _, _ in pool)
    kinds = ("family",) * len(families) + tuple(kind for _, kind, _ in pool)
    means = images.reshape(len(images), -1, 3).mean(axis=1).astype(np.float32)
    ids = range(len(images))
    return TextureBank(
        images=images, names=names, kinds=kinds, means=means, families=tuple(range(len(families))),
        backgrounds=tuple(i for i in ids if kinds[i] != "family"),
        camouflage=tuple(i for i in ids if kinds[i] in CAMOUFLAGE_KINDS))
