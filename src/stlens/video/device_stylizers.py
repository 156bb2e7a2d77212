"""Stylizing and frame shuffling as batched torch operations, run where the model runs.

The ``palette`` and ``fourier`` stylizers of ``stlens.video.stylizers`` and the frame shuffle of
``stlens.core.pair`` split in two: the style (``ClipStyle``: the colour tables, or the Fourier window, style amplitude
and weight, and the frame order) is drawn on the CPU from the same seed with the same numpy generator — small arrays
a DataLoader worker sends beside the uint8 cropped clip — and the pixel maths runs batched on any device
(``ClipStyles.apply``: uint8 clips (N, T, H, W, 3) → the normalised float32 model input (B, 3, T, H, W) of the B
styled videos).

On the CPU the result equals the numpy stylizers within float rounding: ``palette`` mixes the channels in the
fused multiply-add order of numpy's BLAS (emulated in float64: bit-exact where numpy's BLAS fuses, as on x86-64 with
FMA; elsewhere a pixel whose mixed value lies within float error of an integer can fall on the other side and its
tone-curve entry moves by the curve's slope), ``fourier`` uses ``torch.fft`` rather than
``scipy.fft`` (a pixel within float error of a half grey level rounds the other way: ≤ 1 grey level); the frame shuffle
and the normalisation are exact. docs/scaling.md states the measured differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from stlens.video.stylizers import fourier_params, low_frequency_window, palette_tables, style_amplitude

#: the stylizers with a device version (``identity`` included: no pixel maths)
ON_DEVICE = ("palette", "fourier", "identity")


def runs_on_device(names: Sequence[str]) -> bool:
    """True when every stylizer of ``names`` (as ``get_stylizer`` parsed them) has a device version."""
    return all(name in ON_DEVICE for name in names)


@dataclass
class ClipStyle:
    """The style of one clip, drawn on the CPU: ``kind`` (``palette``, ``fourier``, ``identity``), its parameters and
    ``order`` (the frame order applied after stylizing: ``arange(T)`` unless shuffled), and the normalisation of the
    model input (``mean``, ``std``: ``InputSpec``'s).

    palette: ``mix`` (3, 3) float32 and ``lut`` (3, 256) uint8, as ``palette`` uses them. fourier: ``rows`` (r,) and
    ``cols`` (c,) of the low-frequency window in rfft2 layout, ``style`` (3, r, c) float32 (the style image's
    amplitude there, gains applied) and ``weight``."""

    kind: str
    order: np.ndarray
    mix: np.ndarray | None = None
    lut: np.ndarray | None = None
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None
    style: np.ndarray | None = None
    weight: float = 0.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def shuffled(self, order: np.ndarray) -> ClipStyle:
        """The same style with the frames in ``order``."""
        return replace(self, order=np.asarray(order, dtype=np.int64))


def clip_style(kind: str, seed: int, frames: int, height: int, width: int, mean: Sequence[float] = (0.0, 0.0, 0.0),
               std: Sequence[float] = (1.0, 1.0, 1.0)) -> ClipStyle:
    """The style ``kind`` draws from ``seed`` for a clip of ``frames`` × ``height`` × ``width`` (the same draws as the
    numpy stylizer), frames in order, normalised with ``mean`` and ``std``."""
    base = {"order": np.arange(frames, dtype=np.int64), "mean": tuple(mean), "std": tuple(std)}
    if kind == "palette":
        mix, curves = palette_tables(seed)
        lut = np.round(curves * 255.0).astype(np.uint8)
        return ClipStyle(kind, mix=mix.astype(np.float32), lut=lut, **base)
    if kind == "fourier":
        params = fourier_params(seed)
        rows, cols = low_frequency_window(height, width, params["beta"])
        style = style_amplitude(params["image"], height, width)[rows, cols] * params["gains"]  # (r, c, 3)
        return ClipStyle(kind, rows=rows.astype(np.int64), cols=np.arange(cols.start, cols.stop),
                         style=np.ascontiguousarray(style.transpose(2, 0, 1), dtype=np.float32),
                         weight=float(params["weight"]), **base)
    if kind == "identity":
        return ClipStyle(kind, **base)
    raise ValueError(f"stylizer {kind!r} has no device version (those that do: {', '.join(ON_DEVICE)})")


def palette_on(clips: torch.Tensor, mix: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``palette`` on a batch: uint8 clips (B, T, H, W, 3), ``mix`` (B, 3, 3) float32, ``lut`` (B, 3, 256) uint8 →
    uint8 (B, T, H, W, 3) (colour mixing in float32, clipped to [0, 255] and truncated, then a tone curve per channel).

    The mixing follows the fused multiply-add chain of the BLAS that ``numpy.matmul`` calls (``r·m0``, then
    ``+ g·m1`` and ``+ b·m2``, each rounded to float32 once; the products are exact in float64), so that a mixed value
    within float error of an integer is truncated as the numpy stylizer truncates it."""
    b = clips.shape[0]
    planes = clips.reshape(b, -1, 3).transpose(1, 2).to(torch.float32)  # (B, 3, N): one plane per input channel
    m = mix.to(torch.float32)  # m[b, out, in]
    acc = planes[:, 0:1] * m[:, :, 0:1]  # (B, 3 out, N): a float32 product, rounded once as by the FMA
    planes, m = planes.double(), m.double()
    for k in (1, 2):
        acc = acc.double().addcmul_(planes[:, k:k + 1], m[:, :, k:k + 1]).float()
    mixed = acc.clamp_(0, 255).long()  # truncated towards zero, as numpy's astype(uint8) of [0, 255]
    out = torch.gather(lut, 2, mixed)  # (B, 3, N): the tone curve of each output channel
    return out.transpose(1, 2).reshape(clips.shape)


def fourier_on(clips: torch.Tensor, owner: torch.Tensor, cell: torch.Tensor, style: torch.Tensor,
               weight: torch.Tensor) -> torch.Tensor:
    """``fourier`` on a batch: uint8 clips (B, T, H, W, 3) and the cells of every clip's low-frequency window, K in
    all: ``owner`` (K,) the clip, ``cell`` (K,) the flat index ``row * (W//2 + 1) + column`` in the rfft2 layout,
    ``style`` (K, 3) the style amplitude there; ``weight`` (B,) the blend weight per clip → uint8 (B, T, H, W, 3)
    (float32 FFTs; the window's amplitude blended with the style's, the phase kept; one gather and one scatter for
    the whole batch)."""
    b, t, height, width, _ = clips.shape
    spectrum = torch.fft.rfft2(clips.to(torch.float32).permute(0, 1, 4, 2, 3))  # (B, T, 3, H, W//2+1)
    flat = spectrum.view(b, t, 3, -1)
    window = flat[owner, :, :, cell]  # (K, T, 3)
    w = weight[owner].view(-1, 1, 1)
    amplitude = w * style.view(-1, 1, 3) + (1.0 - w) * window.abs()
    flat[owner, :, :, cell] = torch.polar(amplitude, window.angle())
    out = torch.fft.irfft2(spectrum, s=(height, width)).permute(0, 1, 3, 4, 2)
    return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class ClipStyles:
    """The styles of a batch of clips (``ClipStyle`` each; the normalisation of the model input is the first's) and
    ``source``, the input clip each is made from (None: clip i from input i; the two videos of a pair share one uint8
    clip, so a batch of n pairs sends n clips for its 2n videos). ``apply`` stylizes,
    shuffles and normalises a batch of uint8 clips on the clips' device."""

    styles: list[ClipStyle]
    source: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.styles)

    def stylize(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 input clips (N, T, H, W, 3) on any device → the B stylized and frame-ordered uint8 clips
        (B, T, H, W, 3) on the same device."""
        inputs = len(self.styles) if self.source is None else int(self.source.max()) + 1
        if clips.dtype != torch.uint8 or clips.dim() != 5 or clips.shape[0] != inputs:
            raise ValueError(f"expected {inputs} uint8 clips (N, T, H, W, 3), got {clips.dtype} {tuple(clips.shape)}")
        device = clips.device

        def to(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)

        if self.source is not None:
            clips = clips[to(self.source.astype(np.int64))]
        out = clips.clone()
        _, _, height, width, _ = clips.shape
        for kind in ("palette", "fourier"):
            chosen = [i for i, s in enumerate(self.styles) if s.kind == kind]
            if not chosen:
                continue
            picked = [self.styles[i] for i in chosen]
            index = to(np.array(chosen, dtype=np.int64))
            if kind == "palette":
                mix, lut = to(np.stack([s.mix for s in picked])), to(np.stack([s.lut for s in picked]))
                out[index] = palette_on(clips[index], mix, lut)
                continue
            cells = [(s.rows[:, None] * (width // 2 + 1) + s.cols).ravel() for s in picked]
            owner = np.concatenate([np.full(len(c), i, dtype=np.int64) for i, c in enumerate(cells)])
            style = np.concatenate([s.style.reshape(3, -1).T for s in picked])  # (K, 3), in the cells' order
            weight = np.array([s.weight for s in picked], dtype=np.float32)
            out[index] = fourier_on(clips[index], to(owner), to(np.concatenate(cells)), to(style), to(weight))
        orders = np.stack([s.order for s in self.styles])  # (B, T): checked here, so the device does not sync
        if not np.array_equal(orders, np.broadcast_to(np.arange(orders.shape[1]), orders.shape)):
            out = out[torch.arange(len(self.styles), device=device)[:, None], to(orders)]
        return out

    def normalise(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) → the normalised float32 model input (B, 3, T, H, W), as ``to_model_input``."""
        x = clips.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.styles[0].mean, dtype=torch.float32, device=clips.device)
        std = torch.tensor(self.styles[0].std, dtype=torch.float32, device=clips.device)
        return ((x - mean) / std).permute(0, 4, 1, 2, 3).contiguous()

    def apply(self, clips: torch.Tensor) -> torch.Tensor:
        """Stylize, shuffle and normalise: uint8 input clips (N, T, H, W, 3) → float32 model input (B, 3, T, H, W)."""
        return self.normalise(self.stylize(clips))
