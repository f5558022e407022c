r"""The one builder of the section-4 problems: a task, a prior, a batch → (φ, θ, x₀, L, R).

Usage (Algorithm 1's training: one problem per batch, at the current θ, with its own loss)::

    p = build(task, model, y=y_batch, physics=data.forward, theta=theta, denoiser=net,
              pnp_sigma=sigma, pnp_tau=tau)   # model: wavelet-B/-BC, pnp-sigma-tau, pnp-weights
    step, x0, readout = p.step, p.x0, p.readout   # what train.Problem.build returns today

Tasks (:mod:`retune_suite.operators.maps.physics`, the paper's settings): ``denoise`` (A = Id, σ =
(0.1, 0.25,
0.5) per channel), ``inpaint`` (90 % of the pixels missing, σ = 0.05), ``deblur`` (anisotropic
uniform blurs of width 25, σ = 0.05). Priors:

``wavelet-B``, ``wavelet-BC``
    forward-backward on the weighted wavelet coefficients u, eq. (51), with θ_B (45) or
    θ_BC (44) (:class:`retune_suite.operators.maps.wavelet_prior.WaveletFB`); the estimate is the
    read-out
    R(u, θ) = Dᵀθ⁻¹u (section 4.1).
``pnp`` (= ``pnp-sigma-tau``), ``pnp-weights``
    FB-PnP with a DRUNet, eq. (53) (:mod:`retune_suite.operators.maps.pnp`), θ = (log σ, log τ) or θ
    = Λ (the
    network's weights, σ and τ fixed); the iterate is the image (no read-out).
``foe``
    gradient descent on a fields-of-experts energy (:mod:`retune_suite.operators.maps.foe`, section
    5's smooth
    regulariser), θ = (α̃, w), x₀ = Aᵀy, the iterate is the image; ``fb`` is its
    :class:`~retune_suite.operators.maps.foe.FieldsOfExperts` (analytic ω, δ_K, L_θ, L_x; H = 1 for
    the loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import InvalidInputError
from ..hypergrad import Readout
from ..theta import Loss, Step, Theta, as_tuple
from .physics import TASKS, make_forward_model

__all__ = ["MSE", "PRIORS", "TASKS", "Section4Problem", "build", "image_loss"]

PRIORS = ("wavelet-B", "wavelet-BC", "pnp-sigma-tau", "pnp-weights", "foe")
ALIASES = {"pnp": "pnp-sigma-tau"}
"""``pnp`` is the error study's name of ``pnp-sigma-tau`` (θ = (log σ, log τ))."""


class MSE(NamedTuple):
    """The mean squared error of an image estimate in the domain where it is cheapest
    (:meth:`Section4Problem.mse`): ``loss(readout(u, θ))`` is mean((R(u, θ) − x̄)²) and
    ``psnr(readout(u, θ), reference)`` the PSNR of the image estimate R(u, θ) against x̄."""

    loss: Loss
    readout: Readout | None
    reference: torch.Tensor


