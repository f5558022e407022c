r"""A fields-of-experts (FoE) regulariser learned at equilibrium: gradient descent on a smooth,
convex energy with analytic δ_K and an analytic bound on L_θ (Assumption 2).

The paper's conclusion (section 5, "Future work") asks for "smooth regularizations of iterative
schemes designed to satisfy Assumption 2". This is one, in the spirit of Roth and Black's
fields of experts (2009):

.. math::

    E_θ(x) = \tfrac12‖Ax − y‖_2^2 + \sum_{k=1}^{N} α_k \sum_i ρ_ε\big((h_k ∗ x)_i\big),
    \qquad ρ_ε(t) = \sqrt{t^2 + ε^2} − ε,

with N filters h_k of size s×s (s = 5), zero-mean by parameterisation (h_k = w_k − mean(w_k)),
α_k = exp(α̃_k) (positivity by exp, as in section 4.1), θ = (α̃, w) (shapes (N,), (N, s, s)),
the same filters for every colour channel. The step is gradient descent,

.. math::

    φ(x, θ) = x − τ(θ)∇E_θ(x), \qquad
    ∇E_θ(x) = Aᵀ(Ax − y) + \sum_k α_k H_kᵀ ρ_ε'(H_k x),

H_k the circular convolution with h_k (``torch.nn.functional.conv2d`` on a circularly padded
image; Hᵀ is the correlation with the flipped filter, tested against ⟨Hx, z⟩ = ⟨x, Hᵀz⟩).
**Circular padding**, not reflect: H_k is then block-circulant, so ‖H_k‖₂ ≤ ‖h_k‖₁ exactly
(Young), every patch of an image is a set of distinct pixels (so |(H_k x)_i| ≤ ‖h_k‖₂‖x‖₂), and
the deblurring operator of :mod:`retune_suite.operators.maps.physics` is circular too. With reflect
padding the
boundary pixels are counted twice and ‖H_k‖₂ ≤ ‖h_k‖₁ fails.

Constants (all computed from θ, the forward model and ε):

- ρ' = t/√(t²+ε²) ∈ (−1, 1); ρ'' = ε²/(t²+ε²)^{3/2} ∈ (0, 1/ε]; ρ''' = −3ε²t/(t²+ε²)^{5/2},
  |ρ'''| ≤ c/ε² with c = max_u 3u(1+u²)^{−5/2} = 3·½·(4/5)^{5/2} = 48/(25√5) ≈ 0.8587
  (:data:`RHO3`, attained at t = ε/2).
- ∇²E_θ(x) = AᵀA + Σ_k α_k H_kᵀ diag(ρ''(H_k x)) H_k, so μI ⪯ ∇²E_θ ⪯ L(θ)I with
  μ = λ_min(AᵀA) (1 for denoising, 0 for inpainting and deblurring) and

  .. math:: L(θ) = ‖A‖^2 + \max_ξ \sum_k α_k |ĥ_k(ξ)|^2 / ε
            \;≤\; ‖A‖^2 + \sum_k α_k ‖h_k‖_1^2 / ε,

  because Σ_k α_k H_kᵀ diag(ρ'') H_k ⪯ (1/ε)Σ_k α_k H_kᵀH_k, a circulant (per channel) whose
  eigenvalues are Σ_k α_k|ĥ_k(ξ)|², ĥ_k the DFT of h_k on the H×W grid (exact, computed by
  ``torch.fft.fft2``; the right-hand side is the issue's bound, |ĥ_k| ≤ ‖h_k‖₁).

- Step size τ(θ) = 2/(μ + L(θ)) when μ > 0 (the optimal constant step, τ* of section 4.1;
  it gives ω = (L − μ)/(L + μ)) and τ(θ) = 1/L(θ) when μ = 0 (τ = 2/L would only give a
  nonexpansive step that need not converge; τ = 1/L gives a firmly nonexpansive, averaged step
  whose iterates converge). τ depends on θ and **is differentiated**: φ is a function of
  (x, θ) and every estimator, finite differences included, sees the same map. At a fixed
  point ∇E(x̂) = 0, so the τ'-part of ∂_θφ vanishes there and does not change the DEQ gradient.
- δ: ‖∂_xφ(x)‖₂ = ‖I − τ∇²E_θ(x)‖₂ ≤ ω(τ) = max(|1 − τμ|, |1 − τL|) for every x, so
  δ_K = ω^K is a global Lipschitz constant of Φ_K = φ^K (eq. (10)); ω < 1 iff μ > 0.
- ℓ_x, the Lipschitz constant of x ↦ ∂_xφ(x) (global): ∂_xφ(x) − ∂_xφ(x') =
  −τΣ_k α_k H_kᵀ diag(ρ''(H_k x) − ρ''(H_k x'))H_k and |(H_k(x − x'))_i| ≤ ‖h_k‖₂‖x − x'‖₂, so

  .. math:: ℓ_x = τ \sum_k α_k ‖h_k‖_1^2 ‖h_k‖_2\, c/ε^2,
            \qquad L_x(Φ_K) ≤ ℓ_x ω^{K−1}\sum_{i=0}^{K−1} ω^i.

**L_θ (Assumption 2).** ∂_θφ(x)[δθ] = −(Dτ[δθ])∇E_θ(x) − τ Σ_k [δα̃_k α_k H_kᵀρ'(H_k x)
+ α_k(E_kᵀρ'(H_k x) + H_kᵀ(ρ''(H_k x) ⊙ E_k x))], E_k the convolution with e_k = δw_k −
mean(δw_k) (‖e_k‖₂ ≤ ‖δw_k‖₂, ‖E_k‖₂ ≤ ‖e_k‖₁ ≤ s‖e_k‖₂). The last term grows with the image
(E_k x is bilinear in the filter and the image), so x ↦ ∂_θφ(x) is Lipschitz on bounded sets
only: Assumption 2 is needed "on a ball around x̂", and that is what the constants here give.

Region. Let B = B(c, R) be a ball that contains x̂ (e.g. the a-posteriori ball of Lemma A,
``docs/findings.md`` C: any y with ‖Φ_K(y) − y‖ = s has ‖y − x̂‖ ≤ s/(1 − δ_K)). Since
‖φ(x) − x̂‖ ≤ ω‖x − x̂‖ ≤ ‖x − x̂‖, the ball S = B(x̂, 2R) ⊇ B holds every iterate φ^j(x) of
every x ∈ B (x̂ is a fixed point of φ itself: for μ = 0, φ is averaged and Fix φ^K = Fix φ),
and S ⊆ B(c, 3R). On S: ‖x − x̂‖ ≤ 2R, ‖x‖ ≤ X := ‖c‖ + 3R, and every s×s patch
has ‖patch_i(x)‖₂ ≤ P := max_i ‖patch_i(c)‖₂ + 3R (so |(E_k x)_i| ≤ ‖e_k‖₂P).

One step, for x, x' ∈ S (δ := x − x'), term by term:

- τ' term: |Dτ[δθ]| ‖∇E(x) − ∇E(x')‖ ≤ ‖∇_θτ‖₂ L ‖δ‖ (‖∇_θτ‖ exact, by autograd: τ is an
  explicit function of θ).
- α̃ term: τ|δα̃_k| α_k ‖H_kᵀ(ρ'(H_k x) − ρ'(H_k x'))‖ ≤ τ|δα̃_k| α_k‖h_k‖₁²‖δ‖/ε.
- E_kᵀρ' term: ≤ τα_k s‖e_k‖‖h_k‖₁‖δ‖/ε; H_kᵀ(ρ''(H_kx') ⊙ E_kδ): ≤ τα_k‖h_k‖₁ s‖e_k‖‖δ‖/ε;
  H_kᵀ((ρ''(H_kx) − ρ''(H_kx')) ⊙ E_kx): ≤ τα_k‖h_k‖₁ (c/ε²)‖h_k‖₁‖δ‖ ‖e_k‖P.

By Cauchy–Schwarz over k,

.. math::

    ℓ_θ = ‖∇_θτ‖_2 L + τ\Big(\sum_k a_k^2 + \sum_k b_k^2\Big)^{1/2},\quad
    a_k = \frac{α_k‖h_k‖_1^2}{ε},\quad
    b_k = α_k‖h_k‖_1\Big(\frac{2s}{ε} + \frac{cP‖h_k‖_1}{ε^2}\Big),

and, with ‖ρ'(H_kx)‖₂ ≤ √m (m = entries of x) and ‖∇E(x)‖ ≤ L‖x − x̂‖ ≤ 2RL,

.. math::

    β_φ = \sup_S‖∂_θφ‖_2 ≤ 2RL‖∇_θτ‖ + τ\Big(\sum_k (α_k‖h_k‖_1\sqrt m)^2
          + \sum_k \big(α_k(s\sqrt m + s‖h_k‖_1X/ε)\big)^2\Big)^{1/2}.

K steps. ∂_θΦ_K(x) = Σ_{j<K} J_{K−1}⋯J_{j+1} B_j with J_i = ∂_xφ(x_i), B_j = ∂_θφ(x_j),
x_i = φ^i(x); ‖x_i − x'_i‖ ≤ ω^i‖x − x'‖, ‖J_i‖ ≤ ω. Splitting each term's difference,

.. math::

    L_θ(Φ_K) ≤ \sum_{j=0}^{K−1}\Big(ω^{K−1}ℓ_θ
               + β_φ ℓ_x ω^{K−2−j}\sum_{i=j+1}^{K−1} ω^i\Big)

for every x, x' ∈ B(c, R) (:meth:`FieldsOfExperts.constants`). It is ≥ the exact secant that
``retune_suite.bounds.verify`` measures (``tests/test_foe.py``); at image scale it is loose (the ℓ₂
radius
R bounds the patch norms P), and it is what makes the certificates *certified* there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..memo import memoize

__all__ = [
    "RHO3",
    "FieldsOfExperts",
    "FoEConstants",
    "conv",
    "conv_adjoint",
    "conv_adjoint_spectral",
    "conv_spectral",
    "dct_filters",
    "init_theta",
    "spectrum",
]

RHO3 = 48.0 / (25.0 * math.sqrt(5.0))
"""c with sup_t |ρ_ε'''(t)| = c/ε²: max_u 3u(1 + u²)^{−5/2} at u = ½ (t = ε/2)."""


def dct_filters(
    count: int, size: int = 5, *, device: torch.device | str | None = None, dtype=None
) -> torch.Tensor:
    """The ``count`` lowest-frequency zero-mean s×s 2-D DCT-II basis filters, (count, s, s).

    Orthonormal (‖h‖₂ = 1) and zero-mean (the constant basis filter is left out), ordered by
    the frequency pair (i + j, i): a fixed, seed-free start for θ = (α̃, w).
    """
    if not 1 <= count <= size * size - 1:
        raise InvalidInputError(f"count = {count}: choose 1 to {size * size - 1} filters.")
    n = torch.arange(size, dtype=torch.float64)
    basis = torch.cos(math.pi * (n[None, :] + 0.5) * n[:, None] / size)  # (freq, position)
    basis[0] /= math.sqrt(2.0)
    basis *= math.sqrt(2.0 / size)
    pairs = sorted(((i, j) for i in range(size) for j in range(size)), key=lambda p: (sum(p), p))
    filters = [torch.outer(basis[i], basis[j]) for i, j in pairs[1 : count + 1]]
    return torch.stack(filters).to(device=device, dtype=dtype or torch.get_default_dtype())


def init_theta(
    count: int = 8,
    *,
    log_alpha: float = -3.0,
    size: int = 5,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """θ⁰ = (α̃, w): α_k = exp(``log_alpha``), w the DCT filters of :func:`dct_filters`."""
    w = dct_filters(count, size, device=device, dtype=dtype)
    return torch.full((count,), float(log_alpha), device=device, dtype=w.dtype), w


def _pad(x: torch.Tensor, size: int) -> torch.Tensor:
    r = size // 2
    return F.pad(x, (r, r, r, r), mode="circular")


def conv(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(H_k x)_k for every filter: x (B, C, H, W), h (N, s, s) → (B·C, N, H, W), circular."""
    B, C, Hh, W = x.shape
    return F.conv2d(_pad(x.reshape(B * C, 1, Hh, W), h.shape[-1]), h.unsqueeze(1))


def conv_adjoint(z: torch.Tensor, h: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Σ_k H_kᵀ z_k: z (B·C, N, H, W) → (B, C, H, W) (correlation with the flipped filters)."""
    weight = torch.flip(h, dims=(-2, -1)).unsqueeze(0)  # (1, N, s, s)
    return F.conv2d(_pad(z, h.shape[-1]), weight).reshape(shape)


# The step uses the same two operators by FFT. Why not conv2d: on the CPU in float64 (the exact
# checks and the certified 256×256 study) conv2d has no fast kernel, and at 256×256 with
# 8 filters one step took 0.31 s; by FFT (the operators are circulant, so this is exact up to
# rounding) it takes a fraction of that (docs/foe.md). Tested against conv/conv_adjoint.


def spectrum(h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """ĝ_k = rfft2 of h_k embedded in the H×W grid, centred at pixel (0, 0): (N, H, W//2 + 1).

    With it H_k x = irfft2(x̂ · conj(ĝ_k)) (conv: a correlation, as conv2d computes) and
    H_kᵀ z = irfft2(ẑ · ĝ_k); the eigenvalues of H_kᵀH_k are |ĝ_k|² (:meth:`lipschitz`).
    """
    s, (Hh, W) = h.shape[-1], grid
    if s > min(Hh, W):
        raise InvalidInputError(f"the {s}×{s} filters exceed the {Hh}×{W} image.")
    g = h.new_zeros(h.shape[0], Hh, W)
    g[:, :s, :s] = h
    return torch.fft.rfft2(torch.roll(g, shifts=(-(s // 2), -(s // 2)), dims=(-2, -1)))


def conv_spectral(x: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
    """:func:`conv` by FFT: x (B, C, H, W), ĝ from :func:`spectrum` → (B·C, N, H, W)."""
    B, C, Hh, W = x.shape
    xf = torch.fft.rfft2(x.reshape(B * C, 1, Hh, W))
    return torch.fft.irfft2(xf * g_hat.conj(), s=(Hh, W))


def conv_adjoint_spectral(z: torch.Tensor, g_hat: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """:func:`conv_adjoint` by FFT (the sum over k taken before the one inverse FFT)."""
    zf = (torch.fft.rfft2(z) * g_hat).sum(dim=1)
    return torch.fft.irfft2(zf, s=tuple(shape[-2:])).reshape(shape)


@dataclass(frozen=True)
class FoEConstants:
    """The analytic constants of φ and Φ_K at one θ (module docstring), as floats.

    ``L``, ``mu``, ``tau``, ``omega``: the energy's curvature bounds, the step, the rate ω(τ);
    ``delta`` = ω^K (None when ω ≥ 1: no global contraction); ``grad_tau`` = ‖∇_θτ‖₂;
    ``ell_x``, ``ell_theta``, ``beta_step``: ℓ_x, ℓ_θ and β_φ of one step on the region;
    ``lipschitz_x`` = L_x(Φ_K) (global); ``lipschitz_theta`` = L_θ(Φ_K) on B(center, radius);
    ``radius``, ``patch``: R and the patch bound P used.
    """

    K: int
    L: float
    mu: float
    tau: float
    omega: float
    delta: float | None
    grad_tau: float
    ell_x: float
    ell_theta: float
    beta_step: float
    lipschitz_x: float
    lipschitz_theta: float
    radius: float
    patch: float


@dataclass(eq=False)
class FieldsOfExperts:
    """The FoE step φ(x, θ) for one forward model and one batch of observations y (B, C, H, W).

    ``model`` has ``A``, ``A_adjoint`` and ``norm_sq`` (:mod:`retune_suite.operators.maps.physics`);
    ``None`` is
    denoising (A = Id, μ = 1) without calling an operator. ``mu`` = λ_min(AᵀA): 1 for
    denoising, 0 (the default for a given model) for inpainting and deblurring. ``eps`` is
    the ε of ρ_ε. ``hessian_bound`` = 1: the Lipschitz constant of ∂ₓ of the builder's loss
    ½‖x − x̄‖² (:func:`retune_suite.operators.maps.section4.build`).
    """

    y: torch.Tensor
    model: object | None = None
    eps: float = 0.1
    mu: float | None = None
    hessian_bound: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.y, torch.Tensor) or self.y.ndim != 4:
            raise InvalidInputError("y must be a tensor of shape (B, C, H, W).")
        if not (isinstance(self.eps, int | float) and self.eps > 0 and math.isfinite(self.eps)):
            raise InvalidInputError(f"eps = {self.eps!r}: ρ_ε needs ε > 0, e.g. eps=0.1.")
        self.norm_sq = 1.0 if self.model is None else float(self.model.norm_sq())
        if self.mu is None:
            self.mu = 1.0 if self.model is None else 0.0
        if not 0 <= self.mu <= self.norm_sq:
            raise InvalidInputError(
                f"mu = {self.mu} must be λ_min(AᵀA), in [0, ‖A‖² = {self.norm_sq}]."
            )
        self.aty = self.y if self.model is None else self.model.A_adjoint(self.y)

    # -- θ and its maps ----------------------------------------------------------------------

    @staticmethod
    def filters(theta: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(α, h): α = exp(α̃), h = w − mean(w) per filter (zero-mean by parameterisation)."""
        if not isinstance(theta, tuple | list) or len(theta) != 2:
            raise InvalidInputError("θ of the FoE prior is a tuple (α̃ (N,), w (N, s, s)).")
        log_alpha, w = theta
        if w.ndim != 3 or w.shape[-1] != w.shape[-2] or w.shape[-1] % 2 == 0:
            raise InvalidInputError(f"w must have shape (N, s, s), s odd; got {tuple(w.shape)}.")
        if log_alpha.shape != w.shape[:1]:
            raise InvalidInputError(
                f"α̃ has shape {tuple(log_alpha.shape)} for {w.shape[0]} filters: give (N,)."
            )
        return torch.exp(log_alpha), w - w.mean(dim=(-2, -1), keepdim=True)

    def lipschitz(self, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """L(θ) = ‖A‖² + max_ξ Σ_k α_k|ĥ_k(ξ)|²/ε ≥ ‖∇²E_θ‖ (a tensor, differentiable in θ).

        ĥ_k is the DFT of h_k on the image's H×W grid (the eigenvalues of the circulant H_k),
        so the max is exact for (1/ε)Σ_k α_k H_kᵀH_k; it is at most the issue's bound
        Σ_k α_k‖h_k‖₁²/ε (|ĥ_k| ≤ ‖h_k‖₁), and sharper when the filters' passbands differ.
        """
        alpha, h = self.filters(theta)
        H, W = self.y.shape[-2:]
        if h.shape[-1] > min(H, W):
            raise InvalidInputError(f"the {h.shape[-1]}×{h.shape[-1]} filters exceed the image.")
        power = torch.fft.fft2(h, s=(H, W)).abs() ** 2  # (N, H, W)
        return self.norm_sq + (alpha.reshape(-1, 1, 1) * power).sum(0).max() / self.eps

    def tau(self, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """τ(θ) = 2/(μ + L(θ)) if μ > 0, else 1/L(θ) (a tensor, differentiated)."""
        L = self.lipschitz(theta)
        return 2.0 / (self.mu + L) if self.mu > 0 else 1.0 / L

    def omega(self, theta: tuple[torch.Tensor, torch.Tensor]) -> float:
        """ω(τ) = max(|1 − τμ|, |1 − τL|): the Lipschitz constant of φ(·, θ); 1 when μ = 0."""
        with torch.no_grad():
            L, tau = float(self.lipschitz(theta)), float(self.tau(theta))
        return max(abs(1.0 - tau * self.mu), abs(1.0 - tau * L))

    def delta(self, theta: tuple[torch.Tensor, torch.Tensor], K: int) -> float | None:
        """δ_K = ω^K, or None when ω ≥ 1 (μ = 0: no global contraction)."""
        w = self.omega(theta)
        return w**K if w < 1 else None

    # -- the map ------------------------------------------------------------------------------

    def energy(self, x: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """E_θ(x) (summed over the batch); its autograd gradient is tested against ∇E."""
        alpha, h = self.filters(theta)
        data = self.y - x if self.model is None else self.model.A(x) - self.y
        z = conv(x, h)
        rho = torch.sqrt(z * z + self.eps**2) - self.eps
        return 0.5 * (data**2).sum() + (alpha.reshape(1, -1, 1, 1) * rho).sum()

    def gradient(self, x: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """∇E_θ(x) = Aᵀ(Ax − y) + Σ_k α_k H_kᵀρ_ε'(H_k x) (H_k by FFT, :func:`spectrum`)."""
        alpha, h = self.filters(theta)
        return self._gradient(x, alpha, spectrum(h, tuple(x.shape[-2:])))

    def _gradient(self, x: torch.Tensor, alpha: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
        z = conv_spectral(x, g_hat)
        dz = alpha.reshape(1, -1, 1, 1) * z * torch.rsqrt(z * z + self.eps**2)
        prior = conv_adjoint_spectral(dz, g_hat, x.shape)
        data = (
            x - self.y if self.model is None else self.model.A_adjoint(self.model.A(x)) - self.aty
        )
        return data + prior

    def step(self, x: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """φ(x, θ) = x − τ(θ)∇E_θ(x); (τ, α, ĝ) computed once per block
        (:mod:`~retune_suite.operators.memo`)."""

        def maps() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            alpha, h = self.filters(theta)
            return self.tau(theta), alpha, spectrum(h, tuple(self.y.shape[-2:]))

        tau, alpha, g_hat = memoize(self, "maps", theta, maps)
        return x - tau * self._gradient(x, alpha, g_hat)

    def initial(self) -> torch.Tensor:
        """x₀ = Aᵀy (y for denoising)."""
        return self.aty.clone()

    # -- the constants of Assumptions 1 and 2 -------------------------------------------------

    def a_priori_radius(self, theta: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> float:
        """‖φ(x) − x‖/(1 − ω) ≥ ‖x − x̂‖ (Lemma A with K = 1); inf when ω ≥ 1."""
        w = self.omega(theta)
        if not w < 1:
            return math.inf
        with torch.no_grad():
            s = torch.linalg.vector_norm(self.step(x, theta) - x).item()
        return s / (1.0 - w)

    def run_ball(
        self, theta: tuple[torch.Tensor, torch.Tensor], x0: torch.Tensor, K: int
    ) -> tuple[torch.Tensor, float]:
        """(x₀, R_run): a ball around x₀ holding x̂ and every ball that the certificates of
        :func:`retune_suite.operators.hypergrad.estimate` use from x₀ (``docs/findings.md`` C).

        With R₀ = ‖φ(x₀) − x₀‖/(1 − ω) ≥ ‖x₀ − x̂‖ every iterate is within R₀ of x̂; ReTune's
        ball B(x_{K(T−1)}, r/(1 − δ_K)) has r ≤ (1 + δ_K)R₀, the fixed-point methods' balls are
        around x̂ with the (smaller) residual radius, the unrolled set is the iterates. All lie in
        B(x₀, R₀(2 + (1 + δ_K)/(1 − δ_K))).
        """
        R0 = self.a_priori_radius(theta, x0)
        d = self.delta(theta, K)
        if d is None or not math.isfinite(R0):
            raise InvalidInputError(
                "no a-priori ball: ω ≥ 1 (μ = 0, inpainting or deblurring); Φ_K is not a "
                "global contraction, so no certificate region can be given from x₀."
            )
        return x0, R0 * (2.0 + (1.0 + d) / (1.0 - d))

    def constants(
        self,
        theta: tuple[torch.Tensor, torch.Tensor],
        K: int,
        center: torch.Tensor,
        radius: float,
    ) -> FoEConstants:
        """The analytic constants of the module docstring at θ, with L_θ(Φ_K) valid on
        B(``center``, ``radius``) — which must contain x̂ (e.g. :meth:`run_ball`)."""
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise InvalidInputError(f"K must be an integer >= 1, got {K!r}.")
        if not (radius >= 0 and math.isfinite(radius)):
            raise InvalidInputError(f"radius = {radius!r} must be finite and >= 0.")
        leaves = tuple(t.detach().requires_grad_(True) for t in theta)
        with torch.enable_grad():
            tau_t = self.tau(leaves)
            grads = torch.autograd.grad(tau_t, leaves)
        grad_tau = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        with torch.no_grad():
            alpha, h = (t.double() for t in self.filters(theta))
            L = float(self.lipschitz(theta))
            tau = float(tau_t)
            size = h.shape[-1]
            l1 = h.abs().sum(dim=(-2, -1))
            l2 = torch.linalg.vector_norm(h, dim=(-2, -1))
            c = center.detach().double()
            patches = F.conv2d(
                _pad(c.reshape(-1, 1, *c.shape[-2:]) ** 2, size),
                torch.ones(1, 1, size, size, dtype=torch.float64, device=c.device),
            )
            P = math.sqrt(float(patches.max().clamp_min(0.0))) + 3.0 * radius
            X = float(torch.linalg.vector_norm(c)) + 3.0 * radius
            m = center.numel()
            eps = self.eps
            ell_x = tau * float((alpha * l1**2 * l2).sum()) * RHO3 / eps**2
            a = alpha * l1**2 / eps
            b = alpha * l1 * (2 * size / eps + RHO3 * P * l1 / eps**2)
            ell_theta = grad_tau * L + tau * math.sqrt(float((a**2).sum() + (b**2).sum()))
            beta_a = alpha * l1 * math.sqrt(m)
            beta_w = alpha * (size * math.sqrt(m) + size * l1 * X / eps)
            beta = 2.0 * radius * L * grad_tau + tau * math.sqrt(
                float((beta_a**2).sum() + (beta_w**2).sum())
            )
        omega = max(abs(1.0 - tau * self.mu), abs(1.0 - tau * L))
        w = min(omega, 1.0)  # ‖∂xφ‖ ≤ min(ω, 1): τ ≤ 2/(μ + L) keeps the step nonexpansive
        L_theta = 0.0
        for j in range(K):
            inner = sum(w**i for i in range(j + 1, K))
            L_theta += w ** (K - 1) * ell_theta + (
                beta * ell_x * w ** (K - 2 - j) * inner if j <= K - 2 else 0.0
            )
        L_x = ell_x * w ** (K - 1) * sum(w**i for i in range(K))
        return FoEConstants(
            K=K,
            L=L,
            mu=float(self.mu),
            tau=tau,
            omega=omega,
            delta=omega**K if omega < 1 else None,
            grad_tau=grad_tau,
            ell_x=ell_x,
            ell_theta=ell_theta,
            beta_step=beta,
            lipschitz_x=L_x,
            lipschitz_theta=L_theta,
            radius=float(radius),
            patch=P,
        )
