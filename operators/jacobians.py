r"""Jacobians of Φ_K: dense (torch.func, small n) and matrix-free (products, power iteration).

Notation of the paper: ∂_xΦ_K(x, θ) ∈ ℝ^{n×n} (its norm at x̂ is the measured δ_K) and
∂_θΦ_K(x, θ) ∈ ℝ^{n×d}, with θ flattened to ℝ^d in the order of its leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jacfwd, jacrev, jvp, vjp

from .errors import InvalidInputError
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


def power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    *,
    iterations: int = 100,
    rtol: float = 0.0,
) -> float:
    r"""The suite's one power iteration: ‖A‖₂ of a symmetric linear map A (matrix-free).

    .. math:: v_{k+1} = A v_k / ‖A v_k‖, \qquad σ_k = ‖A v_k‖ \ (‖v_k‖ = 1)

    σ_k ≤ ‖A‖₂ for every k and σ_k → |λ|_max: a **lower** estimate (for AᵀA it estimates
    ‖A‖₂², for a Hessian ‖∂ₓₓL‖₂). Stops after ``iterations`` products or when σ changes by at
    most ``rtol``·σ. Returns 0 when A v = 0. A bound that uses the result is not certified.
    """
    if iterations < 1:
        raise InvalidInputError(f"iterations must be >= 1, got {iterations}.")
    v = v0 / torch.linalg.vector_norm(v0)
    sigma = 0.0
    for _ in range(iterations):
        Av = apply(v)
        new_sigma = torch.linalg.vector_norm(Av).item()
        if new_sigma == 0.0:
            return 0.0
        v = Av / new_sigma
        if abs(new_sigma - sigma) <= rtol * new_sigma:
            return new_sigma
        sigma = new_sigma
    return sigma


def start_vector(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """v₀ ~ N(0, I) shaped like x, drawn on the generator's device (x's when none is given)
    and placed on x's device: the start of a seeded power iteration."""
    where = generator.device if generator is not None else x.device
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=where)
    return v.to(x.device)


def power_norm_x(
    Phi: Block,
    x: torch.Tensor,
    theta: Theta,
    *,
    iterations: int = 100,
    rtol: float = 1e-10,
    generator: torch.Generator | None = None,
) -> float:
    r"""Matrix-free ‖∂_xΦ_K(x, θ)‖₂ by :func:`power_iteration` on AᵀA (one JVP and one VJP a
    step). A lower estimate that increases to the norm; ``generator`` seeds the start vector.
    """
    th = _detached(theta)
    xd = x.detach()

    def f(z: torch.Tensor) -> torch.Tensor:
        return Phi(z, th)

    _, pullback = vjp(f, xd)

    def gram(v: torch.Tensor) -> torch.Tensor:
        _, Av = jvp(f, (xd,), (v,))
        return pullback(Av)[0]

    # ‖AᵀA‖ = ‖A‖²; the tolerance on σ² is twice the tolerance on σ
    return (
        power_iteration(gram, start_vector(x, generator), iterations=iterations, rtol=2 * rtol)
        ** 0.5
    )


def dot_product_gap(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
) -> float:
    r"""The suite's one adjointness (dot-product) test, relative:

    .. math:: \frac{|⟨Ax, y⟩ − ⟨x, A^\top y⟩|}{\max(‖Ax‖‖y‖,\ ‖x‖‖A^\top y‖)}

    0 up to rounding when ``adjoint`` is the adjoint of ``forward``. deepinv's
    ``LinearPhysics.adjointness_test`` returns the unnormalised gap for one random pair; this
    one is scale-free (so one tolerance per dtype serves every operator) and takes the pair
    from the caller (seeded, on any device). ``tests/test_physics.py`` checks it against
    deepinv's.
    """
    Ax, ATy = forward(x), adjoint(y)
    gap = (torch.vdot(Ax.flatten(), y.flatten()) - torch.vdot(x.flatten(), ATy.flatten())).abs()
    scale = max(
        float(Ax.norm() * y.norm()), float(x.norm() * ATy.norm()), torch.finfo(x.dtype).tiny
    )
    return float(gap) / scale
