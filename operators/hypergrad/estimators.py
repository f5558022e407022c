r"""The six hypergradient estimators of the paper, for any step φ(x, θ).

============  =====================================================================  ======
name          formula                                                                paper
============  =====================================================================  ======
deq_exact     ∂_xL(x̂)ᵀ [I − ∂_xΦ_K(x̂)]⁻¹ ∂_θΦ_K(x̂), dense Jacobian, direct solve     (20)
deq_solve     the same, adjoint equation solved matrix-free (GMRES or fixed point)   (20)
deq_neumann   ∂_xL(x̂)ᵀ Σ_{p=0}^{P} ∂_xΦ_K(x̂)^p ∂_θΦ_K(x̂)                             (22)
jfb           ∂_xL(x̂)ᵀ ∂_θΦ_K(x̂)                                                     (28)
retune        ∂_xL(x_{KT})ᵀ ∂_θΦ_K(x_{K(T−1)}), T − 1 restarts without a graph       (25)
unrolled      ∂_θ[L ∘ Φ_K^T(x_0, ·)], AD through all K·T steps                        (23)
============  =====================================================================  ======

θ is a tensor or a tuple of tensors; each estimator returns a gradient of the same
structure. The caller's θ needs no ``requires_grad``: the estimators differentiate detached
copies, so no graph ever reaches the caller's tensors. All products are vector-Jacobian
products, on the device and in the dtype of the inputs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from ..errors import ConvergenceError, InvalidInputError, NotContractiveError
from ..fused_blocks import find_fused
from ..iteration import IterationStats, check_growth, restart, unroll, unroll_blocks
from ..jacobians import jacobian_x
from ..linsolve import gmres
from ..memo import block_scope
from ..memory import GraphGuard, check_dense
from ..theta import (
    Loss,
    Step,
    Theta,
    all_finite,
    as_tuple,
    check_count,
    check_point,
    fresh_leaves,
    like,
)

__all__ = [
    "DENSE_LIMIT",
    "Linearisation",
    "Readout",
    "adjoint_solve",
    "default_solve_tol",
    "deq_exact",
    "deq_neumann",
    "deq_solve",
    "jfb",
    "linearise",
    "loss_gradient",
    "neumann_sum",
    "retune",
    "retune_last_block",
    "unrolled",
]

DENSE_LIMIT = 4096


def default_solve_tol(dtype: torch.dtype) -> float:
    """Default relative residual of :func:`deq_solve`: 1e-10, or 100 ulps where the dtype
    cannot reach it (float32: 1.2e-5). A float32 solve asked for 1e-10 can only fail."""
    return max(1e-10, 100 * torch.finfo(dtype).eps)


def _check_finite_grad(grad: tuple[torch.Tensor, ...], method: str) -> None:
    for i, g in enumerate(grad):
        if not torch.isfinite(g).all():
            raise NotContractiveError(
                f"{method}: the gradient for theta[{i}] is NaN or inf: the iteration or the "
                "loss overflowed (Φ_K not contractive at this θ, or a NaN inside the step); "
                "reduce the step size, K·T, or check the step and the loss"
            )


def loss_gradient(loss: Loss, x: torch.Tensor) -> torch.Tensor:
    """∂_xL(x), checking that ``loss`` returns a finite scalar that depends on x."""
    z = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = _checked_loss(loss(z))
        (grad,) = torch.autograd.grad(value, z)
    return grad


def _checked_loss(value: object) -> torch.Tensor:
    """The loss value as a 0-d tensor, after checking it is a finite scalar with a graph."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise InvalidInputError(
            "loss(x) must return a scalar tensor: reduce it with .sum() or .mean()."
        )
    if not torch.isfinite(value).all():
        raise InvalidInputError("loss(x) is NaN or inf at the given point: check the data.")
    if not value.requires_grad:
        raise InvalidInputError(
            "loss(x) does not depend on x (no gradient path): do not detach x inside loss."
        )
    return value.reshape(())


