"""FB on weighted wavelet coefficients (51): paths agree, the prox is the group prox, the
analytic ω bounds the measured Jacobian norm, and at 16×16 deq_solve equals deq_exact."""

from __future__ import annotations

import os

import pytest
import torch
from retune_suite.bounds.constants import delta_measured
from retune_suite.operators import fixed_point, hypergrad, unroll
from retune_suite.operators.compiled import ENV
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.maps.prox import group_soft_threshold
from retune_suite.operators.maps.wavelet_prior import WaveletFB, init_theta


class Identity:
    """A = I through the general path (D in the loop)."""

    def A(self, x):
        return x

    def A_adjoint(self, y):
        return y

    def norm_sq(self):
        return 1.0


def observation(size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=gen)


@pytest.mark.parametrize("prior", ["B", "BC"])
def test_denoising_fast_path_equals_general_path(prior):
    y = observation()
    fast, general = WaveletFB(y, prior=prior), WaveletFB(y, prior=prior, model=Identity())
    theta = init_theta(prior, 4, 3, log_lambda=-1.5)
    theta = (theta[0] + torch.linspace(-0.3, 0.3, 4), theta[1] + 0.1)
    u = fast.initial() * 1.3
    torch.testing.assert_close(fast.step(u, theta), general.step(u, theta), rtol=1e-12, atol=1e-12)


def test_prox_is_group_soft_thresholding():
    """θ_BC groups (band, channel) per position; θ_B groups bands per (position, channel)."""
    y = observation()
    for prior, dims in (("BC", (1, 2)), ("B", (2,))):
        fb = WaveletFB(y, prior=prior)
        u = fb.initial()
        out_approx, out_details = fb.D.unpack(fb.prox(u, torch.tensor(0.3)))
        approx, details = fb.D.unpack(u)
        torch.testing.assert_close(out_approx, approx)  # approximation not penalised
        for d, o in zip(details, out_details, strict=True):
            moved = d.movedim(dims, tuple(range(-len(dims), 0)))
            flat = moved.reshape(*moved.shape[: moved.ndim - len(dims)], -1)
            ref = group_soft_threshold(
                flat, torch.tensor(0.3).expand(*flat.shape[:-1], 1), flat.shape[-1]
            )
            ref = ref.reshape(moved.shape).movedim(tuple(range(-len(dims), 0)), dims)
            torch.testing.assert_close(o, ref, rtol=1e-12, atol=1e-14)


def _prox_by_vector_norm(fb, u, t):
    """The unpacked form the packed prox replaces (torch.linalg.vector_norm per group)."""
    approx, details = fb.D.unpack(u)
    dims = (1, 2) if fb.prior == "BC" else (2,)
    out = []
    for d in details:
        norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
        out.append(torch.relu(1 - t / norm.clamp_min(torch.finfo(d.dtype).tiny)) * d)
    return fb.D.pack(approx, out)


