r"""The constants the bounds need, measured on Φ_K and L (all spectral norms ‖·‖₂).

==================  ============================================  ===============================
name                quantity                                      method, and whether certified
==================  ============================================  ===============================
δ_K (analytic)      Lipschitz constant of Φ_K, ≤ Π ω(τ) (10)      given by the caller: certified
δ_K (measured)      ‖∂_xΦ_K(x)‖₂ at x̂ (and along the trajectory)  dense SVD (n ≤ 4096): exact at
                                                                  that point; power iteration
                                                                  (n > 4096): a lower estimate.
                                                                  A local norm, never a
                                                                  Lipschitz constant (Theorem 1,
                                                                  Theorem 2 need one)
‖∂_θΦ_K(x)‖₂        sensitivity of one block to θ                 dense n×d Jacobian (forward
                                                                  mode, d columns), SVD: exact
L_θ                 Assumption 2 at the pair (x_{K(T−1)}, x̂)      exact secant ratio: certified
                    that Theorem 2's proof uses
H (loss secant)     ‖∂_xL(x_{KT}) − ∂_xL(x̂)‖ / ‖x_{KT} − x̂‖       exact secant ratio: certified
‖∂_xxL(x̂)‖₂         Hessian of the loss at x̂ (Theorem 2 printed)  dense Hessian, SVD (n ≤ 4096):
                                                                  exact; else power iteration on
                                                                  Hessian-vector products: a
                                                                  lower estimate
o-term of (33)      ‖∂_θΦ_K(x_{K(T−1)})‖ · Taylor remainder of    one Hessian-vector product:
                    ∂_xL between x̂ and x_{KT}                     exact
==================  ============================================  ===============================

The proofs of Lemma 1 and Theorem 2 use Assumption 2 and the smoothness of L at one pair of
points each, so the exact secant ratios at those pairs are the constants that make the proofs
go through, with nothing sampled. The sampled sup of the mixed derivative is kept as a
diagnostic (:func:`mixed_derivative_sup`), never used in a bound.
"""

from __future__ import annotations

import torch
from retune_suite.operators.jacobians import (
    Block,
    jacobian_theta,
    jacobian_x,
    load_forward_mode,
    mixed_derivative,
    power_iteration,
    power_norm_x,
    spectral_norm,
    start_vector,
)
from retune_suite.operators.memory import check_dense
from retune_suite.operators.theta import Loss, Theta, as_tuple
from torch.func import hessian

DENSE_LIMIT = 4096

DTHETA_ALTERNATIVE = (
    "bounds.verify takes ‖∂_θΦ_K‖₂ and L_θ from dense n×d Jacobians; at this size use "
    "hypergrad.estimate(..., delta=, lipschitz_theta=, hessian_bound=), whose certificate "
    "needs only products (‖∂_θΦ_K‖₂ by power iteration beyond its dense limits), or a "
    "smaller n or d"
)


def _check_dtheta(what: str, x: torch.Tensor, theta: Theta, copies: int) -> None:
    """Refuse (MemoryGuardError) ``copies`` dense n×d matrices that exceed the memory limit."""
    d = sum(t.numel() for t in as_tuple(theta))
    check_dense(what, x.numel(), d, x.dtype, x.device, copies=copies,
                alternative=DTHETA_ALTERNATIVE)  # fmt: skip


def check_verify_memory(x: torch.Tensor, theta: Theta) -> None:
    """Refuse, before any work, a :func:`~retune_suite.bounds.verify` whose dense ∂_θΦ_K
    cannot fit: it holds ∂_θΦ_K at x̂ and at x_{K(T−1)} (n×d each, reused), their difference
    and the SVD's copy at once (:class:`~retune_suite.operators.errors.MemoryGuardError`
    naming the size, the limit and :func:`~retune_suite.operators.hypergrad.estimate`)."""
    _check_dtheta("bounds.verify's dense ∂_θΦ_K (at x̂ and x_{K(T−1)}, their difference, SVD)",
                  x, theta, copies=4)  # fmt: skip


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
    """‖∂_θΦ_K(x, θ)‖₂ from the dense n×d Jacobian (the Jacobian and the SVD each refused
    with :class:`~retune_suite.operators.errors.MemoryGuardError` when they exceed the memory
    limit, :mod:`retune_suite.operators.memory`)."""
    return spectral_norm(jacobian_theta(Phi, x, theta))


def lipschitz_theta(Phi: Block, x_star: torch.Tensor, x: torch.Tensor, theta: Theta) -> float:
    r"""L_θ of Assumption 2 where Theorem 2's proof uses it: the exact secant ratio

    .. math:: L_θ = ‖∂_θΦ_K(x) − ∂_θΦ_K(x̂)‖₂ / ‖x − x̂‖₂, \qquad x = x_{K(T−1)}

    (dense n×d Jacobians, spectral norm). It is the smallest constant for which Assumption 2
    holds at that pair, and the proof applies the assumption at that pair only, so a bound
    built with it is certified. Returns 0 when x = x̂ (the term it multiplies then vanishes).
    Each Jacobian, then their difference and the SVD's copy, are checked against the memory
    limit before they are formed (:mod:`retune_suite.operators.memory`).
    """
    v = x - x_star
    dist = torch.linalg.vector_norm(v).item()
    if dist == 0.0:
        return 0.0
    at_x, at_star = jacobian_theta(Phi, x, theta), jacobian_theta(Phi, x_star, theta)
    _check_dtheta("L_θ (the difference of two dense n×d Jacobians, SVD)", x, theta, copies=2)
    secant = spectral_norm(at_x - at_star)
    return secant / dist


