"""The forward solve (issue 25, items 1 and 4): Picard, Anderson and Broyden; absolute and
relative tolerances; per-sample stopping and statistics along a batch axis; divergence is an
error with the measured growth, never a number, while a slow contraction still passes.

Float64, problems of a few coordinates; each defect of the issue has its test here.
"""

from __future__ import annotations

import math

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
from retune_suite.operators.equilibrium import FORWARD_SOLVERS, equilibrium
from retune_suite.operators.iteration import default_rtol
from retune_suite.operators.maps import problems

F64 = torch.float64


@pytest.mark.parametrize("prior", problems.PRIORS)
def test_defaults_give_the_plain_picard_result(prior):
    """Existing callers get what they got: with the defaults, x̂ is bit for bit that of the
    Picard loop that stops at ‖Φ_K(x) − x‖ ≤ 64 ulps·‖Φ_K(x)‖ (the rule before the issue)."""
    p = problems.make_problem(prior, n=16, d=4, seed=1, rho=0.01)
    fp = fixed_point(p.step, p.theta, p.x0, 2)
    Phi, x, blocks = unroll(p.step, 2), p.x0, 0
    with torch.no_grad():
        while True:
            nxt, blocks = Phi(x, p.theta), blocks + 1
            done = torch.linalg.vector_norm(nxt - x) <= default_rtol(F64) * nxt.norm()
            x = nxt
            if done:
                break
    assert torch.equal(fp.x, x) and fp.stats.blocks == blocks
    assert fp.stats.sample_blocks.tolist() == [blocks] and fp.stats.batch_dim is None


def test_defaults_when_the_start_is_far_larger_than_the_fixed_point():
    """The default absolute tolerance (64 ulps of 10⁻⁶ of the start's scale) does not stop a
    solve earlier than the relative test did, even from a start 10⁴ times larger than x̂."""

    def step(x, theta):
        return theta * x + 1.0

    theta, x0 = torch.tensor(0.5, dtype=F64), torch.full((5,), 2e4, dtype=F64)
    fp = fixed_point(step, theta, x0, 1)
    x, blocks = x0, 0
    while True:
        nxt, blocks = step(x, theta), blocks + 1
        done = torch.linalg.vector_norm(nxt - x) <= default_rtol(F64) * nxt.norm()
        x = nxt
        if done:
            break
    assert torch.equal(fp.x, x) and fp.stats.blocks == blocks


@pytest.mark.parametrize("method", FORWARD_SOLVERS)
@pytest.mark.parametrize("prior", ["ridge", "group_l21"])
def test_solvers_agree(method, prior):
    p = problems.make_problem(prior, n=16, d=4, seed=2, rho=0.01)
    reference = fixed_point(p.step, p.theta, p.x0, 1).x
    fp = fixed_point(p.step, p.theta, p.x0, 1, method=method)
    assert fp.stats.converged and fp.stats.solver == method
    torch.testing.assert_close(fp.x, reference, rtol=1e-12, atol=1e-13)


def cosine(x, theta):
    return theta * torch.cos(x)


def test_anderson_where_picard_fails():
    """Issue 25: on x ↦ θ cos x at θ = π/2 (|φ'(x̂)| ≈ 1.2: Picard oscillates) equilibrium had
    only Picard (NotContractiveError after 8 s); with forward_solver="anderson" it converges
    and its DEQ gradient is the implicit one, dx̂/dθ = cos x̂ / (1 + θ sin x̂)."""
    theta = torch.tensor(math.pi / 2, dtype=F64, requires_grad=True)
    x0 = torch.zeros(1, dtype=F64)
    with pytest.raises(NotContractiveError):
        equilibrium(cosine, theta, x0, K=1, backward="deq", max_blocks=500)
    for method in ("anderson", "broyden"):
        theta.grad = None
        x, stats = equilibrium(cosine, theta, x0, K=1, backward="deq", forward_solver=method,
                               return_stats=True)  # fmt: skip
        x.sum().backward()
        xs = float(x.detach())
        assert stats.blocks < 40 and abs(xs - math.pi / 2 * math.cos(xs)) < 1e-13
        want = math.cos(xs) / (1 + math.pi / 2 * math.sin(xs))
        assert float(theta.grad) == pytest.approx(want, rel=1e-9)


