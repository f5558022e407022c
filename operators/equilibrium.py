r"""A layer for training loops: the equilibrium of Φ_K, connected to θ's autograd graph.

:func:`equilibrium` returns an iterate x whose backward pass is one of the estimators of
:mod:`retune_suite.operators.hypergrad`, so that ``loss(x).backward()`` puts that estimator's
gradient in
``θ.grad`` (θ: tensors or ``nn.Parameter``\ s with ``requires_grad``, or a tuple of them), and
``torch.optim`` can take the step. The forward solve never stores a graph except where the
estimator differentiates through it:

=============  ==========================================================  =====================
backward       forward (what x is)                                         θ.grad after
                                                                           ``loss(x).backward()``
=============  ==========================================================  =====================
``retune``     T − 1 blocks without graph, the last block with it: x_{KT}  ``hypergrad.retune``
``unrolled``   all T blocks with the graph: x_{KT}                         ``hypergrad.unrolled``
``jfb``        x̂ by :func:`~.iteration.fixed_point`, no graph              ``hypergrad.jfb``
``neumann``    x̂, no graph; backward: P Neumann terms (22)                 ``hypergrad.deq_neumann``
``deq``        x̂, no graph; backward: adjoint (20) by GMRES                ``hypergrad.deq_solve``
=============  ==========================================================  =====================

For ``jfb``, ``neumann`` and ``deq`` the backward is a :class:`torch.autograd.Function` that
calls the estimator itself with the linear loss L(x) = ⟨w, x⟩ (w the incoming gradient
∂_xL(x̂)), so the product chain is the estimator's own (``tests/test_equilibrium.py``). A read-
out applied to x afterwards (x = Dᵀθ⁻¹u in section 4.1) adds its direct term through autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from . import hypergrad
from .errors import InvalidInputError
from .iteration import fixed_point, restart, unroll
from .theta import Step, Theta, as_tuple, check_count, check_point, like

__all__ = ["BACKWARDS", "equilibrium"]

BACKWARDS = ("retune", "unrolled", "jfb", "neumann", "deq")


@dataclass(frozen=True)
class _Spec:
    """What the implicit backward needs besides x̂ and θ."""

    step: Step
    theta: Theta
    K: int
    backward: str
    P: int | None
    tol: float | None
    solver: str
    maxiter: int


class _ImplicitBackward(torch.autograd.Function):
    """Identity on x̂ forward; backward w ↦ the estimator with L(x) = ⟨w, x⟩ at x̂."""

    @staticmethod
    def forward(ctx: Any, x_star: torch.Tensor, spec: _Spec, *leaves: torch.Tensor):
        ctx.spec = spec
        ctx.save_for_backward(x_star, *leaves)
        return x_star.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, w: torch.Tensor):
        spec: _Spec = ctx.spec
        x_star, *leaves = ctx.saved_tensors
        theta = like(spec.theta, tuple(leaves))
        w = w.detach()

        def linear(x: torch.Tensor) -> torch.Tensor:  # ∂_x⟨w, x⟩ = w, exactly
            return (x * w).sum()

        lin = hypergrad.linearise(spec.step, theta, x_star, spec.K)
        if spec.backward == "jfb":
            grad = hypergrad.jfb(spec.step, theta, x_star, linear, spec.K, lin=lin)
        elif spec.backward == "neumann":
            assert spec.P is not None
            grad = hypergrad.deq_neumann(spec.step, theta, x_star, linear, spec.K, spec.P, lin=lin)
        else:  # "deq": raises ConvergenceError rather than return an inexact gradient
            grad = hypergrad.deq_solve(
                spec.step, theta, x_star, linear, spec.K, tol=spec.tol, method=spec.solver,
                maxiter=spec.maxiter, lin=lin,
            )  # fmt: skip
        grads = as_tuple(grad)  # type: ignore[arg-type]
        needs = ctx.needs_input_grad[2:]
        return (None, None, *(g if need else None for g, need in zip(grads, needs, strict=True)))


def equilibrium(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    *,
    K: int,
    T: int | None = None,
    backward: str = "retune",
    P: int | None = None,
    tol: float | None = None,
    solver: str = "gmres",
    maxiter: int = 1000,
    fixed_point_rtol: float | None = None,
) -> torch.Tensor:
    r"""The equilibrium of Φ_K(·, θ) with the backward pass of one estimator.

    .. math::

        \text{retune / unrolled: } x = Φ_K^T(x_0, θ) = x_{KT} \ (24), \qquad
        \text{jfb / neumann / deq: } x = x̂_θ = Φ_K(x̂_θ, θ)

    ``loss(x).backward()`` then accumulates into θ.grad the gradient of
    ``hypergrad.retune`` (25), ``hypergrad.unrolled`` (23), ``hypergrad.jfb`` (28),
    ``hypergrad.deq_neumann`` (22, ``P`` terms) or ``hypergrad.deq_solve`` (20; ``tol``,
    ``solver``, ``maxiter`` as there; a :class:`~retune_suite.operators.errors.ConvergenceError` is
    raised
    by ``backward()`` when the adjoint solve fails). ``T`` is needed by ``retune`` and
    ``unrolled``; the fixed point is solved from ``x0`` to ``fixed_point_rtol`` (default 64
    ulps). x carries no graph to ``x0``.

    Examples
    --------
    >>> import torch
    >>> theta = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    >>> x = equilibrium(lambda x, t: t * x + 1.0, theta, torch.zeros(1, dtype=torch.float64),
    ...                 K=1, backward="deq")
    >>> (0.5 * x**2).sum().backward()  # x̂ = 1/(1 − θ) = 2, dx̂/dθ = 4
    >>> round(theta.grad.item(), 10)
    8.0
    """
    if backward not in BACKWARDS:
        raise InvalidInputError(
            f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}."
        )
    check_count(K, "K")
    check_point(x0, "x0", theta)
    leaves = as_tuple(theta)
    Phi = unroll(step, K)
    if backward in ("retune", "unrolled"):
        if T is None:
            raise InvalidInputError(f"backward={backward!r} needs T (the number of restarts).")
        check_count(T, "T")
        with torch.enable_grad():
            if backward == "retune":
                x = x0.detach() if T == 1 else restart(step, theta, x0, K, T - 1).x
                return Phi(x, theta)
            x = x0.detach()
            for _ in range(T):
                x = Phi(x, theta)
            return x
    if backward == "neumann":
        if P is None:
            raise InvalidInputError("backward='neumann' needs P (the number of Neumann terms).")
        check_count(P, "P")
    x_star = fixed_point(step, theta, x0, K, rtol=fixed_point_rtol).x
    spec = _Spec(step, theta, K, backward, P, tol, solver, maxiter)
    return _ImplicitBackward.apply(x_star, spec, *leaves)
