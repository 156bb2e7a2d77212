"""Work split over processes with ``torch.distributed`` — started by ``torchrun`` — on CPUs (gloo) and GPUs (NCCL):
the world of this process, contiguous shares of global indices, joining the process group, and the collectives of a
run (gather in rank order, agree on errors, stop when another rank failed). Measurements use it as follows.

Rank r of W measures the pairs with global indices in ``shard(total, r, W)`` (a contiguous range: a video's pairs
stay together, so it is decoded once); the ranks' ``Accumulator`` states are gathered and merged in rank order
(centred moments need the exact pairwise merge, not a plain sum, to stay exact); only rank 0 writes. A rank that
fails tells the others through the process group's key-value store, and they stop at their next batch; an
interrupt ends each rank without writing anything (torchrun forwards SIGINT/SIGTERM to every rank).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch

from stlens.errors import StlensError

_FAILED_KEY = "stlens/failed"
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in a run: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def label(self) -> str:
        """``rank R of W`` (for messages), or empty for a single process."""
        return f"rank {self.rank} of {self.size}" if self.distributed else ""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise StlensError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def launched() -> World:
    """The world torchrun (or another launcher setting RANK, WORLD_SIZE, LOCAL_RANK) started this process in;
    a single process otherwise."""
    size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local = _env_int("LOCAL_RANK")
    if size < 1 or not 0 <= rank < size:
        raise StlensError(f"RANK={rank} and WORLD_SIZE={size} do not describe a process of a run")
    return World(rank, size, rank if local is None else local)


def current() -> World:
    """The world of the initialized default process group, else ``launched()`` (which may be a single process)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        size = dist.get_world_size()
        rank = dist.get_rank()
        local = _env_int("LOCAL_RANK")
        return World(rank, size, rank if local is None else local)
    return launched()


def shard(total: int, world: World) -> range:
    """The global pair indices of ``world.rank``: a contiguous range, sizes differing by at most one."""
    return range(total * world.rank // world.size, total * (world.rank + 1) // world.size)


def rank_device(device: str | None, world: World) -> str | None:
    """``device`` for this rank: under a multi-process run, ``auto`` (when CUDA is there) and ``cuda`` mean
    ``cuda:LOCAL_RANK`` (one GPU per process); an explicit ``cuda:K``, ``cpu`` or ``mps`` stays as it is."""
    if not world.distributed or device is None:
        return device
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count()
        if world.local_rank >= count:
            raise StlensError(f"`device` {device}: {world.label} has local rank {world.local_rank}, and this machine "
                              f"has {count} CUDA GPU(s); start at most {count} processes per machine")
        return f"cuda:{world.local_rank}"
    return device


@contextlib.contextmanager
def joined(device: torch.device | None = None) -> Iterator[World]:
    """Join the process group of a torchrun-launched run (NCCL when ``device``, this process's resolved device, is a
    CUDA GPU, else gloo) for the block and leave it afterwards; a single process (or a group the caller set up)
    passes through."""
    world = launched()
    dist = torch.distributed
    if not world.distributed or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise StlensError("this PyTorch has no torch.distributed: run a single process (not under torchrun)")
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield current()
    finally:
        dist.destroy_process_group()


class Group:
    """The collectives of a measurement over the default process group: ``gather`` (objects, through gloo even
    when the tensors go through NCCL), ``stop_if_failed`` and ``fail``."""

    def __init__(self, world: World):
        self.world = world
        dist = torch.distributed
        self._objects = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self._store = dist.distributed_c10d._get_default_store()

    def gather(self, obj: object) -> list[object]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[object] = [None] * self.world.size
        with self._peers_gone():
            torch.distributed.all_gather_object(out, obj, group=self._objects)
        return out

    def gather_to_first(self, obj: object) -> list[object] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
        out: list[object] | None = [None] * self.world.size if self.world.rank == 0 else None
        with self._peers_gone():
            torch.distributed.gather_object(obj, out, dst=0, group=self._objects)
        return out

    @contextlib.contextmanager
    def _peers_gone(self) -> Iterator[None]:
        """A collective broken by a process that went away (it failed or was stopped) → a ``StlensError``."""
        try:
            yield
        except RuntimeError as exc:  # gloo: "Connection closed by peer"; NCCL: DistBackendError (a RuntimeError)
            self.stop_if_failed()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's source location
            raise StlensError(f"another process of the run stopped before the results were gathered ({first[:200]}); "
                              f"see its messages") from None

    def fail(self, message: str) -> None:
        """Tell the other ranks that this one failed, unless another rank did first (best effort: the store may be
        gone already)."""
        with contextlib.suppress(Exception):  # the first failure is kept: later ones are often its consequence
            self._store.compare_set(_FAILED_KEY, "", f"rank {self.world.rank}: {message}")

    def fail_with(self, exc: BaseException) -> None:
        """``fail`` with the message of ``exc``: a ``StlensError``'s as it is, another's after its type."""
        self.fail(str(exc) if isinstance(exc, StlensError) else f"{type(exc).__name__}: {exc}")

    def stop_if_failed(self) -> None:
        """Raise a ``StlensError`` naming the rank when another rank failed (a cheap check, once per batch)."""
        try:
            failed = self._store.check([_FAILED_KEY])
        except Exception:
            return
        if failed:
            message = self._store.get(_FAILED_KEY).decode(errors="replace")
            raise StlensError(f"stopped because {message}")

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        with self._peers_gone():
            torch.distributed.broadcast_object_list(box, src=0, group=self._objects)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        self.gather(None)

    def agree(self, error: str | None) -> None:
        """Every rank says whether its step went well; any error (the lowest rank's) is raised on every rank."""
        errors = self.gather(error)
        for rank, message in enumerate(errors):
            if message is not None:
                raise StlensError(message if rank == self.world.rank else f"rank {rank} failed: {message}")


@contextlib.contextmanager
def failing_together(group: Group | None, folder=None) -> Iterator[None]:
    """Within the block, an error is told to the other ranks (``group.fail_with``; an interrupt is not: torchrun
    forwards it to every rank) and abandons ``folder`` (a claimed ``RunFolder``, or None); it propagates."""
    try:
        yield
    except BaseException as exc:
        if group is not None and isinstance(exc, Exception):
            group.fail_with(exc)
        if folder is not None:
            folder.abandon()
        raise


def on_first_rank(world: World, step: Callable[[], T], group: Group | None = None) -> T | None:
    """Run ``step`` on rank 0 only (claiming an output folder, writing a file) and make every rank agree on how it
    went: a ``StlensError`` there is raised on every rank (on rank 0 as it is, elsewhere as ``rank 0 failed: …``).
    Returns ``step()``'s value on rank 0 and None on the others; a single process just runs ``step``."""
    if not world.distributed:
        return step()
    result: T | None = None
    error = None
    if world.rank == 0:
        try:
            result = step()
        except StlensError as exc:
            error = str(exc)
    (group or Group(world)).agree(error)
    return result
