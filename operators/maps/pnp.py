r"""Forward-backward plug-and-play with a DRUNet denoiser, eq. (53) (section 4.2).

.. math::

    φ(x, θ) = D_{Λ,σ}\big(x − τ Aᵀ(Ax − y)\big)                          \quad (53)

D_{Λ,σ} is deepinv's DRUNet with weights Λ, called at noise level σ. Two learning
configurations of the paper, positivity through exp as in the paper:

- :func:`fb_pnp_sigma_tau`: θ = (log σ, log τ), a (2,) tensor; Λ fixed (eval, no grad).
- :func:`fb_pnp_weights`: θ = Λ, the denoiser's parameters as a tuple; σ and τ fixed.

Both steps use only the θ they are given (the estimators of :mod:`retune_suite.operators.hypergrad`
differentiate detached copies of θ): the weights step calls the network through
:func:`torch.func.functional_call`, never through the module's own parameters.

``model`` is any forward model with ``A(x)``, ``A_adjoint(y)`` and ``norm_sq()`` = ‖A‖² for x
of shape (B, C, H, W) (see :mod:`retune_suite.operators.maps.physics`).

DRUNet accepts any H, W: shapes that are multiples of 8 and at least 32 run the U-Net
directly; smaller ones, and any shape in training mode, are replication-padded to multiples
of 16; in eval mode shapes of 64 or more that are not multiples of 8 are split into four
overlapping crops. Prefer multiples of 8, at least 32, so that φ is one network evaluation.
deepinv (the extra ``retune-suite[pnp]``) is imported inside :func:`load_drunet`, so
``import retune_suite`` stays light and runs without it; no weights are ever downloaded
(``pretrained=None``; pretrained weights are loaded from a file by :func:`load_drunet`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..errors import InvalidInputError, require
from ..iteration import unroll
from ..jacobians import power_norm_x
from ..theta import Step, Theta, check_count

if TYPE_CHECKING:
    from deepinv.models import DRUNet

__all__ = [
    "DEFAULT_NB",
    "DEFAULT_NC",
    "ForwardModel",
    "fb_pnp_sigma_tau",
    "fb_pnp_weights",
    "load_drunet",
    "local_contraction",
    "sigma_tau_theta",
]

DEFAULT_NC = (64, 128, 256, 512)
DEFAULT_NB = 4


class ForwardModel(Protocol):
    """What the FB-PnP step needs from a forward model
    (:mod:`~retune_suite.operators.maps.physics`)."""

    def A(self, x: torch.Tensor) -> torch.Tensor: ...

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor: ...

    def norm_sq(self) -> float | torch.Tensor: ...


def _noise_map(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """σ as a (B, 1, H, W) map in x's dtype: DRUNet's own float/0-d path uses the default dtype."""
    return sigma.to(x.dtype).reshape(1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])


def _check_pair(model: ForwardModel, y: torch.Tensor, denoiser: torch.nn.Module) -> torch.Tensor:
    """Validate y and the denoiser's dtype/device; return Aᵀy (constant along the iteration)."""
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or not y.is_floating_point():
        raise InvalidInputError("y must be a floating tensor of shape (B, C, H, W).")
    param = next(denoiser.parameters(), None)
    if param is not None and (param.dtype != y.dtype or param.device != y.device):
        raise InvalidInputError(
            f"the denoiser is {param.dtype} on {param.device} but y is {y.dtype} on {y.device}: "
            "build it with load_drunet(..., device=y.device, dtype=y.dtype) or call "
            "denoiser.to(y.device, y.dtype)."
        )
    for name in ("A", "A_adjoint"):
        if not callable(getattr(model, name, None)):
            raise InvalidInputError(
                f"model has no callable {name}: pass a forward model with A, A_adjoint and "
                "norm_sq (retune_suite.operators.maps.physics)."
            )
    return model.A_adjoint(y)


def _positive(value: float | torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value).detach().to(like.device, like.dtype)
    if t.numel() != 1 or not torch.isfinite(t).all() or not (t > 0).all():
        raise InvalidInputError(f"{name} must be one positive finite number, got {value!r}.")
    return t.reshape(())


