"""``module:<pkg.mod>:<callable>`` specs: the user's own model. The callable takes no arguments and returns an
``nn.Module`` (its top-level children become the default layers, with a placeholder input spec) or a ready
``ModelHandle``. An exception in the user's code is reported on one line naming the spec, followed by the traceback of
that code only (no frames of stlens or of the import system)."""

from __future__ import annotations

import importlib

from torch import nn

from stlens.core.handle import ModelHandle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError

PREFIX = "module"
#: how a spec of this family is written (said by ``load_model`` when a spec has an unknown prefix)
SPEC_FORM = "module:<pkg.mod>:<callable>"


def names() -> list[str]:
    """Nothing to list: any importable factory is a spec."""
    return []


def _is_machinery(filename: str) -> bool:
    """Frames of stlens' loader and of the import system, left out of a user traceback."""
    return filename == __file__ or filename.startswith("<frozen importlib") or filename == importlib.__file__


def _user_code_error(spec: str, doing: str, exc: Exception) -> StlensError:
    """One line that says the user's code raised (naming the spec), then the traceback of the user's code."""
    import traceback

    shown = traceback.TracebackException.from_exception(exc)
    shown.stack = traceback.StackSummary.from_list([f for f in shown.stack if not _is_machinery(f.filename)])
    first = (str(exc).splitlines() or [""])[0]
    return StlensError(f"{spec}: {doing} raised {type(exc).__name__}: {first} (the traceback of that code follows)\n"
                       + "".join(shown.format()).rstrip("\n"))


def build(target: str, *, weights: str | None = None, frames: int | None = None,
          size: int | None = None) -> ModelHandle:
    """Import ``<pkg.mod>`` and call ``<callable>()``; ``weights``, ``frames`` and ``size`` are applied by
    ``load_model``."""
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise StlensError(f"module spec must be module:<pkg.mod>:<callable>, got module:{target}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):  # the named module itself is not there
            raise StlensError(f"cannot import {attr} from {module_name}: {exc}") from exc
        raise _user_code_error(f"module:{target}", f"importing {module_name}", exc) from exc
    except StlensError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module raised: say so, then show its traceback
        raise _user_code_error(f"module:{target}", f"importing {module_name}", exc) from exc
    try:
        factory = getattr(module, attr)
    except AttributeError as exc:
        raise StlensError(f"cannot import {attr} from {module_name}: {exc}") from exc
    try:
        built = factory()
    except StlensError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's factory raised: say so, then show its traceback
        raise _user_code_error(f"module:{target}", f"calling {attr}()", exc) from exc
    if isinstance(built, ModelHandle):
        return built
    if not isinstance(built, nn.Module):
        raise StlensError(f"module:{target} returned {type(built).__name__}, not an nn.Module")
    children = [name for name, _ in built.named_children()]
    return ModelHandle(built, f"module:{target}", InputSpec(), children)
