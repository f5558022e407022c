"""Dense work and unrolled graphs are sized before they start (issue 26, item 4).

The audit: ``bounds.verify`` with n = 10⁵ and a given δ asked the allocator for 80 GB
(``torch.eye(d)`` in ``jacobian_theta``) and died with the allocator's message;
``hypergrad.unrolled(..., K=1, T=10**7)`` on n = 3 died with ``std::bad_alloc`` after 25 s at
5.4 GiB. Both now refuse before any step runs, naming the size, the limit and the matrix-free
alternative. No test allocates anything large: the refusals happen before the work, and the
limits are set (``limit_memory`` or ``$RETUNE_MEMORY_LIMIT``) so the outcome does not depend on
the machine.
"""

from __future__ import annotations

import logging

import pytest
import torch
from retune_suite.bounds import constants as C
from retune_suite.operators import (
    MemoryGuardError,
    RetuneError,
    hypergrad,
    jacobians,
    memory,
    unroll,
)
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.memory import (
    ENV,
    GraphGuard,
    available_memory,
    check_dense,
    limit_memory,
    memory_limit,
    parse_size,
)

from retune_suite import bounds

F64 = torch.float64


class Counting:
    """φ(x, θ) = x − ½(θ ⊙ x − b), counting its calls (δ = max |1 − θ/2| = 0.75 at θ = ½)."""

    def __init__(self, n: int):
        self.b = torch.linspace(0.0, 1.0, n, dtype=F64)
        self.calls = 0

    def __call__(self, x, th):
        self.calls += 1
        return x - 0.5 * (th * x - self.b)


def _mse(x):
    return 0.5 * ((x - 1.0) ** 2).sum()