def _grads_or_raise(
    grads: tuple[torch.Tensor | None, ...], leaves: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    for i, g in enumerate(grads):
        if g is None:
            raise InvalidInputError(
                f"theta[{i}] has no gradient path through step(x, theta): the output does not "
                "depend on it. Use theta inside step without .item(), .detach() or in-place "
                "copies, or leave that tensor out of theta."
            )
    return tuple(g for g in grads)  # type: ignore[misc]


Readout = Callable[[torch.Tensor, Theta], torch.Tensor]


def objective_gradients(
    loss: Loss, readout: Readout | None, theta: Theta, point: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...] | None]:
    r"""∂_u[L(R(u, θ))] and the read-out's direct term ∂_θ[L(R(u, θ))] at u = ``point``, from
    one forward and one backward pass of L ∘ R (without a read-out: ∂_xL and None).

    Every estimator with a read-out needs both at the same point: the first is the w of its
    vector-Jacobian product, the second is added by :func:`_add_direct`. Taken together they
    cost one pass of L ∘ R and its backward instead of two (for the wavelet read-out Dᵀθ⁻¹u:
    one synthesis and one analysis fewer per gradient). Checks the loss as
    :func:`loss_gradient` does.
    """
    if readout is None:
        return loss_gradient(loss, point), None
    z = point.detach().requires_grad_(True)
    leaves = fresh_leaves(theta)
    with torch.enable_grad():
        value = _checked_loss(loss(readout(z, like(theta, leaves))))
        w, *direct = torch.autograd.grad(value, (z, *leaves), allow_unused=True)
    if w is None:
        raise InvalidInputError(
            "loss(x) does not depend on x (no gradient path): do not detach x inside loss."
        )
    return w, tuple(direct)


def _add_direct(grad: Theta, theta: Theta, direct: tuple[torch.Tensor | None, ...] | None) -> Theta:
    """Add the read-out's direct term (:func:`objective_gradients`; None: no read-out).

    An entry of ``grad`` that is None (θ entry the step does not use: a read-out-only
    parameter) gets the direct term alone; one that neither the step nor the read-out uses is
    refused (:class:`InvalidInputError`), as without a read-out.
    """
    if direct is None:
        return grad
    total = []
    grads = (grad,) if grad is None or isinstance(grad, torch.Tensor) else tuple(grad)
    for i, (g, d) in enumerate(zip(grads, direct, strict=True)):
        if g is None and d is None:
            raise InvalidInputError(
                f"theta[{i}] has no gradient path through step(x, theta) nor through "
                "readout(u, theta): neither depends on it. Use theta there without .item() or "
                ".detach(), or leave that tensor out of theta."
            )
        total.append(d if g is None else g if d is None else g + d)
    return like(theta, tuple(total))


