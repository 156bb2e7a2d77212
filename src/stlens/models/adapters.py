"""Adapters for user models whose forward does not take one (B,3,T,H,W) clip: several inputs, keyword arguments.

The measure loop calls ``module(clip)`` (or ``module(rgb, flow)`` for (rgb, flow) pairs). These helpers register a
forward *pre-hook* that rewrites the call, so the module itself (and its ``named_modules()`` layer names) is unchanged:

>>> adapt_inputs(model, lambda clip: ((clip[:, :, ::4], clip), {}))   # doctest: +SKIP  two inputs from one clip
>>> keyword_inputs(model, "pixel_values", output_hidden_states=True)  # doctest: +SKIP  forward(pixel_values=...)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from stlens.errors import StlensError


def adapt_inputs(module: nn.Module, fn: Callable, inputs: int = 1) -> nn.Module:
    """Make ``module(*x)`` call ``module(*args, **kwargs)`` with ``(args, kwargs) = fn(*x)``.

    ``fn`` may also return a tuple of positional inputs or a dict of keyword inputs. ``inputs`` is how many inputs the
    adapted module takes from stlens: 1 (a clip) or 2 ((rgb, flow) pairs). Returns ``module`` (hooked).
    """

    def hook(_module, args, kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, dict):
            return (), out
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], tuple) and isinstance(out[1], dict):
            return out
        if isinstance(out, tuple):
            return out, {}
        return (out,), {}

    module.register_forward_pre_hook(hook, with_kwargs=True)
    module.stlens_inputs = inputs  # read by the measure loop's (rgb, flow) auto-detection
    return module


def keyword_inputs(module: nn.Module, *names: str, **fixed) -> nn.Module:
    """Make the positional inputs of ``module(...)`` keyword arguments ``names`` (in order), plus ``fixed`` ones;
    two names mean the module takes (rgb, flow) pairs."""
    if not names:
        raise StlensError("keyword_inputs needs at least one argument name")

    def to_keywords(*args, **kwargs):
        if len(args) > len(names):
            raise StlensError(f"{type(module).__name__} got {len(args)} inputs for keyword names {names}")
        return {**fixed, **dict(zip(names, args, strict=False)), **kwargs}

    return adapt_inputs(module, to_keywords, inputs=min(len(names), 2))
