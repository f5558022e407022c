r"""The orthonormal 2-D wavelet transform D of section 4.1 (Daubechies-4, 4 levels, periodized).

The paper's wavelet prior (44)–(45) penalises the detail coefficients u = Dx, and the
forward-backward step (51) on u writes the image as x = Dᵀθ⁻¹u: eqs. (46)–(50) replace D⁻¹
by Dᵀ, which is exact only when D is orthonormal,

.. math:: D^\top D = D D^\top = \mathrm{Id}, \qquad ‖Dx‖_2 = ‖x‖_2 .

With periodic extension ("periodization" in PyWavelets) and an orthogonal filter pair of even
length L, one level along one axis of a signal of even length N is

.. math::

    a_k = \sum_{m=0}^{L-1} h_m\, x_{(2k + L/2 - m) \bmod N}, \qquad
    d_k = \sum_{m=0}^{L-1} g_m\, x_{(2k + L/2 - m) \bmod N}, \qquad k < N/2,

(h, g) = ``pywt.Wavelet(name).dec_lo``, ``.dec_hi`` (shipped in :mod:`.wavelet_filters` for
haar, db1–db10, sym2–sym10 and coif1–coif5, so PyWavelets is needed only for other names): the
coefficients of ``pywt.wavedec2(x, name, mode="periodization")`` exactly, short signals
(N < L) included, where the filter wraps around several times. The adjoint, written in
polyphase form (x_{2q+r} from the coefficients a_{q+d}, d_{q+d}), is the inverse.

:class:`Wavelet2D` applies each level as two block-Toeplitz matrix products (batched GEMMs
on strided views of one periodically padded buffer, along H then W; see :func:`_analysis_into`),
level after level on the approximation. The input is never moved between devices; the
filters are built once per (device, dtype). Gradients are the exact adjoints: the backward of
D is Dᵀ and the backward of Dᵀ is D (custom autograd functions with forward-mode and ``vmap``
rules, so :mod:`torch.func` transforms them too). ``docs/wavelet.md`` has the measurements that
chose this implementation over ptwt's.

>>> D = Wavelet2D("db4", levels=2)
>>> x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
>>> approx, details = D.forward(x)
>>> approx.shape, details[0].shape, details[1].shape
(torch.Size([2, 3, 4, 4]), torch.Size([2, 3, 3, 8, 8]), torch.Size([2, 3, 3, 4, 4]))
>>> bool(torch.allclose(D.inverse(approx, details), x, atol=1e-12))
True
>>> u = D.analysis(x)
>>> bool(torch.allclose(u.norm(), x.norm())), bool(torch.allclose(D.synthesis(u), x))
(True, True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InvalidInputError, require
from ..jacobians import dot_product_gap
from .wavelet_filters import FILTERS

_Triplet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@functools.cache
def _filters(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(dec_lo, dec_hi) of an orthogonal PyWavelets wavelet, orthonormal to float64 rounding.

    haar, db1–db10, sym2–sym10 and coif1–coif5 come from the table shipped with the suite
    (:mod:`.wavelet_filters`, PyWavelets' taps bit for bit); other names from PyWavelets, when
    it is installed.
    """
    if name in FILTERS:
        taps = FILTERS[name][0]
    else:
        taps = _pywt_filter(name)
    lo = _orthonormalize(list(taps))
    L = len(lo)
    hi = [(-1.0) ** (n + 1) * lo[L - 1 - n] for n in range(L)]  # pywt's dec_hi from dec_lo
    return tuple(lo), tuple(hi)


