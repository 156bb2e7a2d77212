"""Atomic file writing (write to a temporary file in the same folder, then rename over the target) and the
``format_version`` of the JSON files stlens writes and reads (docs/formats.md §0)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from stlens._version import FORMAT_VERSION
from stlens.errors import StlensError


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it to ``path`` when it succeeds.

    The file gets the mode of any newly created file (0o666 less the umask, e.g. 0o644), not the private 0o600 of
    the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has neither), through dicts, lists and
    tuples (tuples become lists, as JSON writes them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def versioned(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``format_version`` (this stlens's ``FORMAT_VERSION``) as its first field (docs/formats.md §0)."""
    return {"format_version": FORMAT_VERSION, **{k: v for k, v in doc.items() if k != "format_version"}}


def check_format(doc: Any, path: str | Path) -> int:
    """The ``format_version`` of the JSON document read from ``path``: 1 when it has none (written before the field
    existed); a ``StlensError`` naming the file for a value that is not an integer or that a newer stlens wrote."""
    if not isinstance(doc, dict) or "format_version" not in doc:
        return 1
    version = doc["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StlensError(f"{path}: format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise StlensError(f"{path}: format_version {version} was written by a newer stlens (this one reads up to "
                          f"{FORMAT_VERSION}); upgrade stlens")
    return version


#: what to do about a damaged file when its reader names nothing better
REWRITE = "rerun the stlens command that wrote it"


def read_json(path: str | Path, advice: str = REWRITE) -> Any:
    """A JSON file, or a ``StlensError`` naming the file, what failed (the position of a syntax error) and
    ``advice`` (``core.damaged``)."""
    from stlens.core.damaged import load_json

    return load_json(path, advice)


def read_versioned(path: str | Path, what: str = "stlens file", advice: str = REWRITE) -> dict[str, Any]:
    """A JSON object written by stlens (``read_json`` + ``check_format``); anything but an object is a
    ``StlensError`` naming the file, ``what`` it should have been and ``advice``."""
    doc = read_json(path, advice)
    if not isinstance(doc, dict):
        raise StlensError(f"{path}: not a {what} (a JSON object was expected); {advice}")
    check_format(doc, path)
    return doc
