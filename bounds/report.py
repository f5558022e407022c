"""``verify``: every estimator, every constant and every statement on one problem."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from retune_suite.operators import hypergrad
from retune_suite.operators.errors import InvalidInputError, NotContractiveError
from retune_suite.operators.iteration import fixed_point, unroll
from retune_suite.operators.jacobians import reuse_jacobians
from retune_suite.operators.refutation import Evidence
from retune_suite.operators.theta import Loss, Step, Theta, as_tuple, check_count, check_point

from . import constants as C
from . import statements as S

# Floating-point evaluation allowance for ``holds``: an observed error is a difference of two
# gradients, each computed to ~1e2 ulps of its magnitude (x̂ is exact to 64 ulps), so 1e3 ulps
# of the magnitudes involved separate a true equality (the bound attained) from a violation.
# It is an allowance for rounding, not a loosening of any bound.
FP_ULPS = 1e3


@dataclass
class Report:
    """Everything :func:`verify` measured. ``to_frame`` gives one row per (quantity, bound).

    ``holds[name]`` is True or False only when every constant the bound uses is exact or a
    proven upper estimate; otherwise it is None and ``reasons[name]`` names the constant that
    was only estimated (or why no verdict can be given). ``refuted`` maps each given constant
    (``"delta"``, ``"hessian_bound"``, ``"lipschitz_theta"``) that a measurement refutes to
    the measurement (:mod:`retune_suite.operators.refutation`); what uses it has no verdict.
    """

    K: int
    T: int
    P: int
    x_star: torch.Tensor
    gradients: dict[str, Theta]
    errors: dict[str, float]
    bounds: dict[str, float]
    holds: dict[str, bool | None]
    constants: dict[str, Any]
    compared: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    certificates: dict[str, float | None] = field(default_factory=dict)
    certificate_status: dict[str, str] = field(default_factory=dict)
    certificate_holds: dict[str, bool | None] = field(default_factory=dict)
    refuted: dict[str, str] = field(default_factory=dict)

    def to_frame(self):
        """pandas DataFrame: a row per bound (observed, bound, holds) and per constant."""
        import pandas as pd

        rows = []
        for name, bound in self.bounds.items():
            quantity = self.compared[name]
            observed = self.constants["dist_T"] if quantity == "dist_T" else self.errors[quantity]
            rows.append(
                {
                    "kind": "bound",
                    "name": name,
                    "quantity": quantity,
                    "observed": observed,
                    "bound": bound,
                    "holds": self.holds[name],
                    "bound/observed": bound / observed if observed > 0 else float("inf"),
                    "reason": self.reasons.get(name, ""),
                }
            )
        for name, value in self.certificates.items():
            observed = self.errors[name]
            rows.append(
                {
                    "kind": "certificate",
                    "name": f"certificate_{name}",
                    "quantity": name,
                    "observed": observed,
                    "bound": value,
                    "holds": self.certificate_holds[name],
                    "bound/observed": (
                        value / observed if value is not None and observed > 0 else None
                    ),
                    "reason": self.certificate_status[name].removeprefix("certified"),
                }
            )
        for name, text in self.refuted.items():  # a given constant a measurement refutes
            rows.append(
                {
                    "kind": "constant",
                    "name": f"refuted_{name}",
                    "quantity": text,
                    "observed": None,
                    "bound": None,
                    "holds": None,
                    "bound/observed": None,
                    "reason": text,
                }
            )
        for name, value in self.constants.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            rows.append(
                {
                    "kind": "constant",
                    "name": name,
                    "quantity": "" if numeric else str(value),
                    "observed": float(value) if numeric else None,
                    "bound": None,
                    "holds": None,
                    "bound/observed": None,
                    "reason": "",
                }
            )
        return pd.DataFrame(rows)


def _vector(grad: Theta) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in as_tuple(grad)])


def _norm(t: torch.Tensor) -> float:
    return torch.linalg.vector_norm(t).item()


def _mse_target(
    loss: Loss, x_star: torch.Tensor, probes: list[torch.Tensor]
) -> torch.Tensor | None:
    """x̄ if L(x) = ½‖x − x̄‖², else None.

    Checked at the probes (which include x_{KT}, where Corollary 1's proof uses the loss):
    the value ½‖p − x̄‖² and the gradient p − x̄, each to 1e-12 relative.
    """
    target = x_star - hypergrad.loss_gradient(loss, x_star)
    for p in probes:
        value = loss(p).item()
        expected = 0.5 * _norm(p - target) ** 2
        if abs(value - expected) > 1e-12 * max(1.0, abs(expected)):
            return None
        grad_gap = _norm(hypergrad.loss_gradient(loss, p) - (p - target))
        if grad_gap > 1e-12 * max(1.0, _norm(p - target)):
            return None
    return target


def _verdict(
    error: float, bound: float, slack: float, uncertainty: float, missing: list[str]
) -> tuple[bool | None, str]:
    """True/False only with certified constants and a finite bound; None (with the reason)
    otherwise, or when the reference's own error straddles the bound."""
    if missing:
        return None, "not certified: " + "; ".join(missing)
    if not (math.isfinite(bound) and math.isfinite(error)):
        return None, f"no verdict: the bound ({bound}) or the error ({error}) is not finite"
    if error + uncertainty <= bound + slack:
        return True, ""
    if error - uncertainty > bound + slack:
        return False, ""
    return None, (f"{STRADDLE} ({uncertainty:.2e}, from the adjoint solve's tolerance)")


STRADDLE = "no verdict: |error − bound| is within the DEQ reference's own error"
"""The start of the reason :func:`_verdict` gives when the matrix-free reference's own error
leaves a verdict open: the dense reference (``deq_exact``, n ≤ ``DENSE_LIMIT``) decides it."""


def _bounds(
    delta_lip: float,
    delta_loc: float,
    T: int,
    P: int,
    grad_loss: float,
    c: dict[str, Any],
    residual: float | None,
) -> dict[str, float]:
    """Every statement's right-hand side with these δ (Lipschitz and local) and constants;
    Corollary 1 when the loss is ½‖x − x̄‖² (``residual`` = ‖x̂ − x̄‖)."""
    bounds = {
        "theorem1": S.theorem1(delta_lip, T, c["dist0"]),
        "lemma1": S.lemma1(delta_loc, grad_loss, c["dtheta_star"]),
        f"neumann_P{P}": S.neumann(delta_loc, P, grad_loss, c["dtheta_star"]),
        "theorem2": S.theorem2(
            delta_lip,
            T,
            grad_loss,
            c["dtheta_star"],
            c["dtheta_prev"],
            c["L_theta"],
            c["dist0"],
            c["hess_loss"],
            c["taylor_remainder"],
        ),
        "theorem2_corrected": S.theorem2_corrected(
            delta_lip,
            T,
            grad_loss,
            c["dtheta_star"],
            c["dtheta_prev"],
            c["L_theta"],
            c["dist0"],
            c["loss_secant"],
        ),
    }
    if residual is not None:
        args = (delta_lip, T, residual, c["dtheta_star"], c["dtheta_prev"])
        args += (c["L_theta"], c["dist0"])
        bounds["corollary1"] = S.corollary1(*args)
        bounds["corollary1_corrected"] = S.corollary1_corrected(*args)
    return bounds


ADJOINT_STEPS = 3
"""Products ∂ₓΦ_K(x̂)ᵀv checked against a given δ where ‖∂ₓΦ_K(x̂)‖₂ is not computed exactly
(beyond ``EAGER_DENSE_LIMIT``): a few backward passes of Φ_K, against the GMRES solve's tens to
hundreds."""

EAGER_DENSE_LIMIT = 256
r"""n up to which :func:`verify` computes every dense quantity up front, whatever is given.

A dense ∂ₓΦ_K(x) costs n products of Φ_K and its SVD O(n³); at 32×32 colour (n = 3072, the
fields of experts, K = 10) one of them took 94 s, and the dense path took one at x̂ for the
reference, one for ‖∂ₓΦ_K(x̂)‖₂, one per restart and a dense Hessian: 331–623 s per (K, T),
against 7 s at 48×48 on the matrix-free path (issue 28, "No cliffs"). Up to this n a dense
matrix costs at most 256 products, the order of what the matrix-free path spends anyway (a
GMRES solve, 2d forward-mode columns of ∂_θΦ_K at two points), and an SVD of milliseconds.
Between this n and ``DENSE_LIMIT`` the dense matrices are taken
only where they decide something no given constant decides:

- with ``delta`` None, ‖∂ₓΦ_K(x̂)‖₂ by dense SVD is the certified local constant of Lemma 1
  and the Neumann bound, and the dense reference ``deq_exact`` is the only one whose error is
  bounded: the path stays the all-dense one. (The norms along the trajectory, drawn in
  Theorems 1 and 2 without a verdict, could be power iterations; on the fields of experts one
  converged power iteration (262 s, forward-mode products through FFT convolutions) costs
  more than the dense Jacobian and its SVD (94 s), so they stay SVDs.)
- with ``delta`` given, no local norm enters a bound: each is only a measurement that could
  refute δ. The checks are those of the matrix-free path (products ∂ₓΦ_K(x̂)ᵀv, the secants
  along the trajectory) and :data:`TRAJECTORY_ADJOINT_STEPS` products ∂ₓΦ_K(x)ᵀv at each
  restart x = x_{Kt}: every ratio ‖∂ₓΦ_K(x)ᵀv‖/‖v‖ is a lower bound of ‖∂ₓΦ_K(x)‖₂, so one
  above δ refutes it as an SVD would. (A power iteration on ∂ₓΦ_Kᵀ∂ₓΦ_K to convergence is
  no cheaper here: 262 s at x̂ alone, on the loaded 2-core machine, K = 10.) What this gives
  up is the
  SVD's exactness: a δ below an exact local norm by less than the products' shortfall is not
  refuted there. A δ that is a proof
  (ω(τ)^K from the map's own constants, as ``retune-suite verdicts`` gives) is never refuted
  by an exact norm either, so no verdict changes; a hand-made δ that is wrong gets at least
  the checks it gets beyond ``DENSE_LIMIT``;
- the reference is ``deq_solve`` (GMRES), its error bounded with the given δ; ``deq_exact`` is
  computed, and the verdicts taken again with it, only when that error leaves a verdict open
  (the error within the reference's own error of the bound, :data:`STRADDLE`);
- with ``hessian_bound`` H given, ‖∂ₓₓL(x̂)‖₂ (the printed Theorem 2 only) lies between a
  power iteration's lower estimate and H; a verdict that holds with the lower estimate, or
  fails with H, is the verdict with the exact value (the bound increases with it); the dense
  Hessian is taken only when neither decides.

So every verdict is the one the all-dense path gives, up to the products' shortfall in
refuting a wrong δ, and a 32×32 grid point costs less than a 48×48 one (``docs/performance.md``,
"No cliffs"; ``tests/test_no_cliffs.py`` counts the dense matrices taken).
"""

TRAJECTORY_ADJOINT_STEPS = 2
"""Products ∂ₓΦ_K(x)ᵀv at each restart x = x_{Kt} when δ is given and n is between
``EAGER_DENSE_LIMIT`` and ``DENSE_LIMIT``, from v = x − x̂ (the direction the restarts contract
slowest): one graph of Φ_K at x and a backward pass per product, each ratio a lower bound of
‖∂ₓΦ_K(x)‖₂ that refutes δ when above it."""


def _evidence(
    given: dict[str, float | None],
    *,
    trajectory: list[torch.Tensor],
    x_star: torch.Tensor,
    dist: list[float],
    local: dict[str, float],
    hess: tuple[float, str] | None,
    consts: dict[str, Any],
    loss: Loss,
    lin: hypergrad.Linearisation | None,
    x_star_error: float,
    linearise_at: Callable[[torch.Tensor], hypergrad.Linearisation] | None = None,
) -> Evidence:
    """The measurements of :func:`verify` that can refute a given δ, H or L_θ
    (:mod:`retune_suite.operators.refutation`): every one is already computed, except the
    products ∂ₓΦ_K(x)ᵀv at x̂ (``lin`` given) and at each restart (``linearise_at`` given).
    ``local`` maps what was measured to a lower bound of ‖∂ₓΦ_K‖₂ there (exact by SVD, or a
    power iteration), ``hess`` a lower bound of ‖∂ₓₓL(x̂)‖₂ and its name."""
    ev = Evidence(given, x_star.dtype)
    if "delta" in ev.given:
        for what, value in local.items():  # local norms, each exact or a lower bound
            ev.norm("delta", value, what)
        if lin is not None:
            v = hypergrad.loss_gradient(loss, x_star)
            what = "‖∂ₓΦ_K(x̂)ᵀv_{p}‖₂/‖v_{p}‖₂ (v_0 = ∂ₓL(x̂), v_{{p+1}} = ∂ₓΦ_K(x̂)ᵀv_p)"
            ev.adjoint_powers("delta", lin.adjoint_x, v, ADJOINT_STEPS, what)
        if linearise_at is not None:  # TRAJECTORY_ADJOINT_STEPS products at each restart
            for t, x in enumerate(trajectory[:-1]):
                v = x - x_star
                if not _norm(v) > 0:
                    continue
                what = f"‖∂ₓΦ_K(x_{{{{K·{t}}}}})ᵀv_{{p}}‖₂/‖v_{{p}}‖₂ (v_0 = x_{{{{K·{t}}}}} − x̂)"
                ev.adjoint_powers(
                    "delta", linearise_at(x).adjoint_x, v, TRAJECTORY_ADJOINT_STEPS, what
                )
        # Theorem 1's slack (dist_s + ‖x̂‖) and x̂'s own error: Theorem 1 (a secant from s = 0)
        # is never False on a δ that these distances do not refute.
        what = "‖x_{{K·{t}}} − x̂‖₂/‖x_{{K·{s}}} − x̂‖₂"
        ev.secants("delta", dist, what, _norm(x_star), error=x_star_error)
        residuals = [_norm(b - a) for a, b in itertools.pairwise(trajectory)]
        size = 2.0 * max(_norm(x) for x in trajectory)
        note = "r_j = ‖x_{K(j+1)} − x_{Kj}‖₂, the block residuals"
        ev.secants("delta", residuals, "r_{t}/r_{s}", size, note=note)
    x_prev, x_T = trajectory[-2], trajectory[-1]
    H = ev.given.get("hessian_bound")
    if H is not None:
        if hess is not None:
            ev.norm("hessian_bound", *hess)
        g_T = hypergrad.loss_gradient(loss, x_T)
        g_star = hypergrad.loss_gradient(loss, x_star)
        num, den = _norm(g_T - g_star), dist[-1]
        if den > 0:
            scale = _norm(g_T) + _norm(g_star) + max(H, num / den) * (_norm(x_T) + _norm(x_star))
            what = "‖∂ₓL(x_{KT}) − ∂ₓL(x̂)‖₂/‖x_{KT} − x̂‖₂"
            ev.secant("hessian_bound", num, den, what, scale)
    L_theta = ev.given.get("lipschitz_theta")
    if L_theta is not None and dist[-2] > 0:
        num, den = consts["L_theta"] * dist[-2], dist[-2]
        scale = consts["dtheta_star"] + consts["dtheta_prev"]
        scale += max(L_theta, consts["L_theta"]) * (_norm(x_prev) + _norm(x_star))
        what = "‖∂_θΦ_K(x_{K(T−1)}) − ∂_θΦ_K(x̂)‖₂/‖x_{K(T−1)} − x̂‖₂"
        ev.secant("lipschitz_theta", num, den, what, scale)
    return ev


@reuse_jacobians()  # ∂_θΦ_K at x̂ and at x_{K(T−1)}: each computed once per call
def verify(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    loss: Loss,
    K: int = 10,
    T: int = 10,
    *,
    P: int = 5,
    delta: float | None = None,
    x_star: torch.Tensor | None = None,
    solve_tol: float = 1e-12,
    generator: torch.Generator | None = None,
    lipschitz_theta: float | None = None,
    hessian_bound: float | None = None,
    lipschitz_x: float | None = None,
) -> Report:
    r"""Check Theorem 1, Lemma 1, Theorem 2, Corollary 1 and the Neumann bound on one problem.

    Parameters
    ----------
    step, theta, x0, loss
        The map φ(x, θ), its parameters, the initial point and the outer loss (float64).
    K, T, P
        Block length, restarts, Neumann truncation.
    delta
        Analytic δ_K (an upper bound of the Lipschitz constant of Φ_K, e.g. ω(τ)^K). When
        omitted, Lemma 1 and the Neumann bound use ‖∂_xΦ_K(x̂)‖₂ (all that Lemma 2 needs;
        certified when computed by dense SVD, n ≤ 4096), while Theorem 1, Theorem 2 and
        Corollary 1 are drawn with the largest measured ‖∂_xΦ_K‖₂ over x̂ and the trajectory
        and get no verdict (``holds`` None): a local norm is not a Lipschitz constant of a
        nonlinear map.
    x_star
        The fixed point, if known; otherwise computed to float64 precision.
    lipschitz_theta, hessian_bound, lipschitz_x
        Constants of the a-posteriori certificates (``hypergrad.estimate``, section C of
        ``docs/findings.md``): L_θ of Assumption 2 and the Lipschitz constants of ∂_xL and
        ∂_xΦ_K. With ``delta`` they give ``certificates`` (a bound on each estimator's error
        computed without x̂) next to the a-priori bounds; the frame's ``bound/observed`` is the
        tightness of each.

    Notes
    -----
    Every constant is exact at the points the proofs use (dense SVDs, exact secant ratios,
    see :mod:`retune_suite.bounds.constants`) or marked estimated; ``holds`` allows only a rounding
    margin
    of 1e3 float64 ulps of the magnitudes compared. Beyond n = ``DENSE_LIMIT`` the reference is
    the matrix-free DEQ solve (its error bounded with a given δ_K), ``hessian_bound`` stands
    for ‖∂xxL(x̂)‖ (an upper estimate) when given, and with a given δ_K the local norms
    ``delta_measured*`` are not computed (NaN). ∂_θΦ_K is dense at every size (forward mode in
    chunks); each point's matrix is computed once per call. Between ``EAGER_DENSE_LIMIT``
    (256) and ``DENSE_LIMIT`` the dense n×n matrices (∂ₓΦ_K, the Hessian) are taken only where
    they decide something the given constants do not (:data:`EAGER_DENSE_LIMIT`): every
    verdict is the one the all-dense path gives, and the constant ``reference`` says which
    DEQ gradient the errors are measured from.

    A given ``delta``, ``hessian_bound`` or ``lipschitz_theta`` that a measurement refutes
    (a local ‖∂_xΦ_K‖₂, a secant of Φ_K along the trajectory, ‖∂xxL(x̂)‖₂ or a secant of
    ∂_xL, the secant L_θ: each a lower bound of what the constant bounds) leaves every verdict
    and certificate that uses it None, the measurement in ``reasons`` and ``refuted``
    (:mod:`retune_suite.operators.refutation`, ``docs/findings.md`` "Refuted constants").

    Examples
    --------
    >>> import torch
    >>> from retune_suite import bounds
    >>> step = lambda x, th: th * x + 1.0
    >>> loss = lambda x: 0.5 * ((x - 2.0) ** 2).sum()
    >>> th, x0 = torch.tensor([0.5], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    >>> r = bounds.verify(step, th, x0, loss, K=1, T=3, delta=0.5)
    >>> round(r.errors["retune"], 12), round(r.bounds["theorem2"], 12), r.holds["theorem2"]
    (0.375, 0.375, True)
    """
    check_count(K, "K")
    check_count(T, "T")
    check_count(P, "P")
    check_point(x0, "x0", theta)
    if x0.dtype != torch.float64:
        raise InvalidInputError(
            f"verify checks the statements in float64 and x0 has dtype {x0.dtype}: pass "
            "x0.double() and θ in float64 (a float32 fixed point and rounding margin would "
            "hide or fake violations of 1e-4)."
        )
    if delta is not None and not (isinstance(delta, int | float) and 0 <= delta < 1):
        raise InvalidInputError(
            f"delta must be a Lipschitz constant of Φ_K in [0, 1), got {delta!r}: pass an "
            "analytic δ_K (e.g. ω(τ)^K for forward-backward), or None to measure it."
        )
    C.check_verify_memory(x0, theta)  # the dense ∂_θΦ_K fits, or refuse before any work
    Phi = unroll(step, K)
    eps = torch.finfo(torch.float64).eps

    if x_star is None:
        # x̂ to float64 precision relative to itself (atol=0): the statements are checked at
        # every scale, and a fixed point near 0 known only to ulps of ‖x0‖ fakes violations
        fp = fixed_point(step, theta, x0, K, atol=0.0)
        x_star, fp_blocks = fp.x, fp.stats.blocks
    else:
        check_point(x_star, "x_star", theta)
        if x_star.shape != x0.shape:
            raise InvalidInputError(
                f"x_star has shape {tuple(x_star.shape)} and x0 {tuple(x0.shape)}: they must match."
            )
        fp_blocks = 0
    with torch.no_grad():
        trajectory = [x0.detach()]
        for _ in range(T):
            trajectory.append(Phi(trajectory[-1], theta))
    x_prev, x_T = trajectory[-2], trajectory[-1]

    n = x0.numel()
    dense = n <= hypergrad.DENSE_LIMIT  # dense matrices allowed: up front, or where they decide
    # every dense quantity up front: where cheap, or with no δ (EAGER_DENSE_LIMIT)
    eager = dense and (n <= EAGER_DENSE_LIMIT or delta is None)
    lin = hypergrad.linearise(step, theta, x_star, K)  # one graph of Φ_K at x̂ for all four
    g_solve = hypergrad.deq_solve(step, theta, x_star, loss, K, tol=solve_tol, lin=lin)
    # The dense reference up front where eager; else only if the solve's own error (bounded
    # with the given δ) leaves a verdict open (EAGER_DENSE_LIMIT).
    exact_reference = eager
    gradients = {
        "deq": g_solve,
        "deq_solve": g_solve,
        "jfb": hypergrad.jfb(step, theta, x_star, loss, K, lin=lin),
        "neumann": hypergrad.deq_neumann(step, theta, x_star, loss, K, P, lin=lin),
        "retune": hypergrad.retune(step, theta, x0, loss, K, T),
        "unrolled": hypergrad.unrolled(step, theta, x0, loss, K, T),
    }
    errors: dict[str, float] = {}
    scale: dict[str, float] = {}

    def reference(g_deq: Theta) -> None:
        """Take ``g_deq`` as the reference g: the errors and their rounding scales."""
        gradients["deq"] = g_deq
        ref = _vector(g_deq)
        errors.clear()
        errors.update({k: _norm(_vector(g) - ref) for k, g in gradients.items() if k != "deq"})
        scale.clear()
        scale.update({k: _norm(_vector(g)) + _norm(ref) for k, g in gradients.items()})

    def dense_reference() -> str:
        reference(hypergrad.deq_exact(step, theta, x_star, loss, K, lin=lin))
        return "deq_exact (dense ∂ₓΦ_K(x̂), direct solve)"

    if exact_reference:
        reference_source = dense_reference()
    else:
        reference(g_solve)
        reference_source = f"deq_solve (GMRES to {solve_tol:g}, its error bounded with δ_K)"

    # The local norms ‖∂ₓΦ_K‖₂ at x̂ and along the trajectory (see EAGER_DENSE_LIMIT): dense
    # SVDs where eager, power iterations beyond DENSE_LIMIT with no δ, none where δ is given
    # and n > EAGER_DENSE_LIMIT (they only check δ there, which products do).
    svd_star = eager
    star_how = "dense SVD" if svd_star else "power iteration, a lower estimate"
    local: dict[str, float] = {}  # what was measured -> a lower bound (or the exact value)
    d_traj: list[float] = []
    if svd_star or delta is None:
        d_star = C.delta_measured(
            Phi, x_star, theta, method="dense" if svd_star else "power", generator=generator
        )
        local["‖∂ₓΦ_K(x̂)‖₂" + ("" if svd_star else f" ({star_how})")] = d_star
        if eager:
            path_how = "dense SVD"
            d_traj = [C.delta_measured(Phi, x, theta, method="dense") for x in trajectory[:-1]]
            labels = [f"‖∂ₓΦ_K(x_{{K·{t}}})‖₂" for t in range(T)]
        else:  # no δ, n > DENSE_LIMIT
            path_how = star_how
            d_traj = [
                C.delta_measured(Phi, x, theta, method="power", generator=generator)
                for x in trajectory[:-1]
            ]
            labels = [f"‖∂ₓΦ_K(x_{{K·{t}}})‖₂ ({star_how})" for t in range(T)]
        local.update(zip(labels, d_traj, strict=True))
        d_path = max([d_star, *d_traj])
    elif dense:
        # δ is given (n > EAGER_DENSE_LIMIT): a local norm enters no bound and only checks δ,
        # which the products ∂ₓΦ_K(x)ᵀv at x̂ and at each restart do (_evidence)
        d_star = d_path = math.nan
        star_how = path_how = (
            "not computed (δ given: products ∂ₓΦ_K(x)ᵀv at x̂ and at each restart check it)"
        )
    else:
        # δ_K is given and n > DENSE_LIMIT: the local norms would only be reported, at T + 1
        # power iterations of Φ_K (an hour at 256×256 for K = 10, T = 20), so they are not run.
        d_star = d_path = math.nan
        path_how = "not computed"
    if delta is None:
        delta_lip, lip_source = (
            d_path,
            f"measured (max of ‖∂xΦ_K‖ over x̂ and the trajectory, {path_how})",
        )
        delta_loc, loc_source = d_star, f"measured ‖∂xΦ_K(x̂)‖ ({star_how})"
    else:
        delta_lip = delta_loc = float(delta)
        lip_source = loc_source = "analytic (given)"
    if not delta_lip < 1:
        raise NotContractiveError(
            f"δ_K = {delta_lip:.6g} ≥ 1 ({lip_source}): Φ_K is not a contraction, so no bound "
            "applies; reduce the step size or increase K."
        )
    dist = [_norm(x - x_star) for x in trajectory]
    grad_loss = _norm(hypergrad.loss_gradient(loss, x_star))
    # ‖∂xxL(x̂)‖₂ (the printed Theorem 2 only): exact where cheap, or where it decides that
    # verdict alone (δ given, no H); with a given H, hess_low ≤ ‖∂xxL(x̂)‖₂ ≤ H and the exact
    # value later only if neither end decides the verdict (EAGER_DENSE_LIMIT); with neither δ
    # nor H, Theorem 2 gets no verdict, so a power iteration.
    hess_low: float | None = None
    hess_measured: tuple[float, str] | None = None
    if eager or (dense and hessian_bound is None):
        hess, hess_source = C.hessian_norm(loss, x_star), "dense Hessian, SVD"
        hess_measured = (hess, "‖∂ₓₓL(x̂)‖₂")
    elif hessian_bound is not None:
        # a Lipschitz constant H of ∂xL bounds ‖∂xxL(x̂)‖: a proven upper estimate
        hess, hess_source = float(hessian_bound), "given (hessian_bound, an upper bound)"
        if dense:
            hess_low = C.hessian_power_norm(loss, x_star, generator=generator)
            hess_measured = (hess_low, "‖∂ₓₓL(x̂)‖₂ (power iteration, a lower estimate)")
    else:
        hess = C.hessian_power_norm(loss, x_star, generator=generator)
        hess_source = "power iteration, lower estimate"
    consts: dict[str, Any] = {
        "delta": delta_lip,
        "delta_source": lip_source,
        "delta_local": delta_loc,
        "delta_local_source": loc_source,
        "delta_analytic": float(delta) if delta is not None else float("nan"),
        "delta_measured": d_star,
        "delta_measured_path": d_path,
        "delta_measured_source": path_how,
        "grad_loss": grad_loss,
        "dtheta_star": C.dtheta_norm(Phi, x_star, theta),
        "dtheta_prev": C.dtheta_norm(Phi, x_prev, theta),
        "L_theta": C.lipschitz_theta(Phi, x_star, x_prev, theta),
        "dist0": dist[0],
        "dist_T": dist[-1],
        "hess_loss": hess,
        "hess_loss_source": hess_source,
        "loss_secant": C.loss_gradient_secant(loss, x_star, x_T),
        "taylor_remainder": C.taylor_remainder(loss, x_star, x_T),
        "fixed_point_blocks": fp_blocks,
        "fixed_point_residual": _norm(Phi(x_star, theta).detach() - x_star),
        "reference": reference_source,
    }
    # ‖x̂_c − x̂‖ ≤ s/(1 − δ) (Lemma A of docs/findings.md C) for the computed x̂_c, s its residual
    x_star_error = consts["fixed_point_residual"] / (1.0 - delta_lip)
    evidence = _evidence(
        {"delta": delta, "hessian_bound": hessian_bound, "lipschitz_theta": lipschitz_theta},
        trajectory=trajectory,
        x_star=x_star,
        dist=dist,
        local=local,
        hess=hess_measured,
        consts=consts,
        loss=loss,
        lin=None if eager or delta is None else lin,
        x_star_error=x_star_error,
        linearise_at=(
            (lambda x: hypergrad.Linearisation(step, theta, x, K))
            if dense and not eager and delta is not None
            else None
        ),
    )
    c = consts
    compared = {
        "theorem1": "dist_T",
        "lemma1": "jfb",
        f"neumann_P{P}": "neumann",
        "theorem2": "retune",
        "theorem2_corrected": "retune",
    }
    target = _mse_target(loss, x_star, [x0, x_T, trajectory[len(trajectory) // 2]])
    consts["loss_is_mse"] = target is not None
    residual = None
    if target is not None:
        residual = _norm(x_star - target)
        compared["corollary1"] = compared["corollary1_corrected"] = "retune"
    # Beyond DENSE_LIMIT the reference is deq_solve: its true adjoint residual ≤ solve_tol·‖∂xL‖
    # gives ‖g_solve − g‖ ≤ ‖∂θΦ_K(x̂)‖ solve_tol ‖∂xL(x̂)‖ / (1 − δ_K) with a certified δ_K.
    if exact_reference:
        uncertainty = 0.0
    elif delta is not None:
        uncertainty = c["dtheta_star"] * solve_tol * grad_loss / (1.0 - float(delta))
    else:
        uncertainty = math.inf
    # A local norm above δ by less than the absolute floor (δ tiny): δ is refuted for a bound
    # when the measured value in its place moves the bound beyond the bound's own allowance.
    close = evidence.close.get("delta") if "delta" not in evidence.refuted else None
    if close is not None and not close.measured < 1:
        evidence.refuted["delta"], close = close, None
    estimates: dict[tuple[str, float], hypergrad.Estimate] = {}

    def certificate(name: str, d: float, extra: dict) -> hypergrad.Estimate:
        if (name, d) not in estimates:  # computed once, whichever reference judges it
            estimates[name, d] = hypergrad.estimate(
                {"neumann": "deq_neumann"}.get(name, name),
                step,
                theta,
                x0,
                loss,
                K=K,
                delta=d,
                lipschitz_theta=lipschitz_theta,
                hessian_bound=hessian_bound,
                lipschitz_x=lipschitz_x,
                generator=generator,
                **extra,
            )
        return estimates[name, d]

    def conclude() -> _Conclusion:
        """Every bound, verdict and certificate with the reference and ‖∂xxL(x̂)‖₂ as they
        stand; ``pending`` names what a dense computation would decide ("reference",
        "hessian")."""
        out = _Conclusion()
        out.bounds = bounds = _bounds(delta_lip, delta_loc, T, P, grad_loss, c, residual)
        # What each bound needs certified. A local ‖∂xΦ_K‖ is a Lipschitz constant of Φ_K only
        # for an affine map, which verify cannot certify: with delta=None, no verdict on them.
        lipschitz = [] if delta is not None else [f"δ_K is {lip_source}, not a Lipschitz constant"]
        local_needs = [] if (delta is not None or svd_star) else [f"δ_K is {loc_source}"]
        exact_hessian = c["hess_loss_source"] == "dense Hessian, SVD"
        hessian = (
            [] if exact_hessian or hessian_bound is not None else [f"‖∂xxL(x̂)‖ is by {hess_source}"]
        )
        needs = {
            "theorem1": lipschitz,
            "lemma1": local_needs,
            f"neumann_P{P}": local_needs,
            "theorem2": lipschitz + hessian,
            "theorem2_corrected": lipschitz,
            "corollary1": lipschitz,
            "corollary1_corrected": lipschitz,
        }
        # The given constants each bound uses: a refuted one leaves it without a verdict.
        uses = {name: ["delta"] for name in bounds}
        if not exact_hessian:  # ‖∂xxL(x̂)‖ is the given H (or a power iteration)
            uses["theorem2"].append("hessian_bound")
        alternative, moved_by_close = {}, False
        if close is not None:
            alternative = _bounds(close.measured, close.measured, T, P, grad_loss, c, residual)
        holds, reasons = out.holds, out.reasons
        for name, bound in bounds.items():
            quantity = compared[name]
            refuted = evidence.reason(*uses[name])
            if close is not None and not refuted:
                if quantity == "dist_T":
                    slack = FP_ULPS * eps * (dist[0] + _norm(x_star))
                    moved = any(
                        S.theorem1(close.measured, t, dist[0]) - S.theorem1(delta_lip, t, dist[0])
                        > slack
                        for t in range(len(dist))
                    )
                else:
                    moved = alternative[name] - bound > FP_ULPS * eps * (scale[quantity] + bound)
                refuted = str(close) if moved else ""
                moved_by_close |= moved
            if refuted:
                holds[name], reasons[name] = None, refuted
                continue
            missing = list(needs[name])
            if quantity == "dist_T":
                # Theorem 1 is checked at every t = 0..T, each with its own rounding allowance.
                slack = FP_ULPS * eps * (dist[0] + _norm(x_star))
                verdicts = [
                    _verdict(d, S.theorem1(delta_lip, t, dist[0]), slack, 0.0, missing)
                    for t, d in enumerate(dist)
                ]
                values = [v for v, _ in verdicts]
                # False only beyond x̂'s own error too (distances to a computed x̂, see evidence)
                beyond = [
                    d - (1.0 + delta_lip**t) * x_star_error
                    > S.theorem1(delta_lip, t, dist[0]) + slack
                    for t, d in enumerate(dist)
                ]
                if False in values and not any(beyond):
                    holds[name], reasons[name] = (
                        None,
                        (
                            f"no verdict: the violation is within x̂'s own error "
                            f"({x_star_error:.2e}, its fixed-point residual over 1 − δ_K)"
                        ),
                    )
                elif False in values:
                    holds[name], reasons[name] = False, ""
                elif all(v is True for v in values):
                    holds[name], reasons[name] = True, ""
                else:
                    holds[name], reasons[name] = None, next(r for v, r in verdicts if v is None)
            else:
                if not math.isfinite(uncertainty) and not missing:
                    missing.append(
                        "the DEQ reference is a matrix-free solve and δ_K is not certified, so "
                        "its own error is not bounded"
                    )
                slack = FP_ULPS * eps * (scale[quantity] + bound)
                verdict = _verdict(errors[quantity], bound, slack, uncertainty, missing)
                if name == "theorem2" and hess_low is not None and not missing:
                    # hess_low ≤ ‖∂xxL(x̂)‖₂ ≤ H and the bound increases with it: True with
                    # hess_low or False with H is the verdict with the exact value.
                    low = _bounds(
                        delta_lip, delta_loc, T, P, grad_loss, {**c, "hess_loss": hess_low}, None
                    )["theorem2"]
                    slack_low = FP_ULPS * eps * (scale[quantity] + low)
                    at_low = _verdict(errors[quantity], low, slack_low, uncertainty, [])
                    if at_low[0] is True:
                        verdict = at_low
                    elif verdict[0] is not False:
                        if STRADDLE in verdict[1] or STRADDLE in at_low[1]:
                            out.pending.add("reference")
                        out.pending.add("hessian")
                        verdict = (
                            None,
                            f"no verdict: ‖∂ₓₓL(x̂)‖₂ is known between {hess_low:.6g} (power "
                            f"iteration) and the given H = {hess:.6g}, and the error lies "
                            "between the bounds they give",
                        )
                holds[name], reasons[name] = verdict
                if STRADDLE in verdict[1]:
                    out.pending.add("reference")
        if delta is not None and lipschitz_theta is not None and hessian_bound is not None:
            runs = {
                "retune": dict(T=T),
                "jfb": dict(x_star=x_star),
                "neumann": dict(x_star=x_star, P=P),
                "deq_solve": dict(x_star=x_star, tol=solve_tol),
            }
            refuted = evidence.reason("delta", "lipschitz_theta", "hessian_bound")
            certificates, status, cert_holds = out.certificates, out.status, out.cert_holds
            for name, extra in runs.items():
                if refuted:  # every certificate uses δ, L_θ and H
                    certificates[name], cert_holds[name] = None, None
                    status[name] = f"certificate none: {refuted}"
                    continue
                est = certificate(name, float(delta), extra)
                certificates[name] = est.certificate
                source = est.certificate_source
                certified = source["status"] == "certified" and est.certificate is not None
                if certified and close is not None:  # as for the bounds: does close move it?
                    other = certificate(name, close.measured, extra).certificate
                    slack = FP_ULPS * eps * (scale[name] + est.certificate)
                    if other is None or other - est.certificate > slack:
                        certificates[name], cert_holds[name] = None, None
                        status[name] = f"certificate none: {close}"
                        moved_by_close = True
                        continue
                reason = f"certificate {source['status']}: {source.get('reason', '')}".strip()
                status[name] = "certified" if certified else reason
                if certified:
                    # the same rounding margin and reference uncertainty as for the bounds
                    slack = FP_ULPS * eps * (scale[name] + est.certificate)
                    cert_holds[name], why = _verdict(
                        errors[name], est.certificate, slack, uncertainty, []
                    )
                    if STRADDLE in why:
                        out.pending.add("reference")
                else:
                    cert_holds[name] = None
        out.refuted = {name: str(r) for name, r in evidence.refuted.items()}
        if moved_by_close and close is not None:
            out.refuted["delta"] = f"{close} (for the bounds it moves beyond their allowance)"
        return out

    result = conclude()
    if dense and result.pending:  # a dense computation decides what is open: take it
        if "reference" in result.pending and not exact_reference:
            exact_reference, uncertainty = True, 0.0
            consts["reference"] = dense_reference()
        if "hessian" in result.pending and hess_low is not None:
            hess, hess_low = C.hessian_norm(loss, x_star), None
            consts["hess_loss"], consts["hess_loss_source"] = hess, "dense Hessian, SVD"
            evidence.norm("hessian_bound", hess, "‖∂ₓₓL(x̂)‖₂")
        result = conclude()
    return Report(
        K=K,
        T=T,
        P=P,
        x_star=x_star,
        gradients=gradients,
        errors=errors,
        bounds=result.bounds,
        holds=result.holds,
        constants=consts,
        compared=compared,
        reasons=result.reasons,
        certificates=result.certificates,
        certificate_status=result.status,
        certificate_holds=result.cert_holds,
        refuted=result.refuted,
    )


@dataclass
class _Conclusion:
    """What :func:`verify` concludes from its measurements (its inner ``conclude``)."""

    bounds: dict[str, float] = field(default_factory=dict)
    holds: dict[str, bool | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    certificates: dict[str, float | None] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    cert_holds: dict[str, bool | None] = field(default_factory=dict)
    refuted: dict[str, str] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