class Linearisation:
    """One graph of Φ_K at a point x, reused for every product ∂_xΦ_K(x)ᵀw and ∂_θΦ_K(x)ᵀw.

    Build it with :func:`linearise` and pass it as ``lin=`` to :func:`jfb`,
    :func:`deq_neumann`, :func:`deq_exact` and :func:`deq_solve` to share one forward pass of
    Φ_K between estimators at the same x̂ (``retune_suite.bounds.verify`` and the error study do).
    """

    def __init__(self, step: Step, theta: Theta, x: torch.Tensor, K: int):
        self.step, self.theta, self.K = step, theta, K
        self.leaves = fresh_leaves(theta)
        self.z = x.detach().requires_grad_(True)
        with torch.enable_grad():
            self.out = unroll(step, K)(self.z, like(theta, self.leaves))

    @property
    def x(self) -> torch.Tensor:
        """The linearisation point."""
        return self.z.detach()

    def residual(self) -> float:
        """‖Φ_K(x) − x‖ / ‖x‖ at the linearisation point."""
        num = torch.linalg.vector_norm(self.out.detach() - self.z.detach()).item()
        return num / max(torch.linalg.vector_norm(self.z.detach()).item(), 1e-300)

    def adjoint_x(self, w: torch.Tensor) -> torch.Tensor:
        """∂_xΦ_K(x)ᵀ w."""
        (g,) = torch.autograd.grad(self.out, self.z, w, retain_graph=True, allow_unused=True)
        return torch.zeros_like(w) if g is None else g

    def adjoint_theta(self, w: torch.Tensor, *, allow_unused: bool = False) -> Theta:
        """∂_θΦ_K(x)ᵀ w, with the structure of θ.

        A θ entry that Φ_K does not use raises :class:`InvalidInputError`, or, with
        ``allow_unused``, is None (the estimators pass it when a read-out may use that entry).
        """
        grads = torch.autograd.grad(self.out, self.leaves, w, retain_graph=True, allow_unused=True)
        if allow_unused:
            return like(self.theta, grads)  # type: ignore[arg-type]
        return like(self.theta, _grads_or_raise(grads, self.leaves))


def linearise(step: Step, theta: Theta, x_star: torch.Tensor, K: int) -> Linearisation:
    """Φ_K linearised at x̂ (checked: finite, and a fixed point to √eps, else a warning).

    Raises :class:`NotContractiveError` when Φ_K(x̂) is NaN or inf (a finite gradient computed
    there would mean nothing).
    """
    check_count(K, "K")
    check_point(x_star, "x_star", theta)
    lin = Linearisation(step, theta, x_star, K)
    if not torch.isfinite(lin.out).all():
        raise NotContractiveError(
            "Φ_K(x_star) is NaN or inf: the step produces NaN at x_star, so no gradient there "
            "means anything; check the step (and θ), and compute x_star with "
            "retune_suite.operators.fixed_point"
        )
    rel = lin.residual()
    if rel > math.sqrt(torch.finfo(x_star.dtype).eps):
        warnings.warn(
            f"x_star is not a fixed point of Φ_K (relative residual {rel:.2e}); the DEQ and JFB "
            "formulas assume it is: compute it with retune_suite.operators.fixed_point first.",
            stacklevel=3,
        )
    return lin


def _finished(grad: Theta, method: str) -> Theta:
    """The estimate, after checking that it is finite (never a NaN gradient returned)."""
    _check_finite_grad(as_tuple(grad), method)
    return grad


def _at_fixed_point(
    step: Step, theta: Theta, x_star: torch.Tensor, K: int, lin: Linearisation | None
) -> Linearisation:
    """``lin`` if it linearises this (step, θ, x̂, K), else a new :func:`linearise`."""
    if lin is None:
        return linearise(step, theta, x_star, K)
    if not isinstance(lin, Linearisation):
        raise InvalidInputError("lin must come from retune_suite.operators.hypergrad.linearise.")
    check_count(K, "K")
    check_point(x_star, "x_star", theta)
    same_theta = len(as_tuple(theta)) == len(lin.leaves) and all(
        a.shape == b.shape and torch.equal(a.detach(), b.detach())
        for a, b in zip(as_tuple(theta), lin.leaves, strict=False)
    )
    if (
        lin.step is not step
        or lin.K != K
        or not same_theta
        or lin.x.shape != x_star.shape
        or not torch.equal(lin.x, x_star.detach())
    ):
        raise InvalidInputError(
            "lin was built for another step, θ, x_star or K: build it with "
            "hypergrad.linearise(step, theta, x_star, K) for the same arguments."
        )
    return lin


