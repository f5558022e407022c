"""The orthonormal wavelet transform D of section 4.1 against PyWavelets, and DᵀD = I."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.operators import InvalidInputError
from retune_suite.operators.errors import MissingExtraError
from retune_suite.operators.maps.wavelet import (
    Wavelet2D,
    _filters,
    _pywt_filter,
    adjointness_test,
    reconstruction_error,
)
from retune_suite.operators.maps.wavelet_filters import FILTERS

pywt = pytest.importorskip("pywt")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
WAVELETS = ("haar", "db2", "db4", "sym4")
LEVELS = (1, 2, 3, 4)
# Both relative (to ‖x‖ or to the coefficients' scale), as the brief asks: float64 agrees to a
# few ulps per level, float32 to a few float32 ulps (eps = 1.2e-7).
TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the images here are small, and a 2-core machine shared with other
    work can stall a second thread for a scheduler slice (~8 ms) on every parallel op."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def reference_wavelet(name: str):
    """pywt's own wavelet when our filters are its filters bit for bit, else the same filters
    in a pywt filter bank (sym4: see test_filters_are_pywt_filters)."""
    lo, hi = _filters(name)
    named = pywt.Wavelet(name)
    if lo == tuple(named.dec_lo) and hi == tuple(named.dec_hi):
        return named
    return pywt.Wavelet(name + "-orthonormal", filter_bank=(lo, hi, lo[::-1], hi[::-1]))


def wavedec2(x: torch.Tensor, wavelet, levels: int) -> list:
    """pywt.wavedec2 of every (b, c) image, periodization mode; warnings about "too many
    levels" (every coefficient touches the boundary) are expected on small images."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [
            [pywt.wavedec2(image, wavelet, mode="periodization", level=levels) for image in xb]
            for xb in x.detach().cpu().double().numpy()
        ]


def image(shape, dtype=torch.float64, seed=0, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (48, 64)])
@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("name", WAVELETS)
def test_coefficients_are_pywt_wavedec2(name, levels, size):
    """Same numbers, band order (cH, cV, cD), shift and level order as pywt.wavedec2 with
    mode="periodization", per (b, c); short signals (db4 on 2×2 at level 4) included."""
    x = image((2, 3, *size), seed=levels)
    approx, details = Wavelet2D(name, levels).forward(x)
    assert approx.shape == (2, 3, size[0] >> levels, size[1] >> levels)
    reference = wavedec2(x, reference_wavelet(name), levels)
    for b in range(2):
        for c in range(3):
            coeffs = reference[b][c]
            np.testing.assert_allclose(approx[b, c].numpy(), coeffs[0], rtol=0, atol=1e-12)
            for j, d in enumerate(details):
                assert d.shape == (2, 3, 3, size[0] >> (j + 1), size[1] >> (j + 1))
                # pywt lists the coarsest level first; details[0] is the finest
                for band in range(3):
                    expected = coeffs[levels - j][band]
                    np.testing.assert_allclose(d[b, c, band].numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["db4", "haar", "sym4"])
def test_packed_is_coeffs_to_array_and_inverse_is_waverec2(name):
    levels = 3
    x = image((2, 3, 48, 64), seed=3)
    D = Wavelet2D(name, levels)
    u = D.analysis(x)
    wavelet = reference_wavelet(name)
    for b in range(2):
        for c in range(3):
            coeffs = wavedec2(x[b : b + 1, c : c + 1], wavelet, levels)[0][0]
            array, _ = pywt.coeffs_to_array(coeffs)
            np.testing.assert_allclose(u[b, c].numpy(), array, rtol=0, atol=1e-12)
            # waverec2 of the same coefficients (pywt's own reconstruction filters)
            pywt_x = pywt.waverec2(coeffs, wavelet, mode="periodization")
            np.testing.assert_allclose(D.synthesis(u)[b, c].numpy(), pywt_x, rtol=0, atol=1e-12)
    torch.testing.assert_close(D.pack(*D.forward(x)), u, rtol=0, atol=0)


