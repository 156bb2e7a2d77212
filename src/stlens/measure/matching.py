"""Hungarian matching of a query-based video instance segmenter's tracks to the ground-truth tracks of a clip
(docs/vis.md), shared by the ``instances`` training task (``stlens.train.instances``) and the per-instance
measurement (``stlens.measure`` with ``units="instance"``).

Per clip, with the crowd tracks left out: the cost of query q for track n is
``CLASS_WEIGHT·(−p_q(class_n)) + BCE_WEIGHT·BCE(q, n) + DICE_WEIGHT·dice(q, n)`` — the mask terms over every pixel of
every frame of the track (the weights of Mask2Former) — and ``scipy.optimize.linear_sum_assignment`` picks the
matching of least total cost.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from stlens.core.instances import Instances
from stlens.errors import StlensError

CLASS_WEIGHT = 2.0
BCE_WEIGHT = 5.0
DICE_WEIGHT = 5.0


def pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target: logits (Q, P), targets (N, P) in {0, 1}
    → (Q, N)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 − (2·Σpg + 1) / (Σp + Σg + 1), p = sigmoid(logit), of every prediction (Q, P) against every
    target (N, P) → (Q, N)."""
    p = logits.sigmoid()
    return 1 - (2 * p @ targets.T + 1) / (p.sum(1)[:, None] + targets.sum(1)[None, :] + 1)


def match_cost(logits: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor, targets: torch.Tensor
               ) -> torch.Tensor:
    """The matching cost (Q, N) of one clip: class logits (Q, K + 1), mask logits (Q, T, H, W), target classes (N,)
    and masks (N, T, H, W) in {0, 1}."""
    prob = logits.float().softmax(-1)[:, classes]
    flat, truth = masks.float().flatten(1), targets.float().flatten(1)
    return (CLASS_WEIGHT * -prob + BCE_WEIGHT * pairwise_bce(flat, truth)
            + DICE_WEIGHT * pairwise_dice(flat, truth))


def hungarian(cost: torch.Tensor | np.ndarray, fix: str = "lower `lr`") -> tuple[np.ndarray, np.ndarray]:
    """The assignment of least total cost: (query indices, target indices), one query per target (Q ≥ N); a
    non-finite cost is an error ending in ``fix`` (what to do about it)."""
    values = np.asarray(torch.as_tensor(cost).detach().cpu().double())
    if not np.isfinite(values).all():
        raise StlensError(f"the matching cost is not finite (the model's outputs overflowed): {fix}")
    rows, cols = linear_sum_assignment(values)
    return rows, cols


def _targets(instances: Instances, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes and masks of the clip's tracks other than crowd ones, as tensors on ``device``."""
    keep = ~instances.crowd
    classes = torch.as_tensor(instances.classes[keep], device=device)
    masks = torch.as_tensor(instances.masks[keep], device=device)
    return classes, masks


def matched(logits: torch.Tensor, masks: torch.Tensor, instances: Instances, fix: str = "lower `lr`"
            ) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """Match one clip: (query indices, target indices, target classes, target masks) — crowd tracks left out; the
    target indices count the non-crowd tracks only. ``fix``: see ``hungarian``."""
    classes, targets = _targets(instances, logits.device)
    if len(classes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), classes, targets
    if len(classes) > len(logits):
        raise StlensError(f"a clip has {len(classes)} instances but the model has {len(logits)} queries: raise "
                          f"queries= in the model spec")
    with torch.no_grad():
        rows, cols = hungarian(match_cost(logits, masks, classes, targets), fix)
    return rows, cols, classes, targets
