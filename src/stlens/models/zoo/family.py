"""The ``stlens:<name>[?key=value&...]`` model family: the small zoo of ``stlens.models.zoo``, options as a URL query.

A module of its own because ``stlens.models.zoo.build(name, seed=None, **options)`` (an ``nn.Module``) keeps its
meaning; this module holds the family API (``build(target, …) -> ModelHandle`` and ``names()``)."""

from __future__ import annotations

from stlens.core.handle import ModelHandle
from stlens.models import zoo

PREFIX = "stlens"
#: models are built with random weights unless weights are given (``stlens measure`` warns)
RANDOM_WEIGHTS = True
#: how a spec of this family is written (said by ``load_model`` when a spec has an unknown prefix)
SPEC_FORM = "stlens:<zoo name>[?options]"


def names() -> list[str]:
    """Every zoo model: the small trainable nets, then those with real weights, then the segmenters, then the
    instance segmenters."""
    return [f"{PREFIX}:{name}" for name in [*zoo.ZOO, *zoo.PRETRAINED, *zoo.SEGMENTERS, *zoo.INSTANCE_SEGMENTERS]]


def build(target: str, *, weights: str | None = None, frames: int | None = None,
          size: int | None = None) -> ModelHandle:
    """Build ``stlens:<target>`` with its options; ``weights`` (a file or ``bundled:NAME``), ``frames`` and ``size``
    are applied by ``load_model``."""
    name, options = zoo.parse_spec(target)
    module = zoo.build(name, **options)
    spec, layers = zoo.zoo_spec(name, **options)
    return ModelHandle(module, f"{PREFIX}:{target}", spec, layers)
