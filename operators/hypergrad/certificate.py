r"""One entry point for the six estimators, with the evidence: iterate, statistics, certificate.

:func:`estimate` runs one estimator of :mod:`retune_suite.operators.hypergrad` (built on the same
code:
:func:`retune_suite.operators.iteration.restart` /
:func:`~retune_suite.operators.iteration.fixed_point`,
:class:`~retune_suite.operators.hypergrad.Linearisation` and the public estimators with ``lin=``)
and
returns an :class:`Estimate` whose ``certificate`` is an upper bound on ‖g(θ) − grad‖₂, g the
DEQ gradient (20) at the true fixed point x̂, computed **without** x̂ (section C of
``docs/findings.md`` states and proves it). With δ a Lipschitz constant of Φ_K and a point
y whose block residual is s = ‖Φ_K(y) − y‖,

.. math:: ‖y − x̂‖ ≤ s/(1 − δ), \qquad ‖Φ_K(y) − x̂‖ ≤ δ s/(1 − δ),

and every term of Lemma 1 (29) and of the corrected Theorem 2 (finding F1) is bounded with
these a-posteriori distances and the constants the caller gives:

===================  =========================================================  ==========
constant             meaning (on the balls of ``docs/findings.md`` C)           needed by
===================  =========================================================  ==========
``delta``            Lipschitz constant δ < 1 of x ↦ Φ_K(x, θ) (e.g. ω(τ)^K)    every one
``hessian_bound``    Lipschitz constant H of ∂_xL (1 for ½‖x − x̄‖²)             every one
``lipschitz_theta``  L_θ of Assumption 2: x ↦ ∂_θΦ_K(x) (spectral norm)         every one
``lipschitz_x``      L_x: x ↦ ∂_xΦ_K(x) (spectral norm); 0 for Φ_K affine in x  unrolled;
                                                                                sharpens
                                                                                deq_*
===================  =========================================================  ==========

‖∂_θΦ_K(x)‖₂ is computed exactly from the dense n×d Jacobian (forward mode) when d ≤
:data:`DENSE_THETA_LIMIT` and n·d ≤ :data:`DENSE_ENTRIES_LIMIT`; the certificate is then
``"certified"`` (every constant is given by the caller or exact; up to the floating-point
rounding of its own evaluation). Beyond those limits ‖∂_θΦ_K‖₂ is a power-iteration (lower)
estimate and the certificate is only ``"estimated"``. When a constant is missing, or with a
``readout``, the certificate is None and ``certificate_source["reason"]`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import vjp

from ..errors import InvalidInputError
from ..iteration import IterationStats, fixed_point, restart, unroll
from ..jacobians import jacobian_theta, jvp, power_iteration, spectral_norm, start_vector
from ..refutation import Evidence
from ..theta import Loss, Step, Theta, as_tuple, check_count, check_point, flat, like, unflat
from . import estimators

__all__ = [
    "DENSE_ENTRIES_LIMIT",
    "DENSE_THETA_LIMIT",
    "METHODS",
    "Estimate",
    "EstimateStats",
    "estimate",
]

METHODS = ("deq_exact", "deq_solve", "deq_neumann", "jfb", "retune", "unrolled")
DENSE_THETA_LIMIT = 256  # d: forward-mode columns of ∂_θΦ_K for its exact spectral norm
DENSE_ENTRIES_LIMIT = 2**26  # n·d entries of the dense ∂_θΦ_K (512 MiB in float64)
# 2**26 holds a 256×256 colour image with d = 208 (the FoE prior): jacobian_theta pushes its
# columns in chunks, so only the matrix itself scales with d.


@dataclass(frozen=True)
class EstimateStats:
    """Statistics of an :func:`estimate`: the forward iteration (restarts for ``retune`` /
    ``unrolled``, the fixed-point solve for the others; None when ``x_star`` was given) and
    the backward adjoint solve (``deq_solve`` only, else None)."""

    forward: IterationStats | None = None
    backward: IterationStats | None = None


@dataclass(frozen=True)
class Estimate:
    """A hypergradient with its evidence (see :func:`estimate`).

    ``grad`` has θ's structure; ``x`` is the iterate it was taken at (x_{KT} for ``retune``
    and ``unrolled``, x̂ or the given ``x_star`` otherwise); ``certificate`` an upper bound
    on ‖g(θ) − grad‖₂ or None; ``certificate_source`` a dict: ``"status"`` (``"certified"``,
    ``"estimated"`` or ``"none"``), ``"constants"`` (each one and where it came from:
    ``"given"``, ``"not given"``, ``"exact (dense ...)"``, ``"estimated (...)"``),
    ``"terms"`` (the certificate's parts, with ``"forward"`` the part driven by the block
    residual) and ``"reason"`` when None.
    """

    grad: Theta
    x: torch.Tensor
    stats: EstimateStats
    certificate: float | None
    certificate_source: dict[str, Any] = field(default_factory=dict)


def _norm(t: torch.Tensor | Theta) -> float:
    if isinstance(t, torch.Tensor):
        return torch.linalg.vector_norm(t).item()
    return torch.linalg.vector_norm(flat(as_tuple(t))).item()


def _dense_ok(theta: Theta, x: torch.Tensor) -> bool:
    d = sum(t.numel() for t in as_tuple(theta))
    return d <= DENSE_THETA_LIMIT and d * x.numel() <= DENSE_ENTRIES_LIMIT


def _dtheta_norm(
    step: Step, theta: Theta, x: torch.Tensor, K: int, generator: torch.Generator | None
) -> tuple[float, bool]:
    """(‖∂_θΦ_K(x)‖₂, exact?): dense n×d Jacobian and SVD within the dense limits (exact),
    else :func:`~retune_suite.operators.jacobians.power_iteration` on ∂_θΦ_Kᵀ∂_θΦ_K (one JVP and one
    VJP
    a step, seeded by ``generator``): a lower estimate, so a certificate using it is only
    "estimated"."""
    beta, exact, _ = _dtheta(step, theta, x, K, generator)
    return beta, exact


def _dtheta(
    step: Step, theta: Theta, x: torch.Tensor, K: int, generator: torch.Generator | None
) -> tuple[float, bool, torch.Tensor | None]:
    """:func:`_dtheta_norm` and the dense ∂_θΦ_K(x) it was computed from (None beyond the
    dense limits)."""
    Phi = unroll(step, K)
    if _dense_ok(theta, x):
        matrix = jacobian_theta(Phi, x, theta)
        return spectral_norm(matrix), True, matrix
    leaves = tuple(t.detach() for t in as_tuple(theta))
    xd = x.detach()

    def f(v: torch.Tensor) -> torch.Tensor:
        return Phi(xd, like(theta, unflat(v, leaves)))

    v0 = flat(leaves)
    _, pullback = vjp(f, v0)

    def gram(v: torch.Tensor) -> torch.Tensor:
        _, Bv = jvp(f, (v0,), (v,))
        return pullback(Bv)[0]

    start = start_vector(v0, generator)
    return power_iteration(gram, start, iterations=100, rtol=1e-12) ** 0.5, False, None


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0.0 <= delta < 1.0):
        raise InvalidInputError(
            f"delta = {delta!r} is not in [0, 1): the certificate needs a Lipschitz constant "
            "δ < 1 of Φ_K (e.g. the analytic ω(τ)^K); pass delta=None for no certificate."
        )


def _check_constant(value: float | None, name: str) -> None:
    if value is not None and not (isinstance(value, int | float) and 0.0 <= value < math.inf):
        raise InvalidInputError(f"{name} = {value!r} must be a finite number >= 0 (or None).")


# ---------------------------------------------------------------------------------------------
# Certificate formulas (docs/findings.md, section C). a = δ/(1 − δ); ρ_B, ρ_L bound the
# distances to x̂ of the points where ∂_θΦ_K and ∂_xL were evaluated; G = ‖∂_xL‖, β = ‖∂_θΦ_K‖ there.
# ---------------------------------------------------------------------------------------------


def jacobian_free_certificate(
    delta: float, G: float, beta: float, rho_B: float, rho_L: float, L_theta: float, H: float
) -> tuple[float, float]:
    r"""Bound on ‖g − ∂_θΦ_K(x_B)ᵀ∂_xL(x_L)‖₂ (Lemma 1 (29) + corrected Theorem 2 split (37)).

    .. math::

        C = \frac{δ}{1−δ}(G + Hρ_L)(β + L_θρ_B) + L_θρ_B(G + Hρ_L) + βHρ_L

    with ‖x_B − x̂‖ ≤ ρ_B, ‖x_L − x̂‖ ≤ ρ_L. Returns (C, C − δ/(1−δ)Gβ): the total and its
    part driven by the distances (0 at ρ = 0, where C is Lemma 1's bound at the point).
    """
    a = delta / (1.0 - delta)
    G_hat, B_hat = G + H * rho_L, beta + L_theta * rho_B
    total = a * G_hat * B_hat + L_theta * rho_B * G_hat + beta * H * rho_L
    return total, total - a * G * beta


def implicit_certificate(
    delta: float,
    G: float,
    beta: float,
    rho: float,
    L_theta: float,
    H: float,
    L_x: float,
    inner: float,
) -> float:
    r"""Bound on ‖g − ∂_θΦ_K(x_s)ᵀ w‖₂ for an adjoint w at x_s, ‖x_s − x̂‖ ≤ ρ (eq. (20)).

    .. math::

        C = \frac{L_θρ\,Ĝ}{1−δ} + β\Big(\frac{L_xρ\,Ĝ}{(1−δ)^2} + \frac{Hρ}{1−δ}\Big)
            + β\,ε_w, \qquad Ĝ = G + Hρ

    where ε_w ≥ ‖w − (I − ∂_xΦ_K(x_s)ᵀ)⁻¹∂_xL(x_s)‖ (``inner``: 0 for a direct solve,
    ‖res‖/(1−δ) for an iterative one, δ^{P+1}G/(1−δ) for the Neumann sum (22)).
    """
    G_hat = G + H * rho
    return (
        L_theta * rho * G_hat / (1.0 - delta)
        + beta * (L_x * rho * G_hat / (1.0 - delta) ** 2 + H * rho / (1.0 - delta))
        + beta * inner
    )


def unrolled_certificate(
    delta: float,
    G: float,
    beta: float,
    residuals: list[float],
    L_theta: float,
    H: float,
    L_x: float,
) -> float:
    r"""Bound on ‖g − g^{KT}‖₂ for AD through T blocks (23), from the block residuals r_t.

    With ρ_t = r_t/(1−δ) ≥ ‖x_{Kt} − x̂‖ (t < T), ρ_T = δρ_{T−1}, G = ‖∂_xL(x_{KT})‖,
    B̂ = β + L_θρ_{T−1} ≥ ‖∂_θΦ_K(x̂)‖ (β at x_{K(T−1)}):

    .. math::

        C = \frac{δ^T}{1−δ}(G + Hρ_T)B̂ + \sum_{j=0}^{T−1}\Big(Hρ_Tδ^jB̂
            + G B̂ L_x δ^{j−1}\sum_{i=1}^{j}ρ_{T−i} + Gδ^jL_θρ_{T−1−j}\Big)
    """
    T = len(residuals)
    rho = [r / (1.0 - delta) for r in residuals] + [delta * residuals[-1] / (1.0 - delta)]
    B_hat = beta + L_theta * rho[T - 1]
    total = delta**T / (1.0 - delta) * (G + H * rho[T]) * B_hat
    partial = 0.0  # Σ_{i=1}^{j} ρ_{T−i}
    for j in range(T):
        if j >= 1:
            partial += rho[T - j]
        jac = L_x * delta ** (j - 1) * partial if j >= 1 else 0.0
        total += H * rho[T] * delta**j * B_hat + G * B_hat * jac
        total += G * delta**j * L_theta * rho[T - 1 - j]
    return total


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """What every estimator of :func:`estimate` is run on: φ, θ, the start x0, the loss, K
    steps a block, the readout, and the generator that seeds a power iteration."""

    step: Step
    theta: Theta
    x0: torch.Tensor
    loss: Loss
    K: int
    readout: estimators.Readout | None
    generator: torch.Generator | None


@dataclass(frozen=True)
class _Constants:
    """The certificate's constants as the caller gave them (None: not given), and ``source``:
    where each one came from, the ``"constants"`` of ``certificate_source`` (:func:`_beta`
    adds ‖∂_θΦ_K‖₂ when it computes it)."""

    delta: float | None
    lipschitz_theta: float | None
    hessian_bound: float | None
    lipschitz_x: float | None
    source: dict[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        given = {
            "delta": self.delta,
            "hessian_bound": self.hessian_bound,
            "lipschitz_theta": self.lipschitz_theta,
            "lipschitz_x": self.lipschitz_x,
        }
        source = {k: ("given" if v is not None else "not given") for k, v in given.items()}
        object.__setattr__(self, "source", source)

    def missing(self, *names: str) -> list[str]:
        """Those of ``names`` that were not given, in that order."""
        return [name for name in names if getattr(self, name) is None]

    def evidence(self, dtype: torch.dtype) -> Evidence:
        """An empty record of the measurements that could refute δ, H or L_θ."""
        given = {
            "delta": self.delta,
            "hessian_bound": self.hessian_bound,
            "lipschitz_theta": self.lipschitz_theta,
        }
        return Evidence(given, dtype)


@dataclass(frozen=True)
class _Backward:
    """The backward settings of the fixed-point methods: P Neumann terms (``deq_neumann``);
    the adjoint solve's relative tolerance, method and budget (``deq_solve``)."""

    P: int | None
    tol: float | None
    solver: str
    maxiter: int


# The constants each certificate needs (it is None when one of them is missing).
_JACOBIAN_FREE = ("delta", "lipschitz_theta", "hessian_bound")
_UNROLLED = (*_JACOBIAN_FREE, "lipschitz_x")


def _source(
    status: str, constants: dict[str, str], terms: dict[str, float], reason: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {"status": status, "constants": constants, "terms": terms}
    if reason:
        out["reason"] = reason
    return out


def _concat_stats(
    head: IterationStats | None, r_last: float, K: int, converged: bool, reason: str
) -> IterationStats:
    previous = head.residuals if head is not None else torch.zeros(0, dtype=torch.float64)
    residuals = torch.cat([previous, torch.tensor([r_last], dtype=torch.float64)])
    T = residuals.numel()
    return IterationStats(
        residuals=residuals, blocks=T, evaluations=K * T, converged=converged, reason=reason
    )


def estimate(
    method: str,
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    loss: Loss,
    *,
    K: int,
    T: int | str | None = None,
    P: int | None = None,
    x_star: torch.Tensor | None = None,
    delta: float | None = None,
    lipschitz_theta: float | None = None,
    hessian_bound: float | None = None,
    lipschitz_x: float | None = None,
    tol: float | None = None,
    T_max: int = 10_000,
    readout: estimators.Readout | None = None,
    solver: str = "gmres",
    maxiter: int = 1000,
    fixed_point_rtol: float | None = None,
    generator: torch.Generator | None = None,
) -> Estimate:
    r"""Run one estimator and certify it: :class:`Estimate` (grad, x, stats, certificate).

    ``method`` is one of :data:`METHODS`. ``retune`` and ``unrolled`` run T blocks of Φ_K from
    ``x0``; the others solve for x̂ from ``x0`` (:func:`retune_suite.operators.fixed_point`, relative
    tolerance ``fixed_point_rtol``) unless ``x_star`` is given. ``grad`` equals what the
    matching function of :mod:`retune_suite.operators.hypergrad` returns, exactly. A given
    ``x_star`` must be a fixed point of Φ_K to √eps (relative residual), else a warning; with
    ``fixed_point_rtol`` also given, to that tolerance (the one the caller solved it to).

    Certificate, an upper bound on ‖g(θ) − grad‖₂ (g: the DEQ gradient (20) at the true x̂,
    never computed here) from the a-posteriori distances s/(1−δ) of the block residual s:

    - ``retune`` (25): :func:`jacobian_free_certificate` with ρ_B = r/(1−δ), ρ_L = δr/(1−δ),
      r = ‖x_{KT} − x_{K(T−1)}‖ (Lemma 1 + corrected Theorem 2). As T → ∞ it tends to Lemma
      1's bound (29) with the constants at x̂.
    - ``jfb`` (28) and ``deq_neumann`` with P = 0: the same with ρ_B = ρ_L = ‖Φ_K(x_s) −
      x_s‖/(1−δ) at x_s (x̂ computed, or ``x_star``).
    - ``deq_exact``, ``deq_solve``, ``deq_neumann`` (20), (22): the smaller of the JFB
      certificate plus the computed ‖grad − g^JF(x_s)‖ (triangle inequality), and, with
      ``lipschitz_x``, :func:`implicit_certificate` (adjoint residual ‖res‖/(1−δ) for
      ``deq_solve``, Neumann tail δ^{P+1}‖∂_xL‖/(1−δ)).
    - ``unrolled`` (23): :func:`unrolled_certificate`; needs ``lipschitz_x`` (the unrolled
      gradient multiplies Jacobians ∂_xΦ_K at every iterate), else None.

    ``delta``, ``hessian_bound`` and ``lipschitz_theta`` are needed by every certificate
    (None without them); each must hold on the balls of ``docs/findings.md`` (section C). Beyond the
    dense limits ‖∂_θΦ_K‖₂ is estimated by a power iteration seeded by ``generator`` and the
    certificate is ``"estimated"``, never ``"certified"``.

    A given constant that a measurement made on the way refutes leaves the certificate None
    (status ``"none"``; ``"reason"`` and ``"refuted"`` give the measured value): δ against
    the secants of the block residuals (with one more no-graph block from the last iterate)
    and, for the fixed-point methods, one product ∂_xΦ_K(x_s)ᵀ∂_xL(x_s); H against a secant
    of ∂_xL; L_θ (``retune``, ``unrolled``) against two directions w of the secant of
    ∂_θΦ_K at (x_{KT}, x_{K(T−1)}), ‖(∂_θΦ_K(x_{KT}) − ∂_θΦ_K(x_{K(T−1)}))ᵀw‖ ≤
    L_θ‖x_{KT} − x_{K(T−1)}‖‖w‖ with w = ∂_xL(x_{KT}) and ∂_xL(x_{KT}) − ∂_xL(x_{K(T−1)})
    (one more graph block and two VJPs), and with ``T="auto"`` also against the dense secant
    between its last two candidates; for the fixed-point methods the same two directions at
    (Φ_K(x_s), x_s) when x_s is not a fixed point to √eps (a given ``x_star``, a loose
    ``fixed_point_rtol``). A measurement below a constant proves nothing
    (``docs/findings.md`` "Refuted constants").

    ``T="auto"`` (``retune`` only) runs blocks one at a time without a graph until the
    certificate's forward part (the terms driven by r: ``certificate_source["terms"]
    ["forward"]``) is at most ``tol``, or ``T_max`` blocks; ``stats.forward.reason`` says
    which (``"tolerance"`` or ``"T_max"``), ``stats.forward.blocks`` is the T used; each
    candidate block also costs one dense ∂_θΦ_K (d forward-mode products). For
    ``deq_solve`` ``tol`` is the adjoint solve's relative tolerance (and ``solver``,
    ``maxiter`` its method and budget).
    """
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    check_count(K, "K")
    check_point(x0, "x0", theta)
    if delta is not None:
        _check_delta(delta)
    for value, name in (
        (lipschitz_theta, "lipschitz_theta"),
        (hessian_bound, "hessian_bound"),
        (lipschitz_x, "lipschitz_x"),
    ):
        _check_constant(value, name)
    problem = _Problem(step, theta, x0, loss, K, readout, generator)
    constants = _Constants(delta, lipschitz_theta, hessian_bound, lipschitz_x)
    if method in ("retune", "unrolled"):
        if T is None:
            raise InvalidInputError(f"{method} needs T (the number of restarts), e.g. T=10.")
        if T == "auto" and method != "retune":
            raise InvalidInputError("T='auto' is for method='retune' only.")
        if method == "retune":
            return _estimate_retune(problem, constants, T, tol, T_max)
        return _estimate_unrolled(problem, constants, T)  # type: ignore[arg-type]
    backward = _Backward(P, tol, solver, maxiter)
    return _estimate_implicit(method, problem, constants, x_star, fixed_point_rtol, backward)


def _no_certificate(
    problem: _Problem, constants: _Constants, needed: tuple[str, ...]
) -> dict[str, Any] | None:
    """The certificate_source of a None certificate, or None when one can be computed."""
    if problem.readout is not None:
        reason = (
            "a readout R(u, θ) adds a direct term whose variation between x and x̂ is not "
            "bounded by the given constants"
        )
        return _source("none", constants.source, {}, reason)
    missing = constants.missing(*needed)
    if missing:
        reason = "missing constant(s): " + ", ".join(missing)
        return _source("none", constants.source, {}, reason)
    return None


def _beta(problem: _Problem, x: torch.Tensor, constants: _Constants) -> tuple[float, str]:
    """β = ‖∂_θΦ_K(x)‖₂ and the status it gives the certificate (recorded in
    ``constants.source``)."""
    beta, status, _ = _beta_matrix(problem, x, constants)
    return beta, status


def _beta_matrix(
    problem: _Problem, x: torch.Tensor, constants: _Constants
) -> tuple[float, str, torch.Tensor | None]:
    """:func:`_beta` and the dense ∂_θΦ_K(x) (None beyond the dense limits)."""
    beta, exact, matrix = _dtheta(problem.step, problem.theta, x, problem.K, problem.generator)
    if exact:
        constants.source["dtheta_norm"] = "exact (dense n×d Jacobian, SVD)"
        return beta, "certified", matrix
    d = sum(t.numel() for t in as_tuple(problem.theta))
    constants.source["dtheta_norm"] = (
        f"estimated (power iteration, a lower estimate: d = {d}, n·d = {d * x.numel()} beyond "
        f"the dense limits d ≤ {DENSE_THETA_LIMIT}, n·d ≤ {DENSE_ENTRIES_LIMIT})"
    )
    return beta, "estimated", None


# ---------------------------------------------------------------------------------------------
# Refuted constants (docs/findings.md C, "Refuted constants"): measurements at the points the
# estimator visits, each a lower bound of what a given δ, H or L_θ claims to bound. One above
# its constant (beyond rounding, retune_suite.operators.refutation) leaves the certificate None.
# ---------------------------------------------------------------------------------------------

_RESIDUALS = ("r_{t}/r_{s}", "r_j = ‖x_{K(j+1)} − x_{Kj}‖₂, the block residuals")


def _history(stats: IterationStats | None) -> list[float]:
    """The block residuals of a Picard run (one norm per block), or [] (none, or per sample)."""
    if stats is None or stats.residuals.dim() != 1:
        return []
    return stats.residuals.tolist()


def _check_blocks(
    problem: _Problem,
    evidence: Evidence,
    residuals: list[float],
    x_last: torch.Tensor,
    points: tuple[torch.Tensor, ...],
) -> None:
    """δ against the secants of the block residuals: ‖x_{K(t+1)} − x_{Kt}‖ ≤ δ^{t−s}
    ‖x_{K(s+1)} − x_{Ks}‖, after one more block from ``x_last`` (r_T: with T = 1 there would be
    no pair). ``points``: iterates whose magnitudes scale the rounding allowance."""
    if "delta" not in evidence.given:
        return
    more = restart(problem.step, problem.theta, x_last, problem.K, 1)
    values = [*residuals, more.stats.residuals[0].item()]
    scale = 2.0 * max(_norm(x) for x in (*points, more.x))
    evidence.secants("delta", values, _RESIDUALS[0], scale, note=_RESIDUALS[1])


def _check_loss(
    problem: _Problem,
    evidence: Evidence,
    x: torch.Tensor,
    y: torch.Tensor,
    g_x: torch.Tensor | None = None,
    where: str = "",
    g_y: torch.Tensor | None = None,
) -> None:
    """H against the secant ‖∂ₓL(x) − ∂ₓL(y)‖/‖x − y‖ (one more loss gradient)."""
    H = evidence.given.get("hessian_bound")
    den = _norm(x - y)
    if H is None or not den > 0:
        return
    g_x = estimators.loss_gradient(problem.loss, x) if g_x is None else g_x
    g_y = estimators.loss_gradient(problem.loss, y) if g_y is None else g_y
    num = _norm(g_x - g_y)
    scale = _norm(g_x) + _norm(g_y) + max(H, num / den) * (_norm(x) + _norm(y))
    evidence.secant("hessian_bound", num, den, f"‖∂ₓL(x) − ∂ₓL(y)‖₂/‖x − y‖₂ {where}", scale)


def _check_lipschitz_theta(
    evidence: Evidence,
    a: tuple[torch.Tensor, float, torch.Tensor],
    b: tuple[torch.Tensor, float, torch.Tensor],
) -> None:
    """L_θ against the secant ‖∂_θΦ_K(a) − ∂_θΦ_K(b)‖₂/‖a − b‖ of two dense Jacobians the
    routine computed anyway (each item: the point, β there, the matrix)."""
    L = evidence.given.get("lipschitz_theta")
    den = _norm(a[0] - b[0])
    if L is None or not den > 0:
        return
    num = spectral_norm(a[2] - b[2])
    scale = a[1] + b[1] + max(L, num / den) * (_norm(a[0]) + _norm(b[0]))
    what = "‖∂_θΦ_K(x_{K(T−2)}) − ∂_θΦ_K(x_{K(T−1)})‖₂/‖x_{K(T−2)} − x_{K(T−1)}‖₂"
    evidence.secant("lipschitz_theta", num, den, what, scale)


_SECANT_DIRECTIONS = (
    "‖(∂_θΦ_K(x_{KT}) − ∂_θΦ_K(x_{K(T−1)}))ᵀw‖₂/(‖x_{KT} − x_{K(T−1)}‖₂‖w‖₂)",
    ("w = ∂ₓL(x_{KT})", "w = ∂ₓL(x_{KT}) − ∂ₓL(x_{K(T−1)})"),
)
_SECANT_DIRECTIONS_AT_XS = (
    "‖(∂_θΦ_K(Φ_K(x_s)) − ∂_θΦ_K(x_s))ᵀw‖₂/(‖Φ_K(x_s) − x_s‖₂‖w‖₂)",
    ("w = ∂ₓL(x_s)", "w = ∂ₓL(Φ_K(x_s)) − ∂ₓL(x_s)"),
)


def _check_lipschitz_theta_directions(
    problem: _Problem,
    evidence: Evidence,
    a: torch.Tensor,
    b: tuple[torch.Tensor, float, torch.Tensor | None],
    directions: tuple[torch.Tensor, torch.Tensor],
    labels: tuple[str, tuple[str, str]] = _SECANT_DIRECTIONS,
    lin_b: estimators.Linearisation | None = None,
) -> None:
    """L_θ against two directions of the secant of ∂_θΦ_K at (a, b) = (x_{KT}, x_{K(T−1)}):
    ‖(∂_θΦ_K(a) − ∂_θΦ_K(b))ᵀw‖ ≤ L_θ‖a − b‖‖w‖ for ``directions`` w = ∂ₓL(x_{KT}) (the
    direction the gradient uses) and w = ∂ₓL(x_{KT}) − ∂ₓL(x_{K(T−1)}) (the change of ∂ₓL
    towards x̂, which the certificate's L_θ terms also multiply; it covers ∂ₓL(x_{KT}) = 0);
    at (Φ_K(x_s), x_s) for the fixed-point methods (``labels``). One graph block at a and a
    VJP per direction; ∂_θΦ_K(b)ᵀw from the dense matrix the certificate computed (``b``: the
    point, β there, the matrix), or beyond the dense limits from ``lin_b`` (a graph at b) or
    one more graph block at b.
    """
    L = evidence.given.get("lipschitz_theta")
    den = _norm(a - b[0])
    if L is None or not (den > 0 and math.isfinite(den)):
        return
    lin_a = estimators.Linearisation(problem.step, problem.theta, a, problem.K)

    def pullback(lin: estimators.Linearisation, w: torch.Tensor) -> torch.Tensor:
        """∂_θΦ_K(x)ᵀw, flat (zeros for a θ entry Φ_K does not use)."""
        grads = torch.autograd.grad(lin.out, lin.leaves, w, retain_graph=True, allow_unused=True)
        pairs = zip(grads, lin.leaves, strict=True)
        return flat(tuple(torch.zeros_like(t) if g is None else g for g, t in pairs))

    for w, where in zip(directions, labels[1], strict=True):
        size = _norm(w)
        if not (size > 0 and math.isfinite(size)):
            continue
        w = w / size
        p_a = pullback(lin_a, w)
        if b[2] is not None:
            p_b = b[2].T @ w.reshape(-1).to(b[2].dtype)
        else:
            if lin_b is None:
                lin_b = estimators.Linearisation(problem.step, problem.theta, b[0], problem.K)
            p_b = pullback(lin_b, w)
        num = _norm(p_a - p_b)
        # what num and den are computed from: ∂_θΦ_K(b)ᵀw, ∂_θΦ_K(a)ᵀw (‖∂_θΦ_K(a)‖₂ ≤ β +
        # L_θ‖a − b‖ whenever L_θ is a Lipschitz constant, which a refutation may assume)
        slope = max(L, num / den)
        scale = 2.0 * b[1] + _norm(p_a) + _norm(p_b) + slope * (den + _norm(a) + _norm(b[0]))
        if evidence.secant("lipschitz_theta", num, den, labels[0], scale, where):
            return


def _check_last_block(
    problem: _Problem,
    evidence: Evidence,
    x_KT: torch.Tensor,
    b: tuple[torch.Tensor, float, torch.Tensor | None],
) -> None:
    """H against the secant of ∂ₓL and L_θ against two directions of the secant of ∂_θΦ_K,
    both at (x_{KT}, x_{K(T−1)}) (``b``: x_{K(T−1)}, β there, the dense ∂_θΦ_K or None),
    sharing the two loss gradients."""
    if not ("hessian_bound" in evidence.given or "lipschitz_theta" in evidence.given):
        return
    g_a = estimators.loss_gradient(problem.loss, x_KT)
    g_b = estimators.loss_gradient(problem.loss, b[0])
    _check_loss(problem, evidence, x_KT, b[0], g_a, "at (x_{KT}, x_{K(T−1)})", g_b)
    _check_lipschitz_theta_directions(problem, evidence, x_KT, b, (g_a, g_a - g_b))


def _refuted(
    constants: _Constants, evidence: Evidence, needed: tuple[str, ...]
) -> dict[str, Any] | None:
    """The certificate_source of a certificate that a refuted constant leaves None (status
    ``"none"``, the measurement in ``"reason"`` and ``"refuted"``), or None."""
    names = [name for name in needed if name in evidence.refuted]
    if not names:
        return None
    for name in names:
        constants.source[name] = "given, refuted"
    out = _source("none", constants.source, {}, evidence.reason(*names))
    out["refuted"] = {name: str(evidence.refuted[name]) for name in names}
    return out


def _estimate_retune(
    problem: _Problem, constants: _Constants, T: int | str, tol: float | None, T_max: int
) -> Estimate:
    step, theta, loss, K = problem.step, problem.theta, problem.loss, problem.K
    readout = problem.readout

    def certify(y: torch.Tensor, x: torch.Tensor, r: float) -> tuple[float, float, str, Any]:
        """(certificate, forward part, status, (β, dense ∂_θΦ_K(y) or None)) for the last
        block y → x = Φ_K(y)."""
        delta, L_theta, H = constants.delta, constants.lipschitz_theta, constants.hessian_bound
        assert delta is not None and L_theta is not None and H is not None
        beta, status, matrix = _beta_matrix(problem, y, constants)
        G = _norm(estimators.loss_gradient(loss, x))
        rho_B = r / (1.0 - delta)
        total, forward = jacobian_free_certificate(delta, G, beta, rho_B, delta * rho_B, L_theta, H)
        return total, forward, status, (beta, matrix)

    def refuted(
        y: torch.Tensor, x_KT: torch.Tensor, residuals: list[float], dtheta: Any
    ) -> dict[str, Any] | None:
        """Check δ (block residuals, one more block), H (∂ₓL at y and x_KT) and L_θ (two
        directions of the secant of ∂_θΦ_K at (x_KT, y); ``dtheta``: β and the dense
        ∂_θΦ_K(y) or None, from :func:`certify`)."""
        _check_blocks(problem, evidence, residuals, x_KT, (problem.x0, y, x_KT))
        _check_last_block(problem, evidence, x_KT, (y, *dtheta))
        return _refuted(constants, evidence, _JACOBIAN_FREE)

    evidence = constants.evidence(problem.x0.dtype)

    if T == "auto":
        if tol is None or not tol > 0:
            raise InvalidInputError(f"T='auto' needs tol > 0 (the forward part), got {tol!r}.")
        check_count(T_max, "T_max")
        if readout is not None or constants.missing(*_JACOBIAN_FREE):
            raise InvalidInputError(
                "T='auto' stops on the certificate: give delta, lipschitz_theta and "
                "hessian_bound, and no readout."
            )
        residuals: list[torch.Tensor] = []
        y, reason = problem.x0, "T_max"
        previous = None  # (y, β, ∂_θΦ_K(y)) of the previous candidate: L_θ's secant
        for t in range(1, T_max + 1):
            block = restart(step, theta, y, K, 1)  # one block, no graph
            r = block.stats.residuals[0].item()
            _, forward, _, (beta, matrix) = certify(y, block.x, r)
            if forward <= tol:
                reason = "tolerance"
                break
            if t < T_max:
                residuals.append(block.stats.residuals)
                previous = (y, beta, matrix)
                y = block.x
        head = None
        if residuals:
            res = torch.cat(residuals)
            head = IterationStats(residuals=res, blocks=res.numel())
        grad, x_KT = estimators.retune_last_block(step, theta, y, loss, K, readout=readout)
        r = _norm(x_KT - y)
        stats = _concat_stats(head, r, K, reason == "tolerance", reason)
        total, forward, status, (beta, matrix) = certify(y, x_KT, r)
        if previous is not None and previous[2] is not None and matrix is not None:
            _check_lipschitz_theta(evidence, previous, (y, beta, matrix))
        none = refuted(y, x_KT, stats.residuals.tolist(), (beta, matrix))
        if none is not None:
            return Estimate(grad, x_KT, EstimateStats(forward=stats), None, none)
        source = _source(status, constants.source, {"forward": forward, "lemma1": total - forward})
        return Estimate(grad, x_KT, EstimateStats(forward=stats), total, source)

    check_count(T, "T")  # type: ignore[arg-type]
    assert isinstance(T, int)
    if T == 1:
        x_prev, head = problem.x0, None
    else:
        first = restart(step, theta, problem.x0, K, T - 1)
        x_prev, head = first.x, first.stats
    grad, x_KT = estimators.retune_last_block(step, theta, x_prev, loss, K, readout=readout)
    r = _norm(x_KT - x_prev)
    stats = EstimateStats(forward=_concat_stats(head, r, K, False, ""))
    none = _no_certificate(problem, constants, _JACOBIAN_FREE)
    if none is not None:
        return Estimate(grad, x_KT, stats, None, none)
    assert stats.forward is not None
    total, forward, status, dtheta = certify(x_prev, x_KT, r)
    none = refuted(x_prev, x_KT, [*_history(head), r], dtheta)
    if none is not None:
        return Estimate(grad, x_KT, stats, None, none)
    source = _source(status, constants.source, {"forward": forward, "lemma1": total - forward})
    return Estimate(grad, x_KT, stats, total, source)


def _estimate_unrolled(problem: _Problem, constants: _Constants, T: int) -> Estimate:
    step, theta, loss, K = problem.step, problem.theta, problem.loss, problem.K
    check_count(T, "T")
    grad = estimators.unrolled(step, theta, problem.x0, loss, K, T, readout=problem.readout)
    run = restart(step, theta, problem.x0, K, T)  # the same iterates, no graph: x, residuals
    stats = EstimateStats(forward=run.stats)
    none = _no_certificate(problem, constants, _UNROLLED)
    if none is not None:
        return Estimate(grad, run.x, stats, None, none)
    evidence = constants.evidence(problem.x0.dtype)
    points = (problem.x0, run.x_prev, run.x)
    _check_blocks(problem, evidence, _history(run.stats), run.x, points)
    beta, status, matrix = _beta_matrix(problem, run.x_prev, constants)
    _check_last_block(problem, evidence, run.x, (run.x_prev, beta, matrix))
    none = _refuted(constants, evidence, _UNROLLED)
    if none is not None:
        return Estimate(grad, run.x, stats, None, none)
    delta, L_theta = constants.delta, constants.lipschitz_theta
    H, L_x = constants.hessian_bound, constants.lipschitz_x
    assert delta is not None and L_theta is not None and H is not None and L_x is not None
    G = _norm(estimators.loss_gradient(loss, run.x))
    total = unrolled_certificate(delta, G, beta, run.stats.residuals.tolist(), L_theta, H, L_x)
    source = _source(status, constants.source, {"forward": total})
    return Estimate(grad, run.x, stats, total, source)


def _linearise(
    step: Step, theta: Theta, x_star: torch.Tensor, K: int, rtol: float | None, *, solved: bool
) -> estimators.Linearisation:
    """:func:`~.estimators.linearise` (finite, else an error; a fixed point to √eps relative,
    else a warning), with the fixed-point check at the tolerance x_s was solved to: an x̂
    solved here (``solved``) passed :func:`fixed_point`'s own test (``rtol``, or its absolute
    floor at x̂ ≈ 0, where no relative test can pass); a given ``x_star`` with a declared
    ``rtol`` has relative residual at most ``rtol``. Otherwise :func:`~.estimators.linearise`
    checks (and warns) as always."""
    if solved or rtol is not None:
        check_count(K, "K")
        check_point(x_star, "x_star", theta)
        lin = estimators.Linearisation(step, theta, x_star, K)
        if torch.isfinite(lin.out).all() and (solved or lin.residual() <= (rtol or 0.0)):
            return lin
    return estimators.linearise(step, theta, x_star, K)


def _estimate_implicit(
    method: str,
    problem: _Problem,
    constants: _Constants,
    x_star: torch.Tensor | None,
    rtol: float | None,
    settings: _Backward,
) -> Estimate:
    step, theta, loss, K = problem.step, problem.theta, problem.loss, problem.K
    readout = problem.readout
    P = settings.P
    forward = None
    if x_star is None:
        forward_run = fixed_point(step, theta, problem.x0, K, rtol=rtol, method="picard")
        x_star, forward = forward_run.x, forward_run.stats
    lin = _linearise(step, theta, x_star, K, rtol, solved=forward is not None)
    backward = None
    if method == "jfb":
        grad = estimators.jfb(step, theta, x_star, loss, K, readout=readout, lin=lin)
    elif method == "deq_neumann":
        if P is None:
            raise InvalidInputError("deq_neumann needs P (the number of Neumann terms), e.g. P=5.")
        grad = estimators.deq_neumann(step, theta, x_star, loss, K, P, readout=readout, lin=lin)
    elif method == "deq_exact":
        grad = estimators.deq_exact(step, theta, x_star, loss, K, readout=readout, lin=lin)
    else:
        grad, backward = estimators.deq_solve(
            step, theta, x_star, loss, K, tol=settings.tol, method=settings.solver,
            maxiter=settings.maxiter, return_stats=True, readout=readout, lin=lin,
        )  # fmt: skip
    stats = EstimateStats(forward=forward, backward=backward)
    none = _no_certificate(problem, constants, _JACOBIAN_FREE)
    if none is not None:
        return Estimate(grad, x_star, stats, None, none)
    delta, L_theta, H = constants.delta, constants.lipschitz_theta, constants.hessian_bound
    L_x = constants.lipschitz_x
    assert delta is not None and L_theta is not None and H is not None
    s = _norm(lin.out.detach() - lin.x)  # ‖Φ_K(x_s) − x_s‖ at the point used
    v = estimators.loss_gradient(loss, x_star)
    G = _norm(v)
    evidence = constants.evidence(x_star.dtype)
    # δ: the Picard run's residuals then s (x_s is its last iterate), one product ∂ₓΦ_K(x_s)ᵀv
    # on the graph already built; H: ∂ₓL at x_s and Φ_K(x_s).
    scale = 2.0 * max(_norm(problem.x0), _norm(x_star), _norm(lin.out.detach()))
    evidence.secants("delta", [*_history(forward), s], _RESIDUALS[0], scale, note=_RESIDUALS[1])
    evidence.adjoint_powers("delta", lin.adjoint_x, v, 1, "‖∂ₓΦ_K(x_s)ᵀv‖₂/‖v‖₂, v = ∂ₓL(x_s)")
    out = lin.out.detach()
    g_out = estimators.loss_gradient(loss, out)
    _check_loss(problem, evidence, x_star, out, v, "at (x_s, Φ_K(x_s))", g_out)
    # L_θ: two directions of the secant of ∂_θΦ_K at (Φ_K(x_s), x_s), as for retune, where
    # x_s is not a fixed point to √eps (a given x_star, a loose fixed_point_rtol): below, the
    # distance is at rounding level and so are the certificate's L_θ terms
    beta, status, matrix = _beta_matrix(problem, x_star, constants)
    if s > math.sqrt(torch.finfo(x_star.dtype).eps) * _norm(x_star):
        _check_lipschitz_theta_directions(
            problem, evidence, out, (x_star, beta, matrix), (v, g_out - v),
            _SECANT_DIRECTIONS_AT_XS, lin,
        )  # fmt: skip
    none = _refuted(constants, evidence, _JACOBIAN_FREE)
    if none is not None:
        return Estimate(grad, x_star, stats, None, none)
    rho = s / (1.0 - delta)
    jf_total, jf_forward = jacobian_free_certificate(delta, G, beta, rho, rho, L_theta, H)
    terms: dict[str, float] = {"residual": s}
    if method == "jfb" or (method == "deq_neumann" and P == 0):
        terms.update(forward=jf_forward, lemma1=jf_total - jf_forward)
        return Estimate(grad, x_star, stats, jf_total, _source(status, constants.source, terms))
    g_jf = estimators.jfb(step, theta, x_star, loss, K, lin=lin)
    gap = _norm(flat(as_tuple(grad)) - flat(as_tuple(g_jf)))
    candidates = {"jfb_plus_gap": jf_total + gap}
    if L_x is not None:
        if method == "deq_exact":
            inner = 0.0
        elif method == "deq_solve":
            assert backward is not None
            inner = backward.residuals[-1].item() * G / (1.0 - delta)
        else:
            assert P is not None
            inner = delta ** (P + 1) * G / (1.0 - delta)
        candidates["implicit"] = implicit_certificate(delta, G, beta, rho, L_theta, H, L_x, inner)
        terms["inner"] = inner
    terms.update(candidates)
    best = min(candidates, key=candidates.__getitem__)
    terms["used"] = best  # type: ignore[assignment]
    source = _source(status, constants.source, terms)
    return Estimate(grad, x_star, stats, candidates[best], source)
