"""``retune_suite.testing``: the assertions say what failed, the strategies' constants are exact,
and the user-style example file passes as a user would run it."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.operators import InvalidInputError, hypergrad, unroll
from retune_suite.operators.jacobians import jacobian_x, spectral_norm
from retune_suite.operators.maps import problems

import retune_suite.testing as rt
from retune_suite.testing import strategies as rs
from tests import strategies as suite_strategies

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/test_my_map.py"
EXAMPLE_TESTS = 6  # 2 parametrized bound checks, closed form, no verdict, 2 properties

F1 = dict(theta=[0.5], b=[0.0], x0=[-1.0], xbar=[1.0], K=1, T=1)  # docs/findings.md, F1


def args(inst: rt.Instance) -> tuple:
    return inst.step, inst.theta, inst.x0, inst.loss


# ---------------------------------------------------------------- the user-style example file


def test_example_file_passes_as_a_user_runs_it(tmp_path):
    report = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", EXAMPLE, "-p", "no:cacheprovider",
         f"--junit-xml={report}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": EXAMPLE_TESTS, "failures": 0, "errors": 0, "skipped": 0}


# ----------------------------------------------------------------------- assert_bounds_hold


def test_assert_bounds_hold_names_the_violated_statement():
    """F1's counterexample: ‖g − g^R‖ = 1.5 against (33)'s 1.0 and (42)'s 1.0; the corrected
    Theorem 2 holds (attained), so it is not listed."""
    inst = rt.affine(**F1)
    statements = ["theorem2", "corollary1", "theorem2_corrected"]
    with pytest.raises(AssertionError) as failure:
        rt.assert_bounds_hold(*args(inst), K=1, T=1, delta=inst.delta(), statements=statements)
    message = str(failure.value)
    assert message.startswith("2 of 3 statements do not hold")
    assert "K=1, T=1, P=5, delta=0.5" in message
    for name in ("theorem2", "corollary1"):
        statement = rt.STATEMENTS[name]
        assert f"  {name}: {statement.title}\n      says      {statement.says}\n" in message
    assert "Theorem 2, eq. (33), as printed" in message
    assert "Corollary 1, eq. (42), as printed" in message
    lines = (
        "observed  ‖g − g^R‖₂ = 1.500000e+00\n      bound     1.000000e+00 (observed/bound = 1.5)"
    )
    assert message.count(lines) == 2
    assert "theorem2_corrected:" not in message


def test_assert_bounds_hold_default_is_the_confirmed_statements():
    """By default the refuted printed statements are not asserted; the report still has them."""
    inst = rt.affine(**F1)
    report = rt.assert_bounds_hold(*args(inst), K=1, T=1, delta=inst.delta())
    assert report.holds["theorem2"] is False and report.holds["corollary1"] is False
    for name in ("theorem1", "lemma1", "neumann_P5", "theorem2_corrected", "corollary1_corrected"):
        assert report.holds[name] is True


def test_assert_bounds_hold_refuses_a_none_verdict():
    inst = rt.spectral_affine([0.9, -0.5, 0.2], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0] * 3, 3, 4)
    with pytest.raises(AssertionError) as failure:
        rt.assert_bounds_hold(*args(inst), K=3, T=4)  # no delta: a measured δ_K proves nothing
    message = str(failure.value)
    assert "3 of 5 statements have no verdict" in message
    assert "(pass delta=, a Lipschitz constant of Φ_K)" in message
    assert "allow_unverified=True" in message
    for name in ("theorem1", "theorem2_corrected", "corollary1_corrected"):
        assert f"  {name}: {rt.STATEMENTS[name].title}" in message
    assert "bound     " in message and " at t = T (observed/bound = " in message
    report = rt.assert_bounds_hold(*args(inst), K=3, T=4, allow_unverified=True)
    assert f"no verdict: {report.reasons['theorem1']}" in message
    assert "not a Lipschitz constant" in report.reasons["theorem1"]
    assert report.holds["theorem1"] is None and report.holds["lemma1"] is True


def test_assert_bounds_hold_passes_on_a_valid_instance():
    p = problems.make_problem("l1", n=8, d=2, mu=0.3, L=1.5, tau="optimal", log_weight=-2.0)
    inst = rt.from_problem(p, K=4, T=6)
    report = rt.assert_bounds_hold(*args(inst), K=4, T=6, delta=inst.delta(), P=3)
    assert set(report.bounds) >= {"neumann_P3", "corollary1_corrected"}
    rt.assert_bounds_hold(*args(inst), K=4, T=6, delta=inst.delta(), statements="neumann_P5")


def test_assert_bounds_hold_statement_names():
    inst = rt.affine(**F1)
    with pytest.raises(InvalidInputError, match=r"unknown statement.*theorem3"):
        rt.assert_bounds_hold(*args(inst), K=1, T=1, statements=["theorem3"])
    with pytest.raises(InvalidInputError, match="pass P=3"):
        rt.assert_bounds_hold(*args(inst), K=1, T=1, delta=0.5, statements=["neumann_P3"])

    def cauchy(x):
        return torch.log1p((x - 1.0) ** 2).sum()

    report = rt.assert_bounds_hold(inst.step, inst.theta, inst.x0, cauchy, K=1, T=1, delta=0.5)
    assert "corollary1_corrected" not in report.bounds  # skipped by default: not an MSE
    with pytest.raises(InvalidInputError, match="Corollary 1 is the case"):
        rt.assert_bounds_hold(
            inst.step, inst.theta, inst.x0, cauchy, K=1, T=1, delta=0.5, statements="corollary1"
        )


@given(rs.exact_instances())
def test_assert_bounds_hold_on_every_exact_family(inst):
    rt.assert_bounds_hold(*args(inst), K=inst.K, T=inst.T, delta=inst.delta())


# ------------------------------------------------------------------- assert_hypergrad_close


def f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_assert_hypergrad_close_diff_message():
    actual = (f64(1.0, 2.0, 3.0), torch.zeros(2, 3, dtype=torch.float64))
    expected = (f64(1.0, 2.5, 3.0), torch.zeros(2, 3, dtype=torch.float64))
    expected[1][1, 2] = 1e-3
    with pytest.raises(AssertionError) as failure:
        rt.assert_hypergrad_close(actual, expected, rtol=1e-8, names=["weights", "kernel"])
    message = str(failure.value)
    assert message.startswith("hypergradients differ in 2 of 2 tensors")
    assert "≤ 0 + 1e-08·|expected| fails" in message
    assert "  weights shape (3,): 1 of 3 entries differ" in message
    assert "max abs diff 5.000e-01 at (1,): actual 2, expected 2.5" in message
    assert "max rel diff 2.000e-01 at (1,): actual 2, expected 2.5" in message
    assert "‖actual‖₂ = 3.741657e+00, ‖expected‖₂ = 4.031129e+00" in message
    assert "‖actual − expected‖₂ = 5.000e-01 (relative 1.240e-01)" in message
    assert "  kernel shape (2, 3): 1 of 6 entries differ" in message
    assert "max abs diff 1.000e-03 at (1, 2): actual 0, expected 0.001" in message
    # atol covers the kernel's entry, the weights still differ; a close tensor takes one line
    with pytest.raises(AssertionError) as failure:
        rt.assert_hypergrad_close(actual, expected, rtol=1e-8, atol=1e-2)
    message = str(failure.value)
    assert message.startswith("hypergradients differ in 1 of 2 tensors")
    assert "  theta[1] shape (2, 3): close (max abs diff 1.000e-03, max rel diff 1.000e+00)" in (
        message
    )
    rt.assert_hypergrad_close(actual, expected, rtol=0.21, atol=1e-3)


def test_assert_hypergrad_close_structure_nan_and_dtype():
    g = f64(1.0, 2.0)
    rt.assert_hypergrad_close(g, g.clone(), rtol=0.0)
    with pytest.raises(AssertionError, match="actual is a tuple of 1 tensors, expected a tensor"):
        rt.assert_hypergrad_close((g,), g, rtol=1e-12)
    with pytest.raises(AssertionError, match=r"grad shape \(2,\): actual has shape \(3,\)"):
        rt.assert_hypergrad_close(f64(1.0, 2.0, 3.0), g, rtol=1e-12)
    with pytest.raises(AssertionError, match=r"actual is torch.float32.*\.double\(\)"):
        rt.assert_hypergrad_close(g.float(), g, rtol=1e-3)
    with pytest.raises(AssertionError, match=r"NaN at 1 entries, the first at \(1,\)"):
        rt.assert_hypergrad_close(f64(1.0, float("nan")), g, rtol=1.0, atol=10.0)
    with pytest.raises(InvalidInputError, match="names has 2 entries for 1 tensors"):
        rt.assert_hypergrad_close(g, g, rtol=1e-12, names=["a", "b"])
    with pytest.raises(InvalidInputError, match="must be finite and ≥ 0"):
        rt.assert_hypergrad_close(g, g, rtol=-1.0)


def test_assert_hypergrad_close_on_estimators_with_tuple_theta():
    inst = rt.tuple_affine(-0.8, [1.0, 0.5, -0.9], [0.0, 1.0, 2.0], [1.0] * 3, [0.0] * 3, 2, 40)
    x_star = hypergrad.estimate("jfb", *args(inst), K=2).x
    deq = hypergrad.deq_exact(inst.step, inst.theta, x_star, inst.loss, K=2)
    solve = hypergrad.deq_solve(inst.step, inst.theta, x_star, inst.loss, K=2, tol=1e-13)
    rt.assert_hypergrad_close(solve, deq, rtol=1e-9, atol=1e-13)  # two linear solves
    jfb = hypergrad.jfb(inst.step, inst.theta, x_star, inst.loss, K=2)
    with pytest.raises(AssertionError, match=r"theta\[0\] shape \(\): 1 of 1 entries differ"):
        rt.assert_hypergrad_close(jfb, deq, rtol=1e-6)  # JFB is not the DEQ gradient


# ------------------------------------------------------------- instances and their constants

EXACT = {
    "affine": rs.affine_instances(),
    "spectral_affine": rs.spectral_affine_instances(),
    "ridge": rs.ridge_instances(),
    "lasso": rs.lasso_instances(),
    "tuple": rs.tuple_instances(),
}


@pytest.mark.parametrize("family", sorted(EXACT))
@given(data=st.data())
def test_stated_omega_is_the_jacobian_norm(family, data):
    """ω equals ‖∂ₓφ(x_attained, θ)‖₂ (dense, float64) to 1e-10, and bounds it everywhere we
    look; for the symmetric families δ_K = ω^K is ‖∂ₓΦ_K‖₂ too."""
    inst = data.draw(EXACT[family])
    assert inst.dtype == torch.float64 and inst.x_attained is not None
    assert 0.0 <= inst.omega < 1.0 and inst.K >= 1 and inst.T >= 1
    jac = jacobian_x(inst.step, inst.x_attained, inst.theta)
    assert jac.dtype == torch.float64
    assert abs(spectral_norm(jac) - inst.omega) <= 1e-10, inst.description
    assert spectral_norm(jacobian_x(inst.step, inst.x0, inst.theta)) <= inst.omega + 1e-12
    Phi = unroll(inst.step, inst.K)
    norm_K = spectral_norm(jacobian_x(Phi, inst.x0, inst.theta))
    assert norm_K <= inst.delta() + 1e-12
    if family in ("affine", "ridge", "tuple") or inst.description.startswith(
        "spectral_affine(symmetric"
    ):
        assert abs(norm_K - inst.delta()) <= 1e-10, inst.description


@given(rs.problem_instances(max_n=16))
def test_problem_instances_state_the_problem_constants(inst):
    """The suite's mix keeps the builder's ω(τ): exact where ``x_attained`` is given, an upper
    bound elsewhere (logcosh, group ℓ2,1, n = 1)."""
    p = inst.problem
    assert inst.omega == p.omega and inst.delta(3) == p.delta(3)
    assert inst.description.startswith(p.prior)
    if p.prior in ("logcosh", "group_l21"):
        assert inst.x_attained is None
    norm_x0 = spectral_norm(jacobian_x(inst.step, inst.x0, inst.theta))
    assert norm_x0 <= inst.omega + 1e-12
    if inst.x_attained is not None:
        norm = spectral_norm(jacobian_x(inst.step, inst.x_attained, inst.theta))
        assert abs(norm - inst.omega) <= 1e-10, inst.description


def test_from_problem_without_an_attaining_point():
    """Unequal ridge weights, or n = 1 (the builder's spectrum is {L}): ω(τ) is an upper
    bound, and the instance says so with ``x_attained=None``."""
    p = problems.make_problem("ridge", n=6, d=3, log_weight=torch.tensor([-3.0, -1.0, 0.0]))
    inst = rt.from_problem(p, K=2, T=3)
    assert inst.x_attained is None
    assert spectral_norm(jacobian_x(inst.step, inst.x0, inst.theta)) < inst.omega
    p = problems.make_problem("l1", n=1, d=1, mu=0.5, L=1.0, tau="1/L")
    inst = rt.from_problem(p, K=1, T=1)
    assert inst.x_attained is None and inst.omega == 0.5  # the true constant is |1 − τ·1| = 0
    p = problems.make_problem("l1", n=1, d=1, mu=0.5, L=1.0, tau="1.95/L")
    assert rt.from_problem(p, K=1, T=1).x_attained is not None  # here the L end sets ω


def test_instance_api():
    inst = rt.affine([0.5, -0.8], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0], K=2, T=3)
    assert inst.omega == 0.8 and inst.delta() == 0.8**2 and inst.delta(5) == 0.8**5
    assert inst.name == inst.description and inst.description.startswith("affine(θ=[0.5, -0.8]")
    with pytest.raises(InvalidInputError, match=r"not in \[0, 1\)"):
        rt.affine([1.0], [0.0], [0.0], [0.0], K=1, T=1)
    with pytest.raises(InvalidInputError, match="b must be a vector of length 2"):
        rt.spectral_affine([0.5, 0.1], [0.0], [0.0, 0.0], [0.0, 0.0], K=1, T=1)
    with pytest.raises(InvalidInputError, match=r"\|γ\| max \|mᵢ\|"):
        rt.tuple_affine(2.0, [0.6], [0.0], [0.0], [0.0], K=1, T=1)


def test_the_suite_uses_the_public_strategies():
    """One helper in one place: tests/strategies.py re-exports retune_suite.testing's."""
    assert suite_strategies.affine is rt.affine and suite_strategies.Instance is rt.Instance
    assert suite_strategies.instances is rs.instances
    assert suite_strategies.problem_instances is rs.problem_instances


def test_assertions_import_without_hypothesis():
    """The assertions work without the ``testing`` extra; the strategies name it."""
    probe = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import retune_suite.testing as t\n"
        "assert callable(t.assert_bounds_hold) and 'retune_suite.testing.strategies' not in "
        "sys.modules\n"
        "try:\n"
        "    import retune_suite.testing.strategies\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'pip install "retune-suite[testing]"' in done.stdout
