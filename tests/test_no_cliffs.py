"""No cliffs (issue 28, item 4): ``verify`` takes dense matrices only where they decide something.

Between ``EAGER_DENSE_LIMIT`` and ``DENSE_LIMIT`` (32×32 colour crops: n = 3072) a dense
∂ₓΦ_K(x) costs n products of Φ_K and its SVD O(n³): at that size the old path (every dense
quantity up front) took 331–623 s per ``retune-suite verdicts`` grid point, against 7 s at
48×48 (matrix-free). These tests pin, by counting the dense matrices formed (not by timing:
time targets live in ``benchmarks/verdicts_before_after.py``), that with the analytic δ and H
``verify`` forms none unless one decides a verdict, and that every verdict is the one the
all-dense path gives. The eager path is lowered to n = 0 so that small exact problems take the
lean one.
"""

from __future__ import annotations

import pytest
import torch
from retune_suite.bounds import constants as C
from retune_suite.bounds import report as R
from retune_suite.operators import hypergrad, unroll
from retune_suite.operators.hypergrad import estimators
from retune_suite.operators.jacobians import jacobian_x, spectral_norm
from retune_suite.operators.maps import problems

from retune_suite import bounds
from retune_suite.testing.instances import from_problem

F64 = torch.float64


@pytest.fixture
def dense_counts(monkeypatch):
    """Counts of the dense n×n matrices verify forms: ∂ₓΦ_K (deq_exact's and the SVDs') and
    the Hessian ∂ₓₓL."""
    counts = {"jacobian_x": 0, "hessian": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(estimators, "jacobian_x", counted("jacobian_x", estimators.jacobian_x))
    monkeypatch.setattr(C, "jacobian_x", counted("jacobian_x", C.jacobian_x))
    monkeypatch.setattr(C, "hessian_norm", counted("hessian", C.hessian_norm))
    return counts


def _ridge():
    """The ridge problem of issue 25 (μ = 0.11, L = 1, τ = 1/L: δ = 0.89), n = 16, T = 5, with
    its true constants: δ = ‖∂ₓΦ_K‖₂ (Φ_K is affine), H = 1 (½‖x − x̄‖²), L_θ an upper bound."""
    p = problems.make_problem(
        "ridge", n=16, d=4, mu=0.11, L=1.0, tau="1/L", log_weight=-12.0, seed=0
    )
    inst = from_problem(p, K=1, T=5)
    delta = spectral_norm(jacobian_x(unroll(inst.step, inst.K), inst.x0, inst.theta))
    return inst, {"delta": delta, "hessian_bound": 1.0, "lipschitz_theta": 10.0}


def _verify(inst, consts, **kwargs) -> bounds.Report:
    return bounds.verify(
        inst.step, inst.theta, inst.x0, inst.loss, K=inst.K, T=inst.T, **consts, **kwargs
    )


def _verdicts(report: bounds.Report) -> dict:
    return {**report.holds, **{f"certificate_{k}": v for k, v in report.certificate_holds.items()}}


def test_eager_path_takes_every_dense_matrix(dense_counts):
    """Up to EAGER_DENSE_LIMIT (n = 16 here) the all-dense path as before: ∂ₓΦ_K at x̂ twice
    (deq_exact, the SVD), once per restart, and the dense Hessian."""
    inst, consts = _ridge()
    report = _verify(inst, consts)
    assert dense_counts == {"jacobian_x": 2 + inst.T, "hessian": 1}
    assert report.constants["reference"].startswith("deq_exact")


def test_analytic_constants_take_no_dense_matrix(dense_counts, monkeypatch):
    """With δ, H and L_θ given, no dense ∂ₓΦ_K and no dense Hessian where none decides a
    verdict, and the verdicts and certificates are the all-dense path's."""
    inst, consts = _ridge()
    eager = _verify(inst, consts)
    monkeypatch.setattr(R, "EAGER_DENSE_LIMIT", 0)
    before = dict(dense_counts)
    lean = _verify(inst, consts)
    assert dense_counts == before, "a dense matrix was formed that no verdict needed"
    assert _verdicts(lean) == _verdicts(eager)
    assert all(v is True for v in _verdicts(lean).values()), lean.reasons
    assert lean.refuted == {}
    assert lean.constants["reference"].startswith("deq_solve")
    assert lean.constants["hess_loss_source"].startswith("given")
    for name, error in lean.errors.items():  # the solve's error is within its bounded error
        assert error == pytest.approx(eager.errors[name], rel=1e-9, abs=1e-12), name


def test_an_open_verdict_takes_the_dense_reference(dense_counts, monkeypatch):
    """φ = θx + 1, θ = ½, L = ½(x − 2)²: Lemma 1 is attained at the rounding floor
    (‖∂ₓL(x̂)‖ ~ 1e-14), so the matrix-free reference's own error leaves it open; the dense
    reference (one ∂ₓΦ_K(x̂)) is then computed and decides it, as on the all-dense path."""
    step = lambda x, th: th * x + 1.0  # noqa: E731
    loss = lambda x: 0.5 * ((x - 2.0) ** 2).sum()  # noqa: E731
    theta, x0 = torch.tensor([0.5], dtype=F64), torch.zeros(1, dtype=F64)
    kw = dict(K=1, T=3, delta=0.5, hessian_bound=1.0, lipschitz_theta=2.0)
    eager = bounds.verify(step, theta, x0, loss, **kw)
    monkeypatch.setattr(R, "EAGER_DENSE_LIMIT", 0)
    before = dict(dense_counts)
    lean = bounds.verify(step, theta, x0, loss, **kw)
    assert dense_counts["jacobian_x"] - before["jacobian_x"] == 1
    assert dense_counts["hessian"] == before["hessian"]
    assert lean.constants["reference"].startswith("deq_exact")
    assert _verdicts(lean) == _verdicts(eager)
    assert lean.holds["lemma1"] is True


def test_a_bracketed_hessian_takes_the_dense_hessian_only_when_open(dense_counts, monkeypatch):
    """The printed Theorem 2 is attained here (0.375): with ‖∂ₓₓL(x̂)‖₂ known only in
    [0, H] (a power iteration may return any lower bound; 0 is one) neither end decides it, so
    the dense Hessian is taken once and the verdict is the all-dense path's."""
    step = lambda x, th: th * x + 1.0  # noqa: E731
    loss = lambda x: 0.5 * ((x - 2.0) ** 2).sum()  # noqa: E731
    theta, x0 = torch.tensor([0.5], dtype=F64), torch.zeros(1, dtype=F64)
    kw = dict(K=1, T=3, delta=0.5, hessian_bound=1.0, lipschitz_theta=2.0)
    eager = bounds.verify(step, theta, x0, loss, **kw)
    monkeypatch.setattr(R, "EAGER_DENSE_LIMIT", 0)
    monkeypatch.setattr(C, "hessian_power_norm", lambda *a, **k: 0.0)
    before = dict(dense_counts)
    lean = bounds.verify(step, theta, x0, loss, **kw)
    assert dense_counts["hessian"] - before["hessian"] == 1
    assert lean.constants["hess_loss_source"] == "dense Hessian, SVD"
    assert lean.holds["theorem2"] is True and _verdicts(lean) == _verdicts(eager)


def test_lean_path_still_refutes_a_wrong_delta(dense_counts, monkeypatch):
    """δ = 0.3 against the true 0.89, no dense matrix: the products ∂ₓΦ_K(x)ᵀv at x̂ and at
    the restarts (each a lower bound of ‖∂ₓΦ_K(x)‖₂) refute it, and no bound gets a verdict."""
    inst, consts = _ridge()
    monkeypatch.setattr(R, "EAGER_DENSE_LIMIT", 0)
    report = _verify(inst, {**consts, "delta": 0.3})
    assert dense_counts == {"jacobian_x": 0, "hessian": 0}
    assert report.refuted["delta"].startswith("given δ = 0.3 is refuted: measured ‖∂ₓΦ_K(x")
    assert all(v is None for v in report.holds.values())
    assert all(v is None for v in report.certificate_holds.values())


def test_without_delta_the_all_dense_path(dense_counts, monkeypatch):
    """With δ measured, ‖∂ₓΦ_K(x̂)‖₂ by SVD is Lemma 1's certified constant and deq_exact the
    only reference with a bounded error: the path stays the all-dense one at every n ≤
    DENSE_LIMIT (the restarts' norms too: a converged power iteration cost more than the SVD
    on the fields of experts)."""
    inst, _ = _ridge()
    monkeypatch.setattr(R, "EAGER_DENSE_LIMIT", 0)
    report = _verify(inst, {})
    assert dense_counts == {"jacobian_x": 2 + inst.T, "hessian": 1}
    assert report.holds["lemma1"] is True
    assert "dense SVD" in report.constants["delta_source"]


def test_hypergrad_dense_limit_still_switches_to_matrix_free(dense_counts, monkeypatch):
    """Beyond DENSE_LIMIT nothing dense is formed, even where a verdict is left open."""
    monkeypatch.setattr(hypergrad, "DENSE_LIMIT", 3)
    inst, consts = _ridge()
    report = _verify(inst, consts)
    assert dense_counts == {"jacobian_x": 0, "hessian": 0}
    assert report.constants["reference"].startswith("deq_solve")
