r"""Forward-backward on weighted wavelet coefficients, eqs. (43)–(51) (section 4.1).

The estimate is x̂_θ = Dᵀθ⁻¹û with û the minimiser of (50),

.. math::

    \min_u \tfrac12 ‖A Dᵀ θ^{-1} u − y‖_2^2 + ‖u‖_{1,2},

where D is the orthonormal wavelet transform
(:class:`retune_suite.operators.maps.wavelet.Wavelet2D`) and θ is the
diagonal operator multiplying each detail coefficient w_{j,k,b,c} by λ_j √Λ_{b,c} (θ_BC, eq. 44)
or λ_j √Λ_b (θ_B, eq. 45); approximation coefficients are not penalised (θ = 1 there). The
forward-backward step on u is eq. (51) (with A = I in the paper, any linear A here):

.. math::

    φ(u, θ) = \mathrm{prox}_{τ‖\cdot‖_{1,2}}\big(u − τθ^{-1}DAᵀ(ADᵀθ^{-1}u − y)\big),
    \qquad τ = 1.95/L, \; L = ‖A‖²/\min(θ)².

The groups of ‖·‖₁,₂ are the (band, channel) pairs at each (scale, position) for θ_BC and the
bands at each (scale, position, channel) for θ_B. θ is ``(log λ, log Λ)``: a tuple of a (J,)
tensor and a (3,) (θ_B) or (3, C) (θ_BC) tensor; positivity through exp, as in the paper.
τ is recomputed from θ at every call but not differentiated (it does not move the fixed point).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as forward_ad

from ..compiled import compile_backend, compile_function
from ..errors import InvalidInputError
from ..memo import memoize
from .packed_prox import (
    _group_norm_sq,  # noqa: F401  (re-exported: the kernel tests use it)
    prox_l12,
    records_graph,
)
from .wavelet import Wavelet2D

PRIORS = ("B", "BC")


def init_theta(
    prior: str,
    levels: int,
    channels: int,
    *,
    log_lambda: float = -3.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """θ̃ = (log λ, log Λ) with λ_j = exp(log_lambda) and Λ = 1."""
    if prior not in PRIORS:
        raise InvalidInputError(f"unknown wavelet prior {prior!r}: choose 'B' or 'BC'.")
    log_lam = torch.full((levels,), float(log_lambda), device=device, dtype=dtype)
    shape = (3,) if prior == "B" else (3, channels)
    return log_lam, torch.zeros(shape, device=device, dtype=dtype)


@dataclass(eq=False)
class WaveletFB:
    """The FB step (51) for one forward model and one batch of observations y (B, C, H, W).

    ``model`` has ``A``, ``A_adjoint`` and ``norm_sq`` (see
    :mod:`retune_suite.operators.maps.physics`); pass
    ``model=None`` for denoising (A = I), where the step is elementwise in the wavelet domain:
    D(Dᵀθ⁻¹u − y) = θ⁻¹u − Dy (D orthonormal), so no transform runs inside the loop.

    ``compile`` (default None: off unless ``$RETUNE_COMPILE`` is set) runs the denoising step,
    and the prox of the other models, through ``torch.compile`` (True: inductor, or a backend
    name): worth it only for long runs, see :mod:`retune_suite.operators.compiled`.
    """

    y: torch.Tensor
    prior: str = "BC"
    model: object | None = None
    wavelet: str = "db4"
    levels: int = 4
    step_factor: float = 1.95
    compile: bool | str | None = None

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise InvalidInputError(f"unknown wavelet prior {self.prior!r}: choose 'B' or 'BC'.")
        if self.y.ndim != 4:
            raise InvalidInputError(f"y must have shape (B, C, H, W), got {tuple(self.y.shape)}.")
        if not 0 < self.step_factor < 2:
            raise InvalidInputError(
                f"step_factor = {self.step_factor} must be in (0, 2): τ = factor/L is "
                "contractive only below 2/L."
            )
        self.D = Wavelet2D(self.wavelet, self.levels)
        self.norm_sq = 1.0 if self.model is None else float(self.model.norm_sq())
        # Dy (denoising) or D Aᵀy (general): constant along the iteration.
        aty = self.y if self.model is None else self.model.A_adjoint(self.y)
        self.D_aty = self.D.analysis(aty)
        # opt-in torch.compile of the step's elementwise kernels (retune_suite.operators.compiled)
        self._backend = compile_backend(self.compile)
        self._kernels: dict[str, object] = {}

    def weights(self, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The diagonal of θ in the packed coefficient layout, shape (1, C, H, W)."""
        log_lam, log_Lam = theta
        lam, Lam = torch.exp(log_lam), torch.exp(log_Lam)
        C = self.y.shape[1]
        approx_shape = (1, C, *self._approx_hw())
        band = Lam.sqrt().reshape(3, 1) if self.prior == "B" else Lam.sqrt()  # (3, 1|C)
        details = []
        for j, (h, w) in enumerate(self._detail_hw()):
            scale = lam[j] * band.transpose(0, 1)  # (1|C, 3)
            details.append(scale.reshape(1, -1, 3, 1, 1).expand(1, C, 3, h, w))
        ones = torch.ones(approx_shape, device=lam.device, dtype=lam.dtype)
        return self.D.pack(ones, details)

    def tau(self, weights: torch.Tensor) -> torch.Tensor:
        """τ = factor · min(θ)² / ‖A‖², not differentiated."""
        return self.step_factor * weights.detach().min() ** 2 / self.norm_sq

    def omega(self, theta: tuple[torch.Tensor, torch.Tensor]) -> float:
        """ω(τ) = max(|1 − τμ|, |1 − τL|) for denoising (μ = 1/max θ², L = 1/min θ²).

        For inpainting and deblurring f_θ is not strongly convex (μ = 0), ω = 1: no
        analytic contraction; use the measured local constant instead.
        """
        w = self.weights(theta).detach()
        L = self.norm_sq / w.min().item() ** 2
        mu = 1.0 / w.max().item() ** 2 if self.model is None else 0.0
        tau = self.step_factor / L
        return max(abs(1 - tau * mu), abs(1 - tau * L))

    def prox(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """prox of t‖·‖₁,₂ on the detail coefficients (group soft thresholding).

        Works on the packed layout directly: the squared group norms are sums of three views
        of u² (one per band, over channels too for θ_BC), and each group's factor
        (1 − t/‖·‖)₊ multiplies its three coefficients. This is ~30× faster on CPU than
        unpacking and calling ``torch.linalg.vector_norm`` over non-contiguous dimensions
        (see docs/performance.md); it is tested against that form.
        """
        return self._prox(u, t, inplace=False)

    def _prox(
        self, u: torch.Tensor, t: torch.Tensor, *, inplace: bool, fused: bool | None = None
    ) -> torch.Tensor:
        """:meth:`prox`; with ``inplace`` the result may be written into u (a tensor the
        caller owns and no longer needs). ``fused`` picks the form (None: the in-place one
        unless a graph may be recorded; False: the graph form, which torch.compile traces).

        Without a graph to record (no gradient, forward-mode or torch.func transform on u or
        t) the factors of all levels are computed in one flat buffer with in-place kernels and
        multiply the detail bands in place: 24 kernels and no factor map, against 45 for the
        graph-friendly form (the factor map packed by concatenation, then one product). Both
        forms evaluate the same operations on the same numbers in the same order, so their
        values are identical bit for bit and the graph's gradients are those of the eager
        step (tests/test_wavelet_prior.py).
        """
        return prox_l12(u, t, self.prior, self.levels, self.D.pack, inplace=inplace, fused=fused)

    def step(self, u: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """φ(u, θ), eq. (51).

        For denoising, where a fused kernel exists (:mod:`.fused`: C++ on the CPU, Triton on
        CUDA) it runs the step as a block of one: without a graph, the kernel itself (the same
        iterate bit for bit on the CPU); with one, :class:`.fused.DenoiseBlock` (the kernel's
        VJP backward). Under forward-mode AD or a torch.func transform, with ``compile`` on,
        or with the kernels off (``$RETUNE_FUSED=0``), the eager step runs.
        """
        if self.model is None:
            # u − τ(θ⁻¹u − Dy)/θ = u(1 − τ/θ²) + (τ/θ)Dy: one pass over u
            tau, scale, shift = memoize(self, "denoising", theta, lambda: self._maps(theta))
            if self._backend is not None:
                return self._kernel("denoise")(u, scale, shift, tau)
            blocks = DenoisingBlocks(self)
            if blocks.available(u.device):
                out = blocks.apply(u, scale, shift, tau, 1)
                if out is not None:
                    return out
            return self._prox(torch.addcmul(shift, u, scale), tau, inplace=True)
        w, tau, shift = memoize(self, "general", theta, lambda: self._maps(theta))
        x = self.D.synthesis(u / w)
        grad = self.D.analysis(self.model.A_adjoint(self.model.A(x))) / w
        if self._backend is not None:
            return self._kernel("prox")(u - tau * grad + shift, tau)
        return self._prox(u - tau * grad + shift, tau, inplace=True)

    @property
    def fused_blocks(self) -> DenoisingBlocks | None:
        """The fused K-step blocks of the denoising step (:mod:`~..fused_blocks`): the C++
        kernel on the CPU, Triton on CUDA (:mod:`.fused`). None where there is none: a
        forward model in the loop (D and Dᵀ at every step), ``compile`` on, or no kernel for
        this platform (``$RETUNE_FUSED=0``, no compiler): the loops then run :meth:`step`."""
        if self.model is not None or self._backend is not None:
            return None
        return DenoisingBlocks(self)

    def _kernel(self, name: str):
        """The compiled denoising step ((u, 1 − τ/θ², (τ/θ)Dy, τ) -> φ) or prox ((v, τ) ->
        prox), built on first use: the graph form of :meth:`_prox`, which inductor fuses."""
        kernel = self._kernels.get(name)
        if kernel is None:
            if name == "denoise":

                def fn(u, scale, shift, tau):
                    return self._prox(
                        torch.addcmul(shift, u, scale), tau, inplace=False, fused=False
                    )

            else:

                def fn(v, tau):
                    return self._prox(v, tau, inplace=False, fused=False)

            kernel = self._kernels[name] = compile_function(fn, self._backend)
        return kernel

    def _maps(self, theta: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The θ-only quantities of the step, computed once per block (retune_suite.operators.memo).

        Denoising: (τ, 1 − τ/θ², (τ/θ)D y); otherwise (θ, τ, (τ/θ)D Aᵀy). Inside
        :func:`retune_suite.operators.unroll` / :func:`retune_suite.operators.restart` they are
        built once for the K
        (or K·T) steps; they were a third of the denoising step's time at 256×256.
        """
        w = self.weights(theta)
        tau = self.tau(w)
        tau_w = tau / w
        if self.model is None:
            return tau, 1 - tau_w / w, tau_w * self.D_aty
        return w, tau, tau_w * self.D_aty

    def initial(self) -> torch.Tensor:
        """u₀ = θDy-free start: u₀ = D Aᵀy (the paper's x₀ = Dy for denoising)."""
        return self.D_aty.clone()

    def estimate(self, u: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x = Dᵀθ⁻¹u, the image an iterate u stands for."""
        return self.D.synthesis(u / self.weights(theta))

    def _approx_hw(self) -> tuple[int, int]:
        H, W = self.y.shape[-2:]
        return H >> self.levels, W >> self.levels

    def _detail_hw(self) -> list[tuple[int, int]]:
        H, W = self.y.shape[-2:]
        return [(H >> (j + 1), W >> (j + 1)) for j in range(self.levels)]


class DenoisingBlocks:
    r"""Φ_K of the denoising step (51) by the fused kernels (:mod:`.fused`), for the loops.

    ``block`` runs K steps in one kernel call (iterates equal to K calls of
    :meth:`WaveletFB.step`, bit for bit on the CPU) and returns the squared block residual per
    sample; ``blocks`` runs T such blocks in one call (one pass over memory on the CPU);
    ``last_block`` is :class:`.fused.DenoiseBlock` on the θ-maps built with their graph, so the
    gradient of a loss reaches θ through the kernel's VJP and the autograd graph of
    (1 − τ/θ², (τ/θ)Dy). All return None (the loop runs the step) for an x the kernel does not
    take (not y's shape, dtype or device), when no kernel is available for x's device, and
    (``block``, ``blocks``) when a graph is recorded or (``last_block``) under forward-mode AD
    or a torch.func transform.
    """

    def __init__(self, fb: WaveletFB):
        self.fb = fb
        self.step = fb.step

    def available(self, device: torch.device) -> bool:
        """A fused kernel runs the denoising step on ``device`` (:func:`.fused.backend`)."""
        from . import fused

        fb = self.fb
        H, W = fb.y.shape[-2:]
        if fb.model is not None or fb._backend is not None:
            return False
        if H % (1 << fb.levels) or W % (1 << fb.levels):
            return False
        return fused.backend(device) != "eager"

    def _fits(self, x: torch.Tensor, theta) -> bool:
        y = self.fb.y
        if not isinstance(x, torch.Tensor) or x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.device != y.device or not isinstance(theta, tuple | list) or len(theta) != 2:
            return False
        return self.available(x.device)

    def _maps(self, theta) -> tuple[torch.Tensor, ...]:
        return memoize(self.fb, "denoising", theta, lambda: self.fb._maps(theta))

    def apply(
        self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, tau: torch.Tensor, K: int
    ) -> torch.Tensor | None:
        """K steps from x given the θ-maps: the kernel (no graph recorded), or
        :class:`.fused.DenoiseBlock` (a graph), or None (a transform, or an x it does not take).
        """
        from . import fused

        y, fb = self.fb.y, self.fb
        if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device:
            return None
        if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
            return None
        if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad
                                        or shift.requires_grad):  # fmt: skip
            return fused.DenoiseBlock.apply(x, scale, shift, tau.detach(), fb.prior, fb.levels, K)
        return fused.denoise_block(x, scale, shift, tau, prior=fb.prior, levels=fb.levels, K=K)[0]

    def block(self, x: torch.Tensor, theta, K: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(Φ_K(x, θ), Σ(Φ_K(x, θ) − x)² per sample) without a graph, or None."""
        from . import fused

        if not self._fits(x, theta) or records_graph(x, *theta):
            return None
        tau, scale, shift = self._maps(theta)
        fb = self.fb
        return fused.denoise_block(x, scale, shift, tau, prior=fb.prior, levels=fb.levels, K=K)

    def blocks(
        self, x: torch.Tensor, theta, K: int, T: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(Φ_K^T(x, θ), Φ_K^{T−1}(x, θ), squared residual of each block per sample (T, B))
        without a graph, in one kernel call on the CPU, or None."""
        from . import fused

        if not self._fits(x, theta) or records_graph(x, *theta):
            return None
        tau, scale, shift = self._maps(theta)
        fb = self.fb
        return fused.denoise_blocks(
            x, scale, shift, tau, prior=fb.prior, levels=fb.levels, K=K, T=T
        )

    def last_block(self, x: torch.Tensor, theta, K: int) -> torch.Tensor | None:
        """Φ_K(x, θ) with a first-order graph whose backward is the fused VJP, or None."""
        if not self._fits(x, theta):
            return None
        tau, scale, shift = self._maps(theta)
        return self.apply(x, scale, shift, tau, K)
