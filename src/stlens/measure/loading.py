"""Batches of pairs for the measurement loop, made in the main process or in ``torch.utils.data.DataLoader`` worker
processes (``--workers``).

With workers, the batches are grouped in chunks — the consecutive batches of one video, split so that there are a
few chunks per worker — and worker w makes chunks w, w + W, w + 2W, …: each worker decodes a video once per chunk
and keeps only the video it decoded last. Batches reach the main process tagged with the global index of their first
pair, in the DataLoader's round-robin order; the loop applies them in index order (``InOrder``), so the result
does not depend on the number of workers.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from stlens.core.instances import Instances
from stlens.core.pair import Pair
from stlens.core.workers import Failed, checked, guarded, loader, resolve_workers, shut_down
from stlens.errors import StlensError
from stlens.video.device_stylizers import ClipStyles


def _as_pair(item) -> Pair:
    if isinstance(item, Pair):
        return item
    if isinstance(item, (tuple, list)) and len(item) == 3:
        return Pair(int(item[0]), item[1], item[2])
    raise StlensError(f"a pair must be a stlens Pair or a (factor, a, b) tuple, got {type(item).__name__}")


def batches(pairs: Iterable, batch_size: int) -> Iterator[list[Pair]]:
    """Group pairs into lists of ``batch_size`` (the last one may be shorter)."""
    if batch_size < 1:
        raise StlensError(f"`batch_size` must be ≥ 1, got {batch_size}")
    batch: list[Pair] = []
    for item in pairs:
        batch.append(_as_pair(item))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def indexable(pairs) -> bool:
    """True for a pair source that can be made in worker processes: ``plan()``, ``len()`` and ``ps[k]``."""
    return all(hasattr(pairs, name) for name in ("plan", "__getitem__", "__len__"))


def stack_inputs(inputs: list) -> torch.Tensor | tuple:
    """Stack per-video inputs into a batch; tuple inputs (multi-input models) are stacked element-wise."""
    if isinstance(inputs[0], (tuple, list)):
        return tuple(torch.stack([x[i] for x in inputs]) for i in range(len(inputs[0])))
    return torch.stack(inputs)


def to_device(batch: torch.Tensor | tuple, device: torch.device) -> torch.Tensor | tuple:
    """Move a batch (a tensor or a tuple of tensors) to ``device``; the copy from pinned memory does not block."""
    def move(x: torch.Tensor) -> torch.Tensor:
        return x if x.device == device else x.to(device, non_blocking=x.device.type == "cpu" and x.is_pinned())

    return tuple(move(x) for x in batch) if isinstance(batch, tuple) else move(batch)


STYLIZE_ON = ("auto", "device", "workers")


def styled_where(pairs, stylize_on: str, device: torch.device):
    """The pairs to measure when their styling runs ``stylize_on`` (``auto``: on the device when it is a GPU,
    ``device``, ``workers``): ``pairs`` as given, or their copy that leaves the styling and frame shuffling to the
    device (``VideoPairs.on_device``), and where it runs (``device`` or ``workers``). ``auto`` keeps pairs that
    cannot be styled on the device (another pair maker, a stylizer without a device version) in the workers;
    ``device`` refuses them."""
    if stylize_on not in STYLIZE_ON:
        raise StlensError(f"`stylize_on` must be one of {', '.join(STYLIZE_ON)}, got {stylize_on!r}")
    if stylize_on == "workers" or (stylize_on == "auto" and torch.device(device).type != "cuda"):
        return pairs, "workers"
    if torch.device(device).type not in ("cuda", "cpu"):
        raise StlensError(f"`stylize_on` device runs on CUDA or the CPU, not {torch.device(device).type} (the palette "
                          "stylizer's channel mixing needs float64); use auto or workers")
    deferred = pairs.on_device() if hasattr(pairs, "on_device") else None
    if deferred is not None:
        return deferred, "device"
    if stylize_on == "device":
        raise StlensError("`stylize_on` device needs video pairs (make_pairs of a video source, without `flow`) "
                          "styled by palette, fourier or identity; use auto or workers")
    return pairs, "workers"


class PairBatch:
    """A batch of n pairs ready for the model: ``inputs`` stacks the n first videos then the n second ones (2n, …;
    a tuple of such tensors for multi-input models), ``factor`` (n,) and ``index`` (the pairs' global indices, None
    where unknown), ``targets`` (per pair the instance tracks of its two videos, or None where a pair has none). Made
    in the workers, so that the DataLoader can pin it (``pin_memory``) for the copy to a GPU.

    ``styles``: None when ``inputs`` are the model inputs; for pairs whose styling is left to the device
    (``VideoPairs.on_device``), ``inputs`` are the uint8 clips (n, T, H, W, 3: the two videos of a pair share their
    clip; 2n where they do not) and ``styles`` the ``ClipStyles`` of the 2n videos: ``model_inputs`` stylizes,
    shuffles and normalises them where the model runs."""

    def __init__(self, factor: np.ndarray, index: list[int | None], inputs: torch.Tensor | tuple,
                 targets: list[tuple[Instances, Instances] | None] | None = None, styles: ClipStyles | None = None):
        self.factor = factor
        self.index = index
        self.inputs = inputs
        self.targets = [None] * len(factor) if targets is None else targets
        self.styles = styles

    @classmethod
    def of(cls, pairs: list) -> PairBatch:
        pairs = [_as_pair(p) for p in pairs]
        deferred = [p.styles is not None for p in pairs]
        if any(deferred) and not all(deferred):
            raise StlensError("a batch mixes pairs styled on the device with model inputs (`Pair.styles`)")
        factor, index = np.array([p.factor for p in pairs]), [p.index for p in pairs]
        targets = [p.targets for p in pairs]
        if not all(deferred):
            return cls(factor, index, stack_inputs([p.a for p in pairs] + [p.b for p in pairs]), targets)
        styles = [p.styles[0] for p in pairs] + [p.styles[1] for p in pairs]
        if all(p.a is p.b for p in pairs):  # one clip per pair, styled twice on the device: half the bytes
            n = len(pairs)
            return cls(factor, index, torch.stack([p.a for p in pairs]), targets,
                       ClipStyles(styles, np.concatenate([np.arange(n), np.arange(n)])))
        return cls(factor, index, torch.stack([p.a for p in pairs] + [p.b for p in pairs]), targets,
                   ClipStyles(styles))

    def model_inputs(self, device: torch.device) -> torch.Tensor | tuple:
        """The inputs on ``device`` (``to_device``), stylized, shuffled and normalised there when their styling was
        left to the device (``styles``)."""
        inputs = to_device(self.inputs, device)
        return inputs if self.styles is None else self.styles.apply(inputs)

    def __len__(self) -> int:
        return len(self.factor)

    def pin_memory(self) -> PairBatch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``, on CUDA)."""
        pin = torch.Tensor.pin_memory
        self.inputs = tuple(pin(x) for x in self.inputs) if isinstance(self.inputs, tuple) else pin(self.inputs)
        return self