@dataclass(frozen=True, eq=False)
class Section4Problem:
    """One section-4 problem on one batch: everything an estimator or a training step needs.

    ``step``, ``theta`` and ``x0`` are the φ, θ and x₀ of the estimators
    (:mod:`retune_suite.operators.hypergrad`); ``loss`` is L(u) of the *iterate* with θ frozen at
    ``theta`` (the theory's setting: a loss that does not depend on θ), present when the clean
    images were given; ``readout`` maps an iterate to its image, R(u, θ) = Dᵀθ⁻¹u for the
    wavelet priors and None for PnP (the iterate is the image).
    """

    task: str
    prior: str
    physics: object
    """The forward model (``A``, ``A_adjoint``, ``norm_sq``, ``observe``)."""
    y: torch.Tensor
    clean: torch.Tensor | None
    step: Step
    theta: Theta
    x0: torch.Tensor
    loss: Loss | None
    readout: Readout | None
    fb: object | None
    """The :class:`~retune_suite.operators.maps.wavelet_prior.WaveletFB` of the wavelet priors, the
    :class:`~retune_suite.operators.maps.foe.FieldsOfExperts` of ``foe``, else None."""

    @property
    def omega(self) -> float | None:
        """The analytic FB rate ω(τ) at ``theta`` (denoising with a wavelet prior: f_θ is
        strongly convex, ω < 1), else None (no analytic contraction). Computed when asked:
        it reads θ on the host, which a training step has no use for."""
        if self.fb is None or self.task != "denoise":
            return None
        return self.fb.omega(self.theta)

    @property
    def has_bounds(self) -> bool:
        """The paper's bounds apply: an explicit (wavelet) prior, FB on a convex problem."""
        return self.fb is not None

    def delta(self, K: int) -> float | None:
        """δ_K = ω^K, the analytic Lipschitz constant of Φ_K (10), or None when not analytic."""
        omega = self.omega
        return None if omega is None else omega**K

    def mse(self, clean: torch.Tensor) -> MSE:
        r"""Algorithm 1's training loss, the mean squared error of the image estimate,
        mean((R(u, θ) − x̄)²) with θ live in R, as an :class:`MSE` (loss, read-out, reference)
        for the estimators and the metrics.

        For wavelet denoising it is taken in the wavelet domain: D is orthonormal, acts on each
        image alone, and u and x̄ have the same number of entries, so

        .. math:: \operatorname{mean}((Dᵀθ^{-1}u − x̄)^2) = \operatorname{mean}((θ^{-1}u − Dx̄)^2)

        (and so per image: the PSNR too). The read-out is then (u, θ) ↦ θ⁻¹u and the reference
        Dx̄: the same gradients in u and θ (to rounding, tests/test_reproduce.py) without a
        synthesis and an analysis per gradient (docs/performance.md). Otherwise the read-out is
        :attr:`readout` and the reference x̄.
        """
        if clean.shape != self.y.shape:
            raise InvalidInputError(
                f"clean {tuple(clean.shape)} must have the observations' shape "
                f"{tuple(self.y.shape)}."
            )
        fb = self.fb
        readout, reference = self.readout, clean
        if self.task == "denoise" and self.prior.startswith("wavelet"):
            reference = fb.D.analysis(clean).detach()  # type: ignore[union-attr]

            def readout(u: torch.Tensor, theta: Theta) -> torch.Tensor:
                """θ⁻¹u, the wavelet coefficients of the image estimate Dᵀθ⁻¹u."""
                return u / fb.weights(theta)  # type: ignore[union-attr]

        def loss(x: torch.Tensor) -> torch.Tensor:
            """mean((x − reference)²)."""
            return torch.mean((x - reference) ** 2)

        return MSE(loss, readout, reference)

    def estimate(self, x: torch.Tensor, theta: Theta | None = None) -> torch.Tensor:
        """The image an iterate stands for: R(x, θ) (θ defaults to ``theta``), or x itself."""
        if self.readout is None:
            return x
        return self.readout(x, self.theta if theta is None else theta)


