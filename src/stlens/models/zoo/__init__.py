"""The small reference zoo, ``stlens:<name>[?option=value&...]``: video nets of 0.2–3 M parameters, one per family,
that train on a CPU at 16×64×64 clips and accept other T, H, W (adaptive pooling, resized position embeddings).

========== ===================================================== =====================================
name       family                                                default layers
========== ===================================================== =====================================
c2d        per-frame 2-D ResNet, mean over time (order-blind)    stem, stage1–4
i3d        3-D ResNet (3×3×3), temporal stride in stages 3–4     stem, stage1–4
r2plus1d   (2+1)-D factorized convs                              stem, stage1–4
slowfast   Slow (T/4 frames) + Fast (1/8 channels) + laterals    stem, stage1–4 (→ ``.0`` slow, ``.1`` fast)
x3d        depthwise-separable 3-D bottlenecks, narrow           stem, stage1–4
timesformer divided space–time attention on 8×8 patch tokens     patch_embed, blocks.0–3
twostream  RGB + flow streams, concat/additive/multiplicative    rgb.stage2–4, flow.stage2–4, fusion
effnet-c2d ImageNet EfficientNet-Lite0 (real weights) per frame   stem, stage2/3/5/7, head
effnet-i3d the same weights inflated to 3×k×k (``kt``), I3D-style stem, stage2/3/5/7, head
avos       two-stream segmenter: fusions, co-attention (``cc``)  fusion.stage1–4, app.stage1–4, mot.stage1–4
seg3d      RGB-only 3-D conv segmenter                           stage1–4
vis        query-based video instance segmenter (Mask2Former-VIS) stage1–3, pixel_decoder, decoder.0–2
========== ===================================================== =====================================

The two ``effnet-*`` models carry real ImageNet weights (``pretrained=true``; see ``stlens.models.zoo.effnet``) and use
ImageNet clips instead (``EFFNET_INPUT``: 16 frames every 2nd, 256 → crop 224, ImageNet mean/std).

The two segmenters (``SEGMENTERS``: ``avos``, ``seg3d``; see ``stlens.models.zoo.avos`` and docs/models.md) return
per-frame mask logits (B, T, H, W) instead of class logits, have no ``num_classes``, and take 8-frame clips
(``SEG_INPUT``: 8 frames, 64×64, the zoo's normalization).

The instance segmenter (``INSTANCE_SEGMENTERS``: ``vis``; see ``stlens.models.zoo.vis`` and docs/vis.md) returns a
dict ``{"logits": (B, Q, K + 1), "masks": (B, Q, T, H, W)}`` (one query per instance track) and takes ``SEG_INPUT``.

Input convention, the same for every zoo model (``ZOO_INPUT``): 16 consecutive frames (stride 1), short side resized to
64, centre crop 64×64, pixels x/255 normalized with mean 0.5 and std 0.25 per channel (values in [−2, 2]); the
two-stream flow input is the encoded flow of ``stlens.pairs.twostream`` (values in [−1, 1]). Every model takes
``num_classes`` (spec option ``classes``, default 8), a ``width`` or ``dim``, and ``dropout``; see each class.

``build`` records the resolved constructor options on the module as ``module.stlens_config = {"name", "options"}``
(JSON-ready), so ``build(cfg["name"], **cfg["options"])`` or ``load_model(spec_of(cfg), weights=...)`` rebuilds it.
"""

from __future__ import annotations

import inspect
from urllib.parse import parse_qsl, urlencode

import torch
from torch import nn

from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.models.zoo.avos import AVOS
from stlens.models.zoo.convnets import C2D, I3D, X3D, R2Plus1D
from stlens.models.zoo.crossconn import CROSS
from stlens.models.zoo.effnet import EffNetC2D, EffNetI3D
from stlens.models.zoo.fusions import FUSIONS as AVOS_FUSIONS
from stlens.models.zoo.seg3d import Seg3D
from stlens.models.zoo.slowfast import SlowFast
from stlens.models.zoo.transformer import TimeSformer
from stlens.models.zoo.twostream import FUSIONS, TwoStream
from stlens.models.zoo.vis import VIS

#: zoo name → model class (the builder; its keyword arguments are the spec options)
ZOO: dict[str, type[nn.Module]] = {
    "c2d": C2D,
    "i3d": I3D,
    "r2plus1d": R2Plus1D,
    "slowfast": SlowFast,
    "x3d": X3D,
    "timesformer": TimeSformer,
    "twostream": TwoStream,
}

#: models with real (ImageNet) weights, also ``stlens:<name>``; kept apart from ``ZOO``, the small trainable nets
PRETRAINED: dict[str, type[nn.Module]] = {
    "effnet-c2d": EffNetC2D,
    "effnet-i3d": EffNetI3D,
}

#: the segmenters, also ``stlens:<name>``: per-frame mask logits (B, T, H, W), kept apart from the classifiers
SEGMENTERS: dict[str, type[nn.Module]] = {
    "avos": AVOS,
    "seg3d": Seg3D,
}

#: the video instance segmenters, also ``stlens:<name>``: {"logits": (B, Q, K + 1), "masks": (B, Q, T, H, W)}
INSTANCE_SEGMENTERS: dict[str, type[nn.Module]] = {
    "vis": VIS,
}

