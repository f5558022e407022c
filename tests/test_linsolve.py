"""Restarted GMRES (retune_suite.operators.linsolve) against SciPy, and its failure reports."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.operators.errors import ConvergenceError
from retune_suite.operators.linsolve import gmres


def _contraction_system(n: int, rate: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    H = q1 @ torch.diag(torch.linspace(-rate, rate, n)) @ q2  # ‖H‖₂ = rate < 1
    return torch.eye(n) - H, torch.randn(n, generator=gen)


@given(st.integers(2, 40), st.floats(0.05, 0.99), st.integers(0, 1000))
def test_gmres_matches_scipy(n, rate, seed):
    M, b = _contraction_system(n, rate, seed)
    x, info = gmres(lambda v: M @ v, b, tol=1e-12, restart=10)
    ref, flag = spla.gmres(M.numpy(), b.numpy(), rtol=1e-13, restart=10, maxiter=1000)
    assert flag == 0
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-9, atol=1e-10)
    true = (torch.linalg.vector_norm(M @ x - b) / torch.linalg.vector_norm(b)).item()
    assert true <= 1e-12 * 1.0001
    # the reported residual is the true one, recomputed at the returned solution
    assert info.residuals[-1] == pytest.approx(true, rel=1e-6, abs=1e-300)


def test_gmres_raises_instead_of_returning_garbage():
    M = torch.diag(torch.tensor([1.0, 1e-12, 1.0]))
    with pytest.raises(ConvergenceError, match="did not reach"):
        gmres(lambda v: torch.roll(M @ v, 1), torch.ones(3), tol=1e-14, restart=1, maxiter=3)


def test_gmres_failure_reports_the_true_residual_not_an_estimate():
    """The message and ``residuals`` give ‖b − Mw‖/‖b‖ at the last iterate, never the minimum
    of GMRES's least-squares estimates (the old message mixed both)."""
    M, b = _contraction_system(30, 0.999, 3)
    inputs = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        inputs.append(v.clone())
        return M @ v

    with pytest.raises(ConvergenceError) as caught:
        gmres(matvec, b, tol=1e-14, restart=5, maxiter=12)
    error = caught.value
    w_last = inputs[-1]  # the residual b − M w of the final iterate is the last product
    true = (torch.linalg.vector_norm(b - M @ w_last) / torch.linalg.vector_norm(b)).item()
    assert error.residuals[-1] == pytest.approx(true, rel=1e-12)
    assert f"true residual {true:.3e}" in str(error)


def test_gmres_counts_products():
    M, b = _contraction_system(8, 0.5, 0)
    calls = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return M @ v

    _, info = gmres(matvec, b, tol=1e-12, restart=4)
    assert info.products == len(calls)


def test_gmres_zero_rhs_is_zero():
    x, info = gmres(lambda v: 2 * v, torch.zeros(4))
    assert torch.equal(x, torch.zeros(4))
    assert info.residuals == [0.0]
