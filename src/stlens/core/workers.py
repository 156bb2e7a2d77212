"""Worker processes (``workers``): how many (``resolve_workers``), how each one starts (``init_worker``,
``start_method``), how one's failure reaches the user (``Failed``, ``guarded``, ``checked``), and items of a
map-style dataset made in index order here or in DataLoader workers (``in_order``).

Every verb's DataLoader uses this (stylize: a video; pairs check: a clip; ablate and evaluate: a batch of clips;
measure: batches of pairs, ``stlens.measure.loading``). A worker ignores SIGINT — Ctrl-C is the main process's to
handle, and it shuts the workers down —, runs one torch thread and, on Linux, is forked. A worker cannot raise an
error the main process shows as one line, so an item that failed comes back as ``Failed(message)``, naming what
failed, and the main process raises it there as a ``StlensError``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from stlens.errors import StlensError

log = logging.getLogger("stlens")


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (what Slurm or taskset grant), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """The default number of pair-making worker processes: min(4, usable CPUs − 1), at least 0 (on 1 CPU the pairs
    are made in the main process)."""
    return max(0, min(4, usable_cpus() - 1))


def resolve_workers(workers: int | None) -> int:
    """A ``workers`` value → the number of worker processes: None = ``default_workers()``; 0 = the main process;
    anything else than an integer ≥ 0 raises a ``StlensError`` naming `` `workers` ``."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise StlensError(f"`workers` must be an integer ≥ 0 (0: work done in the main process), got {workers}")
    return workers


def _quit_worker(signum: int, frame: object) -> None:
    os._exit(0)  # at once and quietly: a KeyboardInterrupt could land outside the worker loop and print a traceback


#: what a worker's tensor hand-off thread raises when the main process stops in the middle of receiving a tensor
BROKEN_HANDOFF = (EOFError, ConnectionError)


def _quiet_broken_handoff(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """A worker's ``sys.excepthook``: silent for a hand-off the interrupted main process broke off, the default for
    anything else."""
    if issubclass(kind, BROKEN_HANDOFF):
        return
    sys.__excepthook__(kind, value, tb)


def init_worker(worker_id: int) -> None:
    """A DataLoader's ``worker_init_fn``: SIGINT ignored (the main process handles it and shuts the workers down),
    SIGTERM ends the worker at once and quietly (the DataLoader's shutdown sends it to a worker that does not stop in
    time), one torch thread, and no traceback when an interrupt breaks off a tensor hand-off.

    A worker hands a tensor to the main process through multiprocessing's file-descriptor server, a thread that
    reports its errors through ``sys.excepthook``; when SIGINT/SIGTERM stops the main process in the middle of
    receiving, that thread's connection ends (EOFError, ConnectionError) and the default hook printed a traceback
    under the "partial result in …" line. The worker's own errors never reach the hook (``guarded`` returns them).

    PyTorch's worker loop sets one thread already; this keeps it so: GNU OpenMP is not fork-safe, and a forked worker
    set to more threads crashed (segmentation fault, 2-core CPU) and hung on a 16-core GPU machine. (Nor
    cv2.setNumThreads: after a fork it joins the parent's pool threads and hangs.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _quit_worker)
    sys.excepthook = _quiet_broken_handoff
    torch.set_num_threads(1)


def start_method() -> str | None:
    """fork on Linux (fast start, nothing pickled); the platform's default elsewhere (spawn on macOS and Windows).
    Workers never touch CUDA: only the main process moves what they made to the device."""
    return "fork" if sys.platform.startswith("linux") else None


def loader(dataset: torch.utils.data.Dataset, workers: int, **options: Any) -> torch.utils.data.DataLoader:
    """A DataLoader of ``dataset`` in ``workers`` processes started as above (``init_worker``, ``start_method``);
    ``options``: the DataLoader's other arguments."""
    return torch.utils.data.DataLoader(dataset, num_workers=workers, worker_init_fn=init_worker,
                                       multiprocessing_context=start_method(), **options)


@dataclass(frozen=True)
class Failed:
    """An item whose making failed: ``message`` (naming the item) is raised by the main process as a
    ``StlensError``."""

    message: str


def guarded(make: Callable[[], Any], what: str) -> Any:
    """``make()``, or ``Failed``: a ``StlensError`` as it is; in a worker, any other exception as ``what``, its type
    and message, its traceback logged (in the main process it propagates, as without workers)."""
    try:
        return make()
    except StlensError as exc:
        return Failed(str(exc))
    except Exception as exc:
        if torch.utils.data.get_worker_info() is None:
            raise
        log.error("%s failed in a worker process:\n%s", what, traceback.format_exc())
        return Failed(f"{what}: {type(exc).__name__}: {exc}")


def checked(made: Iterable[Any], what: str = "item") -> Iterator[Any]:
    """The items of ``made`` (a DataLoader's), a ``Failed`` one raised as a ``StlensError``, and so is a worker that
    died (``what``: what the workers make, for the message)."""
    iterator = iter(made)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:  # "DataLoader worker (pid …) is killed by signal …" / "exited unexpectedly"
            if "DataLoader worker" not in str(exc):
                raise
            raise StlensError(f"a worker process making {what}s died ({str(exc).strip().splitlines()[0]}); "
                              f"`workers` 0 makes them in the main process") from exc
        if isinstance(item, Failed):
            raise StlensError(item.message)
        yield item


def shut_down(iterator: Iterator[Any]) -> None:
    """Stop a DataLoader iterator's workers now (not when it is collected)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def in_order(dataset: torch.utils.data.Dataset, workers: int) -> Iterator[Any]:
    """``dataset[0]``, ``dataset[1]``, … made here (``workers`` 0, or a single item) or in ``workers`` processes; a
    ``Failed`` item raises its message as a ``StlensError``."""
    count = len(dataset)
    if workers <= 0 or count <= 1:
        yield from checked(dataset[i] for i in range(count))
        return
    iterator = iter(loader(dataset, min(workers, count), batch_size=None))
    try:
        yield from checked(iterator)
    finally:
        shut_down(iterator)