#: the input spec shared by the zoo (see the module docstring)
ZOO_INPUT = InputSpec(frames=16, stride=1, size=64, resize=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

#: short spec option names → constructor arguments
ALIASES = {"classes": "num_classes"}

_CHOICES = {("twostream", "fusion"): FUSIONS, ("avos", "fusion"): AVOS_FUSIONS, ("avos", "cc"): CROSS}

__all__ = ["ALIASES", "INSTANCE_SEGMENTERS", "PRETRAINED", "SEGMENTERS", "ZOO", "ZOO_INPUT", "build", "defaults",
           "parse_spec", "spec_of", "zoo_spec"]


def _model(name: str) -> type[nn.Module]:
    if name in PRETRAINED:
        return PRETRAINED[name]
    if name in SEGMENTERS:
        return SEGMENTERS[name]
    if name in INSTANCE_SEGMENTERS:
        return INSTANCE_SEGMENTERS[name]
    if name not in ZOO:
        every = ", ".join([*ZOO, *PRETRAINED, *SEGMENTERS, *INSTANCE_SEGMENTERS])
        raise StlensError(f"unknown zoo model '{name}'; the stlens zoo has: {every}")
    return ZOO[name]


def defaults(name: str) -> dict:
    """The options of a zoo model and their default values (constructor keyword arguments)."""
    params = inspect.signature(_model(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}


def _convert(name: str, key: str, value, default):
    """Check an option value and convert strings (from a spec query) to the type of the default."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                value = value.lower() in ("1", "true", "yes", "on")
            value = bool(value)
        elif isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        elif isinstance(default, tuple):
            items = [int(v) for v in value.split(",")] if isinstance(value, str) else value
            items = [items] if isinstance(items, int) else [int(v) for v in items]
            value = items[0] if len(items) == 1 else tuple(items)
        elif isinstance(default, str):
            value = str(value)
    except (TypeError, ValueError):
        raise StlensError(f"stlens:{name} option {key}={value!r} is not a valid {type(default).__name__}") from None
    numbers = value if isinstance(value, tuple) else (value,)
    if key == "dropout":
        if not 0.0 <= value < 1.0:
            raise StlensError(f"stlens:{name} option dropout must be in [0, 1), got {value}")
    elif not isinstance(value, bool | str) and any(v <= 0 for v in numbers):
        raise StlensError(f"stlens:{name} option {key} must be > 0, got {value}")
    choices = _CHOICES.get((name, key))
    if choices is not None and value not in choices:
        raise StlensError(f"stlens:{name} option {key}='{value}' is unknown; choices: {', '.join(choices)}")
    return value


def resolve_options(name: str, options: dict) -> dict:
    """All constructor options of ``name``: the defaults overridden by ``options`` (aliases such as ``classes``
    accepted, strings converted); an unknown option raises a StlensError listing the valid ones."""
    known = defaults(name)
    resolved = dict(known)
    given: set[str] = set()
    for key, value in options.items():
        target = ALIASES.get(key, key)
        if target not in known:
            valid = ", ".join(sorted(set(known) | {a for a, t in ALIASES.items() if t in known}))
            raise StlensError(f"unknown option '{key}' for stlens:{name}; valid options: {valid}")
        if target in given:
            raise StlensError(f"option '{key}' given twice for stlens:{name}")
        given.add(target)
        resolved[target] = _convert(name, key, value, known[target])
    return resolved


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def build(name: str, seed: int | None = None, **options) -> nn.Module:
    """Build zoo model ``name`` with ``options`` (constructor keyword arguments, or their spec aliases; strings are
    converted). ``seed`` makes the initialization reproducible without touching the global RNG. The module gets
    ``stlens_config = {"name": name, "options": <all resolved options>}``."""
    cls = _model(name)
    resolved = resolve_options(name, options)
    try:
        if seed is None:
            module = cls(**resolved)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = cls(**resolved)
    except (ValueError, TypeError) as exc:
        raise StlensError(f"cannot build stlens:{name} with {resolved}: {exc}") from exc
    module.stlens_config = {"name": name, "options": _jsonable(resolved)}
    return module


def parse_spec(target: str) -> tuple[str, dict[str, str]]:
    """``"i3d?classes=8&width=16"`` (the part after ``stlens:``) → ``("i3d", {"classes": "8", "width": "16"})``."""
    name, _, query = target.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise StlensError(f"cannot parse the options of stlens:{target}; write stlens:NAME?key=value&key=value"
                          ) from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise StlensError(f"option '{key}' given twice in stlens:{target}")
        options[key] = value
    _model(name)
    return name, options


def spec_of(config: dict | nn.Module) -> str:
    """The ``stlens:`` spec that rebuilds a model from its ``stlens_config`` (or the module carrying it); only the
    options that differ from the defaults are written."""
    if isinstance(config, nn.Module):
        config = getattr(config, "stlens_config", None)
        if config is None:
            raise StlensError("this module was not built by the stlens zoo (no stlens_config)")
    name = config["name"]
    base = _jsonable(defaults(name))
    short = {target: alias for alias, target in ALIASES.items()}

    def text(value) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)

    options = _jsonable(config.get("options", {}))
    changed = {short.get(k, k): text(v) for k, v in options.items() if base.get(k) != v}
    query = urlencode(changed, safe=",")
    return f"stlens:{name}" + (f"?{query}" if query else "")


def zoo_spec(name: str, **options) -> tuple[InputSpec, list[str]]:
    """The input spec and default layers of a zoo model (built on the meta device: no memory, no RNG use).
    TimeSformer's ``frames``/``size`` options (its position-embedding grid) also set the spec's frames and size."""
    resolved = resolve_options(name, options)
    try:
        with torch.device("meta"):
            module = _model(name)(**resolved)
    except (ValueError, TypeError) as exc:
        raise StlensError(f"cannot build stlens:{name} with {resolved}: {exc}") from exc
    spec = getattr(module, "input_spec", ZOO_INPUT)  # models with real weights bring their own (e.g. ImageNet)
    if name == "timesformer":
        spec = spec.with_overrides(frames=resolved["frames"], size=resolved["size"])
    return spec, list(module.default_layers)
