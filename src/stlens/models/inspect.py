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
    return (f"{handle.spec} has random weights (no `weights` given): this measures an untrained network, not what "
            f"a trained model encodes; pass `weights` FILE (or a torchvision weights name, or bundled:NAME)")


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


def describe_layers(handle: ModelHandle, shapes: dict[str, list[tuple[str, tuple[int, ...]]]] | None = None) -> str:
    """A text table: layer, module type, output shape(s) (``layer_shapes``, measured when not given); default layers
    are marked with '*'."""
    shapes = layer_shapes(handle) if shapes is None else shapes
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


class LayerTable(dict):
    """``stlens.layers``: each named module → the shapes of the tensors it outputs in one dry run (a dict of
    ``name → [(latent name, shape), ...]``); ``default`` lists the default layers, and printing it shows the table
    of ``stlens layers``."""

    def __init__(self, handle: ModelHandle):
        super().__init__(layer_shapes(handle))
        self.default = list(handle.default_layers)
        self._text = describe_layers(handle, dict(self))

    def __repr__(self) -> str:
        return self._text

    __str__ = __repr__


def layers(model, *, weights: str | None = None, frames: int | None = None, size: int | None = None,
           device: str | torch.device | None = None, offline: bool | None = None) -> LayerTable:
    """The hookable layers of ``model`` with their output shapes, from one forward pass on a dummy clip.

    Args:
        model: a spec string, an ``nn.Module`` or a ``ModelHandle``.
        weights: the weights of a spec string (as for every verb).
        frames: frames per clip of the dummy clip (default: the model's).
        size: crop size of the dummy clip (default: the model's).
        device: where to run the dry forward (``auto``, ``cpu``, ``cuda[:K]``, ``mps``; None: where it is built).
        offline: never download weights (True), allow downloads (False) or as the environment says (None).

    Returns:
        A ``LayerTable``: a dict of layer name → ``[(latent name, shape), ...]`` whose ``default`` lists the default
        layers; print it for the table (``*`` marks the default layers).

    Examples:
        >>> table = stlens.layers("stlens:c2d?classes=8&width=4", frames=4, size=16)
        >>> table.default
        ['stem', 'stage1', 'stage2', 'stage3', 'stage4']
        >>> table["stage4"]
        [('stage4', (1, 32, 4, 1, 1))]
    """
    from stlens.models.registry import as_handle, load_model

    if isinstance(model, str):
        kwargs = {} if offline is None else {"offline": offline}
        handle = load_model(model, weights, frames=frames, size=size, device=device, **kwargs)
    else:
        handle = as_handle(model)
        if frames is not None or size is not None:
            handle.input = handle.input.with_overrides(frames, size)
    return LayerTable(handle)
