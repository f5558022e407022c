"""Checking my own map against the paper, with ``retune_suite.testing``.

A test file as a researcher would drop it into their own project: a forward-backward step
written from scratch (1-D deblurring with a ridge term and a quadratic, TV-like penalty on
first differences, both weights learned), checked with the paper's bounds, against a closed
form, and, with hypothesis, my own ReTune implementation against the suite's on every kind
of contractive map. Run it with::

    python -m pip install "retune-suite[testing]" pytest
    python -m pytest -q examples/test_my_map.py
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retune_suite import hypergrad
from retune_suite.testing import assert_bounds_hold, assert_hypergrad_close
from retune_suite.testing.strategies import exact_instances

DTYPE = torch.float64  # the bounds are checked in float64
LOG_SMOOTH_MAX = 1.0  # the largest smoothness weight exp(θ₁) the tests use


class SmoothDeblur:
    r"""φ(x, θ) = prox_{τ w₀ ½‖·‖²}(x − τ∇f(x)) = (x − τ∇f(x)) / (1 + τ w₀), with
    f(x) = ½‖Ax − y‖² + ½ w₁‖Dx‖², θ = (log w₀, log w₁), A a mild blur (kernel
    [0.1, 0.8, 0.1], spectrum in [0.6, 1]), D first differences.

    ∂ₓφ = (I − τH)/(1 + τw₀) with H = AᵀA + w₁DᵀD symmetric, so one step is ω-Lipschitz with
    ω = max |1 − τλ(H)| / (1 + τw₀), exactly, and Φ_K is ω^K-Lipschitz, exactly.
    """

    def __init__(self, n: int = 12, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        ones = torch.ones(n, dtype=DTYPE)
        self.A = 0.8 * torch.diag(ones) + 0.1 * (torch.diag(ones[1:], 1) + torch.diag(ones[1:], -1))
        self.D = torch.diff(torch.eye(n, dtype=DTYPE), dim=0)  # (Dx)_i = x_{i+1} − x_i
        self.x_true = torch.repeat_interleave(torch.tensor([0.0, 1.0, -0.5], dtype=DTYPE), n // 3)
        noise = 0.05 * torch.randn(n, generator=gen, dtype=DTYPE)
        self.y = self.A @ self.x_true + noise
        # Step size from the computed Lipschitz constant of ∇f, at the largest weight we use.
        L = torch.linalg.eigvalsh(self.hessian(LOG_SMOOTH_MAX)).max().item()
        self.tau = 1.0 / L

    def hessian(self, log_smooth: float) -> torch.Tensor:
        return self.A.T @ self.A + math.exp(log_smooth) * self.D.T @ self.D

    def step(self, x: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        log_ridge, log_smooth = theta
        grad = (x @ self.A.T - self.y) @ self.A + torch.exp(log_smooth) * (x @ self.D.T) @ self.D
        return (x - self.tau * grad) / (1.0 + self.tau * torch.exp(log_ridge))

    def omega(self, theta: tuple[torch.Tensor, torch.Tensor]) -> float:
        """The exact Lipschitz constant of φ(·, θ)."""
        log_ridge, log_smooth = (float(t) for t in theta)
        spectrum = torch.linalg.eigvalsh(self.hessian(log_smooth))
        rate = (1.0 - self.tau * spectrum).abs().max().item()
        return rate / (1.0 + self.tau * math.exp(log_ridge))

    def fixed_point(self, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x̂(θ) in closed form: (AᵀA + w₁DᵀD + w₀I) x̂ = Aᵀy, differentiable in θ."""
        log_ridge, log_smooth = theta
        H = self.A.T @ self.A + torch.exp(log_smooth) * self.D.T @ self.D
        H = H + torch.exp(log_ridge) * torch.eye(len(self.y), dtype=DTYPE)
        return torch.linalg.solve(H, self.A.T @ self.y)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.x_true) ** 2).sum()


MAP = SmoothDeblur()
THETA = (torch.tensor(-2.0, dtype=DTYPE), torch.tensor(-1.0, dtype=DTYPE))
X0 = torch.zeros(12, dtype=DTYPE)


