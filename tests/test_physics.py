"""The forward models of section 4: adjointness, exact norms, the operators, noise, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.operators import InvalidInputError
from retune_suite.operators.maps.physics import (
    DENOISE_SIGMA,
    TASKS,
    DeblurringModel,
    ForwardModel,
    InpaintingModel,
    adjointness_test,
    anisotropic_blur_kernels,
    make_forward_model,
    power_norm_sq,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
# Dot-product test: relative gap (see adjointness_test) per dtype, as the brief asks.
ADJOINT_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
SIZE = (32, 40)  # not square, so H and W cannot be swapped unnoticed; ≥ 25 for the blur


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on small images a CPU FFT costs ~20 µs alone but can cost ~8 ms
    when its thread pool is shared with other work (seen on a 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def generator(device: str, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def circular_blur_reference(x: torch.Tensor, width: int) -> torch.Tensor:
    """Section 4.2 written with torch.roll: horizontal, vertical and diagonal averages."""
    shifts = range(-(width // 2), width // 2 + 1)
    r = sum(torch.roll(x[:, 0], s, dims=-1) for s in shifts) / width
    g = sum(torch.roll(x[:, 1], s, dims=-2) for s in shifts) / width
    b = sum(torch.roll(x[:, 2], (s, s), dims=(-2, -1)) for s in shifts) / width
    return torch.stack([r, g, b], dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("task", TASKS)
def test_adjointness(task, dtype, device):
    model = make_forward_model(task, 3, SIZE, device=device, dtype=dtype, seed=1)
    assert adjointness_test(model, (2, 3, *SIZE), generator(device)) < ADJOINT_TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", TASKS)
def test_norm_sq_matches_power_iteration(task, device):
    model = make_forward_model(task, 3, SIZE, device=device, dtype=torch.float64, seed=1)
    # The blue kernel's spectrum reaches |ĥ|² ≈ 0.92 next to the top eigenvalue 1 on a 32×40
    # torus: 400 iterations bring the Rayleigh quotient within 1e-10.
    estimate = power_norm_sq(model, (1, 3, *SIZE), generator(device), iterations=400)
    assert model.norm_sq() == 1.0
    assert estimate <= model.norm_sq() * (1 + 1e-12)  # the Rayleigh quotient is a lower bound
    assert estimate == pytest.approx(model.norm_sq(), rel=1e-8)


@given(
    H=st.integers(3, 24),
    W=st.integers(3, 24),
    half=st.integers(0, 5),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_blur_adjoint_and_norm_any_size(H, W, half, batch, seed):
    """Any odd width ≤ the image: exact adjoint, and norm_sq = max|Fh|² from the power method."""
    width = min(2 * half + 1, H - (H % 2 == 0), W - (W % 2 == 0))
    model = DeblurringModel((H, W), width=width, dtype=torch.float64)
    g = generator("cpu", seed)
    assert adjointness_test(model, (batch, 3, H, W), g) < 1e-12
    spectrum = torch.fft.fft2(anisotropic_blur_kernels(width, dtype=torch.float64), s=(H, W))
    assert model.norm_sq() == pytest.approx(float(spectrum.abs().max() ** 2), rel=1e-14)
    assert power_norm_sq(model, (1, 3, H, W), g, iterations=50) <= model.norm_sq() + 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deblur_is_the_papers_anisotropic_blur(dtype):
    """One kernel per channel (deepinv's BlurFFT with a (1, 3, w, w) filter), circular."""
    model = make_forward_model("deblur", 3, SIZE, dtype=dtype)
    x = torch.randn(2, 3, *SIZE, generator=generator("cpu"), dtype=dtype)
    tol = {torch.float64: 1e-12, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(model.A(x), circular_blur_reference(x, 25), rtol=0, atol=tol)
    # Aᵀ is the blur with the 180°-rotated kernels, which are the same kernels.
    torch.testing.assert_close(model.A_adjoint(x), model.A(x), rtol=0, atol=tol)


def test_deblur_impulse_response():
    model = make_forward_model("deblur", 3, SIZE, dtype=torch.float64)
    delta = torch.zeros(1, 3, *SIZE)
    delta[..., 5, 7] = 1.0  # near the corner: the response wraps around (circular boundary)
    h = model.A(delta)[0]
    support = [torch.nonzero(h[c].abs() > 1e-12).tolist() for c in range(3)]
    offsets = range(-12, 13)
    assert sorted(support[0]) == sorted([5, (7 + k) % SIZE[1]] for k in offsets)
    assert sorted(support[1]) == sorted([(5 + k) % SIZE[0], 7] for k in offsets)
    assert sorted(support[2]) == sorted([(5 + k) % SIZE[0], (7 + k) % SIZE[1]] for k in offsets)
    for c in range(3):
        torch.testing.assert_close(h[c][h[c].abs() > 1e-12], torch.full((25,), 1 / 25))


def test_blur_kernels():
    h = anisotropic_blur_kernels(25, dtype=torch.float64)
    assert h.shape == (3, 25, 25)
    torch.testing.assert_close(h.sum(dim=(-2, -1)), torch.ones(3))
    assert torch.equal(h[0, 12], torch.full((25,), 1 / 25))
    assert torch.equal(h[1, :, 12], torch.full((25,), 1 / 25))
    assert torch.equal(h[2].diagonal(), torch.full((25,), 1 / 25))
    assert all(torch.count_nonzero(h[c]) == 25 for c in range(3))
    assert torch.equal(h, h.flip(-2, -1))  # convolution = correlation


def test_norm_sq_is_exact_in_float32():
    model = make_forward_model("deblur", 3, SIZE, dtype=torch.float32)
    assert model.norm_sq() == 1.0  # from the float64 kernels, not their float32 rounding


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_denoise_is_identity_with_channel_noise(dtype):
    model = make_forward_model("denoise", 3, (128, 128), dtype=dtype)
    x = torch.rand(2, 3, 128, 128, generator=generator("cpu"), dtype=dtype)
    assert torch.equal(model.A(x), x) and torch.equal(model.A_adjoint(x), x)
    assert model.sigma.shape == (3,) and model.sigma.dtype == dtype
    torch.testing.assert_close(model.sigma, torch.tensor(DENOISE_SIGMA, dtype=dtype))
    y = model.observe(x, generator("cpu", 3))
    assert y.dtype == dtype and y.shape == x.shape
    std = (y - x).std(dim=(0, 2, 3))
    # 32768 samples per channel: the sample std is within 5% of σ_c with overwhelming odds.
    torch.testing.assert_close(std, model.sigma, rtol=0.05, atol=0)


def test_inpaint_mask():
    model = make_forward_model("inpaint", 3, (50, 60), dtype=torch.float64, seed=4)
    m = model.mask
    assert m.shape == (1, 1, 50, 60)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert int(m.sum()) == 300  # exactly 10% of the 3000 pixels kept, 90% missing
    ones = torch.ones(1, 3, 50, 60)
    Aones = model.A(ones)
    assert all(torch.equal(Aones[0, c], m[0, 0]) for c in range(3))  # shared by the channels
    again = make_forward_model("inpaint", 3, (50, 60), dtype=torch.float32, seed=4).mask
    assert torch.equal(again.double(), m)  # deterministic, dtype-independent
    other = make_forward_model("inpaint", 3, (50, 60), dtype=torch.float64, seed=5).mask
    assert not torch.equal(other, m)
    assert model.norm_sq() == 1.0


@CUDA
def test_inpaint_mask_same_on_cuda():
    cpu = make_forward_model("inpaint", 3, SIZE, seed=2).mask
    cuda = make_forward_model("inpaint", 3, SIZE, seed=2, device="cuda").mask
    assert torch.equal(cuda.cpu(), cpu)


def test_inpaint_noise_only_on_kept_pixels():
    model = make_forward_model("inpaint", 3, (128, 128), dtype=torch.float64, seed=0)
    x = torch.rand(4, 3, 128, 128, generator=generator("cpu"))
    residual = model.observe(x, generator("cpu", 1)) - model.A(x)
    kept = model.mask.expand_as(residual).bool()
    assert torch.count_nonzero(residual[~kept]) == 0
    # 4 · 1638 kept pixels per channel: the sample std is within 5% of 0.05.
    assert residual[kept].std().item() == pytest.approx(0.05, rel=0.05)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", TASKS)
def test_observe_is_deterministic(task, device):
    model = make_forward_model(task, 3, SIZE, device=device, dtype=torch.float32, seed=0)
    x = torch.rand(2, 3, *SIZE, generator=generator("cpu"), dtype=torch.float32).to(device)
    y1 = model.observe(x, generator(device, 7))
    y2 = model.observe(x, generator(device, 7))
    y3 = model.observe(x, generator(device, 8))
    assert y1.device == x.device and y1.dtype == torch.float32
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


@pytest.mark.parametrize("task", TASKS)
def test_autograd_through_A_is_A_adjoint(task):
    """Unrolled FB steps differentiate through A: the vjp of A must be Aᵀ."""
    model = make_forward_model(task, 3, SIZE, dtype=torch.float64, seed=0)
    g = generator("cpu")
    x = torch.randn(2, 3, *SIZE, generator=g, requires_grad=True)
    y = torch.randn(2, 3, *SIZE, generator=g)
    (grad,) = torch.autograd.grad((model.A(x) * y).sum(), x)
    torch.testing.assert_close(grad, model.A_adjoint(y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("task", TASKS)
def test_models_follow_the_protocol(task):
    model = make_forward_model(task, 3, SIZE, seed=0)
    assert isinstance(model, ForwardModel)
    assert model.sigma.shape == (3,)
    assert task[:4] in repr(model).lower()


def test_inpaint_any_channel_count():
    model = make_forward_model("inpaint", 1, SIZE, seed=0)
    assert model.sigma.shape == (1,)
    assert adjointness_test(model, (2, 1, *SIZE), generator("cpu")) < 1e-12


def test_unknown_task():
    with pytest.raises(InvalidInputError, match=r"unknown task 'deconv'.*denoise, inpaint, deblur"):
        make_forward_model("deconv", 3, SIZE)


def test_kernel_larger_than_image():
    with pytest.raises(InvalidInputError, match="25×25 blur kernel is larger than the 20×30"):
        make_forward_model("deblur", 3, (20, 30))
    with pytest.raises(InvalidInputError, match="odd"):
        DeblurringModel(SIZE, width=4)


@pytest.mark.parametrize(("task", "channels"), [("denoise", 1), ("deblur", 4), ("inpaint", 0)])
def test_wrong_channel_count_at_construction(task, channels):
    with pytest.raises(InvalidInputError, match="channels"):
        make_forward_model(task, channels, SIZE)


@pytest.mark.parametrize("task", TASKS)
def test_wrong_input_shape_dtype(task):
    model = make_forward_model(task, 3, SIZE, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match=r"shape \(B, 3, 32, 40\).*got \(2, 1, 32, 40\)"):
        model.A(torch.zeros(2, 1, *SIZE))
    with pytest.raises(InvalidInputError, match="got \\(3, 32, 40\\)"):
        model.A_adjoint(torch.zeros(3, *SIZE))
    with pytest.raises(InvalidInputError, match="got \\(1, 3, 40, 32\\)"):
        model.A(torch.zeros(1, 3, 40, 32))
    with pytest.raises(
        InvalidInputError, match=r"torch.float32 on cpu but the model is torch.float64"
    ):
        model.observe(torch.zeros(1, 3, *SIZE, dtype=torch.float32), generator("cpu"))


def test_other_errors():
    with pytest.raises(InvalidInputError, match="keeps no pixel"):
        make_forward_model("inpaint", 3, (2, 2))
    with pytest.raises(InvalidInputError, match="dtype must be"):
        make_forward_model("denoise", 3, SIZE, dtype=torch.float16)
    with pytest.raises(InvalidInputError, match="size must be"):
        make_forward_model("denoise", 3, (0, 4))
    with pytest.raises(InvalidInputError, match="iterations"):
        power_norm_sq(make_forward_model("denoise", 3, SIZE), (1, 3, *SIZE), generator("cpu"), 0)
    with pytest.raises(InvalidInputError, match="missing"):
        InpaintingModel(3, SIZE, missing=1.0)


class _MetaModel:
    """A model whose tensors live on another device than the CPU generator."""

    sigma = torch.zeros(3, device="meta")


def test_generator_on_another_device_names_the_fix():
    message = r"generator is on cpu but the model is on meta.*torch.Generator\(device='meta'\)"
    with pytest.raises(InvalidInputError, match=message):
        adjointness_test(_MetaModel(), (1, 3, 4, 4), generator("cpu"))
    with pytest.raises(InvalidInputError, match=r"must be a torch\.Generator"):
        power_norm_sq(_MetaModel(), (1, 3, 4, 4), object())


@CUDA
def test_observe_with_cpu_generator_on_cuda_names_the_fix():
    model = make_forward_model("denoise", 3, SIZE, device="cuda")
    with pytest.raises(InvalidInputError, match=r"torch.Generator\(device='cuda:0'\)"):
        model.observe(torch.zeros(1, 3, *SIZE, device="cuda"), generator("cpu"))


def test_import_does_not_load_deepinv():
    code = "import sys, retune_suite.operators.maps.physics; assert 'deepinv' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("task", TASKS)
def test_adjointness_test_agrees_with_deepinv(task):
    """Our dot-product test (operators.jacobians.dot_product_gap, seeded and scale-free)
    against deepinv's ``LinearPhysics.adjointness_test`` (a Monte-Carlo ‖A − Bᵀ‖_F/‖A‖_F):
    both pass the true adjoint and both flag a wrong one (Aᵀ scaled by 1.01)."""
    dinv = pytest.importorskip("deepinv")

    model = make_forward_model(task, 3, SIZE, dtype=torch.float64, seed=1)
    u = torch.zeros(1, 3, *SIZE, dtype=torch.float64)
    torch.manual_seed(0)  # deepinv draws its vectors from the global RNG
    right = dinv.physics.LinearPhysics(A=model.A, A_adjoint=model.A_adjoint)
    wrong_adjoint = lambda y: 1.01 * model.A_adjoint(y)  # noqa: E731
    wrong = dinv.physics.LinearPhysics(A=model.A, A_adjoint=wrong_adjoint)
    assert abs(float(right.adjointness_test(u, num_samples=4))) < 1e-12
    assert abs(float(wrong.adjointness_test(u, num_samples=4))) > 1e-3
    g = generator("cpu")
    assert adjointness_test(model, (1, 3, *SIZE), g) < 1e-12
    x = torch.randn(1, 3, *SIZE, generator=g, dtype=torch.float64)
    y = torch.randn(model.A(x).shape, generator=g, dtype=torch.float64)
    from retune_suite.operators.jacobians import dot_product_gap

    # random x, y make ⟨Ax, y⟩ ~ ‖Ax‖‖y‖/√n, so a 1% error shows as ~1e-2/√n ≈ 1e-4: far
    # above the 1e-12 float64 tolerance every adjointness test of the suite uses
    assert dot_product_gap(model.A, wrong_adjoint, x, y) > 1e3 * ADJOINT_TOL[torch.float64]


def _deepinv_operator(model):
    """deepinv's own operator for our model: Denoising, Inpainting with our mask, BlurFFT with
    our (1, 3, w, w) filter (what this module used before it wrote them in torch)."""
    physics = pytest.importorskip("deepinv.physics")
    C, H, W = model.shape
    if isinstance(model, InpaintingModel):
        mask = model.mask.view(1, H, W)
        return physics.Inpainting(img_size=(C, H, W), mask=mask, noise_model=physics.ZeroNoise())
    if isinstance(model, DeblurringModel):
        return physics.BlurFFT(
            img_size=(C, H, W), filter=model.physics.filter, noise_model=physics.ZeroNoise()
        )
    return physics.Denoising(noise_model=physics.ZeroNoise())


@pytest.mark.parametrize("size", [SIZE, (25, 31), (33, 26)])
@pytest.mark.parametrize("task", TASKS)
def test_operators_are_deepinvs(task, size):
    """A and Aᵀ written in torch (so the core needs no deepinv) are deepinv's Denoising,
    Inpainting and BlurFFT to 1e-12 in float64, odd and even sizes (the blur kernel's centre
    and the real FFT's last bin), and keep their attributes (.mask, .filter)."""
    model = make_forward_model(task, 3, size, dtype=torch.float64, seed=3)
    theirs = _deepinv_operator(model)
    g = generator("cpu", 11)
    for _ in range(3):
        x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
        for ours, reference in ((model.A, theirs.A), (model.A_adjoint, theirs.A_adjoint)):
            expected = reference(x)
            assert expected.dtype == torch.float64
            torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(model.physics(x), theirs(x), rtol=0, atol=1e-12)
    if task == "inpaint":
        assert torch.equal(model.mask, theirs.mask)
    if task == "deblur":
        assert torch.equal(model.physics.filter, theirs.filter)
        assert torch.equal(model.kernels, anisotropic_blur_kernels(25, dtype=torch.float64))


def test_blur_centre_of_any_kernel_is_deepinvs():
    """A kernel that is not symmetric, even sides, one per channel: deepinv's centring
    (entry (⌊h/2⌋, ⌊w/2⌋)) and its adjoint, to 1e-12."""
    from retune_suite.operators.maps.physics import CircularBlur

    physics = pytest.importorskip("deepinv.physics")
    g = generator("cpu", 5)
    kernel = torch.rand(1, 3, 4, 6, generator=g, dtype=torch.float64)
    ours = CircularBlur(kernel, (9, 10))
    theirs = physics.BlurFFT(img_size=(3, 9, 10), filter=kernel, noise_model=physics.ZeroNoise())
    x = torch.randn(2, 3, 9, 10, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours.A(x), theirs.A(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.A_adjoint(x), theirs.A_adjoint(x), rtol=0, atol=1e-12)
    delta = torch.zeros(1, 3, 9, 10, dtype=torch.float64)
    delta[..., 0, 0] = 1.0
    response = ours.A(delta)[0, 0]  # the kernel, its entry (2, 3) moved to the origin
    torch.testing.assert_close(response[:2, :3], kernel[0, 0, 2:, 3:], rtol=0, atol=1e-14)
