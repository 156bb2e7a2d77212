"""Checkpoints shipped inside the package (``--weights bundled:<name>``): ``stlens/bundled/<name>.safetensors`` with
``<name>.json`` (the model spec, the training run's config and the accuracies it reached). ``make checkpoints``
regenerates them (``benchmarks/make_checkpoints.py``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from stlens.errors import StlensError

PREFIX = "bundled:"


def bundled_dir() -> Path:
    return Path(str(resources.files("stlens") / "bundled"))


def list_bundled() -> list[str]:
    folder = bundled_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.safetensors") if p.with_suffix(".json").is_file())


def bundled_info(name: str) -> dict[str, Any]:
    """The JSON record of a bundled checkpoint (model spec, training config, accuracies)."""
    path = bundled_path(name).with_suffix(".json")
    from stlens.core.damaged import load_json

    return load_json(path, "reinstall stlens (a bundled file is damaged)")


def bundled_path(name: str) -> Path:
    """The weights file of ``bundled:<name>`` (or of ``<name>``); an unknown name lists the bundled ones."""
    name = name.removeprefix(PREFIX)
    path = bundled_dir() / f"{name}.safetensors"
    if not path.is_file() or not path.with_suffix(".json").is_file():
        known = ", ".join(list_bundled()) or "none (run make checkpoints)"
        raise StlensError(f"unknown bundled checkpoint '{name}'; bundled: {known}")
    return path


#: zoo options that change no weight: a bundled checkpoint fits whatever they are
WEIGHTLESS_OPTIONS = frozenset({"dropout"})


def check_bundled_fits(name: str, spec: str) -> None:
    """A bundled checkpoint belongs to one zoo model with its options (``stlens:avos?fusion=gated&cc=recip``): refuse
    it for another model, or the same model with other architecture options, with a clear message."""
    expected = bundled_info(name)["model"]
    short = name.removeprefix(PREFIX)
    if spec.partition("?")[0] != expected.partition("?")[0]:
        raise StlensError(f"bundled:{short} holds weights for {expected}, not {spec}")
    if not expected.startswith("stlens:"):
        return
    from stlens.models import zoo

    target, options = zoo.parse_spec(spec.removeprefix("stlens:"))
    want = zoo.resolve_options(*zoo.parse_spec(expected.removeprefix("stlens:")))
    have = zoo.resolve_options(target, options)
    differ = sorted(k for k in want if k not in WEIGHTLESS_OPTIONS and have.get(k) != want[k])
    if differ:
        found = ", ".join(f"{k}={have.get(k)} (the checkpoint's: {want[k]})" for k in differ)
        raise StlensError(f"bundled:{short} holds weights for {expected}, not {spec}: {found}; pass `model` "
                          f"'{expected}'")