def chunk_batches(starts: range, stop: int, batch_size: int, spans: Sequence[range] | None,
                  workers: int) -> list[list[range]]:
    """The batches ``[s, min(s + batch_size, stop))`` for s in ``starts``, grouped in chunks of consecutive batches
    that start in the same video span (``spans``; one span when unknown), each chunk at most ⌈batches / 2W⌉ long
    so that every worker has work."""
    ranges = [range(s, min(s + batch_size, stop)) for s in starts]
    longest = max(1, math.ceil(len(ranges) / (2 * max(1, workers))))
    span_starts = sorted(span.start for span in spans or () if len(span))

    def video(r: range) -> int:
        return bisect.bisect_right(span_starts, r.start)

    chunks: list[list[range]] = []
    for _, group in itertools.groupby(ranges, key=video):
        group = list(group)
        chunks.extend(group[i:i + longest] for i in range(0, len(group), longest))
    return chunks


class _WorkerChunks(torch.utils.data.IterableDataset):
    """What the DataLoader's workers iterate: worker w of W makes chunks w, w + W, …, and yields (first index,
    ``PairBatch``) for each batch, or ``Failed`` for a batch that could not be made (and stops): a pair's
    ``StlensError`` as it is, another error naming the batch's pairs (e.g. inputs that do not stack: a bug of the
    pair source)."""

    def __init__(self, pairs, chunks: list[list[range]]):
        self.pairs = pairs
        self.chunks = chunks

    def __iter__(self) -> Iterator[tuple[int, PairBatch] | Failed]:
        info = torch.utils.data.get_worker_info()
        mine = self.chunks if info is None else self.chunks[info.id::info.num_workers]
        for chunk in mine:
            for r in chunk:
                made = guarded(lambda r=r: PairBatch.of([self.pairs[k] for k in r]),
                               f"pairs {r.start}..{r.stop - 1} made into a batch")
                if isinstance(made, Failed):
                    yield made
                    return
                yield r.start, made


