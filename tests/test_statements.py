"""The paper's statements, as printed and corrected, as float64 property tests.

Every inequality is checked with :func:`retune_suite.bounds.verify`, whose ``holds`` allows only a
rounding margin of 1e3 float64 ulps of the magnitudes compared (``bounds/report.py``; verify
refuses other dtypes). Every constant is exact where the proofs use it
(``retune_suite.bounds.constants``).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from retune_suite.bounds import statements as S
from retune_suite.operators import fixed_point, restart

from retune_suite import bounds
from tests.strategies import Instance, affine, affine_instances, instances, problem_instances


def _note(message: str) -> None:
    try:
        note(message)
    except InvalidArgument:  # outside a hypothesis test
        pass


def run(inst: Instance, **kw) -> bounds.Report:
    _note(inst.name)
    report = bounds.verify(
        inst.step,
        inst.theta,
        inst.x0,
        inst.loss,
        K=inst.K,
        T=inst.T,
        delta=inst.delta(inst.K),
        **kw,
    )
    _note(f"K={inst.K} T={inst.T} errors={report.errors} bounds={report.bounds}")
    _note(f"constants={report.constants}")
    return report


@given(instances())
def test_theorem1_rate(inst: Instance):
    """Theorem 1: ‖x_{Kt} − x̂‖ ≤ δ_K^t ‖x₀ − x̂‖ for every t ≤ T."""
    note(inst.name)
    x_star = fixed_point(inst.step, inst.theta, inst.x0, inst.K).x
    dist0 = torch.linalg.vector_norm(inst.x0 - x_star).item()
    x = inst.x0
    eps = torch.finfo(torch.float64).eps
    for t in range(1, inst.T + 1):
        x = restart(inst.step, inst.theta, x, inst.K, 1).x
        dist = torch.linalg.vector_norm(x - x_star).item()
        # x̂ is exact to 64 ulps of ‖x̂‖; 1e3 ulps of the magnitudes is the rounding margin.
        slack = 1e3 * eps * (dist0 + torch.linalg.vector_norm(x_star).item())
        assert dist <= S.theorem1(inst.delta(inst.K), t, dist0) + slack, (t, dist)


@given(instances(), st.integers(0, 6))
def test_lemma1_and_neumann(inst: Instance, P: int):
    """Lemma 1 (29) and the Neumann truncation bound hold with the analytic δ_K."""
    report = run(inst, P=P)
    assert report.holds["lemma1"] is True, (report.errors["jfb"], report.bounds["lemma1"])
    assert report.holds[f"neumann_P{P}"] is True, (
        report.errors["neumann"],
        report.bounds[f"neumann_P{P}"],
    )


@given(instances())
def test_lemma1_with_local_delta(inst: Instance):
    """Lemma 2 needs only ‖∂_xΦ_K(x̂)‖₂ < 1, so Lemma 1 also holds with the measured δ."""
    report = run(inst)
    c = report.constants
    bound = S.lemma1(c["delta_measured"], c["grad_loss"], c["dtheta_star"])
    eps = torch.finfo(torch.float64).eps
    assert report.errors["jfb"] <= bound * (1 + 1e3 * eps) + 1e3 * eps * c["grad_loss"]
    # the measured local constant never exceeds the analytic Lipschitz constant (δ is O(1):
    # the margin is 1e3 ulps absolute, as δ_analytic can be exactly 0 when τμ = τL = 1)
    assert c["delta_measured"] <= c["delta_analytic"] + 1e3 * eps


@given(instances())
def test_theorem2_corrected(inst: Instance):
    """Theorem 2 corrected (δ_K^{T−1} on the L_θ term) holds on every family."""
    report = run(inst)
    assert report.holds["theorem2_corrected"] is True
    assert report.holds["corollary1_corrected"] is True


@pytest.mark.xfail(strict=True, reason="finding F1: Theorem 2 as printed is false")
@given(instances())
def test_theorem2_as_printed(inst: Instance):
    """Theorem 2 (33) as printed; hypothesis finds counterexamples (docs/findings.md, F1)."""
    assert run(inst).holds["theorem2"] is not False  # xfail: a proven violation exists


@pytest.mark.xfail(strict=True, reason="finding F1: Corollary 1 as printed is false")
@given(instances())
def test_corollary1_as_printed(inst: Instance):
    """Corollary 1 (42) as printed; fails with Theorem 2 (docs/findings.md, F1)."""
    assert run(inst).holds["corollary1"] is not False  # xfail: a proven violation exists


def test_theorem2_counterexample_minimal():
    """F1's minimal counterexample: φ(x,θ) = θx, θ = 1/2, x₀ = −1, x̄ = 1, K = T = 1.

    x̂ = 0, g = 0, g^R = (x₁ − x̄)·x₀ = 1.5, but (33) gives δ L_θ‖x̂−x₀‖‖x̂−x̄‖ + δ‖x̂−x₀‖‖x₀‖
    = 0.5 + 0.5 = 1.0 < 1.5. With δ^{T−1} on the L_θ term: 1.0 + 0.5 = 1.5 (attained).
    """
    report = run(affine([0.5], [0.0], [-1.0], [1.0], K=1, T=1))
    assert report.errors["retune"] == pytest.approx(1.5, rel=1e-15)
    assert report.bounds["theorem2"] == pytest.approx(1.0, rel=1e-15)
    assert report.bounds["corollary1"] == pytest.approx(1.0, rel=1e-15)
    assert report.holds["theorem2"] is False and report.holds["corollary1"] is False
    assert report.bounds["theorem2_corrected"] == pytest.approx(1.5, rel=1e-15)
    assert report.holds["theorem2_corrected"] is True
    assert report.holds["corollary1_corrected"] is True


def test_theorem2_counterexample_hypothesis_minimal():
    """The counterexample hypothesis shrinks to (ci profile): φ(x,θ) = θx at θ = 0, x₀ = x̄ = 1.

    δ_K = 0 makes every term of (33) vanish, yet x̂ = 0, g = 0 and g^R = (x₁ − x̄)·x₀ = −1.
    The corrected bound has δ_K^{T−1} = 0⁰ = 1 on the L_θ term and is attained: 1 = 1.
    """
    report = run(affine([0.0], [0.0], [1.0], [1.0], K=1, T=1))
    assert report.errors["retune"] == 1.0
    assert report.bounds["theorem2"] == 0.0 and report.holds["theorem2"] is False
    assert report.bounds["theorem2_corrected"] == 1.0
    assert report.holds["theorem2_corrected"] is True


def test_theorem2_counterexample_any_T():
    """The violation is not a T = 1 artefact: for φ = θx (x̂ = 0, x̄ = 1, x₀ = −1) and any T,
    ‖g − g^R‖ = θ^{T−1} + θ^{2T−1} while (33) gives θ^T + θ^{2T−1}."""
    for T in (1, 2, 5, 10):
        report = run(affine([0.5], [0.0], [-1.0], [1.0], K=1, T=T))
        exact = 0.5 ** (T - 1) + 0.5 ** (2 * T - 1)
        assert report.errors["retune"] == pytest.approx(exact, rel=1e-12)
        assert report.bounds["theorem2"] == pytest.approx(0.5**T + 0.5 ** (2 * T - 1), rel=1e-12)
        assert report.holds["theorem2"] is False
        assert report.holds["theorem2_corrected"] is True


def test_readme_example_attains_theorem2():
    """The README's example is an equality case of (33): error = bound = 0.375."""
    inst = affine([0.5], [1.0], [0.0], [2.0], K=1, T=3)
    report = run(inst)
    assert report.errors["retune"] == pytest.approx(0.375, rel=1e-14)
    assert report.bounds["theorem2"] == pytest.approx(0.375, rel=1e-14)
    assert report.holds["theorem2"] is True


