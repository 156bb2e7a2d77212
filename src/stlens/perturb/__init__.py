"""Behavioural tests of the static bias (``stlens perturb``): score a model clean and under perturbations that remove
motion (shuffle, freeze, reverse, stride) or change appearance (palette, fourier, static-mix), with retention and
bootstrap intervals over clips.

``perturbations`` (the perturbations) · ``stats`` (drop, retention, intervals) · ``run`` (the loop: decode once,
every perturbation on the held batch) · ``result`` (``PerturbResult`` and its run folder) · ``dataset`` (is a dataset
static-biased? ``dataset_report`` over perturb runs, ``--dataset-report``).

This package is callable: ``stlens.perturb(model, data, ...)`` is ``stlens.perturb.run.perturb``.
"""

from stlens._lazy import callable_package
from stlens.perturb.dataset import DatasetReport, dataset_report, load_dataset_report
from stlens.perturb.result import PerturbResult, load_perturb
from stlens.perturb.run import perturb

__all__ = ["DatasetReport", "PerturbResult", "dataset_report", "load_dataset_report", "load_perturb", "perturb"]

callable_package(__name__, "stlens.perturb.run:perturb")  # stlens.perturb(...) is the verb
