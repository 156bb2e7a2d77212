"""Attribution maps through captum: Grad-CAM at a layer, integrated gradients, saliency or gradient × input at the
input; each turned into a non-negative (T, H, W) map per clip (and per input) that sums to 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens.errors import StlensError

METHODS = ("gradcam", "ig", "saliency", "grad_x_input")
INSTALL = "pip install captum (or pip install 'stlens[explain]')"


def captum_attr() -> Any:
    """``captum.attr``, or a StlensError with the install line."""
    try:
        import captum.attr
    except ImportError:
        raise StlensError(f"`method` needs captum, which is not installed: {INSTALL}") from None
    return captum.attr


def logits_of(output: Any) -> torch.Tensor:
    """The (B, K) class logits of a model output (a tensor, or the first tensor of a tuple/dict/ModelOutput)."""
    if isinstance(output, dict) or hasattr(output, "logits"):
        output = output["logits"] if "logits" in output else next(iter(output.values()))
    if isinstance(output, tuple | list):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise StlensError(f"`model` gives {shape}, not (batch, classes) logits: explain needs a classifier")
    return output


def forward_of(module: nn.Module, precision: str) -> Callable[..., torch.Tensor]:
    """``module``'s forward returning its logits, under autocast for bf16/fp16."""
    def forward(*inputs: torch.Tensor) -> torch.Tensor:
        device = inputs[0].device.type
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device, dtype=dtype):
                return logits_of(module(*inputs)).float()
        return logits_of(module(*inputs))

    return forward


def normalise(raw: np.ndarray) -> np.ndarray:
    """Non-negative maps (B, ...) scaled to sum 1 each (a map with no mass becomes uniform)."""
    raw = np.clip(np.nan_to_num(raw.astype(np.float64)), 0, None)
    total = raw.reshape(len(raw), -1).sum(1).reshape(-1, *[1] * (raw.ndim - 1))
    uniform = np.full_like(raw, 1.0 / max(1, raw[0].size))
    return np.where(total > 0, raw / np.where(total > 0, total, 1), uniform).astype(np.float32)


def attribute(forward: Callable[..., torch.Tensor], module: nn.Module, inputs: tuple[torch.Tensor, ...],
              targets: torch.Tensor, *, method: str, layer: str | None, steps: int, batch_size: int
              ) -> list[np.ndarray]:
    """Per input, the clips' maps (B, T, H, W) float32 summing to 1: Grad-CAM gives one map (for the first input's
    frames and pixels); the input methods sum |attribution| over the input's channels."""
    attr = captum_attr()
    target = targets.tolist()
    inputs = tuple(x.detach().requires_grad_() for x in inputs)
    if method == "gradcam":
        cam = attr.LayerGradCam(forward, module.get_submodule(layer))
        raw = cam.attribute(inputs, target=target, relu_attributions=True)
        if raw.ndim != 5:
            raise StlensError(f"`layer` {layer!r} gives {raw.ndim - 2}-D maps, not (T, H, W): Grad-CAM needs a "
                              f"channels-first 3-D convolutional layer (B, C, T, H, W)")
        up = nn.functional.interpolate(raw.detach().float(), size=tuple(inputs[0].shape[2:]), mode="trilinear",
                                       align_corners=False)
        return [normalise(up[:, 0].cpu().numpy())]
    if method == "ig":
        found = attr.IntegratedGradients(forward).attribute(
            inputs, baselines=tuple(torch.zeros_like(x) for x in inputs), target=target, n_steps=steps,
            internal_batch_size=batch_size)
    elif method == "saliency":
        found = attr.Saliency(forward).attribute(inputs, target=target, abs=True)
    else:
        found = attr.InputXGradient(forward).attribute(inputs, target=target)
    found = found if isinstance(found, tuple) else (found,)
    return [normalise(a.detach().float().abs().sum(1).cpu().numpy()) for a in found]
