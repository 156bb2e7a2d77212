"""Decoding videos (PyAV) and frame folders into uint8 (T, H, W, 3) arrays, resized on the fly: whole
(``read_clip_source``) or only the frames a clip needs (``open_clip_source``: the same frames, bit for bit)."""

from __future__ import annotations

import bisect
import logging
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from stlens.errors import StlensError

log = logging.getLogger("stlens")
T = TypeVar("T")

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
MAX_FRAMES = 1024


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side set to ``short_side`` (aspect kept; even sizes for the scaler)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def decode_video(path: str | Path, short_side: int | None = None, max_frames: int = MAX_FRAMES,
                 partial: bool = False) -> np.ndarray:
    """Decode up to ``max_frames`` frames of a video file to RGB uint8 (T, H, W, 3), short side resized.

    ``partial``: when decoding fails after some frames (a truncated or damaged file), return the frames read so far
    instead of raising (the caller compares their number with ``probe_clip_source``'s)."""
    import av

    path = Path(path)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise StlensError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                width, height = scaled_size(frame.width, frame.height, short_side)
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                if len(frames) >= max_frames:
                    break
    except StlensError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many error types for broken files
        if not (partial and frames):
            raise StlensError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise StlensError(f"{path}: no decodable frames")
    return np.stack(frames)


def _image_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def probe_clip_source(path: str | Path, max_frames: int = MAX_FRAMES) -> tuple[int | None, bool]:
    """A cheap look at a video file or frame folder before decoding it: ``(frames, exact)``, the number of frames a
    full read would give (capped at ``max_frames``; None when the container does not tell) and whether that number
    is exact (the container's frame count, or the image files of a frame folder) or estimated (duration × rate).

    A video is opened and its first frame decoded; a ``StlensError`` (worded as ``read_clip_source``'s) when it cannot
    be, when it has no video stream or a frame folder has no image."""
    path = Path(path)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise StlensError(f"{path}: no image frames")
        return min(len(files), max_frames), True
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise StlensError(f"{path}: no video stream")
            stream = container.streams.video[0]
            frames, exact = int(stream.frames or 0), True
            if frames <= 0:
                rate = stream.average_rate or stream.guessed_rate
                seconds = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                           else container.duration / 1e6 if container.duration else None)
                frames, exact = (round(seconds * float(rate)), False) if rate and seconds else (None, False)
            next(iter(container.decode(stream)))  # the first frame: the codec can read this stream
    except StlensError:
        raise
    except StopIteration:
        raise StlensError(f"{path}: no decodable frames") from None
    except Exception as exc:  # noqa: BLE001 - PyAV raises many error types for broken files
        raise StlensError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
    return (None if frames is None else min(frames, max_frames)), exact


