"""stlens: what spatiotemporal video networks encode — static vs. dynamic information per layer and channel."""

__version__ = "0.1.0"

from stlens import visualize  # noqa: E402  (a callable package: stlens.visualize(...) runs visualize.api.visualize)
from stlens.errors import StlensError  # noqa: E402
from stlens.measure import LayerResult, MeasureResult, PairedMoments, measure  # noqa: E402
from stlens.models.registry import InputSpec, ModelHandle, load_model  # noqa: E402
from stlens.models.taps import LayerTaps  # noqa: E402
from stlens.pairs.makers import Pair, VideoPairs, make_pairs  # noqa: E402
from stlens.pairs.stylized import StylizedPairs  # noqa: E402
from stlens.pairs.twostream import TwoStreamPairs  # noqa: E402
from stlens.report.load import load_result  # noqa: E402
from stlens.train.static_dropout import RandomChannelDropout, StaticDropout  # noqa: E402
from stlens.train.tracking import BiasTracker, TrackResult, track  # noqa: E402
from stlens.video.sources import open_data  # noqa: E402

__all__ = [
    "BiasTracker", "InputSpec", "LayerResult", "LayerTaps", "MeasureResult", "ModelHandle", "Pair", "PairedMoments",
    "RandomChannelDropout", "StaticDropout", "StlensError", "StylizedPairs", "TrackResult", "TwoStreamPairs",
    "VideoPairs", "__version__", "load_model", "load_result", "make_pairs", "measure", "open_data", "track",
    "visualize",
]
