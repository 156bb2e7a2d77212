"""Static vs. dynamic measurement: streaming moments, the estimator, the loop and its result (loaded on first use, so
that ``stlens.measure.estimate`` imports numpy only)."""

from stlens._lazy import attach, callable_package

_NAMES = {
    "LayerResult": "stlens.measure.layer:LayerResult",
    "MeasureResult": "stlens.measure.result:MeasureResult",
    "PairedMoments": "stlens.measure.moments:PairedMoments",
    "measure": "stlens.measure.verb:measure",
}
__getattr__, __dir__ = attach(__name__, _NAMES)
__all__ = sorted(_NAMES)
callable_package(__name__, "stlens.measure.verb:measure")  # stlens.measure(...) is the verb