def test_filters_are_pywt_filters():
    """haar, db2, db4: pywt's taps bit for bit. sym4: pywt's tabulated taps are orthonormal
    only to 5e-13 (‖h‖² − 1), so D would not be; ours are re-orthonormalised, moving each tap
    by less than 3e-13, and satisfy Σ h_n h_{n+2k} = δ_k to float64 rounding."""
    for name in ("haar", "db2", "db4", "db8", "coif2"):
        lo, hi = _filters(name)
        assert lo == tuple(pywt.Wavelet(name).dec_lo)
        assert hi == tuple(pywt.Wavelet(name).dec_hi)
    lo, hi = map(np.array, _filters("sym4"))
    tabulated = pywt.Wavelet("sym4")
    assert np.abs(np.sum(np.square(tabulated.dec_lo)) - 1) > 1e-13  # why sym4 is refined
    assert np.abs(lo - tabulated.dec_lo).max() < 3e-13
    assert np.abs(hi - tabulated.dec_hi).max() < 3e-13
    for k in range(4):
        assert abs(lo[: 8 - 2 * k] @ lo[2 * k :] - (k == 0)) < 4e-16
        assert abs(hi[: 8 - 2 * k] @ hi[2 * k :] - (k == 0)) < 4e-16
        assert abs(lo[: 8 - 2 * k] @ hi[2 * k :]) < 4e-16


def test_shipped_filter_table_is_pywt_bit_for_bit():
    """The table the core uses without PyWavelets: (dec_lo, dec_hi) exactly as pywt's, and
    _filters gives the same filters whether the taps come from the table or from pywt."""
    expected = ["haar", *(f"db{n}" for n in range(1, 11)), *(f"sym{n}" for n in range(2, 11))]
    assert list(FILTERS) == [*expected, *(f"coif{n}" for n in range(1, 6))]
    for name, (lo, hi) in FILTERS.items():
        wavelet = pywt.Wavelet(name)
        assert wavelet.orthogonal
        assert lo == tuple(wavelet.dec_lo), name
        assert hi == tuple(wavelet.dec_hi), name
        assert all(type(v) is float for v in (*lo, *hi))
        assert _pywt_filter(name) == lo
    for name in ("db4", "sym4", "coif3"):
        assert _filters(name) == _filters.__wrapped__(name)


def test_other_names_come_from_pywt(monkeypatch):
    """db12 is not in the table: pywt's taps when it is there, else an error naming the extra
    and PyWavelets (the cache is bypassed: _filters.__wrapped__)."""
    lo, hi = _filters.__wrapped__("db12")
    np.testing.assert_allclose(lo, pywt.Wavelet("db12").dec_lo, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hi, pywt.Wavelet("db12").dec_hi, rtol=0, atol=1e-15)
    monkeypatch.setitem(sys.modules, "pywt", None)  # `import pywt` raises ImportError
    assert _filters.__wrapped__("db4") == _filters("db4")  # the table needs no pywt
    with pytest.raises(
        MissingExtraError,
        match=r"'db12' needs pywt: pip install 'retune-suite\[peers\]'.*pip install PyWavelets",
    ):
        _filters.__wrapped__("db12")


@st.composite
def transforms(draw):
    """A transform and an input shape it accepts: H, W multiples of 2^J, batched B and C."""
    levels = draw(st.sampled_from(LEVELS))
    H = (1 << levels) * draw(st.integers(1, 4))
    W = (1 << levels) * draw(st.integers(1, 4))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    return Wavelet2D(draw(st.sampled_from(WAVELETS)), levels), shape


