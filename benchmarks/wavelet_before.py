"""The DWT as it was before the block-GEMM passes (commit 5809945), for before/after runs.

Not part of the package: the benchmarks (``bench_wavelet.py``, ``step_costs.py``) time it
interleaved with the shipped transform. :func:`wavelet_before` swaps these level functions
into :mod:`retune_suite.operators.maps.wavelet` for the duration of a ``with`` block, so every entry
point
(``forward``, ``inverse``, ``analysis``, ``synthesis``, their autograd rules) runs the old
passes; use a fresh :class:`~retune_suite.operators.maps.wavelet.Wavelet2D` inside the block (banks
are cached
per transform). Each level along W was a strided ``conv1d`` of the periodically padded rows,
along H a sum of L shifted rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import retune_suite.operators.maps.wavelet as wavelet
import torch
import torch.nn.functional as F
from retune_suite.operators.maps.wavelet import _filters, _periodize

_Triplet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class _BankBefore:
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


def _make_bank_before(name: str, device: torch.device, dtype: torch.dtype) -> _BankBefore:
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
    return _BankBefore(
        length=L,
        analysis_weight=torch.tensor(flipped, dtype=dtype, device=device).unsqueeze(1),
        analysis_pad=(L - 1 - s, s - 1),
        analysis_taps=flipped,
        synthesis_weight=synthesis.to(device=device, dtype=dtype),
        synthesis_pad=(-d_lo, d_hi),
        synthesis_taps=tuple(taps),
    )


def _analysis_into_before(
    x: torch.Tensor, targets: Sequence[torch.Tensor], bank: _BankBefore
) -> None:
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


def _synthesis_before(
    approx: torch.Tensor, details: Sequence[_Triplet], bank: _BankBefore
) -> torch.Tensor:
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


@contextmanager
def wavelet_before() -> Iterator[None]:
    """Run :mod:`retune_suite.operators.maps.wavelet` with the old level passes inside the block."""
    saved = wavelet._make_bank, wavelet._analysis_into, wavelet._synthesis
    wavelet._make_bank = _make_bank_before
    wavelet._analysis_into = _analysis_into_before
    wavelet._synthesis = _synthesis_before
    try:
        yield
    finally:
        wavelet._make_bank, wavelet._analysis_into, wavelet._synthesis = saved
