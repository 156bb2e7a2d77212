"""``hf:<videomae|timesformer|vivit>[?options]`` specs: Hugging Face video transformers behind a (B,3,T,H,W) wrapper;
``hf:<hub id | folder>[?cls=...]`` loads a published checkpoint (``hf:MCG-NJU/videomae-base-finetuned-kinetics``) or a
``save_pretrained`` folder (``hf:path/to/folder``) with ``from_pretrained``: a folder is read as it is, a hub id from
the Hugging Face cache (``HF_HOME``), downloaded into it when missing unless offline (``stlens.models.offline``:
then ``local_files_only=True``). The family comes from the checkpoint's ``model_type``.

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
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import torch
from torch import nn

from stlens.core.handle import ModelHandle
from stlens.core.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from stlens.errors import StlensError
from stlens.models.offline import SWITCHES, is_offline

PREFIX = "hf"
#: models are built with random weights unless weights are given (``stlens measure`` warns)
RANDOM_WEIGHTS = True
#: how a spec of this family is written (said by ``load_model`` when a spec has an unknown prefix)
SPEC_FORM = "hf:<videomae|timesformer|vivit | hub id | folder>[?options]"
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


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _parse(target: str) -> tuple[str, dict[str, str]]:
    """``NAME[?options]`` → (NAME, options); NAME is a family, or a hub id / folder (then only ``cls`` is an option)."""
    family, _, query = target.partition("?")
    pretrained = family not in HF_FAMILIES
    if pretrained and not (Path(family).expanduser().is_dir() or (_HUB_ID.fullmatch(family) and "/" in family)):
        raise StlensError(f"unknown hf model '{family}': not one of {', '.join(HF_FAMILIES)}, an existing folder, "
                          f"or a hub id (OWNER/NAME)")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True)) if query else {}
    except ValueError:
        raise StlensError(f"cannot parse the options of hf:{target}; write hf:NAME?key=value&key=value") from None
    valid = ("cls",) if pretrained else _OPTIONS
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StlensError(f"unknown option(s) {', '.join(unknown)} for hf:{family}; valid: {', '.join(valid)}")
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


def _family_of(config) -> str:
    family = getattr(config, "model_type", None)
    if family not in HF_FAMILIES:
        raise StlensError(f"hf checkpoint of model_type '{family}' is not a supported video family "
                          f"({', '.join(HF_FAMILIES)})")
    return family


def _hf_cache() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "the Hugging Face cache (HF_HOME/hub)"
    return str(constants.HF_HUB_CACHE)


def _pretrained(name: str, family: str | None = None) -> tuple[nn.Module, str, Path | None]:
    """``from_pretrained`` of a folder or a hub id (offline: ``local_files_only=True``) → (model, family, folder of
    its files when known)."""
    tf = _transformers()
    folder = Path(name).expanduser()
    local = folder.is_dir()
    if local and not (folder / "config.json").is_file():
        raise StlensError(f"hf checkpoint folder {folder} has no config.json")
    offline = local or is_offline()
    source = str(folder) if local else name
    try:
        if family is None:
            family = _family_of(tf.AutoConfig.from_pretrained(source, local_files_only=offline))
        model = getattr(tf, HF_FAMILIES[family].model_class).from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError) as exc:
        if local:
            raise StlensError(f"cannot load hf:{family or 'model'} from {folder}: {exc}") from exc
        if offline:
            raise StlensError(f"hf model '{name}' is not in the Hugging Face cache ({_hf_cache()}) and offline mode is "
                              f"on ({SWITCHES}); turn it off to download it, or pass a save_pretrained folder as "
                              f"hf:FOLDER") from exc
        raise StlensError(f"cannot load hf model '{name}' from the Hugging Face hub into its cache ({_hf_cache()}): "
                          f"{exc}. Without network here, download it elsewhere (huggingface-cli download {name}) and "
                          f"copy the cache, or pass its folder as hf:FOLDER") from exc
    return model, family, folder if local else None


def _from_path(family: str | None, path: str, spec: InputSpec | None) -> tuple[nn.Module, str, InputSpec]:
    """A folder or hub id → (model, family, its clip spec: frames and size from its config, mean/std from its
    ``preprocessor_config.json`` when the folder has one)."""
    model, family, folder = _pretrained(path, family)
    spec = spec or HF_FAMILIES[family].input
    cfg = model.config
    spec = InputSpec(cfg.num_frames, spec.stride, cfg.image_size, round(cfg.image_size * spec.resize / spec.size),
                     spec.mean, spec.std)
    processor = folder / "preprocessor_config.json" if folder is not None else None
    if processor is not None and processor.is_file():
        from stlens.core.damaged import load_json, reading

        advice = "repair it, or copy the checkpoint folder again"
        meta = load_json(processor, advice)
        if isinstance(meta, dict) and "image_mean" in meta and "image_std" in meta:
            with reading(processor, advice):
                spec = InputSpec(spec.frames, spec.stride, spec.size, spec.resize, tuple(meta["image_mean"]),
                                 tuple(meta["image_std"]))
    return model, family, spec


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
    name, options = _parse(target)
    if name not in HF_FAMILIES:
        model, family, spec = _from_path(None, name, None)
        options["path"] = name
    elif "path" in options:
        if not (Path(options["path"]).expanduser() / "config.json").is_file():
            raise StlensError(f"hf checkpoint folder {options['path']} has no config.json")
        model, family, spec = _from_path(name, options["path"], HF_FAMILIES[name].input)
    else:
        family, spec = name, HF_FAMILIES[name].input
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