def read_frame_folder(path: str | Path, short_side: int | None = None, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Read a folder of image frames (sorted by name) to RGB uint8 (T, H, W, 3), short side resized."""
    from PIL import Image

    path = Path(path)
    files = _image_files(path)[:max_frames]
    if not files:
        raise StlensError(f"{path}: no image frames")
    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = image.convert("RGB")
                size = scaled_size(image.width, image.height, short_side)
                frames.append(np.asarray(image.resize(size, Image.BILINEAR)))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: unidentified, truncated or corrupt image data
            raise StlensError(f"{file}: cannot read image, damaged or truncated ({exc})") from exc
    if len({f.shape for f in frames}) > 1:
        raise StlensError(f"{path}: frames differ in size")
    return np.stack(frames)


def read_clip_source(path: str | Path, short_side: int | None = None, max_frames: int = MAX_FRAMES,
                     partial: bool = False) -> np.ndarray:
    """Decode a video file or a frame folder (``partial``: see ``decode_video``)."""
    path = Path(path)
    if path.is_dir():
        return read_frame_folder(path, short_side, max_frames)
    return decode_video(path, short_side, max_frames, partial=partial)


class ClipReadError(Exception):
    """A video read frame by frame (``open_clip_source``) did not give a frame as a whole decode would (a frame
    missing, out of order or of another size after a seek): read it whole with ``read_clip_source`` instead. Never
    seen by users: ``clip_or_whole`` catches it and decodes the video whole."""


def clip_or_whole(make: Callable[[bool], T], what: str) -> T:
    """``make(False)`` (from clip reads), or ``make(True)`` (from a whole decode) when a frame did not come out of a
    seek as a whole decode gives it (``ClipReadError``); ``what`` names the video in the debug log. ``make`` must draw
    the same clip both times."""
    try:
        return make(False)
    except ClipReadError as exc:
        log.debug("%s: %s; decoding it whole", what, exc)
        return make(True)


def close_frames(frames: object) -> None:
    """Close a video's reader now (a ``ClipFrames``, or anything with ``close``: its decoder and file go at once, not
    at a later garbage collection); decoded arrays have nothing to close."""
    close = getattr(frames, "close", None)
    if close is not None:
        close()


class ClipFrames:
    """The frames of one video file or frame folder as ``read_clip_source`` would give them, (T, H, W, 3) uint8
    short side resized, but read on demand: ``len``, ``shape`` and ``ndim`` without decoding anything, and
    ``frames[indices]`` (an index array or list; an int gives one frame) decodes only those frames, bit for bit those
    of a whole decode (``tests/test_clip_reads.py``). Frames read are kept (a video's later clips reuse them); call
    ``close()`` (or let it go) to free them and the open file.

    ``timings``: a dict to which the seconds spent opening, seeking, decoding and converting (colour conversion and
    resize) are added, under ``open``, ``seek``, ``decode`` and ``convert+resize`` (``benchmarks/pair_costs.py``)."""

    ndim = 4

    def __init__(self, length: int, height: int, width: int, timings: dict | None = None):
        self.shape = (length, height, width, 3)
        self.timings = timings
        self._kept: dict[int, np.ndarray] = {}
        self._expected: set[int] = set()

    def expect(self, indices) -> None:
        """Frames that later reads will ask for (the other clips of the video): a video decoder that passes one
        of them on its way to a frame asked for keeps it, so that a later clip behind it needs no new decode."""
        self._expected = {int(i) for i in np.asarray(indices).reshape(-1)}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices) -> np.ndarray:
        if isinstance(indices, (int, np.integer)):
            return self[[int(indices)]][0]
        wanted = [int(i) + (len(self) if i < 0 else 0) for i in np.asarray(indices).reshape(-1)]
        if any(not 0 <= i < len(self) for i in wanted):
            raise IndexError(f"frame indices {indices} out of range for {len(self)} frames")
        missing = sorted(set(wanted) - self._kept.keys())
        if missing:
            self._read(missing)
        if not wanted:
            return np.zeros((0, *self.shape[1:]), np.uint8)
        return np.stack([self._kept[i] for i in wanted])

    def _read(self, indices: list[int]) -> None:
        """Decode the frames ``indices`` (sorted, none kept yet) into ``_kept``."""
        raise NotImplementedError

    def _time(self, stage: str, began: float) -> float:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - began
        return now

    def close(self) -> None:
        self._kept, self._expected = {}, set()

    def __enter__(self) -> ClipFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FolderFrames(ClipFrames):
    """A frame folder: the image files are listed and their headers read (a file that is not an image, or frames of
    different sizes, fail here as in ``read_frame_folder``); only the files of the frames asked for are decoded."""

    def __init__(self, path: Path, short_side: int | None, max_frames: int, timings: dict | None = None):
        from PIL import Image

        began = time.perf_counter()
        files = _image_files(path)[:max_frames]
        if not files:
            raise StlensError(f"{path}: no image frames")
        sizes = set()
        for file in files:
            try:
                with Image.open(file) as image:
                    sizes.add(image.size)
            except (OSError, ValueError, SyntaxError) as exc:
                raise StlensError(f"{file}: cannot read image, damaged or truncated ({exc})") from exc
        if len(sizes) > 1:
            raise StlensError(f"{path}: frames differ in size")
        width, height = scaled_size(*sizes.pop(), short_side)
        super().__init__(len(files), height, width, timings)
        self._files, self._short_side = files, short_side
        self._time("open", began)

    def _read(self, indices: list[int]) -> None:
        from PIL import Image

        for i in indices:
            began = time.perf_counter()
            try:
                with Image.open(self._files[i]) as image:
                    image = image.convert("RGB")
                    began = self._time("decode", began)
                    size = scaled_size(image.width, image.height, self._short_side)
                    frame = np.asarray(image.resize(size, Image.BILINEAR))
            except (OSError, ValueError, SyntaxError) as exc:
                raise StlensError(f"{self._files[i]}: cannot read image, damaged or truncated ({exc})") from exc
            self._time("convert+resize", began)
            if frame.shape != self.shape[1:]:
                raise StlensError(f"{self._files[i].parent}: frames differ in size")
            self._kept[i] = frame


class _VideoFrames(ClipFrames):
    """A video file read by clips: its packets are demuxed once (no decoding) to learn each frame's timestamp and
    the keyframes; a frame is decoded by feeding the decoder from the keyframe before it (or going on from where
    it is, when no keyframe lies between), and only the frames asked for are converted to RGB and resized (by
    libswscale, in ``to_ndarray``, as ``decode_video`` does). Built by ``open_clip_source`` only for files whose
    packets match their header (one frame per packet, distinct timestamps, as many as the container counts,
    starting on a keyframe); a frame that then does not come out as a whole decode would give it is a
    ``ClipReadError``."""

    def __init__(self, path: Path, container, stream, packets: list, short_side: int | None, max_frames: int,
                 timings: dict | None = None):
        order = sorted(p.pts for p in packets)
        self._rank = {pts: k for k, pts in enumerate(order)}
        ranks = [self._rank[p.pts] for p in packets]
        #: keyframes: (rank of the frame, position of its packet in decode order), by rank
        self._keys = sorted((r, k) for k, (r, p) in enumerate(zip(ranks, packets, strict=True)) if p.is_keyframe)
        width, height = scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
        super().__init__(min(len(packets), max_frames), height, width, timings)
        self._container, self._codec, self._packets = container, stream.codec_context, packets
        self._path, self._short_side, self._max_frames = path, short_side, max_frames
        _OPEN.add(self)
        self._next: int | None = None  # the next packet to feed (decode order); None: the decoder must start anew
        self._position = -1  # the rank of the last frame out of the decoder since it started anew
        self._after = 0  # frames of a lower rank than this come out of a new start unasked (open-GOP leading frames)

    def _restart(self, key: int) -> None:
        began = time.perf_counter()
        rank, packet = self._keys[key]
        self._codec.flush_buffers()  # (a no-op before the first packet; after a drain, ready to decode again)
        self._next, self._position, self._after = packet, rank - 1, rank
        self._time("seek", began)

    def _read(self, indices: list[int]) -> None:
        if self._codec is None:  # closed, or inherited from the parent of a forked process: open the file again
            self._reopen()
        wanted = set(indices)
        for n in indices:
            if n in self._kept:
                continue
            key = bisect.bisect_right(self._keys, (n, len(self._packets))) - 1
            if self._next is None or n <= self._position or self._keys[key][0] > self._position + 1:
                self._restart(key)  # behind, or a keyframe closer than where the decoder is
            while n not in self._kept:
                self._feed(wanted)

    def _feed(self, wanted: set[int]) -> None:
        """Feed the decoder one packet (or drain it at the end) and keep the wanted frames it gives."""
        began = time.perf_counter()
        try:
            packet = self._packets[self._next] if self._next < len(self._packets) else None
            frames = self._codec.decode(packet)
        except Exception as exc:  # noqa: BLE001 - PyAV raises many error types for broken streams
            raise ClipReadError(f"decoding failed ({type(exc).__name__}: {exc})") from exc
        began = self._time("decode", began)
        if packet is None and not frames:
            self._next = None
            raise ClipReadError("the decoder ended before a frame it was asked for")
        self._next = self._next + 1 if packet is not None else len(self._packets)
        for frame in frames:
            rank = self._rank.get(frame.pts)
            if rank is None or (rank >= self._after and rank <= self._position):
                self._next = None
                raise ClipReadError(f"frame with timestamp {frame.pts} out of order")
            if rank < self._after:
                continue
            self._position = rank
            if (rank in wanted or rank in self._expected) and rank < len(self) and rank not in self._kept:
                width, height = scaled_size(frame.width, frame.height, self._short_side)
                array = frame.to_ndarray(format="rgb24", width=width, height=height)
                if array.shape != self.shape[1:]:
                    raise ClipReadError(f"frame {rank} is {array.shape[1]}×{array.shape[0]}, not "
                                        f"{self.shape[2]}×{self.shape[1]}")
                self._kept[rank] = array
        if packet is None:
            self._next = None  # drained: the next read starts anew
        self._time("convert+resize", began)

    def _reopen(self) -> None:
        again = _video_frames(self._path, self._short_side, self._max_frames, self.timings)
        if again is None or again.shape != self.shape or again._rank != self._rank:
            raise ClipReadError("the file changed since it was opened")
        self._container, self._codec, self._packets = again._container, again._codec, again._packets
        self._next, again._container, again._codec = None, None, None

    def _orphan(self) -> None:
        """In a forked child: the decoder's threads stayed in the parent, so its codec must never be freed or used
        here; it is kept for good (a few of them per worker at most) and the file opened again if read."""
        _ORPHANS.append((self._container, self._codec, self._packets))
        self._container, self._codec, self._packets, self._next = None, None, [], None

    def close(self) -> None:
        """Free the frames kept and close the file: its decoder (and its threads) go now, not at a later garbage
        collection (which, in a forked child, would free a decoder whose threads stayed in the parent)."""
        super().close()
        self._packets, self._codec, self._next = [], None, None
        if self._container is not None:
            self._container.close()
            self._container = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit, modules may be gone
            pass


#: packets demuxed past ``max_frames`` (decode order) for the first ``max_frames`` frames (presentation order) to be
#: among them: more than any codec's reordering (h264: 16); a frame outside them would be a ``ClipReadError``
_REORDER = 64
#: the open ``_VideoFrames`` of this process, and the decoders of a parent process (see ``_VideoFrames._orphan``)
_OPEN: weakref.WeakSet = weakref.WeakSet()
_ORPHANS: list = []


def _park_all() -> None:
    """Before a fork: let every open decoder's threads finish (a frame-threaded decoder goes on decoding after
    ``decode`` returns; a thread forked inside ``malloc`` would hang the child); the next read restarts from a
    keyframe."""
    for frames in list(_OPEN):
        if frames._codec is not None and frames._next is not None:
            frames._codec.flush_buffers()
            frames._next = None


def _orphan_all() -> None:
    for frames in list(_OPEN):
        frames._orphan()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_park_all, after_in_child=_orphan_all)


def _video_frames(path: Path, short_side: int | None, max_frames: int, timings: dict | None) -> _VideoFrames | None:
    """``_VideoFrames`` of a video file, or None when its packets do not let frames be found without a whole decode
    (see ``_VideoFrames``) or it cannot be opened or demuxed (``read_clip_source`` then says why)."""
    import av

    began = time.perf_counter()
    try:
        container = av.open(str(path))
    except Exception:  # noqa: BLE001 - PyAV raises many error types for broken files
        return None
    try:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count, packets = int(stream.frames or 0), []
        for packet in container.demux(stream):
            if packet.size:
                packets.append(packet)
                if len(packets) == max_frames + _REORDER:  # a long video: its first max_frames frames are in these
                    break
        usable = (packets and (count == len(packets) or count > len(packets) == max_frames + _REORDER)
                  and packets[0].is_keyframe
                  and all(p.pts is not None and not p.is_corrupt and not p.is_discard for p in packets)
                  and len({p.pts for p in packets}) == len(packets)
                  and min(p.pts for p in packets) == packets[0].pts)
        if not usable:
            raise ValueError("packets do not match the header")
        frames = _VideoFrames(path, container, stream, packets, short_side, max_frames, timings)
    except Exception:  # noqa: BLE001 - demuxing a broken file: let the whole decode say what is wrong
        container.close()
        return None
    frames._time("open", began)
    return frames


def open_clip_source(path: str | Path, short_side: int | None = None, max_frames: int = MAX_FRAMES,
                     partial: bool = False, timings: dict | None = None) -> ClipFrames | np.ndarray:
    """A video file or frame folder whose frames are decoded when asked for (``ClipFrames``): the frames
    ``read_clip_source`` would give, of the same number, bit for bit, but only those a clip needs are decoded.
    A video file whose packets do not allow it (no frame count in the container, a count its packets do not
    match: truncated, damaged) is decoded whole instead (``read_clip_source``, with ``partial``), an array.
    ``timings``: see ``ClipFrames``."""
    path = Path(path)
    if path.is_dir():
        return _FolderFrames(path, short_side, max_frames, timings)
    frames = _video_frames(path, short_side, max_frames, timings)
    return decode_video(path, short_side, max_frames, partial=partial) if frames is None else frames
