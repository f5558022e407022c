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

(h, g) = ``pywt.Wavelet(name).dec_lo``, ``.dec_hi``: the coefficients of
``pywt.wavedec2(x, name, mode="periodization")`` exactly, short signals (N < L) included,
where the filter wraps around several times. The adjoint, written in polyphase form
(x_{2q+r} from the coefficients a_{q+d}, d_{q+d}), is the inverse.

:class:`Wavelet2D` applies it along W (a strided :func:`torch.nn.functional.conv1d` on rows
periodically padded in place), then along H (a sum of L shifted row slices, vectorised along
W), level after level on the approximation. The input is never moved between devices; the
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
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .jacobians import dot_product_gap

_Triplet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@functools.cache
def _filters(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(dec_lo, dec_hi) of an orthogonal PyWavelets wavelet, orthonormal to float64 rounding."""
    try:
        import pywt
    except ImportError as error:  # pragma: no cover - pywt is a dependency
        raise ImportError(
            "operators.wavelet takes its filters from PyWavelets: pip install PyWavelets"
        ) from error
    try:
        wavelet = pywt.Wavelet(name)
    except ValueError as error:
        raise InvalidInputError(
            f"unknown wavelet {name!r}: use a name from pywt.wavelist(kind='discrete'), "
            "e.g. 'haar', 'db4', 'sym4', 'coif2'."
        ) from error
    if not wavelet.orthogonal:
        raise InvalidInputError(
            f"wavelet {name!r} is not orthogonal, so DᵀD ≠ I (eqs. (46)–(50) need D⁻¹ = Dᵀ): "
            "use an orthogonal family (haar, dbN, symN, coifN)."
        )
    lo = _orthonormalize(list(map(float, wavelet.dec_lo)))
    L = len(lo)
    hi = [(-1.0) ** (n + 1) * lo[L - 1 - n] for n in range(L)]  # pywt's dec_hi from dec_lo
    return tuple(lo), tuple(hi)


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
    """The filters of one wavelet on one (device, dtype), in the forms the passes use.

    Analysis (one level, one axis): conv1d with ``analysis_weight`` = (flip h, flip g),
    stride 2, on the signal padded periodically by ``analysis_pad`` = (L/2 − 1, L/2 − 1).
    Synthesis: x_{2q+r} = Σ_{b,i} ``synthesis_weight``[r, b, i] c_b[q + i − left], a
    stride-1 conv1d on the coefficients padded by ``synthesis_pad`` = (left, right).
    ``*_taps`` hold the same numbers as Python floats for the pass along H.
    """

    length: int
    analysis_weight: torch.Tensor
    analysis_pad: tuple[int, int]
    analysis_taps: tuple[tuple[float, ...], tuple[float, ...]]
    synthesis_weight: torch.Tensor
    synthesis_pad: tuple[int, int]
    synthesis_taps: tuple[tuple[tuple[int, int, float], ...], ...]


def _make_bank(name: str, device: torch.device, dtype: torch.dtype) -> _Bank:
    lo, hi = _filters(name)
    L = len(lo)
    s = L // 2  # a_k = Σ_m h_m x_{2k + s − m}: PyWavelets' periodization shift
    flipped = (lo[::-1], hi[::-1])
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
    synthesis = torch.zeros(2, 2, d_hi - d_lo + 1, dtype=torch.float64)
    for r, row in enumerate(taps):
        for band, i, value in row:
            synthesis[r, band, i] = value
    return _Bank(
        length=L,
        analysis_weight=torch.tensor(flipped, dtype=dtype, device=device).unsqueeze(1),
        analysis_pad=(L - 1 - s, s - 1),
        analysis_taps=flipped,
        synthesis_weight=synthesis.to(device=device, dtype=dtype),
        synthesis_pad=(-d_lo, d_hi),
        synthesis_taps=tuple(taps),
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


def _analysis_into(x: torch.Tensor, targets: Sequence[torch.Tensor], bank: _Bank) -> None:
    """Write level j of D x (x: (N, H, W)) into ``targets[j]``, a (N, 2, h, 2, w) view.

    ``targets[j][:, bH, :, bW]`` receives band (bH, bW), 0 = low pass, 1 = high pass, along
    (H, W): (0, 0) approximation, (1, 0) = cH, (0, 1) = cV, (1, 1) = cD. Level j + 1 reads
    its input from ``targets[j][:, 0, :, 0]``.
    """
    L = bank.length
    left, right = bank.analysis_pad
    src = x
    for target in targets:
        N, H, W = src.shape
        h = H // 2
        buf = src.new_empty(N, H + L - 2, W + L - 2)
        buf[:, left : left + H, left : left + W].copy_(src)
        _periodize(buf.narrow(1, left, H), 2, left, W, right)
        _periodize(buf, 1, left, H, right)
        # along W: rows (N·(H + L − 2), 1, W + L − 2) -> (N, H + L − 2, [lo, hi], W/2)
        rows = F.conv1d(buf.view(-1, 1, W + L - 2), bank.analysis_weight, stride=2)
        rows = rows.view(N, H + L - 2, 2, W // 2)
        # along H: output row k = Σ_j taps[j] · padded row 2k + j, both W-bands at once
        for band, taps in enumerate(bank.analysis_taps):
            dst = target[:, band]
            torch.mul(rows[:, 0 : 2 * h : 2], taps[0], out=dst)
            for j in range(1, L):
                dst.add_(rows[:, j : j + 2 * h : 2], alpha=taps[j])
        src = target[:, 0, :, 0]


def _synthesis(approx: torch.Tensor, details: Sequence[_Triplet], bank: _Bank) -> torch.Tensor:
    """Dᵀ of (approx (N, h_J, w_J), details[j] = (cH, cV, cD), each (N, h_j, w_j)) -> (N, H, W).

    Per level: the four bands go into one buffer (N, 2, h + K − 1, 2, w + K − 1), padded
    periodically in both directions; a stride-1 conv1d along W gives the two W-phases, the
    H-phases are sums of K shifted rows, and interleaving the W-phases writes the result into
    the next level's buffer (or the output).
    """
    K = bank.synthesis_weight.shape[-1]
    left, right = bank.synthesis_pad
    N, h, w = approx.shape
    buf = approx.new_empty(N, 2, h + K - 1, 2, w + K - 1)
    buf[:, 0, left : left + h, 0, left : left + w].copy_(approx)
    for j in reversed(range(len(details))):
        cH, cV, cD = details[j]
        buf[:, 1, left : left + h, 0, left : left + w].copy_(cH)
        buf[:, 0, left : left + h, 1, left : left + w].copy_(cV)
        buf[:, 1, left : left + h, 1, left : left + w].copy_(cD)
        _periodize(buf.narrow(2, left, h), 4, left, w, right)
        _periodize(buf, 2, left, h, right)
        # along W: (N·2·(h + K − 1), [lo, hi], w + K − 1) -> (N, bH, h + K − 1, rW, w)
        z = F.conv1d(buf.view(-1, 2, w + K - 1), bank.synthesis_weight)
        z = z.view(N, 2, h + K - 1, 2, w)
        phases = z.new_empty(N, h, 2, 2, w)  # (q, rH, rW, m) holds x[2q + rH, 2m + rW]
        for r, taps in enumerate(bank.synthesis_taps):
            dst = phases[:, :, r]
            (band, i, value), *rest = taps
            torch.mul(z[:, band, i : i + h], value, out=dst)
            for band, i, value in rest:
                dst.add_(z[:, band, i : i + h], alpha=value)
        phases = phases.view(N, 2 * h, 2, w)
        h, w = 2 * h, 2 * w
        if j == 0:
            dst = approx.new_empty(N, h, w)
        else:
            buf = approx.new_empty(N, 2, h + K - 1, 2, w + K - 1)
            dst = buf[:, 0, left : left + h, 0, left : left + w]
        # interleave the W-phases: two copies with strided writes beat one transposed copy
        dst = dst.view(N, h, w // 2, 2)
        dst[..., 0].copy_(phases[:, :, 0])
        dst[..., 1].copy_(phases[:, :, 1])
        if j == 0:
            return dst.view(N, h, w)
    raise AssertionError("unreachable: at least one level")  # pragma: no cover


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
