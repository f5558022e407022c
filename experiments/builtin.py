"""The built-in exact problems that ``retune-suite verify`` checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from retune_suite.operators.maps import problems


@dataclass(frozen=True)
class Case:
    """A problem ready for :func:`~retune_suite.bounds.verify`; ``K``/``T`` override the CLI's when
    set."""

    name: str
    description: str
    step: Callable
    theta: torch.Tensor
    x0: torch.Tensor
    loss: Callable
    delta: Callable[[int], float]
    K: int | None = None
    T: int | None = None
    lipschitz_theta: Callable[[int], float] | None = None
    """L_θ of Assumption 2 for Φ_K when analytic (then verify reports certificates)."""
    hessian_bound: float | None = None
    """Lipschitz constant of ∂ₓL (1 for ½‖x − x̄‖²)."""


def _scalar(theta: float, b: float, x0: float, xbar: float) -> tuple:
    def step(x: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        return th * x + b

    def loss(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - xbar) ** 2).sum()

    t = torch.tensor([theta], dtype=torch.float64)
    return step, t, torch.tensor([x0], dtype=torch.float64), loss, (lambda K: abs(theta) ** K)


def _scalar_lipschitz_theta(theta: float) -> Callable[[int], float]:
    """Φ_K(x, θ) = θ^K x + b Σ_{i<K} θ^i, so ∂_θΦ_K(x) = Kθ^{K−1} x + const: L_θ = K|θ|^{K−1}."""
    return lambda K: K * abs(theta) ** (K - 1)


def cases(n: int = 16, d: int = 4, seed: int = 0) -> list[Case]:
    """Scalar affine maps, then one random instance of each prior of
    :mod:`~retune_suite.operators.maps.problems`."""
    out = [
        Case(
            "scalar_affine",
            "φ(x,θ) = θx + 1, θ = 1/2, x̄ = 2 = x̂ (README example)",
            *_scalar(0.5, 1.0, 0.0, 2.0),
            lipschitz_theta=_scalar_lipschitz_theta(0.5),
            hessian_bound=1.0,
        ),
        Case(
            "counterexample_thm2",
            "φ(x,θ) = θx, θ = 1/2, x₀ = −1, x̄ = 1, K = T = 1 (finding F1)",
            *_scalar(0.5, 0.0, -1.0, 1.0),
            K=1,
            T=1,
            lipschitz_theta=_scalar_lipschitz_theta(0.5),
            hessian_bound=1.0,
        ),
    ]
    specs = {
        "ridge": dict(rho=0.0),
        "logcosh": dict(rho=0.05),
        "l1": dict(rho=0.05),
        "group_l21": dict(rho=0.05),
    }
    for prior, kw in specs.items():
        p = problems.make_problem(prior, n=n, d=d, mu=0.2, L=1.0, seed=seed, log_weight=-1.5, **kw)
        out.append(
            Case(
                prior,
                f"{prior}: n={n}, d={d}, μ={p.mu:.3g}, L={p.L:.3g}, τ=2/(μ+L)",
                p.step,
                p.theta,
                p.x0,
                p.loss,
                p.delta,
            )
        )
    return out
