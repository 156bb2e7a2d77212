"""Silencing channels of a layer with a forward hook: ``zero`` (Kowal et al.) or ``mean`` (each masked channel
replaced by one scalar, its mean over the clips and every position, taken in the unmasked baseline pass).

The channel axis of a layer's output follows the model handle's layout: (B, C, T, H, W) and (B, C, H, W) outputs
have it at 1 (``channels_first``) or last (``channels_last``), tokens (B, N, D) last, (B, C) vectors at 1. A layer of
units.csv is a module name, or ``module.i`` for element i of a module's tuple/list output (as ``LayerTaps`` names
them). Only the selected channels change: every other value of the output is left bit-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stlens.core.handle import Layout, channels_first
from stlens.errors import StlensError

MODES = ("zero", "mean")


@dataclass(frozen=True)
class Target:
    """Where a units.csv layer lives: the module, and the element of its tuple/list output (None: the output)."""

    layer: str
    module: str
    element: int | None = None


def find_target(model: nn.Module, layer: str) -> Target:
    """The module (and output element) of a units.csv layer name, else a ``StlensError`` naming the layer."""
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return Target(layer, layer)
    base, _, tail = layer.rpartition(".")
    if base in modules and tail.isdigit():
        return Target(layer, base, int(tail))
    if "@" in layer:
        raise StlensError(f"layer '{layer}': masking one call of a module called several times per forward is not "
                          f"supported; mask the module's own layer instead")
    raise StlensError(f"layer '{layer}' is not a module of the model (nor element i of one's output as "
                      f"'module.i'); see `stlens layers SPEC`")


def channel_axis(shape: Sequence[int], layout: str, layer: str) -> int:
    """The channel axis of an output of ``shape``, else a ``StlensError`` saying the layer has none."""
    ndim = len(shape)
    if ndim in (4, 5):
        return ndim - 1 if layout == "channels_last" else 1
    if ndim == 3:
        return 2
    if ndim == 2:
        return 1
    raise StlensError(f"layer '{layer}' gives an output of shape {tuple(shape)}: no channel axis to mask "
                      f"(expected (B, C, T, H, W), (B, C, H, W), tokens (B, N, D) or (B, C))")


def _pick(output, target: Target) -> torch.Tensor:
    if target.element is None:
        tensor = output
    elif isinstance(output, (tuple, list)) and target.element < len(output):
        tensor = output[target.element]
    else:
        raise StlensError(f"layer '{target.layer}': module '{target.module}' did not give a tuple/list output with "
                          f"an element {target.element}")
    if not isinstance(tensor, torch.Tensor):
        raise StlensError(f"layer '{target.layer}' gives {type(tensor).__name__}, not a tensor: nothing to mask")
    return tensor


def _put(output, target: Target, tensor: torch.Tensor):
    if target.element is None:
        return tensor
    items = list(output)
    items[target.element] = tensor
    return type(output)(items) if isinstance(output, tuple) else items


def masked(x: torch.Tensor, axis: int, channels: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """``x`` with ``channels`` along ``axis`` set to 0 (``values`` None) or to ``values[c]`` per channel."""
    if values is None:
        return x.index_fill(axis, channels, 0)
    shape = [1] * x.ndim
    shape[axis] = len(channels)
    fill = values.to(device=x.device, dtype=x.dtype).reshape(shape).expand(
        *[len(channels) if d == axis else n for d, n in enumerate(x.shape)])
    return x.index_copy(axis, channels, fill.contiguous())


@dataclass
class ChannelMask:
    """One layer's mask: the channels to silence and, in ``mean`` mode, the value of each channel (C,)."""

    target: Target
    channels: Sequence[int]
    mode: str = "zero"
    means: torch.Tensor | None = None  # (C,) float32: every channel's baseline mean (mean mode)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise StlensError(f"`mode` must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "mean" and self.means is None:
            raise StlensError("mean mode needs the channels' means of the baseline pass")


def _index(channels: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(list(channels), dtype=torch.long, device=device)


@contextlib.contextmanager
def masking(model: nn.Module, masks: Sequence[ChannelMask], layout: Layout = channels_first,
            expected: dict[str, int] | None = None) -> Iterator[None]:
    """Inside the block, every forward of ``model`` silences the channels of ``masks``. ``expected``: the channel
    count of each layer as measured (units.csv); an output with another count raises a ``StlensError``."""
    modules = dict(model.named_modules())
    handles = []

    def hook_for(mask: ChannelMask) -> Callable:
        def hook(_module, _inputs, output):
            x = _pick(output, mask.target)
            axis = channel_axis(x.shape, layout(mask.target.layer), mask.target.layer)
            _check_channels(mask.target.layer, x.shape[axis], expected)
            index = _index(mask.channels, x.device)
            values = None if mask.mode == "zero" else mask.means[index.cpu()]
            return _put(output, mask.target, masked(x, axis, index, values))

        return hook

    try:
        for mask in masks:
            handles.append(modules[mask.target.module].register_forward_hook(hook_for(mask)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_channels(layer: str, found: int, expected: dict[str, int] | None) -> None:
    if expected is not None and layer in expected and expected[layer] != found:
        raise StlensError(f"layer '{layer}' has {found} channels but the units.csv of `from_run` lists "
                          f"{expected[layer]}: it was measured on another model or layer set")


class ChannelMeans:
    """Per-channel means of layers' outputs over every clip and position, gathered by hooks in the baseline pass
    (float64 sums; a channel's mean = its sum / the values it had)."""

    def __init__(self, model: nn.Module, targets: Sequence[Target], layout: Layout = channels_first,
                 expected: dict[str, int] | None = None):
        self.model, self.targets, self.layout, self.expected = model, list(targets), layout, expected
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def _hook(self, target: Target) -> Callable:
        def hook(_module, _inputs, output):
            x = _pick(output, target)
            axis = channel_axis(x.shape, self.layout(target.layer), target.layer)
            _check_channels(target.layer, x.shape[axis], self.expected)
            dims = [d for d in range(x.ndim) if d != axis]
            total = x.detach().double().sum(dim=dims).cpu()
            self.sums[target.layer] = self.sums.get(target.layer, 0) + total
            self.counts[target.layer] = self.counts.get(target.layer, 0) + int(np.prod([x.shape[d] for d in dims]))
            self.shapes[target.layer] = tuple(x.shape)

        return hook

    @contextlib.contextmanager
    def gathering(self) -> Iterator[ChannelMeans]:
        modules = dict(self.model.named_modules())
        handles = [modules[t.module].register_forward_hook(self._hook(t)) for t in self.targets]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def means(self, layer: str) -> torch.Tensor:
        """(C,) float32 means of ``layer`` (after at least one forward)."""
        if layer not in self.sums:
            raise StlensError(f"layer '{layer}' was not called in the baseline forward: nothing to take means of")
        return (self.sums[layer] / self.counts[layer]).float()


def probe_shapes(model: nn.Module, targets: Sequence[Target], inputs, layout: Layout = channels_first
                 ) -> dict[str, tuple[int, ...]]:
    """The output shape of each target in one forward of ``inputs`` (no grad), each with a channel axis, else a
    ``StlensError`` naming the layer."""
    means = ChannelMeans(model, targets, layout)
    with torch.inference_mode(), means.gathering():
        model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    missing = [t.layer for t in targets if t.layer not in means.shapes]
    if missing:
        raise StlensError(f"layer '{missing[0]}' was not called in the model's forward: nothing to mask")
    return means.shapes
