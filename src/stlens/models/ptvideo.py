"""``pytorchvideo:<name>`` specs: PyTorchVideo's model builders (random weights, ``pretrained=False``; the hub
weights download and cannot be fetched here — pass ``--weights FILE`` with a checkpoint you have).

Only ``pytorchvideo.models`` is used: ``pytorchvideo.transforms`` does not import with torchvision ≥ 0.17. Sampling and
normalization follow the PyTorchVideo model zoo / torch hub tutorial (frames × stride, short side, centre crop; mean
0.45, std 0.225). Head average pools are made size-tolerant (:class:`FlexibleAvgPool3d`) so the networks accept clips
smaller than their native size (the published size gives exactly the original pooling).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from stlens.core.handle import ModelHandle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.models.tvvideo import FlexibleAvgPool3d

PREFIX = "pytorchvideo"
#: models are built with random weights unless weights are given (``stlens measure`` warns)
RANDOM_WEIGHTS = True
#: how a spec of this family is written (said by ``load_model`` when a spec has an unknown prefix)
SPEC_FORM = "pytorchvideo:<name>"

PTV_MEAN = (0.45, 0.45, 0.45)
PTV_STD = (0.225, 0.225, 0.225)


def _spec(frames: int, stride: int, size: int, resize: int) -> InputSpec:
    return InputSpec(frames=frames, stride=stride, size=size, resize=resize, mean=PTV_MEAN, std=PTV_STD)


_RESNET_STAGES = [f"blocks.{i}" for i in range(5)]
_POOLED_STAGES = ["blocks.0", "blocks.1", "blocks.3", "blocks.4", "blocks.5"]  # C2D/I3D: blocks.2 is a max pool
_SLOWFAST_STAGES = [f"blocks.{i}.multipathway_blocks.{p}" for i in range(5) for p in (0, 1)]
_MVIT_STAGES = ["patch_embed", "blocks.0", "blocks.2", "blocks.13", "blocks.15"]


@dataclass(frozen=True)
class PTVModel:
    """One PyTorchVideo architecture: its hub builder, clip spec, default layers and how T/size reach the builder."""

    builder: str  # a function of pytorchvideo.models.hub, or "create_x3d"
    input: InputSpec
    layers: list[str]
    size_kwargs: tuple[str, str] | None = None  # (frames kwarg, crop kwarg) for builders that bake the size in
    alpha: int = 0  # SlowFast: the fast pathway has ``alpha`` times the frames of the slow one


#: name → architecture. Clip specs: PyTorchVideo model zoo (frames×stride) and its hub tutorial (short side / crop).
PTV_MODELS: dict[str, PTVModel] = {
    "slow_r50": PTVModel("slow_r50", _spec(8, 8, 256, 256), _RESNET_STAGES),
    "slowfast_r50": PTVModel("slowfast_r50", _spec(32, 2, 256, 256), _SLOWFAST_STAGES, alpha=4),
    "x3d_xs": PTVModel("create_x3d", _spec(4, 12, 182, 182), _RESNET_STAGES, ("input_clip_length", "input_crop_size")),
    "x3d_s": PTVModel("create_x3d", _spec(13, 6, 182, 182), _RESNET_STAGES, ("input_clip_length", "input_crop_size")),
    "x3d_m": PTVModel("create_x3d", _spec(16, 5, 256, 256), _RESNET_STAGES, ("input_clip_length", "input_crop_size")),
    "c2d_r50": PTVModel("c2d_r50", _spec(8, 8, 224, 256), _POOLED_STAGES),
    "i3d_r50": PTVModel("i3d_r50", _spec(8, 8, 224, 256), _POOLED_STAGES),
    "r2plus1d_r50": PTVModel("r2plus1d_r50", _spec(16, 4, 224, 256), _RESNET_STAGES),
    "csn_r101": PTVModel("csn_r101", _spec(32, 2, 224, 256), _RESNET_STAGES),
    "mvit_base_16x4": PTVModel("mvit_base_16x4", _spec(16, 4, 224, 256), _MVIT_STAGES,
                               ("temporal_size", "spatial_size")),
}


def installed() -> bool:
    """Whether the optional dependency ``pytorchvideo`` is there (without importing it)."""
    return importlib.util.find_spec("pytorchvideo") is not None


def names() -> list[str]:
    """Every spec of this family (none when ``pytorchvideo`` is not installed)."""
    return [f"{PREFIX}:{name}" for name in PTV_MODELS] if installed() else []


def _hub():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pytorchvideo.models import hub
    except ImportError as exc:
        raise StlensError("pytorchvideo: models need the optional dependency: pip install 'stlens[pytorchvideo]' "
                          f"({exc})") from exc
    return hub


def _flexible_pools(model: nn.Module) -> None:
    """Replace every stride-1 AvgPool3d (the head pools) by a pool whose kernel shrinks to smaller inputs."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.AvgPool3d) and tuple(_triple(module.stride)) == (1, 1, 1):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, FlexibleAvgPool3d(tuple(_triple(module.kernel_size))))


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value, value)


