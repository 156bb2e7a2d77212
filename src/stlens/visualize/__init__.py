"""Activation maximization for video and two-stream networks (Feichtenhofer et al., CVPR 2018 / IJCV 2019).

``objectives`` (composable targets) · ``params`` (pixel / Fourier RGB video, flow stack) · ``regularizers`` (L_α,
spatial TV, temporal variation, range bound) · ``transforms`` (jitter, zoom, temporal roll) · ``render`` (the batched
optimizer loop) · ``outputs`` (GIF, MP4, flow displays, mosaic, JSON) · ``api`` (``visualize``).

This package is callable: ``stlens.visualize(model, target, ...)`` is ``stlens.visualize.api.visualize`` (so the
function and the package, e.g. ``stlens.visualize.objectives``, share one name without shadowing each other).
"""

from stlens._lazy import attach, callable_package

_NAMES = {
    "Objective": "stlens.visualize.objectives:Objective",
    "Regularization": "stlens.visualize.regularizers:Regularization",
    "TargetResult": "stlens.visualize.api:TargetResult",
    "Transforms": "stlens.visualize.transforms:Transforms",
    "VisResult": "stlens.visualize.api:VisResult",
    "objectives": "stlens.visualize.objectives",
    "visualize": "stlens.visualize.api:visualize",
}
__getattr__, __dir__ = attach(__name__, _NAMES)
__all__ = sorted(_NAMES)
callable_package(__name__, "stlens.visualize.api:visualize")  # stlens.visualize(...) is the verb