@given(
    case=transforms(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_orthonormal(case, dtype, seed):
    """DᵀD = DDᵀ = I, ‖Dx‖ = ‖x‖ and ⟨Dx, u⟩ = ⟨x, Dᵀu⟩ (what eqs. (46)–(50) use)."""
    D, shape = case
    x, u = image(shape, dtype, seed), image(shape, dtype, seed + 1)
    Dx, DTu = D.analysis(x), D.synthesis(u)
    assert Dx.dtype == DTu.dtype == dtype
    assert relative(D.synthesis(Dx), x) < TOL[dtype]
    assert relative(D.analysis(DTu), u) < TOL[dtype]
    assert relative(D.inverse(*D.forward(x)), x) < TOL[dtype]
    assert abs(float(Dx.norm() / x.norm()) - 1) < TOL[dtype]
    assert adjointness_test(D, shape, torch.Generator().manual_seed(seed), dtype) < TOL[dtype]
    gap = torch.vdot(Dx.flatten(), u.flatten()) - torch.vdot(x.flatten(), DTu.flatten())
    assert abs(float(gap)) < TOL[dtype] * float(x.norm() * u.norm())


@given(case=transforms(), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(case, seed):
    D, shape = case
    u = image(shape, seed=seed)
    approx, details = D.unpack(u)
    torch.testing.assert_close(D.pack(approx, details), u, rtol=0, atol=0)
    x = image(shape, seed=seed + 1)
    approx, details = D.forward(x)
    again = D.unpack(D.pack(approx, details))
    torch.testing.assert_close(again[0], approx, rtol=0, atol=0)
    for got, want in zip(again[1], details, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_pack_broadcasts_and_differentiates():
    """As the wavelet prior builds θ: expanded (1, C, 3, h, w) scales and a ones approx."""
    D = Wavelet2D("db4", 2)
    lam = torch.tensor([0.5, 2.0], requires_grad=True)
    details = [lam[j] * torch.ones(1, 3, 1, 1, 1).expand(1, 3, 3, 8 >> j, 8 >> j) for j in (0, 1)]
    packed = D.pack(torch.ones(1, 3, 4, 4), details)
    assert packed.shape == (1, 3, 16, 16)
    packed.sum().backward()
    torch.testing.assert_close(lam.grad, torch.tensor([3.0 * 3 * 64, 3.0 * 3 * 16]))
    mixed = D.pack(torch.zeros(2, 3, 4, 4), [d.expand(2, -1, -1, -1, -1) for d in details])
    assert mixed.shape == (2, 3, 16, 16)


def test_gradients_are_the_adjoint():
    """∇ₓ⟨Dx, u⟩ = Dᵀu and ∇ᵤ⟨x, Dᵀu⟩ = Dx: the backward of D is Dᵀ and vice versa."""
    D = Wavelet2D("db4", 3)
    x = image((2, 3, 16, 32), seed=5).requires_grad_()
    u = image((2, 3, 16, 32), seed=6).requires_grad_()
    (D.analysis(x) * u.detach()).sum().backward()
    torch.testing.assert_close(x.grad, D.synthesis(u.detach()), rtol=0, atol=1e-12)
    (D.synthesis(u) * x.detach()).sum().backward()
    torch.testing.assert_close(u.grad, D.analysis(x.detach()), rtol=0, atol=1e-12)
    x.grad = None
    approx, details = D.forward(x)
    (approx.sum() + sum((d * (j + 1)).sum() for j, d in enumerate(details))).backward()
    expected = D.inverse(
        torch.ones_like(approx), [torch.full_like(d, j + 1.0) for j, d in enumerate(details)]
    )
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("name", "levels", "size"), [("db4", 1, 8), ("db2", 2, 8), ("haar", 2, 4)])
def test_gradcheck(name, levels, size):
    """Finite differences (float64), second order and forward mode, through all four maps."""
    D = Wavelet2D(name, levels)
    x = image((1, 1, size, size), seed=7).requires_grad_()
    h = size >> levels

    def forward(z):
        approx, details = D.forward(z)
        return approx, *details

    def inverse(a, *details):
        return D.inverse(a, list(details))

    coeffs = [t.detach().requires_grad_() for t in forward(x)]
    for f, args in ((D.analysis, (x,)), (D.synthesis, (x,)), (forward, (x,)), (inverse, coeffs)):
        assert torch.autograd.gradcheck(f, args, check_forward_ad=True)
    # second order: the backward of D is Dᵀ, itself differentiable
    assert torch.autograd.gradgradcheck(D.analysis, (x,))
    assert torch.autograd.gradgradcheck(D.synthesis, (x,))
    assert coeffs[0].shape == (1, 1, h, h)


def test_torch_func_jacobian_is_orthogonal():
    """jacrev (vmap over the backward), jacfwd (forward mode) and vmap: the dense matrix of D
    is orthogonal, and Dᵀ's is its transpose."""
    D = Wavelet2D("db2", 2)
    x = image((1, 1, 8, 8), seed=8)

    def analysis(z):
        return D.analysis(z.view(1, 1, 8, 8)).reshape(-1)

    def synthesis(z):
        return D.synthesis(z.view(1, 1, 8, 8)).reshape(-1)

    A = torch.func.jacrev(analysis)(x.reshape(-1))
    torch.testing.assert_close(A @ A.T, torch.eye(64), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.func.jacfwd(analysis)(x.reshape(-1)), A, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.func.jacrev(synthesis)(x.reshape(-1)), A.T, rtol=0, atol=1e-14)
    batch = image((5, 2, 3, 16, 16), seed=9)
    torch.testing.assert_close(
        torch.func.vmap(D.analysis)(batch), D.analysis(batch.flatten(0, 1)).unflatten(0, (5, 2))
    )
    approx, details = torch.func.vmap(D.forward)(batch)
    torch.testing.assert_close(torch.func.vmap(D.inverse)(approx, details), batch)


def test_batched_equals_one_image_at_a_time_and_any_strides():
    D = Wavelet2D("db4", 4)
    x = image((3, 2, 32, 48), seed=10)
    u = D.analysis(x)
    for b in range(3):
        for c in range(2):
            torch.testing.assert_close(D.analysis(x[b : b + 1, c : c + 1])[0, 0], u[b, c])
    strided = image((2, 3, 48, 32), seed=10).transpose(-1, -2)  # a non-contiguous (2, 3, 32, 48)
    torch.testing.assert_close(D.analysis(strided), D.analysis(strided.contiguous()))
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(D.analysis(cl), u)
    torch.testing.assert_close(D.synthesis(u.contiguous(memory_format=torch.channels_last)), x)


@pytest.mark.parametrize("name", ["db4", "sym4"])
def test_float64_exact_whatever_the_default_dtype(name):
    """The block matrices are built in float64 whatever torch's default dtype (the suite runs
    with float64 as default; user code usually has float32): exact in float64 regardless."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        D = Wavelet2D(name, 3)
        x = image((2, 3, 32, 48), seed=11)
        assert relative(D.synthesis(D.analysis(x)), x) < TOL[torch.float64]
        assert relative(D.inverse(*D.forward(x)), x) < TOL[torch.float64]
        assert adjointness_test(D, x.shape, torch.Generator().manual_seed(3)) < TOL[torch.float64]
    finally:
        torch.set_default_dtype(previous)


def test_filters_cached_per_device_and_dtype():
    D = Wavelet2D("db4", 2)
    for dtype in (torch.float64, torch.float32, torch.float64):
        assert D.analysis(image((1, 1, 8, 8), dtype)).dtype == dtype
    assert sorted(str(dtype) for _, dtype in D._banks) == ["torch.float32", "torch.float64"]
    assert D.filter_length == 8


def test_float32_matches_float64():
    D = Wavelet2D("db4", 4)
    x = image((2, 3, 64, 64))
    u64, u32 = D.analysis(x), D.analysis(x.float())
    assert u32.dtype == torch.float32
    assert relative(u32.double(), u64) < TOL[torch.float32]


def test_self_checks():
    g = torch.Generator().manual_seed(0)
    assert adjointness_test(Wavelet2D(), (1, 3, 32, 32), g) < 1e-12
    assert reconstruction_error(Wavelet2D(), (1, 3, 32, 32), g) < 1e-12
    assert reconstruction_error(Wavelet2D(), (1, 3, 32, 32), g, torch.float32) < 1e-6


def test_errors_name_the_fix():
    D = Wavelet2D("db4", 4)
    with pytest.raises(InvalidInputError, match="crop to a multiple of 16"):
        D.analysis(torch.zeros(1, 1, 40, 32))
    with pytest.raises(InvalidInputError, match=r"\(B, C, H, W\)"):
        D.forward(torch.zeros(32, 32))
    with pytest.raises(InvalidInputError, match="float32 or float64"):
        D.analysis(torch.zeros(1, 1, 32, 32, dtype=torch.int64))
    with pytest.raises(InvalidInputError, match="not orthogonal"):
        Wavelet2D("bior2.2")
    with pytest.raises(InvalidInputError, match="unknown wavelet"):
        Wavelet2D("db4x")
    with pytest.raises(InvalidInputError, match="integer ≥ 1"):
        Wavelet2D("db4", 0)
    approx, details = D.forward(torch.zeros(1, 1, 32, 32))
    with pytest.raises(InvalidInputError, match="detail levels"):
        D.inverse(approx, details[:3])
    with pytest.raises(InvalidInputError, match="finest level first"):
        D.inverse(approx, details[::-1])
    with pytest.raises(InvalidInputError, match="one dtype and device"):
        D.inverse(approx, [d.float() for d in details])
    with pytest.raises(InvalidInputError, match=r"share \(B, C\)"):
        D.inverse(approx, [details[0].expand(2, -1, -1, -1, -1), *details[1:]])


@CUDA
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    D = Wavelet2D("db4", 4)
    x = image((2, 3, 64, 48), dtype)
    xc = x.cuda().requires_grad_()
    u = D.analysis(xc)
    assert u.device == xc.device and u.dtype == dtype
    torch.testing.assert_close(u.cpu(), D.analysis(x), rtol=TOL[dtype], atol=TOL[dtype])
    approx, details = D.forward(xc)
    assert all(d.device == xc.device for d in details)
    torch.testing.assert_close(
        D.inverse(approx, details).cpu(), x, rtol=TOL[dtype], atol=TOL[dtype]
    )
    (u * u.detach()).sum().backward()  # ∇ = Dᵀu = x
    torch.testing.assert_close(xc.grad.cpu(), x, rtol=TOL[dtype], atol=TOL[dtype])
    g = torch.Generator(device="cuda").manual_seed(0)
    assert adjointness_test(D, (2, 3, 64, 48), g, dtype) < TOL[dtype]
    assert {key[0].type for key in D._banks} == {"cuda", "cpu"}
