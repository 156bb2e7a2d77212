"""``InputSpec``: how clips are sampled and normalized for a model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from stlens.errors import StlensError

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """How clips are sampled and normalized for a model: T frames every ``stride`` frames, short side resized to
    ``resize``, centre crop ``size``×``size``, then (x/255 − mean)/std per channel.

    Args:
        frames: frames per clip (T).
        stride: the step between sampled frames of the video.
        size: the side of the square centre crop, in pixels.
        resize: the short side the frames are resized to before the crop.
        mean: the per-channel (RGB) mean subtracted after scaling to [0, 1].
        std: the per-channel (RGB) standard deviation divided by.

    Examples:
        >>> spec = stlens.InputSpec(frames=8, size=64, resize=72)
        >>> spec.frames, spec.stride, spec.size
        (8, 2, 64)
    """

    frames: int = 16
    stride: int = 2
    size: int = 112
    resize: int = 128
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD

    def with_overrides(self, frames: int | None = None, size: int | None = None) -> InputSpec:
        """Override frames and/or crop size; the resize keeps the family's resize/crop ratio."""
        spec = self
        if frames is not None:
            if frames < 1:
                raise StlensError(f"`frames` must be ≥ 1, got {frames}")
            spec = dataclasses.replace(spec, frames=frames)
        if size is not None:
            if size < 8:
                raise StlensError(f"`size` must be ≥ 8, got {size}")
            spec = dataclasses.replace(spec, size=size, resize=round(size * self.resize / self.size))
        return spec
