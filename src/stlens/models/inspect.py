"""``stlens layers``: every hookable module with its output shape(s), from one dry run on a dummy clip."""

from __future__ import annotations

import torch

from stlens.core import registry
from stlens.core.handle import ModelHandle
from stlens.models.taps import flatten_output


def _builds_random_weights(spec: str) -> bool:
    """Whether the family of ``spec`` builds random weights unless weights are given: a family module says so with
    ``RANDOM_WEIGHTS = True`` (``module:`` specs may return a trained model: that cannot be known)."""
    prefix = spec.partition(":")[0]
    if prefix not in registry.MODEL_FAMILIES:
        return False
    return bool(getattr(registry.model_family(prefix), "RANDOM_WEIGHTS", False))


def random_init(handle: ModelHandle) -> bool | None:
    """True when ``handle`` holds randomly initialized weights (no weights were loaded into a family that builds
    random ones; zoo models built with their own trained weights, like ``pretrained=true``, are not); None when it
    cannot be known (``module:`` specs, bare modules)."""
    if not _builds_random_weights(handle.spec):
        return None
    if handle.weights is not None:
        return False
    options = (getattr(handle.module, "stlens_config", None) or {}).get("options") or {}
    return not options.get("pretrained", False)


def random_init_warning(handle: ModelHandle) -> str:
    """The loud line said when a measurement is of an untrained network."""
    return (f"{handle.spec} has random weights (no --weights given): this measures an untrained network, not what "
            f"a trained model encodes; pass --weights FILE (or a torchvision weights name, or bundled:NAME)")


def layer_shapes(handle: ModelHandle) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """For each named module: the (latent name, shape) of the tensors it outputs in one forward pass."""
    shapes: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    handles = []
    for name, module in handle.module.named_modules():
        if not name:
            continue

        def hook(_m, _i, output, name=name):
            entries = shapes.setdefault(name, [])
            entries.extend((n, tuple(t.shape)) for n, t in flatten_output(name, output))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            handle.module.eval()(*handle.example_inputs())
    finally:
        for h in handles:
            h.remove()
    return shapes


def describe_layers(handle: ModelHandle) -> str:
    """A text table: layer, module type, output shape(s); default layers are marked with '*'."""
    shapes = layer_shapes(handle)
    modules = dict(handle.module.named_modules())
    shapes_in = " + ".join(str(tuple(x.shape)) for x in handle.example_inputs())
    what = "inputs (rgb, flow)" if handle.inputs == 2 else "input"
    lines = [f"{handle.spec}: {what} {shapes_in}; * = default layer", ""]
    width = max(len(n) for n in modules if n) + 2
    for name, module in modules.items():
        if not name:
            continue
        outs = shapes.get(name)
        shown = "not called" if not outs else ", ".join(
            str(s) if n == name else f"{n.removeprefix(name)}={s}" for n, s in outs)
        mark = "*" if name in handle.default_layers else " "
        lines.append(f"{mark} {name:<{width}}{type(module).__name__:<28}{shown}")
    return "\n".join(lines)