def jfb(
    step: Step,
    theta: Theta,
    x_star: torch.Tensor,
    loss: Loss,
    K: int,
    *,
    readout: Readout | None = None,
    lin: Linearisation | None = None,
) -> Theta:
    r"""Jacobian-free gradient at the fixed point, eq. (28).

    .. math:: g^{JF}(θ) = ∂_xL(x̂_θ)ᵀ ∂_θΦ_K(x̂_θ, θ)

    With ``readout`` R (the iterate is u, the estimate R(u, θ), as x = Dᵀθ⁻¹u in section
    4.1) the loss is L(R(u, θ)) and its direct θ-derivative at û is added (every estimator).
    ``lin`` (from :func:`linearise`) reuses a linearisation of Φ_K at x̂.
    """
    lin = _at_fixed_point(step, theta, x_star, K, lin)
    w, direct = objective_gradients(loss, readout, theta, x_star)
    grad = lin.adjoint_theta(w, allow_unused=readout is not None)
    return _finished(_add_direct(grad, theta, direct), "jfb")


def deq_neumann(
    step: Step,
    theta: Theta,
    x_star: torch.Tensor,
    loss: Loss,
    K: int,
    P: int,
    *,
    readout: Readout | None = None,
    lin: Linearisation | None = None,
) -> Theta:
    r"""DEQ gradient with the inverse truncated to a Neumann series, eq. (22).

    .. math:: g_P(θ) = ∂_xL(x̂)ᵀ \Big(\sum_{p=0}^{P} ∂_xΦ_K(x̂)^p\Big) ∂_θΦ_K(x̂)

    P = 0 is :func:`jfb`, computed by the same products.
    """
    check_count(P, "P")
    lin = _at_fixed_point(step, theta, x_star, K, lin)
    w, direct = objective_gradients(loss, readout, theta, x_star)
    total = neumann_sum(lin, w, P)
    grad = lin.adjoint_theta(total, allow_unused=readout is not None)
    return _finished(_add_direct(grad, theta, direct), "deq_neumann")


def neumann_sum(lin: Linearisation, v: torch.Tensor, P: int) -> torch.Tensor:
    r"""Σ_{p=0}^{P} (∂_xΦ_K(x)ᵀ)^p v: the truncated adjoint of eq. (22) (P products)."""
    total = v
    for _ in range(P):
        v = lin.adjoint_x(v)
        total = total + v
    return total


def deq_exact(
    step: Step,
    theta: Theta,
    x_star: torch.Tensor,
    loss: Loss,
    K: int,
    *,
    max_n: int = DENSE_LIMIT,
    readout: Readout | None = None,
    lin: Linearisation | None = None,
) -> Theta:
    r"""DEQ gradient, eq. (20), with the dense Jacobian ∂_xΦ_K(x̂) and a direct solve.

    .. math:: [I − ∂_xΦ_K(x̂)]ᵀ w = ∂_xL(x̂), \qquad g(θ) = ∂_θΦ_K(x̂)ᵀ w

    For small n only (n ≤ ``max_n``); use :func:`deq_solve` beyond. The n×n matrices it
    holds at once (the Jacobian, I, I − ∂ₓΦ_K and the solver's copy) are checked against the
    memory limit first (:mod:`~retune_suite.operators.memory`, a raised ``max_n`` included).
    """
    n = x_star.numel()
    if n > max_n:
        raise InvalidInputError(
            f"deq_exact forms an n×n Jacobian and n = {n} > max_n = {max_n}: use "
            "hypergrad.deq_solve (matrix-free) or raise max_n."
        )
    check_dense("deq_exact's dense I − ∂ₓΦ_K(x̂) and its solve", n, n, x_star.dtype,
                x_star.device, copies=4,
                alternative="use hypergrad.deq_solve (matrix-free adjoint solve)")  # fmt: skip
    lin = _at_fixed_point(step, theta, x_star, K, lin)
    A = jacobian_x(unroll(step, K), x_star, theta)
    if not torch.isfinite(A).all():
        raise NotContractiveError("∂_xΦ_K(x̂) holds NaN or inf: check the step at x_star.")
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    v, direct = objective_gradients(loss, readout, theta, x_star)
    v = v.reshape(-1)
    # solve_ex reports a singular matrix in `info` instead of raising torch's _LinAlgError
    w, info = torch.linalg.solve_ex((eye - A).T, v.unsqueeze(1))
    if info.item() != 0 or not torch.isfinite(w).all():
        raise ConvergenceError(
            "I − ∂_xΦ_K(x̂) is singular (an eigenvalue of ∂_xΦ_K(x̂) equals 1): Φ_K is not a "
            "contraction at x̂, so the DEQ gradient (20) is not defined; reduce the step size "
            "or check that Assumption 1 holds"
        )
    grad = lin.adjoint_theta(w.reshape(x_star.shape), allow_unused=readout is not None)
    return _finished(_add_direct(grad, theta, direct), "deq_exact")