@pytest.mark.parametrize("prior", ["B", "BC"])
def test_packed_prox_gradient_matches_vector_norm_form_with_zero_groups(prior):
    """Same values and gradients as the vector_norm form, and finite where a group is 0."""
    fb = WaveletFB(observation(), prior=prior)
    u = fb.initial()
    u[..., 8:, :8] = 0.0  # finest level (h = w = 8): one band zero, groups still nonzero
    u[..., 4:8, :4] = 0.0  # next level (h = w = 4): all three bands zero,
    u[..., :4, 4:8] = 0.0  # so every group there has norm 0
    u[..., 4:8, 4:8] = 0.0
    t = torch.tensor(0.3, requires_grad=True)
    u = u.requires_grad_()
    new, ref = fb.prox(u, t), _prox_by_vector_norm(fb, u, t)
    torch.testing.assert_close(new, ref, rtol=1e-12, atol=1e-14)
    g = torch.randn_like(new)
    grads_new = torch.autograd.grad(new, (u, t), g)
    grads_ref = torch.autograd.grad(ref, (u, t), g)
    for a, b in zip(grads_new, grads_ref, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("prior", ["B", "BC"])
def test_in_place_prox_equals_graph_form_bit_for_bit(prior, dtype):
    """Without a graph the prox runs in place on one flat buffer of factors; with one it
    packs a factor map. Same numbers bit for bit, zero groups included, and neither prox
    nor step changes its input."""
    fb = WaveletFB(observation(32).to(dtype), prior=prior)
    theta = init_theta(prior, 4, 3, log_lambda=-1.5, dtype=dtype)
    u = fb.initial() * 1.3
    u[..., 16:, :16] = 0.0  # a zero band at the finest level
    u[..., 4:8, :8] = 0.0  # a level where every group is zero
    u[..., :4, 4:8] = 0.0
    before = u.clone()
    t = torch.tensor(0.3, dtype=dtype)
    with torch.no_grad():
        fast, fast_step = fb.prox(u, t), fb.step(u, theta)
    graph = fb.prox(u.clone().requires_grad_(), t)
    graph_step = fb.step(u, tuple(p.clone().requires_grad_() for p in theta))
    assert graph.grad_fn is not None and graph_step.grad_fn is not None
    assert torch.equal(fast, graph.detach()) and torch.equal(fast_step, graph_step.detach())
    assert torch.equal(u, before)
    tol = {torch.float64: (1e-12, 1e-14), torch.float32: (1e-5, 1e-6)}[dtype]
    torch.testing.assert_close(fast, _prox_by_vector_norm(fb, u, t), rtol=tol[0], atol=tol[1])


@pytest.mark.parametrize("prior", ["B", "BC"])
def test_step_gradient_matches_the_unfused_step(prior):
    """∂φ/∂(u, θ) of the shipped step against the step as first written (five elementwise
    passes, the prox by torch.linalg.vector_norm), in float64, and gradcheck at 16×16.

    λ_j > 1 puts min θ at the approximation (θ = 1 there), so τ(θ), which the step does not
    differentiate, is locally constant and finite differences see the same map."""
    fb = WaveletFB(observation(), prior=prior)
    log_lam, log_Lam = init_theta(prior, 4, 3, log_lambda=0.5)
    theta = (
        (log_lam + torch.linspace(0.0, 0.3, 4)).requires_grad_(),
        (log_Lam + 0.1).requires_grad_(),
    )
    u = (fb.initial() * 4.0).requires_grad_()

    def reference(u, theta):
        w = fb.weights(theta)
        tau = fb.tau(w)
        return _prox_by_vector_norm(fb, u - tau * ((u / w - fb.D_aty) / w), tau)

    new, ref = fb.step(u, theta), reference(u, theta)
    torch.testing.assert_close(new, ref, rtol=1e-12, atol=1e-14)
    g = torch.randn_like(new)
    for a, b in zip(
        torch.autograd.grad(new, (u, *theta), g),
        torch.autograd.grad(ref, (u, *theta), g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda u, *th: fb.step(u, th), (u, *theta), fast_mode=True)


COMPILE_BACKENDS = ["aot_eager"] + (
    ["inductor"] if os.environ.get("RETUNE_TEST_INDUCTOR") == "1" else []
)  # inductor's C++ build takes tens of seconds cold: opt-in (RETUNE_TEST_INDUCTOR=1)


@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("model", [None, Identity()], ids=["denoise", "general"])
def test_compiled_step_value_and_gradient_equal_eager(backend, model):
    """WaveletFB(compile=...) traces the graph form of the step: the same values and, through
    ReTune's graph-carrying last block, the same gradients as the eager step (float64)."""
    y = observation()
    eager, compiled = (WaveletFB(y, prior="BC", model=model, compile=c) for c in (False, backend))
    log_lam, log_Lam = init_theta("BC", 4, 3, log_lambda=-1.5)
    theta = ((log_lam + torch.linspace(-0.3, 0.3, 4)).requires_grad_(), log_Lam.requires_grad_())
    u = eager.initial() * 1.3
    with torch.no_grad():
        torch.testing.assert_close(
            compiled.step(u, theta), eager.step(u, theta), rtol=1e-12, atol=1e-14
        )
    x_bar = observation(seed=1)

    def loss(v):
        return 0.5 * ((eager.D.synthesis(v / eager.weights(theta).detach()) - x_bar) ** 2).sum()

    grads = [hypergrad.retune(fb.step, theta, u, loss, K=3, T=2) for fb in (compiled, eager)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert compiled._kernels  # the compiled kernel ran


def test_compile_switch(monkeypatch):
    y = observation()
    monkeypatch.delenv(ENV, raising=False)
    assert WaveletFB(y)._backend is None  # off by default
    monkeypatch.setenv(ENV, "1")
    assert WaveletFB(y)._backend == "inductor" and WaveletFB(y, compile=False)._backend is None
    monkeypatch.setenv(ENV, "aot_eager")
    assert WaveletFB(y)._backend == "aot_eager"
    with pytest.raises(InvalidInputError, match=r"not a torch\.compile backend"):
        WaveletFB(y, compile="no-such-backend")


def test_packed_prox_float32_matches_vector_norm_form():
    fb = WaveletFB(observation(32).float(), prior="BC")
    u, t = fb.initial() * 1.7, torch.tensor(0.2)
    torch.testing.assert_close(fb.prox(u, t), _prox_by_vector_norm(fb, u, t), rtol=1e-5, atol=1e-6)


def test_weights_layout_and_tau():
    y = observation()
    fb = WaveletFB(y, prior="BC")
    log_lam = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    log_Lam = torch.log(torch.arange(1.0, 10.0).reshape(3, 3))
    w = fb.weights((log_lam, log_Lam))
    approx, details = fb.D.unpack(w.expand(2, -1, -1, -1))
    assert torch.all(approx == 1)
    for j, d in enumerate(details):  # λ_j √Λ_{b,c}
        expected = (log_lam[j].exp() * log_Lam.exp().sqrt()).T.reshape(1, 3, 3, 1, 1)
        torch.testing.assert_close(d, expected.expand_as(d))
    assert fb.tau(w).item() == pytest.approx(1.95 * 0.1**2)


def test_analytic_omega_bounds_measured_norm():
    y = observation()
    fb = WaveletFB(y, prior="BC")
    theta = init_theta("BC", 4, 3, log_lambda=-1.0)
    u_star = fixed_point(fb.step, theta, fb.initial(), 1, method="anderson").x
    for K in (1, 3):
        measured = delta_measured(unroll(fb.step, K), u_star, theta)
        assert measured <= fb.omega(theta) ** K * (1 + 1e-12)


@pytest.mark.parametrize("prior", ["B", "BC"])
def test_matrix_free_reference_equals_dense_at_16(prior):
    """The acceptance check of the image-scale reference: 16×16, float64, to ~1e-10."""
    y = observation(16)[:1]
    fb = WaveletFB(y, prior=prior)
    theta = init_theta(prior, 4, 3, log_lambda=-1.0)
    x_bar = observation(16, seed=1)[:1]
    w0 = fb.weights(theta).detach()

    def loss(u):
        return 0.5 * ((fb.D.synthesis(u / w0) - x_bar) ** 2).sum()

    u_star = fixed_point(fb.step, theta, fb.initial(), 1, method="anderson").x
    dense = torch.cat([g.reshape(-1) for g in hypergrad.deq_exact(fb.step, theta, u_star, loss, 1)])
    free = torch.cat(
        [g.reshape(-1) for g in hypergrad.deq_solve(fb.step, theta, u_star, loss, 1, tol=1e-13)]
    )
    assert torch.linalg.vector_norm(free - dense) <= 1e-10 * torch.linalg.vector_norm(dense)


def test_bad_input():
    with pytest.raises(InvalidInputError, match="'B' or 'BC'"):
        WaveletFB(observation(), prior="C")
    with pytest.raises(InvalidInputError, match=r"\(B, C, H, W\)"):
        WaveletFB(observation()[0])
    with pytest.raises(InvalidInputError, match="in \\(0, 2\\)"):
        WaveletFB(observation(), step_factor=2.5)
