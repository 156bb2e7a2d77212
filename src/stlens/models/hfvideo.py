"""``hf:<videomae|timesformer|vivit>[?options]`` specs: Hugging Face video transformers behind a (B,3,T,H,W) wrapper.

Options (URL query): ``path=DIR`` loads a local checkpoint folder (``config.json`` + weights, read offline; mean/std
from its ``preprocessor_config.json`` when present); otherwise the model is built from a config with random weights:
``config=small`` (default: ``depth`` 4, ``hidden`` 64, ``heads`` 4) or ``config=base`` (the published ViT-B sizes).
``cls=exclude`` (default) | ``include`` | ``only`` says what a tapped layer gives for models with a CLS token.

The wrapper :class:`HFVideo` feeds ``pixel_values`` (B,T,C,H,W) with ``output_hidden_states=True`` and passes hidden
state i through the identity-like module ``hidden.i`` (``hidden.0`` = embeddings, ``hidden.k`` = output of block k),
so hooks see, per block: the patch tokens as a (B,D,T′,H′,W′) grid (``cls=exclude``; pooled over space-time), all
tokens (B,N,D) including CLS (``include``; pooled over tokens) or the CLS vector (B,D) (``only``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import torch
from torch import nn

from stlens.core.handle import ModelHandle
from stlens.core.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from stlens.errors import StlensError

PREFIX = "hf"
#: models are built with random weights unless weights are given (``stlens measure`` warns)
RANDOM_WEIGHTS = True
#: how a spec of this family is written (said by ``load_model`` when a spec has an unknown prefix)
SPEC_FORM = "hf:<videomae|timesformer|vivit>[?options]"
CLS_MODES = ("exclude", "include", "only")


@dataclass(frozen=True)
class HFFamily:
    """A transformers video family: class names, published clip spec, token layout."""

    model_class: str
    config_class: str
    input: InputSpec
    has_cls: bool
    order: str  # "thw": tokens time-major (tubelets); "hwt": space-major, time fastest (TimeSformer)


#: clip specs of the published checkpoints (VideoMAE-B K400 16×4, TimeSformer-B K400 8×32, ViViT-B K400 32×2).
HF_FAMILIES = {
    "videomae": HFFamily("VideoMAEForVideoClassification", "VideoMAEConfig",
                         InputSpec(16, 4, 224, 256, IMAGENET_MEAN, IMAGENET_STD), has_cls=False, order="thw"),
    "timesformer": HFFamily("TimesformerForVideoClassification", "TimesformerConfig",
                            InputSpec(8, 32, 224, 256, (0.45,) * 3, (0.225,) * 3), has_cls=True, order="hwt"),
    "vivit": HFFamily("VivitForVideoClassification", "VivitConfig",
                      InputSpec(32, 2, 224, 256, (0.5,) * 3, (0.5,) * 3), has_cls=True, order="thw"),
}

_SMALL = {"depth": 4, "hidden": 64, "heads": 4}
_BASE = {"depth": 12, "hidden": 768, "heads": 12}
_OPTIONS = ("path", "config", "cls", "depth", "hidden", "heads", "classes")


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int, int], has_cls: bool, order: str = "thw"
                   ) -> torch.Tensor:
    """Transformer tokens (B, N, D) → a (B, D, T′, H′, W′) grid of the patch tokens (a leading CLS token dropped).

    ``order="thw"``: token 1+k (k = (t·H′ + y)·W′ + x) is tubelet (t, y, x) — VideoMAE, ViViT.
    ``order="hwt"``: k = (y·W′ + x)·T′ + t — TimeSformer (space-major, frames fastest).
    """
    t, h, w = grid
    patches = tokens[:, 1:] if has_cls else tokens
    if patches.shape[1] != t * h * w:
        raise StlensError(f"{tokens.shape[1]} tokens do not fit a {t}×{h}×{w} grid"
                          f"{' plus a CLS token' if has_cls else ''}")
    b, _, d = patches.shape
    if order == "thw":
        return patches.reshape(b, t, h, w, d).permute(0, 4, 1, 2, 3)
    if order == "hwt":
        return patches.reshape(b, h, w, t, d).permute(0, 4, 3, 1, 2)
    raise StlensError(f"unknown token order '{order}' (thw or hwt)")


class TokenView(nn.Module):
    """Identity-like tap point for one hidden state: tokens → grid / tokens / CLS vector (see the module doc)."""

    def __init__(self, grid: tuple[int, int, int], has_cls: bool, order: str, cls: str):
        super().__init__()
        self.grid, self.has_cls, self.order, self.cls = grid, has_cls, order, cls

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cls == "include" or (self.cls == "only" and not self.has_cls):
            return tokens
        if self.cls == "only":
            return tokens[:, 0]
        return tokens_to_grid(tokens, self.grid, self.has_cls, self.order)


class HFVideo(nn.Module):
    """A transformers video classifier taking (B,3,T,H,W) clips; returns logits, exposes hidden states as layers."""

    def __init__(self, model: nn.Module, family: str, frames: int, size: int, cls: str = "exclude"):
        super().__init__()
        info = HF_FAMILIES[family]
        cfg = model.config
        if family == "vivit":
            tube, patch = cfg.tubelet_size[0], cfg.tubelet_size[1]
        else:
            tube, patch = getattr(cfg, "tubelet_size", 1), cfg.patch_size
        if frames % tube or size % patch:
            raise StlensError(f"hf:{family} needs frames divisible by {tube} and size divisible by {patch}; "
                              f"got {frames} frames at {size} px")
        self.model = model
        self.family = family
        self.grid = (frames // tube, size // patch, size // patch)
        self.has_cls = info.has_cls
        self.order = info.order
        n_hidden = cfg.num_hidden_layers + 1
        self.hidden = nn.ModuleList(TokenView(self.grid, info.has_cls, info.order, cls) for _ in range(n_hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x.transpose(1, 2), output_hidden_states=True)
        for view, state in zip(self.hidden, out.hidden_states, strict=True):
            view(state)
        return out.logits


def installed() -> bool:
    """Whether the optional dependency ``transformers`` is there (without importing it)."""
    return importlib.util.find_spec("transformers") is not None


def names() -> list[str]:
    """Every spec of this family (none when ``transformers`` is not installed)."""
    return [f"{PREFIX}:{family}" for family in HF_FAMILIES] if installed() else []


def _parse(target: str) -> tuple[str, dict[str, str]]:
    family, _, query = target.partition("?")
    if family not in HF_FAMILIES:
        raise StlensError(f"unknown hf model '{family}'; choices: {', '.join(HF_FAMILIES)}")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True)) if query else {}
    except ValueError:
        raise StlensError(f"cannot parse the options of hf:{target}; write hf:NAME?key=value&key=value") from None
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise StlensError(f"unknown option(s) {', '.join(unknown)} for hf:{family}; valid: {', '.join(_OPTIONS)}")
    if options.get("cls", "exclude") not in CLS_MODES:
        raise StlensError(f"hf:{family} option cls must be one of {', '.join(CLS_MODES)}")
    return family, options


def _int(options: dict, key: str, default: int) -> int:
    try:
        value = int(options.get(key, default))
    except ValueError:
        raise StlensError(f"hf option {key}={options[key]!r} is not an integer") from None
    if value <= 0:
        raise StlensError(f"hf option {key} must be > 0, got {value}")
    return value


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise StlensError(f"hf: models need the optional dependency: pip install 'stlens[hf]' ({exc})") from exc
    transformers.logging.set_verbosity_error()
    return transformers


def _from_path(family: str, path: str, spec: InputSpec) -> tuple[nn.Module, InputSpec]:
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise StlensError(f"hf checkpoint folder {folder} has no config.json")
    tf = _transformers()
    try:
        model = getattr(tf, HF_FAMILIES[family].model_class).from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise StlensError(f"cannot load hf:{family} from {folder}: {exc}") from exc
    cfg = model.config
    spec = InputSpec(cfg.num_frames, spec.stride, cfg.image_size, round(cfg.image_size * spec.resize / spec.size),
                     spec.mean, spec.std)
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        from stlens.core.damaged import load_json, reading

        advice = "repair it, or copy the checkpoint folder again"
        meta = load_json(processor, advice)
        if isinstance(meta, dict) and "image_mean" in meta and "image_std" in meta:
            with reading(processor, advice):
                spec = InputSpec(spec.frames, spec.stride, spec.size, spec.resize, tuple(meta["image_mean"]),
                                 tuple(meta["image_std"]))
    return model, spec


def _from_config(family: str, options: dict, spec: InputSpec) -> nn.Module:
    tf = _transformers()
    preset = {"small": _SMALL, "base": _BASE}.get(options.get("config", "small"))
    if preset is None:
        raise StlensError(f"hf:{family} option config must be small or base, got {options['config']}")
    hidden, heads = _int(options, "hidden", preset["hidden"]), _int(options, "heads", preset["heads"])
    if hidden % heads:
        raise StlensError(f"hf:{family} hidden={hidden} is not divisible by heads={heads}")
    kwargs = dict(num_hidden_layers=_int(options, "depth", preset["depth"]), hidden_size=hidden,
                  num_attention_heads=heads, intermediate_size=4 * hidden, num_frames=spec.frames,
                  image_size=spec.size, num_labels=_int(options, "classes", 400))
    config = getattr(tf, HF_FAMILIES[family].config_class)(**kwargs)
    return getattr(tf, HF_FAMILIES[family].model_class)(config)


def build_hf(target: str, frames: int | None = None, size: int | None = None) -> ModelHandle:
    """Build ``hf:<family>[?options]`` (see the module doc); ``frames``/``size`` set the config's clip size."""
    family, options = _parse(target)
    spec = HF_FAMILIES[family].input
    if "path" in options:
        model, spec = _from_path(family, options["path"], spec)
    else:
        spec = spec.with_overrides(frames, size)
        model = _from_config(family, options, spec)
    spec = spec.with_overrides(frames, size)
    wrapper = HFVideo(model, family, spec.frames, spec.size, options.get("cls", "exclude"))
    layers = [f"hidden.{i}" for i in range(len(wrapper.hidden))]
    weights = options.get("path")
    return ModelHandle(wrapper, f"hf:{target}", spec, layers, weights=weights)


def build(target: str, *, weights: str | None = None, frames: int | None = None,
          size: int | None = None) -> ModelHandle:
    """The family API: ``hf:<target>`` (see :func:`build_hf`); ``weights`` (a checkpoint file) is loaded by
    ``load_model`` (a checkpoint folder is the ``path=`` option)."""
    return build_hf(target, frames=frames, size=size)