def _as_is(item):
    return item


def _counted(made: Iterable[list[Pair]], start: int) -> Iterator[tuple[int, list[Pair]]]:
    for batch in made:
        yield start, batch
        start += len(batch)


Made = tuple[int, "list[Pair] | PairBatch"]


@contextlib.contextmanager
def pair_batches(pairs: Iterable, batch_size: int, workers: int = 0, device: torch.device | str = "cpu",
                 seed: int = 0, indices: range | None = None) -> Iterator[Iterator[Made]]:
    """The batches of ``pairs``: (global index of the first pair, batch) with batches of ``batch_size`` consecutive
    pairs, made in ``workers`` processes when ``pairs`` is indexable (``indexable``) and ``workers`` > 0 — as
    stacked ``PairBatch`` es, in the order the workers deliver them (not the index order; see the module docstring)
    —, else in the main process, in order (lists of pairs; ``PairBatch.of`` stacks them).

    ``indices``: the global pair indices to make (a contiguous range: the share of one process of a distributed
    run, or what is left of a resumed one); None = all. Batch boundaries lie at start + j·batch_size whatever the
    number of workers.

    With workers: ``pairs.plan()`` runs here, once; each worker runs one torch thread; pinned memory on CUDA; a
    ``StlensError`` in a worker is raised here as it is (a worker that dies, too); the workers are shut down when the
    block ends (an interrupt included)."""
    if batch_size < 1:
        raise StlensError(f"`batch_size` must be ≥ 1, got {batch_size}")
    workers = resolve_workers(workers)
    if not indexable(pairs):
        start = 0 if indices is None else indices.start
        if start > 0:
            pairs = itertools.islice(pairs, start, indices.stop)  # made and dropped: no index to jump to
        yield _counted(batches(pairs, batch_size), start)
        return
    total = len(pairs.plan())
    indices = range(total) if indices is None else indices
    if workers == 0:
        whole = indices == range(total)
        yield _counted(batches(pairs if whole else (pairs[k] for k in indices), batch_size), indices.start)
        return
    spans = pairs.spans() if hasattr(pairs, "spans") else None
    chunks = chunk_batches(range(indices.start, indices.stop, batch_size), indices.stop, batch_size, spans, workers)
    iterator = iter(loader(
        _WorkerChunks(pairs, chunks), min(workers, max(1, len(chunks))), batch_size=None, collate_fn=_as_is,
        pin_memory=torch.device(device).type == "cuda", persistent_workers=False,
        generator=torch.Generator().manual_seed(seed)))  # its own generator: the global RNG is not drawn from
    try:
        yield checked(iterator, "pair")
    finally:
        shut_down(iterator)


class InOrder:
    """Puts batches that arrive in any order back in index order: ``put(start, n, item)`` then ``ready()`` gives the
    items whose turn has come (batch starts are consecutive: each next start = start + n)."""

    def __init__(self, start: int):
        self.next = start
        self._waiting: dict[int, tuple[int, object]] = {}

    def put(self, start: int, n: int, item: object) -> None:
        self._waiting[start] = (n, item)

    def ready(self) -> Iterator[tuple[int, object]]:
        while self.next in self._waiting:
            n, item = self._waiting.pop(self.next)
            start, self.next = self.next, self.next + n
            yield start, item

    def __len__(self) -> int:
        return len(self._waiting)