def _two_samples():
    """Sample 0 contracts at 0.5 with scale 1e12, sample 1 at 0.99 with scale 1."""
    rates = torch.tensor([0.5, 0.99], dtype=F64)
    shift = torch.tensor([[1e12], [0.01]], dtype=F64)

    def step(x, theta):
        return theta[:, None] * x + shift

    return step, rates, torch.zeros(2, 3, dtype=F64)


def test_one_norm_for_the_batch_stops_too_early():
    """The defect (kept as the batch_dim=None behaviour): one norm over the batch stops while
    the slow sample is still far from its fixed point (x̂₁ = 1)."""
    step, rates, x0 = _two_samples()
    whole = fixed_point(step, rates, x0, 1)
    assert whole.stats.reason == "tolerance"
    assert float((whole.x[1] - 1.0).abs().max()) > 0.5


@pytest.mark.parametrize("method", FORWARD_SOLVERS)
def test_per_sample_stopping_and_statistics(method):
    step, rates, x0 = _two_samples()
    fp = fixed_point(step, rates, x0, 1, method=method, batch_dim=0)
    st = fp.stats
    rtol = default_rtol(F64)
    for i, target in enumerate((2e12, 1.0)):
        r = torch.linalg.vector_norm(step(fp.x, rates)[i] - fp.x[i])
        assert r <= rtol * torch.linalg.vector_norm(fp.x[i]) * 1.01
        # ‖x − x̂‖ ≤ residual / (1 − δ): 100 × 64 ulps for δ = 0.99
        want = torch.full((3,), target, dtype=F64)
        torch.testing.assert_close(fp.x[i], want, rtol=2e-12, atol=0)
    assert st.converged and st.sample_converged.tolist() == [True, True]
    assert st.sample_reasons == ("tolerance", "tolerance") and st.batch_dim == 0
    assert st.sample_residuals.shape == (st.blocks, 2)
    assert int(st.sample_blocks[1]) == st.blocks
    if method == "picard":
        assert int(st.sample_blocks[0]) < int(st.sample_blocks[1])
    torch.testing.assert_close(st.residuals, torch.linalg.vector_norm(st.sample_residuals, dim=1))


@pytest.mark.parametrize("method", FORWARD_SOLVERS)
def test_a_sample_does_not_depend_on_the_batch(method):
    """Each sample, solved in a batch, is what it is when solved alone (stopping, freezing and
    the Anderson/Broyden histories are per sample), along a batch axis that is not the first."""
    p = problems.make_problem("l1", n=8, d=2, seed=4, rho=0.05)
    ys = torch.stack([p.y, 3 * p.y, -p.y], dim=1)  # (n, 3): samples along axis 1

    def step(x, theta):  # the l1 problem's FB step, for each column's data
        return torch.stack(
            [p.step(x[:, j], theta) + p.tau * (p.A.T @ (ys[:, j] - p.y)) for j in range(3)], 1
        )

    x0 = torch.zeros(8, 3, dtype=F64)
    batched = fixed_point(step, p.theta, x0, 1, method=method, batch_dim=-1)
    for j in range(3):

        def alone(x, theta, j=j):
            return p.step(x, theta) + p.tau * (p.A.T @ (ys[:, j] - p.y))

        single = fixed_point(alone, p.theta, x0[:, j], 1, method=method)
        torch.testing.assert_close(batched.x[:, j], single.x, rtol=1e-12, atol=1e-14)
        if method == "picard":
            assert int(batched.stats.sample_blocks[j]) == single.stats.blocks


def test_per_sample_gradient_in_equilibrium():
    """With per-sample stopping the DEQ gradient of a batch is the sum of each sample's (the
    one-norm stop left sample 1 far off, its gradient off by two orders)."""
    step, rates, x0 = _two_samples()
    theta = rates.clone().requires_grad_(True)
    equilibrium(step, theta, x0, K=1, backward="deq", batch_dim=0).sum().backward()
    # x̂_i = shift_i / (1 − θ_i), d Σ x̂_i / dθ_i = 3 shift_i / (1 − θ_i)²
    want = 3 * torch.tensor([1e12, 0.01], dtype=F64) / (1 - rates) ** 2
    torch.testing.assert_close(theta.grad, want, rtol=1e-9, atol=0)