def build(
    task: str,
    prior: str,
    *,
    clean: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    physics: object | None = None,
    seed: int = 0,
    theta: Theta | None = None,
    log_lambda: float = -2.0,
    pnp_sigma: float = 0.05,
    pnp_tau: float = 1.0,
    denoiser: torch.nn.Module | None = None,
) -> Section4Problem:
    r"""The section-4 problem of ``task`` and ``prior`` on a batch (B, C, H, W).

    Parameters
    ----------
    task, prior
        One of :data:`TASKS`; one of :data:`PRIORS` (or ``pnp``, the same as
        ``pnp-sigma-tau``).
    clean, y
        The clean images x̄ and/or their observations y. Without ``y`` it is drawn as
        y = A x̄ + ε by ``physics.observe`` with a generator on x̄'s device seeded by ``seed``.
        With ``clean`` the problem has the image loss ½‖R(u, θ₀) − x̄‖², θ₀ = ``theta``
        frozen (a sum over the batch, as the error study and the benchmarks measure it).
    physics
        The forward model; default ``make_forward_model(task, C, (H, W), seed=seed)`` on the
        device and in the dtype of the data (``seed`` draws the inpainting mask). Pass the one
        the observations were drawn with when ``y`` is given (e.g. training data).
    theta
        θ; default θ⁰: (log λ, log Λ) with λ_j = exp(``log_lambda``), Λ = 1 for the wavelet
        priors; (log ``pnp_sigma``, log ``pnp_tau``) for ``pnp-sigma-tau``; the DRUNet's
        weights for ``pnp-weights``.
    pnp_sigma, pnp_tau
        The denoiser's noise level σ and the step τ of (53): θ⁰ of ``pnp-sigma-tau``, the fixed
        values of ``pnp-weights``.
    denoiser
        The DRUNet of the PnP priors, in the data's dtype and on its device.

    Notes
    -----
    The starting point is the paper's. Algorithm 1 leaves it open ("Initialize x₀^{[ℓ]}");
    section 4.1 fixes it after eq. (52): x̃^T_{θ,K} = Dᵀθ⁻¹Φ_K^T(x₀, θ) "with x₀ = Dy". So
    x₀ = D Aᵀy for the wavelet priors (u₀ = Dy for denoising, the same formula for the
    non-injective A of section 4.2) and x₀ = Aᵀy for FB-PnP (53), whose iterate is the image.
    It does not depend on θ, so every θ of a training run, every estimator and every benchmark
    starts from the same point. (The peers bench used to start from θ₀Dy, whose image
    Dᵀθ₀⁻¹θ₀Dy is y; the paper does not, and the theory, Theorem 1 for any x₀, does not ask
    for it.) The observation noise is the paper's for each task
    (:mod:`retune_suite.operators.maps.physics`);
    for another level, pass a ``physics`` built with it.

    Examples
    --------
    >>> x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    >>> p = build("denoise", "wavelet-BC", clean=x, seed=0)
    >>> p.x0.shape, round(p.delta(2), 4), p.loss(p.x0).ndim
    (torch.Size([1, 3, 32, 32]), 0.9298, 0)
    """
    prior = ALIASES.get(prior, prior)
    if task not in TASKS:
        raise InvalidInputError(f"unknown task {task!r}: choose from {', '.join(TASKS)}.")
    if prior not in PRIORS:
        raise InvalidInputError(
            f"unknown prior {prior!r}: choose from {', '.join(PRIORS)} (or pnp)."
        )
    data = y if y is not None else clean
    if data is None:
        raise InvalidInputError("give the clean images (clean=) or their observations (y=).")
    for name, tensor in (("clean", clean), ("y", y)):
        if tensor is None:
            continue
        if (
            not isinstance(tensor, torch.Tensor)
            or tensor.ndim != 4
            or not tensor.is_floating_point()
        ):
            raise InvalidInputError(f"{name} must be a floating tensor of shape (B, C, H, W).")
    if clean is not None and y is not None and clean.shape != y.shape:
        raise InvalidInputError(
            f"clean {tuple(clean.shape)} and y {tuple(y.shape)} differ in shape: pass the "
            "observations of these images."
        )
    if physics is None:
        physics = make_forward_model(
            task,
            data.shape[1],
            tuple(data.shape[-2:]),
            device=data.device,
            dtype=data.dtype,
            seed=seed,
        )
    if y is None:
        generator = torch.Generator(device=clean.device).manual_seed(seed)
        y = physics.observe(clean, generator)
    if prior.startswith("wavelet"):
        return _wavelet(task, prior, physics, y, clean, theta, log_lambda)
    if prior == "foe":
        return _foe(task, physics, y, clean, theta)
    return _pnp(task, prior, physics, y, clean, theta, pnp_sigma, pnp_tau, denoiser)


def _wavelet(
    task: str,
    prior: str,
    physics: object,
    y: torch.Tensor,
    clean: torch.Tensor | None,
    theta: Theta | None,
    log_lambda: float,
) -> Section4Problem:
    """FB (51) on u; for denoising (A = Id) the step is elementwise in the wavelet domain."""
    from .wavelet_prior import WaveletFB, init_theta

    fb = WaveletFB(y, prior=prior.split("-")[1], model=None if task == "denoise" else physics)
    if theta is None:
        theta = init_theta(
            fb.prior, fb.levels, y.shape[1], log_lambda=log_lambda, device=y.device, dtype=y.dtype
        )
    as_tuple(theta)
    loss = None
    if clean is not None:
        loss = image_loss(fb, theta, clean)

    return Section4Problem(
        task, prior, physics, y, clean, fb.step, theta, fb.initial(), loss, fb.estimate, fb
    )


