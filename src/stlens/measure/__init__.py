"""Static vs. dynamic measurement: streaming moments, the estimator, the loop and its result (loaded on first use, so
that ``stlens.measure.estimate`` imports numpy only)."""

import sys
import types

from stlens._lazy import attach

_NAMES = {
    "LayerResult": "stlens.measure.layer:LayerResult",
    "MeasureResult": "stlens.measure.result:MeasureResult",
    "PairedMoments": "stlens.measure.moments:PairedMoments",
    "measure": "stlens.measure.run:measure",
}
__getattr__, __dir__ = attach(__name__, _NAMES)
__all__ = sorted(_NAMES)


class _CallablePackage(types.ModuleType):
    """``stlens.measure(...)`` runs ``stlens.measure.run.measure`` (the function and the package share one name)."""

    def __call__(self, *args, **kwargs):
        from stlens.measure.run import measure

        return measure(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
