"""Regularizers of the optimized input (pure functions, one value per batch element) and their default weights.

All functions take a video ``x`` of shape (B, D, T, H, W) — D colour channels or the (u, v) flow components — and
return (B,). Sums over D, means over positions (the 1/HW of Mahendran & Vedaldi, also over frames here):

- ``lp_norm``      R_α = mean_{t,i,j} (Σ_d x²_dtij)^{α/2} / σ^α                (bounded range, α = 6)
- ``spatial_tv``   R_TV = mean_{t,i,j} (Σ_d (x_{d,t,i,j+1} − x_dtij)² + (x_{d,t,i+1,j} − x_dtij)²)^{β/2}   (β = 2;
                   over the (H − 1)×(W − 1) positions that have both neighbours)
- ``temporal_variation``  R_T = mean_{t<T−1,i,j} Σ_d (x_{d,t+1,i,j} − x_dtij)²       (frame-to-frame change)
- ``range_bound``  R_B = mean_{t,i,j} max(0, ‖x_tij‖ − bound)²                   (per-pixel norm bound)

Units: RGB is regularized as ``rgb − 0.5`` with rgb in [0, 1]; flow in the network's encoding (pixels / 20, so the
range bound 1 is 20 px).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

RGB_SIGMA = 80.0 / 255.0
"""σ of Mahendran & Vedaldi (80 grey levels) in [0, 1] units."""
RGB_BOUND = 160.0 / 255.0
"""Their per-pixel colour-norm bound (160 grey levels) in [0, 1] units."""


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/half promoted, float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _NormTerms(torch.autograd.Function):
    """R_α and R_B from one per-pixel squared norm s = Σ_d x², with a hand-written backward:
    ∂R_α/∂x = α (s/σ²)^{α/2−1} x / (σ² P), ∂R_B/∂x = 2 max(0, √s − b) x / (√s P), P = positions per element."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float, sigma: float, bound: float):
        sq = x.square().sum(dim=1)
        scaled = sq * (1.0 / sigma ** 2)
        half = scaled.pow(alpha / 2 - 1) if alpha != 6.0 else scaled * scaled
        norm = torch.sqrt(sq + 1e-12)
        excess = torch.relu(norm - bound)
        count = sq[0].numel()
        ctx.save_for_backward(x, half, excess, norm)
        ctx.consts = (alpha, sigma, count)
        lp = (half * scaled).flatten(1).sum(dim=1) / count
        rb = excess.square().flatten(1).sum(dim=1) / count
        return lp, rb

    @staticmethod
    def backward(ctx, grad_lp: torch.Tensor, grad_rb: torch.Tensor):
        x, half, excess, norm = ctx.saved_tensors
        alpha, sigma, count = ctx.consts
        shape = (-1, *[1] * (half.ndim - 1))
        factor = half * (grad_lp.view(shape) * alpha / (sigma ** 2 * count))
        factor = factor + excess / norm * (grad_rb.view(shape) * 2.0 / count)
        return x * factor.unsqueeze(1), None, None, None


