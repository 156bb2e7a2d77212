"""SIGINT and SIGTERM, both turned into ``Interrupted`` (a ``KeyboardInterrupt``), and critical sections that hold them.

A process started in the background of a script inherits SIGINT as *ignored*, and Slurm preempts a job with SIGTERM:
the CLI installs its own handlers for both (``handle_signals``), so that either stops a run the same way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: the exit code of an interrupted run (128 + SIGINT), for SIGINT and SIGTERM alike
EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Raised by the handlers of ``handle_signals``; ``signal_name`` says which signal."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _raise(signum: int, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted``; the previous handlers come back afterwards."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during a short critical section (a swap of files) and raise ``Interrupted`` after it."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught and previous[caught[0]] is not signal.SIG_IGN:
        raise Interrupted(signal.Signals(caught[0]).name)
