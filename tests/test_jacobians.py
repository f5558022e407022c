"""Dense Jacobians against JVP/VJP products; matrix-free norms against dense SVD; GMRES
against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.func import jvp, vjp

from bounds import constants
from operators import fixed_point, jacobians, problems, unroll
from operators.errors import ConvergenceError
from operators.linsolve import gmres


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


@given(st.integers(2, 40), st.floats(0.05, 0.99), st.integers(0, 1000))
def test_gmres_matches_scipy(n, rate, seed):
    gen = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    H = q1 @ torch.diag(torch.linspace(-rate, rate, n)) @ q2  # ‖H‖₂ = rate < 1
    M = torch.eye(n) - H
    b = torch.randn(n, generator=gen)
    x, history = gmres(lambda v: M @ v, b, tol=1e-12, restart=10)
    ref, info = spla.gmres(M.numpy(), b.numpy(), rtol=1e-13, restart=10, maxiter=1000)
    assert info == 0
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-9, atol=1e-10)
    assert torch.linalg.vector_norm(M @ x - b) <= 1e-12 * torch.linalg.vector_norm(b) * 1.0001
    assert history[-1] <= 1e-12


def test_gmres_raises_instead_of_returning_garbage():
    M = torch.diag(torch.tensor([1.0, 1e-12, 1.0]))
    with pytest.raises(ConvergenceError, match="did not reach"):
        gmres(lambda v: torch.roll(M @ v, 1), torch.ones(3), tol=1e-14, restart=1, maxiter=3)


def test_gmres_zero_rhs_is_zero():
    x, _ = gmres(lambda v: 2 * v, torch.zeros(4))
    assert torch.equal(x, torch.zeros(4))
