"""Static vs. dynamic measurement: streaming moments, the estimator, the loop and its result."""

from stlens.measure.moments import PairedMoments
from stlens.measure.result import LayerResult, MeasureResult
from stlens.measure.run import measure

__all__ = ["LayerResult", "MeasureResult", "PairedMoments", "measure"]
