"""Further factors (docs/factors.md): ``playback`` pairs (the same content played at two speeds), ``speed`` pairs
(made by a synth world: ``SynthDataset.speed_pairs``), user factors (a function that makes a pair: ``UserPairs``) and
``FactorPairs``, which appends the pairs of further factors to a dynamic/static pair source under one index."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stlens.core.pair import Pair
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.io import ClipFrames, clip_or_whole, close_frames, open_clip_source, read_clip_source
from stlens.video.sampling import centre_crop, to_model_input

FACTORS = ("dynamic", "static")  # (as stlens.measure.estimate: pairs sits below measure)
FURTHER = ("playback", "speed")
"""The built-in further factors (after ``dynamic`` and ``static``)."""
PairMaker = Callable[[int, np.random.Generator], Any]
"""A user factor: ``make_pair(i, rng)`` → pair i as a ``Pair`` or ``(a, b)``, two inputs shaped as the model's."""
Factors = str | Sequence[str | tuple[str, PairMaker]] | None


def _entries(factors: Factors) -> list[str | tuple[str, PairMaker]]:
    if isinstance(factors, str):
        return [f.strip() for f in factors.split(",")]
    return list(factors or FACTORS)


def user_factors(factors: Factors) -> dict[str, PairMaker]:
    """The user factors among ``factors``: each ``(name, make_pair)`` entry, checked, by name."""
    found: dict[str, PairMaker] = {}
    for entry in _entries(factors):
        if isinstance(entry, str):
            continue
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str) and callable(entry[1])):
            raise StlensError(f"`factors`: an entry is a factor name or a (name, make_pair) tuple, got {entry!r}")
        name = entry[0].strip()
        if not name or "," in name or name in (*FACTORS, *FURTHER, "residual"):
            raise StlensError(f"`factors`: a user factor needs a new name without commas, not {entry[0]!r}")
        found[name] = entry[1]
    return found


def parse_factors(factors: Factors) -> tuple[str, ...]:
    """``dynamic,static,playback`` (a string or a list, whose entries may be ``(name, make_pair)`` user factors) →
    the factor names, ``dynamic`` and ``static`` first."""
    users = user_factors(factors)
    names = [e if isinstance(e, str) else e[0].strip() for e in _entries(factors)]
    known = (*FACTORS, *FURTHER)
    for name in names:
        if name not in known and name not in users:
            raise StlensError(f"`factors`: unknown factor {name!r}; choose from {', '.join(known)}, or pass "
                              f"(name, make_pair) for a factor of your own")
    if len(set(names)) != len(names):
        raise StlensError(f"`factors`: a factor is named twice in {','.join(names)}")
    if not set(FACTORS) <= set(names):
        raise StlensError(f"`factors` must include dynamic and static (they define the unit classes), got "
                          f"{','.join(names)}")
    return (*FACTORS, *(n for n in names if n not in FACTORS))


def playback_span(frames: int, stride: int) -> int:
    """Frames a playback pair needs: the clip at stride 2s spans 2s·(T − 1) + 1 frames."""
    return 2 * stride * (frames - 1) + 1


def playback_windows(video: np.ndarray, frames: int, stride: int, centre: int) -> tuple[np.ndarray, np.ndarray]:
    """The clip of ``frames`` frames at stride s and at stride 2s, both with frame ``centre`` at position T // 2 (the
    two windows share their middle frame): indices centre + s·(t − T//2) and centre + 2s·(t − T//2)."""
    offsets = np.arange(frames) - frames // 2
    slow, fast = centre + stride * offsets, centre + 2 * stride * offsets
    if fast[0] < 0 or fast[-1] >= len(video):
        raise StlensError(f"a playback pair centred on frame {centre} needs frames {fast[0]}..{fast[-1]}, the video "
                          f"has {len(video)}")
    return video[slow], video[fast]


