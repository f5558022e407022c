r"""The constants the bounds need, measured on Φ_K and L (all spectral norms ‖·‖₂).

=================  ==============================================  =============================
name               quantity                                        method
=================  ==============================================  =============================
δ_K (analytic)     Lipschitz constant of Φ_K, ≤ Π ω(τ) (10)        given by the problem
δ_K (measured)     ‖∂_xΦ_K(x)‖₂ at x̂ (and along the trajectory)   dense SVD (n ≤ 4096), else
                                                                   power iteration (JVP + VJP)
‖∂_θΦ_K(x)‖₂       sensitivity of one block to θ                   dense n×d Jacobian (forward
                                                                   mode, d columns), SVD
L_θ                Lipschitz ratio of Assumption 2 on the segment  max(secant ratio at the end,
                   [x̂, x_{K(T−1)}] used by Theorem 2              sup over 17 points of the
                                                                   directional ∂_x∂_θΦ_K)
‖∂_xxL‖₂           Hessian of the loss, at x̂ or sup on a segment  dense Hessian, SVD
=================  ==============================================  =============================

L_θ is conservative for the use the proof makes of it: the secant ratio at x_{K(T−1)} is
exactly the smallest L_θ that makes Assumption 2 hold there, and the sup of the mixed
derivative along the segment bounds it from above for smooth maps (mean-value inequality);
taking the maximum keeps the estimate valid for piecewise-smooth maps (soft thresholding),
whose mixed derivative misses the jumps. It is not a sup over a whole ball around x̂.
"""

from __future__ import annotations

import torch
from torch.func import hessian

from operators.jacobians import (
    Block,
    jacobian_theta,
    jacobian_x,
    mixed_derivative,
    power_norm_x,
    spectral_norm,
)
from operators.theta import Loss, Theta

DENSE_LIMIT = 4096
SEGMENT_POINTS = 17


def delta_measured(
    Phi: Block,
    x: torch.Tensor,
    theta: Theta,
    *,
    method: str = "auto",
    iterations: int = 100,
    generator: torch.Generator | None = None,
) -> float:
    """‖∂_xΦ_K(x, θ)‖₂: dense SVD (``"dense"``, the ``"auto"`` choice for n ≤ 4096) or
    matrix-free power iteration (``"power"``, a lower estimate that converges to the norm)."""
    if method == "dense" or (method == "auto" and x.numel() <= DENSE_LIMIT):
        return spectral_norm(jacobian_x(Phi, x, theta))
    return power_norm_x(Phi, x, theta, iterations=iterations, generator=generator)


def dtheta_norm(Phi: Block, x: torch.Tensor, theta: Theta) -> float:
    """‖∂_θΦ_K(x, θ)‖₂ from the dense n×d Jacobian."""
    return spectral_norm(jacobian_theta(Phi, x, theta))


def lipschitz_theta(
    Phi: Block, x_star: torch.Tensor, x: torch.Tensor, theta: Theta, points: int = SEGMENT_POINTS
) -> float:
    r"""L_θ of Assumption 2 on the segment [x̂, x] (see the module docstring for the method).

    Returns 0 when x = x̂ (the term it multiplies then vanishes).
    """
    v = x - x_star
    dist = torch.linalg.vector_norm(v).item()
    if dist == 0.0:
        return 0.0
    secant = spectral_norm(jacobian_theta(Phi, x, theta) - jacobian_theta(Phi, x_star, theta))
    sup = 0.0
    for s in torch.linspace(0.0, 1.0, points, dtype=x.dtype).tolist():
        sup = max(sup, spectral_norm(mixed_derivative(Phi, x_star + s * v, theta, v)))
    return max(secant, sup) / dist


def hessian_norm(loss: Loss, x: torch.Tensor) -> float:
    """‖∂_xxL(x)‖₂ from the dense Hessian (n ≤ 4096)."""
    shape = x.shape

    def f(z: torch.Tensor) -> torch.Tensor:
        return loss(z.reshape(shape)).reshape(())

    z = x.detach().reshape(-1)
    try:
        H = hessian(f)(z)
    except (RuntimeError, NotImplementedError):
        H = torch.autograd.functional.hessian(f, z)
    return spectral_norm(H)


def hessian_power_norm(
    loss: Loss, x: torch.Tensor, *, iterations: int = 50, generator: torch.Generator | None = None
) -> float:
    """‖∂_xxL(x)‖₂ matrix-free: power iteration on Hessian-vector products (any n)."""
    z = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(z).reshape(()), z, create_graph=True)
    # the start vector is drawn on the generator's device (x's when none is given)
    where = generator.device if generator is not None else x.device
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=where).to(x.device)
    v = v / torch.linalg.vector_norm(v)
    sigma = 0.0
    for _ in range(iterations):
        (hv,) = torch.autograd.grad(grad, z, v, retain_graph=True, allow_unused=True)
        if hv is None:  # the loss is affine: its Hessian is zero
            return 0.0
        sigma = torch.linalg.vector_norm(hv).item()
        if sigma == 0.0:
            return 0.0
        v = hv / sigma
    return sigma


def hessian_sup(
    loss: Loss, a: torch.Tensor, b: torch.Tensor, points: int = SEGMENT_POINTS
) -> float:
    """sup of ‖∂_xxL‖₂ over ``points`` equispaced points of the segment [a, b]."""
    return max(
        hessian_norm(loss, a + s * (b - a))
        for s in torch.linspace(0.0, 1.0, points, dtype=a.dtype).tolist()
    )
