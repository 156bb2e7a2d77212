"""Offline mode: whether weights may be downloaded (torch hub for torchvision names, the Hugging Face hub for ``hf:``).

Offline when ``STLENS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value (``1``, ``true``, ``yes``, ``on``), or
inside ``offline_scope(True)`` (the ``offline=True`` argument of ``load_model`` and the verbs, the ``--offline``
option of the CLI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

#: the environment variables that switch offline mode on
OFFLINE_VARS = ("STLENS_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}
#: how to switch offline mode off, for error messages
SWITCHES = "--offline / offline=True, STLENS_OFFLINE=1 or HF_HUB_OFFLINE=1"


def is_offline() -> bool:
    """Whether offline mode is on (``STLENS_OFFLINE`` or ``HF_HUB_OFFLINE`` set to a true value)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_VARS)


@contextmanager
def offline_scope(flag: bool | None) -> Iterator[bool]:
    """For its duration: ``True`` sets ``STLENS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1``; ``False`` removes both
    (downloads allowed whatever the environment says); ``None`` leaves the environment as it is. The environment is
    restored on exit. Yields whether offline mode is on inside the scope."""
    if flag is None:
        yield is_offline()
        return
    saved = {name: os.environ.get(name) for name in OFFLINE_VARS}
    for name in OFFLINE_VARS:
        if flag:
            os.environ[name] = "1"
        else:
            os.environ.pop(name, None)
    try:
        yield bool(flag)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
