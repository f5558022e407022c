"""hypergrad.estimate: the estimators' gradients, exactly, and a certificate that bounds the
true error without x̂ (``docs/findings.md, section C``).

Float64. The certificates are checked on families where every constant is rigorous:

- affine maps φ = θ ⊙ x + b (``affine_instances``): δ_K = max|θᵢ|^K, ∂_xΦ_K constant
  (L_x = 0), ∂_θΦ_K(x) = diag(Kθ^{K−1} ⊙ x + c) so L_θ = K max|θᵢ|^{K−1} exactly;
- gradient descent on the ridge problem (``problem_instances`` filtered to ``ridge``): Φ_K is
  affine in x, so L_x = 0 and ∂_θΦ_K(x) is affine in x; :func:`affine_lipschitz_theta` gives
  an upper bound of its Lipschitz constant (spectral ≤ Frobenius norm of the constant mixed
  derivative), exact on the affine family (checked).

The loss is ½‖x − x̄‖² (H = 1 exactly). The reference g is ``deq_exact`` at
``retune_suite.operators.fixed_point``'s x̂_c, whose own distance to the true g is bounded by the
same
Proposition 2 at x̂_c, its residual counted to 1e3 ulps of ‖x̂_c‖ (:func:`truth`): the check is
‖g_ref − grad‖ ≤ certificate + reference bound + a rounding allowance of 1e3 float64 ulps of
the gradient magnitudes compared (the allowance of ``bounds/report.py``; not a loosening).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import example, given, note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from retune_suite.bounds import statements as S
from retune_suite.bounds.report import FP_ULPS
from retune_suite.operators import InvalidInputError, fixed_point, hypergrad, restart, unroll
from retune_suite.operators.hypergrad.certificate import METHODS, Estimate, implicit_certificate
from retune_suite.operators.jacobians import jacobian_theta, mixed_derivative, spectral_norm

from tests.strategies import Instance, affine, affine_instances, instances, problem_instances

EPS = torch.finfo(torch.float64).eps

ridge_instances = problem_instances(max_n=16).filter(lambda inst: inst.name.startswith("ridge"))
certified_instances = st.one_of(affine_instances(), ridge_instances)


def affine_lipschitz_theta(inst: Instance) -> float:
    """An upper bound of L_θ for a Φ_K affine in x: ∂_θΦ_K(x) = A + N(x), N linear, and
    ‖N(v)‖₂ ≤ ‖N(v)‖_F = ‖M v‖ ≤ ‖M‖₂‖v‖, M the (n·d)×n matrix of the mixed derivative."""
    Phi = unroll(inst.step, inst.K)
    n = inst.x0.numel()
    eye = torch.eye(n, dtype=inst.x0.dtype)
    cols = [mixed_derivative(Phi, inst.x0, inst.theta, eye[k]).reshape(-1) for k in range(n)]
    return spectral_norm(torch.stack(cols, dim=1))


def constants(inst: Instance) -> dict:
    return {
        "delta": inst.delta(inst.K),
        "lipschitz_theta": affine_lipschitz_theta(inst),
        "hessian_bound": 1.0,
        "lipschitz_x": 0.0,
    }


def norm(g) -> float:
    leaves = (g,) if isinstance(g, torch.Tensor) else tuple(g)
    return torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in leaves])).item()


def call(inst: Instance, method: str, **kw) -> Estimate:
    return hypergrad.estimate(method, inst.step, inst.theta, inst.x0, inst.loss, K=inst.K, **kw)


def truth(inst: Instance, consts: dict) -> tuple[torch.Tensor, float]:
    """The reference g = deq_exact at x̂_c and a bound on its distance to the true g.

    The bound is Proposition 2 (``implicit_certificate``, L_x = 0, direct solve) with
    ρ = (s + 1e3 ulps·‖x̂_c‖)/(1 − δ): the computed residual s of x̂_c can be exactly 0 while
    x̂ itself is representable only to ½ ulp, and ∂_xL(x̂) = x̂ − x̄ can cancel (found by
    hypothesis: θ = 1e-12, b = 1, x₀ = 0, x̄ = 1, where g = 1e-12 and x̂_c − x̄ is off by 9e-17).
    """
    x_hat = fixed_point(inst.step, inst.theta, inst.x0, inst.K).x
    ref = call(inst, "deq_exact", x_star=x_hat, **consts)
    delta = consts["delta"]
    s = ref.certificate_source["terms"]["residual"]
    rho = (s + FP_ULPS * EPS * torch.linalg.vector_norm(x_hat).item()) / (1 - delta)
    G = norm(hypergrad.loss_gradient(inst.loss, x_hat))
    beta = spectral_norm(jacobian_theta(unroll(inst.step, inst.K), x_hat, inst.theta))
    bound = implicit_certificate(delta, G, beta, rho, consts["lipschitz_theta"], 1.0, 0.0, 0.0)
    return ref.grad, bound


def _note(message: str) -> None:
    try:
        note(message)
    except InvalidArgument:  # outside a hypothesis test (the pinned examples)
        pass


def check_bound(est: Estimate, g: torch.Tensor, ref_cert: float) -> None:
    assert est.certificate is not None
    assert est.certificate_source["status"] == "certified"
    error = norm(est.grad - g)
    allowance = FP_ULPS * EPS * (norm(g) + norm(est.grad) + est.certificate)
    _note(f"error {error:.6e}, certificate {est.certificate:.6e}, reference {ref_cert:.2e}")
    assert error <= est.certificate + ref_cert + allowance


def matching(inst: Instance, method: str, T: int, P: int, x_star: torch.Tensor | None = None):
    """What the function of retune_suite.operators.hypergrad returns for the same arguments."""
    if method == "retune":
        return hypergrad.retune(inst.step, inst.theta, inst.x0, inst.loss, inst.K, T)
    if method == "unrolled":
        return hypergrad.unrolled(inst.step, inst.theta, inst.x0, inst.loss, inst.K, T)
    if x_star is None:
        x_star = fixed_point(inst.step, inst.theta, inst.x0, inst.K).x
    args = (inst.step, inst.theta, x_star, inst.loss, inst.K)
    if method == "deq_neumann":
        return hypergrad.deq_neumann(*args, P)
    return getattr(hypergrad, method)(*args)


# ------------------------------------------------------------------------------------------
# The gradient is the estimator's, exactly.
# ------------------------------------------------------------------------------------------


@given(instances(), st.sampled_from(METHODS), st.integers(0, 4))
def test_grad_equals_estimator_exactly(inst: Instance, method: str, P: int):
    _note(inst.name)
    T = min(inst.T, 8)
    est = call(inst, method, T=T, P=P)
    want = matching(inst, method, T, P)
    assert torch.equal(est.grad, want)
    if method in ("retune", "unrolled"):
        run = restart(inst.step, inst.theta, inst.x0, inst.K, T)
        assert torch.equal(est.x, run.x)
        assert est.stats.forward.blocks == T
        assert torch.allclose(est.stats.forward.residuals, run.stats.residuals, rtol=0, atol=0)
    else:
        assert est.stats.forward is not None and est.stats.forward.converged
    assert (est.stats.backward is not None) == (method == "deq_solve")
    assert est.certificate is None  # no constants given
    assert "missing constant" in est.certificate_source["reason"]


def test_tuple_theta_structure():
    a = torch.tensor([0.5, -0.3], dtype=torch.float64)
    b = torch.tensor(0.7, dtype=torch.float64)

    def step(x, theta):
        return theta[0] * x + theta[1]

    def loss(x):
        return 0.5 * (x**2).sum()

    x0 = torch.zeros(2, dtype=torch.float64)
    est = hypergrad.estimate("retune", step, (a, b), x0, loss, K=2, T=4, delta=0.25,
                             lipschitz_theta=2 * 0.5, hessian_bound=1.0)  # fmt: skip
    want = hypergrad.retune(step, (a, b), x0, loss, 2, 4)
    assert all(torch.equal(u, v) for u, v in zip(est.grad, want, strict=True))
    assert est.certificate is not None


def test_lipschitz_theta_helper_is_exact_on_affine_family():
    inst = affine([0.5, -0.8, 0.3], [1.0, 0.0, -1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], 3, 2)
    assert affine_lipschitz_theta(inst) == pytest.approx(3 * 0.8**2, rel=1e-14)


# ------------------------------------------------------------------------------------------
# The certificate bounds the true error.
# ------------------------------------------------------------------------------------------


@given(certified_instances, st.sampled_from(["retune", "unrolled"]))
def test_certificate_bounds_error_restarted(inst: Instance, method: str):
    _note(inst.name)
    consts = constants(inst)
    g, ref_cert = truth(inst, consts)
    check_bound(call(inst, method, T=inst.T, **consts), g, ref_cert)


def test_certificate_pinned_cancellation():
    """Pinned hypothesis example: θ = 1e-12, b = 1, x₀ = 0, x̄ = 1, K = T = 1. The ReTune
    certificate δ/(1−δ)³ is attained (g = θ/(1−θ)³, g^R = 0), and the reference's own
    rounding (x̂_c − x̄ off by 9e-17) is what :func:`truth` must account for."""
    inst = affine([1e-12], [1.0], [0.0], [1.0], 1, 1)
    consts = constants(inst)
    g, ref_bound = truth(inst, consts)
    est = call(inst, "retune", T=1, **consts)
    assert est.grad.item() == 0.0
    assert est.certificate == pytest.approx(1e-12 / (1 - 1e-12) ** 3, rel=1e-15)
    check_bound(est, g, ref_bound)


@given(
    certified_instances,
    st.sampled_from(["jfb", "deq_neumann", "deq_solve", "deq_exact"]),
    st.integers(0, 6),
    st.integers(0, 20),
    st.booleans(),
)
def test_certificate_bounds_error_implicit(
    inst: Instance, method: str, P: int, t: int, with_lipschitz_x: bool
):
    """At x̂ (t = 0) or at the iterate x_{Kt} used as x_star (not a fixed point): the residual
    ‖Φ_K(x_s) − x_s‖/(1−δ) accounts for the distance to x̂. Without L_x, the JFB certificate
    plus the computed ‖grad − g^JF‖."""
    _note(inst.name)
    consts = constants(inst)
    g, ref_cert = truth(inst, consts)
    if not with_lipschitz_x:
        consts.pop("lipschitz_x")
    x_star = None if t == 0 else restart(inst.step, inst.theta, inst.x0, inst.K, t).x
    with warnings.catch_warnings():  # linearise warns that x_{Kt} is not a fixed point
        warnings.simplefilter("ignore", UserWarning)
        est = call(inst, method, P=P, x_star=x_star, **consts)
    check_bound(est, g, ref_cert)


@given(certified_instances, st.sampled_from(["deq_solve", "deq_exact", "deq_neumann"]))
def test_implicit_certificate_vanishes_at_fixed_point(inst: Instance, method: str):
    """With L_x, the certificate of the DEQ gradients at x̂_c is of the order of its residual
    (not vacuous): for P = 40 the Neumann tail δ^{41}/(1−δ) is the only other term."""
    _note(inst.name)
    consts = constants(inst)
    est = call(inst, method, P=40, **consts)
    delta = consts["delta"]
    G = norm(hypergrad.loss_gradient(inst.loss, est.x))
    beta = spectral_norm(jacobian_theta(unroll(inst.step, inst.K), est.x, inst.theta))
    terms = est.certificate_source["terms"]
    assert est.certificate <= terms["implicit"]
    if method == "deq_neumann":
        assert terms["inner"] == pytest.approx(delta**41 * G / (1 - delta), rel=1e-14)
    # the rest is driven by the residual at x̂_c: ≤ 64 ulps of ‖x̂‖ times at most 1/(1−δ)² ≈ 4e3
    # on these families, far below 1e-9 of the magnitudes (a non-vacuity check, not a bound)
    rest = terms["implicit"] - beta * terms["inner"]
    assert rest <= 1e-9 * (1 + G) * (1 + beta + consts["lipschitz_theta"])


# ------------------------------------------------------------------------------------------
# Limit as T grows, and tightness.
# ------------------------------------------------------------------------------------------


@given(affine_instances())
@example(affine([0.9375, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], 1, 1))  # ℓ = 0, ℓ(x̂_c) ≠ 0
def test_retune_certificate_tends_to_lemma1(inst: Instance):
    """As T → ∞ the ReTune certificate tends to Lemma 1's bound (29) with the constants at x̂,
    ℓ = δ/(1−δ)‖∂_xL(x̂)‖‖∂_θΦ_K(x̂)‖, from above. ℓ is known only through x̂_c:
    ℓ ∈ [δ/(1−δ)(G_c − Hρ)₊(β_c − L_θρ)₊, δ/(1−δ)(G_c + Hρ)(β_c + L_θρ)] with ρ as in
    :func:`truth`. The certificate C_T ≥ ℓ by construction, and C_T ≤ ℓ + 9·F_T (F_T its
    forward part: Ĝ_T ≤ G(x̂) + 2Hρ_L, B̂_T ≤ β(x̂) + 2L_θρ_B, expanded); at δ^T ≤ 1e-40,
    F_T is at rounding level."""
    _note(inst.name)
    consts = constants(inst)
    delta, L_theta = consts["delta"], consts["lipschitz_theta"]
    T = 1 + int(40 / max(1e-3, -torch.log10(torch.tensor(max(delta, 1e-300))).item()))
    T = min(max(T, 2), 2000)
    est = call(inst, "retune", T=T, **consts)
    forward = est.certificate_source["terms"]["forward"]
    x_hat = fixed_point(inst.step, inst.theta, inst.x0, inst.K).x
    G = norm(hypergrad.loss_gradient(inst.loss, x_hat))
    beta = spectral_norm(jacobian_theta(unroll(inst.step, inst.K), x_hat, inst.theta))
    s = norm(unroll(inst.step, inst.K)(x_hat, inst.theta) - x_hat)
    rho = (s + FP_ULPS * EPS * norm(x_hat)) / (1 - delta)
    low = S.lemma1(delta, max(G - rho, 0.0), max(beta - L_theta * rho, 0.0))
    high = S.lemma1(delta, G + rho, beta + L_theta * rho)
    assert low * (1 - 1e-12) <= est.certificate <= high * (1 + 1e-12) + 9 * forward
    assert forward <= 1e-9 * (1 + high)


def _shift_instance() -> tuple:
    """φ(x, θ) = ½x + θ, θ = 1, L = ½(x − 1)², K = 1: x̂ = 2θ, g = 2(x̂ − 1) = 2,
    g^JF = x̂ − 1 = 1, Lemma 1 = (½/½)·1·1 = 1 = ‖g − g^JF‖: attained."""

    def step(x, theta):
        return 0.5 * x + theta

    def loss(x):
        return 0.5 * ((x - 1.0) ** 2).sum()

    theta = torch.tensor([1.0], dtype=torch.float64)
    return step, theta, torch.zeros(1, dtype=torch.float64), loss


def test_certificate_attained_jfb_and_retune_limit():
    step, theta, x0, loss = _shift_instance()
    kw = {"delta": 0.5, "lipschitz_theta": 0.0, "hessian_bound": 1.0}
    jfb = hypergrad.estimate("jfb", step, theta, x0, loss, K=1, **kw)
    assert norm(jfb.grad - 2.0) == pytest.approx(1.0, rel=1e-14)
    assert jfb.certificate == pytest.approx(1.0, rel=1e-14)  # attained
    errors, certs = [], []
    for T in (1, 5, 20, 60):
        est = hypergrad.estimate("retune", step, theta, x0, loss, K=1, T=T, **kw)
        errors.append(norm(est.grad - 2.0))
        certs.append(est.certificate)
        assert errors[-1] <= certs[-1] * (1 + 1e-15)
    # ratio certificate / error → 1: at T = 60 equal to float64 precision
    assert certs[-1] / errors[-1] == pytest.approx(1.0, rel=1e-14)
    assert certs == sorted(certs, reverse=True)


def test_certificate_on_f1_counterexample():
    """F1's counterexample (docs/findings.md): φ = θx, θ = ½, K = T = 1, x₀ = −1, x̄ = 1.
    r = ½, ρ_B = 1, ρ_L = ½, G = 3/2, β = 1, L_θ = 1, H = 1:
    certificate = 1·(3/2 + ½)(1 + 1) + 1·1·2 + 1·1·½ = 6.5 against the error 1.5 (factor
    13/3); the corrected Theorem 2, which uses x̂, is attained (1.5)."""
    inst = affine([0.5], [0.0], [-1.0], [1.0], 1, 1)
    est = call(inst, "retune", T=1, delta=0.5, lipschitz_theta=1.0, hessian_bound=1.0)
    assert est.grad.item() == 1.5
    assert est.certificate == 6.5
    assert norm(est.grad - 0.0) <= est.certificate  # g = 0 (x̂ = 0 for every θ)
    # T → ∞: g^R → g = 0 and the certificate → Lemma 1 = 0 (∂_θΦ_1(x̂) = x̂ = 0)
    far = call(inst, "retune", T=80, delta=0.5, lipschitz_theta=1.0, hessian_bound=1.0)
    assert far.certificate <= 1e-20


# ------------------------------------------------------------------------------------------
# T = "auto".
# ------------------------------------------------------------------------------------------


@given(certified_instances, st.sampled_from([1e-2, 1e-5, 1e-9]))
def test_auto_T(inst: Instance, tol: float):
    _note(inst.name)
    consts = constants(inst)
    consts.pop("lipschitz_x")
    est = call(inst, "retune", T="auto", tol=tol, T_max=400, **consts)
    T = est.stats.forward.blocks
    assert est.stats.forward.residuals.numel() == T
    assert torch.equal(est.grad, hypergrad.retune(inst.step, inst.theta, inst.x0, inst.loss,
                                                  inst.K, T))  # fmt: skip
    fixed = call(inst, "retune", T=T, **consts)
    assert est.certificate == pytest.approx(fixed.certificate, rel=1e-12)
    if est.stats.forward.reason == "tolerance":
        assert est.stats.forward.converged
        assert est.certificate_source["terms"]["forward"] <= tol
        if T > 1:  # the first T that reaches tol
            prev = call(inst, "retune", T=T - 1, **consts)
            assert prev.certificate_source["terms"]["forward"] > tol
    else:
        assert est.stats.forward.reason == "T_max" and T == 400


def test_auto_T_max_reached():
    inst = affine([0.95], [1.0], [0.0], [3.0], 1, 1)
    est = call(inst, "retune", T="auto", tol=1e-12, T_max=5, delta=0.95, lipschitz_theta=1.0,
               hessian_bound=1.0)  # fmt: skip
    assert est.stats.forward.reason == "T_max"
    assert not est.stats.forward.converged
    assert est.stats.forward.blocks == 5
    assert est.certificate_source["terms"]["forward"] > 1e-12


# ------------------------------------------------------------------------------------------
# No certificate, and bad input.
# ------------------------------------------------------------------------------------------


def test_no_certificate_reasons():
    inst = affine([0.5, 0.2], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], 2, 3)
    est = call(inst, "retune", T=3, delta=0.25, hessian_bound=1.0)
    assert est.certificate is None and "lipschitz_theta" in est.certificate_source["reason"]
    est = call(inst, "unrolled", T=3, delta=0.25, hessian_bound=1.0, lipschitz_theta=1.0)
    assert est.certificate is None and "lipschitz_x" in est.certificate_source["reason"]

    def readout(u, theta):
        return u * theta

    est = call(inst, "jfb", delta=0.25, hessian_bound=1.0, lipschitz_theta=1.0, readout=readout)
    assert est.certificate is None and "readout" in est.certificate_source["reason"]
    assert torch.equal(
        est.grad,
        hypergrad.jfb(inst.step, inst.theta, est.x, inst.loss, inst.K, readout=readout),
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "adjoint", "T": 2}, "method must be one of"),
        ({"method": "retune"}, "needs T"),
        ({"method": "deq_neumann"}, "needs P"),
        ({"method": "unrolled", "T": "auto"}, "for method='retune' only"),
        ({"method": "retune", "T": "auto", "delta": 0.5}, "tol"),
        ({"method": "retune", "T": "auto", "tol": 1e-3, "delta": 0.5}, "give delta"),
        ({"method": "retune", "T": 2, "delta": 1.0}, "not in"),
        ({"method": "retune", "T": 2, "hessian_bound": -1.0}, "finite number"),
    ],
)
def test_bad_input(kwargs: dict, match: str):
    inst = affine([0.5], [0.0], [-1.0], [1.0], 1, 1)
    kwargs = dict(kwargs)
    method = kwargs.pop("method")
    with pytest.raises(InvalidInputError, match=match):
        call(inst, method, **kwargs)


def test_estimated_beyond_dense_limit():
    """d = 300 > DENSE_THETA_LIMIT: ‖∂_θΦ_K‖₂ is a power-iteration estimate, so the
    certificate is "estimated", never "certified". Here ∂_θΦ_1(x) = diag(x) with equal
    entries, where the power iteration is exact: the value equals the dense computation."""
    theta = torch.full((300,), 0.5, dtype=torch.float64)

    def step(x, t):
        return t * x + 1.0

    def loss(x):
        return 0.5 * (x**2).sum()

    x0 = torch.zeros(300, dtype=torch.float64)
    kw = {"delta": 0.5, "lipschitz_theta": 1.0, "hessian_bound": 1.0}
    gen = torch.Generator().manual_seed(0)
    est = hypergrad.estimate("retune", step, theta, x0, loss, K=1, T=3, generator=gen, **kw)
    assert est.certificate_source["status"] == "estimated"
    assert est.certificate_source["constants"]["dtheta_norm"].startswith("estimated")
    assert torch.equal(est.grad, hypergrad.retune(step, theta, x0, loss, 1, 3))
    # the same instance at d = 300 but with the dense limit raised: exact, certified
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("retune_suite.operators.hypergrad.certificate.DENSE_THETA_LIMIT", 1000)
        dense = hypergrad.estimate("retune", step, theta, x0, loss, K=1, T=3, **kw)
    assert dense.certificate_source["status"] == "certified"
    assert est.certificate == pytest.approx(dense.certificate, rel=1e-12)
    auto = hypergrad.estimate("retune", step, theta, x0, loss, K=1, T="auto", tol=1e-3, **kw)
    assert auto.certificate_source["status"] == "estimated"
    assert auto.certificate_source["terms"]["forward"] <= 1e-3
