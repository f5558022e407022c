"""Φ_K, Φ_K^T and the fixed-point solve; bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch

from operators import (
    InvalidInputError,
    NotContractiveError,
    fixed_point,
    hypergrad,
    problems,
    restart,
    unroll,
)


def affine_step(x, theta):
    return theta * x + 1.0


def test_unroll_composes_K_steps():
    Phi = unroll(affine_step, 3)
    theta = torch.tensor(0.5)
    assert Phi(torch.zeros(1), theta).item() == 0.5 * (0.5 * 1 + 1) + 1


def test_restart_returns_last_two_blocks_and_no_graph():
    theta = torch.tensor(0.5, requires_grad=True)
    x, x_prev, stats = restart(affine_step, theta, torch.zeros(2), K=2, T=3)
    # x_{Kt} = 2 − 2·0.5^{2t}
    assert torch.allclose(x, torch.full((2,), 2 - 2 * 0.5**6))
    assert torch.allclose(x_prev, torch.full((2,), 2 - 2 * 0.5**4))
    assert not x.requires_grad and x.grad_fn is None
    assert stats.blocks == 3 and stats.evaluations == 6 and stats.residuals.shape == (3,)


def test_restart_equals_one_long_unroll():
    p = problems.make_problem("group_l21", n=12, d=3, seed=3)
    x = restart(p.step, p.theta, p.x0, K=4, T=5).x
    assert torch.equal(x, unroll(p.step, 20)(p.x0, p.theta))


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_fixed_point_to_float64_precision(prior):
    p = problems.make_problem(prior, n=16, d=4, seed=1, rho=0.01)
    fp = fixed_point(p.step, p.theta, p.x0, K=2)
    residual = torch.linalg.vector_norm(unroll(p.step, 2)(fp.x, p.theta) - fp.x)
    assert fp.stats.converged
    assert residual <= 64 * torch.finfo(torch.float64).eps * torch.linalg.vector_norm(fp.x)


def test_fixed_point_matches_ridge_closed_form():
    p = problems.make_problem("ridge", n=16, d=4, seed=2)
    fp = fixed_point(p.step, p.theta, p.x0, K=1)
    torch.testing.assert_close(fp.x, p.closed_form_fixed_point(), rtol=1e-12, atol=1e-14)


def test_non_contractive_step_reports_residual_history():
    with pytest.raises(NotContractiveError, match=r"not a contraction|NaN") as info:
        fixed_point(affine_step, torch.tensor(1.5), torch.zeros(1), K=1)
    assert len(info.value.residuals) > 10
    assert "residual history" in str(info.value)


def test_stalling_step_reports_residual_history():
    def rotation(x, theta):  # an isometry: never converges, never diverges
        return torch.stack([-x[1], x[0]]) * theta

    with pytest.raises(NotContractiveError, match=r"stalls|did not converge") as info:
        fixed_point(rotation, torch.tensor(1.0), torch.tensor([1.0, 0.0]), K=1, patience=50)
    assert info.value.residuals


@pytest.mark.parametrize("K,T", [(0, 1), (1, 0), (-1, 2), (1.5, 1), (True, 1)])
def test_bad_counts(K, T):
    with pytest.raises(InvalidInputError, match="must be an integer"):
        restart(affine_step, torch.tensor(0.5), torch.zeros(1), K=K, T=T)
    with pytest.raises(InvalidInputError, match="must be an integer"):
        hypergrad.retune(affine_step, torch.tensor(0.5), torch.zeros(1), lambda x: x.sum(), K, T)


def test_nan_input():
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        restart(affine_step, torch.tensor(0.5), torch.tensor([float("nan")]), K=1, T=1)
    with pytest.raises(InvalidInputError, match="theta\\[0\\] contains NaN"):
        hypergrad.unrolled(
            affine_step, torch.tensor(float("inf")), torch.zeros(1), lambda x: x.sum(), 1, 1
        )


def test_theta_without_gradient_path():
    def step(x, theta):
        return 0.5 * x + theta[0]  # theta[1] unused

    theta = (torch.tensor(1.0), torch.tensor(2.0))
    with pytest.raises(InvalidInputError, match=r"theta\[1\] has no gradient path"):
        hypergrad.retune(step, theta, torch.zeros(1), lambda x: x.sum(), 1, 2)


def test_loss_must_be_scalar_and_depend_on_x():
    theta, x0 = torch.tensor(0.5), torch.zeros(3)
    with pytest.raises(InvalidInputError, match="scalar"):
        hypergrad.unrolled(affine_step, theta, x0, lambda x: x, 1, 1)
    with pytest.raises(InvalidInputError, match="scalar"):
        hypergrad.retune(affine_step, theta, x0, lambda x: x, 1, 1)
    with pytest.raises(InvalidInputError, match="does not depend on x"):
        hypergrad.retune(affine_step, theta, x0, lambda x: torch.tensor(1.0), 1, 1)


def test_wrong_output_shape():
    with pytest.raises(InvalidInputError, match="same shape"):
        hypergrad.jfb(
            lambda x, t: (t * x).sum(), torch.tensor(0.5), torch.ones(3), lambda x: x.sum(), 1
        )


def test_non_fixed_point_warns():
    with pytest.warns(UserWarning, match="not a fixed point"):
        hypergrad.jfb(affine_step, torch.tensor(0.5), torch.zeros(1), lambda x: x.sum(), 1)


def test_bad_step_size_named():
    with pytest.raises(InvalidInputError, match="2/L"):
        problems.make_problem("l1", tau=2.5)


def test_caller_theta_untouched():
    theta = torch.tensor(0.5, requires_grad=True)
    g = hypergrad.unrolled(affine_step, theta, torch.zeros(1), lambda x: (x**2).sum(), 2, 2)
    assert theta.grad is None and not g.requires_grad
