r"""A layer for training loops: the equilibrium of Φ_K, connected to θ's autograd graph.

:func:`equilibrium` returns an iterate x whose backward pass is one of the estimators of
:mod:`retune_suite.operators.hypergrad`, so that ``loss(x).backward()`` puts that estimator's
gradient in ``θ.grad`` (θ: tensors or ``nn.Parameter``\ s with ``requires_grad``, or a tuple of
them), and ``torch.optim`` can take the step. :class:`DEQ` is the same layer as an
``nn.Module`` that wraps a step module (``z = deq(z0, x)``, the way torchdeq's ``get_deq`` is
used). The forward solve never stores a graph except where the estimator differentiates
through it:

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

For ``jfb``, ``neumann`` and ``deq``, x is x̂ + (S(y) − y.detach()) with y = Φ_K(x̂, θ) built
with its graph (the value is x̂ exactly) and S an :class:`torch.autograd.Function` that is the
identity forward and, backward, maps the incoming gradient w to the adjoint vector: w itself
(``jfb``), Σ_{p≤P} (∂ₓΦ_Kᵀ)^p w (``neumann``, :func:`~.hypergrad.neumann_sum`), or the
solution of (I − ∂ₓΦ_Kᵀ) u = w (``deq``, :func:`~.hypergrad.adjoint_solve`), all at x̂. Autograd
then carries u through y's graph: θ receives ∂_θΦ_K(x̂)ᵀu, the estimator's product chain
(``tests/test_equilibrium.py`` holds the two equal), and so does every tensor the step closes
over that requires grad (the weights of an ``nn.Module``, an injected input): the same in every
backward mode, since ``retune`` and ``unrolled`` also differentiate the step itself. A read-out
applied to x afterwards (x = Dᵀθ⁻¹u in section 4.1) adds its direct term through autograd, also
for θ entries that only the read-out uses.

Transforms: S defines ``jvp`` (forward mode: (I − ∂ₓΦ_K)⁻¹ or Σ ∂ₓΦ_K^p applied to the
tangent of y) and ``setup_context``, and its linear solves carry a ``vmap`` rule that solves one
column at a time, so ``torch.autograd.forward_ad``, ``torch.func.grad``, ``jvp``, ``vjp``,
``jacrev`` and ``jacfwd`` with respect to θ work through ``equilibrium`` (for steps that
torch.func can transform). Refused with :class:`~.errors.InvalidInputError`: second-order
derivatives through the implicit backward (double backward, ``torch.func.hessian``: the
solve's own dependence on θ is not differentiated; use ``backward="unrolled"`` or
``"retune"``), and ``torch.func.vmap`` over θ or x0 (the solve stops on data-dependent
tests; stack the samples along ``batch_dim`` instead).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD

from .errors import ConvergenceError, InvalidInputError, NotContractiveError
from .fused_blocks import find_fused
from .hypergrad.estimators import Linearisation, adjoint_solve, check_solve, neumann_sum
from .iteration import (
    SOLVERS,
    FixedPoint,
    IterationStats,
    check_growth,
    fixed_point,
    restart,
    unroll,
    unroll_blocks,
)
from .linsolve import gmres
from .memo import block_scope
from .memory import GraphGuard
from .theta import Step, Theta, as_tuple, check_count, check_point, detached

__all__ = ["BACKWARDS", "DEQ", "FORWARD_SOLVERS", "equilibrium"]

BACKWARDS = ("retune", "unrolled", "jfb", "neumann", "deq")
FORWARD_SOLVERS = tuple(SOLVERS)
"""The forward solvers of the fixed-point modes (``forward_solver=``): Picard, Anderson,
Broyden (:func:`~.iteration.fixed_point`). ``retune`` and ``unrolled`` are Picard restarts by
definition (eq. 24)."""


@dataclass(frozen=True)
class _Spec:
    """What the implicit backward needs besides x̂ and θ."""

    step: Step
    K: int
    backward: str
    P: int | None
    tol: float
    solver: str
    maxiter: int


class _Jacobian:
    """Products with ∂ₓΦ_K(x̂, θ) at x̂ for θ held fixed: ``adjoint_x`` (Jᵀw) and ``apply`` (Jv).

    Through autograd (a :class:`~.hypergrad.Linearisation`, as the estimators compute them:
    steps that differentiate inside work) or, under a torch.func transform, which forbids
    ``requires_grad_``, through :func:`torch.func.vjp`. Jv is the transpose of the VJP
    (double backward), so nested forward-mode AD is never needed.
    """

    def __init__(self, spec: _Spec, x_star: torch.Tensor, theta: Theta):
        self._x = x_star
        self._lin: Linearisation | None = None
        self._transposed: Any = None
        if torch._C._are_functorch_transforms_active():
            Phi = unroll(spec.step, spec.K)
            _, self._pull = torch.func.vjp(lambda z: Phi(z, theta), x_star)
        else:
            self._lin = Linearisation(spec.step, theta, x_star, spec.K)

    def adjoint_x(self, w: torch.Tensor) -> torch.Tensor:
        if self._lin is not None:
            return self._lin.adjoint_x(w)
        return self._pull(w)[0]

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        if self._transposed is None:
            dummy = torch.zeros_like(self._x)
            if self._lin is not None:
                with torch.enable_grad():
                    dummy.requires_grad_(True)
                    (g,) = torch.autograd.grad(
                        self._lin.out, self._lin.z, dummy, create_graph=True, allow_unused=True
                    )
                self._transposed = ("autograd", dummy, g)
            else:
                self._transposed = ("func", torch.func.vjp(self.adjoint_x, dummy)[1])
        if self._transposed[0] == "func":
            return self._transposed[1](v)[0]
        _, dummy, g = self._transposed
        if g is None or not g.requires_grad:  # ∂ₓΦ_K = 0 at x̂
            return torch.zeros_like(v)
        (jv,) = torch.autograd.grad(g, dummy, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if jv is None else jv


def _linear_map(
    spec: _Spec,
    transpose: bool,
    v: torch.Tensor,
    x_star: torch.Tensor,
    theta: Theta,
) -> torch.Tensor:
    """u = S v at x̂: Σ_{p≤P} Jᵖ v (neumann) or (I − J)⁻¹ v (deq), J = ∂ₓΦ_K(x̂) (its transpose
    for the backward pass, by the estimators' own :func:`~.hypergrad.neumann_sum` and
    :func:`~.hypergrad.adjoint_solve`)."""
    jac = _Jacobian(spec, x_star, theta)
    if transpose:
        if spec.backward == "neumann":
            assert spec.P is not None
            return neumann_sum(jac, v, spec.P)  # type: ignore[arg-type]
        solve = adjoint_solve(jac, v, tol=spec.tol, method=spec.solver, maxiter=spec.maxiter)  # type: ignore[arg-type]
        return solve[0]
    if spec.backward == "neumann":
        assert spec.P is not None
        total = u = v
        for _ in range(spec.P):
            u = jac.apply(u)
            total = total + u
        return total
    shape = v.shape
    if spec.solver == "gmres":
        u, _ = gmres(
            lambda w: w - jac.apply(w.reshape(shape)).reshape(-1),
            v.reshape(-1),
            tol=spec.tol,
            maxiter=spec.maxiter,
        )
        return u.reshape(shape)
    return _fixed_point_tangent(jac, v, spec.tol, spec.maxiter)


def _fixed_point_tangent(jac: _Jacobian, v: torch.Tensor, tol: float, maxiter: int):
    """u = v + J u by iteration (the forward-mode twin of ``solver="fixed_point"``)."""
    vnorm = torch.linalg.vector_norm(v).item()
    if vnorm == 0.0:
        return torch.zeros_like(v)
    u, history = v, []
    for _ in range(maxiter):
        nxt = v + jac.apply(u)
        history.append(torch.linalg.vector_norm(nxt - u).item() / vnorm)
        if history[-1] <= tol:
            return u
        if not math.isfinite(history[-1]):
            break
        u = nxt
    raise ConvergenceError(
        f"the forward-mode solve (I − ∂ₓΦ_K) u = v did not reach {tol:.1e} in {maxiter} "
        "iterations; use solver='gmres' or raise maxiter",
        history,
    )


_SECOND_ORDER = (
    "second-order derivatives through equilibrium's implicit backward (double backward with "
    "create_graph=True, torch.func.hessian, forward-over-reverse) are not supported: the "
    "linear solve's own dependence on θ and x̂ is not differentiated. Use backward='unrolled' "
    "or 'retune', whose graphs are differentiable to any order."
)


class _LinearSolve(torch.autograd.Function):
    """u = S v (see :func:`_linear_map`) as a function of v; first order only. Under
    ``torch.func.vmap`` (jacrev, jacfwd) it solves one column at a time."""

    @staticmethod
    def forward(v, spec, transpose, single, x_star, *leaves):  # type: ignore[override]
        return _linear_map(spec, transpose, v, x_star, leaves[0] if single else leaves)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise InvalidInputError(_SECOND_ORDER)

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        raise InvalidInputError(_SECOND_ORDER)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, v, spec, transpose, single, x_star, *leaves):  # type: ignore[override]
        if any(d is not None for d in in_dims[4:]):
            raise InvalidInputError(_NO_VMAP)
        if in_dims[0] is None:
            return _LinearSolve.apply(v, spec, transpose, single, x_star, *leaves), None
        columns = [
            _LinearSolve.apply(column, spec, transpose, single, x_star, *leaves)
            for column in v.unbind(in_dims[0])
        ]
        return torch.stack(columns), 0


_NO_VMAP = (
    "equilibrium cannot run under torch.func.vmap over θ or x0: the fixed-point solve and the "
    "linear solves stop on data-dependent tests. Stack the samples along one axis of x0 and "
    "pass batch_dim= (per-sample stopping), or loop over them; torch.func.jacrev and jacfwd "
    "with respect to θ are supported."
)


class _Implicit(torch.autograd.Function):
    """Identity on y = Φ_K(x̂, θ) forward; backward w ↦ S w, forward mode v ↦ S v."""

    generate_vmap_rule = True

    @staticmethod
    def forward(y, spec, single, x_star, *leaves):  # type: ignore[override]
        return y.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        _, spec, single, x_star, *leaves = inputs
        ctx.spec, ctx.single = spec, single
        ctx.save_for_backward(x_star, *leaves)
        ctx.save_for_forward(x_star, *leaves)

    @staticmethod
    def backward(ctx: Any, w: torch.Tensor) -> Any:
        x_star, *leaves = ctx.saved_tensors
        u = _LinearSolve.apply(w, ctx.spec, True, ctx.single, x_star, *leaves)
        return (u, None, None, None, *(None for _ in leaves))

    @staticmethod
    def jvp(ctx: Any, dy: torch.Tensor, *_: Any) -> torch.Tensor:
        x_star, *leaves = ctx.saved_tensors
        return _LinearSolve.apply(dy, ctx.spec, False, ctx.single, x_star, *leaves)


def _records_derivatives(leaves: tuple[torch.Tensor, ...]) -> bool:
    """Whether x must carry a graph (reverse mode) or tangents (forward mode, torch.func)."""
    if torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
        return True
    if fwAD._current_level >= 0:  # inside forward_ad.dual_level()
        return any(fwAD.unpack_dual(t).tangent is not None for t in leaves)
    return False


def _warn_no_gradient(leaves: tuple[torch.Tensor, ...]) -> None:
    """θ entries that cannot receive a gradient, named (issue 26: θ.grad stayed None quietly)."""
    if not torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
        return
    dual = fwAD._current_level >= 0
    missing = [
        f"theta[{i}] (shape {tuple(t.shape)})"
        for i, t in enumerate(leaves)
        if not t.requires_grad and not (dual and fwAD.unpack_dual(t).tangent is not None)
    ]
    if missing:
        warnings.warn(
            f"equilibrium: {', '.join(missing)} does not require grad, so loss.backward() "
            "leaves its .grad None while other parameters receive gradients. Call "
            ".requires_grad_() on it (or pass an nn.Parameter) to train it, leave it out of "
            "theta if it is a constant, or evaluate under torch.no_grad().",
            UserWarning,
            stacklevel=3,
        )


def _check_options(
    backward: str,
    K: int,
    T: int | None,
    P: int | None,
    forward_solver: str,
    on_nonconvergence: str,
) -> None:
    if backward not in BACKWARDS:
        raise InvalidInputError(
            f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}."
        )
    check_count(K, "K")
    if forward_solver not in FORWARD_SOLVERS:
        raise InvalidInputError(
            f"forward_solver must be one of {', '.join(FORWARD_SOLVERS)}, got {forward_solver!r}."
        )
    if on_nonconvergence not in ("raise", "warn"):
        raise InvalidInputError(
            f"on_nonconvergence must be 'raise' or 'warn', got {on_nonconvergence!r}."
        )
    if backward in ("retune", "unrolled"):
        if T is None:
            raise InvalidInputError(f"backward={backward!r} needs T (the number of restarts).")
        check_count(T, "T")
        if forward_solver != "picard":
            raise InvalidInputError(
                f"backward={backward!r} iterates Picard restarts Φ_K^T by definition (eq. 24); "
                f"forward_solver={forward_solver!r} applies to the fixed-point modes jfb, "
                "neumann and deq: drop it, or choose one of those."
            )
    if backward == "neumann":
        if P is None:
            raise InvalidInputError("backward='neumann' needs P (the number of Neumann terms).")
        check_count(P, "P")


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
    forward_solver: str = "picard",
    fixed_point_rtol: float | None = None,
    fixed_point_atol: float | None = None,
    max_blocks: int = 200_000,
    memory: int | None = None,
    batch_dim: int | None = None,
    on_nonconvergence: str = "raise",
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, IterationStats]:
    r"""The equilibrium of Φ_K(·, θ) with the backward pass of one estimator.

    .. math::

        \text{retune / unrolled: } x = Φ_K^T(x_0, θ) = x_{KT} \ (24), \qquad
        \text{jfb / neumann / deq: } x = x̂_θ = Φ_K(x̂_θ, θ)

    ``loss(x).backward()`` then accumulates into θ.grad the gradient of
    ``hypergrad.retune`` (25), ``hypergrad.unrolled`` (23), ``hypergrad.jfb`` (28),
    ``hypergrad.deq_neumann`` (22, ``P`` terms) or ``hypergrad.deq_solve`` (20; ``tol``,
    ``solver`` (the adjoint solve: ``"gmres"`` or ``"fixed_point"``), ``maxiter`` as there; a
    :class:`~retune_suite.operators.errors.ConvergenceError` is raised by ``backward()`` when
    the adjoint solve fails). Tensors the step closes over that require grad (an
    ``nn.Module``'s weights) receive their gradient too, in every mode. x carries no graph to
    ``x0``.

    ``T`` is needed by ``retune`` and ``unrolled``. The fixed point of the other modes is
    solved from ``x0`` by :func:`~.iteration.fixed_point` with ``forward_solver``
    (``"picard"``, ``"anderson"``, ``"broyden"``; ``memory`` its history), tolerances
    ``fixed_point_rtol`` (default 64 ulps) and ``fixed_point_atol`` (default: 64 ulps of
    10⁻⁶ of the start's scale, so that x̂ = 0 converges), per sample along ``batch_dim``
    (None: x is one sample), at most ``max_blocks`` blocks. When it does not converge,
    ``on_nonconvergence="raise"`` (default) raises :class:`~.errors.NotContractiveError`;
    ``"warn"`` returns each failed sample's iterate of lowest residual with a
    :class:`~.errors.NonConvergenceWarning` (and a log record) that gives the residuals: the
    best-effort mode of DEQ libraries, whose gradient is then that of a point that is not a
    fixed point. Iterates that grow without bound raise in
    every mode (:func:`~.iteration.check_growth`). ``return_stats=True`` returns
    ``(x, stats)``, the forward iteration's :class:`~.iteration.IterationStats` (per sample
    for the fixed-point modes).

    With gradients on, a θ entry that does not require grad is named in a warning (its .grad
    would stay None while others train).

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
    _check_options(backward, K, T, P, forward_solver, on_nonconvergence)
    with _vmap_refused():
        check_point(x0, "x0", theta)
        _warn_no_gradient(as_tuple(theta))
        return _layer(
            step, theta, x0, K=K, T=T, backward=backward, P=P, tol=tol, solver=solver,
            maxiter=maxiter, forward_solver=forward_solver, rtol=fixed_point_rtol,
            atol=fixed_point_atol, max_blocks=max_blocks, memory=memory, batch_dim=batch_dim,
            on_nonconvergence=on_nonconvergence, return_stats=return_stats,
        )  # fmt: skip


@contextmanager
def _vmap_refused() -> Iterator[None]:
    """torch.func.vmap over θ or x0 fails inside the solves; say so, and what to do."""
    try:
        yield
    except RuntimeError as error:
        if "vmap" in str(error) and not isinstance(error, InvalidInputError):
            raise InvalidInputError(f"{_NO_VMAP} (torch: {str(error)[:200]})") from error
        raise


def _layer(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    *,
    K: int,
    T: int | None,
    backward: str,
    P: int | None,
    tol: float | None,
    solver: str,
    maxiter: int,
    forward_solver: str,
    rtol: float | None,
    atol: float | None,
    max_blocks: int,
    memory: int | None,
    batch_dim: int | None,
    on_nonconvergence: str,
    return_stats: bool,
) -> torch.Tensor | tuple[torch.Tensor, IterationStats]:
    """:func:`equilibrium` after its checks (:class:`DEQ` calls it with its own θ)."""
    leaves = as_tuple(theta)
    constant = detached(theta)  # the no-graph solves never carry tangents or graphs of θ
    Phi = unroll(step, K)
    if backward in ("retune", "unrolled"):
        assert T is not None
        x, stats = _restarted(step, theta, constant, x0, K, T, backward, Phi)
    else:
        x, stats = _implicit(
            step, theta, constant, x0, K, backward, P, tol, solver, maxiter,
            forward_solver, rtol, atol, max_blocks, memory, batch_dim, on_nonconvergence,
            leaves, Phi,
        )  # fmt: skip
    return (x, stats) if return_stats else x


def _restarted(
    step: Step,
    theta: Theta,
    constant: Theta,
    x0: torch.Tensor,
    K: int,
    T: int,
    backward: str,
    Phi,
) -> tuple[torch.Tensor, IterationStats]:
    with torch.enable_grad():
        if backward == "retune":
            if T == 1:
                x_prev, history = x0.detach(), []
            else:
                first = restart(step, constant, x0, K, T - 1)
                x_prev, history = first.x, first.stats.residuals.tolist()
            x = _last_block(step, theta, x_prev, K, Phi)
            with torch.no_grad():
                history.append(torch.linalg.vector_norm(x - x_prev).item())
        else:
            guarded = GraphGuard(
                Phi,
                x0,
                K,
                T,
                what="equilibrium(backward='unrolled')'s graph",
                alternative="use backward='retune' (the memory of one block, whatever T)",
            )
            x, (history, start, last) = unroll_blocks(guarded, x0.detach(), theta, T)
    if not all(math.isfinite(r) for r in history):
        raise NotContractiveError(
            f"equilibrium(backward={backward!r}): the iteration produced NaN/inf: Φ_K is not "
            "contractive at this θ; reduce the step size or check the step",
            history,
        )
    if backward == "unrolled":
        check_growth(history, start, last, "equilibrium(backward='unrolled'): Φ_K^T")
    stats = IterationStats(
        residuals=torch.tensor(history, dtype=torch.float64), blocks=T, evaluations=K * T
    )
    return x, stats


def _last_block(step: Step, theta: Theta, x_prev: torch.Tensor, K: int, Phi) -> torch.Tensor:
    """Φ_K(x_{K(T−1)}, θ) with its graph: the step's fused ``last_block`` when it offers one
    (:mod:`~.fused_blocks`; its backward is the block's own VJP), else the K recorded steps."""
    fused = find_fused(step)
    if fused is not None:
        with block_scope():
            x = fused.last_block(x_prev, theta, K)
        if x is not None:
            return x
    return Phi(x_prev, theta)


def _implicit(
    step: Step,
    theta: Theta,
    constant: Theta,
    x0: torch.Tensor,
    K: int,
    backward: str,
    P: int | None,
    tol: float | None,
    solver: str,
    maxiter: int,
    forward_solver: str,
    rtol: float | None,
    atol: float | None,
    max_blocks: int,
    memory: int | None,
    batch_dim: int | None,
    on_nonconvergence: str,
    leaves: tuple[torch.Tensor, ...],
    Phi,
) -> tuple[torch.Tensor, IterationStats]:
    tol = check_solve(solver, x0, tol)
    solved: FixedPoint = fixed_point(
        step, constant, x0, K, rtol=rtol, atol=atol, max_blocks=max_blocks,
        method=forward_solver, memory=memory, batch_dim=batch_dim,
        on_nonconvergence=on_nonconvergence,
    )  # fmt: skip
    x_star = solved.x
    if not _records_derivatives(leaves):
        return x_star, solved.stats
    with torch.enable_grad():
        y = Phi(x_star, theta)  # the graph to θ (and to what the step closes over)
    if backward == "jfb":
        return x_star + (y - y.detach()), solved.stats
    spec = _Spec(step, K, backward, P, tol, solver, maxiter)
    single = isinstance(theta, torch.Tensor)
    kept = tuple(t.detach() for t in leaves)
    return x_star + (_Implicit.apply(y, spec, single, x_star, *kept) - y.detach()), solved.stats


class DEQ(torch.nn.Module):
    r"""The equilibrium layer as a module: the z with z = f^K(z, inputs), for a step module f.

    ``DEQ(f, backward="deq")(z0, *inputs)`` returns :func:`equilibrium` of the step
    ``φ(z, θ) = f(z, *inputs)``, θ the parameters of ``f`` that require grad (and the inputs
    that do): ``loss(z).backward()`` fills the ``.grad`` of ``f``'s parameters and of whatever
    produced the inputs (an encoder), by the estimator ``backward`` names. ``f`` is a
    registered sub-module, so ``DEQ(...).parameters()`` yields its parameters.

    Parameters are those of :func:`equilibrium`; ``forward_solver`` defaults to Anderson for
    the fixed-point modes (jfb, neumann, deq) and is Picard for retune and unrolled;
    ``batch_dim`` defaults to 0 (the first axis of z0 indexes samples, which stop one by one).
    After each call, ``stats`` holds the forward iteration's
    :class:`~.iteration.IterationStats` (per sample: ``stats.sample_blocks``,
    ``stats.sample_converged``, ``stats.sample_residuals``).

    The step must treat samples independently along ``batch_dim`` (no batch norm; use
    ``GroupNorm`` or ``LayerNorm`` per sample) and be a pure function of (z, inputs) while the
    solve runs (no randomness such as dropout in training mode, no parametrizations that
    update themselves on each call, such as ``spectral_norm``'s power iteration).

    Examples
    --------
    >>> import torch
    >>> cell = torch.nn.Linear(3, 3).double()
    >>> with torch.no_grad():
    ...     _ = cell.weight.mul_(0.3)
    >>> deq = DEQ(torch.nn.Sequential(cell, torch.nn.Tanh()), backward="deq")
    >>> z = deq(torch.zeros(2, 3, dtype=torch.float64))
    >>> z.shape, bool(deq.stats.sample_converged.all())
    (torch.Size([2, 3]), True)
    """

    def __init__(
        self,
        step: torch.nn.Module,
        *,
        K: int = 1,
        T: int | None = None,
        backward: str = "deq",
        forward_solver: str | None = None,
        batch_dim: int | None = 0,
        **options: Any,
    ):
        super().__init__()
        if not isinstance(step, torch.nn.Module):
            raise InvalidInputError(
                f"DEQ wraps an nn.Module (z, *inputs) -> z, got {type(step).__name__}; for a "
                "function step(x, theta) call retune_suite.operators.equilibrium directly."
            )
        fixed_point_mode = backward not in ("retune", "unrolled")
        if forward_solver is None:
            forward_solver = "anderson" if fixed_point_mode else "picard"
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InvalidInputError(
                f"DEQ got unknown option(s) {sorted(unknown)}: choose from {sorted(_OPTIONS)}."
            )
        _check_options(
            backward, K, T, options.get("P"), forward_solver,
            options.get("on_nonconvergence", "raise"),
        )  # fmt: skip
        self.step = step
        self.K, self.T, self.backward = K, T, backward
        self.forward_solver, self.batch_dim, self.options = forward_solver, batch_dim, options
        self.stats: IterationStats | None = None

    def extra_repr(self) -> str:
        T = "" if self.T is None else f", T={self.T}"
        solver = f", forward_solver={self.forward_solver!r}" if self.forward_solver else ""
        return f"K={self.K}{T}, backward={self.backward!r}{solver}, batch_dim={self.batch_dim}"

    def forward(self, z0: torch.Tensor, *inputs: Any) -> torch.Tensor:
        f = self.step

        def phi(z: torch.Tensor, theta: Theta) -> torch.Tensor:
            return f(z, *inputs)

        declared = getattr(f, "uses_autograd", None)
        if declared is not None:
            phi.uses_autograd = declared  # type: ignore[attr-defined]
        theta = tuple(p for p in f.parameters() if p.requires_grad) + tuple(
            t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad
        )
        if not theta:  # nothing to train: an empty θ in z0's dtype keeps the checks uniform
            theta = (z0.new_zeros(0),)
        options = dict(self.options)
        with _vmap_refused():
            check_point(z0, "z0", theta)
            x, self.stats = _layer(  # type: ignore[misc]
                phi,
                theta,
                z0,
                K=self.K,
                T=self.T,
                backward=self.backward,
                P=options.pop("P", None),
                tol=options.pop("tol", None),
                solver=options.pop("solver", "gmres"),
                maxiter=options.pop("maxiter", 1000),
                forward_solver=self.forward_solver,
                rtol=options.pop("fixed_point_rtol", None),
                atol=options.pop("fixed_point_atol", None),
                max_blocks=options.pop("max_blocks", 200_000),
                memory=options.pop("memory", None),
                batch_dim=self.batch_dim,
                on_nonconvergence=options.pop("on_nonconvergence", "raise"),
                return_stats=True,
            )
        return x


_OPTIONS = {
    "P",
    "tol",
    "solver",
    "maxiter",
    "fixed_point_rtol",
    "fixed_point_atol",
    "max_blocks",
    "memory",
    "on_nonconvergence",
}
"""The keyword options of :func:`equilibrium` that :class:`DEQ` passes through."""
