"""Each estimator against central finite differences of the composite it differentiates,
and the convergence statements: unrolled → DEQ as K·T grows, ReTune → JFB as T grows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.bounds import statements as S
from retune_suite.operators import fixed_point, hypergrad, restart, unroll
from retune_suite.operators.maps import problems

SMOOTH = ("ridge", "logcosh")
H = 1e-6  # central differences: truncation O(h²) ≈ 1e-12, rounding O(eps/h) ≈ 1e-10
FD_RTOL = 1e-6


def central_difference(f, theta: torch.Tensor) -> torch.Tensor:
    grad = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e.view(-1)[i] = H
        grad.view(-1)[i] = (f(theta + e) - f(theta - e)) / (2 * H)
    return grad


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = max(torch.linalg.vector_norm(b).item(), 1e-8)
    assert torch.linalg.vector_norm(a - b).item() <= FD_RTOL * scale, (a, b)


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_composites(prior):
    p = problems.make_problem(prior, n=12, d=3, seed=11, rho=0.01, log_weight=-1.0)
    K, T = 3, 4
    Phi = unroll(p.step, K)
    x_star = fixed_point(p.step, p.theta, p.x0, K).x
    x_prev = restart(p.step, p.theta, p.x0, K, T - 1).x
    with torch.no_grad():
        unrolled_fd = central_difference(
            lambda th: p.loss(restart(p.step, th, p.x0, K, T).x), p.theta
        )
        retune_fd = central_difference(lambda th: p.loss(Phi(x_prev, th)), p.theta)
        v = x_star - p.target  # ∂_xL(x̂)
        jfb_fd = central_difference(lambda th: (v * Phi(x_star, th)).sum(), p.theta)
    close(hypergrad.unrolled(p.step, p.theta, p.x0, p.loss, K, T), unrolled_fd)
    close(hypergrad.retune(p.step, p.theta, p.x0, p.loss, K, T), retune_fd)
    close(hypergrad.jfb(p.step, p.theta, x_star, p.loss, K), jfb_fd)
    with torch.no_grad():
        deq_fd = central_difference(
            lambda th: p.loss(fixed_point(p.step, th, x_star, K).x), p.theta
        )
    close(hypergrad.deq_exact(p.step, p.theta, x_star, p.loss, K), deq_fd)
    close(hypergrad.deq_solve(p.step, p.theta, x_star, p.loss, K, tol=1e-13), deq_fd)


def test_gradcheck_unrolled_block():
    """torch.autograd.gradcheck on one block Φ_K (float64), the building block of all."""
    p = problems.make_problem("logcosh", n=6, d=2, seed=2)
    Phi = unroll(p.step, 3)
    x = p.x0.clone().requires_grad_(True)
    theta = p.theta.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(Phi, (x, theta))


@given(st.sampled_from(problems.PRIORS), st.integers(1, 4), st.integers(0, 500))
def test_neumann_zero_is_jfb(prior, K, seed):
    p = problems.make_problem(prior, n=8, d=2, seed=seed)
    x_star = fixed_point(p.step, p.theta, p.x0, K).x
    assert torch.equal(
        hypergrad.deq_neumann(p.step, p.theta, x_star, p.loss, K, 0),
        hypergrad.jfb(p.step, p.theta, x_star, p.loss, K),
    )


@given(st.sampled_from(problems.PRIORS), st.integers(1, 3), st.integers(0, 500))
def test_neumann_converges_to_deq_at_rate(prior, K, seed):
    p = problems.make_problem(prior, n=8, d=2, seed=seed, rho=0.01)
    x_star = fixed_point(p.step, p.theta, p.x0, K).x
    g = hypergrad.deq_exact(p.step, p.theta, x_star, p.loss, K)
    delta = p.delta(K)
    grad_loss = torch.linalg.vector_norm(x_star - p.target).item()
    from retune_suite.bounds.constants import dtheta_norm

    dtheta = dtheta_norm(unroll(p.step, K), x_star, p.theta)
    eps = torch.finfo(torch.float64).eps
    for P in (0, 1, 2, 4, 8, 16):
        err = torch.linalg.vector_norm(
            hypergrad.deq_neumann(p.step, p.theta, x_star, p.loss, K, P) - g
        ).item()
        # rounding margin: 1e3 ulps of ‖g‖ (the error is a difference of two gradients)
        assert err <= S.neumann(delta, P, grad_loss, dtheta) + 1e3 * eps * (
            torch.linalg.vector_norm(g).item() + grad_loss * dtheta
        )


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_unrolled_converges_to_deq(prior):
    p = problems.make_problem(prior, n=12, d=3, seed=7, rho=0.01, log_weight=-1.0)
    K = 2
    x_star = fixed_point(p.step, p.theta, p.x0, K).x
    g = hypergrad.deq_exact(p.step, p.theta, x_star, p.loss, K)
    errs = [
        torch.linalg.vector_norm(hypergrad.unrolled(p.step, p.theta, p.x0, p.loss, K, T) - g).item()
        for T in (1, 5, 20, 80)
    ]
    assert errs[-1] <= 1e-9 * torch.linalg.vector_norm(g).item()
    assert errs[3] < errs[2] < errs[1]


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_retune_converges_to_jfb(prior):
    p = problems.make_problem(prior, n=12, d=3, seed=8, rho=0.01, log_weight=-1.0)
    K = 2
    x_star = fixed_point(p.step, p.theta, p.x0, K).x
    g_jf = hypergrad.jfb(p.step, p.theta, x_star, p.loss, K)
    errs = [
        torch.linalg.vector_norm(
            hypergrad.retune(p.step, p.theta, p.x0, p.loss, K, T) - g_jf
        ).item()
        for T in (1, 5, 20, 80)
    ]
    assert errs[-1] <= 1e-10 * torch.linalg.vector_norm(g_jf).item()
    assert errs[2] < errs[1] < errs[0]


def test_deq_solve_methods_agree_and_fail_loudly():
    p = problems.make_problem("group_l21", n=16, d=4, seed=3, tau="1.95/L")
    x_star = fixed_point(p.step, p.theta, p.x0, 1).x
    g = hypergrad.deq_exact(p.step, p.theta, x_star, p.loss, 1)
    for method in ("gmres", "fixed_point"):
        gs, stats = hypergrad.deq_solve(
            p.step,
            p.theta,
            x_star,
            p.loss,
            1,
            tol=1e-12,
            method=method,
            maxiter=5000,
            return_stats=True,
        )
        torch.testing.assert_close(gs, g, rtol=1e-9, atol=1e-12)
        assert stats.residuals[-1] <= 1e-12
    from retune_suite.operators.errors import ConvergenceError

    with pytest.raises(ConvergenceError, match="did not reach"):
        hypergrad.deq_solve(
            p.step, p.theta, x_star, p.loss, 1, tol=1e-12, method="fixed_point", maxiter=3
        )


@pytest.mark.parametrize("prior", SMOOTH)
def test_readout_adds_the_direct_term(prior):
    """With a read-out x = R(u, θ) (section 4.1: x = Dᵀθ⁻¹u), each estimator differentiates
    θ ↦ L(R(·, θ)) of its own composite, direct term included."""
    p = problems.make_problem(prior, n=8, d=2, seed=12, rho=0.01, log_weight=-1.0)
    scale = torch.linspace(0.5, 1.5, 8)

    def readout(u, th):
        return u * scale / p.weights(th)

    K, T = 2, 3
    x_star = fixed_point(p.step, p.theta, p.x0, K).x
    x_prev = restart(p.step, p.theta, p.x0, K, T - 1).x
    Phi = unroll(p.step, K)
    with torch.no_grad():
        deq_fd = central_difference(
            lambda th: p.loss(readout(fixed_point(p.step, th, x_star, K).x, th)), p.theta
        )
        retune_fd = central_difference(lambda th: p.loss(readout(Phi(x_prev, th), th)), p.theta)
        unrolled_fd = central_difference(
            lambda th: p.loss(readout(restart(p.step, th, p.x0, K, T).x, th)), p.theta
        )
    kw = {"readout": readout}
    close(hypergrad.deq_exact(p.step, p.theta, x_star, p.loss, K, **kw), deq_fd)
    close(hypergrad.deq_solve(p.step, p.theta, x_star, p.loss, K, tol=1e-13, **kw), deq_fd)
    close(hypergrad.deq_neumann(p.step, p.theta, x_star, p.loss, K, 200, **kw), deq_fd)
    close(hypergrad.retune(p.step, p.theta, p.x0, p.loss, K, T, **kw), retune_fd)
    close(hypergrad.unrolled(p.step, p.theta, p.x0, p.loss, K, T, **kw), unrolled_fd)
    # JFB with a read-out: the direct term at x̂ plus ∂_u(L∘R)(x̂)ᵀ∂_θΦ_K(x̂)
    with torch.no_grad():
        v = hypergrad.loss_gradient(lambda u: p.loss(readout(u, p.theta)), x_star)
        jfb_fd = central_difference(
            lambda th: (v * Phi(x_star, th)).sum() + p.loss(readout(x_star, th)), p.theta
        )
    close(hypergrad.jfb(p.step, p.theta, x_star, p.loss, K, **kw), jfb_fd)
