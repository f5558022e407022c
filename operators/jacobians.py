r"""Jacobians of Φ_K: dense (torch.func, small n) and matrix-free (products, power iteration).

Notation of the paper: ∂_xΦ_K(x, θ) ∈ ℝ^{n×n} (its norm at x̂ is the measured δ_K) and
∂_θΦ_K(x, θ) ∈ ℝ^{n×d}, with θ flattened to ℝ^d in the order of its leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jacfwd, jacrev, jvp, vjp

from .theta import Theta, as_tuple, flat, like, unflat

Block = Callable[[torch.Tensor, Theta], torch.Tensor]


def _detached(theta: Theta) -> Theta:
    return like(theta, tuple(t.detach() for t in as_tuple(theta)))


def jacobian_x(Phi: Block, x: torch.Tensor, theta: Theta) -> torch.Tensor:
    """Dense ∂_xΦ_K(x, θ) as an (n, n) matrix, n = x.numel() (torch.func.jacrev)."""
    th = _detached(theta)
    shape = x.shape

    def f(z: torch.Tensor) -> torch.Tensor:
        return Phi(z.reshape(shape), th).reshape(-1)

    z = x.detach().reshape(-1)
    try:
        return jacrev(f)(z)
    except (RuntimeError, NotImplementedError):  # steps that torch.func cannot transform
        return torch.autograd.functional.jacobian(f, z)


def jacobian_theta(Phi: Block, x: torch.Tensor, theta: Theta) -> torch.Tensor:
    """Dense ∂_θΦ_K(x, θ) as an (n, d) matrix (forward mode: d is small)."""
    leaves = tuple(t.detach() for t in as_tuple(theta))
    # x is not detached: under torch.func.jvp (mixed_derivative) that would drop its tangent.

    def f(v: torch.Tensor) -> torch.Tensor:
        return Phi(x, like(theta, unflat(v, leaves))).reshape(-1)

    v = flat(leaves)
    try:
        return jacfwd(f)(v)
    except (RuntimeError, NotImplementedError):
        return torch.autograd.functional.jacobian(f, v)


def mixed_derivative(
    Phi: Block, x: torch.Tensor, theta: Theta, direction: torch.Tensor
) -> torch.Tensor:
    r"""Directional mixed derivative d/ds ∂_θΦ_K(x + s·v, θ)|_{s=0}, an (n, d) matrix.

    Its spectral norm over ‖v‖ bounds, by the mean-value inequality on the segment, the
    Lipschitz ratio of Assumption 2 along v.
    """
    shape = x.shape

    def dtheta(z: torch.Tensor) -> torch.Tensor:
        return jacobian_theta(Phi, z.reshape(shape), theta)

    _, tangent = jvp(dtheta, (x.detach().reshape(-1),), (direction.detach().reshape(-1),))
    return tangent


def spectral_norm(matrix: torch.Tensor) -> float:
    """‖M‖₂, the largest singular value (dense SVD)."""
    if matrix.numel() == 0:
        return 0.0
    return torch.linalg.matrix_norm(matrix, ord=2).item()


def power_norm_x(
    Phi: Block,
    x: torch.Tensor,
    theta: Theta,
    *,
    iterations: int = 100,
    rtol: float = 1e-10,
    generator: torch.Generator | None = None,
) -> float:
    r"""Matrix-free ‖∂_xΦ_K(x, θ)‖₂ by power iteration on AᵀA (one JVP and one VJP a step).

    A lower estimate that increases to the norm; ``generator`` seeds the start vector.
    """
    th = _detached(theta)
    xd = x.detach()

    def f(z: torch.Tensor) -> torch.Tensor:
        return Phi(z, th)

    _, pullback = vjp(f, xd)
    # the start vector is drawn on the generator's device (x's when none is given)
    where = generator.device if generator is not None else x.device
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=where).to(x.device)
    v = v / torch.linalg.vector_norm(v)
    sigma = 0.0
    for _ in range(iterations):
        _, Av = jvp(f, (xd,), (v,))
        (AtAv,) = pullback(Av)
        norm = torch.linalg.vector_norm(AtAv).item()
        if norm == 0.0:
            return 0.0
        new_sigma = norm**0.5
        v = AtAv / norm
        if abs(new_sigma - sigma) <= rtol * new_sigma:
            return new_sigma
        sigma = new_sigma
    return sigma
