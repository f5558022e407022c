"""The six torch estimators against the independent NumPy reference of ``tests/reference.py``.

Everything runs in float64: make_problem's default dtype, and explicit dtypes elsewhere (this
file never relies on the global default dtype).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from retune_suite.operators import fixed_point, hypergrad
from retune_suite.operators.maps.problems import PRIORS, make_problem

from tests.reference import ESTIMATORS, NumpyProblem, reference_gradients

F64 = torch.float64

# Kink margin below which a nonsmooth instance is discarded: l1 and group_l21 are not
# differentiable where |z_i| = τw_i (resp. ‖z_g‖ = τw_g). Random continuous data hit that with
# probability 0, but a point within rounding of a kink could make torch and NumPy pick
# different branches, so instances closer than this to a kink are rejected with ``assume``.
MARGIN = 1e-8


@st.composite
def instances(draw: st.DrawFn) -> dict:
    """A valid make_problem instance plus K, T, P."""
    prior = draw(st.sampled_from(PRIORS))
    d = draw(st.integers(1, 4))
    n = d * draw(st.integers(1, 32 // d))
    rho = draw(st.sampled_from([0.0, 0.05]))
    # make_problem needs rho < mu.
    mu = draw(st.floats(0.05, 0.5, exclude_min=rho > 0))
    L = draw(st.floats(mu, 2.0))
    # One log weight per group (a constant when they are all equal), each in [-4, 0].
    log_weight = draw(st.lists(st.floats(-4.0, 0.0), min_size=d, max_size=d))
    return {
        "prior": prior,
        "n": n,
        "d": d,
        "mu": mu,
        "L": L,
        "rho": rho,
        "log_weight": torch.tensor(log_weight, dtype=F64),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "K": draw(st.integers(1, 6)),
        "T": draw(st.integers(1, 8)),
        "P": draw(st.integers(0, 6)),
    }


def build(inst: dict):
    kw = {k: inst[k] for k in ("n", "d", "mu", "L", "rho", "log_weight", "seed")}
    return make_problem(inst["prior"], dtype=F64, **kw)


def run_estimator(name: str, step, theta, x0, x_star, loss, K: int, T: int, P: int):
    if name == "deq_exact":
        return hypergrad.deq_exact(step, theta, x_star, loss, K)
    if name == "deq_solve":
        return hypergrad.deq_solve(step, theta, x_star, loss, K, tol=1e-13)
    if name == "deq_neumann":
        return hypergrad.deq_neumann(step, theta, x_star, loss, K, P)
    if name == "jfb":
        return hypergrad.jfb(step, theta, x_star, loss, K)
    if name == "retune":
        return hypergrad.retune(step, theta, x0, loss, K, T)
    if name == "unrolled":
        return hypergrad.unrolled(step, theta, x0, loss, K, T)
    raise AssertionError(name)


def assert_matches(
    got, ref: np.ndarray, what: str, scale: float = 0.0, rtol: float = 1e-10
) -> None:
    """Componentwise rtol = 1e-10, plus an absolute floor atol = 1e-12·max(‖ref‖, scale, 1e-300).

    A gradient component much smaller than the gradient's norm (e.g. a group whose coordinates
    are almost all inactive) is a difference of O(‖ref‖) terms, so it can only be reproduced to
    rounding relative to ‖ref‖, not to itself: hence the norm-relative atol. Likewise a whole
    gradient can be a cancellation of terms of size ``scale`` (the reference's natural size
    τ·max(w)·max(1, ‖x‖)·‖∇L‖; e.g. ridge with μ = L, where ∂_xφ = 0 up to rounding and
    x_1 is a difference of O(1) numbers): then only 1e-12·scale is meaningful.
    """
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    size = max(float(np.linalg.norm(ref)), float(scale), 1e-300)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-12 * size, err_msg=what)


# ---------------------------------------------------------------- torch vs NumPy reference


@pytest.mark.filterwarnings("error")  # deq/jfb warn if x_star is not a fixed point
@pytest.mark.parametrize("name", ESTIMATORS)
@settings(deadline=None, max_examples=40)
@given(inst=instances())
def test_estimator_matches_reference(name: str, inst: dict) -> None:
    problem = build(inst)
    K, T, P = inst["K"], inst["T"], inst["P"]
    x_star = fixed_point(problem.step, problem.theta, problem.x0, K).x
    ref = reference_gradients(problem, problem.x0, x_star, K, T, P)
    assume(ref["margin"] > MARGIN)
    got = run_estimator(
        name, problem.step, problem.theta, problem.x0, x_star, problem.loss, K, T, P
    )
    assert isinstance(got, torch.Tensor) and got.shape == problem.theta.shape
    assert got.dtype == F64
    assert_matches(got, ref[name], f"{name} {inst}", float(ref["scale"]))


@settings(deadline=None, max_examples=40)
@given(inst=instances(), data=st.data())
def test_reference_step_matches_problem_step(inst: dict, data: st.DataObject) -> None:
    """The NumPy φ is the library's φ (values only), at a random point."""
    problem = build(inst)
    prob = NumpyProblem.from_problem(problem)
    x = torch.tensor(
        data.draw(st.lists(st.floats(-3, 3), min_size=problem.n, max_size=problem.n)), dtype=F64
    )
    got = problem.step(x, problem.theta).numpy()
    want = prob.step(x.numpy(), problem.theta.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@settings(deadline=None, max_examples=25)
@given(inst=instances())
def test_reference_unrolled_matches_finite_differences(inst: dict) -> None:
    """Check the hand-written Jacobians of the reference itself, without torch: the unrolled
    gradient is d/dθ̃ L(φ^{KT}(x_0, θ̃)), so it must match central differences."""
    problem = build(inst)
    K, T = inst["K"], inst["T"]
    ref = reference_gradients(problem, problem.x0, problem.x0, K, T, 0)
    # Central differences with step h must not cross a kink: ask for a much larger margin.
    assume(ref["margin"] > 1e-4)
    prob = NumpyProblem.from_problem(problem)
    theta, x0 = problem.theta.numpy(), problem.x0.numpy()

    def outer(th: np.ndarray) -> float:
        x = prob.forward(x0, th, K * T)
        return 0.5 * float(np.sum((x - prob.target) ** 2))

    h = 1e-6
    fd = np.array([(outer(theta + h * e) - outer(theta - h * e)) / (2 * h) for e in np.eye(prob.d)])
    scale = max(float(np.linalg.norm(ref["unrolled"])), 1e-3)
    np.testing.assert_allclose(ref["unrolled"], fd, rtol=1e-5, atol=1e-6 * scale)


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("prior", ["ridge", "l1"])
@settings(deadline=None, max_examples=25)
@given(inst=instances())
def test_deq_matches_closed_form(prior: str, inst: dict) -> None:
    """Ridge, and l1 (an elastic net when rho > 0): DEQ = implicit differentiation."""
    inst = {**inst, "prior": prior}
    problem = build(inst)
    K = inst["K"]
    x_star = fixed_point(problem.step, problem.theta, problem.x0, K).x
    ref = reference_gradients(problem, problem.x0, x_star, K, 1, 0)
    assume(ref["margin"] > MARGIN)
    want = problem.closed_form_hypergradient(x_star).numpy()
    for name in ("deq_exact", "deq_solve"):
        got = run_estimator(name, problem.step, problem.theta, None, x_star, problem.loss, K, 1, 0)
        assert_matches(got, want, f"{name} vs closed form {inst}", float(ref["scale"]))
    assert_matches(ref["deq_exact"], want, f"reference vs closed form {inst}", float(ref["scale"]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elastic_net_closed_form_explicit(seed: int) -> None:
    """A fixed elastic-net instance with a nontrivial support."""
    problem = make_problem("l1", 16, 4, mu=0.1, L=1.5, rho=0.05, log_weight=-1.5, seed=seed)
    x_star = fixed_point(problem.step, problem.theta, problem.x0, 1).x
    support = int((x_star != 0).sum())
    assert 0 < support < 16
    want = problem.closed_form_hypergradient(x_star).numpy()
    for K in (1, 3):
        for name in ("deq_exact", "deq_solve"):
            got = run_estimator(
                name, problem.step, problem.theta, None, x_star, problem.loss, K, 1, 0
            )
            assert_matches(got, want, f"{name} K={K}")


# ---------------------------------------------------------------- a case solved by hand


def scalar_case():
    """φ(x, θ) = θx + 1, θ = 1/2, L(x) = ½(x − 3)²: x̂ = 1/(1 − θ) = 2."""

    def step(x, th):
        return th * x + 1.0

    def loss(x):
        return 0.5 * ((x - 3.0) ** 2).sum()

    theta = torch.tensor(0.5, dtype=F64)
    return step, loss, theta


def test_scalar_fixed_point() -> None:
    step, _, theta = scalar_case()
    x_star = fixed_point(step, theta, torch.zeros(1, dtype=F64), 1).x
    np.testing.assert_allclose(x_star.numpy(), [2.0], rtol=1e-14)


@pytest.mark.parametrize(
    ("name", "K", "T", "P", "expected"),
    [
        # dx̂/dθ = x̂/(1 − θ) = 4, so g = (x̂ − 3)·4 = −4, for every K (Φ_K has the same x̂).
        ("deq_exact", 1, 1, 0, -4.0),
        ("deq_solve", 1, 1, 0, -4.0),
        ("deq_exact", 2, 1, 0, -4.0),
        ("deq_solve", 3, 1, 0, -4.0),
        # JFB, K = 1: ∂_θφ(x̂) = x̂ = 2, g = (2 − 3)·2 = −2.
        ("jfb", 1, 1, 0, -2.0),
        # K = 2: Φ_2(x) = θ²x + θ + 1, ∂_θΦ_2(x̂) = 2θx̂ + 1 = 3, ∂_xΦ_2 = θ² = 1/4.
        ("jfb", 2, 1, 0, -3.0),
        ("deq_neumann", 2, 1, 0, -3.0),
        ("deq_neumann", 2, 1, 1, -3.0 * 1.25),
        ("deq_neumann", 2, 1, 2, -3.0 * (1 + 0.25 + 0.0625)),
        ("deq_neumann", 1, 1, 1, -2.0 * 1.5),  # K = 1: Σ θ^p = 1 + 1/2
        # From x_0 = 0, K = 1: x_1 = 1, x_2 = 3/2, x_3 = 7/4.
        # unrolled T = 1: dx_1/dθ = x_0 = 0.
        ("unrolled", 1, 1, 0, 0.0),
        # T = 2: dx_2/dθ = x_1 + θ·dx_1/dθ = 1, g = (3/2 − 3)·1.
        ("unrolled", 1, 2, 0, -1.5),
        # T = 3: dx_3/dθ = x_2 + θ·1 = 2, g = (7/4 − 3)·2.
        ("unrolled", 1, 3, 0, -2.5),
        # ReTune: (x_T − 3)·∂_θφ(x_{T−1}) = (x_T − 3)·x_{T−1}.
        ("retune", 1, 1, 0, 0.0),
        ("retune", 1, 2, 0, -1.5),  # (3/2 − 3)·1
        ("retune", 1, 3, 0, -1.875),  # (7/4 − 3)·3/2
        # K = 2, T = 2: x_2 = 3/2, x_4 = θ²x_2 + θ + 1 = 15/8, ∂_θΦ_2(x_2) = 2θx_2 + 1 = 5/2.
        ("retune", 2, 2, 0, (15 / 8 - 3) * 2.5),
    ],
)
def test_scalar_by_hand(name: str, K: int, T: int, P: int, expected: float) -> None:
    step, loss, theta = scalar_case()
    x0 = torch.zeros(1, dtype=F64)
    x_star = torch.tensor([2.0], dtype=F64)
    got = run_estimator(name, step, theta, x0, x_star, loss, K, T, P)
    assert isinstance(got, torch.Tensor) and got.shape == theta.shape and got.dtype == F64
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- θ as a tuple


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("prior", PRIORS)
def test_tuple_theta(name: str, prior: str) -> None:
    """θ = (θ[0] as a 0-d tensor, θ[1:] as a (1, d − 1) tensor): a tuple of the same shapes
    comes back, equal to the gradient for the concatenated θ (and to the reference)."""
    d = 4
    problem = make_problem(
        prior,
        12,
        d,
        mu=0.2,
        L=1.2,
        rho=0.05,
        seed=7,
        log_weight=torch.tensor([-1.0, -2.0, -0.5, -3.0], dtype=F64),
    )
    theta = problem.theta
    parts = (theta[0].clone(), theta[1:].reshape(1, d - 1).clone())

    def step_tuple(x, th):
        return problem.step(x, torch.cat([th[0].reshape(1), th[1].reshape(-1)]))

    K, T, P = 2, 3, 4
    x_star = fixed_point(problem.step, theta, problem.x0, K).x
    whole = run_estimator(name, problem.step, theta, problem.x0, x_star, problem.loss, K, T, P)
    split = run_estimator(name, step_tuple, parts, problem.x0, x_star, problem.loss, K, T, P)
    assert isinstance(split, tuple) and len(split) == 2
    for g, p in zip(split, parts, strict=True):
        assert isinstance(g, torch.Tensor) and g.shape == p.shape and g.dtype == F64
    joined = torch.cat([split[0].reshape(1), split[1].reshape(-1)])
    assert_matches(joined, whole.numpy(), f"{name} tuple vs single", rtol=1e-13)
    ref = reference_gradients(problem, problem.x0, x_star, K, T, P)
    assert ref["margin"] > MARGIN
    assert_matches(joined, ref[name], f"{name} tuple vs reference", float(ref["scale"]))