def test_bad_batch_dim_and_tolerances():
    step, rates, x0 = _two_samples()
    with pytest.raises(InvalidInputError, match="batch_dim=2 is not an axis"):
        fixed_point(step, rates, x0, 1, batch_dim=2)
    with pytest.raises(InvalidInputError, match="atol must be"):
        fixed_point(step, rates, x0, 1, atol=-1.0)
    with pytest.raises(InvalidInputError, match="method must be one of"):
        fixed_point(step, rates, x0, 1, method="newton")


def test_absolute_tolerance():
    p = problems.make_problem("ridge", n=8, d=2, seed=0)
    loose = fixed_point(p.step, p.theta, p.x0, 1, atol=1e-3, rtol=0.0)
    assert loose.stats.residuals[-1] <= 1e-3 < loose.stats.residuals[-2]


# --- divergence is never a number -----------------------------------------------------------


def _lasso(tau_times_L: float):
    """Forward-backward on ½‖Ax − y‖² + θ‖x‖₁ with τ = tau_times_L / L, L = ‖A‖₂²."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=gen, dtype=F64)
    y = torch.randn(6, generator=gen, dtype=F64)
    tau = tau_times_L / torch.linalg.matrix_norm(A, ord=2).item() ** 2

    def step(x, theta):
        z = x - tau * (A.T @ (A @ x - y))
        return torch.sign(z) * torch.clamp(z.abs() - tau * theta, min=0.0)

    return step, torch.tensor(0.1, dtype=F64), torch.zeros(6, dtype=F64)


def loss(x):
    return 0.5 * (x**2).sum()


def test_divergence_raises_with_the_measured_growth():
    """Issue 25: retune(K=2, T=50) and unrolled on FB with τ = 2.5/L returned 6.5e49 and
    3.2e51; every routine now raises NotContractiveError with the growth per block."""
    step, theta, x0 = _lasso(2.5)
    calls = {
        "restart": lambda: restart(step, theta, x0, 2, 50),
        "retune": lambda: hypergrad.retune(step, theta, x0, loss, 2, 50),
        "unrolled": lambda: hypergrad.unrolled(step, theta, x0, loss, 2, 50),
        "equilibrium retune": lambda: equilibrium(step, theta, x0, K=2, T=50),
        "equilibrium unrolled": lambda: equilibrium(
            step, theta, x0, K=2, T=50, backward="unrolled"
        ),
        "equilibrium deq": lambda: equilibrium(step, theta, x0, K=2, backward="deq"),
    }
    with torch.no_grad():  # θ is a constant here: no warning about its gradient
        for name, call in calls.items():
            with pytest.raises(NotContractiveError, match=r"diverges") as caught:
                call()
            assert "not a contraction" in str(caught.value), name
            if name != "equilibrium deq":
                assert "per block" in str(caught.value), name


def test_slow_contraction_still_passes():
    """δ = 0.999 (far slower than any real problem) is a contraction: no error anywhere, and
    the values are those of the plain iteration."""
    theta, x0 = torch.tensor(0.999, dtype=F64), torch.zeros(2, dtype=F64)

    def step(x, t):
        return t * x + 1.0

    T = 400
    expected = (1 - 0.999**T) / (1 - 0.999)  # x_T from 0
    assert float(restart(step, theta, x0, 1, T).x[0]) == pytest.approx(expected, rel=1e-12)
    assert float(hypergrad.retune(step, theta, x0, loss, 1, T)) > 0
    assert float(hypergrad.unrolled(step, theta, x0, loss, 1, T)) > 0
    with torch.no_grad():
        x = equilibrium(step, theta, x0, K=1, T=T, backward="unrolled")
    assert float(x[0]) == pytest.approx(expected, rel=1e-12)
    step_fb, theta_fb, x0_fb = _lasso(1.999)  # τ just below 2/L: slow, but contractive
    restart(step_fb, theta_fb, x0_fb, 1, 300)
