"""Videos with per-frame object masks (video object segmentation): ``MaskSource``, the ``VideoSource`` that
``davis:ROOT`` and ``moca:ROOT`` open to (see ``maskdata``), and reading a sequence's frames with aligned masks.

Each frame of a sequence carries one annotation: a mask image (pixel value > ``threshold`` = object; palette PNGs
are read as palette indices, so any object index counts), a tuple of boxes ``(x, y, w, h)`` in pixels (drawn as
filled rectangles: the pixels whose centres lie inside a box), or None: unannotated, marked invalid and left out of
metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stlens.errors import StlensError
from stlens.video.io import IMAGE_SUFFIXES, MAX_FRAMES, read_frame_folder
from stlens.video.source import VideoSource

Box = tuple[float, float, float, float]
Annotation = Path | tuple[Box, ...] | None


def image_files(folder: Path, limit: int | None = MAX_FRAMES) -> list[Path]:
    """The image files of a frame folder in reading order: the frames ``read_frame_folder`` reads (first ``limit``,
    its cap by default; None: all)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]


@dataclass(frozen=True)
class MaskTrack:
    """One sequence: its frame files (in order) and one annotation per frame (a mask file, boxes or None)."""

    frames: tuple[Path, ...]
    annotations: tuple[Annotation, ...]

    @property
    def annotated(self) -> int:
        """How many frames carry an annotation."""
        return sum(a is not None for a in self.annotations)


@dataclass(frozen=True)
class MaskSource(VideoSource):
    """A ``VideoSource`` whose videos are frame folders with per-frame masks: ``tracks`` (one ``MaskTrack`` per
    video), the ``layout`` it was read as, the mask ``threshold`` and the ``flow_method`` asked for in the spec
    (None: the clips' default). Measuring uses the videos as any frame folders; ``MaskClips`` adds the masks."""

    tracks: tuple[MaskTrack, ...] = ()
    layout: str = ""
    threshold: int = 0
    flow_method: str | None = None

    def read(self, index: int, short_side: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sequence ``index``: frames uint8 (T, H, W, 3), masks bool (T, H, W) and validity bool (T,) (False:
        unannotated), short side resized (frames bilinear, masks nearest)."""
        return read_track(self.videos[index], self.tracks[index], short_side, self.threshold)


def read_mask(path: Path, threshold: int = 0) -> np.ndarray:
    """A mask image → bool (H, W): pixel value > ``threshold`` (any channel of a colour mask; palette indices)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("LA", "PA", "RGBA"):
                image = image.convert({"LA": "L", "PA": "P", "RGBA": "RGB"}[image.mode])
            values = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise StlensError(f"{path}: cannot read mask image ({exc})") from exc
    return (values > threshold).any(axis=-1) if values.ndim == 3 else values > threshold


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise StlensError(f"{path}: cannot read image ({exc})") from exc


def box_mask(boxes: tuple[Box, ...], height: int, width: int) -> np.ndarray:
    """Filled rectangles → bool (H, W): the pixels whose centres lie inside a box (clipped to the frame)."""
    mask = np.zeros((height, width), bool)
    for x, y, w, h in boxes:
        left, right = (max(0, min(width, int(np.ceil(v - 0.5)))) for v in (x, x + w))
        top, bottom = (max(0, min(height, int(np.ceil(v - 0.5)))) for v in (y, y + h))
        mask[top:bottom, left:right] = True
    return mask


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 127


def frame_mask(annotation: Annotation, frame: Path, size: tuple[int, int], threshold: int) -> np.ndarray:
    """The native-size mask of one annotated frame (``size`` = the frame's (width, height))."""
    width, height = size
    if isinstance(annotation, Path):
        mask = read_mask(annotation, threshold)
        if mask.shape != (height, width):
            raise StlensError(f"{annotation}: mask is {mask.shape[1]}x{mask.shape[0]} px but its frame {frame} is "
                              f"{width}x{height} px")
        return mask
    return box_mask(annotation, height, width)


def read_track(folder: Path, track: MaskTrack, short_side: int | None = None,
               threshold: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames, masks and validity of one sequence (see ``MaskSource.read``)."""
    frames = read_frame_folder(folder, short_side)
    if len(frames) != len(track.frames):
        raise StlensError(f"{folder}: read {len(frames)} frames but {len(track.frames)} were listed when the data "
                          f"was opened (did the folder change?)")
    height, width = frames.shape[1:3]
    masks = np.zeros(frames.shape[:3], bool)
    valid = np.array([a is not None for a in track.annotations], bool)
    for t in np.flatnonzero(valid):
        frame = track.frames[t]
        masks[t] = _resize_mask(frame_mask(track.annotations[t], frame, image_size(frame), threshold), height, width)
    return frames, masks, valid

