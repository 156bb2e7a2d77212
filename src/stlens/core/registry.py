"""Where model families and data sources live: one table of ``prefix → "package.module[:callable]"`` strings, so that
nothing is imported until a spec with that prefix is used, and a dispatcher never imports a family.

Adding a model family is one new module (with ``build(target, *, weights, frames, size) -> ModelHandle`` and
``names() -> list[str]``) plus one line in ``MODEL_FAMILIES``; adding a data source is one function
(``open(spec) -> source``) plus one line in ``DATA_SOURCES``. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from stlens.errors import StlensError

#: model spec prefix → the module of that family (it defines ``build`` and ``names``)
MODEL_FAMILIES: dict[str, str] = {
    "torchvision": "stlens.models.tvvideo",
    "stlens": "stlens.models.zoo.family",
    "pytorchvideo": "stlens.models.ptvideo",
    "hf": "stlens.models.hfvideo",
    "module": "stlens.models.usermodule",
}

#: data spec prefix → the function that opens such a source
DATA_SOURCES: dict[str, str] = {
    "ann": "stlens.video.annotations:open_annotation",
    "classes": "stlens.video.classfolders:open_classes",
    "davis": "stlens.video.maskdata:open_davis",
    "moca": "stlens.video.maskdata:open_moca",
    "sample": "stlens.video.sources:open_sample",
    "stylized": "stlens.video.sources:open_stylized",
    "synth": "stlens.synth.dataset:open_synth",
    "ytvis": "stlens.video.ytvis:open_ytvis",
}


def load(target: str) -> Any:
    """Import ``"package.module"`` (the module) or ``"package.module:attr"`` (that attribute)."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def model_family(prefix: str) -> Any:
    """The module of a model family, by its spec prefix (``torchvision``, ``stlens``, …)."""
    if prefix not in MODEL_FAMILIES:
        raise StlensError(f"unknown model family '{prefix}:'; families: {', '.join(f'{p}:' for p in MODEL_FAMILIES)}")
    return load(MODEL_FAMILIES[prefix])


def data_source(prefix: str) -> Any | None:
    """The opener of a data source by its spec prefix (``synth``, ``sample``, …), or None when no source has it."""
    target = DATA_SOURCES.get(prefix)
    return None if target is None else load(target)


def names(kind: str) -> list[str]:
    """The registered prefixes of ``kind`` (``"model"`` or ``"data"``)."""
    table = {"model": MODEL_FAMILIES, "data": DATA_SOURCES}.get(kind)
    if table is None:
        raise StlensError(f"unknown registry kind '{kind}'; use model or data")
    return list(table)