def deq_solve(
    step: Step,
    theta: Theta,
    x_star: torch.Tensor,
    loss: Loss,
    K: int,
    *,
    tol: float | None = None,
    method: str = "gmres",
    maxiter: int = 1000,
    restart_every: int = 50,
    return_stats: bool = False,
    readout: Readout | None = None,
    lin: Linearisation | None = None,
) -> Theta | tuple[Theta, IterationStats]:
    r"""DEQ gradient, eq. (20), by a matrix-free solve of the adjoint equation.

    .. math:: (I − ∂_xΦ_K(x̂)ᵀ) w = ∂_xL(x̂) \text{ to } ‖r‖ ≤ \mathrm{tol}·‖∂_xL(x̂)‖

    ``method="gmres"`` (restarted GMRES, robust when δ_K is near 1) or ``"fixed_point"``
    (w ← ∂_xL + ∂_xΦ_Kᵀw, rate δ_K). Only vector-Jacobian products are used. ``tol`` defaults
    to :func:`default_solve_tol` of x̂'s dtype (1e-10 in float64, 1.2e-5 in float32); the
    residual checked is the true ‖(I − ∂_xΦ_Kᵀ)w − ∂_xL‖. Raises :class:`ConvergenceError`
    (with the true residual history) rather than return an inexact or zero gradient.

    With ``return_stats`` also returns the backward solve's :class:`IterationStats`:
    ``residuals`` are the true relative residuals, ``blocks`` the number of VJPs through
    Φ_K, ``evaluations`` the backward passes through φ (K per VJP).
    """
    tol = check_solve(method, x_star, tol)
    lin = _at_fixed_point(step, theta, x_star, K, lin)
    v, direct = objective_gradients(loss, readout, theta, x_star)
    w, history, vjps = adjoint_solve(lin, v, tol=tol, method=method, maxiter=maxiter,
                                     restart_every=restart_every)  # fmt: skip
    grad = lin.adjoint_theta(w, allow_unused=readout is not None)
    grad = _finished(_add_direct(grad, theta, direct), "deq_solve")
    if return_stats:
        stats = IterationStats(
            residuals=torch.tensor(history, dtype=torch.float64),
            blocks=vjps,
            evaluations=K * vjps,
            converged=True,
            reason="tolerance",
        )
        return grad, stats
    return grad


def check_solve(method: str, x_star: torch.Tensor, tol: float | None) -> float:
    """The adjoint solve's method, checked, and its tolerance (default: by dtype)."""
    if method not in ("gmres", "fixed_point"):
        raise InvalidInputError(f"method must be 'gmres' or 'fixed_point', got {method!r}.")
    tol = default_solve_tol(x_star.dtype) if tol is None else tol
    if not tol > 0:
        raise InvalidInputError(f"tol must be positive, got {tol!r}.")
    return tol


