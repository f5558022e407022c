"""Restarted GMRES (retune_suite.operators.linsolve) against SciPy, and its failure reports."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.operators.errors import ConvergenceError, InvalidInputError
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


def _complex_system(n: int, rate: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """I − H with H complex (unitary factors), ‖H‖₂ = rate: not Hermitian, not real."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.complex128

    def unitary() -> torch.Tensor:
        z = torch.complex(torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen))
        return torch.linalg.qr(z)[0]

    H = unitary() @ torch.diag(torch.linspace(-rate, rate, n).to(c)) @ unitary()
    b = torch.complex(torch.randn(n, generator=gen), torch.randn(n, generator=gen))
    return torch.eye(n, dtype=c) - H, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmres_complex_matches_scipy(seed):
    """Issue 25: a complex right-hand side raised TypeError and the Arnoldi step did not
    conjugate; the solution is now SciPy's, residual ≤ tol."""
    M, b = _complex_system(25, 0.95, seed)
    x, info = gmres(lambda v: M @ v, b, tol=1e-12, restart=8)
    ref, flag = spla.gmres(M.numpy(), b.numpy(), rtol=1e-13, restart=8, maxiter=1000)
    assert flag == 0 and x.dtype == torch.complex128
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-9, atol=1e-10)
    true = (torch.linalg.vector_norm(M @ x - b) / torch.linalg.vector_norm(b)).item()
    assert true <= 1e-12 * 1.0001 and info.residuals[-1] == pytest.approx(true, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gmres_batched_systems_match_scipy(dtype):
    """Issue 25: a 2-D right-hand side failed inside torch.dot; rows are now independent
    systems, each solved as SciPy solves it alone (one zero row included)."""
    make = _contraction_system if dtype == torch.float64 else _complex_system
    systems = [make(12, rate, seed) for seed, rate in enumerate((0.3, 0.9, 0.99, 0.6))]
    M = torch.stack([m for m, _ in systems])
    b = torch.stack([v for _, v in systems])
    b[3] = 0
    x, info = gmres(lambda v: (M @ v.unsqueeze(-1)).squeeze(-1), b, tol=1e-12, restart=5)
    assert x.shape == b.shape and len(info.system_residuals) == 4
    for s in range(4):
        ref, flag = spla.gmres(M[s].numpy(), b[s].numpy(), rtol=1e-13, restart=5, maxiter=1000)
        assert flag == 0
        np.testing.assert_allclose(x[s].numpy(), ref, rtol=1e-9, atol=1e-10)
        assert info.system_residuals[s][-1] <= 1e-12
    assert torch.equal(x[3], torch.zeros_like(x[3]))
    alone, _ = gmres(lambda v: M[1] @ v, b[1], tol=1e-12, restart=5)
    torch.testing.assert_close(x[1], alone, rtol=1e-9, atol=1e-11)


def test_gmres_refuses_what_it_cannot_solve():
    with pytest.raises(InvalidInputError, match=r"shape \(n,\) or a batch"):
        gmres(lambda v: v, torch.ones(2, 2, 2))
    with pytest.raises(InvalidInputError, match="floating or complex"):
        gmres(lambda v: v, torch.ones(3, dtype=torch.int64))
    with pytest.raises(InvalidInputError, match="keep the shape"):
        gmres(lambda v: v.sum(0), torch.ones(2, 3))