def _pywt_filter(name: str) -> tuple[float, ...]:
    """PyWavelets' dec_lo of ``name``, checked to be orthogonal."""
    built_in = "haar, db1–db10, sym2–sym10, coif1–coif5"
    pywt = require(
        "pywt",
        "peers",
        f"the wavelet {name!r}",
        hint=f"(or pip install PyWavelets); built in without it: {built_in}",
    )
    try:
        wavelet = pywt.Wavelet(name)
    except ValueError as error:
        raise InvalidInputError(
            f"unknown wavelet {name!r}: use one of {built_in} or a name from "
            "pywt.wavelist(kind='discrete'), e.g. 'haar', 'db4', 'sym4', 'coif2'."
        ) from error
    if not wavelet.orthogonal:
        raise InvalidInputError(
            f"wavelet {name!r} is not orthogonal, so DᵀD ≠ I (eqs. (46)–(50) need D⁻¹ = Dᵀ): "
            "use an orthogonal family (haar, dbN, symN, coifN)."
        )
    return tuple(map(float, wavelet.dec_lo))


def _orthonormalize(h: list[float], tol: float = 1e-15) -> list[float]:
    r"""The nearest filter to h with Σ_n h_n h_{n+2k} = δ_k exactly (to float64 rounding).

    Some of PyWavelets' tabulated filters carry only 12–13 digits (sym4: ‖h‖² − 1 = 5e-13),
    so D would be orthonormal only to that precision per level. Least-norm Gauss–Newton steps

    .. math:: h ← h − J^\top (J J^\top)^{-1} F(h), \qquad F_k(h) = Σ_n h_n h_{n+2k} − δ_k,

    move h by about ‖F‖ (2.3e-13 for sym4); filters already orthonormal to ``tol`` are
    returned unchanged, bit for bit.
    """
    import numpy as np

    x = np.asarray(h, dtype=np.float64)
    L = len(x)
    for _ in range(8):
        F = np.array([x[: L - 2 * k] @ x[2 * k :] - (k == 0) for k in range(L // 2)])
        if np.abs(F).max() <= tol:
            break
        J = np.zeros((L // 2, L))
        for k in range(L // 2):
            J[k, : L - 2 * k] += x[2 * k :]
            J[k, 2 * k :] += x[: L - 2 * k]
        x = x - J.T @ np.linalg.solve(J @ J.T, F)
    return [float(v) for v in x]


@dataclass(frozen=True)
class _Bank:
    """The filters of one wavelet on one (device, dtype), as the block matrices the passes use.

    Analysis, one axis, signal periodically padded by ``margin`` = L/2 − 1 on both sides: a
    block of b inputs (b even) and its 2·margin neighbours give b/2 low-pass and b/2
    high-pass outputs, ``analysis_matrix(b)`` (b + L − 2, b), columns (band, k).
    Synthesis (polyphase): x_{2q+r} = Σ_{band, i} f_band[2(d_lo + i) + L/2 − r] c_band[q + d_lo + i]
    (``synthesis_taps[r]`` lists (band, i, f)); the coefficients are padded by
    ``synthesis_pad`` = (−d_lo, d_hi) with the two bands interleaved, and a window of
    b + 2K − 2 of them (K = d_hi − d_lo + 1) gives b outputs, ``synthesis_matrix(b)``
    (b + 2K − 2, b), columns in natural order 2q + r.
    """

    length: int
    device: torch.device
    dtype: torch.dtype
    analysis_taps: tuple[tuple[float, ...], tuple[float, ...]]
    synthesis_taps: tuple[tuple[tuple[int, int, float], ...], ...]
    synthesis_pad: tuple[int, int]
    _matrices: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def margin(self) -> int:
        return self.length // 2 - 1

    @property
    def synthesis_taps_count(self) -> int:
        return sum(self.synthesis_pad) + 1

    def analysis_matrix(self, b: int) -> torch.Tensor:
        key = ("analysis", b)
        if key not in self._matrices:
            m = torch.zeros(b + self.length - 2, b, dtype=torch.float64)
            for band, taps in enumerate(self.analysis_taps):
                for k in range(b // 2):
                    m[2 * k : 2 * k + self.length, band * (b // 2) + k] = torch.tensor(
                        taps, dtype=torch.float64
                    )
            self._matrices[key] = m.to(device=self.device, dtype=self.dtype)
        return self._matrices[key]

    def synthesis_matrix(self, b: int) -> torch.Tensor:
        key = ("synthesis", b)
        if key not in self._matrices:
            K = self.synthesis_taps_count
            m = torch.zeros(b + 2 * K - 2, b, dtype=torch.float64)
            for r, taps in enumerate(self.synthesis_taps):
                for q in range(b // 2):
                    for band, i, value in taps:
                        m[2 * (q + i) + band, 2 * q + r] = value
            self._matrices[key] = m.to(device=self.device, dtype=self.dtype)
        return self._matrices[key]


def _make_bank(name: str, device: torch.device, dtype: torch.dtype) -> _Bank:
    lo, hi = _filters(name)
    L = len(lo)
    s = L // 2  # a_k = Σ_m h_m x_{2k + s − m}: PyWavelets' periodization shift
    # x_{2q+r} = Σ_d f[2d + s − r] c_{q+d} over the d with 0 ≤ 2d + s − r < L
    d_lo = min(math.ceil((r - s) / 2) for r in (0, 1))
    d_hi = max((L - 1 + r - s) // 2 for r in (0, 1))
    taps = [
        tuple(
            (band, i, f[2 * (d_lo + i) + s - r])
            for i in range(d_hi - d_lo + 1)
            for band, f in enumerate((lo, hi))
            if 0 <= 2 * (d_lo + i) + s - r < L
        )
        for r in (0, 1)
    ]
    return _Bank(
        length=L,
        device=device,
        dtype=dtype,
        analysis_taps=(lo[::-1], hi[::-1]),
        synthesis_taps=tuple(taps),
        synthesis_pad=(-d_lo, d_hi),
    )


def _periodize(buf: torch.Tensor, dim: int, left: int, n: int, right: int) -> None:
    """Fill the margins of ``buf`` along ``dim`` from its interior [left, left + n), periodically.

    Works for margins longer than n (the interior is repeated), as periodization needs when
    the filter is longer than the signal.
    """
    pos, todo = left + n, right
    while todo > 0:
        c = min(n, todo)
        buf.narrow(dim, pos, c).copy_(buf.narrow(dim, left, c))
        pos, todo = pos + c, todo - c
    pos, todo = left, left
    while todo > 0:
        c = min(n, todo)
        pos -= c
        buf.narrow(dim, pos, c).copy_(buf.narrow(dim, left + n - c, c))
        todo -= c


def _block(n: int, prefer: int) -> int:
    """The largest power of two ≤ ``prefer`` that divides n (n even): a pass's block size."""
    b = prefer
    while n % b:
        b //= 2
    return b


# Block sizes (outputs per GEMM block) along W and H: the fastest pair in single-pass timings
# at 256 × 256 on the 2-core CPU (larger blocks waste more multiply-adds on the Toeplitz
# zeros, smaller ones make GEMMs too small); any power of two ≥ 2 gives the same numbers.
_BLOCK_W, _BLOCK_H = 16, 8


def _analysis_into(x: torch.Tensor, targets: Sequence[torch.Tensor], bank: _Bank) -> None:
    """Write level j of D x (x: (N, H, W)) into ``targets[j]``, a (N, 2, h, 2, w) view.

    ``targets[j][:, bH, :, bW]`` receives band (bH, bW), 0 = low pass, 1 = high pass, along
    (H, W): (0, 0) approximation, (1, 0) = cH, (0, 1) = cV, (1, 1) = cD. Level j + 1 reads
    its input from ``targets[j][:, 0, :, 0]``.

    Per level, as two block-Toeplitz matrix products (batched GEMMs, 2× faster end to end on
    the CPU than the strided conv1d and L shifted multiply-adds they replace, which
    ``benchmarks/wavelet_before.py`` keeps): the image is copied once into a buffer padded
    periodically by m = L/2 − 1 on every side, P rows per image (P a multiple of the H
    block b_H); along H, every block of b_H rows and its 2m neighbours (a strided view of
    the buffer, no copy: rows are contiguous) is multiplied by ``analysis_matrix(b_H)ᵀ``;
    along W, every block of b_W columns and its 2m neighbours of the result by
    ``analysis_matrix(b_W)``; a last permuted copy writes the four bands into the target.
    The windows are the exact periodized sums, so D is the same linear map as the
    definition above (tested against pywt to 1e-12).
    """
    m = bank.margin
    src = x
    for target in targets:
        N, H, W = src.shape
        bw, bh = _block(W, _BLOCK_W), _block(H, _BLOCK_H)
        P = -(-(H + 2 * m) // bh) * bh  # rows per image: a multiple of bh
        Wp = W + 2 * m
        buf = src.new_empty(N, P, Wp)
        buf[:, m : m + H, m : m + W].copy_(src)
        _periodize(buf.narrow(1, m, H), 2, m, W, m)
        _periodize(buf, 1, m, H, m)
        buf[:, H + 2 * m :].zero_()  # rows only the discarded windows read
        # along H first (the rows are contiguous, so each window is a plain (bh + 2m, Wp)
        # matrix): P/bh windows per image, those past the image's last block never computed
        per_image = P // bh
        count = (N - 1) * per_image + H // bh
        windows = buf.as_strided((count, bh + 2 * m, Wp), (bh * Wp, Wp, 1))
        cols = buf.new_empty(N * per_image, bh, Wp)
        torch.matmul(bank.analysis_matrix(bh).T, windows, out=cols[:count])
        cols[count:].zero_()
        # along W: (W/bw, N·P, bw + 2m) windows @ (bw + 2m, bw) -> (W/bw, N·P, [band, k])
        windows = cols.as_strided((W // bw, N * P, bw + 2 * m), (bw, Wp, 1))
        z = torch.matmul(windows, bank.analysis_matrix(bw))
        # z: (W/bw, N, P/bh, [bandH, kH], [bandW, kW]) -> target (N, bandH, h, bandW, w)
        z = z.view(W // bw, N, per_image, 2, bh // 2, 2, bw // 2)[:, :, : H // bh]
        dst = target.unflatten(2, (H // bh, bh // 2)).unflatten(5, (W // bw, bw // 2))
        dst.copy_(z.permute(1, 3, 2, 4, 5, 0, 6))
        src = target[:, 0, :, 0]


def _synthesis(approx: torch.Tensor, details: Sequence[_Triplet], bank: _Bank) -> torch.Tensor:
    """Dᵀ of (approx (N, h_J, w_J), details[j] = (cH, cV, cD), each (N, h_j, w_j)) -> (N, H, W).

    Per level, the polyphase form as two block-Toeplitz GEMMs: the four bands go into one
    buffer (N, P, 2, w + K − 1, 2) (positions padded periodically, the two bands interleaved
    along each axis, 2P a multiple of the H block); along H, every window of b_H + 2K − 2
    interleaved rows times ``synthesis_matrix(b_H)ᵀ`` gives b_H rows in natural order; along
    W the same on the result; a permuted copy writes the pixels into the next level's
    buffer (or the output).
    """
    K = bank.synthesis_taps_count
    left, right = bank.synthesis_pad
    N, h, w = approx.shape
    buf, P = _synthesis_buffer(approx, h, w, K)
    buf[:, left : left + h, 0, left : left + w, 0].copy_(approx)
    for j in reversed(range(len(details))):
        cH, cV, cD = details[j]
        buf[:, left : left + h, 1, left : left + w, 0].copy_(cH)
        buf[:, left : left + h, 0, left : left + w, 1].copy_(cV)
        buf[:, left : left + h, 1, left : left + w, 1].copy_(cD)
        _periodize(buf.narrow(1, left, h), 3, left, w, right)
        _periodize(buf, 1, left, h, right)
        buf[:, h + K - 1 :].zero_()  # rows only the discarded windows read
        H, W = 2 * h, 2 * w
        bw, bh = _block(W, _BLOCK_W), _block(H, _BLOCK_H)
        wp = w + K - 1
        # along H first: rows (n, position, bandH) hold 2·wp interleaved coefficients each
        per_image = 2 * P // bh
        count = (N - 1) * per_image + H // bh
        windows = buf.as_strided((count, bh + 2 * K - 2, 2 * wp), (bh * 2 * wp, 2 * wp, 1))
        cols = buf.new_empty(N * per_image, bh, 2 * wp)
        torch.matmul(bank.synthesis_matrix(bh).T, windows, out=cols[:count])
        cols[count:].zero_()
        # along W: (W/bw, N·2P, bw + 2K − 2) windows -> (W/bw, N·2P, bw) pixels
        windows = cols.as_strided((W // bw, N * 2 * P, bw + 2 * K - 2), (bw, 2 * wp, 1))
        z = torch.matmul(windows, bank.synthesis_matrix(bw))
        z = z.view(W // bw, N, per_image, bh, bw)[:, :, : H // bh]
        if j == 0:
            out = approx.new_empty(N, H, W)
        else:
            buf, P = _synthesis_buffer(approx, H, W, K)
            out = buf[:, left : left + H, 0, left : left + W, 0]
        out.unflatten(1, (H // bh, bh)).unflatten(3, (W // bw, bw)).copy_(z.permute(1, 2, 3, 0, 4))
        h, w = H, W
        if j == 0:
            return out
    raise AssertionError("unreachable: at least one level")  # pragma: no cover


def _synthesis_buffer(like: torch.Tensor, h: int, w: int, K: int) -> tuple[torch.Tensor, int]:
    """An empty (N, P, 2, w + K − 1, 2) buffer for the level whose bands are h × w, 2P a
    multiple of that level's H block."""
    half = _block(2 * h, _BLOCK_H) // 2
    P = -(-(h + K - 1) // half) * half
    return like.new_empty(like.shape[0], P, 2, w + K - 1, 2), P


def _packed_bands(u: torch.Tensor, levels: int) -> tuple[torch.Tensor, list[_Triplet]]:
    """Views of the bands of a packed (..., H, W) array (pywt.coeffs_to_array layout)."""
    H, W = u.shape[-2:]
    details = []
    for j in range(levels):
        h, w = H >> (j + 1), W >> (j + 1)
        details.append((u[..., h : 2 * h, :w], u[..., :h, w : 2 * w], u[..., h : 2 * h, w : 2 * w]))
    return u[..., : H >> levels, : W >> levels], details


def _fold_vmap(info, in_dims: Sequence[int | None], tensors: Sequence[torch.Tensor]):
    """Move the vmapped dimension of each tensor into its leading (N) dimension."""
    flat = []
    for t, d in zip(tensors, in_dims, strict=True):
        t = t.expand(info.batch_size, *t.shape) if d is None else t.movedim(d, 0)
        flat.append(t.reshape(-1, *t.shape[2:]))
    return flat


class _Analysis(torch.autograd.Function):
    """u = D x on (N, H, W): packed (N, H, W), or one (N, 4, h_j, w_j) block per level."""

    @staticmethod
    def forward(bank: _Bank, levels: int, packed: bool, x: torch.Tensor):
        N, H, W = x.shape
        if packed:
            out = x.new_empty(N, H, W)
            targets = [
                out[:, : H >> j, : W >> j].unflatten(1, (2, -1)).unflatten(3, (2, -1))
                for j in range(levels)
            ]
            _analysis_into(x, targets, bank)
            return out
        # block channels 2·bW + bH: (approx, cH, cV, cD)
        blocks = [x.new_empty(N, 4, H >> (j + 1), W >> (j + 1)) for j in range(levels)]
        _analysis_into(x, [b.unflatten(1, (2, 2)).permute(0, 2, 3, 1, 4) for b in blocks], bank)
        return tuple(blocks)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.bank, ctx.levels, ctx.packed, _ = inputs

    @staticmethod
    def backward(ctx, *grads):
        if ctx.packed:
            return None, None, None, _Synthesis.apply(ctx.bank, ctx.levels, True, grads[0])
        # the intermediate approximations (channel 0 of blocks j < J − 1) are never exposed
        coeffs = (grads[-1][:, 0], *(g[:, 1:] for g in grads))
        return None, None, None, _Synthesis.apply(ctx.bank, ctx.levels, False, *coeffs)

    @staticmethod
    def jvp(ctx, _bank, _levels, _packed, tangent):
        return _Analysis.apply(ctx.bank, ctx.levels, ctx.packed, tangent)

    @staticmethod
    def vmap(info, in_dims, bank, levels, packed, x):
        (flat,) = _fold_vmap(info, in_dims[3:], (x,))
        out = _Analysis.apply(bank, levels, packed, flat)
        if packed:
            return out.unflatten(0, (info.batch_size, -1)), 0
        return tuple(b.unflatten(0, (info.batch_size, -1)) for b in out), (0,) * levels


class _Synthesis(torch.autograd.Function):
    """x = Dᵀ u on (N, H, W), from packed u or from (approx (N, h, w), details (N, 3, h, w)...)."""

    @staticmethod
    def forward(bank: _Bank, levels: int, packed: bool, *coeffs: torch.Tensor):
        if packed:
            approx, details = _packed_bands(coeffs[0], levels)
        else:
            approx = coeffs[0]
            details = [(d[:, 0], d[:, 1], d[:, 2]) for d in coeffs[1:]]
        return _synthesis(approx, details, bank)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.bank, ctx.levels, ctx.packed = inputs[:3]
        ctx.specs = [(t.shape, t.dtype, t.device) for t in inputs[3:]]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.packed:
            return None, None, None, _Analysis.apply(ctx.bank, ctx.levels, True, grad)
        blocks = _Analysis.apply(ctx.bank, ctx.levels, False, grad)
        return None, None, None, blocks[-1][:, 0], *(b[:, 1:] for b in blocks)

    @staticmethod
    def jvp(ctx, _bank, _levels, _packed, *tangents):
        tangents = [
            torch.zeros(shape, dtype=dtype, device=device) if t is None else t
            for t, (shape, dtype, device) in zip(tangents, ctx.specs, strict=True)
        ]
        return _Synthesis.apply(ctx.bank, ctx.levels, ctx.packed, *tangents)

    @staticmethod
    def vmap(info, in_dims, bank, levels, packed, *coeffs):
        flat = _fold_vmap(info, in_dims[3:], coeffs)
        out = _Synthesis.apply(bank, levels, packed, *flat)
        return out.unflatten(0, (info.batch_size, -1)), 0


class Wavelet2D:
    r"""Orthonormal periodized 2-D wavelet transform D on (B, C, H, W) tensors, eqs. (44)–(51).

    Parameters
    ----------
    wavelet
        Name of an orthogonal PyWavelets wavelet (``"haar"``, ``"dbN"``, ``"symN"``,
        ``"coifN"``); the paper uses ``"db4"``.
    levels
        Number of levels J ≥ 1; the paper uses 4. H and W must be multiples of 2^J.

    Notes
    -----
    ``forward`` returns (approx, details) with approx of shape (B, C, H/2^J, W/2^J) and
    details[j] of shape (B, C, 3, H/2^{j+1}, W/2^{j+1}), j = 0 the finest scale, bands
    (horizontal, vertical, diagonal) = PyWavelets' (cH, cV, cD): the numbers of
    ``pywt.wavedec2(x[b, c], wavelet, mode="periodization", level=J)``. ``analysis`` returns
    the same coefficients packed into one (B, C, H, W) tensor, laid out as
    ``pywt.coeffs_to_array``; ``synthesis`` and ``inverse`` apply

    .. math:: D^\top = D^{-1},

    and autograd differentiates D by Dᵀ and Dᵀ by D. Every tensor stays on its device; the
    filters are created on it, once per (device, dtype).
    """

    def __init__(self, wavelet: str = "db4", levels: int = 4):
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise InvalidInputError(f"levels = {levels!r} must be an integer ≥ 1.")
        _filters(wavelet)  # validates the name now rather than at the first call
        self.wavelet = wavelet
        self.levels = levels
        self._banks: dict[tuple[torch.device, torch.dtype], _Bank] = {}

    def __repr__(self) -> str:
        return f"Wavelet2D(wavelet={self.wavelet!r}, levels={self.levels})"

    @property
    def filter_length(self) -> int:
        """L, the length of the decomposition filters (8 for db4)."""
        return len(_filters(self.wavelet)[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, C, H, W) -> (approx (B, C, H/2^J, W/2^J), details), finest level first.

        details[j] has shape (B, C, 3, H/2^(j+1), W/2^(j+1)), j = 0 finest .. J−1 coarsest;
        bands ordered (horizontal, vertical, diagonal) = pywt's (cH, cV, cD).
        """
        B, C, H, W = self._check_image(x, "x")
        blocks = _Analysis.apply(self._bank(x), self.levels, False, x.reshape(B * C, H, W))
        approx = blocks[-1][:, 0].unflatten(0, (B, C))
        return approx, [b[:, 1:].unflatten(0, (B, C)) for b in blocks]

    def inverse(self, approx: torch.Tensor, details: Sequence[torch.Tensor]) -> torch.Tensor:
        """Dᵀ = D⁻¹ of (approx, details) as returned by :meth:`forward`: an image (B, C, H, W)."""
        self._check_coefficients(approx, details)
        B, C = approx.shape[:2]
        flat = [d.reshape(B * C, *d.shape[-3:]) for d in details]
        x = _Synthesis.apply(
            self._bank(approx), self.levels, False, approx.reshape(B * C, *approx.shape[-2:]), *flat
        )
        return x.unflatten(0, (B, C))

    def pack(self, approx: torch.Tensor, details: Sequence[torch.Tensor]) -> torch.Tensor:
        """One (B, C, H, W) tensor holding (approx, details), pywt.coeffs_to_array's layout.

        Level j occupies [0, 2h) × [0, 2w) with h = H/2^(j+1), w = W/2^(j+1): cH at
        [h, 2h) × [0, w), cV at [0, h) × [w, 2w), cD at [h, 2h) × [w, 2w); the approximation
        at [0, H/2^J) × [0, W/2^J). The leading (B, C) dimensions broadcast. Differentiable
        (built by concatenation).
        """
        self._check_coefficients(approx, details, same_batch=False)
        lead = torch.broadcast_shapes(approx.shape[:-2], *(d.shape[:-3] for d in details))
        out = approx.expand(*lead, *approx.shape[-2:])
        for d in reversed(details):
            d = d.expand(*lead, *d.shape[-3:])
            top = torch.cat((out, d[..., 1, :, :]), dim=-1)
            bottom = torch.cat((d[..., 0, :, :], d[..., 2, :, :]), dim=-1)
            out = torch.cat((top, bottom), dim=-2)
        return out

    def unpack(self, u: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Inverse of :meth:`pack`: (approx, details) from a packed (B, C, H, W) tensor.

        approx is a view of u; each details[j] is a new (B, C, 3, h, w) tensor.
        """
        self._check_image(u, "u")
        approx, bands = _packed_bands(u, self.levels)
        return approx, [torch.stack(triplet, dim=-3) for triplet in bands]

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """D x, packed: (B, C, H, W) -> (B, C, H, W), ‖Dx‖₂ = ‖x‖₂."""
        B, C, H, W = self._check_image(x, "x")
        u = _Analysis.apply(self._bank(x), self.levels, True, x.reshape(B * C, H, W))
        return u.unflatten(0, (B, C))

    def synthesis(self, u: torch.Tensor) -> torch.Tensor:
        """Dᵀ u = D⁻¹ u for packed u (B, C, H, W) (eqs. (46)–(50))."""
        B, C, H, W = self._check_image(u, "u")
        x = _Synthesis.apply(self._bank(u), self.levels, True, u.reshape(B * C, H, W))
        return x.unflatten(0, (B, C))

    def _bank(self, t: torch.Tensor) -> _Bank:
        key = (t.device, t.dtype)
        bank = self._banks.get(key)
        if bank is None:
            bank = self._banks[key] = _make_bank(self.wavelet, t.device, t.dtype)
        return bank

    def _check_image(self, x: torch.Tensor, name: str) -> tuple[int, int, int, int]:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidInputError(f"{name} must be a tensor of shape (B, C, H, W), got {shape}.")
        if not x.dtype.is_floating_point:
            raise InvalidInputError(
                f"{name} has dtype {x.dtype}: use float32 or float64 (e.g. {name}.double())."
            )
        B, C, H, W = x.shape
        m = 1 << self.levels
        if H == 0 or W == 0 or H % m or W % m:
            raise InvalidInputError(
                f"{name} has H × W = {H} × {W}, but {self.levels} levels need multiples of "
                f"2^{self.levels} = {m}: crop to a multiple of {m} "
                f"({H // m * m} × {W // m * m}), pad, or use fewer levels."
            )
        return B, C, H, W

    def _check_coefficients(
        self, approx: torch.Tensor, details: Sequence[torch.Tensor], *, same_batch: bool = True
    ) -> None:
        if len(details) != self.levels:
            raise InvalidInputError(
                f"got {len(details)} detail levels for a {self.levels}-level transform."
            )
        if approx.ndim != 4 or any(d.ndim != 5 for d in details):
            raise InvalidInputError(
                "approx must be (B, C, h, w) and each details[j] (B, C, 3, h_j, w_j), got "
                f"{tuple(approx.shape)} and {[tuple(d.shape) for d in details]}."
            )
        h, w = approx.shape[-2:]
        for j, d in enumerate(details):
            expected = (3, h << (self.levels - 1 - j), w << (self.levels - 1 - j))
            if tuple(d.shape[-3:]) != expected:
                raise InvalidInputError(
                    f"details[{j}] has shape {tuple(d.shape)}; with approx of H × W = "
                    f"{h} × {w} it must end in {expected} (finest level first)."
                )
            if d.dtype != approx.dtype or d.device != approx.device:
                raise InvalidInputError(
                    f"details[{j}] is {d.dtype} on {d.device} but approx is {approx.dtype} on "
                    f"{approx.device}: convert them to one dtype and device."
                )
        if same_batch and any(d.shape[:2] != approx.shape[:2] for d in details):
            raise InvalidInputError(
                f"approx and details must share (B, C) = {tuple(approx.shape[:2])}, got "
                f"{[tuple(d.shape[:2]) for d in details]}."
            )


def adjointness_test(
    transform: Wavelet2D,
    shape: Sequence[int],
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> float:
    r"""Relative gap of the dot-product test ⟨Dx, u⟩ = ⟨x, Dᵀu⟩, x, u ~ N(0, Id).

    .. math:: \frac{|⟨Dx, u⟩ − ⟨x, D^\top u⟩|}{\max(‖Dx‖‖u‖,\ ‖x‖‖D^\top u‖)}

    Drawn with ``generator`` on its device; 0 up to rounding.
    """
    device = generator.device
    x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    u = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return dot_product_gap(transform.analysis, transform.synthesis, x, u)


def reconstruction_error(
    transform: Wavelet2D,
    shape: Sequence[int],
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> float:
    """‖DᵀDx − x‖₂ / ‖x‖₂ for x ~ N(0, Id) drawn with ``generator``; 0 up to rounding."""
    x = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return float((transform.synthesis(transform.analysis(x)) - x).norm() / x.norm())