@given(
    st.one_of(affine_instances(), problem_instances(max_n=16)),
    st.sampled_from(["logcosh", "cauchy"]),
)
def test_theorem2_corrected_non_quadratic_loss(inst: Instance, kind: str):
    """With a non-quadratic loss the corrected bound (exact secant of ∂L at (x_KT, x̂)) holds,
    on all five families (the affine one included)."""
    target = torch.linspace(-1.0, 1.0, inst.x0.numel())
    if kind == "logcosh":

        def loss(x):
            return torch.log(torch.cosh(x - target)).sum()
    else:

        def loss(x):
            return torch.log1p((x - target) ** 2).sum()

    report = bounds.verify(
        inst.step, inst.theta, inst.x0, loss, K=inst.K, T=inst.T, delta=inst.delta(inst.K)
    )
    note(f"{inst.name} {report.errors} {report.bounds}")
    assert not report.constants["loss_is_mse"]
    assert "corollary1" not in report.bounds
    assert report.holds["theorem2_corrected"] is True


@given(st.integers(1, 12), st.floats(0.0, 0.99), st.integers(0, 10_000))
def test_lemma2(n: int, omega: float, seed: int):
    """Lemma 2 (54): ‖H‖₂ = ω < 1 ⇒ ‖I − (I − H)⁻¹‖₂ ≤ ω/(1 − ω), on random H (any sign
    pattern, non-symmetric) and on its equality case H = ωI."""
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(n, n, generator=gen)
    H = omega * G / torch.linalg.matrix_norm(G, ord=2)
    eye = torch.eye(n)
    for M in (H, -omega * eye, omega * eye):
        lhs = torch.linalg.matrix_norm(eye - torch.linalg.inv(eye - M), ord=2).item()
        # I − (I − H)⁻¹ subtracts O(1) matrices (condition ≤ 200): its rounding error is
        # absolute, 1e3 ulps of 1, however small ω is
        assert lhs <= S.lemma2(omega) + 1e3 * torch.finfo(torch.float64).eps
    attained = torch.linalg.matrix_norm(eye - torch.linalg.inv(eye - omega * eye), ord=2).item()
    assert attained == pytest.approx(S.lemma2(omega), rel=1e-12, abs=1e-15)