def adjoint_solve(
    lin: Linearisation,
    v: torch.Tensor,
    *,
    tol: float,
    method: str = "gmres",
    maxiter: int = 1000,
    restart_every: int = 50,
) -> tuple[torch.Tensor, list[float], int]:
    r"""w with (I − ∂_xΦ_K(x)ᵀ) w = v to a true relative residual ``tol``: the adjoint of
    eq. (20), as :func:`deq_solve` solves it. Returns (w, true residual history, VJPs).

    Raises :class:`ConvergenceError` when ``maxiter`` products do not reach ``tol``.
    """
    shape = v.shape

    def matvec(w: torch.Tensor) -> torch.Tensor:
        return w - lin.adjoint_x(w.reshape(shape)).reshape(-1)

    if method == "gmres":
        w, info = gmres(matvec, v.reshape(-1), tol=tol, restart=restart_every, maxiter=maxiter)
        return w.reshape(shape), info.residuals, info.products
    w, history = _fixed_point_adjoint(lin, v, tol, maxiter)
    return w, history, len(history)


def _fixed_point_adjoint(
    lin: Linearisation, v: torch.Tensor, tol: float, maxiter: int
) -> tuple[torch.Tensor, list[float]]:
    vnorm = torch.linalg.vector_norm(v).item()
    if vnorm == 0.0:
        return torch.zeros_like(v), [0.0]
    # w_{k+1} = v + ∂_xΦ_Kᵀ w_k, and w_{k+1} − w_k = v − (I − ∂_xΦ_Kᵀ) w_k: the step is the
    # true residual of w_k, so the returned iterate w_k has a true residual ≤ tol.
    w, history = v, []
    for _ in range(maxiter):
        nxt = v + lin.adjoint_x(w)
        history.append(torch.linalg.vector_norm(nxt - w).item() / vnorm)
        if history[-1] <= tol:
            return w, history
        if not math.isfinite(history[-1]):
            break
        w = nxt
    raise ConvergenceError(
        f"fixed-point adjoint iteration did not reach {tol:.1e} in {maxiter} iterations (true "
        f"residual {history[-1]:.3e}); use method='gmres' or raise maxiter",
        history,
    )


def retune(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    loss: Loss,
    K: int,
    T: int,
    *,
    readout: Readout | None = None,
) -> Theta:
    r"""ReTune gradient (Algorithm 1), eq. (25).

    T − 1 restarts of Φ_K without a graph, then AD through the last Φ_K only:

    .. math:: g^R(θ) = ∂_xL(x_{KT})ᵀ ∂_θΦ_K(x_{K(T−1)}, θ), \qquad x_{Kt} = Φ_K^t(x_0, θ)

    Memory is that of one block of K steps, whatever T.
    """
    check_count(K, "K")
    check_count(T, "T")
    check_point(x0, "x0", theta)
    x_prev = x0 if T == 1 else restart(step, theta, x0, K, T - 1).x
    return retune_last_block(step, theta, x_prev, loss, K, readout=readout)[0]


def retune_last_block(
    step: Step,
    theta: Theta,
    x_prev: torch.Tensor,
    loss: Loss,
    K: int,
    *,
    readout: Readout | None = None,
) -> tuple[Theta, torch.Tensor]:
    r"""The graph-carrying last block of ReTune (25) from x_{K(T−1)}: (g^R, x_{KT}).

    .. math:: g^R = ∂_xL(x_{KT})ᵀ ∂_θΦ_K(x_{K(T−1)}, θ), \qquad x_{KT} = Φ_K(x_{K(T−1)}, θ)

    :func:`retune` and :func:`~retune_suite.operators.hypergrad.estimate` (adaptive T) share it.
    A step that offers fused blocks (:mod:`~retune_suite.operators.fused_blocks`) runs the
    block as its ``last_block`` (one pass forward, its own VJP backward); otherwise autograd
    records the K steps (:class:`Linearisation`).
    """
    lin = _FusedLastBlock.of(step, theta, x_prev, K) or Linearisation(step, theta, x_prev, K)
    x_KT = lin.out.detach()
    if not all_finite(x_KT):
        raise NotContractiveError(
            "retune: the last block produced NaN/inf: the step is not contractive at this θ; "
            "reduce the step size or check the step"
        )
    w, direct = objective_gradients(loss, readout, theta, x_KT)
    grad = lin.adjoint_theta(w, allow_unused=readout is not None)
    return _finished(_add_direct(grad, theta, direct), "retune"), x_KT


