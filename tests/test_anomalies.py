"""The anomalies of the paper-scale runs, pinned (``docs/reproduce.md``, "The anomalies").

ReTune's error at one θ splits as in the proof of Theorem 2 (``retune_suite.experiments.reproduce.
trajectory``): g^R − g = (∂L(x_KT) − ∂L(x̂))ᵀ∂_θΦ_K(x_{K(T−1)}) + ∂L(x̂)ᵀ(∂_θΦ_K(x_{K(T−1)})
− ∂_θΦ_K(x̂)) + (g^JF − g). Past a few restarts the middle term is exactly linear in
‖x_{K(T−1)} − x̂‖ (the prox's active set no longer changes), so g^R → g^JF at the rate δ_K^T,
and its direction is whatever that sum is: anti-aligned with g while the Jacobian term,
opposite to g, exceeds g^JF's component along g (T = 5, 8 here; T = 10 at 256×256).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from retune_suite.experiments.reproduce.trajectory import split_over_T
from retune_suite.operators import hypergrad
from retune_suite.operators.maps import section4


@pytest.fixture(scope="module")
def split():
    """The error study's denoising problem (θ_BC, θ⁰ = (log λ = −2, Λ = 1)) at 32×32."""
    return split_over_T("denoise", "wavelet-BC", size=32, batch=1, K=10, Ts=(1, 5, 8, 30))


def test_jacobian_term_is_linear_in_the_distance_once_the_active_set_settles(split):
    late = split[split["T"] >= 5]
    np.testing.assert_allclose(late.secant_theta, late.secant_theta.iloc[-1], rtol=1e-4)
    # at T = 1 the segment crosses active-set changes: not the same secant
    assert abs(split.secant_theta.iloc[0] / late.secant_theta.iloc[0] - 1) > 0.05


def test_retune_tends_to_jfb_and_the_split_accounts_for_its_error(split):
    terms = split.rel_loss_term + split.rel_jacobian_term + split.rel_readout_term + split.rel_jfb
    assert (split.rel_step <= terms * (1 + 1e-9)).all()
    last = split.iloc[-1]
    assert last.rel_loss_term + last.rel_jacobian_term < 1e-4
    assert last.cos_step == pytest.approx(last.cos_jfb, abs=1e-5)
    assert abs(last.rel_step - last.rel_jfb) <= last.rel_loss_term + last.rel_jacobian_term


def test_retune_points_against_g_while_jfb_does_not(split):
    """The anomaly at small scale: g^JF is short but aligned with g; at T = 5 and 8 the
    Jacobian term (larger than ‖g‖, opposite to it) turns g^R around."""
    mid = split[split["T"].isin([5, 8])]
    assert (mid.cos_jfb > 0.99).all() and (mid.cos_step < -0.9).all()
    assert (mid.rel_jacobian_term > 1.0).all()


def test_retune_at_1_1_is_the_gradient_of_the_one_step_estimator():
    """(K, T) = (1, 1) trains L(R(φ(x₀, θ), θ)): one FB step from u₀ (a learned shrinkage),
    not L(R(x̂_θ, θ)); the DEQ gradient at the same θ is another vector."""
    torch.manual_seed(0)
    clean = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    p = section4.build("denoise", "wavelet-B", clean=clean, seed=0, log_lambda=-1.0)
    theta = tuple(t.detach().requires_grad_(True) for t in p.theta)

    def loss(x):
        return torch.mean((x - clean) ** 2)

    g_r = hypergrad.retune(p.step, theta, p.x0, loss, K=1, T=1, readout=p.readout)
    one_step = torch.autograd.grad(loss(p.readout(p.step(p.x0, theta), theta)), theta)
    for a, b in zip(g_r, one_step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    x_star = section4_fixed_point(p, theta)
    g = hypergrad.deq_solve(p.step, theta, x_star, loss, K=1, readout=p.readout)
    flat = torch.cat([t.reshape(-1) for t in g])
    flat_r = torch.cat([t.reshape(-1) for t in g_r])
    assert torch.linalg.vector_norm(flat_r - flat) > 0.1 * torch.linalg.vector_norm(flat)


def section4_fixed_point(p, theta):
    from retune_suite.operators import fixed_point

    return fixed_point(p.step, theta, p.x0, K=1, rtol=1e-13).x
