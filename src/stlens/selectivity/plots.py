"""selectivity.png: over depth, the share of class-specific units and the mean class-selectivity index (95% CI)
per layer (the figure style and palette of ``stlens.measure.plots``)."""

from __future__ import annotations

from typing import Any, Protocol

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from stlens.measure.plots import SERIES, STYLE, figure, short_label, whisker


class Layers(Protocol):
    """What the figure reads of a result (``SelectivityResult`` is one)."""

    model: str
    layers: list[Any]


def depth_figure(result: Layers) -> Figure:
    """Two panels over the layers: % class-specific units; mean SI with its bootstrap 95% interval."""
    names = [short_label(layer.layer) for layer in result.layers]
    x = np.arange(len(names))
    share = [100 * layer.summary["shares"]["class-specific"] for layer in result.layers]
    mean = [layer.summary["mean_selectivity"] for layer in result.layers]
    errors = np.array([whisker(m, _ci(layer.summary.get("mean_selectivity_ci95")))
                       for m, layer in zip(mean, result.layers, strict=True)]).T.reshape(2, -1)
    fig = figure(max(4.0, 0.7 * len(names) + 2.5), 3.2)
    with matplotlib.rc_context(STYLE):
        left, right = fig.subplots(1, 2)
        left.bar(x, share, color=SERIES[0])
        left.set_ylabel("class-specific units (%)")
        left.set_ylim(0, 100)
        right.errorbar(x, mean, yerr=errors, marker="o", color=SERIES[1], capsize=3)
        right.set_ylabel("mean selectivity index")
        right.set_ylim(0, 1)
        for axis in (left, right):
            axis.set_xticks(x, names, rotation=45, ha="right")
        fig.suptitle(short_label(str(result.model), 60))
    return fig


def _ci(ci: Any) -> list[float] | None:
    if not ci or ci[0] is None or ci[0] != ci[0]:
        return None
    return [float(ci[0]), float(ci[1])]
