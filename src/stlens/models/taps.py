"""Forward hooks that pool each tapped layer's output to one vector per video, all layers in one forward pass."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from stlens.core.handle import Layout, all_layers, channels_first
from stlens.errors import StlensError

log = logging.getLogger("stlens")

__all__ = ["Layout", "LayerTaps", "all_layers", "channels_first", "pool_tensor"]


def pool_tensor(x: torch.Tensor, layout: str = "channels_first") -> torch.Tensor:
    """Pool one output tensor to (B, C) in float32.

    5-D (B,C,T,H,W) → mean over T,H,W; 4-D (B,C,H,W) → mean over H,W; tokens (B,N,D) → mean over N; (B,C) as is.
    With ``layout == "channels_last"`` 4-D/5-D tensors are (B,...,C).
    """
    x = x.detach()
    if x.ndim == 2:
        return x.float()
    if x.ndim == 3:
        return x.float().mean(dim=1)
    if x.ndim in (4, 5):
        dims = tuple(range(1, x.ndim - 1)) if layout == "channels_last" else tuple(range(2, x.ndim))
        return x.float().mean(dim=dims)
    raise StlensError(f"cannot pool an output of shape {tuple(x.shape)} (expected 2-D to 5-D)")


def flatten_output(name: str, output) -> list[tuple[str, torch.Tensor]]:
    """Name the tensors in a layer output: a tensor keeps the layer name, a list/tuple gives ``name.i`` per tensor
    element, a dict ``name.key``. A tuple with exactly one tensor (e.g. MViT's ``(x, thw)``) keeps the layer name."""
    if isinstance(output, torch.Tensor):
        return [(name, output)]
    if isinstance(output, dict):
        items = [(f"{name}.{k}", v) for k, v in output.items()]
    elif isinstance(output, (list, tuple)):
        items = [(f"{name}.{i}", v) for i, v in enumerate(output)]
    else:
        return []
    tensors = [(n, v) for n, v in items if isinstance(v, torch.Tensor)]
    if len(tensors) == 1 and isinstance(output, tuple) and len(items) > 1:
        return [(name, tensors[0][1])]
    out: list[tuple[str, torch.Tensor]] = []
    for n, v in tensors:
        out.extend(flatten_output(n, v))
    return out


def resolve_layers(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """Check that every requested layer is a dotted ``named_modules()`` path; suggest the closest names if not."""
    known = {name for name, _ in model.named_modules() if name}
    resolved = []
    for layer in layers:
        if layer not in known:
            close = difflib.get_close_matches(layer, sorted(known), n=6, cutoff=0.4)
            hint = ", ".join(close) if close else ", ".join(sorted(known, key=len)[:8])
            raise StlensError(f"unknown layer '{layer}'; closest names: {hint} (see `stlens layers SPEC`)")
        resolved.append(layer)
    if not resolved:
        raise StlensError("no layers to tap")
    return list(dict.fromkeys(resolved))


def asked_by_name(request: str | list[str] | None) -> bool:
    """True when layers were named by the user (not ``default``/``all``): a layer that gives nothing usable is then
    an error, not a warning."""
    return request is not None and request not in ("default", "all")


def _non_finite(latent_name: str) -> StlensError:
    return StlensError(f"non-finite (NaN/inf) activations in layer '{latent_name}'")


def _kind(output) -> str:
    if output is None:
        return "None"
    if isinstance(output, (list, tuple, dict)):
        return f"a {type(output).__name__} without tensors"
    return f"a {type(output).__name__}"


class LayerTaps:
    """Context manager that records the pooled output of each requested module during a forward pass.

    After a forward, ``latents`` maps latent names (the layer name, or ``layer.i``/``layer.key`` for list/dict outputs,
    ``layer@k`` for the k-th call of a module called more than once per forward) to (B, C) float32 tensors, pooled in
    the hook on the layer's device (only these small tensors are kept). Non-finite activations raise an error naming
    the layer: in the hook on the CPU; for latents on an accelerator (cuda, mps) in ``checked``, all layers with one
    synchronisation instead of one per layer.

    With ``reset(batch=B)`` an output whose first axis is not the B videos of the batch (e.g. attention over
    (B·T, N, D) frame tokens) is not pooled; such outputs, outputs that hold no tensor or cannot be pooled, and layers
    never called in the forward are named with the reason in ``unusable()`` (see ``checked``).

    Args:
        model: the module to hook.
        layers: dotted ``named_modules`` paths of the layers to record.
        layout: where each layer's channel axis is (a function of the layer name; default channels first).
        check_finite: raise an error naming the layer when its output holds NaN or infinity.
        keep: layers whose unpooled outputs are kept too, in ``outputs`` (latent name → the detached tensor; e.g. the
            (B, Q, D) query embeddings of a VIS decoder, for the per-instance measurement).

    Examples:
        >>> import torch
        >>> handle = stlens.load_model("stlens:c2d?classes=8&width=4", frames=4, size=16)
        >>> with stlens.LayerTaps(handle.module, ["stage4"]) as taps:
        ...     _ = handle.module(torch.zeros(2, 3, 4, 16, 16))
        >>> taps.latents["stage4"].shape
        torch.Size([2, 32])
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], layout: Layout = channels_first,
                 check_finite: bool = True, keep: Sequence[str] = ()):
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.keep = set(keep)
        self.outputs: dict[str, torch.Tensor] = {}
        self.layout = layout
        self.check_finite = check_finite
        self.latents: dict[str, torch.Tensor] = {}
        self.batch: int | None = None
        self.problems: dict[str, tuple[str, str]] = {}  # latent name → (why, detail) in the last forward
        self.skipped: dict[str, str] = {}  # left out by ``checked`` (name → why)
        self._checked = False
        self._calls: dict[str, int] = {}
        self._handles: list = []

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            count = self._calls.get(name, 0) + 1
            self._calls[name] = count
            base = name if count == 1 else f"{name}@{count}"
            tensors = flatten_output(base, output)
            if not tensors:
                self.problems[base] = (f"the output is {_kind(output)}, not a tensor", "")
            for latent_name, tensor in tensors:
                shape = str(tuple(tensor.shape))
                if self.batch is not None and (tensor.ndim == 0 or tensor.shape[0] != self.batch):
                    self.problems[latent_name] = (
                        f"the output's first axis is not the {self.batch} videos of the batch (frames or tokens "
                        f"folded into it, e.g. inside attention)", shape)
                    continue
                if self.batch is not None and not 2 <= tensor.ndim <= 5:
                    self.problems[latent_name] = ("the output cannot be pooled (expected 2-D to 5-D)", shape)
                    continue
                pooled = pool_tensor(tensor, self.layout(name))
                if self.check_finite and pooled.device.type == "cpu" and not torch.isfinite(pooled).all():
                    raise _non_finite(latent_name)
                self.latents[latent_name] = pooled
                if name in self.keep:
                    self.outputs[latent_name] = tensor.detach()

        return hook

    def reset(self, batch: int | None = None) -> None:
        """Clear the latents before a forward; ``batch``: the number of videos in it (checked against each output's
        first axis)."""
        self.latents = {}
        self.outputs = {}
        self.problems = {}
        self._calls = {}
        self.batch = batch

    def unusable(self) -> dict[str, str]:
        """Requested layers (or latents of them) that gave nothing usable in the last forward, with why."""
        return {name: f"{why} {detail}" if detail else why for name, (why, detail) in self._unusable().items()}

    def _unusable(self) -> dict[str, tuple[str, str]]:
        found = {name: ("never called in the forward", "") for name in self.layers if name not in self._calls}
        return found | self.problems

    def checked(self, strict: bool) -> dict[str, torch.Tensor]:
        """The latents of the last forward, after checking what every requested layer gave.

        The first call decides: layers that gave nothing usable (``unusable()``) raise a ``StlensError`` naming them
        when ``strict`` (the layers were asked for by name), else they are left out with one warning listing them
        (kept in ``skipped``); a ``StlensError`` too when no layer is left. Later calls leave out the same ones and
        raise when another layer stops giving a usable output."""
        self._check_finite_on_device()
        bad = {name: entry for name, entry in self._unusable().items() if name not in self.skipped}
        if bad and (strict or self._checked or not self.latents):
            listed = "; ".join(f"'{name}'" + (f" {detail}" if detail else "") + f": {why}"
                               for name, (why, detail) in bad.items())
            raise StlensError(f"cannot measure layer(s) {listed}. Choose other layers (`stlens layers SPEC` lists "
                              f"every layer with its output shape)")
        if bad:
            self.skipped.update({name: why for name, (why, _) in bad.items()})
            groups: dict[str, list[str]] = {}
            for name, (why, detail) in bad.items():
                groups.setdefault(why, []).append(f"{name} {detail}" if detail else name)
            log.warning("skipping %d of %d layer(s), which give no per-video tensor to measure: %s", len(bad),
                        len(self.layers), "; ".join(f"{why}: {', '.join(names)}" for why, names in groups.items()))
        self._checked = True
        return self.latents

    def _check_finite_on_device(self) -> None:
        """The non-finite check of latents pooled on an accelerator, deferred from the hooks: one wait for the device
        for all layers."""
        on_device = [(name, x) for name, x in self.latents.items() if x.device.type != "cpu"]
        if not self.check_finite or not on_device:
            return
        finite = torch.stack([torch.isfinite(x).all() for _, x in on_device]).cpu().tolist()
        for (name, _), ok in zip(on_device, finite, strict=True):
            if not ok:
                raise _non_finite(name)

    def __enter__(self) -> LayerTaps:
        self.skipped = {}
        self._checked = False
        modules = dict(self.model.named_modules())
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