@dataclass
class PlaybackPairs:
    """``pairs`` playback pairs from a clip source: pair i takes video (or synth clip) i mod len(source), a centre
    frame drawn from a generator seeded with (seed, code, i), and that clip at stride ``stride`` and 2·stride
    (``playback_windows``), centre-cropped to ``spec.size``. Synth worlds are rendered over the longer span (the same
    world, ``frames`` = ``playback_span``); videos shorter than the span are passed over for the next one."""

    source: Any
    spec: InputSpec
    pairs: int
    seed: int = 0
    code: int = 2
    stride: int = 1

    def __len__(self) -> int:
        return self.pairs

    def _video(self, i: int, whole: bool = False) -> tuple[np.ndarray | ClipFrames, str]:
        """Video (or synth clip) i mod len(source), or the next one long enough: opened for clip reads
        (``open_clip_source``: only the frames of the pair are decoded), or decoded whole (``whole``)."""
        span = playback_span(self.spec.frames, self.stride)
        if hasattr(self.source, "rerender"):  # a synth world: render the clip over the whole span
            longer = dataclasses.replace(self.source, frames=span)
            return longer[i % len(longer)].frames, longer.name(i % len(longer))
        videos = self.source.videos
        read = read_clip_source if whole else open_clip_source
        for step in range(len(videos)):
            path = videos[(i + step) % len(videos)]
            frames = read(path, short_side=self.spec.resize, partial=True)
            if len(frames) >= span:
                return frames, str(path)
            close_frames(frames)
        raise StlensError(f"`factors`: playback pairs need videos of at least {span} frames; none in "
                          f"{self.source.spec} is that long")

    def __getitem__(self, i: int) -> Pair:
        def make(whole: bool) -> Pair:
            video, name = self._video(i, whole)
            try:
                return self._pair(i, video, name)
            finally:
                close_frames(video)

        return clip_or_whole(make, f"playback pair {i}")

    def _pair(self, i: int, video: np.ndarray | ClipFrames, name: str) -> Pair:
        half = self.stride * 2 * (self.spec.frames // 2)
        last = len(video) - 1 - 2 * self.stride * (self.spec.frames - 1 - self.spec.frames // 2)
        rng = np.random.default_rng((self.seed, self.code, i))
        centre = int(rng.integers(half, last + 1))
        slow, fast = playback_windows(video, self.spec.frames, self.stride, centre)
        return Pair(self.code, to_model_input(centre_crop(slow, self.spec.size), self.spec),
                    to_model_input(centre_crop(fast, self.spec.size), self.spec), name)


@dataclass
class UserPairs:
    """``pairs`` pairs of a user factor: pair i is ``make(i, rng)`` with a generator seeded with (seed, code, i), a
    ``Pair`` (its factor code is replaced by ``code``) or ``(a, b)`` (arrays or tensors of one shape)."""

    name: str
    make: PairMaker
    pairs: int
    seed: int = 0
    code: int = 2

    def __len__(self) -> int:
        return self.pairs

    def __getitem__(self, i: int) -> Pair:
        made = self.make(i, np.random.default_rng((self.seed, self.code, i)))
        if isinstance(made, Pair):
            return Pair(self.code, made.a, made.b, made.source or f"{self.name}/{i}")
        if not (isinstance(made, tuple | list) and len(made) == 2):
            raise StlensError(f"`factors`: {self.name}'s make_pair must return a Pair or (a, b), got "
                              f"{type(made).__name__}")
        a, b = (torch.as_tensor(x, dtype=torch.float32) for x in made)
        if a.shape != b.shape:
            raise StlensError(f"`factors`: {self.name}'s pair {i} has inputs of shapes {tuple(a.shape)} and "
                              f"{tuple(b.shape)}; both must be shaped as the model's input")
        return Pair(self.code, a, b, f"{self.name}/{i}")


def further_pairs(name: str, source: Any, spec: InputSpec, pairs: int, seed: int, code: int,
                  users: dict[str, PairMaker] | None = None) -> Any:
    """The pair maker of a further factor: a built-in one, or a user factor of ``users``."""
    if users and name in users:
        return UserPairs(name, users[name], pairs, seed, code)
    if name == "playback":
        return PlaybackPairs(source, spec, pairs, seed, code)
    if name == "speed":
        if not hasattr(source, "speed_pairs"):
            raise StlensError("`factors`: speed needs a synth: world, whose ground truth gives the speed; "
                              f"{getattr(source, 'spec', source)} has none")
        return source.speed_pairs(spec, pairs, seed, code)
    raise StlensError(f"`factors`: unknown factor {name!r}; choose from {', '.join((*FACTORS, *FURTHER))}")


@dataclass
class FactorPairs:
    """A dynamic/static pair source (``base``) followed by the pairs of further factors, one indexable source: pair
    k < len(base) is base's, then each further maker's pairs in turn with their global index. Everything else
    (``source``, ``stylizer``, ``skipped``, …) is base's."""

    base: Any
    further: list[Any]

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "further") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def plan(self) -> FactorPairs:
        self.base.plan()
        return self

    def __len__(self) -> int:
        return len(self.base) + sum(len(f) for f in self.further)

    def spans(self) -> tuple[range, ...]:
        start, out = len(self.base), list(self.base.spans())
        for maker in self.further:
            out += [range(k, k + 1) for k in range(start, start + len(maker))]
            start += len(maker)
        return tuple(out)

    def __getitem__(self, index: int) -> Pair:
        k = operator.index(index)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        if k < len(self.base):
            return self.base[k]
        rest = k - len(self.base)
        for maker in self.further:
            if rest < len(maker):
                pair = maker[rest]
                pair.index = k
                return pair
            rest -= len(maker)
        raise AssertionError("unreachable")

    def __iter__(self) -> Iterator[Pair]:
        self.plan()
        for k in range(len(self)):
            yield self[k]
