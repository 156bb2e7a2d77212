"""Model specs (``torchvision:<builder>``, ``stlens:<zoo name>[?options]``, ``module:<pkg.mod>:<callable>``) → a ready
model with its input spec. ``InputSpec`` and ``ModelHandle`` live in ``stlens.core`` (re-exported here)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stlens.core.handle import ModelHandle, channels_first
from stlens.core.spec import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD, InputSpec
from stlens.errors import StlensError
from stlens.models.weights import load_state_dict, read_state_dict


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


def _load_torchvision_weights(model: nn.Module, builder: str, name: str) -> None:
    weights = _torchvision_weights(builder, name)
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cache.is_file():
        raise StlensError(
            f"weights {weights} are not in the torch hub cache ({cache}) and cannot be downloaded here; "
            f"put the file there or pass --weights PATH"
        )
    load_state_dict(model, read_state_dict(cache), str(cache))


def _build_torchvision(builder: str, weights: str | None) -> ModelHandle:
    from torchvision.models import video

    if builder not in TORCHVISION_VIDEO:
        raise StlensError(f"unknown torchvision video builder '{builder}'; choices: {', '.join(TORCHVISION_VIDEO)}")
    spec, layers, channels_last = TORCHVISION_VIDEO[builder]
    model = getattr(video, builder)(weights=None)
    if builder == "s3d":
        model.avgpool = FlexibleAvgPool3d(model.avgpool.kernel_size)
    if weights is not None and not Path(weights).suffix:
        _load_torchvision_weights(model, builder, weights)
        weights_loaded = True
    else:
        weights_loaded = False
    handle = ModelHandle(model, f"torchvision:{builder}", spec, list(layers),
                         layout=_swin_layout if channels_last else channels_first)
    handle.weights = weights if weights_loaded else None
    return handle


def _is_machinery(filename: str) -> bool:
    """Frames of stlens' loader and of the import system, left out of a user traceback."""
    return filename == __file__ or filename.startswith("<frozen importlib") or filename == importlib.__file__


def _user_code_error(spec: str, doing: str, exc: Exception) -> StlensError:
    """One line that says the user's code raised (naming the spec), then the traceback of the user's code."""
    import traceback

    shown = traceback.TracebackException.from_exception(exc)
    shown.stack = traceback.StackSummary.from_list([f for f in shown.stack if not _is_machinery(f.filename)])
    first = (str(exc).splitlines() or [""])[0]
    return StlensError(f"{spec}: {doing} raised {type(exc).__name__}: {first} (the traceback of that code follows)\n"
                       + "".join(shown.format()).rstrip("\n"))


def _build_module(target: str) -> ModelHandle:
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise StlensError(f"module spec must be module:<pkg.mod>:<callable>, got module:{target}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):  # the named module itself is not there
            raise StlensError(f"cannot import {attr} from {module_name}: {exc}") from exc
        raise _user_code_error(f"module:{target}", f"importing {module_name}", exc) from exc
    except StlensError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module raised: say so, then show its traceback
        raise _user_code_error(f"module:{target}", f"importing {module_name}", exc) from exc
    try:
        factory = getattr(module, attr)
    except AttributeError as exc:
        raise StlensError(f"cannot import {attr} from {module_name}: {exc}") from exc
    try:
        built = factory()
    except StlensError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's factory raised: say so, then show its traceback
        raise _user_code_error(f"module:{target}", f"calling {attr}()", exc) from exc
    if isinstance(built, ModelHandle):
        return built
    if not isinstance(built, nn.Module):
        raise StlensError(f"module:{target} returned {type(built).__name__}, not an nn.Module")
    children = [name for name, _ in built.named_children()]
    return ModelHandle(built, f"module:{target}", InputSpec(), children)


def _build_stlens(target: str) -> ModelHandle:
    """``stlens:<name>[?key=value&...]``: a model of the small zoo (``stlens.models.zoo``), options as a URL query."""
    from stlens.models import zoo

    name, options = zoo.parse_spec(target)
    module = zoo.build(name, **options)
    spec, layers = zoo.zoo_spec(name, **options)
    return ModelHandle(module, f"stlens:{target}", spec, layers)


def _resolve_weights(weights: str, spec: str) -> str:
    """A weights argument → a file: ``bundled:<name>`` is a checkpoint shipped in the package (it must belong to the
    same zoo model as ``spec``); anything else is a path."""
    from stlens.models.bundled import PREFIX, bundled_path, check_bundled_fits

    if weights.startswith(PREFIX):
        path = bundled_path(weights)
        check_bundled_fits(weights, spec)
        return str(path)
    return weights


def load_model(spec: str, weights: str | None = None, frames: int | None = None,
               size: int | None = None) -> ModelHandle:
    """Build a model from a spec, load weights (file path or torchvision weights name), put it in eval mode.

    >>> handle = load_model("torchvision:r3d_18")  # doctest: +SKIP
    >>> handle = load_model("stlens:i3d?classes=8&width=16")  # doctest: +SKIP
    """
    kind, _, target = spec.partition(":")
    if kind == "torchvision":
        handle = _build_torchvision(target, weights)
    elif kind == "stlens":
        handle = _build_stlens(target)
    elif kind == "module":
        handle = _build_module(target)
    elif kind == "pytorchvideo":
        from stlens.models.ptvideo import build_pytorchvideo

        handle = build_pytorchvideo(target, frames=frames, size=size)
    elif kind == "hf":
        from stlens.models.hfvideo import build_hf

        handle = build_hf(target, frames=frames, size=size)
    else:
        raise StlensError(f"unknown model spec '{spec}'; use torchvision:<builder>, stlens:<zoo name>[?options], "
                          f"pytorchvideo:<name>, hf:<videomae|timesformer|vivit>[?options] "
                          f"or module:<pkg.mod>:<callable>")
    if weights is not None and handle.weights is None:
        load_state_dict(handle.module, read_state_dict(_resolve_weights(weights, spec)), weights)
        handle.weights = weights
    handle.input = handle.input.with_overrides(frames, size)
    handle.module.eval()
    return handle


def as_handle(model: nn.Module | ModelHandle) -> ModelHandle:
    """Wrap a bare module (user code) into a handle with its top-level children as default layers."""
    if isinstance(model, ModelHandle):
        return model
    if not isinstance(model, nn.Module):
        raise StlensError(f"expected an nn.Module or ModelHandle, got {type(model).__name__}")
    return ModelHandle(model, type(model).__name__, InputSpec(), [n for n, _ in model.named_children()],
                       spec_known=False)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "KINETICS_MEAN", "KINETICS_STD", "FlexibleAvgPool3d", "InputSpec",
           "ModelHandle", "TORCHVISION_VIDEO", "as_handle", "load_model"]
