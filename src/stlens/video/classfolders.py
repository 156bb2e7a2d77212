"""``classes:ROOT``: a folder-per-class layout, ``ROOT/<class>/<video>`` (video files or frame folders, found
recursively inside each class folder), opened as a labelled ``VideoSource``: class index = position of the class
folder in the sorted folder names, the names kept in ``VideoSource.classes``. Other files are ignored and named in a
warning; an empty class folder or a video directly under ROOT is an error."""

from __future__ import annotations

import logging
from pathlib import Path

from stlens.errors import StlensError
from stlens.video.io import VIDEO_SUFFIXES
from stlens.video.source import VideoSource
from stlens.video.sources import scan_folder

__all__ = ["PREFIX", "open_classes"]

log = logging.getLogger("stlens")

PREFIX = "classes:"
LAYOUT = "expected ROOT/<class>/<video>"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _ignored(folder: Path, videos: list[Path]) -> list[Path]:
    """Files under ``folder`` that are neither one of ``videos`` nor inside a frame folder among them."""
    frame_folders = [v for v in videos if v.is_dir()]
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not _hidden(p, folder) and p not in videos
            and not any(f in p.parents for f in frame_folders)]


def open_classes(spec: str) -> VideoSource:
    """Open ``classes:ROOT`` (see the module docstring)."""
    root = Path(spec.removeprefix(PREFIX))
    if not root.is_dir():
        raise StlensError(f"{spec}: class root {root} is not a folder ({LAYOUT})")
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if loose:
        raise StlensError(f"{loose[0]}: a video directly under the class root {root} has no class; move it into "
                          f"a class folder ({LAYOUT})")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise StlensError(f"{root}: no class folders ({LAYOUT})")
    videos: list[Path] = []
    labels: list[int] = []
    ignored: list[Path] = []
    for index, folder in enumerate(folders):
        found = [v for v in scan_folder(folder) if not _hidden(v, folder)]
        ignored += _ignored(folder, found)
        if not found:
            raise StlensError(f"{folder}: class folder {folder.name!r} holds no videos or frame folders ({LAYOUT}); "
                              f"remove it or add its videos")
        videos += found
        labels += [index] * len(found)
    if ignored:
        log.warning("%s: ignored %d file(s) that are not videos: %s", spec, len(ignored),
                    ", ".join(str(p) for p in ignored[:5]) + (", ..." if len(ignored) > 5 else ""))
    return VideoSource(spec, tuple(videos), labels=tuple(labels), classes=tuple(f.name for f in folders))
