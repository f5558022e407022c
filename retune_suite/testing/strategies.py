r"""Hypothesis strategies that draw valid contractive instances with their exact constants.

Every strategy draws an :class:`~retune_suite.testing.instances.Instance` whose hypotheses
hold by construction (a prescribed spectral norm; a step size from the computed Lipschitz
constant), so a test that fails on one has found a bug or a false statement, never a bad
draw. Needs the ``testing`` extra: ``pip install "retune-suite[testing]"``.

==================================  ===========================================================
strategy                            family (δ_K = ω^K; ω exact for the first six)
==================================  ===========================================================
:func:`affine_instances`            θ ⊙ x + b, |θᵢ| ≤ 0.95
:func:`spectral_affine_instances`   U diag(θ) Vᵀ x + b with ‖M(θ)‖₂ = ω drawn (symmetric or not)
:func:`ridge_instances`             gradient step on ½‖Ax − y‖² + ½Σ w x², τ from μ and L
:func:`lasso_instances`             forward-backward (7) for ½‖Ax − y‖² + Σ w|x|, τ from L
:func:`tuple_instances`             θ = (γ, m, β): γ Q diag(m) Qᵀ x + β
:func:`exact_instances`             any of the five above
:func:`problem_instances`           the four priors of :mod:`~retune_suite.operators.maps.problems`
:func:`instances`                   affine and the four priors (the suite's own property tests)
==================================  ===========================================================

In :func:`problem_instances`, ``logcosh``, ``group_l21`` and n = 1 have ``x_attained`` None:
there ω(τ) is an upper bound of ‖∂ₓφ‖₂, so δ_K = ω^K is still a Lipschitz constant of Φ_K.

Examples
--------
>>> from hypothesis import given, settings
>>> from retune_suite import bounds
>>> @settings(max_examples=3, deadline=None, derandomize=True)
... @given(exact_instances())
... def test_lemma1(inst):
...     report = bounds.verify(inst.step, inst.theta, inst.x0, inst.loss,
...                            K=inst.K, T=inst.T, delta=inst.delta())
...     assert report.holds["lemma1"] is True, inst.description
>>> test_lemma1()
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
except ImportError as error:  # the ``testing`` extra is not installed
    raise ImportError(
        "retune_suite.testing.strategies needs hypothesis, which is not installed: "
        'pip install "retune-suite[testing]" (the assertions in retune_suite.testing work '
        "without it)."
    ) from error

from retune_suite.operators.maps import problems

from .instances import Instance, affine, from_problem, spectral_affine, tuple_affine

__all__ = [
    "affine_instances",
    "coordinate",
    "exact_instances",
    "instances",
    "lasso_instances",
    "problem_instances",
    "ridge_instances",
    "spectral_affine_instances",
    "tuple_instances",
]

coordinate = st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False)
"""One coordinate of b, x₀ or x̄: a finite float in [−3, 3]."""


@st.composite
def affine_instances(draw, max_n: int = 4) -> Instance:
    """φ(x, θ) = θ ⊙ x + b (:func:`~retune_suite.testing.instances.affine`), n ≤ ``max_n``,
    |θᵢ| ≤ 0.95, K ≤ 10, T ≤ 20."""
    n = draw(st.integers(1, max_n))
    vec = st.lists(coordinate, min_size=n, max_size=n)
    theta = draw(st.lists(st.floats(-0.95, 0.95, allow_subnormal=False), min_size=n, max_size=n))
    return affine(
        theta, draw(vec), draw(vec), draw(vec), draw(st.integers(1, 10)), draw(st.integers(1, 20))
    )


def _unit_ratios(draw, n: int) -> list[float]:
    """n values in [−1, 1], one of them exactly ±1 (so max |·| = 1 exactly)."""
    ratios = draw(st.lists(st.floats(-1.0, 1.0, allow_subnormal=False), min_size=n, max_size=n))
    ratios[draw(st.integers(0, n - 1))] = draw(st.sampled_from([1.0, -1.0]))
    return ratios


@st.composite
def spectral_affine_instances(draw, max_n: int = 6, max_norm: float = 0.95) -> Instance:
    r"""φ(x, θ) = U diag(θ) Vᵀ x + b with the spectral norm ω = ‖M(θ)‖₂ ∈ [0, ``max_norm``]
    drawn first (:func:`~retune_suite.testing.instances.spectral_affine`); symmetric (V = U,
    δ_K = ω^K exact) or general (ω^K an upper bound of δ_K)."""
    n = draw(st.integers(1, max_n))
    omega = draw(st.floats(0.0, max_norm))
    values = [omega * r for r in _unit_ratios(draw, n)]
    vec = st.lists(coordinate, min_size=n, max_size=n)
    return spectral_affine(
        values,
        draw(vec),
        draw(vec),
        draw(vec),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 10)),
        symmetric=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def tuple_instances(draw, max_n: int = 6, max_norm: float = 0.95) -> Instance:
    r"""θ = (γ, m, β), a 0-d tensor and two vectors: φ = γ Q diag(m) Qᵀ x + β, with
    ω = |γ| max |mᵢ| ≤ ``max_norm`` (:func:`~retune_suite.testing.instances.tuple_affine`)."""
    n = draw(st.integers(1, max_n))
    gain = draw(st.floats(0.5, 1.0)) * draw(st.sampled_from([1.0, -1.0]))
    omega = draw(st.floats(0.0, max_norm))
    values = [omega / abs(gain) * r for r in _unit_ratios(draw, n)]
    vec = st.lists(coordinate, min_size=n, max_size=n)
    return tuple_affine(
        gain,
        values,
        draw(vec),
        draw(vec),
        draw(vec),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 10)),
        seed=draw(st.integers(0, 2**16)),
    )


def _fb_problem(draw, prior: str, max_n: int, rho: float) -> problems.Problem:
    d = draw(st.integers(1, 4))
    n = d * draw(st.integers(2 if d == 1 else 1, max(2, max_n // d)))  # n ≥ 2: ω attained
    mu = draw(st.floats(0.05, 0.9))
    return problems.make_problem(
        prior,
        n=n,
        d=d,
        mu=mu,
        L=draw(st.floats(mu, 2.0)),
        rho=rho,
        tau=draw(st.sampled_from(["optimal", "1.95/L", "1/L"])),
        log_weight=draw(st.floats(-4.0, 0.0)),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def ridge_instances(draw, max_n: int = 16) -> Instance:
    r"""Ridge: φ(x, θ̃) = x − τ(Aᵀ(Ax − y) + w ⊙ x), w = exp(θ̃) (forward-backward (7) with the
    whole energy smooth), A with prescribed μ and L, τ ∈ {2/(μ+L), 1/L, 1.95/L} from them:
    ω(τ) = max(|1 − τμ|, |1 − τL|) exact, 2 ≤ n ≤ ``max_n``, K ≤ 6, T ≤ 10."""
    p = _fb_problem(draw, "ridge", max_n, rho=0.0)
    return from_problem(p, draw(st.integers(1, 6)), draw(st.integers(1, 10)))


@st.composite
def lasso_instances(draw, max_n: int = 16) -> Instance:
    r"""Lasso: φ(x, θ̃) = soft(x − τAᵀ(Ax − y), τw), w = exp(θ̃) (forward-backward (7)), A
    with prescribed μ = σ_min(A)² > 0 and L = σ_max(A)², τ ∈ {2/(μ+L), 1/L, 1.95/L}:
    ω(τ) exact (attained at ``x_attained``), 2 ≤ n ≤ ``max_n``, K ≤ 6, T ≤ 10."""
    p = _fb_problem(draw, "l1", max_n, rho=0.0)
    return from_problem(p, draw(st.integers(1, 6)), draw(st.integers(1, 10)))


def exact_instances() -> st.SearchStrategy[Instance]:
    """Any family whose ω is attained: affine, spectral affine, ridge, lasso, tuple θ."""
    return st.one_of(
        affine_instances(),
        spectral_affine_instances(),
        ridge_instances(),
        lasso_instances(),
        tuple_instances(),
    )


@st.composite
def problem_instances(draw, max_n: int = 64) -> Instance:
    """The four priors of :mod:`~retune_suite.operators.maps.problems` (ridge, logcosh, l1 with
    ρ ∈ {0, 0.01}, group ℓ2,1), n ≤ ``max_n``, K ≤ 10, T ≤ 20."""
    prior = draw(st.sampled_from(problems.PRIORS))
    d = draw(st.integers(1, 8))
    n = d * draw(st.integers(1, max(1, max_n // d)))
    mu = draw(st.floats(0.05, 0.9))
    L = draw(st.floats(mu, 2.0))
    rho = draw(st.sampled_from([0.0, 0.01])) if mu > 0.01 else 0.0
    p = problems.make_problem(
        prior,
        n=n,
        d=d,
        mu=mu,
        L=L,
        rho=rho,
        tau=draw(st.sampled_from(["optimal", "1.95/L", "1/L"])),
        log_weight=draw(st.floats(-4.0, 0.0)),
        seed=draw(st.integers(0, 2**16)),
    )
    return from_problem(
        p,
        draw(st.integers(1, 10)),
        draw(st.integers(1, 20)),
        description=f"{prior}(n={n}, d={d}, μ={mu:.3g}, L={L:.3g}, ρ={rho}, τ={p.tau:.4g})",
    )


def instances() -> st.SearchStrategy[Instance]:
    """Affine maps and the four priors of :mod:`~retune_suite.operators.maps.problems` (the mix
    the suite's own property tests draw)."""
    return st.one_of(affine_instances(), problem_instances())
