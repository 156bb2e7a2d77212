"""``torchvision:<builder>`` specs: torchvision's video classifiers (``torchvision.models.video``), built with random
weights; ``weights`` may name a torchvision weights enum member (``KINETICS400_V1``, ``DEFAULT`` or
``R3D_18_Weights.KINETICS400_V1``), read from the torch hub cache (``torch.hub.get_dir()/checkpoints``; downloaded
into it with torch.hub's progress bar when missing, unless offline: ``stlens.models.offline``), or a checkpoint file
(loaded by ``load_model``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from stlens.core.handle import ModelHandle, channels_first
from stlens.core.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from stlens.errors import StlensError
from stlens.models.offline import SWITCHES, is_offline
from stlens.models.weights import load_state_dict, read_state_dict

PREFIX = "torchvision"
#: models are built with random weights unless weights are given (``stlens measure`` warns)
RANDOM_WEIGHTS = True
#: how a spec of this family is written (said by ``load_model`` when a spec has an unknown prefix)
SPEC_FORM = "torchvision:<builder>"


class FlexibleAvgPool3d(nn.Module):
    """AvgPool3d whose kernel shrinks to the input when the input is smaller (s3d below 224 px or 16 frames)."""

    def __init__(self, kernel_size: tuple[int, int, int]):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(min(k, s) for k, s in zip(self.kernel_size, x.shape[2:], strict=True))
        return F.avg_pool3d(x, kernel_size=kernel, stride=1)


_RESNET_SPEC = InputSpec(frames=16, stride=2, size=112, resize=128)
_S3D_SPEC = InputSpec(frames=16, stride=2, size=224, resize=256)
_MVIT_SPEC = InputSpec(frames=16, stride=4, size=224, resize=256, mean=(0.45,) * 3, std=(0.225,) * 3)
_SWIN_SPEC = InputSpec(frames=32, stride=2, size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)
_RESNET_LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4"]
_MVIT_LAYERS = ["blocks.0", "blocks.2", "blocks.7", "blocks.13", "blocks.15"]

#: builder → (input spec, default layers, channels-last layout?)
TORCHVISION_VIDEO = {
    "r3d_18": (_RESNET_SPEC, _RESNET_LAYERS, False),
    "mc3_18": (_RESNET_SPEC, _RESNET_LAYERS, False),
    "r2plus1d_18": (_RESNET_SPEC, _RESNET_LAYERS, False),
    "s3d": (_S3D_SPEC, ["features.0", "features.3", "features.6", "features.12", "features.15"], False),
    "mvit_v1_b": (_MVIT_SPEC, _MVIT_LAYERS, False),
    "mvit_v2_s": (_MVIT_SPEC, _MVIT_LAYERS, False),
    "swin3d_t": (_SWIN_SPEC, ["patch_embed", "features.0", "features.2", "features.4", "features.6"], True),
    "swin3d_s": (_SWIN_SPEC, ["patch_embed", "features.0", "features.2", "features.4", "features.6"], True),
    "swin3d_b": (_SWIN_SPEC, ["patch_embed", "features.0", "features.2", "features.4", "features.6"], True),
}


def names() -> list[str]:
    """Every spec of this family: ``torchvision:r3d_18``, …"""
    return [f"{PREFIX}:{builder}" for builder in TORCHVISION_VIDEO]


def _swin_layout(name: str) -> str:
    return "channels_last" if name.startswith(("patch_embed", "features", "norm")) else "channels_first"


def _torchvision_weights(builder: str, name: str):
    """Resolve a torchvision weights name (``KINETICS400_V1``, ``DEFAULT`` or ``R3D_18_Weights.KINETICS400_V1``)."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(builder)
    member = name.split(".")[-1]
    try:
        return enum[member] if member != "DEFAULT" else enum.DEFAULT
    except KeyError:
        choices = ", ".join(w.name for w in enum)
        raise StlensError(f"unknown weights '{name}' for torchvision:{builder}; choices: {choices}") from None


def weights_cache_path(url: str) -> Path:
    """Where torch.hub (and torchvision) keep the file of ``url``: ``torch.hub.get_dir()/checkpoints/FILE``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _download(url: str, cache: Path, what: str) -> None:
    """Download ``url`` into ``cache`` as torch.hub does (progress bar, hash prefix of the file name checked)."""
    match = torch.hub.HASH_REGEX.search(cache.name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cache), match.group(1) if match else None, progress=True)
    except (OSError, RuntimeError) as exc:  # URLError/HTTPError/timeouts are OSErrors; a bad hash a RuntimeError
        raise StlensError(
            f"cannot download weights {what} from {url} into the torch hub cache ({cache}): "
            f"{type(exc).__name__}: {exc}. Without network here, download that URL elsewhere and place the file by "
            f"hand at {cache} (the directory comes from TORCH_HOME or torch.hub.set_dir), or pass `weights` PATH"
        ) from exc


def _load_torchvision_weights(model: nn.Module, builder: str, name: str) -> None:
    weights = _torchvision_weights(builder, name)
    what = f"{weights} of {PREFIX}:{builder}"
    cache = weights_cache_path(weights.url)
    if not cache.is_file():
        if is_offline():
            raise StlensError(
                f"weights {what} are not in the torch hub cache ({cache}) and offline mode is on ({SWITCHES}); "
                f"turn it off to download them (drop `offline`, unset STLENS_OFFLINE and HF_HUB_OFFLINE), place "
                f"the file from {weights.url} at {cache} by hand, or pass `weights` PATH"
            )
        _download(weights.url, cache, what)
    load_state_dict(model, read_state_dict(cache, "delete it and download it again (the torch hub cache)"),
                    str(cache))


def build(target: str, *, weights: str | None = None, frames: int | None = None,
          size: int | None = None) -> ModelHandle:
    """Build ``torchvision:<target>`` with random weights, or with the torchvision weights ``weights`` names (a name
    without a file suffix); a weights file is left to ``load_model``. ``frames``/``size`` are applied by
    ``load_model`` (the builders accept any clip size)."""
    from torchvision.models import video

    if target not in TORCHVISION_VIDEO:
        raise StlensError(f"unknown torchvision video builder '{target}'; choices: {', '.join(TORCHVISION_VIDEO)}")
    spec, layers, channels_last = TORCHVISION_VIDEO[target]
    model = getattr(video, target)(weights=None)
    if target == "s3d":
        model.avgpool = FlexibleAvgPool3d(model.avgpool.kernel_size)
    if weights is not None and not Path(weights).suffix:
        _load_torchvision_weights(model, target, weights)
        weights_loaded = True
    else:
        weights_loaded = False
    handle = ModelHandle(model, f"{PREFIX}:{target}", spec, list(layers),
                         layout=_swin_layout if channels_last else channels_first)
    handle.weights = weights if weights_loaded else None
    return handle
