"""What a prediction looks at, in space and time (``stlens explain``; docs/explain.md).

``maps`` (captum's attribution methods → one non-negative (T, H, W) map per input, normalised to sum 1) · ``run``
(the verb) · ``result`` (``ExplainResult`` and its run folder).

This package is callable: ``stlens.explain(model, data, ...)`` is ``stlens.explain.run.explain``.
"""

from stlens._lazy import callable_package
from stlens.explain.result import ExplainResult, load_explain
from stlens.explain.run import explain

__all__ = ["ExplainResult", "explain", "load_explain"]

callable_package(__name__, "stlens.explain.run:explain")  # stlens.explain(...) is the verb
