"""Safe path components from names taken from the input (file stems, layer names, labels).

No dependencies beyond the standard library, so that any layer of stlens can use it.

``safe_name`` keeps a name that is already safe unchanged and otherwise replaces what is unsafe, caps the length and
appends ``-`` and 8 hex digits of the SHA-256 of the original, so that distinct inputs stay distinct. It is idempotent:
``safe_name(safe_name(x)) == safe_name(x)``, so ``name == safe_name(name)`` tells whether a name is safe.
"""

from __future__ import annotations

import hashlib
import unicodedata

MAX_BYTES = 200
HASH_CHARS = 8
REPLACEMENT = "_"
# control characters, line/paragraph separators, lone surrogates (undecodable bytes of a file name)
_UNSAFE_CATEGORIES = {"Cc", "Zl", "Zp", "Cs"}
_UNSAFE_CHARS = {"/", "\\", "\x00"}


def name_hash(text: str) -> str:
    """8 hex digits of the SHA-256 of ``text`` (lone surrogates of undecodable file names included)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``max_bytes`` (never half a character)."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _is_safe_char(char: str) -> bool:
    return char not in _UNSAFE_CHARS and unicodedata.category(char) not in _UNSAFE_CATEGORIES


def safe_name(text: str, max_bytes: int = MAX_BYTES) -> str:
    """``text`` as one safe path component.

    The result is never empty, ``.`` or ``..``; holds no ``/``, ``\\``, NUL, control character (newline, tab, ...),
    line separator or lone surrogate; does not start with a dot (no hidden files, no clash with temporary files); and
    its UTF-8 encoding is at most ``max_bytes`` bytes, cut between characters. Unsafe characters and leading dots
    become ``_``; when anything was changed or cut, ``-`` and ``name_hash(text)`` are appended.
    """
    if max_bytes < HASH_CHARS + 2:
        raise ValueError(f"max_bytes must be ≥ {HASH_CHARS + 2}, got {max_bytes}")
    name = "".join(c if _is_safe_char(c) else REPLACEMENT for c in text)
    stripped = name.lstrip(".")
    name = REPLACEMENT * (len(name) - len(stripped)) + stripped
    if name == text and text and len(text.encode("utf-8")) <= max_bytes:
        return text
    suffix = f"-{name_hash(text)}"
    return _cut(name, max_bytes - len(suffix)) + suffix


def unique_safe_names(names: list[str], taken: set[str] | frozenset[str] = frozenset(),
                      max_bytes: int = MAX_BYTES) -> list[str]:
    """``safe_name`` of each name, made distinct from each other and from ``taken``.

    Distinct inputs give distinct names, and so do repeated inputs (say two videos with the same stem): the first
    keeps ``safe_name(name)``, a later one that would collide gets ``~2``, ``~3``, ... (before the cap). The result
    depends only on ``names`` (in order) and ``taken``.
    """
    used = set(taken)
    result = []
    for text in names:
        name = base = safe_name(text, max_bytes)
        n = 1
        while name in used:
            n += 1
            tail = f"~{n}"
            name = _cut(base, max_bytes - len(tail)) + tail
        used.add(name)
        result.append(name)
    return result
