r"""The ptwt map: deepinv 0.5's PGD step with its wavelet prior, written out with ptwt."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from retune_suite.operators.errors import require

from .config import LEVELS, WAVELET

__all__ = ["PtwtFB", "soft"]


def soft(d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Soft thresholding, written as deepinv 0.5's ``WaveletDenoiser.prox_l1``."""
    zero = torch.zeros((), dtype=d.dtype, device=d.device)
    return torch.maximum(zero, d - t) + torch.minimum(zero, d + t)


@dataclass(eq=False)
class PtwtFB:
    r"""deepinv 0.5's PGD step with ``WaveletPrior(level, wv, p=1)``, written with ptwt.

    .. math:: φ(x, λ) = Ψ^{+}\,\mathrm{soft}_{γλ}\big(Ψ(x − γ(x − y))\big)

    Ψ = ``ptwt.wavedec2(·, mode="zero")`` (a redundant frame, not orthonormal), Ψ⁺ =
    ``ptwt.waverec2``, soft thresholding of the detail coefficients only; λ a 0-dim tensor.
    It contracts at about 1 − γ. deepinv iterates the same map when given ``lambda = λ/0.1``
    (:data:`retune_suite.experiments.bench.deepinv.DEEPINV_THS`);
    :func:`retune_suite.experiments.bench.deepinv.check_map` checks it.
    """

    y: torch.Tensor
    gamma: float
    wavelet: str = WAVELET
    levels: int = LEVELS

    def __post_init__(self) -> None:
        feature = "the ptwt map of `retune-suite bench --peers`"
        self._ptwt = require("ptwt", "peers", feature)
        self._filters = require("pywt", "peers", feature).Wavelet(self.wavelet)

    def step(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """φ(x, λ)."""
        z = x - self.gamma * (x - self.y)
        coeffs = self._ptwt.wavedec2(z, self._filters, mode="zero", level=self.levels)
        t = self.gamma * lam
        details = [tuple(soft(d, t) for d in level) for level in coeffs[1:]]
        return self._ptwt.waverec2((coeffs[0], *details), self._filters)
