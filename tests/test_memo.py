"""retune_suite.operators.memo: θ-only work once per block, never a stale or graph-less value."""

from __future__ import annotations

import pytest
import torch
from retune_suite.operators import hypergrad, restart, unroll
from retune_suite.operators.maps.wavelet_prior import WaveletFB, init_theta
from retune_suite.operators.memo import block_scope, memoize


def problem(prior="BC", size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(2, 3, size, size, generator=gen, dtype=torch.float64)
    fb = WaveletFB(y, prior=prior)
    return fb, init_theta(prior, 4, 3, log_lambda=-1.5, dtype=torch.float64)


class Counter:
    def __init__(self, fb, monkeypatch):
        self.calls = 0
        original = fb._maps

        def counted(theta):
            self.calls += 1
            return original(theta)

        monkeypatch.setattr(fb, "_maps", counted)


def test_once_per_block_and_once_per_restart_loop(monkeypatch):
    fb, theta = problem()
    count = Counter(fb, monkeypatch)
    u = fb.initial()
    unroll(fb.step, 5)(u, theta)
    assert count.calls == 1
    restart(fb.step, theta, u, 3, 4)  # 12 steps, one scope for the whole loop
    assert count.calls == 2
    fb.step(u, theta)
    fb.step(u, theta)  # outside a block nothing is cached
    assert count.calls == 4


def test_block_gradient_unchanged_by_sharing_the_maps():
    fb, theta = problem()
    u = fb.initial() * 1.3
    leaves = tuple(t.clone().requires_grad_() for t in theta)
    shared = unroll(fb.step, 4)(u, leaves)
    (g_shared,) = [torch.autograd.grad(shared.square().sum(), leaves)]
    x = u
    for _ in range(4):
        x = fb.step(x, leaves)  # no scope: the maps are rebuilt at every step
    g_plain = torch.autograd.grad(x.square().sum(), leaves)
    torch.testing.assert_close(shared, x, rtol=0, atol=0)
    for a, b in zip(g_shared, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_never_stale_in_place_new_theta_or_grad_mode():
    _, theta = problem()
    owner, calls = object(), []

    def compute(th):
        calls.append(1)
        return th[0].sum() * 2

    with block_scope():
        with torch.no_grad():
            first = memoize(owner, "m", theta, lambda: compute(theta))
            assert memoize(owner, "m", theta, lambda: compute(theta)) is first
            theta[0].add_(0.5)  # an in-place update moves the version counter
            second = memoize(owner, "m", theta, lambda: compute(theta))
            assert len(calls) == 2 and not torch.equal(first, second)
            other = (theta[0].clone(), theta[1])
            memoize(owner, "m", other, lambda: compute(other))
            assert len(calls) == 3
        leaves = tuple(t.clone().requires_grad_() for t in theta)
        value = memoize(owner, "m", leaves, lambda: compute(leaves))
        assert value.requires_grad and len(calls) == 4
        with torch.no_grad():  # the grad-mode value is not served without grad, nor back
            assert not memoize(owner, "m", leaves, lambda: compute(leaves)).requires_grad
        assert memoize(owner, "m", leaves, lambda: compute(leaves)) is value
        assert len(calls) == 5
        assert memoize(object(), "m", leaves, lambda: compute(leaves)) is not value


def test_scope_closes_and_nested_scopes_share():
    owner = object()
    t = (torch.ones(2),)
    with block_scope():
        a = memoize(owner, "m", t, lambda: t[0] * 2)
        with block_scope():
            assert memoize(owner, "m", t, lambda: t[0] * 3) is a
    assert memoize(owner, "m", t, lambda: t[0] * 3).tolist() == [3.0, 3.0]


@pytest.mark.parametrize("prior", ["B", "BC"])
def test_retune_unrolled_equal_with_and_without_memo(prior, monkeypatch):
    """The estimators through the memo equal the same estimators with it switched off."""
    import contextlib

    import retune_suite.operators.iteration as iteration

    fb, theta = problem(prior)
    u0 = fb.initial()

    def loss(u):
        return 0.5 * (fb.estimate(u, tuple(t.detach() for t in theta)) - fb.y).square().sum()

    with_memo = [hypergrad.retune(fb.step, theta, u0, loss, 3, 4)]
    with_memo.append(hypergrad.unrolled(fb.step, theta, u0, loss, 3, 4))
    monkeypatch.setattr(iteration, "block_scope", contextlib.nullcontext)
    without = [hypergrad.retune(fb.step, theta, u0, loss, 3, 4)]
    without.append(hypergrad.unrolled(fb.step, theta, u0, loss, 3, 4))
    for a, b in zip(with_memo, without, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
