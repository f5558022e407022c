"""θ as a tensor or a tuple of tensors: validation and structure-preserving helpers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import InvalidInputError

Theta = torch.Tensor | tuple[torch.Tensor, ...]
Step = Callable[[torch.Tensor, Theta], torch.Tensor]
Loss = Callable[[torch.Tensor], torch.Tensor]


def as_tuple(theta: Theta) -> tuple[torch.Tensor, ...]:
    """Flatten θ to a tuple of tensors, checking every leaf."""
    leaves = (theta,) if isinstance(theta, torch.Tensor) else tuple(theta)
    if not leaves:
        raise InvalidInputError("theta is empty: pass a tensor or a non-empty tuple of tensors.")
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise InvalidInputError(
                f"theta[{i}] is a {type(leaf).__name__}, not a tensor: "
                "wrap it with torch.as_tensor."
            )
        if not leaf.is_floating_point():
            raise InvalidInputError(f"theta[{i}] has dtype {leaf.dtype}: use a floating dtype.")
        check_finite(leaf, f"theta[{i}]")
    return leaves


def like(theta: Theta, leaves: tuple[torch.Tensor, ...]) -> Theta:
    """Give ``leaves`` the structure of ``theta`` (a tensor or a tuple)."""
    return leaves[0] if isinstance(theta, torch.Tensor) else tuple(leaves)


def fresh_leaves(theta: Theta) -> tuple[torch.Tensor, ...]:
    """Detached copies of θ that require grad, so no graph ever reaches the caller's tensors."""
    return tuple(t.detach().requires_grad_(True) for t in as_tuple(theta))


def flat(leaves: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Concatenate tensors into one vector (the ℝ^d of the paper)."""
    return torch.cat([t.reshape(-1) for t in leaves])


def unflat(vector: torch.Tensor, like_leaves: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Split a vector back into tensors shaped like ``like_leaves``."""
    out, start = [], 0
    for t in like_leaves:
        out.append(vector[start : start + t.numel()].reshape(t.shape))
        start += t.numel()
    return tuple(out)


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or inf."""
    if not torch.isfinite(x).all():
        raise InvalidInputError(
            f"{name} contains NaN or inf: check the data, and the step size (a step above 2/L "
            "makes forward-backward diverge)."
        )


def check_count(value: int, name: str) -> int:
    """K, T, P: a positive (or, for P, non-negative) integer."""
    minimum = 0 if name == "P" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def check_point(x: torch.Tensor, name: str, theta: Theta) -> torch.Tensor:
    """x must be a finite floating tensor on the device of θ (never moved silently)."""
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} has dtype {x.dtype}: use a floating dtype.")
    for i, leaf in enumerate(as_tuple(theta)):
        if leaf.device != x.device:
            raise InvalidInputError(
                f"{name} is on {x.device} but theta[{i}] is on {leaf.device}: move both to one "
                "device yourself (the suite never moves tensors silently)."
            )
    check_finite(x, name)
    return x