@pytest.mark.parametrize(("K", "T"), [(1, 5), (5, 10)])
def test_paper_bounds_hold_on_my_map(K, T):
    """Theorem 1, Lemma 1, Neumann, Theorem 2 and Corollary 1 (corrected) on my map."""
    delta = MAP.omega(THETA) ** K
    report = assert_bounds_hold(MAP.step, THETA, X0, MAP.loss, K=K, T=T, delta=delta)
    assert report.errors["retune"] > 0  # an honest check: ReTune is not exact at finite T


def test_hypergradients_match_closed_form():
    """The suite's DEQ gradients and AD through a long unrolling equal ∂_θ L(x̂(θ)), x̂ solved
    in closed form and differentiated by autograd (an independent computation)."""
    theta = tuple(t.clone().requires_grad_(True) for t in THETA)
    expected = torch.autograd.grad(MAP.loss(MAP.fixed_point(theta)), theta)
    x_star = MAP.fixed_point(THETA)
    names = ["log_ridge", "log_smooth"]
    # 1e-9: two float64 computations of one quantity through different linear solves.
    for got in (
        hypergrad.deq_exact(MAP.step, THETA, x_star, MAP.loss, K=3),
        hypergrad.deq_solve(MAP.step, THETA, x_star, MAP.loss, K=3, tol=1e-13),
        hypergrad.unrolled(MAP.step, THETA, X0, MAP.loss, K=10, T=60),  # ω^600 ≈ 0
    ):
        assert_hypergrad_close(got, expected, rtol=1e-9, names=names)


def test_no_verdict_without_a_lipschitz_constant():
    """Without delta=, Theorem 1 and 2 use measured norms, which prove nothing: the assertion
    refuses them, unless I accept unverified statements."""
    with pytest.raises(AssertionError, match="no verdict"):
        assert_bounds_hold(MAP.step, THETA, X0, MAP.loss, K=5, T=10)
    report = assert_bounds_hold(MAP.step, THETA, X0, MAP.loss, K=5, T=10, allow_unverified=True)
    assert report.holds["lemma1"] is True  # Lemma 1 needs ‖∂ₓΦ_K(x̂)‖₂ only (a dense SVD)
    assert report.holds["theorem2_corrected"] is None


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    log_ridge=st.floats(-4.0, 1.0),
    log_smooth=st.floats(-4.0, LOG_SMOOTH_MAX),
    K=st.integers(1, 6),
    T=st.integers(1, 12),
)
def test_bounds_hold_for_any_weights(log_ridge, log_smooth, K, T):
    theta = (torch.tensor(log_ridge, dtype=DTYPE), torch.tensor(log_smooth, dtype=DTYPE))
    delta = MAP.omega(theta) ** K
    assert_bounds_hold(MAP.step, theta, X0, MAP.loss, K=K, T=T, delta=delta)


def my_retune(step, theta, x0, loss, K, T):
    """ReTune (Algorithm 1) as my training loop computes it: T − 1 restarts without a graph,
    then autograd through the last K steps."""
    leaves = (theta,) if isinstance(theta, torch.Tensor) else tuple(theta)
    leaves = tuple(t.detach().requires_grad_(True) for t in leaves)
    params = leaves[0] if isinstance(theta, torch.Tensor) else leaves
    x = x0
    with torch.no_grad():
        for _ in range(K * (T - 1)):
            x = step(x, params)
    for _ in range(K):
        x = step(x, params)
    grads = torch.autograd.grad(loss(x), leaves, allow_unused=True)
    grads = tuple(
        torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves, strict=True)
    )
    return grads[0] if isinstance(theta, torch.Tensor) else grads


@settings(max_examples=15, deadline=None, derandomize=True)
@given(exact_instances())
def test_my_retune_matches_the_suite(inst):
    """On every kind of contractive map (affine, ridge, lasso, tuple θ), my ReTune is the
    suite's, and both satisfy Theorem 2 (corrected)."""
    args = (inst.step, inst.theta, inst.x0, inst.loss)
    # rtol 1e-10 for two float64 evaluations of one formula; atol for entries that cancel to ~0.
    assert_hypergrad_close(
        my_retune(*args, inst.K, inst.T),
        hypergrad.retune(*args, K=inst.K, T=inst.T),
        rtol=1e-10,
        atol=1e-12,
    )
    assert_bounds_hold(
        *args, K=inst.K, T=inst.T, delta=inst.delta(), statements=["theorem2_corrected"]
    )
