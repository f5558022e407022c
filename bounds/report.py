"""``verify``: every estimator, every constant and every statement on one problem."""

from __future__ import annotations

import itertools
import math
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
    return None, (
        f"no verdict: |error − bound| is within the DEQ reference's own error "
        f"({uncertainty:.2e}, from the adjoint solve's tolerance)"
    )


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
"""Products ∂ₓΦ_K(x̂)ᵀv checked against a given δ beyond ``DENSE_LIMIT`` (where ‖∂ₓΦ_K(x̂)‖₂
is not computed): a few backward passes of Φ_K, against the GMRES solve's tens to hundreds."""


def _evidence(
    given: dict[str, float | None],
    *,
    trajectory: list[torch.Tensor],
    x_star: torch.Tensor,
    dist: list[float],
    local: dict[str, float],
    hess: float | None,
    consts: dict[str, Any],
    loss: Loss,
    lin: hypergrad.Linearisation | None,
    x_star_error: float,
) -> Evidence:
    """The measurements of :func:`verify` that can refute a given δ, H or L_θ
    (:mod:`retune_suite.operators.refutation`): every one is already computed, except the
    few products ∂ₓΦ_K(x̂)ᵀv when n > ``DENSE_LIMIT`` (``lin`` given)."""
    ev = Evidence(given, x_star.dtype)
    if "delta" in ev.given:
        for what, value in local.items():  # exact (dense SVD) local norms
            ev.norm("delta", value, what)
        if lin is not None:
            v = hypergrad.loss_gradient(loss, x_star)
            what = "‖∂ₓΦ_K(x̂)ᵀv_{p}‖₂/‖v_{p}‖₂ (v_0 = ∂ₓL(x̂), v_{{p+1}} = ∂ₓΦ_K(x̂)ᵀv_p)"
            ev.adjoint_powers("delta", lin.adjoint_x, v, ADJOINT_STEPS, what)
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
            ev.norm("hessian_bound", hess, "‖∂ₓₓL(x̂)‖₂")
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
    chunks); each point's matrix is computed once per call.

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

    dense = x0.numel() <= hypergrad.DENSE_LIMIT
    lin = hypergrad.linearise(step, theta, x_star, K)  # one graph of Φ_K at x̂ for all four
    g_solve = hypergrad.deq_solve(step, theta, x_star, loss, K, tol=solve_tol, lin=lin)
    g_deq = hypergrad.deq_exact(step, theta, x_star, loss, K, lin=lin) if dense else g_solve
    gradients = {
        "deq": g_deq,
        "deq_solve": g_solve,
        "jfb": hypergrad.jfb(step, theta, x_star, loss, K, lin=lin),
        "neumann": hypergrad.deq_neumann(step, theta, x_star, loss, K, P, lin=lin),
        "retune": hypergrad.retune(step, theta, x0, loss, K, T),
        "unrolled": hypergrad.unrolled(step, theta, x0, loss, K, T),
    }
    ref = _vector(g_deq)
    errors = {k: _norm(_vector(g) - ref) for k, g in gradients.items() if k != "deq"}
    scale = {k: _norm(_vector(g)) + _norm(ref) for k, g in gradients.items()}

    local_how = "dense SVD" if dense else "power iteration, a lower estimate"
    d_traj: list[float] = []
    if delta is None or dense:
        d_star = C.delta_measured(Phi, x_star, theta, generator=generator)
        d_traj = [C.delta_measured(Phi, x, theta, generator=generator) for x in trajectory[:-1]]
        d_path = max([d_star, *d_traj])
    else:
        # δ_K is given and n > DENSE_LIMIT: the local norms would only be reported, at T + 1
        # power iterations of Φ_K (an hour at 256×256 for K = 10, T = 20), so they are not run.
        d_star = d_path = math.nan
    if delta is None:
        delta_lip, lip_source = (
            d_path,
            (f"measured (max of ‖∂xΦ_K‖ over x̂ and the trajectory, {local_how})"),
        )
        delta_loc, loc_source = d_star, f"measured ‖∂xΦ_K(x̂)‖ ({local_how})"
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
    if dense:
        hess, hess_source = C.hessian_norm(loss, x_star), "dense Hessian, SVD"
    elif hessian_bound is not None:
        # a Lipschitz constant H of ∂xL bounds ‖∂xxL(x̂)‖: a proven upper estimate
        hess, hess_source = float(hessian_bound), "given (hessian_bound, an upper bound)"
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
    }
    # ‖x̂_c − x̂‖ ≤ s/(1 − δ) (Lemma A of docs/findings.md C) for the computed x̂_c, s its residual
    x_star_error = consts["fixed_point_residual"] / (1.0 - delta_lip)
    local = {}
    if dense:  # exact local norms (dense SVD), each a lower bound of a Lipschitz constant
        local = {"‖∂ₓΦ_K(x̂)‖₂": d_star}
        local.update({f"‖∂ₓΦ_K(x_{{K·{t}}})‖₂": d for t, d in enumerate(d_traj)})
    evidence = _evidence(
        {"delta": delta, "hessian_bound": hessian_bound, "lipschitz_theta": lipschitz_theta},
        trajectory=trajectory,
        x_star=x_star,
        dist=dist,
        local=local,
        hess=hess if dense else None,
        consts=consts,
        loss=loss,
        lin=None if dense or delta is None else lin,
        x_star_error=x_star_error,
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
    bounds = _bounds(delta_lip, delta_loc, T, P, grad_loss, c, residual)

    # What each bound needs certified. A local ‖∂xΦ_K‖ is a Lipschitz constant of Φ_K only
    # for an affine map, which verify cannot certify: with delta=None, no verdict on them.
    lipschitz = [] if delta is not None else [f"δ_K is {lip_source}, not a Lipschitz constant"]
    local = [] if (delta is not None or dense) else [f"δ_K is {loc_source}"]
    hessian = [] if dense or hessian_bound is not None else [f"‖∂xxL(x̂)‖ is by {hess_source}"]
    needs = {
        "theorem1": lipschitz,
        "lemma1": local,
        f"neumann_P{P}": local,
        "theorem2": lipschitz + hessian,
        "theorem2_corrected": lipschitz,
        "corollary1": lipschitz,
        "corollary1_corrected": lipschitz,
    }
    # Beyond DENSE_LIMIT the reference is deq_solve: its true adjoint residual ≤ solve_tol·‖∂xL‖
    # gives ‖g_solve − g‖ ≤ ‖∂θΦ_K(x̂)‖ solve_tol ‖∂xL(x̂)‖ / (1 − δ_K) with a certified δ_K.
    if dense:
        uncertainty = 0.0
    elif delta is not None:
        uncertainty = c["dtheta_star"] * solve_tol * grad_loss / (1.0 - float(delta))
    else:
        uncertainty = math.inf
    # The given constants each bound uses: a refuted one leaves it without a verdict.
    uses = {name: ["delta"] for name in bounds}
    if not dense:  # ‖∂xxL(x̂)‖ is then the given H (or a power iteration)
        uses["theorem2"].append("hessian_bound")
    # A local norm above δ by less than the absolute floor (δ tiny): δ is refuted for a bound
    # when the measured value in its place moves the bound beyond the bound's own allowance.
    close = evidence.close.get("delta") if "delta" not in evidence.refuted else None
    if close is not None and not close.measured < 1:
        evidence.refuted["delta"], close = close, None
    alternative, moved_by_close = {}, False
    if close is not None:
        alternative = _bounds(close.measured, close.measured, T, P, grad_loss, c, residual)
    holds: dict[str, bool | None] = {}
    reasons: dict[str, str] = {}
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
                d - (1.0 + delta_lip**t) * x_star_error > S.theorem1(delta_lip, t, dist[0]) + slack
                for t, d in enumerate(dist)
            ]
            if False in values and not any(beyond):
                holds[name], reasons[name] = (
                    None,
                    (
                        f"no verdict: the violation is within x̂'s own error ({x_star_error:.2e}, "
                        "its fixed-point residual over 1 − δ_K)"
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
                    "the DEQ reference is a matrix-free solve and δ_K is not certified, so its "
                    "own error is not bounded"
                )
            slack = FP_ULPS * eps * (scale[quantity] + bound)
            holds[name], reasons[name] = _verdict(
                errors[quantity], bound, slack, uncertainty, missing
            )
    certificates: dict[str, float | None] = {}
    status: dict[str, str] = {}
    cert_holds: dict[str, bool | None] = {}
    if delta is not None and lipschitz_theta is not None and hessian_bound is not None:
        runs = {
            "retune": dict(T=T),
            "jfb": dict(x_star=x_star),
            "neumann": dict(x_star=x_star, P=P),
            "deq_solve": dict(x_star=x_star, tol=solve_tol),
        }
        methods = {"neumann": "deq_neumann"}
        refuted = evidence.reason("delta", "lipschitz_theta", "hessian_bound")

        def certificate(name: str, d: float, extra: dict) -> hypergrad.Estimate:
            return hypergrad.estimate(
                methods.get(name, name),
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
                cert_holds[name], _ = _verdict(
                    errors[name], est.certificate, slack, uncertainty, []
                )
            else:
                cert_holds[name] = None
    refuted_constants = {name: str(r) for name, r in evidence.refuted.items()}
    if moved_by_close and close is not None:
        refuted_constants["delta"] = f"{close} (for the bounds it moves beyond their allowance)"
    return Report(
        K=K,
        T=T,
        P=P,
        x_star=x_star,
        gradients=gradients,
        errors=errors,
        bounds=bounds,
        holds=holds,
        constants=consts,
        compared=compared,
        reasons=reasons,
        certificates=certificates,
        certificate_status=status,
        certificate_holds=cert_holds,
        refuted=refuted_constants,
    )
