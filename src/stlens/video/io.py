"""Decoding videos (PyAV) and frame folders into uint8 (T, H, W, 3) arrays, resized on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stlens.errors import StlensError

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