@pytest.fixture(autouse=True)
def _no_limit_from_outside(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


# -- the two audit cases ---------------------------------------------------------------------


def test_verify_with_n_1e5_refuses_before_any_step(monkeypatch):
    n = 10**5
    step, theta = Counting(n), torch.full((n,), 0.5, dtype=F64)
    monkeypatch.setenv(ENV, "64GiB")
    with pytest.raises(MemoryGuardError) as caught:
        bounds.verify(step, theta, torch.zeros(n, dtype=F64), _mse, K=1, T=3, delta=0.75)
    message = str(caught.value)
    # 4 dense n×d float64 matrices (∂_θΦ_K at two points, their difference, the SVD's copy)
    assert caught.value.nbytes == 4 * n * n * 8
    assert "298.0 GiB (100000 × 100000 float64, 4 copies)" in message
    assert "limit of 64.0 GiB set by $RETUNE_MEMORY_LIMIT" in message
    assert "hypergrad.estimate" in message  # the matrix-free alternative
    assert step.calls == 0  # refused before any work


def test_verify_with_n_1e5_refuses_at_the_default_limit():
    n = 10**5
    available = available_memory("cpu")
    if available is None or available >= 4 * n * n * 8:
        pytest.skip("needs a machine whose free memory is known and under 298 GiB")
    step, theta = Counting(n), torch.full((n,), 0.5, dtype=F64)
    with pytest.raises(MemoryGuardError, match="of the memory available on cpu"):
        bounds.verify(step, theta, torch.zeros(n, dtype=F64), _mse, K=1, T=3, delta=0.75)
    assert step.calls == 0


def test_unrolled_with_K_T_1e7_on_n_3_refuses_before_any_step():
    step, theta = Counting(3), torch.full((3,), 0.5, dtype=F64)
    with limit_memory("4GiB"), pytest.raises(MemoryGuardError) as caught:
        hypergrad.unrolled(step, theta, torch.zeros(3, dtype=F64), _mse, K=1, T=10**7)
    message = str(caught.value)
    assert "K·T = 10000000 recorded steps" in message
    assert "limit of 4.0 GiB set by limit_memory()" in message
    assert "hypergrad.retune" in message
    assert step.calls == 0


def test_equilibrium_unrolled_refuses_before_any_step():
    """The layer's unrolled backward records the same K·T graph and is sized the same way."""
    from retune_suite.operators import equilibrium

    step = Counting(3)
    theta = torch.full((3,), 0.5, dtype=F64, requires_grad=True)
    with limit_memory("4GiB"), pytest.raises(MemoryGuardError) as caught:
        equilibrium(step, theta, torch.zeros(3, dtype=F64), K=1, T=10**7, backward="unrolled")
    assert "equilibrium(backward='unrolled')'s graph" in str(caught.value)
    assert "backward='retune'" in str(caught.value)
    assert step.calls == 0


def test_unrolled_measures_a_block_and_refuses_a_graph_of_large_steps():
    # each step saves its 80 kB iterate: the lower estimate per step (graph nodes only) fits
    # in 1 GiB for T = 10⁵, the measured third block does not (T × 80 kB = 8 GB)
    n, T = 10**4, 10**5
    step, theta = Counting(n), torch.full((n,), 0.5, dtype=F64)
    with limit_memory("1GiB"), pytest.raises(MemoryGuardError) as caught:
        hypergrad.unrolled(step, theta, torch.zeros(n, dtype=F64), _mse, K=1, T=T)
    assert step.calls == 3  # refused after the third block, the one measured
    assert caught.value.nbytes >= T * n * 8
    assert "measured on the third" in str(caught.value)


# -- small problems still work ---------------------------------------------------------------


def test_small_problems_are_unchanged_by_the_guards():
    n = 3
    theta, x0 = torch.full((n,), 0.5, dtype=F64), torch.zeros(n, dtype=F64)
    step = Counting(n)
    g = hypergrad.unrolled(step, theta, x0, _mse, K=2, T=6)
    with limit_memory("none"):
        g_free = hypergrad.unrolled(step, theta, x0, _mse, K=2, T=6)
    torch.testing.assert_close(g, g_free, rtol=0, atol=0)
    report = bounds.verify(step, theta, x0, _mse, K=2, T=6, delta=0.75**2)
    assert report.holds["theorem2"] is True


def test_jacobian_theta_in_chunks_equals_the_dense_reference(monkeypatch):
    # 4 entries a chunk with n = 2: columns pushed 2, 2, 2, 1 at a time (d = 7, never a d×d
    # identity)
    monkeypatch.setattr(jacobians, "CHUNK_ENTRIES", 4)
    W = torch.arange(14, dtype=F64).reshape(2, 7) / 10

    def Phi(x, th):
        return torch.tanh(W @ th) * x + W @ (th**2)

    x, th = torch.tensor([0.3, -0.2], dtype=F64), torch.linspace(-1, 1, 7, dtype=F64)
    J = jacobians.jacobian_theta(Phi, x, th)
    reference = torch.autograd.functional.jacobian(lambda t: Phi(x, t), th)
    torch.testing.assert_close(J, reference, rtol=1e-12, atol=0)


# -- every dense place refuses, naming its alternative ---------------------------------------


@pytest.mark.parametrize(
    ("call", "alternative"),
    [
        (lambda s, th, x: jacobians.jacobian_x(unroll(s, 1), x, th), "hypergrad.deq_solve"),
        (lambda s, th, x: jacobians.jacobian_theta(unroll(s, 1), x, th), "adjoint_theta"),
        (lambda s, th, x: jacobians.spectral_norm(torch.ones(64, 64)), "power_iteration"),
        (lambda s, th, x: C.delta_measured(unroll(s, 1), x, th, method="dense"), "power_norm_x"),
        (lambda s, th, x: C.dtheta_norm(unroll(s, 1), x, th), "hypergrad.estimate"),
        (lambda s, th, x: C.hessian_norm(_mse, x), "hessian_power_norm"),
        (lambda s, th, x: hypergrad.deq_exact(s, th, x, _mse, K=1), "hypergrad.deq_solve"),
    ],
    ids=["jacobian_x", "jacobian_theta", "svd", "delta_measured", "dtheta", "hessian", "deq"],
)
def test_dense_work_over_the_limit_is_refused_before_it_starts(call, alternative):
    n = 64  # one 64 × 64 float64 matrix is 32 KiB: over a 16 KiB limit
    step, theta = Counting(n), torch.full((n,), 0.5, dtype=F64)
    with limit_memory("16KiB"), pytest.raises(MemoryGuardError, match=alternative) as caught:
        call(step, theta, torch.zeros(n, dtype=F64))
    assert "over the limit of 16.0 KiB" in str(caught.value)
    assert step.calls == 0


def test_the_matrix_free_alternative_runs_under_the_same_limit():
    n = 64
    step, theta = Counting(n), torch.full((n,), 0.5, dtype=F64)
    x_star = step.b / 0.5  # θ ⊙ x = b: the fixed point
    with limit_memory("16KiB"):
        with pytest.raises(MemoryGuardError):
            hypergrad.deq_exact(step, theta, x_star, _mse, K=1)
        g = hypergrad.deq_solve(step, theta, x_star, _mse, K=1)
    torch.testing.assert_close(g, hypergrad.deq_exact(step, theta, x_star, _mse, K=1))


# -- the limit and its overrides ---------------------------------------------------------------


def test_the_environment_variable_sets_the_limit_and_limit_memory_overrides_it(monkeypatch):
    def dense():
        check_dense("a test matrix", 100, 100, F64, "cpu", alternative="products")

    monkeypatch.setenv(ENV, "50kB")
    assert memory_limit("cpu") == (50_000, f"set by ${ENV}")
    with pytest.raises(MemoryGuardError, match=r"78.1 KiB \(100 × 100 float64\)"):
        dense()
    with limit_memory("1MiB"):
        dense()  # the block's limit wins over the environment's
    with limit_memory("none"):
        dense()
    monkeypatch.setenv(ENV, "off")
    dense()
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(InvalidInputError, match=r"\$RETUNE_MEMORY_LIMIT: .*'lots' is not a size"):
        dense()


def test_memory_already_held_counts_against_the_memory_available_only(monkeypatch):
    # three blocks of an unrolled graph are held when it is measured: the memory available
    # no longer has them, a limit that is set still covers them
    monkeypatch.setattr(memory, "available_memory", lambda device: 1000)
    memory.check_memory("g", 1500, "cpu", alternative="a", held=600)
    with pytest.raises(MemoryGuardError, match="of the memory available on cpu"):
        memory.check_memory("g", 1500, "cpu", alternative="a")
    with limit_memory(1000), pytest.raises(MemoryGuardError, match="set by limit_memory"):
        memory.check_memory("g", 1500, "cpu", alternative="a", held=600)


def test_sizes_parse_with_units():
    assert parse_size("8GiB") == 8 * 2**30
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2.5e9") == 2_500_000_000
    assert parse_size(4096) == 4096
    assert parse_size("inf") == float("inf")
    for bad in ("-1", "0", "ten", "5 parsecs"):
        with pytest.raises(InvalidInputError):
            parse_size(bad)


def test_the_error_is_a_suite_error_and_a_memory_error():
    with limit_memory(1000), pytest.raises(MemoryGuardError) as caught:
        check_dense("m", 100, 100, F64, "cpu", alternative="products")
    error = caught.value
    assert isinstance(error, RetuneError) and isinstance(error, MemoryError)
    assert (error.nbytes, error.limit, error.alternative) == (80_000, 1000, "products")


def test_the_memory_available_is_read_on_this_machine():
    available = available_memory("cpu")
    assert available is None or available > 0
    assert available_memory("meta") is None  # unknown: nothing is checked there
    if torch.cuda.is_available():
        assert available_memory("cuda") > 0


# -- long loops: progress -----------------------------------------------------------------------


def test_a_long_unrolled_loop_logs_its_progress(monkeypatch, caplog):
    monkeypatch.setattr(GraphGuard, "PROGRESS_SECONDS", 0.0)  # every loop counts as long
    step, theta = Counting(3), torch.full((3,), 0.5, dtype=F64)
    with caplog.at_level(logging.INFO, logger="retune_suite.operators.memory"):
        hypergrad.unrolled(step, theta, torch.zeros(3, dtype=F64), _mse, K=2, T=6)
    messages = [r.getMessage() for r in caplog.records]
    assert any("6 blocks of K = 2 steps" in m for m in messages)
    assert any("block 6 of 6 (100%)" in m for m in messages)


def test_a_short_unrolled_loop_is_silent(caplog):
    step, theta = Counting(3), torch.full((3,), 0.5, dtype=F64)
    with caplog.at_level(logging.INFO, logger="retune_suite.operators.memory"):
        hypergrad.unrolled(step, theta, torch.zeros(3, dtype=F64), _mse, K=2, T=6)
    assert not caplog.records
