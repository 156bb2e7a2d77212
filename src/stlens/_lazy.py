"""Lazy package attributes: ``attach(__name__, {"name": "module:attr"})`` gives a package a module ``__getattr__`` that
imports ``module`` only when ``name`` is first used (a target without ``:attr`` is the module itself), so importing
one submodule never loads the whole package."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def attach(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``; ``names`` maps an attribute to ``"module:attr"``."""

    def __getattr__(name: str) -> object:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = importlib.import_module(module) if not attr else getattr(importlib.import_module(module), attr)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
