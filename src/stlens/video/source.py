"""``VideoSource``: an ordered list of videos (files or frame folders), the ``ClipSource`` (``stlens.core.source``)
that folders, video files, annotation files, ``sample:`` and ``stylized:ROOT`` open to (see ``sources`` and
``annotations``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stlens.errors import StlensError


@dataclass(frozen=True)
class VideoSource:
    """An ordered list of videos (files or frame folders) and the spec it came from.

    From annotation files also: ``labels`` (one per video, None where unknown; empty when none is known),
    ``segments`` ((start, end) frames per video, None where not given; empty when none is given) and ``missing``
    (listed files that do not exist, as ``{"source": ..., "reason": ...}``).
    From ``stylized:ROOT``: ``styles`` (the ``style_k`` folders, k = 1, 2, ...; the videos are those of ``style_1``).
    From ``classes:ROOT``: ``labels`` and ``classes`` (the class names by label; empty when not known).
    """

    spec: str
    videos: tuple[Path, ...]
    labels: tuple[int | None, ...] = ()
    segments: tuple[tuple[int, int] | None, ...] = ()
    missing: tuple[dict[str, str], ...] = ()
    styles: tuple[Path, ...] = ()
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.videos)

    def name(self, index: int) -> str:
        """The path of video ``index``, as a string."""
        return str(self.videos[index])



def video_source(source: object, purpose: str) -> VideoSource:
    """``source`` when it is a ``VideoSource``; else a ``StlensError`` saying that ``purpose`` needs videos."""
    if not isinstance(source, VideoSource):
        raise StlensError(f"{getattr(source, 'spec', source)}: {purpose} needs videos (a folder, a video file, an "
                          f"annotation file, sample: or stylized:ROOT), not a {type(source).__name__}")
    return source
