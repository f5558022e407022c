"""``verify``: every estimator, every constant and every statement on one problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from operators import hypergrad
from operators.errors import NotContractiveError
from operators.iteration import fixed_point, unroll
from operators.theta import Loss, Step, Theta, as_tuple, check_count, check_point

from . import constants as C
from . import statements as S

# Floating-point evaluation allowance for ``holds``: an observed error is a difference of two
# gradients, each computed to ~1e2 ulps of its magnitude (x̂ is exact to 64 ulps), so 1e3 ulps
# of the magnitudes involved separate a true equality (the bound attained) from a violation.
# It is an allowance for rounding, not a loosening of any bound.
FP_ULPS = 1e3


@dataclass
class Report:
    """Everything :func:`verify` measured. ``to_frame`` gives one row per (quantity, bound)."""

    K: int
    T: int
    P: int
    x_star: torch.Tensor
    gradients: dict[str, Theta]
    errors: dict[str, float]
    bounds: dict[str, float]
    holds: dict[str, bool]
    constants: dict[str, Any]
    compared: dict[str, str] = field(default_factory=dict)

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
    """x̄ if L(x) = ½‖x − x̄‖² (checked at the probes, to 1e-12 relative), else None."""
    target = x_star - hypergrad.loss_gradient(loss, x_star)
    for p in probes:
        value = loss(p).item()
        expected = 0.5 * _norm(p - target) ** 2
        if abs(value - expected) > 1e-12 * max(1.0, abs(expected)):
            return None
    return target


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
) -> Report:
    r"""Check Theorem 1, Lemma 1, Theorem 2, Corollary 1 and the Neumann bound on one problem.

    Parameters
    ----------
    step, theta, x0, loss
        The map φ(x, θ), its parameters, the initial point and the outer loss.
    K, T, P
        Block length, restarts, Neumann truncation.
    delta
        Analytic δ_K (an upper bound of the Lipschitz constant of Φ_K, e.g. ω(τ)^K). When
        omitted, the measured max of ‖∂_xΦ_K‖₂ over x̂ and the trajectory is used and the
        report says so: a local estimate, not a certified Lipschitz constant.
    x_star
        The fixed point, if known; otherwise computed to float64 precision.

    Examples
    --------
    >>> import torch, bounds
    >>> step = lambda x, th: th * x + 1.0
    >>> loss = lambda x: 0.5 * ((x - 2.0) ** 2).sum()
    >>> th, x0 = torch.tensor([0.5], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    >>> r = bounds.verify(step, th, x0, loss, K=1, T=3)
    >>> round(r.errors["retune"], 12), round(r.bounds["theorem2"], 12), r.holds["theorem2"]
    (0.375, 0.375, True)
    """
    check_count(K, "K")
    check_count(T, "T")
    check_count(P, "P")
    check_point(x0, "x0", theta)
    Phi = unroll(step, K)
    eps = torch.finfo(x0.dtype).eps

    if x_star is None:
        fp = fixed_point(step, theta, x0, K)
        x_star, fp_blocks = fp.x, fp.stats.blocks
    else:
        check_point(x_star, "x_star", theta)
        fp_blocks = 0
    with torch.no_grad():
        trajectory = [x0.detach()]
        for _ in range(T):
            trajectory.append(Phi(trajectory[-1], theta))
    x_prev, x_T = trajectory[-2], trajectory[-1]

    dense = x0.numel() <= hypergrad.DENSE_LIMIT
    g_solve = hypergrad.deq_solve(step, theta, x_star, loss, K, tol=solve_tol)
    g_deq = hypergrad.deq_exact(step, theta, x_star, loss, K) if dense else g_solve
    gradients = {
        "deq": g_deq,
        "deq_solve": g_solve,
        "jfb": hypergrad.jfb(step, theta, x_star, loss, K),
        "neumann": hypergrad.deq_neumann(step, theta, x_star, loss, K, P),
        "retune": hypergrad.retune(step, theta, x0, loss, K, T),
        "unrolled": hypergrad.unrolled(step, theta, x0, loss, K, T),
    }
    ref = _vector(g_deq)
    errors = {k: _norm(_vector(g) - ref) for k, g in gradients.items() if k != "deq"}
    scale = {k: _norm(_vector(g)) + _norm(ref) for k, g in gradients.items()}

    d_star = C.delta_measured(Phi, x_star, theta, generator=generator)
    d_path = max([d_star] + [C.delta_measured(Phi, x, theta) for x in trajectory[:-1]])
    if delta is None:
        delta_used, source = d_path, "measured (max of ‖∂xΦ_K‖ over x̂ and the trajectory)"
    else:
        delta_used, source = float(delta), "analytic (given)"
    if not delta_used < 1:
        raise NotContractiveError(
            f"δ_K = {delta_used:.6g} ≥ 1 ({source}): Φ_K is not a contraction, so no bound "
            "applies; reduce the step size or increase K."
        )
    dist = [_norm(x - x_star) for x in trajectory]
    grad_loss = _norm(hypergrad.loss_gradient(loss, x_star))
    consts: dict[str, Any] = {
        "delta": delta_used,
        "delta_source": source,
        "delta_analytic": float(delta) if delta is not None else float("nan"),
        "delta_measured": d_star,
        "delta_measured_path": d_path,
        "grad_loss": grad_loss,
        "dtheta_star": C.dtheta_norm(Phi, x_star, theta),
        "dtheta_prev": C.dtheta_norm(Phi, x_prev, theta),
        "L_theta": C.lipschitz_theta(Phi, x_star, x_prev, theta),
        "dist0": dist[0],
        "dist_T": dist[-1],
        "hess_loss": C.hessian_norm(loss, x_star) if dense else float("nan"),
        "hess_loss_sup": C.hessian_sup(loss, x_star, x_T) if dense else float("nan"),
        "fixed_point_blocks": fp_blocks,
        "fixed_point_residual": _norm(Phi(x_star, theta).detach() - x_star),
    }
    c = consts
    bounds = {
        "theorem1": S.theorem1(delta_used, T, c["dist0"]),
        "lemma1": S.lemma1(delta_used, grad_loss, c["dtheta_star"]),
        f"neumann_P{P}": S.neumann(delta_used, P, grad_loss, c["dtheta_star"]),
        "theorem2": S.theorem2(
            delta_used,
            T,
            grad_loss,
            c["dtheta_star"],
            c["dtheta_prev"],
            c["L_theta"],
            c["dist0"],
            c["hess_loss"],
        ),
        "theorem2_corrected": S.theorem2_corrected(
            delta_used,
            T,
            grad_loss,
            c["dtheta_star"],
            c["dtheta_prev"],
            c["L_theta"],
            c["dist0"],
            c["hess_loss_sup"],
        ),
    }
    compared = {
        "theorem1": "dist_T",
        "lemma1": "jfb",
        f"neumann_P{P}": "neumann",
        "theorem2": "retune",
        "theorem2_corrected": "retune",
    }
    target = _mse_target(loss, x_star, [x0, x_T, trajectory[len(trajectory) // 2]])
    consts["loss_is_mse"] = target is not None
    if target is not None:
        residual = _norm(x_star - target)
        args = (
            delta_used,
            T,
            residual,
            c["dtheta_star"],
            c["dtheta_prev"],
            c["L_theta"],
            c["dist0"],
        )
        bounds["corollary1"] = S.corollary1(*args)
        bounds["corollary1_corrected"] = S.corollary1_corrected(*args)
        compared["corollary1"] = compared["corollary1_corrected"] = "retune"

    holds = {}
    for name, bound in bounds.items():
        quantity = compared[name]
        if quantity == "dist_T":
            # Theorem 1 is checked at every t = 0..T, each with its own rounding allowance.
            holds[name] = all(
                d <= S.theorem1(delta_used, t, dist[0]) + FP_ULPS * eps * (dist[0] + _norm(x_star))
                for t, d in enumerate(dist)
            )
        else:
            slack = FP_ULPS * eps * (scale[quantity] + bound)
            holds[name] = errors[quantity] <= bound + slack
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
    )
