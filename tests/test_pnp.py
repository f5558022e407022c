"""FB-PnP step (53) with a tiny DRUNet: shapes, estimators, finite differences, loading,
and the measured local contraction against the dense Jacobian."""

from __future__ import annotations

import math

import pytest
import torch
from retune_suite.operators import fixed_point, hypergrad, unroll
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.jacobians import jacobian_x, spectral_norm
from retune_suite.operators.maps import pnp

NC, NB = (8, 16, 32, 64), 1  # tiny DRUNet: any H, W works (padded to multiples of 16)
H = 1e-6  # central differences: truncation O(h²) ≈ 1e-12, rounding O(eps/h) ≈ 1e-10
FD_RTOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks gain nothing from intra-op threads; on a loaded machine they spin."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class Mask:
    """Inpainting stand-in for retune_suite.operators.maps.physics: A = m ⊙ x, ‖A‖² = 1."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask * x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask * y

    def norm_sq(self) -> float:
        return 1.0


def tiny_drunet(seed: int = 0, dtype: torch.dtype = torch.float64):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return pnp.load_drunet(nc=NC, nb=NB, dtype=dtype)


def instance(shape=(2, 3, 16, 16), seed: int = 0):
    """(model, y, clean image, x0) for a 50% inpainting problem."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand((1, 1, *shape[2:]), generator=g, dtype=torch.float64) > 0.5).double()
    model = Mask(mask)
    y = model.A(clean)
    return model, y, clean, y.clone()


def mse_to(clean: torch.Tensor):
    return lambda x: 0.5 * torch.sum((x - clean) ** 2)


def assert_useful(grad: torch.Tensor) -> None:
    assert torch.isfinite(grad).all()
    assert torch.linalg.vector_norm(grad) > 0


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 12, 20)])
def test_steps_map_to_same_shape(shape):
    model, y, _, x0 = instance(shape)
    D = tiny_drunet()
    step = pnp.fb_pnp_sigma_tau(model, y, D)
    assert step(x0, pnp.sigma_tau_theta(0.1, 1.0)).shape == shape
    step_w, theta_w = pnp.fb_pnp_weights(model, y, D, 0.1, 1.0)
    assert step_w(x0, theta_w).shape == shape
    # the same network: both parameterisations give one φ at the same (σ, τ, Λ)
    torch.testing.assert_close(step_w(x0, theta_w), step(x0, pnp.sigma_tau_theta(0.1, 1.0)))


def test_sigma_tau_freezes_denoiser():
    model, y, _, _ = instance()
    D = tiny_drunet().train()
    pnp.fb_pnp_sigma_tau(model, y, D)
    assert not D.training
    assert not any(p.requires_grad for p in D.parameters())


def test_sigma_tau_estimators():
    model, y, clean, x0 = instance()
    step = pnp.fb_pnp_sigma_tau(model, y, tiny_drunet())
    theta = pnp.sigma_tau_theta(0.1, 1.0)
    loss = mse_to(clean)
    x_star = fixed_point(step, theta, x0, K=1).x
    for grad in (
        hypergrad.retune(step, theta, x0, loss, K=2, T=3),
        hypergrad.jfb(step, theta, x_star, loss, K=1),
        hypergrad.unrolled(step, theta, x0, loss, K=2, T=3),
    ):
        assert grad.shape == theta.shape
        assert_useful(grad)


def test_weights_estimators():
    model, y, clean, x0 = instance()
    D = tiny_drunet()
    step, theta = pnp.fb_pnp_weights(model, y, D, 0.1, 1.0)
    assert len(theta) == len(list(D.parameters()))
    loss = mse_to(clean)
    x_star = fixed_point(step, theta, x0, K=1).x
    for grad in (
        hypergrad.retune(step, theta, x0, loss, K=2, T=3),
        hypergrad.jfb(step, theta, x_star, loss, K=1),
        hypergrad.unrolled(step, theta, x0, loss, K=2, T=2),
    ):
        assert isinstance(grad, tuple) and len(grad) == len(theta)
        for g, t in zip(grad, theta, strict=True):
            assert g.shape == t.shape
            assert_useful(g)
    assert all(p.grad is None for p in D.parameters())  # the module's own weights are unused


def test_weights_step_uses_the_theta_it_is_given():
    model, y, _, x0 = instance()
    D = tiny_drunet()
    step, theta = pnp.fb_pnp_weights(model, y, D, 0.1, 1.0)
    before = step(x0, theta)
    other = tuple(2.0 * t for t in theta)
    assert not torch.allclose(step(x0, other), before)
    torch.testing.assert_close(step(x0, theta), before)  # D itself untouched
    with pytest.raises(InvalidInputError, match="parameters"):
        step(x0, theta[:-1])


