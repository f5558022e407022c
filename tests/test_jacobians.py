"""Dense Jacobians against JVP/VJP products; matrix-free norms against dense SVD."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.bounds import constants
from retune_suite.operators import fixed_point, jacobians, unroll
from retune_suite.operators.maps import problems
from torch.func import jvp, vjp


@given(st.sampled_from(problems.PRIORS), st.integers(1, 6), st.integers(0, 1000))
def test_dense_jacobians_agree_with_products(prior, K, seed):
    p = problems.make_problem(prior, n=12, d=3, seed=seed, rho=0.01)
    Phi = unroll(p.step, K)
    x = p.x0
    gen = torch.Generator().manual_seed(seed)
    v, u = torch.randn(12, generator=gen), torch.randn(12, generator=gen)
    Jx = jacobians.jacobian_x(Phi, x, p.theta)
    _, Jv = jvp(lambda z: Phi(z, p.theta), (x,), (v,))
    _, pull = vjp(lambda z: Phi(z, p.theta), x)
    torch.testing.assert_close(Jx @ v, Jv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u @ Jx, pull(u)[0], rtol=1e-12, atol=1e-12)
    Jt = jacobians.jacobian_theta(Phi, x, p.theta)
    w = torch.randn(3, generator=gen)
    _, Jw = jvp(lambda t: Phi(x, t), (p.theta,), (w,))
    _, pull_t = vjp(lambda t: Phi(x, t), p.theta)
    torch.testing.assert_close(Jt @ w, Jw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u @ Jt, pull_t(u)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_power_iteration_matches_svd(prior):
    p = problems.make_problem(prior, n=16, d=4, seed=5, rho=0.01)
    Phi = unroll(p.step, 2)
    x = fixed_point(p.step, p.theta, p.x0, 2).x
    dense = jacobians.spectral_norm(jacobians.jacobian_x(Phi, x, p.theta))
    gen = torch.Generator().manual_seed(0)
    free = jacobians.power_norm_x(Phi, x, p.theta, iterations=2000, rtol=1e-14, generator=gen)
    assert free == pytest.approx(dense, rel=1e-6)  # power iteration converges at (σ2/σ1)^2
    assert free <= dense * (1 + 1e-12)  # a lower estimate


def test_mixed_derivative_matches_finite_difference():
    p = problems.make_problem("logcosh", n=8, d=2, seed=4, rho=0.01)
    Phi = unroll(p.step, 3)
    v = torch.linspace(-1, 1, 8)
    h = 1e-5
    fd = (
        jacobians.jacobian_theta(Phi, p.x0 + h * v, p.theta)
        - jacobians.jacobian_theta(Phi, p.x0 - h * v, p.theta)
    ) / (2 * h)
    # central differences: O(h²) truncation ≈ 1e-10, rounding ≈ eps/h ≈ 1e-11
    torch.testing.assert_close(
        jacobians.mixed_derivative(Phi, p.x0, p.theta, v), fd, rtol=1e-7, atol=1e-9
    )


def test_hessian_norm_of_mse_is_one():
    assert constants.hessian_norm(lambda x: 0.5 * (x**2).sum(), torch.ones(5)) == pytest.approx(1)


def test_jacobian_theta_in_chunks_equals_one_pass(monkeypatch):
    """The chunked forward-mode ∂_θΦ_K (CHUNK_ENTRIES // n columns at a time) is the matrix of
    one pass over all d columns (torch.autograd.functional.jacobian, the library)."""
    p = problems.make_problem("logcosh", n=12, d=6, seed=3, rho=0.01)
    Phi = unroll(p.step, 3)
    monkeypatch.setattr(jacobians, "CHUNK_ENTRIES", 24)  # 2 columns per chunk, 3 chunks of 6
    J = jacobians.jacobian_theta(Phi, p.x0, p.theta)
    ref = torch.autograd.functional.jacobian(lambda t: Phi(p.x0, t), p.theta)
    assert J.shape == (12, 6)
    torch.testing.assert_close(J, ref, rtol=1e-13, atol=1e-13)


def test_reuse_jacobians_answers_only_identical_inputs():
    """Inside reuse_jacobians a repeated (step, K, θ, x) is answered from the first call; any
    change of x (one ulp), K or θ (in place) is computed afresh, and outside nothing is kept."""
    p = problems.make_problem("ridge", n=9, d=3, seed=1, rho=0.01)
    calls = []

    def step(x, theta):
        calls.append(1)
        return p.step(x, theta)

    x = p.x0.clone()
    with jacobians.reuse_jacobians():
        J1 = jacobians.jacobian_theta(unroll(step, 2), x, p.theta)
        n1 = len(calls)
        J2 = jacobians.jacobian_theta(unroll(step, 2), x.clone(), p.theta)
        assert J2 is J1 and len(calls) == n1
        x_next = x.clone()
        x_next[0] = torch.nextafter(x_next[0], torch.tensor(math.inf, dtype=x.dtype))
        assert jacobians.jacobian_theta(unroll(step, 2), x_next, p.theta) is not J1
        assert jacobians.jacobian_theta(unroll(step, 3), x, p.theta) is not J1
        theta = p.theta.clone()
        J3 = jacobians.jacobian_theta(unroll(step, 2), x, theta)
        with torch.no_grad():
            theta.mul_(0.5)
        J4 = jacobians.jacobian_theta(unroll(step, 2), x, theta)
        assert J4 is not J3 and not torch.equal(J4, J3)
    J5 = jacobians.jacobian_theta(unroll(step, 2), x, p.theta)
    assert J5 is not J1
    torch.testing.assert_close(J5, J1, rtol=0, atol=0)


def test_nested_reuse_blocks_share_the_outer_cache():
    """A block opened inside another (verify inside a study's block) answers from the outer
    block's matrices, and they are dropped when the outer block closes."""
    p = problems.make_problem("ridge", n=9, d=3, seed=2, rho=0.01)
    calls = []

    def step(x, theta):
        calls.append(1)
        return p.step(x, theta)

    with jacobians.reuse_jacobians():
        with jacobians.reuse_jacobians():
            J1 = jacobians.jacobian_theta(unroll(step, 2), p.x0, p.theta)
        n1 = len(calls)
        with jacobians.reuse_jacobians():
            assert jacobians.jacobian_theta(unroll(step, 2), p.x0, p.theta) is J1
        assert len(calls) == n1
    assert jacobians.jacobian_theta(unroll(step, 2), p.x0, p.theta) is not J1
