"""Bad input never passes silently: each case raises a named suite error that says the fix.

One test per defect of issue 11 (each returned a number, or raised a bare torch error, before).
"""

from __future__ import annotations

import pytest
import torch
from retune_suite.operators import (
    ConvergenceError,
    InvalidInputError,
    NotContractiveError,
    RetuneError,
    fixed_point,
    hypergrad,
    restart,
)

from retune_suite import bounds

F64 = torch.float64


def _mse(target: float = 2.0):
    return lambda x: 0.5 * ((x - target) ** 2).sum()


def _affine(x, th):
    return th * x + 1.0


# -- a step that changes x's shape -----------------------------------------------------------

SHAPE_THETA = torch.full((3, 1), 0.5, dtype=F64)  # θ (3, 1) against x (3,) broadcasts to (3, 3)
SHAPE_X0 = torch.zeros(3, dtype=F64)


@pytest.mark.parametrize(
    "call",
    [
        lambda: restart(_affine, SHAPE_THETA, SHAPE_X0, K=1, T=2),
        lambda: fixed_point(_affine, SHAPE_THETA, SHAPE_X0, K=1),
        lambda: hypergrad.unrolled(_affine, SHAPE_THETA, SHAPE_X0, _mse(), K=1, T=2),
        lambda: hypergrad.retune(_affine, SHAPE_THETA, SHAPE_X0, _mse(), K=1, T=3),
        lambda: hypergrad.retune(_affine, SHAPE_THETA, SHAPE_X0, _mse(), K=2, T=1),
        lambda: bounds.verify(_affine, SHAPE_THETA, SHAPE_X0, _mse(), K=1, T=2, delta=0.5),
    ],
    ids=["restart", "fixed_point", "unrolled", "retune_T3", "retune_K2", "verify"],
)
def test_step_that_changes_shape_is_refused(call):
    with pytest.raises(InvalidInputError, match="same shape"):
        call()


# -- NaN and divergence ------------------------------------------------------------------------


def _nan_step(x, th):
    return th * x + torch.nan


@pytest.mark.parametrize("method", ["unrolled", "retune"])
@pytest.mark.parametrize(
    "case",
    [
        # θ = 1.5: |x_t| grows like 1.5^t and overflows long before 3000 steps
        (_affine, torch.tensor([1.5], dtype=F64), _mse(), 3000),
        (_affine, torch.tensor([0.5], dtype=F64), lambda x: (x * torch.nan).sum(), 3),
        (_nan_step, torch.tensor([0.5], dtype=F64), _mse(), 3),
    ],
    ids=["diverges", "nan_loss", "nan_in_step"],
)
def test_unrolled_and_retune_never_return_nan(method, case):
    step, theta, loss, T = case
    fn = getattr(hypergrad, method)
    with pytest.raises(RetuneError, match=r"NaN|inf"):
        fn(step, theta, torch.zeros(1, dtype=F64), loss, K=1, T=T)


def _nan_at_two(x, th):
    # defined (finite) only for x > 3; x_star = 2 gives NaN
    return th * x + torch.sqrt(x - 3.0)


@pytest.mark.parametrize("method", ["jfb", "deq_exact", "deq_solve", "deq_neumann"])
def test_fixed_point_estimators_refuse_a_nan_step_at_x_star(method):
    fn = getattr(hypergrad, method)
    extra = {"P": 2} if method == "deq_neumann" else {}
    with pytest.raises(NotContractiveError, match="NaN"):
        fn(
            _nan_at_two,
            torch.tensor([0.5], dtype=F64),
            torch.tensor([2.0], dtype=F64),
            _mse(),
            K=1,
            **extra,
        )


def test_deq_exact_singular_is_a_named_error():
    """φ(x, θ) = θx at θ = 1: I − ∂xΦ_K = 0 (torch raised its private _LinAlgError)."""
    with pytest.raises(ConvergenceError, match="singular"):
        hypergrad.deq_exact(
            lambda x, th: th * x,
            torch.tensor([1.0], dtype=F64),
            torch.ones(2, dtype=F64),
            _mse(),
            K=1,
        )


# -- θ and x₀ ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["retune", "unrolled"])
def test_theta_python_float(method):
    with pytest.raises(InvalidInputError, match=r"torch\.tensor"):
        getattr(hypergrad, method)(_affine, 0.5, torch.zeros(1, dtype=F64), _mse(), K=1, T=2)


def test_theta_unused_by_the_step_in_unrolled():
    with pytest.raises(InvalidInputError, match="does not depend on theta"):
        hypergrad.unrolled(
            lambda x, th: 0.5 * x + 1.0,
            torch.tensor([0.5], dtype=F64),
            torch.zeros(1, dtype=F64),
            _mse(),
            K=1,
            T=2,
        )


@pytest.mark.parametrize("method", ["retune", "unrolled"])
def test_x0_shape_incompatible_with_theta(method):
    """x₀ (4,) with θ (3,): torch's broadcast RuntimeError becomes a named error."""
    with pytest.raises(InvalidInputError, match="x0"):
        getattr(hypergrad, method)(
            _affine,
            torch.full((3,), 0.5, dtype=F64),
            torch.zeros(4, dtype=F64),
            _mse(),
            K=1,
            T=2,
        )