def pack_slowfast(x: torch.Tensor | list | tuple, alpha: int) -> list[torch.Tensor]:
    """(B,3,T,H,W) → ``[slow, fast]`` with slow = every ``alpha``-th frame of fast (T divisible by ``alpha``).
    A list/tuple input is copied, so the caller's list survives PyTorchVideo's in-place pathway updates."""
    if isinstance(x, (list, tuple)):
        return list(x)
    if x.ndim != 5:
        raise StlensError(f"SlowFast expects a (B,3,T,H,W) clip, got shape {tuple(x.shape)}")
    if x.shape[2] % alpha:
        raise StlensError(f"SlowFast needs a frame count divisible by alpha={alpha}, got T={x.shape[2]}")
    return [x[:, :, ::alpha], x]


def _slowfast_pre_hook(alpha: int):
    def hook(_module, args):
        if not args:
            return None
        return (pack_slowfast(args[0], alpha),) + tuple(args[1:])

    return hook


def build_pytorchvideo(name: str, frames: int | None = None, size: int | None = None) -> ModelHandle:
    """Build ``pytorchvideo:<name>`` with random weights. ``frames``/``size`` override the clip spec; for X3D and
    MViT (whose head pool or position embedding is built for one size) they are also passed to the builder."""
    if name not in PTV_MODELS:
        raise StlensError(f"unknown pytorchvideo model '{name}'; choices: {', '.join(PTV_MODELS)}")
    info = PTV_MODELS[name]
    spec = info.input.with_overrides(frames, size)
    kwargs = {}
    if info.size_kwargs is not None:
        kwargs = {info.size_kwargs[0]: spec.frames, info.size_kwargs[1]: spec.size}
    if info.alpha and spec.frames % info.alpha:
        raise StlensError(f"pytorchvideo:{name} needs `frames` divisible by {info.alpha}, got {spec.frames}")
    if info.builder == "create_x3d":  # the hub's x3d_* fix the clip size; they are create_x3d at one size
        _hub()
        from pytorchvideo.models.x3d import create_x3d as builder
    else:
        builder = getattr(_hub(), info.builder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = builder(**kwargs) if info.builder == "create_x3d" else builder(pretrained=False, **kwargs)
    except (ValueError, RuntimeError, AssertionError, TypeError) as exc:
        raise StlensError(f"cannot build pytorchvideo:{name} with {kwargs or 'defaults'}: {exc}") from exc
    _flexible_pools(model)
    if info.alpha:
        model.register_forward_pre_hook(_slowfast_pre_hook(info.alpha))
    # the spec as given (overrides are applied again by load_model; with_overrides is idempotent)
    return ModelHandle(model, f"pytorchvideo:{name}", info.input, list(info.layers))


def build(target: str, *, weights: str | None = None, frames: int | None = None,
          size: int | None = None) -> ModelHandle:
    """The family API: ``pytorchvideo:<target>`` (see :func:`build_pytorchvideo`); ``weights`` (a checkpoint file) is
    loaded by ``load_model``."""
    return build_pytorchvideo(target, frames=frames, size=size)
