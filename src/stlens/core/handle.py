"""``ModelHandle``: a model with what stlens needs to know about it — input spec, default layers, how many input
tensors its forward takes (1: a clip; 2: ``(rgb, flow)``) and the memory layout of each layer's output."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from stlens.core.spec import InputSpec

#: layer name → "channels_first" (B, C, ...) or "channels_last" (B, ..., C)
Layout = Callable[[str], str]


def channels_first(_name: str) -> str:
    return "channels_first"


def all_layers(model: nn.Module) -> list[str]:
    """Every named submodule, in registration order."""
    return [name for name, _ in model.named_modules() if name]


def input_count(module: nn.Module) -> int:
    """How many tensors ``module.forward`` takes: an explicit ``module.stlens_inputs`` (set by
    ``stlens.models.adapters.adapt_inputs``) wins; otherwise 2 when the forward has two or more required positional
    parameters (a two-stream ``forward(rgb, flow)``), else 1."""
    declared = getattr(module, "stlens_inputs", None)
    if declared is not None:
        return int(declared)
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return 2 if len(params) >= 2 else 1


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` lives: the device of its first parameter, else of its first buffer, else the CPU."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def takes_two_inputs(module: nn.Module) -> bool:
    """True for two-stream models whose forward takes ``(rgb, flow)``."""
    return input_count(module) == 2


@dataclass
class ModelHandle:
    """A model ready for measuring: the module in eval mode, its input spec, default layers and output layout.

    ``stlens.load_model`` builds one from a spec; every verb that takes a model accepts one.

    Args:
        module: the ``nn.Module`` itself.
        spec: the model's spec string (``stlens:i3d?classes=8``), as checkpoints and run folders name it.
        input: how clips are sampled and normalized for it (``InputSpec``).
        default_layers: the layers measured when ``layers="default"``.
        weights: the weights loaded into it (a file, ``bundled:NAME`` or a torchvision weights name), or None.
        layout: where each layer's channel axis is (channels first, or last for token outputs).
        spec_known: False for a bare module wrapped by ``as_handle`` (its ``input`` is then a placeholder).

    Examples:
        >>> handle = stlens.load_model("stlens:c2d?classes=8&width=4", frames=4, size=16)
        >>> handle.spec, handle.input.frames, handle.input.size
        ('stlens:c2d?classes=8&width=4', 4, 16)
        >>> handle.default_layers
        ['stem', 'stage1', 'stage2', 'stage3', 'stage4']
    """

    module: nn.Module
    spec: str
    input: InputSpec
    default_layers: list[str]
    weights: str | None = None
    layout: Layout = channels_first
    spec_known: bool = True  # False for a bare module wrapped by ``as_handle`` (its InputSpec is a placeholder)

    @property
    def inputs(self) -> int:
        """How many input tensors the model takes: 1 (a clip) or 2 (``rgb, flow``)."""
        return input_count(self.module)

    @property
    def device(self) -> torch.device:
        """The device of the model's first parameter (or buffer); the CPU for a module that has neither."""
        return module_device(self.module)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the right shapes, on the model's device: ``(clip,)`` with clip (B, 3, T, S, S), or
        ``(rgb, flow)`` with flow (B, 2, T − 1, S, S) for two-stream models."""
        spec = self.input
        device = self.device
        rgb = torch.zeros(batch, 3, spec.frames, spec.size, spec.size, device=device)
        if self.inputs == 1:
            return (rgb,)
        return rgb, torch.zeros(batch, 2, max(1, spec.frames - 1), spec.size, spec.size, device=device)

    def layers(self, request: str | list[str] | None) -> list[str]:
        """Resolve ``default``, ``all``, a comma-separated string or a list into layer names."""
        if request is None or request == "default":
            return list(self.default_layers)
        if request == "all":
            return all_layers(self.module)
        if isinstance(request, str):
            request = [name.strip() for name in request.split(",") if name.strip()]
        return list(request)