def mixed_derivative_sup(
    Phi: Block, x_star: torch.Tensor, x: torch.Tensor, theta: Theta, points: int = 17
) -> float:
    r"""max over ``points`` equispaced s ∈ [0, 1] of ‖d/ds ∂_θΦ_K(x̂ + s v)‖₂ / ‖v‖, v = x − x̂.

    A **sampled** diagnostic, not a bound: it can miss the maximum of a smooth map's mixed
    derivative between the samples (and returns 0 on a map whose mixed derivative vanishes at
    the samples while the secant does not), and it misses the jumps of piecewise-smooth maps
    (soft thresholding). :func:`lipschitz_theta` is what the bounds use.
    """
    v = x - x_star
    dist = torch.linalg.vector_norm(v).item()
    if dist == 0.0:
        return 0.0
    sup = 0.0
    for s in torch.linspace(0.0, 1.0, points, dtype=x.dtype).tolist():
        sup = max(sup, spectral_norm(mixed_derivative(Phi, x_star + s * v, theta, v)))
    return sup / dist


def _loss_grad(loss: Loss, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    z = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss(z).reshape(()), z, create_graph=create_graph)
    return g


def loss_gradient_secant(loss: Loss, x_star: torch.Tensor, x: torch.Tensor) -> float:
    r"""The exact secant ratio of ∂_xL at the pair the proof of Theorem 2 uses:

    .. math:: H = ‖∂_xL(x) − ∂_xL(x̂)‖₂ / ‖x − x̂‖₂, \qquad x = x_{KT}

    The proof needs only ‖∂_xL(x_{KT}) − ∂_xL(x̂)‖ ≤ H‖x_{KT} − x̂‖ at that one pair, so this
    H is exact and certified (a sup of ‖∂_xxL‖ sampled on the segment is neither: it misses
    a sharp curvature between samples). Returns 0 when x = x̂.
    """
    dist = torch.linalg.vector_norm(x - x_star).item()
    if dist == 0.0:
        return 0.0
    diff = _loss_grad(loss, x) - _loss_grad(loss, x_star)
    return torch.linalg.vector_norm(diff).item() / dist


def taylor_remainder(loss: Loss, x_star: torch.Tensor, x: torch.Tensor) -> float:
    r"""‖∂_xL(x) − ∂_xL(x̂) − ∂_xxL(x̂)(x − x̂)‖₂, exactly (one Hessian-vector product).

    The o(δ_K^T‖x̂ − x₀‖) term of Theorem 2 (33) is ‖∂_θΦ_K(x_{K(T−1)})‖ times this remainder
    at x = x_{KT} (the first-order Taylor expansion of ∂_xL in the proof); it is 0 for a
    quadratic loss.
    """
    v = (x - x_star).detach()
    z = x_star.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss(z).reshape(()), z, create_graph=True)
        if g.requires_grad:
            (hv,) = torch.autograd.grad(g, z, v, allow_unused=True)
            hv = torch.zeros_like(v) if hv is None else hv
        else:  # affine loss: zero Hessian
            hv = torch.zeros_like(v)
    rem = _loss_grad(loss, x) - g.detach() - hv
    return torch.linalg.vector_norm(rem).item()


def hessian_norm(loss: Loss, x: torch.Tensor) -> float:
    """‖∂_xxL(x)‖₂ from the dense Hessian (n ≤ 4096; refused with
    :class:`~retune_suite.operators.errors.MemoryGuardError` when the Hessian and the n×n basis
    torch.func pushes exceed the memory limit, :mod:`retune_suite.operators.memory`)."""
    shape = x.shape
    n = x.numel()
    check_dense("the dense Hessian ∂ₓₓL(x)", n, n, x.dtype, x.device, copies=2,
                alternative="take ‖∂ₓₓL‖₂ by hessian_power_norm (Hessian-vector products, a "
                "lower estimate), or give hessian_bound")  # fmt: skip

    def f(z: torch.Tensor) -> torch.Tensor:
        return loss(z.reshape(shape)).reshape(())

    z = x.detach().reshape(-1)
    load_forward_mode()  # hessian = jacfwd(jacrev): forward mode
    try:
        H = hessian(f)(z)
    except (RuntimeError, NotImplementedError):
        H = torch.autograd.functional.hessian(f, z)
    return spectral_norm(H)


def hessian_power_norm(
    loss: Loss, x: torch.Tensor, *, iterations: int = 50, generator: torch.Generator | None = None
) -> float:
    """‖∂_xxL(x)‖₂ matrix-free (any n): :func:`retune_suite.operators.jacobians.power_iteration` on
    Hessian-vector products. A lower estimate: a bound using it is not certified."""
    z = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(z).reshape(()), z, create_graph=True)
    if not grad.requires_grad:  # the loss is affine: its Hessian is zero
        return 0.0

    def hvp(v: torch.Tensor) -> torch.Tensor:
        (hv,) = torch.autograd.grad(grad, z, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv

    return power_iteration(hvp, start_vector(x, generator), iterations=iterations)
