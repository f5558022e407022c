"""Φ_K, Φ_K^T and the fixed-point solve; bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch
from retune_suite.operators import (
    InvalidInputError,
    NotContractiveError,
    fixed_point,
    hypergrad,
    restart,
    unroll,
)
from retune_suite.operators.maps import problems


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


def _loop_work(T: int) -> tuple[int, int]:
    """(tensors the restart loop itself creates, host reads) for T blocks of K = 3 affine steps."""
    from benchmarks.restart_before_after import NewTensors

    theta, x0 = torch.tensor(0.5), torch.zeros(7)
    with NewTensors() as one:
        affine_step(x0, theta)
    with NewTensors() as loop:
        restart(affine_step, theta, x0, K=3, T=T)
    return loop.count - 3 * T * one.count, loop.host_reads


def test_restart_loop_allocates_and_syncs_once_whatever_T():
    """No tensor created and no tensor read on the host per block or per step: the loop's own
    allocations (residual buffer, difference buffer, the copy to the host) and its host reads
    (the final finiteness check) are the same for 2 and for 9 blocks."""
    assert _loop_work(2) == _loop_work(9)
    assert _loop_work(2)[1] >= 1  # the counter sees the final check


def test_restart_residuals_are_the_block_differences():
    p = problems.make_problem("group_l21", n=12, d=3, seed=3)
    x, x_prev, stats = restart(p.step, p.theta, p.x0, K=2, T=4)
    Phi, u, expected = unroll(p.step, 2), p.x0, []
    for _ in range(4):
        u_next = Phi(u, p.theta)
        expected.append(torch.linalg.vector_norm(u_next - u))
        u_prev, u = u, u_next
    assert torch.equal(stats.residuals, torch.stack(expected))
    assert torch.equal(x, u) and torch.equal(x_prev, u_prev)


def test_restart_leaves_the_start_untouched():
    x0 = torch.linspace(0, 1, 5, dtype=torch.float64)
    copy = x0.clone()
    out = restart(affine_step, torch.tensor(0.5, dtype=torch.float64), x0, K=2, T=3)
    assert torch.equal(x0, copy) and out.x.data_ptr() != x0.data_ptr()


def test_cuda_graph_flag_off_cuda_runs_the_eager_loop():
    p = problems.make_problem("group_l21", n=12, d=3, seed=3)
    eager = restart(p.step, p.theta, p.x0, K=4, T=5)
    flagged = restart(p.step, p.theta, p.x0, K=4, T=5, cuda_graph=True)
    assert torch.equal(eager.x, flagged.x) and torch.equal(eager.x_prev, flagged.x_prev)
    assert torch.equal(eager.stats.residuals, flagged.stats.residuals)
    with pytest.raises(InvalidInputError, match="cuda_graph must be True or False"):
        restart(p.step, p.theta, p.x0, K=4, T=5, cuda_graph="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("T", [1, 2, 6])
def test_cuda_graph_restart_equals_eager(T):
    # The problem is built on the device: its A and b live there, as in a user's CUDA run.
    p = problems.make_problem("group_l21", n=64, d=4, seed=3, device="cuda")
    theta, x0 = p.theta, p.x0
    eager = restart(p.step, theta, x0, K=3, T=T)
    graphed = restart(p.step, theta, x0, K=3, T=T, cuda_graph=True)
    torch.testing.assert_close(graphed.x, eager.x, rtol=1e-14, atol=0)
    torch.testing.assert_close(graphed.x_prev, eager.x_prev, rtol=1e-14, atol=0)
    torch.testing.assert_close(graphed.stats.residuals, eager.stats.residuals, rtol=1e-12, atol=0)
    assert graphed.x.device == x0.device and graphed.x.dtype == x0.dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_on_another_device_is_named_as_such():
    # A step closing over CPU tensors, iterated on CUDA: the error names devices, not shapes.
    p = problems.make_problem("group_l21", n=64, d=4, seed=3)
    with pytest.raises(InvalidInputError, match="put every tensor the step closes over"):
        restart(p.step, p.theta.cuda(), p.x0.cuda(), K=3, T=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_refuses_a_step_that_syncs():
    def syncing(x, theta):
        return theta * x + float(x.sum().item() > -1)  # reads x on the host

    theta, x0 = torch.tensor(0.5, device="cuda"), torch.zeros(8, device="cuda")
    with pytest.raises(InvalidInputError, match="cuda_graph=False"):
        restart(syncing, theta, x0, K=2, T=3, cuda_graph=True)
    assert restart(syncing, theta, x0, K=2, T=3).x.isfinite().all()
