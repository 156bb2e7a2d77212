"""stlens: what spatiotemporal video networks encode — static vs. dynamic information per layer and channel.

Every verb is a plain function with its real signature (``measure``, ``layers``, ``evaluate``, ``train``, ``track``,
``stylize``, ``check_pairs``, ``visualize``, ``ablate``, ``perturb``, ``selectivity``, ``explain``, ``report``);
attributes load on first use (``import stlens`` itself imports nothing heavy): see docs/architecture.md.
"""

from stlens._lazy import attach
from stlens._version import __version__

_NAMES = {
    "AblationResult": "stlens.ablate.result:AblationResult",
    "BiasTracker": "stlens.train.tracking:BiasTracker",
    "ExplainResult": "stlens.explain.result:ExplainResult",
    "InputSpec": "stlens.core.spec:InputSpec",
    "LayerResult": "stlens.measure.layer:LayerResult",
    "LayerTaps": "stlens.models.taps:LayerTaps",
    "MeasureResult": "stlens.measure.result:MeasureResult",
    "ModelHandle": "stlens.core.handle:ModelHandle",
    "Pair": "stlens.core.pair:Pair",
    "PairedMoments": "stlens.measure.moments:PairedMoments",
    "PerturbResult": "stlens.perturb.result:PerturbResult",
    "RandomChannelDropout": "stlens.train.static_dropout:RandomChannelDropout",
    "SelectivityResult": "stlens.selectivity.result:SelectivityResult",
    "StaticDropout": "stlens.train.static_dropout:StaticDropout",
    "StlensError": "stlens.errors:StlensError",
    "StylizedPairs": "stlens.pairs.stylized:StylizedPairs",
    "TrackResult": "stlens.train.tracking:TrackResult",
    "TwoStreamPairs": "stlens.pairs.twostream:TwoStreamPairs",
    "VideoPairs": "stlens.pairs.makers:VideoPairs",
    "ablate": "stlens.ablate",  # a callable package: stlens.ablate(...) runs ablate.run.ablate
    "check_pairs": "stlens.pairs.check:check_pairs",
    "evaluate": "stlens.train.evaluate:evaluate",
    "explain": "stlens.explain",  # a callable package: stlens.explain(...) runs explain.run.explain
    "layers": "stlens.models.inspect:layers",
    "list_models": "stlens.models.registry:list_models",
    "load_model": "stlens.models.registry:load_model",
    "load_result": "stlens.report.load:load_result",
    "make_pairs": "stlens.pairs.compose:make_pairs",
    "measure": "stlens.measure",  # a callable package: stlens.measure(...) runs measure.verb.measure
    "open_data": "stlens.video.sources:open_data",
    "perturb": "stlens.perturb",  # a callable package: stlens.perturb(...) runs perturb.run.perturb
    "report": "stlens.report",  # a callable package: stlens.report(...) runs report.html.report
    "selectivity": "stlens.selectivity",  # a callable package: stlens.selectivity(...) runs selectivity.run.selectivity
    "stylize": "stlens.pairs.stylize:stylize",
    "track": "stlens.train.tracking:track",
    "train": "stlens.train",  # a callable package: stlens.train(...) runs train.verb.train
    "visualize": "stlens.visualize",  # a callable package: stlens.visualize(...) runs visualize.api.visualize
}
__getattr__, __dir__ = attach(__name__, _NAMES)
__all__ = [*sorted(_NAMES), "__version__"]
