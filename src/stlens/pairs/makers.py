"""Pair makers: dynamic pairs (same clip, two styles) and static pairs (same styled clip, frames shuffled)."""

from __future__ import annotations

import bisect
import copy
import logging
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from stlens.core.pair import DYNAMIC, STATIC, Pair, check_clip_frames, frame_shuffle, shuffle_order
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.io import (
    ClipFrames,
    clip_or_whole,
    close_frames,
    open_clip_source,
    probe_clip_source,
    read_clip_source,
)
from stlens.video.sampling import clip_indices, sample_clip, segment_of, to_model_input
from stlens.video.source import VideoSource
from stlens.video.stylizers import draw_seed, draw_style, get_stylizer

log = logging.getLogger("stlens")


class VideoShare(NamedTuple):
    """One usable video in the plan of a ``VideoPairs``: its index in ``source.videos``, its share (pairs per
    factor), what its probe found (``(frames, exact)``) and the global index of its first pair. Its pairs are
    indices ``start .. start + 2 * pairs - 1`` (dynamic and static pairs alternating, pair i at 2i and 2i + 1)."""

    video: int
    pairs: int
    probe: tuple[int | None, bool]
    start: int

    @property
    def stop(self) -> int:
        return self.start + 2 * self.pairs


@dataclass
class VideoPairs:
    """Iterable of ``Pair`` drawn from a ``VideoSource``: ``pairs`` per factor, spread evenly over the videos.

    Each video is opened once (short side resized) and yields its share of clips, decoding only the frames they
    need (``open_clip_source``: the frames of a whole decode, bit for bit); pair i of video v is drawn from a
    generator seeded with (seed, v, factor, i), so pairs are reproducible. Before its share is set, every video is
    probed cheaply (container header and first frame, or the image files of a frame folder; only as far ahead as
    the shares need): videos that cannot be opened or are shorter than a clip are skipped and listed in ``skipped``,
    and the shares are spread over the usable ones, so the count asked for is met whenever they allow it. A video
    that passes the probe but then cannot be decoded (or gives fewer frames than a clip) is a ``StlensError`` naming
    it; one that decodes only partly (truncated) is used with a warning giving the frames read vs expected.
    Clips need at least 2 frames (a 1-frame clip is its own frame-shuffled copy).

    Indexable, for pair making in worker processes (``torch.utils.data.DataLoader``): ``plan()`` probes the videos
    and sets the shares once (``len()``, indexing and iteration call it when it has not run; it is kept on the object
    and travels with it when pickled, so call it in the parent process), and ``ps[k]`` makes pair k alone, a pure
    function of its recipe (seed, video, factor, i) and k: ``[ps[k] for k in range(len(ps))] == list(ps)``. The pairs
    of one video are contiguous in k (``spans()``); the object keeps the one video it opened last (and the frames of
    its clips read so far), so indices visited in order open each video once per process. The object pickles
    without that video, without open files and without its stylizer functions (they are looked up again on first
    use).

    Where the source gives a video a (start, end) segment (Diving48 ``start_frame``/``end_frame``), every clip of it
    lies inside frames [start, end): ``end`` is exclusive, as in ``clip_indices``. A video whose segment is shorter
    than a clip, or has fewer frames than a clip inside the video, is skipped by the probe (before shares are set)
    and listed in ``skipped`` with that reason. Videos without a segment give the same pairs as before.

    Args:
        source: the videos (a ``VideoSource``: ``stlens.open_data`` of a folder, a file, an annotation file,
            ``sample:``).
        spec: how clips are sampled and normalized (the model's ``InputSpec``).
        pairs: pairs per factor.
        stylizer: the appearance change of the dynamic pairs: ``NAME[,NAME...]`` (``palette``, ``fourier``, ``npr``,
            ``neural``, ...).
        seed: the seed of the pairs' clips and styles.
        skipped: the videos skipped by the probe, as ``{"source", "reason"}`` (filled by ``plan()``; leave empty).

    Examples:
        >>> spec = stlens.InputSpec(frames=4, stride=1, size=32, resize=32)
        >>> pairs = stlens.VideoPairs(stlens.open_data("sample:"), spec, pairs=1)
        >>> [(pair.factor, tuple(pair.a.shape)) for pair in pairs]
        [(0, (3, 4, 32, 32)), (1, (3, 4, 32, 32))]
    """

    source: VideoSource
    spec: InputSpec
    pairs: int
    stylizer: str = "palette"
    seed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    # The segment of the video whose pairs are being drawn (None: the whole video); set by ``_video`` for ``_pair``
    # (not an argument, so that subclasses keep the signature of ``_pair``).
    _segment: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)
    # The plan (``plan()``): the usable videos with their shares, in order; None until planned.
    _plan: tuple[VideoShare, ...] | None = field(default=None, init=False, repr=False, compare=False)
    # The last decoded video: (index in source.videos, frames, segment); never pickled.
    _cache: tuple[int, np.ndarray, tuple[int, int] | None] | None = field(default=None, init=False, repr=False,
                                                                          compare=False)
    # The stylizer functions (``get_stylizer(stylizer)``); never pickled (a module: stylizer may not pickle).
    _stylizer_list: list | None = field(default=None, init=False, repr=False, compare=False)
    # Leave the styling and frame shuffling to the device (``on_device``): pairs of uint8 clips and their styles.
    _deferred: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise StlensError(f"`pairs` must be ≥ 1, got {self.pairs}")
        check_clip_frames(self.spec.frames)
        self._stylizer_list = get_stylizer(self.stylizer)  # checked now: an unknown name fails here

    @property
    def _stylizers(self) -> list:
        if self._stylizer_list is None:  # after unpickling
            self._stylizer_list = get_stylizer(self.stylizer)
        return self._stylizer_list

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_cache=None, _stylizer_list=None, _segment=None)
        return state

    def on_device(self) -> VideoPairs | None:
        """A copy of these pairs whose styling and frame shuffling are left to the device the model runs on, or None
        when they cannot be (a subclass that makes its pairs otherwise, or a stylizer without a device version:
        ``stlens.video.device_stylizers.ON_DEVICE``). Pair k of the copy holds the uint8 cropped clips of pair k and
        their styles (``Pair.styles``: the same draws from the same seeds), and
        ``stlens.video.device_stylizers.ClipStyles.apply`` turns a batch of them into the model inputs of pair k
        (equal within float rounding; docs/scaling.md)."""
        from stlens.video.device_stylizers import runs_on_device

        if type(self)._pair is not VideoPairs._pair or not runs_on_device([n for n, _ in self._stylizers]):
            return None
        other = copy.copy(self)  # (without the decoded video: see __getstate__)
        other._deferred = True
        return other

    def __len__(self) -> int:
        """The pairs the plan makes (both factors): ``2 * pairs``, or fewer when the usable videos cannot give as
        many (``plan()`` runs first when it has not)."""
        return self.plan()._plan[-1].stop

    def plan(self) -> VideoPairs:
        """Probe the videos and set each usable one's share (once; returns ``self``): fills ``skipped``; a
        ``StlensError`` when no video is usable (``skipped`` says why); a warning when the usable videos give fewer
        pairs than asked. Probing stops as soon as the shares are known (see the class docstring)."""
        if self._plan is not None:
            return self
        self.skipped = [dict(m) for m in self.source.missing]
        videos = self.source.videos
        probes: list[tuple[int | None, bool] | None] = []  # per video probed so far; None: skipped
        usable = 0  # usable videos among those probed
        before = 0  # usable videos before video v
        remaining = self.pairs
        shares: list[VideoShare] = []
        for v in range(len(videos)):
            if remaining <= 0:
                break
            # Probe ahead until `remaining` usable videos are known from v on (each then gets 1 pair), or to the end.
            while len(probes) < len(videos) and (len(probes) <= v or usable - before < remaining):
                probes.append(self._probe_video(len(probes)))
                usable += probes[-1] is not None
            if probes[v] is None:
                continue
            share = math.ceil(remaining / (usable - before))
            before += 1
            shares.append(VideoShare(v, share, probes[v], shares[-1].stop if shares else 0))
            remaining -= share
        if remaining == self.pairs:
            reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in self.skipped[:3])
            raise StlensError(f"no usable video in {self.source.spec}: all {len(videos)} skipped ({reasons})")
        if remaining > 0:
            log.warning("only %d of %d pairs per factor could be made", self.pairs - remaining, self.pairs)
        self._plan = tuple(shares)
        return self

    def spans(self) -> tuple[range, ...]:
        """The global pair indices of each planned video, in order (contiguous, together ``range(len(self))``):
        a worker given whole spans decodes each of its videos once."""
        return tuple(range(share.start, share.stop) for share in self.plan()._plan)

    def _video(self, share: VideoShare, whole: bool = False) -> np.ndarray | ClipFrames:
        """The frames of the planned video ``share`` (the cached ones when it was the last opened), read on demand
        (``ClipFrames``: only the frames its clips need are decoded) or, with ``whole`` (or where the file does not
        allow it), decoded whole; sets ``_segment`` for ``_pair``."""
        if self._cache is None or self._cache[0] != share.video or (whole and not isinstance(self._cache[1],
                                                                                             np.ndarray)):
            self._drop_cache()  # never two videos in memory
            path = self.source.videos[share.video]
            frames = self._frames(path, share.probe, whole=whole)
            segment = self._in_segment(path, frames, segment_of(self.source, share.video))
            if hasattr(frames, "expect"):  # a ClipFrames (or several, one per style: stylized pairs)
                frames.expect(self._clips(share, frames.shape[-4], segment))
            self._cache = (share.video, frames, segment)
        _, frames, self._segment = self._cache
        return frames

    def _clips(self, share: VideoShare, length: int, segment: tuple[int, int] | None) -> np.ndarray:
        """The frames of every clip of the video's share (each pair's clip is the first draw of its generator, see
        ``_pair``): a decoder passing them keeps them for the pairs to come."""
        clips = [clip_indices(length, self.spec.frames, self.spec.stride,
                              np.random.default_rng((self.seed, share.video, factor, i)), segment=segment)
                 for i in range(share.pairs) for factor in (DYNAMIC, STATIC)]
        return np.unique(np.concatenate([c for c in clips if c is not None] or [np.zeros(0, int)]))

    def _drop_cache(self) -> None:
        if self._cache is not None:
            close_frames(self._cache[1])
        self._cache = None

    def __getitem__(self, index: int) -> Pair:
        """Pair ``index`` (0 ≤ index < ``len(self)``; negative counts from the end): pair i of a planned video v,
        dynamic at its even and static at its odd indices, drawn from a generator seeded with (seed, v, factor, i).
        A video that passed the probe but cannot be decoded is a ``StlensError`` naming it."""
        plan = self.plan()._plan
        k, total = operator.index(index), plan[-1].stop
        if k < 0:
            k += total
        if not 0 <= k < total:
            raise IndexError(f"pair {index} out of range for {total} pairs")
        share = plan[bisect.bisect_right(plan, k, key=operator.attrgetter("start")) - 1]
        i, odd = divmod(k - share.start, 2)
        factor = STATIC if odd else DYNAMIC
        name = str(self.source.videos[share.video])
        pair = clip_or_whole(lambda whole: self._pair(self._video(share, whole=whole), factor,
                                                      np.random.default_rng((self.seed, share.video, factor, i)),
                                                      name), name)
        pair.index = k
        return pair

    def _pair(self, frames: np.ndarray, factor: int, rng: np.random.Generator, source: str) -> Pair:
        spec = self.spec
        _, clip = sample_clip(frames, spec, rng, segment=self._segment)
        if self._deferred:
            return self._deferred_pair(clip, factor, rng, source)
        first, seed_a = draw_style(clip, self._stylizers, rng)
        if factor == DYNAMIC:
            second, _ = draw_style(clip, self._stylizers, rng, avoid=seed_a)
        else:
            second = frame_shuffle(first, rng)
        return Pair(factor, to_model_input(first, spec), to_model_input(second, spec), source)

    def _deferred_pair(self, clip: np.ndarray, factor: int, rng: np.random.Generator, source: str) -> Pair:
        """``_pair`` with the styling and shuffling left to the device: the same draws from ``rng``, the uint8 clip
        twice and the two styles (``Pair.styles``)."""
        from stlens.video.device_stylizers import clip_style

        stylizers, shape, norm = self._stylizers, clip.shape[:3], (self.spec.mean, self.spec.std)
        chosen, seed_a = draw_seed(stylizers, rng)
        first = clip_style(stylizers[chosen][0], seed_a, *shape, *norm)
        if factor == DYNAMIC:
            chosen, seed_b = draw_seed(stylizers, rng, avoid=seed_a)
            second = clip_style(stylizers[chosen][0], seed_b, *shape, *norm)
        else:
            second = first.shuffled(shuffle_order(len(clip), rng))
        frames = torch.from_numpy(np.ascontiguousarray(clip))
        return Pair(factor, frames, frames, source, styles=(first, second))

    def _min_frames(self) -> int:
        """Frames a video needs to give a pair."""
        return self.spec.frames

    def _probe(self, path) -> tuple[int | None, bool] | None:
        """The cheap look at a video before shares are set: ``(frames, exact)`` (see ``probe_clip_source``), or None
        when it is skipped (and listed in ``skipped``). A count estimated close to what a clip needs is made exact by
        decoding the video."""
        need = self._min_frames()
        try:
            frames, exact = probe_clip_source(path)
            if frames is None or (not exact and frames < need + _tolerance(need, exact)):
                frames, exact = len(read_clip_source(path, short_side=self.spec.resize, partial=True)), True
        except StlensError as exc:
            self._skip(path, str(exc).removeprefix(f"{path}: "))
            return None
        if frames < self.spec.frames:
            self._skip(path, f"shorter than the clip ({frames} < {self.spec.frames} frames)")
            return None
        return frames, exact

    def _probe_video(self, index: int) -> tuple[int | None, bool] | None:
        """``_probe`` of video ``index``; where the source gives it a segment, the video is also skipped (None) when
        the segment is shorter than a clip (without opening it) or has fewer frames than a clip inside the video."""
        path, segment = self.source.videos[index], segment_of(self.source, index)
        need = self._min_frames()
        if segment is not None and segment[1] - segment[0] < need:
            what = "the clip" if need == self.spec.frames else "the frames a pair needs"
            self._skip(path, f"its segment [{segment[0]}, {segment[1]}) is shorter than {what} "
                             f"({segment[1] - segment[0]} < {need} frames)")
            return None
        probe = self._probe(path)
        if probe is None or segment is None:
            return probe
        (start, end), (frames, exact) = segment, probe
        try:
            if not exact and min(end, frames - _tolerance(frames, exact)) - start < need:  # estimated: count them
                frames, exact = len(read_clip_source(path, short_side=self.spec.resize, partial=True)), True
        except StlensError as exc:
            self._skip(path, str(exc).removeprefix(f"{path}: "))
            return None
        inside = max(0, min(end, frames) - start)
        if inside < need:
            self._skip(path, f"only {inside} frames of its segment [{start}, {end}) are in the video ({frames} "
                             f"frames), fewer than the {need} a clip needs")
            return None
        return frames, exact

    def _in_segment(self, path, frames: np.ndarray, segment: tuple[int, int] | None) -> tuple[int, int] | None:
        """``segment`` of a decoded video that passed ``_probe_video``; a ``StlensError`` naming the video when fewer
        frames than a pair needs were decoded inside it (truncated after the probe)."""
        if segment is None:
            return None
        (start, end), need = segment, self._min_frames()
        inside = max(0, min(end, len(frames)) - start)
        if inside < need:
            raise StlensError(f"{path}: read only {len(frames)} frames, so {inside} of its segment [{start}, {end}), "
                              f"fewer than the {need} a clip needs; remove or repair it")
        return segment

    def _frames(self, path, probe: tuple[int | None, bool], whole: bool = False) -> np.ndarray | ClipFrames:
        """Open a video that passed ``_probe`` for clip reads (``open_clip_source``; ``whole``: decode it whole, as
        ``read_clip_source``): a ``StlensError`` naming it when it now cannot be decoded or gives fewer frames than a
        pair needs; a warning when it gives fewer frames than the probe said (truncated)."""
        expected, exact = probe
        try:
            read = read_clip_source if whole else open_clip_source
            frames = read(path, short_side=self.spec.resize, partial=True)
        except StlensError as exc:
            raise StlensError(f"{exc} (it passed the first check, so its share of pairs was counted on; "
                              f"remove or repair it)") from exc
        need = self._min_frames()
        short = expected is not None and len(frames) < expected - _tolerance(expected, exact)
        if len(frames) < need:
            raise StlensError(f"{path}: read only {len(frames)} frames"
                              + (f" of the {expected} its header announces (truncated or damaged)" if short else "")
                              + f", fewer than the {need} a clip needs; remove or repair it")
        if short:
            log.warning("%s: read only %d of the %d frames its header announces (truncated or damaged?); "
                        "its pairs are drawn from the %d frames read", path, len(frames), expected, len(frames))
        return frames

    def _skip(self, path, reason: str) -> None:
        log.warning("skipping %s: %s", path, reason)
        self.skipped.append({"source": str(path), "reason": reason})

    def __iter__(self) -> Iterator[Pair]:
        """The pairs in index order (``self[0]``, ``self[1]``, ...): each video decoded once, and let go at the end."""
        try:
            for k in range(len(self)):
                yield self[k]
        finally:
            self._drop_cache()


def _tolerance(frames: int, exact: bool) -> int:
    """How far the frames decoded may fall short of a probed count without a warning: 2 for a container's frame
    count (edit lists may drop a frame or two), 5% for one estimated from duration × rate."""
    return 2 if exact else max(2, frames // 20)

