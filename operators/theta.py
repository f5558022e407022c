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
    if isinstance(theta, torch.Tensor):
        leaves: tuple = (theta,)
    elif isinstance(theta, tuple | list):
        leaves = tuple(theta)
    else:
        raise InvalidInputError(
            f"theta is a {type(theta).__name__}, not a tensor or a tuple of tensors: pass "
            "torch.tensor(value, dtype=torch.float64) (or a tuple of such tensors)."
        )
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
    """x must be a finite floating tensor on the device and in the dtype of θ.

    Nothing is moved or cast silently: a float32 x with a float64 θ would make every step
    promote (or the fixed point stop at float32 precision), so it is refused.
    """
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
        if leaf.dtype != x.dtype:
            raise InvalidInputError(
                f"{name} has dtype {x.dtype} but theta[{i}] has dtype {leaf.dtype}: cast both "
                f"to one dtype yourself, e.g. {name}.to(theta[{i}].dtype) (float64 for exact "
                "checks); the suite never casts silently."
            )
    check_finite(x, name)
    return x


def check_step_output(y: object, x: torch.Tensor) -> torch.Tensor:
    """A step must map x to a tensor of x's shape, dtype and device (eq. (7): φ: ℝⁿ → ℝⁿ)."""
    if not isinstance(y, torch.Tensor):
        raise InvalidInputError(
            f"step(x, theta) returned a {type(y).__name__}: it must return a tensor like x."
        )
    if y.shape != x.shape or y.dtype != x.dtype or y.device != x.device:
        raise InvalidInputError(
            f"step(x, theta) returned shape {tuple(y.shape)}, {y.dtype} on {y.device} for x of "
            f"shape {tuple(x.shape)}, {x.dtype} on {x.device}: a step must map x to a tensor of "
            "the same shape, dtype and device (check how theta broadcasts against x, e.g. a "
            "theta of shape (n, 1) against x of shape (n,), and that theta has x's dtype)."
        )
    return y


def first_step(step: Step, x: torch.Tensor, theta: Theta) -> torch.Tensor:
    """φ(x, θ) for the first step of a block, turning a shape error of the step into a named one.

    torch raises a bare ``RuntimeError`` when θ and x do not broadcast; the first call names
    the shapes instead. Out-of-memory errors pass through unchanged.
    """
    try:
        y = step(x, theta)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        if "same device" in str(error):
            raise InvalidInputError(
                f"step(x, theta) failed: {error}. x0 and theta are on {x.device}; put every "
                "tensor the step closes over on that device too (e.g. build the problem with "
                "device=...)."
            ) from error
        shapes = [tuple(t.shape) for t in as_tuple(theta)]
        raise InvalidInputError(
            f"step(x, theta) failed for x of shape {tuple(x.shape)} and theta of shape(s) "
            f"{shapes}: {error}. Give x0 the shape the step expects (and theta shapes that "
            "broadcast with it)."
        ) from error
    return check_step_output(y, x)