def image_loss(fb, theta: Theta, clean: torch.Tensor, *, domain: str | None = None) -> Loss:
    r"""L(u) = ½‖Dᵀθ₀⁻¹u − x̄‖², θ₀ = ``theta`` frozen: the loss of the wavelet priors.

    Since D is orthonormal (DᵀD = DDᵀ = Id, :mod:`.wavelet`),

    .. math:: \tfrac12‖Dᵀ(u/θ₀) − x̄‖_2^2 = \tfrac12‖u/θ₀ − D x̄‖_2^2,

    so the loss needs no transform once Dx̄ is computed: ``domain="wavelet"`` (the default for
    denoising, where the step has no transform either, so a loss gradient is one elementwise
    pass instead of Dᵀ and D) evaluates the right-hand side, ``domain="image"`` (the default
    for the other tasks, whose steps apply D anyway) the left-hand side. The two agree to
    rounding (tests/test_fused.py: 1e-13 relative in float64).
    """
    if domain is None:
        domain = "wavelet" if fb.model is None else "image"
    w0 = fb.weights(theta).detach()
    if domain == "wavelet":
        target = fb.D.analysis(clean).detach()

        def loss(u: torch.Tensor) -> torch.Tensor:
            """½‖θ₀⁻¹u − Dx̄‖², θ₀ frozen (= ½‖Dᵀθ₀⁻¹u − x̄‖², D orthonormal)."""
            return 0.5 * ((u / w0 - target) ** 2).sum()

        return loss
    if domain != "image":
        raise InvalidInputError(f"domain must be 'wavelet' or 'image', got {domain!r}.")
    synthesis = fb.D.synthesis

    def loss(u: torch.Tensor) -> torch.Tensor:
        """½‖Dᵀθ₀⁻¹u − x̄‖², θ₀ frozen."""
        return 0.5 * ((synthesis(u / w0) - clean) ** 2).sum()

    return loss


def _foe(
    task: str,
    physics: object,
    y: torch.Tensor,
    clean: torch.Tensor | None,
    theta: Theta | None,
) -> Section4Problem:
    """Gradient descent on the FoE energy (:mod:`~retune_suite.operators.maps.foe`) on the image,
    from x₀ =
    Aᵀy;
    θ⁰ = (log α = −3, the 8 lowest-frequency zero-mean 5×5 DCT filters)."""
    from .foe import FieldsOfExperts, init_theta

    fb = FieldsOfExperts(y, model=None if task == "denoise" else physics)
    if theta is None:
        theta = init_theta(device=y.device, dtype=y.dtype)
    as_tuple(theta)
    loss = None
    if clean is not None:

        def loss(x: torch.Tensor) -> torch.Tensor:
            """½‖x − x̄‖²."""
            return 0.5 * ((x - clean) ** 2).sum()

    x0 = fb.initial()
    return Section4Problem(task, "foe", physics, y, clean, fb.step, theta, x0, loss, None, fb)


def _pnp(
    task: str,
    prior: str,
    physics: object,
    y: torch.Tensor,
    clean: torch.Tensor | None,
    theta: Theta | None,
    sigma: float,
    tau: float,
    denoiser: torch.nn.Module | None,
) -> Section4Problem:
    """FB-PnP (53) on the image, from x₀ = Aᵀy."""
    from .pnp import fb_pnp_sigma_tau, fb_pnp_weights, sigma_tau_theta

    if denoiser is None:
        raise InvalidInputError(
            f"{prior} needs a DRUNet denoiser: pass denoiser=load_drunet(path, device=..., "
            "dtype=...) (retune_suite.operators.maps.pnp)."
        )
    if prior == "pnp-sigma-tau":
        step: Callable = fb_pnp_sigma_tau(physics, y, denoiser)
        if theta is None:
            theta = sigma_tau_theta(sigma, tau, device=y.device, dtype=y.dtype)
    else:
        step, weights = fb_pnp_weights(physics, y, denoiser, sigma, tau)
        theta = weights if theta is None else theta
    as_tuple(theta)
    loss = None
    if clean is not None:

        def loss(x: torch.Tensor) -> torch.Tensor:
            """½‖x − x̄‖²."""
            return 0.5 * ((x - clean) ** 2).sum()

    x0 = physics.A_adjoint(y)
    return Section4Problem(task, prior, physics, y, clean, step, theta, x0, loss, None, None)