def sigma_tau_theta(
    sigma: float,
    tau: float,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """θ = (log σ, log τ) as a (2,) tensor, the parameterisation of :func:`fb_pnp_sigma_tau`.

    Examples
    --------
    >>> import torch
    >>> sigma_tau_theta(0.1, 1.0, dtype=torch.float64).exp()
    tensor([0.1000, 1.0000], dtype=torch.float64)
    """
    if not (sigma > 0 and tau > 0):
        raise InvalidInputError(f"σ and τ must be positive, got σ = {sigma}, τ = {tau}.")
    return torch.log(torch.tensor([float(sigma), float(tau)], device=device, dtype=dtype))


def fb_pnp_sigma_tau(model: ForwardModel, y: torch.Tensor, denoiser: torch.nn.Module) -> Step:
    r"""FB-PnP step (53) with θ = (log σ, log τ), the denoiser's weights Λ fixed.

    .. math:: φ(x, θ) = D_{Λ,e^{θ_0}}\big(x − e^{θ_1} Aᵀ(Ax − y)\big)

    θ is a tensor of shape (2,) holding (log σ, log τ) (see :func:`sigma_tau_theta`); the
    gradient an estimator returns has that shape too. The denoiser is put in eval mode and its
    parameters get ``requires_grad = False`` (in place: it is the same module afterwards).
    τ < 2/‖A‖² makes the gradient step nonexpansive, so φ contracts when D does; a learned D
    need not, so measure the local constant with :func:`local_contraction`.
    """
    aty = _check_pair(model, y, denoiser)
    denoiser.eval()
    denoiser.requires_grad_(False)

    def step(x: torch.Tensor, theta: Theta) -> torch.Tensor:
        if not isinstance(theta, torch.Tensor) or theta.shape != (2,):
            raise InvalidInputError(
                "theta must be a (2,) tensor (log σ, log τ): build it with sigma_tau_theta."
            )
        sigma, tau = torch.exp(theta[0]), torch.exp(theta[1])
        z = x - tau * (model.A_adjoint(model.A(x)) - aty)
        return denoiser(z, _noise_map(sigma, z))

    return step


def fb_pnp_weights(
    model: ForwardModel,
    y: torch.Tensor,
    denoiser: torch.nn.Module,
    sigma: float | torch.Tensor,
    tau: float | torch.Tensor,
) -> tuple[Step, tuple[torch.Tensor, ...]]:
    r"""FB-PnP step (53) with θ = Λ, the denoiser's parameters; σ and τ fixed.

    .. math:: φ(x, Λ) = D_{Λ,σ}\big(x − τ Aᵀ(Ax − y)\big)

    Returns ``(step, theta)``: θ is a tuple of detached copies of the denoiser's parameters,
    in ``named_parameters()`` order, and the step evaluates the network with the θ it is given
    through :func:`torch.func.functional_call`, so gradients flow to that θ (the module's own
    parameters only provide the architecture and are never read by the step). The denoiser
    is put in eval mode.
    """
    aty = _check_pair(model, y, denoiser)
    sigma_t = _positive(sigma, "sigma", y)
    tau_t = _positive(tau, "tau", y)
    denoiser.eval()
    names = tuple(name for name, _ in denoiser.named_parameters())
    theta = tuple(p.detach().clone() for _, p in denoiser.named_parameters())
    if not names:
        raise InvalidInputError("the denoiser has no parameters to learn.")

    def step(x: torch.Tensor, theta: Theta) -> torch.Tensor:
        leaves = (theta,) if isinstance(theta, torch.Tensor) else tuple(theta)
        if len(leaves) != len(names):
            raise InvalidInputError(
                f"theta has {len(leaves)} tensors but the denoiser has {len(names)} "
                "parameters: pass the theta returned by fb_pnp_weights (or a same-shaped tuple)."
            )
        z = x - tau_t * (model.A_adjoint(model.A(x)) - aty)
        params = dict(zip(names, leaves, strict=True))
        return torch.func.functional_call(denoiser, params, (z, _noise_map(sigma_t, z)))

    return step, theta


def local_contraction(
    step: Step,
    theta: Theta,
    x: torch.Tensor,
    K: int = 1,
    iterations: int = 100,
    generator: torch.Generator | None = None,
    *,
    rtol: float = 1e-10,
) -> float:
    r"""Measured local Lipschitz constant ‖∂_xΦ_K(x, θ)‖₂ of the unrolled block, eq. (12).

    Matrix-free power iteration (one JVP and one VJP per iteration) by
    :func:`retune_suite.operators.jacobians.power_norm_x`; a lower estimate that increases to the
    norm.
    At a fixed point x̂ it is the measured δ_K: Φ_K is locally contractive when it is below 1.
    ``generator`` seeds the start vector.
    """
    check_count(K, "K")
    check_count(iterations, "iterations")
    return power_norm_x(
        unroll(step, K), x, theta, iterations=iterations, rtol=rtol, generator=generator
    )


def _unwrap_state(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A plain state dict, or a checkpoint with "state_dict"/"model" (and "architecture")."""
    architecture: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                arch = obj.get("architecture")
                architecture = dict(arch) if isinstance(arch, Mapping) else {}
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidInputError(
            f"{path} holds no DRUNet state dict: expected a dict of tensors, or a checkpoint "
            'dict with a "state_dict" or "model" entry (torch.save(denoiser.state_dict(), path)).'
        )
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, architecture


def _infer_architecture(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """(channels, nc, nb) of a DRUNet state dict, or None if it is not one."""
    try:
        channels = state["m_tail.weight"].shape[0]
        blocks = {
            int(k.split(".")[1]) for k in state if k.startswith("m_down1.") and k.count(".") > 1
        }
        nb = max(blocks) if blocks else 0
        down = (lambda j: f"m_down{j}.{nb}.weight") if blocks else (lambda j: f"m_down{j}.weight")
        nc = (state["m_head.weight"].shape[0], *(state[down(j)].shape[0] for j in (1, 2, 3)))
    except (KeyError, ValueError, IndexError):
        return None
    return {"channels": int(channels), "nc": tuple(int(c) for c in nc), "nb": int(nb)}


def _raise_mismatch(
    path: Path | None, requested: dict[str, Any], found: dict[str, Any] | None, detail: str
) -> None:
    asked = ", ".join(f"{k}={v}" for k, v in requested.items())
    if found is None:
        hint = "the file does not look like a deepinv DRUNet state dict"
    else:
        held = ", ".join(f"{k}={v}" for k, v in found.items())
        hint = f"the file holds a DRUNet with {held}: call load_drunet(path, {held})"
    raise InvalidInputError(f"{path} does not fit DRUNet({asked}): {detail}; {hint}.")


def load_drunet(
    path: str | Path | None = None,
    *,
    channels: int | None = None,
    nc: Sequence[int] | None = None,
    nb: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DRUNet:
    """deepinv's DRUNet built without any download (``pretrained=None``), weights from ``path``.

    Parameters
    ----------
    path
        A DRUNet state-dict file (deepinv's ``drunet_*.pth``, or ``torch.save`` of a state
        dict), or a checkpoint dict with a ``"state_dict"`` or ``"model"`` entry, such as the one
        :func:`retune_suite.experiments.reproduce.denoiser.train_denoiser` writes. None: random
        initialisation
        (deepinv's, from the global torch RNG).
    channels, nc, nb
        Image channels, channels per scale and residual blocks per scale. Unset: the
        checkpoint's ``"architecture"`` entry if it has one, else the architecture its tensor
        shapes show, else 3, (64, 128, 256, 512), 4 (deepinv's pretrained architecture).
    device, dtype
        Where and in which dtype the network lives (default: CPU, default dtype).

    Notes
    -----
    Returns the network in eval mode. Raises :class:`FileNotFoundError` if ``path`` does not
    exist, :class:`~retune_suite.operators.errors.InvalidInputError` if its tensors do not fit
    the architecture (the message names the architecture the file holds) and
    :class:`~retune_suite.operators.errors.MissingExtraError` without deepinv (the extra
    ``retune-suite[pnp]``).
    """
    require("deepinv", "pnp", "the DRUNet denoiser (FB-PnP)")
    from deepinv.models import DRUNet

    state: dict[str, torch.Tensor] | None = None
    saved: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no DRUNet weights at {path}: weights cannot be downloaded here. Copy a deepinv "
                "DRUNet file (e.g. drunet_deepinv_color_finetune_22k.pth) there, train one with "
                "experiments.reproduce.denoiser.train_denoiser, or call load_drunet() without a "
                "path for random weights."
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise InvalidInputError(
                f"cannot read {path} as a torch file of tensors ({error}); save it with "
                "torch.save(denoiser.state_dict(), path)."
            ) from error
        state, saved = _unwrap_state(obj, path)
        if not saved:  # a plain state dict: its tensor shapes tell the architecture
            saved = _infer_architecture(state) or {}
    channels = int(channels if channels is not None else saved.get("channels", 3))
    nc = tuple(int(c) for c in (nc if nc is not None else saved.get("nc", DEFAULT_NC)))
    nb = int(nb if nb is not None else saved.get("nb", DEFAULT_NB))
    if len(nc) != 4 or min(nc) < 1 or nb < 1 or channels < 1:
        raise InvalidInputError(
            f"DRUNet needs 4 positive channel counts nc, nb >= 1 and channels >= 1; got "
            f"nc={nc}, nb={nb}, channels={channels}."
        )
    requested = {"channels": channels, "nc": nc, "nb": nb}
    found = None if state is None else _infer_architecture(state)
    if found is not None and found != requested:  # fail before building a large network
        _raise_mismatch(path, requested, found, "the architecture differs")
    net = DRUNet(
        in_channels=channels, out_channels=channels, nc=nc, nb=nb, pretrained=None, device=None
    )
    if state is not None:
        expected = net.state_dict()
        mismatched = sorted(set(expected) ^ set(state)) + [
            k for k in expected if k in state and expected[k].shape != state[k].shape
        ]
        if mismatched:
            _raise_mismatch(
                path,
                requested,
                found,
                f"{len(mismatched)} keys missing, unexpected or of another shape (first: "
                f"{mismatched[0]})",
            )
        net.load_state_dict(state, strict=True)
    return net.to(device=device, dtype=dtype).eval()
