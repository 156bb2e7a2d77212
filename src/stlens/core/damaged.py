"""Reading back the files stlens wrote: a truncated or corrupt file is a ``StlensError`` naming the file and what to
do (``FILE: damaged or truncated (what failed); advice``), never a traceback."""

from __future__ import annotations

import json
import pickle
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from stlens.errors import StlensError

#: what reading or decoding a damaged file raises (JSON, UTF-8, zip/npz, zlib, torch.load, a missing field, a wrong
#: type); ``SafetensorError`` is added by ``_kinds`` (safetensors is imported only when needed)
DAMAGE: tuple[type[BaseException], ...] = (
    ValueError, zipfile.BadZipFile, zlib.error, EOFError, pickle.UnpicklingError, RuntimeError, KeyError, TypeError,
    IndexError, AttributeError, OSError)
#: OS errors that are not about the file's content (the message says so and gives no damage advice)
_ACCESS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _kinds() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return DAMAGE
    return (*DAMAGE, SafetensorError)


def _what(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def damaged(path: str | Path, exc: BaseException, advice: str) -> StlensError:
    """The error for ``path`` that could not be read because of ``exc``."""
    if isinstance(exc, _ACCESS):
        return StlensError(f"{path}: cannot read ({exc.strerror or exc}); {advice}")
    return StlensError(f"{path}: damaged or truncated ({_what(exc)}); {advice}")


@contextmanager
def reading(path: str | Path, advice: str) -> Iterator[None]:
    """Turn the errors of reading and decoding ``path`` inside the block into ``damaged(...)``; a ``StlensError``
    passes through unchanged."""
    try:
        yield
    except StlensError:
        raise
    except _kinds() as exc:
        raise damaged(path, exc, advice) from exc


def load_json(path: str | Path, advice: str) -> Any:
    """The JSON document in ``path`` (UTF-8), or ``damaged(...)``."""
    with reading(path, advice):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def load_npz(path: str | Path, advice: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path`` (``allow_pickle=False``), or ``damaged(...)``."""
    with reading(path, advice), np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def expect(path: str | Path, ok: bool, what: str, advice: str) -> None:
    """``damaged`` when a document read from ``path`` lacks what it must hold (``what``: e.g. "no 'layers' list")."""
    if not ok:
        raise StlensError(f"{path}: damaged or truncated ({what}); {advice}")