class _FusedLastBlock:
    """Φ_K(x, θ) by the step's fused ``last_block``: the ``out``/``adjoint_theta`` of a
    :class:`Linearisation` (θ-products only, once)."""

    def __init__(self, theta: Theta, leaves: tuple[torch.Tensor, ...], out: torch.Tensor):
        self.theta, self.leaves, self.out = theta, leaves, out

    @classmethod
    def of(cls, step: Step, theta: Theta, x: torch.Tensor, K: int) -> _FusedLastBlock | None:
        fused = find_fused(step)
        if fused is None:
            return None
        leaves = fresh_leaves(theta)
        with torch.enable_grad(), block_scope():
            out = fused.last_block(x.detach(), like(theta, leaves), K)
        return None if out is None else cls(theta, leaves, out)

    def adjoint_theta(self, w: torch.Tensor, *, allow_unused: bool = False) -> Theta:
        grads = torch.autograd.grad(self.out, self.leaves, w, allow_unused=True)
        if allow_unused:
            return like(self.theta, grads)  # type: ignore[arg-type]
        return like(self.theta, _grads_or_raise(grads, self.leaves))


def unrolled(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    loss: Loss,
    K: int,
    T: int,
    *,
    readout: Readout | None = None,
) -> Theta:
    r"""Gradient by AD through all K·T steps of Φ_K^T(x_0, θ), eq. (23) with K·T steps.

    .. math:: g^{KT}(θ) = ∂_θ\,[L ∘ Φ_K^T(x_0, ·)](θ)

    Memory grows linearly with K·T (every step is stored for the backward pass): before
    the loop, and again after three blocks with the graph of one block measured, the graph
    is sized against the memory limit and refused with
    :class:`~retune_suite.operators.errors.MemoryGuardError` when it cannot fit
    (:class:`~retune_suite.operators.memory.GraphGuard`; :func:`retune` needs the memory of
    one block whatever T). A loop estimated at more than 10 s logs its progress at level INFO.
    """
    check_count(K, "K")
    check_count(T, "T")
    check_point(x0, "x0", theta)
    leaves = fresh_leaves(theta)
    with torch.enable_grad():
        x = x0.detach()
        th = like(theta, leaves)
        Phi = GraphGuard(
            unroll(step, K),
            x,
            K,
            T,
            what="hypergrad.unrolled's graph",
            alternative="use hypergrad.retune (the memory of one block, whatever T), or "
            "smaller K·T",
        )
        x, residuals = unroll_blocks(Phi, x, th, T)
        if not torch.isfinite(x).all():
            raise NotContractiveError(
                f"unrolled: x_KT after {K * T} steps is NaN or inf: the iteration diverges (Φ_K "
                "not contractive at this θ) or the step produces NaN; reduce the step size or "
                "K·T, or check the step"
            )
        check_growth(*residuals, "unrolled: the iteration Φ_K^T")
        value = loss(x if readout is None else readout(x, th))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InvalidInputError("loss(x) must return a scalar tensor: use .sum() or .mean().")
        if not torch.isfinite(value).all():
            raise InvalidInputError("loss(x) is NaN or inf at x_KT: check the loss and the data.")
        if not value.requires_grad:
            raise InvalidInputError(
                "loss(Φ_K^T(x0, θ)) does not depend on theta: the step ignores every theta "
                "tensor (or detaches it), or the loss detaches x; use theta inside step "
                "without .item() or .detach()."
            )
        grads = torch.autograd.grad(value.reshape(()), leaves, allow_unused=True)
    return _finished(like(theta, _grads_or_raise(grads, leaves)), "unrolled")
