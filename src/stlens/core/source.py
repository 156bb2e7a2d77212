"""The protocols that data flows through: a ``ClipSource`` (what ``stlens.open_data`` returns) and a ``PairSource``
(what ``stlens.make_pairs`` returns and ``stlens.measure`` reads).

Sources in stlens: ``stlens.video.source.VideoSource`` (a folder, a video file, an annotation file, ``sample:``,
``stylized:ROOT``) and ``stlens.synth.SynthDataset`` (``synth:<world>``). A source that makes its own pairs (the
synth dataset: re-rendering is its ideal stylizer) also has ``make_pairs(spec, pairs, *, stylizer, seed, flow,
flow_cache) -> PairSource``, which ``stlens.make_pairs`` calls instead of its video pair makers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from stlens.core.pair import Pair


@runtime_checkable
class ClipSource(Protocol):
    """An ordered, indexable set of clips with the spec it was opened from.

    ``len(source)`` items; ``source.name(i)`` names item i (a video's path, a synth clip's ``synth:<world>/...``);
    ``labels`` has one class index per item (None where unknown), or is empty when no label is known; ``missing``
    lists the items the source names but could not find, as ``{"source": ..., "reason": ...}`` (empty when none).
    """

    @property
    def spec(self) -> str: ...

    @property
    def labels(self) -> Sequence[int | None]: ...

    @property
    def missing(self) -> Sequence[dict[str, str]]: ...

    def __len__(self) -> int: ...

    def name(self, index: int) -> str: ...


@runtime_checkable
class PairSource(Protocol):
    """An indexable, iterable set of ``Pair`` (per pair index, a dynamic then a static pair) from one ``ClipSource``.

    ``plan()`` does the cheap work that must happen once, in the parent process, before pairs are made (probing the
    videos, setting each one's share; idempotent, returns the source itself); ``len()``, indexing and iteration call
    it when it has not run. ``len()`` is then the number of pairs (both factors) and ``ps[k]`` makes pair k alone, as
    a pure function of its recipe and k, in any process (the object pickles, for ``torch.utils.data.DataLoader``
    workers): ``[ps[k] for k in range(len(ps))]`` equals ``list(ps)``. ``spans()`` are the contiguous index ranges
    that share one decoded input (a video): a worker given whole spans decodes each input once. ``skipped`` lists the
    items of the source left out by the plan (unreadable, too short, listed but missing), as ``{"source": ...,
    "reason": ...}``; ``stylizer`` names the appearance change of the dynamic pairs."""

    skipped: list[dict[str, str]]

    @property
    def source(self) -> ClipSource: ...

    @property
    def stylizer(self) -> str: ...

    def plan(self) -> PairSource: ...

    def spans(self) -> Sequence[range]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Pair: ...

    def __iter__(self) -> Iterator[Pair]: ...
