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
        sq = u * u
        if self.prior == "BC":
            sq = sq.sum(dim=1, keepdim=True)
        tiny = torch.finfo(u.dtype).tiny
        hw = self._detail_hw()
        if fused is None:
            fused = not _records_graph(u, t)
        if not fused:
            norms = torch.cat([_group_norm_sq(sq, h, w).flatten(-2) for h, w in hw], dim=-1)
            # clamp_min keeps t/‖·‖ finite (and its gradient 0) where a group is 0; the
            # factor is 0 there anyway.
            flat = torch.relu(1 - t * torch.rsqrt(norms.clamp_min(tiny)))
            factors, start = [], 0
            for h, w in hw:
                f = flat[..., start : start + h * w].unflatten(-1, (h, w))
                factors.append(f.unsqueeze(-3).expand(*f.shape[:-2], 3, h, w))
                start += h * w
            ones = torch.ones((1, 1, *self._approx_hw()), device=u.device, dtype=u.dtype)
            return u * self.D.pack(ones, factors)
        flat = sq.new_empty(*sq.shape[:-2], sum(h * w for h, w in hw))
        views, start = [], 0
        for h, w in hw:
            view = flat[..., start : start + h * w].unflatten(-1, (h, w))
            torch.add(sq[..., h : 2 * h, :w], sq[..., :h, w : 2 * w], out=view)
            view.add_(sq[..., h : 2 * h, w : 2 * w])
            views.append(view)
            start += h * w
        # relu(1 − t·rsqrt(max(n, tiny))), the same roundings as the graph form
        flat.clamp_min_(tiny).rsqrt_().mul_(t).neg_().add_(1).relu_()
        out = u if inplace else u.clone()
        for (h, w), f in zip(hw, views, strict=True):
            # rows [h, 2h) hold cH | cD side by side: one product for both
            out[..., h : 2 * h, : 2 * w].unflatten(-1, (2, w)).mul_(f.unsqueeze(-2))
            out[..., :h, w : 2 * w].mul_(f)
        return out

    def step(self, u: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """φ(u, θ), eq. (51)."""
        if self.model is None:
            # u − τ(θ⁻¹u − Dy)/θ = u(1 − τ/θ²) + (τ/θ)Dy: one pass over u
            tau, scale, shift = memoize(self, "denoising", theta, lambda: self._maps(theta))
            if self._backend is not None:
                return self._kernel("denoise")(u, scale, shift, tau)
            return self._prox(torch.addcmul(shift, u, scale), tau, inplace=True)
        w, tau, shift = memoize(self, "general", theta, lambda: self._maps(theta))
        x = self.D.synthesis(u / w)
        grad = self.D.analysis(self.model.A_adjoint(self.model.A(x))) / w
        if self._backend is not None:
            return self._kernel("prox")(u - tau * grad + shift, tau)
        return self._prox(u - tau * grad + shift, tau, inplace=True)

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


def _group_norm_sq(sq: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Σ over the three bands of one level (cH, cV, cD) of the packed squares ``sq``."""
    return sq[..., h : 2 * h, :w] + sq[..., :h, w : 2 * w] + sq[..., h : 2 * h, w : 2 * w]


def _records_graph(*tensors: torch.Tensor) -> bool:
    """Whether an operation on ``tensors`` may be recorded: autograd (a tensor that requires
    grad, with grad mode on), forward-mode AD or a torch.func transform."""
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
