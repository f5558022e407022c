"""Hypothesis strategies that build valid instances: the hypotheses hold by construction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from retune_suite.operators.maps import problems


@dataclass(frozen=True)
class Instance:
    """A contractive step with analytic δ_K, an initial point and an MSE loss."""

    name: str
    step: Callable
    theta: torch.Tensor
    x0: torch.Tensor
    loss: Callable
    delta: Callable[[int], float]
    K: int
    T: int


def affine(
    theta: list[float], b: list[float], x0: list[float], xbar: list[float], K: int, T: int
) -> Instance:
    """φ(x, θ) = θ ⊙ x + b with |θ_i| < 1: δ_K = max|θ_i|^K exactly, L_θ exact."""
    th = torch.tensor(theta, dtype=torch.float64)
    bt = torch.tensor(b, dtype=torch.float64)
    target = torch.tensor(xbar, dtype=torch.float64)
    rate = float(th.abs().max())

    def step(x, t):
        return t * x + bt

    def loss(x):
        return 0.5 * ((x - target) ** 2).sum()

    return Instance(
        f"affine(θ={theta}, b={b}, x0={x0}, x̄={xbar})",
        step,
        th,
        torch.tensor(x0, dtype=torch.float64),
        loss,
        lambda k: rate**k,
        K,
        T,
    )


coordinate = st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False)


@st.composite
def affine_instances(draw, max_n: int = 4) -> Instance:
    n = draw(st.integers(1, max_n))
    vec = st.lists(coordinate, min_size=n, max_size=n)
    theta = draw(st.lists(st.floats(-0.95, 0.95, allow_subnormal=False), min_size=n, max_size=n))
    return affine(
        theta, draw(vec), draw(vec), draw(vec), draw(st.integers(1, 10)), draw(st.integers(1, 20))
    )


@st.composite
def problem_instances(draw, max_n: int = 64) -> Instance:
    prior = draw(st.sampled_from(problems.PRIORS))
    d = draw(st.integers(1, 8))
    n = d * draw(st.integers(1, max(1, max_n // d)))
    mu = draw(st.floats(0.05, 0.9))
    L = draw(st.floats(mu, 2.0))
    rho = draw(st.sampled_from([0.0, 0.01])) if mu > 0.01 else 0.0
    p = problems.make_problem(
        prior,
        n=n,
        d=d,
        mu=mu,
        L=L,
        rho=rho,
        tau=draw(st.sampled_from(["optimal", "1.95/L", "1/L"])),
        log_weight=draw(st.floats(-4.0, 0.0)),
        seed=draw(st.integers(0, 2**16)),
    )
    return Instance(
        f"{prior}(n={n}, d={d}, μ={mu:.3g}, L={L:.3g}, ρ={rho}, τ={p.tau:.4g})",
        p.step,
        p.theta,
        p.x0,
        p.loss,
        p.delta,
        draw(st.integers(1, 10)),
        draw(st.integers(1, 20)),
    )


def instances() -> st.SearchStrategy[Instance]:
    """Every family: affine maps and the four priors of :mod:`~retune_suite.maps.problems`."""
    return st.one_of(affine_instances(), problem_instances())
