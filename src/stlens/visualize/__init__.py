"""Activation maximization for video and two-stream networks (Feichtenhofer et al., CVPR 2018 / IJCV 2019).

``objectives`` (composable targets) · ``params`` (pixel / Fourier RGB video, flow stack) · ``regularizers`` (L_α,
spatial TV, temporal variation, range bound) · ``transforms`` (jitter, zoom, temporal roll) · ``render`` (the batched
optimizer loop) · ``outputs`` (GIF, MP4, flow displays, mosaic, JSON) · ``api`` (``visualize``).

This package is callable: ``stlens.visualize(model, target, ...)`` is ``stlens.visualize.api.visualize`` (so the
function and the package, e.g. ``stlens.visualize.objectives``, share one name without shadowing each other).
"""

import sys
import types

from stlens.visualize import objectives
from stlens.visualize.api import TargetResult, VisResult, visualize
from stlens.visualize.objectives import Objective
from stlens.visualize.regularizers import Regularization
from stlens.visualize.transforms import Transforms

__all__ = ["Objective", "Regularization", "TargetResult", "Transforms", "VisResult", "objectives", "visualize"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> VisResult:
        return visualize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
