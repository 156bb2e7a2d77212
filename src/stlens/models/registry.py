"""Model specs (``<family>:<target>``, e.g. ``torchvision:r3d_18``, ``stlens:i3d?width=16``,
``module:<pkg.mod>:<callable>``) → a ready model with its input spec.

This dispatcher imports no family: ``stlens.core.registry.MODEL_FAMILIES`` maps each spec prefix to the module of its
family, imported on first use, which defines ``build(target, *, weights, frames, size) -> ModelHandle`` and
``names() -> list[str]``. ``InputSpec`` and ``ModelHandle`` live in ``stlens.core`` (re-exported here)."""

from __future__ import annotations

import torch
from torch import nn

from stlens.core import registry
from stlens.core.device import DEVICE_FORMS, resolve_device  # noqa: F401  (this module's interface)
from stlens.core.handle import ModelHandle
from stlens.core.spec import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD, InputSpec
from stlens.errors import StlensError
from stlens.models.offline import offline_scope
from stlens.models.weights import load_state_dict, read_state_dict


def _resolve_weights(weights: str, spec: str) -> str:
    """A weights argument → a file: ``bundled:<name>`` is a checkpoint shipped in the package (it must belong to the
    same zoo model as ``spec``); anything else is a path."""
    from stlens.models.bundled import PREFIX, bundled_path, check_bundled_fits

    if weights.startswith(PREFIX):
        path = bundled_path(weights)
        check_bundled_fits(weights, spec)
        return str(path)
    return weights


def _unknown_spec(spec: str) -> StlensError:
    forms = [getattr(registry.model_family(prefix), "SPEC_FORM", f"{prefix}:<name>")
             for prefix in registry.names("model")]
    return StlensError(f"unknown model spec '{spec}'; use {', '.join(forms[:-1])} or {forms[-1]}")


def load_model(spec: str, weights: str | None = None, frames: int | None = None, size: int | None = None,
               device: str | torch.device | None = None, offline: bool | None = None) -> ModelHandle:
    """Build a model from a spec, load its weights and put it in eval mode on ``device``.

    A torchvision weights name missing from the torch hub cache is downloaded into it, and an ``hf:`` hub id into
    the Hugging Face cache, unless offline (``stlens.models.offline``).

    Args:
        spec: the model spec (``torchvision:r3d_18``, ``stlens:i3d?classes=8``, ``hf:...``; ``list_models``).
        weights: a weights file, ``bundled:NAME`` or a torchvision weights name; None: the spec's own (random for
            an untrained spec).
        frames: override the frames per clip of the model's input spec.
        size: override the crop size of the model's input spec.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:K`` or ``mps`` (see ``resolve_device``); None: the CPU, where it
            is built.
        offline: never download (True), allow downloads whatever the environment says (False), or as the
            environment says (None: ``STLENS_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` mean offline).

    Returns:
        The ``ModelHandle``: the module in eval mode, its input spec and default layers.

    Examples:
        >>> handle = stlens.load_model("stlens:c2d?classes=8&width=4", weights=None, frames=4, size=16)
        >>> handle.module.training, handle.input.frames
        (False, 4)
    """
    target_device = None if device is None else resolve_device(device)  # checked before any work
    prefix, _, target = spec.partition(":")
    if prefix not in registry.MODEL_FAMILIES:
        raise _unknown_spec(spec)
    with offline_scope(offline):
        handle = registry.model_family(prefix).build(target, weights=weights, frames=frames, size=size)
    if weights is not None and handle.weights is None:
        advice = ("reinstall stlens (a bundled weights file is damaged)" if weights.startswith("bundled:")
                  else "copy or download the weights file again")
        load_state_dict(handle.module, read_state_dict(_resolve_weights(weights, spec), advice), weights)
        handle.weights = weights
    handle.input = handle.input.with_overrides(frames, size)
    handle.module.eval()
    if target_device is not None:
        handle.module.to(target_device)
    return handle


def list_models(family: str | None = None) -> list[str]:
    """The full spec of every model of the installed families.

    Family by family in registry order (``torchvision:r3d_18``, …, ``stlens:i3d``, …, ``pytorchvideo:x3d_xs``, …).
    Families with optional dependencies list nothing when those are missing; ``module:`` lists nothing (any
    importable factory is a spec).

    Args:
        family: list only this family's models (``stlens``, ``torchvision``, …); None: every family.

    Returns:
        The model specs, as ``load_model`` takes them.

    Examples:
        >>> "stlens:i3d" in stlens.list_models("stlens")
        True
    """
    prefixes = registry.names("model") if family is None else [family.removesuffix(":")]
    return [name for prefix in prefixes for name in registry.model_family(prefix).names()]


def as_handle(model: nn.Module | ModelHandle) -> ModelHandle:
    """Wrap a bare module (user code) into a handle with its top-level children as default layers."""
    if isinstance(model, ModelHandle):
        return model
    if not isinstance(model, nn.Module):
        raise StlensError(f"expected an nn.Module or ModelHandle, got {type(model).__name__}")
    return ModelHandle(model, type(model).__name__, InputSpec(), [n for n, _ in model.named_children()],
                       spec_known=False)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "KINETICS_MEAN", "KINETICS_STD", "InputSpec", "ModelHandle", "as_handle",
           "list_models", "load_model", "resolve_device"]