@pytest.mark.parametrize(
    "call",
    [
        lambda th, x0: hypergrad.retune(_affine, th, x0, _mse(), K=1, T=2),
        lambda th, x0: fixed_point(_affine, th, x0, K=1),
        lambda th, x0: bounds.verify(_affine, th, x0, _mse(), K=1, T=2, delta=0.5),
    ],
    ids=["retune", "fixed_point", "verify"],
)
def test_mixed_dtypes_are_refused(call):
    """x₀ float32 with θ float64 was accepted (the fixed point stopped at float32 precision)."""
    with pytest.raises(InvalidInputError, match="dtype"):
        call(torch.tensor([0.5], dtype=F64), torch.zeros(1, dtype=torch.float32))


# -- deq_solve in float32 and its statistics ---------------------------------------------------


def _float32_problem(n: int = 64):
    gen = torch.Generator().manual_seed(0)
    theta = (0.9 * torch.rand(n, generator=gen)).float()
    b = torch.randn(n, generator=gen).float()
    target = torch.randn(n, generator=gen).float()

    def step(x, th):
        return th * x + b

    def loss(x):
        return 0.5 * ((x - target) ** 2).sum()

    x_star = b / (1 - theta)  # exact fixed point of the affine map
    exact = (x_star - target) * x_star / (1 - theta)  # dL/dθ_i = (x̂−x̄)_i x̂_i / (1 − θ_i)
    return step, theta, x_star, loss, exact


def test_deq_solve_float32_default_tolerance_converges():
    """The float64 default 1e-10 cannot be reached in float32 (it failed after 1000 VJPs):
    the default follows the dtype, and the gradient is right to float32 accuracy."""
    step, theta, x_star, loss, exact = _float32_problem()
    grad = hypergrad.deq_solve(step, theta, x_star, loss, K=1)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, exact, rtol=1e-4, atol=1e-4)
    assert hypergrad.default_solve_tol(torch.float32) < 1e-4


class _CountBackward(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        _CountBackward.calls += 1
        return g


@pytest.mark.parametrize("method", ["gmres", "fixed_point"])
def test_deq_solve_stats_count_vjps(method):
    """``blocks`` = VJPs through Φ_K in the solve, ``evaluations`` = backward φ passes (K per
    VJP); residuals are the true ones and the last is below tol (it said len(history))."""
    theta = torch.tensor([0.3, 0.6], dtype=F64)
    b = torch.tensor([1.0, -1.0], dtype=F64)
    K = 3

    def step(x, th):
        return _CountBackward.apply(th * x + b)

    x_star = b / (1 - theta)
    _CountBackward.calls = 0
    _, stats = hypergrad.deq_solve(
        step, theta, x_star, _mse(0.0), K=K, tol=1e-12, method=method, return_stats=True
    )
    assert stats.evaluations == K * stats.blocks
    # every backward pass through φ is counted: the solve's, plus one VJP for ∂θΦ_Kᵀw
    assert _CountBackward.calls == stats.evaluations + K
    assert stats.residuals[-1] <= 1e-12


# -- the Anderson fixed point ----------------------------------------------------------------


def test_anderson_fixed_point_matches_picard_in_fewer_blocks():
    """A slowly contracting affine map (rate 0.99): Anderson reaches the exact fixed point to
    the same tolerance as Picard iteration, in far fewer blocks."""
    n = 20
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    A = q @ torch.diag(torch.linspace(0.1, 0.99, n, dtype=F64)) @ q.T
    c = torch.randn(n, generator=gen, dtype=F64)

    def step(x, th):
        return th * (A @ x) + c

    theta = torch.tensor([1.0], dtype=F64)
    exact = torch.linalg.solve(torch.eye(n, dtype=F64) - A, c)
    picard = fixed_point(step, theta, torch.zeros(n, dtype=F64), K=1)
    anderson = fixed_point(step, theta, torch.zeros(n, dtype=F64), K=1, method="anderson")
    for fp in (picard, anderson):
        torch.testing.assert_close(fp.x, exact, rtol=1e-11, atol=1e-11)
        assert fp.stats.converged
    assert anderson.stats.blocks * 5 < picard.stats.blocks


def test_anderson_fixed_point_raises_without_a_fixed_point():
    """φ(x) = x + 1 has no fixed point: the residual stays 1 and Anderson must say so (on an
    expansive affine map such as 1.5x + 1 it correctly finds x = −2, a secant method's root)."""
    with pytest.raises(NotContractiveError, match="stalls"):
        fixed_point(
            _affine,
            torch.tensor([1.0], dtype=F64),
            torch.zeros(3, dtype=F64),
            K=1,
            method="anderson",
            max_blocks=5000,
        )


def test_anderson_memory_must_be_positive():
    with pytest.raises(InvalidInputError, match="memory"):
        fixed_point(
            _affine,
            torch.tensor([0.5], dtype=F64),
            torch.zeros(1, dtype=F64),
            K=1,
            method="anderson",
            memory=0,
        )