def _norm_terms(x: torch.Tensor, alpha: float, sigma: float, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _NormTerms.apply(_f32(x), float(alpha), float(sigma), float(bound))


def lp_norm(x: torch.Tensor, alpha: float = 6.0, sigma: float = RGB_SIGMA) -> torch.Tensor:
    """R_α: mean over positions of (‖x_tij‖ / σ)^α (norm over the D channels)."""
    return _norm_terms(x, alpha, sigma, float("inf"))[0]


def _sum_squares(x: torch.Tensor) -> torch.Tensor:
    """Σ x² per batch element (one pass, no squared copy)."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1).square()


class _QuadraticTV(torch.autograd.Function):
    """β = 2 spatial TV with a hand-written backward (one gradient buffer instead of autograd's slice copies)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        corner = x[..., :-1, :-1]
        dx = x[..., :-1, 1:] - corner
        dy = x[..., 1:, :-1] - corner
        count = dx[:, 0].numel() // x.shape[0]
        ctx.save_for_backward(dx, dy)
        ctx.count = count
        return (_sum_squares(dx) + _sum_squares(dy)) / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        dx, dy = ctx.saved_tensors
        g = (2.0 * grad / ctx.count).view(-1, *[1] * (dx.ndim - 1))
        gx, gy = dx * g, dy * g
        out = dx.new_zeros(*dx.shape[:-2], dx.shape[-2] + 1, dx.shape[-1] + 1)
        out[..., :-1, 1:] += gx
        out[..., 1:, :-1] += gy
        out[..., :-1, :-1] -= gx + gy
        return out


class _QuadraticTemporal(torch.autograd.Function):
    """Temporal variation with a hand-written backward (see ``_QuadraticTV``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        dt = x[:, :, 1:] - x[:, :, :-1]
        count = dt[:, 0].numel() // x.shape[0]
        ctx.save_for_backward(dt)
        ctx.count = count
        return _sum_squares(dt) / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (dt,) = ctx.saved_tensors
        g = dt * (2.0 * grad / ctx.count).view(-1, *[1] * (dt.ndim - 1))
        out = dt.new_zeros(dt.shape[0], dt.shape[1], dt.shape[2] + 1, *dt.shape[3:])
        out[:, :, 1:] += g
        out[:, :, :-1] -= g
        return out


def spatial_tv(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """R_TV of order β (see the module docstring)."""
    x = _f32(x)
    if beta == 2.0:
        return _QuadraticTV.apply(x)
    corner = x[..., :-1, :-1]
    dx = x[..., :-1, 1:] - corner
    dy = x[..., 1:, :-1] - corner
    sq = (dx * dx + dy * dy).sum(dim=1) + 1e-8  # the gradient of s^{β/2} is infinite at 0 for β < 2
    return sq.pow(beta / 2).flatten(1).mean(dim=1)


def temporal_variation(x: torch.Tensor) -> torch.Tensor:
    """R_T: mean over frame pairs and pixels of the squared change Σ_d (x_{t+1} − x_t)²; 0 for a single frame."""
    x = _f32(x)
    if x.shape[2] < 2:
        return x.new_zeros(x.shape[0])
    return _QuadraticTemporal.apply(x)


def range_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """R_B: mean over positions of the squared excess of the per-pixel norm over ``bound``."""
    return _norm_terms(x, 2.0, 1.0, bound)[1]


@dataclass(frozen=True)
class Regularization:
    """Weights (λ) and shapes of the regularizers shared by every job. λ_T, the weight of the temporal variation, is
    not here: it is each job's own ``temporal_reg`` (``Job.temporal_reg``, ``visualize(temporal_reg=...)``)."""

    lp: float = 0.05
    alpha: float = 6.0
    tv: float = 0.5
    beta: float = 2.0
    bound: float = 10.0

    def to_dict(self) -> dict:
        return asdict(self)


def regularizer_values(rgb: torch.Tensor, flow: torch.Tensor | None, reg: Regularization,
                       flow_bound: float = 20.0) -> dict[str, torch.Tensor]:
    """Unweighted values (B,) of every regularizer: ``rgb.*`` on rgb − 0.5 (rgb in [0, 1]); ``flow.*`` on flow/20."""
    lp, bound = _norm_terms(rgb - 0.5, reg.alpha, RGB_SIGMA, RGB_BOUND)
    values = {
        "rgb.lp_norm": lp,
        "rgb.spatial_tv": spatial_tv(rgb, reg.beta),
        "rgb.temporal_variation": temporal_variation(rgb),
        "rgb.range_bound": bound,
    }
    if flow is not None:
        encoded = flow / flow_bound
        values["flow.spatial_tv"] = spatial_tv(encoded, reg.beta)
        values["flow.temporal_variation"] = temporal_variation(encoded)
        values["flow.range_bound"] = range_bound(encoded, 1.0)
    return values


def weight_of(name: str, reg: Regularization) -> float:
    """λ of the regularizer ``name`` (``rgb.spatial_tv``, ...) other than the temporal variation (λ_T is per job)."""
    kind = name.split(".", 1)[1]
    return {"lp_norm": reg.lp, "spatial_tv": reg.tv, "range_bound": reg.bound}[kind]


def penalty(values: dict[str, torch.Tensor], reg: Regularization, temporal_reg: torch.Tensor) -> torch.Tensor:
    """Σ λ·R over ``values`` (from ``regularizer_values``) → (B,): ``*.temporal_variation`` weighted by each element's
    λ_T, ``temporal_reg`` (B,), the others by ``reg``."""
    total = torch.zeros_like(temporal_reg)
    for name, value in values.items():
        weight = temporal_reg if name.endswith("temporal_variation") else weight_of(name, reg)
        total = total + weight * value
    return total
