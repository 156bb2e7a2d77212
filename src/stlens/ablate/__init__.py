"""Unit masking (``stlens ablate``): do the channels a measure run finds dynamic (or static) carry the task?

``selection`` (the ranking rules and random controls) · ``masking`` (forward hooks: zero or mean) · ``metrics``
(per-clip scores, bootstrap intervals; top-1/top-5 accuracy) · ``run`` (the loop: decode once, every condition on
the held batch) · ``result`` (``AblationResult`` and its run folder) · ``plots``.

This package is callable: ``stlens.ablate(model, data, from_run, ...)`` is ``stlens.ablate.run.ablate``.
"""

from stlens._lazy import callable_package
from stlens.ablate.result import AblationResult, load_ablation
from stlens.ablate.run import ablate

__all__ = ["AblationResult", "ablate", "load_ablation"]

callable_package(__name__, "stlens.ablate.run:ablate")  # stlens.ablate(...) is the verb
