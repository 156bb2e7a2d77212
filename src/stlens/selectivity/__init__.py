"""Class-specific and generic units (``stlens selectivity``; Feichtenhofer et al.'s claim 2).

``index`` (the class-selectivity index of Morcos et al. 2018, its bootstrap interval, the unit labels; numpy only) ·
``run`` (the verb: one pass of the model over labelled clips) · ``result`` (``SelectivityResult`` and its run
folder) · ``plots``.

This package is callable: ``stlens.selectivity(model, data, layers, ...)`` is ``stlens.selectivity.run.selectivity``.
"""

from stlens._lazy import callable_package
from stlens.selectivity.result import LayerSelectivity, SelectivityResult, load_selectivity
from stlens.selectivity.run import selectivity

__all__ = ["LayerSelectivity", "SelectivityResult", "load_selectivity", "selectivity"]

callable_package(__name__, "stlens.selectivity.run:selectivity")  # stlens.selectivity(...) is the verb