def test_sigma_tau_gradient_matches_finite_differences():
    model, y, clean, x0 = instance((1, 3, 16, 16), seed=3)
    step = pnp.fb_pnp_sigma_tau(model, y, tiny_drunet(seed=3))
    theta = pnp.sigma_tau_theta(0.2, 0.8)
    loss = mse_to(clean)
    K, T = 2, 2
    Phi = unroll(step, K)

    def composite(th: torch.Tensor) -> float:
        with torch.no_grad():
            x = x0
            for _ in range(T):
                x = Phi(x, th)
            return loss(x).item()

    fd = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = H
        fd[i] = (composite(theta + e) - composite(theta - e)) / (2 * H)
    grad = hypergrad.unrolled(step, theta, x0, loss, K=K, T=T)
    assert torch.linalg.vector_norm(grad - fd) <= FD_RTOL * torch.linalg.vector_norm(fd), (grad, fd)
    # T = 1: ReTune differentiates the same single block as the unrolled estimator
    torch.testing.assert_close(
        hypergrad.retune(step, theta, x0, loss, K=K, T=1),
        hypergrad.unrolled(step, theta, x0, loss, K=K, T=1),
    )


def test_invalid_inputs():
    model, y, _, x0 = instance()
    D = tiny_drunet()
    step = pnp.fb_pnp_sigma_tau(model, y, D)
    with pytest.raises(InvalidInputError, match="sigma_tau_theta"):
        step(x0, (torch.tensor(0.0), torch.tensor(0.0)))
    with pytest.raises(InvalidInputError, match="dtype"):
        pnp.fb_pnp_sigma_tau(model, y.float(), D)
    with pytest.raises(InvalidInputError, match="sigma"):
        pnp.fb_pnp_weights(model, y, D, -0.1, 1.0)
    with pytest.raises(InvalidInputError, match="positive"):
        pnp.sigma_tau_theta(0.0, 1.0)


def test_local_contraction_positive_finite():
    model, y, _, x0 = instance()
    step, theta = pnp.fb_pnp_weights(model, y, tiny_drunet(), 0.1, 1.0)
    value = pnp.local_contraction(step, theta, x0, K=2, iterations=30)
    assert value > 0 and math.isfinite(value)


@pytest.mark.parametrize("K", [1, 2])
def test_local_contraction_matches_dense_svd(K):
    model, y, _, _ = instance((1, 3, 8, 8), seed=1)
    step = pnp.fb_pnp_sigma_tau(model, y, tiny_drunet(seed=1))
    theta = pnp.sigma_tau_theta(0.1, 1.0)
    x = torch.rand(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    dense = spectral_norm(jacobian_x(unroll(step, K), x, theta))
    measured = pnp.local_contraction(
        step, theta, x, K=K, iterations=1000, generator=torch.Generator().manual_seed(0)
    )
    # power iteration converges at rate (σ₂/σ₁)²; stopping at rtol 1e-10 on σ leaves ~1e-8
    assert measured == pytest.approx(dense, rel=1e-6)
    assert measured <= dense * (1 + 1e-12)  # a lower estimate (up to rounding)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module."])
def test_load_drunet_round_trip(tmp_path, wrap):
    D = tiny_drunet(seed=5)
    state = D.state_dict()
    if wrap == "module.":
        obj = {f"module.{k}": v for k, v in state.items()}
    else:
        obj = state if wrap == "plain" else {wrap: state, "step": 3}
    path = tmp_path / "drunet.pth"
    torch.save(obj, path)
    loaded = pnp.load_drunet(path, nc=NC, nb=NB, dtype=torch.float64)
    assert not loaded.training
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_load_drunet_uses_saved_architecture(tmp_path):
    D = tiny_drunet(seed=6)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": D.state_dict(), "architecture": {"nc": NC, "nb": NB}}, path)
    loaded = pnp.load_drunet(path, dtype=torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), D.parameters(), strict=True))


def test_load_drunet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        pnp.load_drunet(tmp_path / "absent.pth")
    path = tmp_path / "tiny.pth"
    torch.save(tiny_drunet().state_dict(), path)
    with pytest.raises(InvalidInputError, match=r"nc=\(8, 16, 32, 64\), nb=1"):
        pnp.load_drunet(path, nc=(64, 128, 256, 512), nb=4)  # a wrong explicit architecture
    inferred = pnp.load_drunet(path)  # a plain state dict: its shapes give the architecture
    assert sum(p.numel() for p in inferred.parameters()) == sum(
        p.numel() for p in tiny_drunet().parameters()
    )
    with pytest.raises(InvalidInputError, match="channels=3"):
        pnp.load_drunet(path, channels=1, nc=NC, nb=NB)
    torch.save({"weights": [1, 2]}, tmp_path / "junk.pth")
    with pytest.raises(InvalidInputError, match="state dict"):
        pnp.load_drunet(tmp_path / "junk.pth")
