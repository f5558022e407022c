"""Every estimator on float32 and float64, batched x, and CUDA (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from retune_suite.operators import fixed_point, hypergrad
from retune_suite.operators.maps import problems

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
ESTIMATORS = ("deq_exact", "deq_solve", "deq_neumann", "jfb", "retune", "unrolled")


def all_gradients(p, x0, K=2, T=5):
    x_star = fixed_point(p.step, p.theta, x0, K).x
    return {
        "deq_exact": hypergrad.deq_exact(p.step, p.theta, x_star, p.loss, K),
        "deq_solve": hypergrad.deq_solve(
            p.step, p.theta, x_star, p.loss, K, tol=1e-12 if x0.dtype == torch.float64 else 1e-5
        ),
        "deq_neumann": hypergrad.deq_neumann(p.step, p.theta, x_star, p.loss, K, 3),
        "jfb": hypergrad.jfb(p.step, p.theta, x_star, p.loss, K),
        "retune": hypergrad.retune(p.step, p.theta, x0, p.loss, K, T),
        "unrolled": hypergrad.unrolled(p.step, p.theta, x0, p.loss, K, T),
    }


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_batched_x_sums_per_sample_gradients(prior):
    """With x of shape (B, n) and a summed loss, each estimator is the sum over the batch."""
    p = problems.make_problem(prior, n=8, d=2, seed=1, rho=0.01)
    batch = torch.stack([p.x0, -p.x0, 0.5 * p.x0])
    together = all_gradients(p, batch)
    single = [all_gradients(p, x) for x in batch]
    for name in ESTIMATORS:
        torch.testing.assert_close(
            together[name], sum(s[name] for s in single), rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_float32_matches_float64(prior):
    p64 = problems.make_problem(prior, n=8, d=2, seed=2, rho=0.01)
    p32 = problems.make_problem(prior, n=8, d=2, seed=2, rho=0.01, dtype=torch.float32)
    g64, g32 = all_gradients(p64, p64.x0), all_gradients(p32, p32.x0)
    for name in ESTIMATORS:
        assert g32[name].dtype == torch.float32
        # float32: 1e-4 relative (RTOL table in conftest)
        torch.testing.assert_close(g32[name].double(), g64[name], rtol=1e-4, atol=1e-5)


def test_tuple_theta_structure():
    def step(x, theta):
        a, b = theta
        return a * x + b

    theta = (torch.tensor([0.5, 0.25]), torch.tensor(1.0))
    x0 = torch.zeros(2)

    def loss(x):
        return 0.5 * (x**2).sum()

    g = hypergrad.retune(step, theta, x0, loss, 2, 3)
    assert isinstance(g, tuple) and g[0].shape == (2,) and g[1].shape == ()


@CUDA
@pytest.mark.parametrize("prior", problems.PRIORS)
def test_cuda_matches_cpu(prior):
    cpu = problems.make_problem(prior, n=8, d=2, seed=3, rho=0.01)
    gpu = problems.make_problem(prior, n=8, d=2, seed=3, rho=0.01, device="cuda")
    g_cpu, g_gpu = all_gradients(cpu, cpu.x0), all_gradients(gpu, gpu.x0)
    for name in ESTIMATORS:
        assert g_gpu[name].device.type == "cuda"
        torch.testing.assert_close(g_gpu[name].cpu(), g_cpu[name], rtol=1e-9, atol=1e-12)


@CUDA
def test_cuda_float32_and_device_mismatch_error():
    p = problems.make_problem("group_l21", n=8, d=2, seed=3, dtype=torch.float32, device="cuda")
    g = hypergrad.retune(p.step, p.theta, p.x0, p.loss, 3, 4)
    assert g.device.type == "cuda" and g.dtype == torch.float32
    from retune_suite.operators.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="never moves tensors"):
        hypergrad.retune(p.step, p.theta, p.x0.cpu(), p.loss, 3, 4)


def test_device_mismatch_error_on_meta():
    """The device check itself, without a GPU: a meta-device x against a CPU θ."""
    from retune_suite.operators.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="never moves tensors"):
        hypergrad.retune(
            lambda x, t: t * x,
            torch.tensor(0.5),
            torch.zeros(2, device="meta"),
            lambda x: x.sum(),
            1,
            1,
        )
