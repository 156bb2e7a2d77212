"""Objectives: small callables over captured activations that compose with ``+``, ``-`` and scalar ``*``.

An objective maps ``acts`` — a dict ``{layer name: tensor (B, ...)}`` of un-pooled layer outputs, plus ``"logits"`` for
the model output — to one value per batch element, shape (B,). The optimizer *maximizes* it. During batched rendering
each target's objective is evaluated on its own batch element only (``acts`` sliced to ``[k:k+1]``).

Layouts: 5-D (B, C, T, H, W) and 4-D (B, C, H, W) are channels-first; 3-D tokens (B, N, D) have channels last; 2-D
(B, C) is a vector per element (logits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from stlens.errors import StlensError

LOGITS = "logits"
"""The key of the model output in ``acts``."""

Acts = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """``fn(acts) -> (B,)`` with a readable ``name`` and the ``layers`` it reads (so only those are captured)."""

    fn: Callable[[Acts], torch.Tensor]
    name: str
    layers: tuple[str, ...] = field(default=())

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return Objective(lambda a: self(a) + other(a), f"{self.name} + {other.name}",
                             _merge(self.layers, other.layers))
        value = float(other)
        return Objective(lambda a: self(a) + value, f"{self.name} + {value:g}", self.layers)

    def __radd__(self, other: float) -> Objective:  # sum([...]) starts from 0
        return self if other == 0 else self + other

    def __neg__(self) -> Objective:
        return Objective(lambda a: -self(a), f"-({self.name})", self.layers)

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, scale: float) -> Objective:
        if isinstance(scale, Objective):
            raise TypeError("objectives multiply by scalars only")
        value = float(scale)
        return Objective(lambda a: value * self(a), f"{value:g}·({self.name})", self.layers)

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> Objective:
        return self * (1.0 / float(scale))


def _merge(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def _get(acts: Acts, layer: str) -> torch.Tensor:
    if layer not in acts:
        raise StlensError(f"layer '{layer}' was not captured; captured: {', '.join(acts) or 'none'}")
    return acts[layer]


def _channel_axis(x: torch.Tensor) -> int:
    return x.ndim - 1 if x.ndim == 3 else 1


def check_channel(x: torch.Tensor, layer: str, index: int) -> None:
    """Raise a StlensError when ``index`` is not a channel of ``layer``'s output ``x``."""
    channels = x.shape[_channel_axis(x)]
    if not 0 <= index < channels:
        raise StlensError(f"channel {index} is out of range for layer '{layer}' "
                          f"({channels} channels: 0-{channels - 1})")


def channel_map(x: torch.Tensor, index: int) -> torch.Tensor:
    """The activations of one channel: (B, *positions)."""
    return x[..., index] if x.ndim == 3 else x[:, index]


def channel(layer: str, index: int) -> Objective:
    """Mean over all positions (T, H, W; tokens) of channel ``index`` of ``layer``."""

    def fn(acts: Acts) -> torch.Tensor:
        x = _get(acts, layer)
        check_channel(x, layer, index)
        values = channel_map(x, index)
        return values.flatten(1).mean(dim=1) if values.ndim > 1 else values

    return Objective(fn, f"channel {layer}:{index}", (layer,))


def neuron(layer: str, index: int, t: int | None = None, y: int | None = None, x: int | None = None) -> Objective:
    """One unit: channel ``index`` at position (t, y, x) of a (B, C, T, H, W) output, the centre by default (for 4-D
    outputs ``t`` is ignored; for tokens (B, N, D) ``t`` is the token index)."""

    def fn(acts: Acts) -> torch.Tensor:
        out = _get(acts, layer)
        check_channel(out, layer, index)
        values = channel_map(out, index)
        sizes = values.shape[1:]
        named = {3: (("t", t), ("y", y), ("x", x)), 2: (("y", y), ("x", x)), 1: (("t", t),), 0: ()}[len(sizes)]
        position = []
        for (name, pos), size in zip(named, sizes, strict=True):
            pos = size // 2 if pos is None else pos
            if not 0 <= pos < size:
                raise StlensError(f"neuron position {name}={pos} is out of range for layer '{layer}' (size {size})")
            position.append(pos)
        return values[(slice(None), *position)]

    where = ",".join("c" if v is None else str(v) for v in (t, y, x))
    return Objective(fn, f"neuron {layer}:{index}@{where}", (layer,))


def class_logit(index: int) -> Objective:
    """The pre-softmax score of class ``index`` (the model output)."""

    def fn(acts: Acts) -> torch.Tensor:
        logits = _get(acts, LOGITS)
        if logits.ndim != 2:
            raise StlensError(f"class objectives need (B, classes) logits, the model returns {tuple(logits.shape)}")
        if not 0 <= index < logits.shape[1]:
            raise StlensError(f"class {index} is out of range ({logits.shape[1]} classes: 0-{logits.shape[1] - 1})")
        return logits[:, index]

    return Objective(fn, f"class {index}", (LOGITS,))


def direction(layer: str, vector: Sequence[float] | torch.Tensor) -> Objective:
    """Mean over positions of the dot product between the activation vector and ``vector`` (channel space)."""
    vec = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def fn(acts: Acts) -> torch.Tensor:
        out = _get(acts, layer)
        axis = _channel_axis(out)
        if out.shape[axis] != vec.numel():
            raise StlensError(f"direction has {vec.numel()} entries but layer '{layer}' has {out.shape[axis]} "
                              f"channels")
        moved = out.movedim(axis, -1) if out.ndim > 2 else out
        dots = moved @ vec.to(moved.dtype)
        return dots.flatten(1).mean(dim=1) if dots.ndim > 1 else dots

    return Objective(fn, f"direction {layer}", (layer,))
