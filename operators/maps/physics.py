r"""The three forward models of section 4: y = A x̄ + ε with known linear A and Gaussian ε.

===========  =====================================================  ======================  =======
task         operator A                                             noise std (R, G, B)     ‖A‖₂²
===========  =====================================================  ======================  =======
``denoise``  A = Id (section 4.1)                                   (0.1, 0.25, 0.5)        1
``inpaint``  A x = m ⊙ x, m ∈ {0, 1}ⁿ, 90% of pixels missing        (0.05, 0.05, 0.05)      1
``deblur``   A x = x ⋆ h_c, anisotropic uniform blur of width 25    (0.05, 0.05, 0.05)      max|Fh|²
===========  =====================================================  ======================  =======

Every model has one interface (:class:`ForwardModel`): ``A``, ``A_adjoint``, the exact
``norm_sq`` = ‖A‖₂² (the step size of the forward-backward step (53),
φ(x, θ) = D(x − τAᵀ(Ax − y)), needs τ < 2/‖A‖₂²) and ``observe``, which draws y with a
``torch.Generator``. The linear part is kept as ``model.physics`` (``model.physics(x) = A x``):
:class:`Identity`, :class:`Mask` (the mask drawn here) and :class:`CircularBlur` (one kernel per
channel). They are deepinv's ``Denoising``, ``Inpainting`` and ``BlurFFT`` (same ``A``, ``Aᵀ``,
``.mask``, ``.filter`` and the same centring of the blur kernel), written here in plain torch so
that the core installs and runs without deepinv (``tests/test_physics.py`` checks them against
deepinv's operators where it is installed). The noise is drawn here, not by deepinv's
``GaussianNoise``, whose σ is one value per image, not per channel.

:func:`adjointness_test` and :func:`power_norm_sq` are the operators' self-checks (deepinv's
``adjointness_test`` / ``compute_sqnorm``); the tests reuse them.

>>> model = make_forward_model("deblur", 3, (32, 32), dtype=torch.float64, seed=0)
>>> model.norm_sq()
1.0
>>> g = torch.Generator().manual_seed(0)
>>> adjointness_test(model, (2, 3, 32, 32), g) < 1e-12
True
>>> inpaint = make_forward_model("inpaint", 3, (32, 32), dtype=torch.float64, seed=0)
>>> power_norm_sq(inpaint, (1, 3, 32, 32), g, iterations=3)  # AᵀA = diag(m), a projection
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..jacobians import dot_product_gap, power_iteration

TASKS = ("denoise", "inpaint", "deblur")
DENOISE_SIGMA = (0.1, 0.25, 0.5)
"""(σ_R, σ_G, σ_B) of section 4.1 (Fig. 1)."""
INPAINT_SIGMA = 0.05
INPAINT_MISSING = 0.9
"""Fraction of pixels removed by the inpainting mask (Fig. 2)."""
DEBLUR_SIGMA = 0.05
DEBLUR_WIDTH = 25
"""Support width of the uniform point spread functions (Fig. 3)."""

_DTYPES = (torch.float32, torch.float64)


@runtime_checkable
class ForwardModel(Protocol):
    """A linear forward model y = A x + ε with per-channel Gaussian noise (section 4)."""

    sigma: torch.Tensor
    """Noise standard deviation per channel, shape (C,)."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """A x for x of shape (B, C, H, W)."""
        ...

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Aᵀ y for y of shape (B, C, H, W)."""
        ...

    def norm_sq(self) -> float:
        """‖A‖₂² = ‖AᵀA‖₂."""
        ...

    def observe(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """y = A x + ε, ε drawn with ``generator`` on x's device."""
        ...


# -- the linear operators ------------------------------------------------------------------------
# Written here rather than taken from deepinv (as they were up to issue 24) so that the core
# (operators, bounds, verify, the wavelet error study) installs and runs without deepinv, an
# optional extra (retune-suite[pnp]) needed only for the DRUNet. Each matches deepinv 0.5's
# operator: same A and Aᵀ (to rounding; tests/test_physics.py, 1e-12 in float64) and the same
# attributes (.mask, .filter) the rest of the suite reads.


class LinearOperator(Protocol):
    """A linear operator on (B, C, H, W) tensors with its adjoint; ``op(x)`` is ``op.A(x)``."""

    def A(self, x: torch.Tensor) -> torch.Tensor: ...

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class Identity:
    """A = Aᵀ = Id (deepinv's ``Denoising``); returns a new tensor, as deepinv does."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)


class Mask:
    """A = Aᵀ = diag(m), A x = m ⊙ x with ``mask`` m broadcast over (B, C, H, W) (deepinv's
    ``Inpainting``, whose ``.mask`` is (1, 1, H, W) for one mask shared by the channels)."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)


class CircularBlur:
    r"""Circular convolution by one kernel per channel, by FFT (deepinv's ``BlurFFT``).

    ``filter`` has shape (1, C, h, w) with h ≤ H, w ≤ W. As in deepinv, the kernel is
    zero-padded to H × W at the bottom and right and rolled by (−⌊h/2⌋, −⌊w/2⌋), so its entry
    (⌊h/2⌋, ⌊w/2⌋) is the centre:

    .. math::

        (A x)_{c,i,j} = \sum_{k,l} h_{c,k,l}\,
        x_{c,\,(i-k+⌊h/2⌋) \bmod H,\,(j-l+⌊w/2⌋) \bmod W},

    A x = F⁻¹(ĥ ⊙ F x) and Aᵀ y = F⁻¹(conj(ĥ) ⊙ F y) (the correlation) with real FFTs. ĥ is
    computed once in float64 (on the CPU) and stored in the complex dtype of ``filter``.
    """

    def __init__(self, filter: torch.Tensor, size: tuple[int, int]):
        H, W = size
        h, w = filter.shape[-2:]
        padded = F.pad(filter.detach().cpu().double(), (0, W - w, 0, H - h))
        centred = torch.roll(padded, shifts=(-(h // 2), -(w // 2)), dims=(-2, -1))
        complex_dtype = torch.complex128 if filter.dtype == torch.float64 else torch.complex64
        spectrum = torch.fft.rfft2(centred).to(device=filter.device, dtype=complex_dtype)
        self.filter = filter
        self.size = (H, W)
        self._spectrum = spectrum
        self._spectrum_conj = spectrum.conj().resolve_conj()

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * self._spectrum, s=self.size)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(y) * self._spectrum_conj, s=self.size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)


class _LinearModel:
    """Shared checks and noise of the three models; ``physics`` is the linear operator."""

    physics: LinearOperator
    sigma: torch.Tensor

    def __init__(
        self,
        physics: LinearOperator,
        sigma: Sequence[float],
        shape: tuple[int, int, int],
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.physics = physics
        self.shape = shape
        self.device = device
        self.dtype = dtype
        self.sigma = torch.tensor([float(s) for s in sigma], dtype=dtype, device=device)

    def __repr__(self) -> str:
        sigma = ", ".join(f"{s:g}" for s in self.sigma.tolist())
        return (
            f"{type(self).__name__}(shape={self.shape}, sigma=({sigma}), "
            f"dtype={self.dtype}, device={self.device})"
        )

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """A x for x of shape (B, C, H, W) on the model's device and dtype."""
        return self.physics.A(self._check(x, "x"))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Aᵀ y for y of shape (B, C, H, W) on the model's device and dtype."""
        return self.physics.A_adjoint(self._check(y, "y"))

    def norm_sq(self) -> float:
        raise NotImplementedError

    def observe(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        r"""y = A x + ε with ε_c ~ N(0, σ_c² Id) independent per channel (section 4).

        The noise is drawn by ``torch.randn(..., generator=generator, device=x.device)``:
        the generator must live on x's device, and one seed gives one draw per device type.
        """
        return self.A(x) + self._noise(x, generator)

    def _noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_generator(generator, x.device, "x")
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.sigma.view(1, -1, 1, 1) * eps

    def _check(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidInputError(
                f"{name} must have shape (B, {', '.join(map(str, self.shape))}) for "
                f"{type(self).__name__}, got {got}; build the model with "
                "make_forward_model(task, channels, size) matching the images."
            )
        if x.dtype != self.dtype or not _same_device(x.device, self.device):
            raise InvalidInputError(
                f"{name} is {x.dtype} on {x.device} but the model is {self.dtype} on "
                f"{self.device}; build it with make_forward_model(..., device={name}.device, "
                f"dtype={name}.dtype) or move {name} with .to()."
            )
        return x


class DenoisingModel(_LinearModel):
    r"""Channel-dependent denoising, A = Id (section 4.1).

    .. math:: y = \overline{x} + ε, \qquad ε = (ε_R, ε_G, ε_B),\ ε_c \sim N(0, σ_c^2 \mathrm{Id})

    with (σ_R, σ_G, σ_B) = (0.1, 0.25, 0.5) in the paper (one σ per channel here).
    """

    def __init__(
        self,
        sigma: Sequence[float],
        size: tuple[int, int],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        device, dtype = _device_dtype(device, dtype)
        shape = (len(sigma), *_size(size))
        super().__init__(Identity(), sigma, shape, device, dtype)

    def norm_sq(self) -> float:
        """‖Id‖₂² = 1, exactly."""
        return 1.0


class InpaintingModel(_LinearModel):
    r"""Inpainting, A x = m ⊙ x with a binary mask m shared by the channels (section 4.2).

    .. math:: A = \mathrm{diag}(m), \qquad m_i = 1 \text{ if pixel } i \text{ is kept, else } 0

    Exactly ``round((1 − missing)·H·W)`` pixels are kept, chosen by ``torch.randperm`` with a
    CPU generator seeded by ``seed``, so the mask is the same on every device. ½‖Ax − y‖² is
    not strongly convex. Noise is only observed on the kept pixels, y = A(x + ε) (deepinv's
    convention): this changes no entry of Aᵀy = m ⊙ x + m ⊙ ε, the only way the estimators see
    y, and leaves the missing pixels at 0 instead of pure noise.
    """

    def __init__(
        self,
        channels: int,
        size: tuple[int, int],
        *,
        missing: float = INPAINT_MISSING,
        sigma: float | Sequence[float] = INPAINT_SIGMA,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        device, dtype = _device_dtype(device, dtype)
        channels = _channels(channels)
        H, W = _size(size)
        if not 0.0 <= missing < 1.0:
            raise InvalidInputError(f"missing must be in [0, 1), got {missing}.")
        kept = round((1.0 - missing) * H * W)
        if kept < 1:
            raise InvalidInputError(
                f"an inpainting mask with {missing:.0%} missing keeps no pixel of a {H}×{W} "
                "image; use a larger image or a smaller fraction missing."
            )
        generator = torch.Generator().manual_seed(seed)
        mask = torch.zeros(H * W, dtype=dtype)
        mask[torch.randperm(H * W, generator=generator)[:kept]] = 1.0
        physics = Mask(mask.view(1, 1, H, W).to(device))
        sigmas = [sigma] * channels if isinstance(sigma, (int, float)) else list(sigma)
        if len(sigmas) != channels:
            raise InvalidInputError(f"sigma has {len(sigmas)} entries for {channels} channels.")
        super().__init__(physics, sigmas, (channels, H, W), device, dtype)

    @property
    def mask(self) -> torch.Tensor:
        """The binary mask m, shape (1, 1, H, W)."""
        return self.physics.mask

    def norm_sq(self) -> float:
        """‖diag(m)‖₂² = max mᵢ² = 1 (at least one pixel is kept), exactly."""
        return float(self.mask.max()) ** 2

    def observe(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        r"""y = A(x + ε) = m ⊙ x + m ⊙ ε, ε_c ~ N(0, σ_c² Id); see the class docstring."""
        return self.A(x + self._noise(self._check(x, "x"), generator))


class DeblurringModel(_LinearModel):
    r"""Anisotropic channel-dependent blur with circular boundary (section 4.2).

    .. math::

        A x = (x_R ⋆ h_R,\ x_G ⋆ h_G,\ x_B ⋆ h_B), \qquad
        \tfrac12‖Ax − y‖_2^2 = \tfrac12‖(Fh) ⊙ (Fx) − Fy‖_2^2

    with normalised uniform kernels of support width w (25 in the paper): h_R averages the
    red channel horizontally (1 × w), h_G the green vertically (w × 1) and h_B the blue along
    the main diagonal (see :func:`anisotropic_blur_kernels`). With circular boundaries A is
    diagonalised by F, so ‖A‖₂² = max_{c, ξ} |(Fh_c)(ξ)|² exactly, and the strong convexity
    modulus m_h = min_ξ |(Fh)(ξ)| is ≈ 0.

    :class:`CircularBlur` (deepinv's ``BlurFFT``) does it: its filter of shape (1, 3, w, w)
    holds one kernel per channel (checked against a direct per-channel convolution in the
    tests), its adjoint is the exact correlation, and an FFT is about 4× faster than a direct
    circular convolution (deepinv's ``Blur(padding="circular")``) for w = 25. A kernel larger
    than the image would wrap around, hence the size check.
    """

    def __init__(
        self,
        size: tuple[int, int],
        *,
        width: int = DEBLUR_WIDTH,
        sigma: float | Sequence[float] = DEBLUR_SIGMA,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        device, dtype = _device_dtype(device, dtype)
        H, W = _size(size)
        if width > H or width > W:
            raise InvalidInputError(
                f"the {width}×{width} blur kernel is larger than the {H}×{W} image; use "
                f"images of at least {width}×{width} pixels."
            )
        kernels = anisotropic_blur_kernels(width, dtype=torch.float64)
        physics = CircularBlur(kernels.unsqueeze(0).to(device=device, dtype=dtype), (H, W))
        sigmas = [sigma] * 3 if isinstance(sigma, (int, float)) else list(sigma)
        if len(sigmas) != 3:
            raise InvalidInputError(f"sigma has {len(sigmas)} entries for 3 channels.")
        super().__init__(physics, sigmas, (3, H, W), device, dtype)
        # The kernels are nonnegative, so |(Fh_c)(ξ)| ≤ Σ|h_c| = (Fh_c)(0) (triangle
        # inequality): the norm is the largest kernel sum, reached at ξ = 0. Summed as the
        # integer counts of w·h (0s and 1s) over w, it is exactly 1, where an FFT's DC term
        # carries a rounding error of a few ulps.
        counts = (kernels * width).round().sum(dim=(-2, -1))
        self._norm_sq = float((counts.max() / width) ** 2)

    @property
    def kernels(self) -> torch.Tensor:
        """The kernels (h_R, h_G, h_B), shape (3, w, w)."""
        return self.physics.filter[0]

    def norm_sq(self) -> float:
        """max_{c, ξ} |(Fh_c)(ξ)|² in float64: 1, reached at ξ = 0 by these averages."""
        return self._norm_sq


def anisotropic_blur_kernels(
    width: int = DEBLUR_WIDTH,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    r"""The kernels (h_R, h_G, h_B) of section 4.2 on a w × w grid, shape (3, w, w).

    Each holds w entries 1/w: the middle row (horizontal average), the middle column
    (vertical average) and the main diagonal. All three are symmetric under a 180° rotation,
    so convolution and correlation coincide; w must be odd so that they are centred.

    >>> anisotropic_blur_kernels(3, dtype=torch.float64) * 3
    tensor([[[0., 0., 0.],
             [1., 1., 1.],
             [0., 0., 0.]],
    <BLANKLINE>
            [[0., 1., 0.],
             [0., 1., 0.],
             [0., 1., 0.]],
    <BLANKLINE>
            [[1., 0., 0.],
             [0., 1., 0.],
             [0., 0., 1.]]], dtype=torch.float64)
    """
    if not isinstance(width, int) or width < 1 or width % 2 == 0:
        raise InvalidInputError(f"the blur width must be an odd positive integer, got {width}.")
    h = torch.zeros(3, width, width, dtype=dtype, device=device)
    c = width // 2
    h[0, c, :] = 1.0 / width
    h[1, :, c] = 1.0 / width
    h[2].fill_diagonal_(1.0 / width)
    return h


def make_forward_model(
    task: str,
    channels: int,
    size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    sigma: float | Sequence[float] | None = None,
) -> ForwardModel:
    """The forward model of ``task`` ∈ ``TASKS`` with the paper's settings.

    ``sigma`` replaces the paper's noise level of the task (one value for every channel, or
    one per channel), e.g. 0.1 for inpainting as the authors' data scripts draw it where the
    Fig. 2 caption says 0.05 (``docs/reproduce.md``, the protocol table).

    ``denoise`` and ``deblur`` are defined channel by channel on RGB images (``channels`` must
    be 3); ``inpaint`` takes any number of channels. ``seed`` draws the inpainting mask (the
    other two models are deterministic). ``dtype`` defaults to torch's default dtype.

    >>> make_forward_model("inpaint", 3, (10, 10), seed=0).mask.sum().item()
    10.0
    >>> make_forward_model("denoise", 3, (8, 8), dtype=torch.float64).sigma.tolist()
    [0.1, 0.25, 0.5]
    """
    if task not in TASKS:
        raise InvalidInputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    channels = _channels(channels)
    if task in ("denoise", "deblur") and channels != 3:
        raise InvalidInputError(
            f"{task} is defined per RGB channel (section 4) and needs channels=3, got "
            f"{channels}; convert the images to RGB."
        )
    if sigma is not None:
        values = [sigma] if isinstance(sigma, (int, float)) else list(sigma)
        if len(values) not in (1, channels) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values
        ):
            raise InvalidInputError(
                f"sigma {sigma!r}: give one noise level >= 0, or one per channel ({channels})."
            )
        sigma = [float(v) for v in values] * (channels if len(values) == 1 else 1)
    if task == "denoise":
        return DenoisingModel(sigma or DENOISE_SIGMA, size, device=device, dtype=dtype)
    if task == "inpaint":
        noise = {} if sigma is None else {"sigma": sigma}
        return InpaintingModel(channels, size, seed=seed, device=device, dtype=dtype, **noise)
    noise = {} if sigma is None else {"sigma": sigma}
    return DeblurringModel(size, device=device, dtype=dtype, **noise)


def adjointness_test(
    model: ForwardModel, shape: Sequence[int], generator: torch.Generator
) -> float:
    r"""Relative gap of the dot-product test for x, y ~ N(0, Id) drawn with ``generator``.

    .. math:: \frac{|⟨Ax, y⟩ − ⟨x, A^\top y⟩|}{\max(‖Ax‖‖y‖,\ ‖x‖‖A^\top y‖)}

    0 up to rounding when ``A_adjoint`` is the adjoint of ``A``. x has ``shape`` (B, C, H, W)
    and the dtype and device of ``model.sigma``; the generator must live on that device.
    """
    device, dtype = model.sigma.device, model.sigma.dtype
    _check_generator(generator, device, "the model")
    x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    y_shape = model.A(x).shape
    y = torch.randn(y_shape, generator=generator, device=device, dtype=dtype)
    return dot_product_gap(model.A, model.A_adjoint, x, y)


def power_norm_sq(
    model: ForwardModel,
    shape: Sequence[int],
    generator: torch.Generator,
    iterations: int = 100,
) -> float:
    r"""Power-iteration estimate of ‖A‖₂² = ‖AᵀA‖₂ from x₀ ~ N(0, Id) drawn with ``generator``.

    .. math:: x_{k+1} = \frac{A^\top A x_k}{‖A^\top A x_k‖}, \qquad
              \text{estimate} = ‖A^\top A x_k‖ \ (‖x_k‖ = 1)

    :func:`retune_suite.operators.jacobians.power_iteration` on AᵀA: approaches ‖A‖₂² from below.
    x has ``shape`` (B, C, H, W) and the dtype and device of ``model.sigma``.
    """
    if iterations < 1:
        raise InvalidInputError(f"iterations must be ≥ 1, got {iterations}.")
    device, dtype = model.sigma.device, model.sigma.dtype
    _check_generator(generator, device, "the model")
    x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return power_iteration(lambda v: model.A_adjoint(model.A(v)), x, iterations=iterations)


def _check_generator(generator: torch.Generator, device: torch.device, name: str) -> None:
    if not isinstance(generator, torch.Generator):
        raise InvalidInputError(
            f"generator must be a torch.Generator, got {type(generator).__name__}."
        )
    if not _same_device(generator.device, device):
        raise InvalidInputError(
            f"the generator is on {generator.device} but {name} is on {device}: noise is drawn "
            f"on {name}'s device, so pass torch.Generator(device={str(device)!r})"
            ".manual_seed(seed)."
        )


def _same_device(a: torch.device | str, b: torch.device | str) -> bool:
    return _canonical(a) == _canonical(b)


def _canonical(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _device_dtype(
    device: torch.device | str, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in _DTYPES:
        raise InvalidInputError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    return _canonical(device), dtype


def _size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise InvalidInputError(f"size must be (H, W) with positive integers, got {size}.")
    return int(size[0]), int(size[1])


def _channels(channels: int) -> int:
    if not isinstance(channels, int) or channels < 1:
        raise InvalidInputError(f"channels must be a positive integer, got {channels}.")
    return channels


__all__ = [
    "DEBLUR_SIGMA",
    "DEBLUR_WIDTH",
    "DENOISE_SIGMA",
    "INPAINT_MISSING",
    "INPAINT_SIGMA",
    "TASKS",
    "CircularBlur",
    "DeblurringModel",
    "DenoisingModel",
    "ForwardModel",
    "Identity",
    "InpaintingModel",
    "LinearOperator",
    "Mask",
    "adjointness_test",
    "anisotropic_blur_kernels",
    "make_forward_model",
    "power_norm_sq",
]
