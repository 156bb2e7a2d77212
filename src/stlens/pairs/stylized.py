"""Pairs from a pre-stylized dataset (``stylized:ROOT``, the paper's ``style_k/<video>/<frames>`` layout).

Dynamic pair: the same clip indices read from two different styles k1 ≠ k2 of one video (same motion, other
appearance). Static pair: one style's clip and its frame-shuffled copy (same appearance, motion destroyed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stlens.core.pair import DYNAMIC, Pair, check_clip_frames, frame_shuffle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.pairs.makers import VideoPairs
from stlens.video.io import (
    IMAGE_SUFFIXES,
    ClipFrames,
    open_clip_source,
    probe_clip_source,
    read_clip_source,
    scaled_size,
)
from stlens.video.sampling import sample_clip, to_model_input
from stlens.video.source import VideoSource


class StyleStack:
    """One video in K styles, each read clip by clip (``ClipFrames``, or an array where a file is decoded whole), cut
    to the shortest style: indexed as the stacked array (K, T, H, W, 3) that ``sample_clip`` takes
    (``[..., frames, :, :, :]``), it decodes only the frames asked for."""

    ndim = 5

    def __init__(self, styles: list[ClipFrames | np.ndarray], length: int):
        self.styles, self.length = styles, length

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.styles), self.length, *self.styles[0].shape[1:])

    def __len__(self) -> int:
        return len(self.styles)

    def __getitem__(self, key) -> np.ndarray:
        rest = key[2:] if isinstance(key, tuple) else ()
        if not (isinstance(key, tuple) and len(key) >= 2 and key[0] is Ellipsis
                and all(k == slice(None) for k in rest)):
            raise TypeError(f"a StyleStack is indexed as [..., frames, :, :, :], got {key!r}")
        frames = np.asarray(key[1]).reshape(-1)
        if frames.size and (frames.min() < 0 or frames.max() >= self.length):
            raise IndexError(f"frame indices {key[1]} out of range for {self.length} frames")
        return np.stack([style[frames] for style in self.styles])

    def expect(self, frames: np.ndarray) -> None:
        """The frames the video's clips will ask for (see ``ClipFrames.expect``), in every style."""
        for style in self.styles:
            if isinstance(style, ClipFrames):
                style.expect(frames)

    def close(self) -> None:
        for style in self.styles:
            if isinstance(style, ClipFrames):
                style.close()


class StylizedPairs(VideoPairs):
    """Iterable of ``Pair`` from a stylized source (``stylized:ROOT``), with the behaviour of ``VideoPairs``.

    ``pairs`` per factor are spread evenly over the usable videos, pair i of video v drawn from a generator seeded
    with (seed, v, factor, i), and videos missing in a style, without frames, with frames of other sizes in other styles
    or shorter than a clip skipped (by a cheap probe: file counts and the first frame's size) and listed in
    ``skipped``; one that passes the probe but then cannot be read is a ``StlensError`` naming it.
    Each video is read once in every style (short side resized); ``stylizer`` is ``"stylized folders"``.

    Args:
        source: the stylized source (``stlens.open_data("stylized:ROOT")``, ROOT as ``stlens.stylize`` writes it).
        spec: how clips are sampled and normalized (the model's ``InputSpec``).
        pairs: pairs per factor.
        seed: the seed of the pairs' clips and styles.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = stlens.stylize("sample:", stylizer="palette", styles=2, out=root, short_side=32, frames_max=8,
        ...                    workers=0, progress=False)
        >>> spec = stlens.InputSpec(frames=4, stride=1, size=32, resize=32)
        >>> pairs = stlens.StylizedPairs(stlens.open_data("stylized:" + root), spec, pairs=1)
        >>> [(pair.factor, tuple(pair.a.shape)) for pair in pairs]
        [(0, (3, 4, 32, 32)), (1, (3, 4, 32, 32))]
    """

    def __init__(self, source: VideoSource, spec: InputSpec, pairs: int, seed: int = 0):
        super().__init__(source, spec, pairs, stylizer="stylized folders", seed=seed)

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise StlensError(f"`pairs` must be ≥ 1, got {self.pairs}")
        if len(self.source.styles) < 2:
            found = ", ".join(p.name for p in self.source.styles) or "none"
            raise StlensError(f"{self.source.spec}: dynamic pairs need ≥ 2 style_k folders (found: {found})")
        check_clip_frames(self.spec.frames)

    def _probe(self, path) -> tuple[int | None, bool] | None:
        """The video's frame count (the shortest style's image files), or None when it is skipped."""
        from PIL import Image

        name = Path(path).name
        missing = [style.name for style in self.source.styles if not (style / name).is_dir()]
        if missing:
            self._skip(path, f"missing in {', '.join(missing)}")
            return None
        try:
            counts = [probe_clip_source(style / name)[0] for style in self.source.styles]
            sizes = set()
            for style in self.source.styles:
                first = min(p for p in (style / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                with Image.open(first) as image:
                    sizes.add(scaled_size(*image.size, self.spec.resize))
        except (StlensError, OSError) as exc:
            self._skip(path, str(exc))
            return None
        if len(sizes) > 1:
            self._skip(path, "frames differ in size between styles")
            return None
        length = min(counts)
        if length < self.spec.frames:
            self._skip(path, f"shorter than the clip ({length} < {self.spec.frames} frames)")
            return None
        return length, True

    def _frames(self, path, probe: tuple[int | None, bool], whole: bool = False) -> np.ndarray | StyleStack:
        """The video in every style, cut to the shortest style: read clip by clip (``StyleStack``) or, with
        ``whole``, decoded whole and stacked (K, T, H, W, 3)."""
        name = Path(path).name
        read = read_clip_source if whole else open_clip_source
        try:
            styled = [read(style / name, short_side=self.spec.resize) for style in self.source.styles]
        except StlensError as exc:
            raise StlensError(f"{exc} (it passed the first check, so its share of pairs was counted on; "
                              f"remove or repair it: delete its folder in every style_k and rerun stlens stylize to "
                              f"write it again)") from exc
        if len({tuple(clip.shape[1:]) for clip in styled}) > 1:
            raise StlensError(f"{path}: frames differ in size between styles; remove or repair it")
        length = min(len(clip) for clip in styled)
        if length < self.spec.frames:
            raise StlensError(f"{path}: read only {length} frames, fewer than the {self.spec.frames} a clip needs")
        if whole:
            return np.stack([clip[:length] for clip in styled])
        return StyleStack(styled, length)

    def _pair(self, frames: np.ndarray, factor: int, rng: np.random.Generator, source: str) -> Pair:
        spec = self.spec
        _, styles = sample_clip(frames, spec, rng)  # (K, T, size, size, 3): every style at the same frames
        if factor == DYNAMIC:
            k1, k2 = rng.choice(len(frames), size=2, replace=False)
            first, second = styles[k1], styles[k2]
        else:
            first = styles[int(rng.integers(len(frames)))]
            second = frame_shuffle(first, rng)
        return Pair(factor, to_model_input(first, spec), to_model_input(second, spec), source)
