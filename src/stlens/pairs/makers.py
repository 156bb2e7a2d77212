"""Pair makers: dynamic pairs (same clip, two styles) and static pairs (same styled clip, frames shuffled)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from stlens.core.pair import DYNAMIC, STATIC, Pair, check_clip_frames, frame_shuffle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.io import probe_clip_source, read_clip_source
from stlens.video.sampling import sample_clip, segment_of, to_model_input
from stlens.video.source import VideoSource
from stlens.video.stylizers import draw_style, get_stylizer

log = logging.getLogger("stlens")

@dataclass
class VideoPairs:
    """Iterable of ``Pair`` drawn from a ``VideoSource``: ``pairs`` per factor, spread evenly over the videos.

    Each video is decoded once (short side resized) and yields its share of clips; pair i of video v is drawn from a
    generator seeded with (seed, v, factor, i), so pairs are reproducible. Before its share is set, every video is
    probed cheaply (container header and first frame, or the image files of a frame folder; only as far ahead as
    the shares need): videos that cannot be opened or are shorter than a clip are skipped and listed in ``skipped``,
    and the shares are spread over the usable ones, so the count asked for is met whenever they allow it. A video
    that passes the probe but then cannot be decoded (or gives fewer frames than a clip) is a ``StlensError`` naming
    it; one that decodes only partly (truncated) is used with a warning giving the frames read vs expected.
    Clips need at least 2 frames (a 1-frame clip is its own frame-shuffled copy).

    Where the source gives a video a (start, end) segment (Diving48 ``start_frame``/``end_frame``), every clip of it
    lies inside frames [start, end): ``end`` is exclusive, as in ``clip_indices``. A video whose segment is shorter
    than a clip, or has fewer frames than a clip inside the video, is skipped by the probe (before shares are set)
    and listed in ``skipped`` with that reason. Videos without a segment give the same pairs as before.
    """

    source: VideoSource
    spec: InputSpec
    pairs: int
    stylizer: str = "palette"
    seed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    # The segment of the video whose pairs are being drawn (None: the whole video); set by ``__iter__`` for ``_pair``
    # (not an argument, so that subclasses keep the signature of ``_pair``).
    _segment: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise StlensError(f"--pairs must be ≥ 1, got {self.pairs}")
        check_clip_frames(self.spec.frames)
        self._stylizers = get_stylizer(self.stylizer)

    def __len__(self) -> int:
        return 2 * self.pairs

    def _pair(self, frames: np.ndarray, factor: int, rng: np.random.Generator, source: str) -> Pair:
        spec = self.spec
        _, clip = sample_clip(frames, spec, rng, segment=self._segment)
        first, seed_a = draw_style(clip, self._stylizers, rng)
        if factor == DYNAMIC:
            second, _ = draw_style(clip, self._stylizers, rng, avoid=seed_a)
        else:
            second = frame_shuffle(first, rng)
        return Pair(factor, to_model_input(first, spec), to_model_input(second, spec), source)

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

    def _frames(self, path, probe: tuple[int | None, bool]) -> np.ndarray:
        """Decode a video that passed ``_probe``: a ``StlensError`` naming it when it now cannot be decoded or gives
        fewer frames than a pair needs; a warning when it gives fewer frames than the probe said (truncated)."""
        expected, exact = probe
        try:
            frames = read_clip_source(path, short_side=self.spec.resize, partial=True)
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
        self.skipped = [dict(m) for m in self.source.missing]
        videos = self.source.videos
        probes: list[tuple[int | None, bool] | None] = []  # per video probed so far; None: skipped
        usable = 0  # usable videos among those probed
        before = 0  # usable videos before video v
        remaining = self.pairs
        for v, path in enumerate(videos):
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
            frames = self._frames(path, probes[v])
            self._segment = self._in_segment(path, frames, segment_of(self.source, v))
            for i in range(share):
                for factor in (DYNAMIC, STATIC):
                    rng = np.random.default_rng((self.seed, v, factor, i))
                    yield self._pair(frames, factor, rng, str(path))
            remaining -= share
        if remaining == self.pairs:
            reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in self.skipped[:3])
            raise StlensError(f"no usable video in {self.source.spec}: all {len(videos)} skipped ({reasons})")
        if remaining > 0:
            log.warning("only %d of %d pairs per factor could be made", self.pairs - remaining, self.pairs)


def _tolerance(frames: int, exact: bool) -> int:
    """How far the frames decoded may fall short of a probed count without a warning: 2 for a container's frame
    count (edit lists may drop a frame or two), 5% for one estimated from duration × rate."""
    return 2 if exact else max(2, frames // 20)

