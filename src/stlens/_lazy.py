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


def callable_package(package: str, target: str) -> None:
    """Make the package ``package`` callable as the function ``target`` (``"module:function"``, imported on the first
    call), showing that function's real signature and docstring to ``inspect.signature`` and ``help()``.

    A verb and its subpackage share one name (``stlens.measure``): importing a submodule binds the package to the
    parent's attribute, so the package itself must be the function to the caller."""
    import inspect
    import sys
    import types

    module = sys.modules[package]
    package_doc = module.__doc__ or ""

    def function() -> Callable:
        name, _, attr = target.partition(":")
        return getattr(importlib.import_module(name), attr)

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function()(*args, **kwargs)

        @property
        def __signature__(self) -> inspect.Signature:
            return inspect.signature(function())

        @property
        def __wrapped__(self) -> Callable:
            return function()

        @property
        def __doc__(self) -> str:  # help(): the function first, then what the package holds
            verb = function()
            return (f"{verb.__name__}{inspect.signature(verb)}\n\n{inspect.getdoc(verb) or ''}\n\n"
                    f"The package {package}: {package_doc}")

    CallablePackage.__name__ = CallablePackage.__qualname__ = f"CallablePackage[{target}]"
    module.__class__ = CallablePackage
