r"""Fused blocks: a step's own implementation of Φ_K (9), used by the loops when present.

A step φ(x, θ) is a plain callable. It may also offer its K-step block in one piece — a
kernel that runs K steps per pass over memory and their vector-Jacobian product, as the
built-in wavelet denoising map does (:mod:`retune_suite.operators.maps.fused`). It does so by
an attribute ``fused_blocks`` holding an object with this interface (:class:`FusedBlocks`):

``step``
    the step it implements (the loops use it only when ``fused.step == step``);
``block(x, theta, K) -> (x_K, res_sq) | None``
    x_K = Φ_K(x, θ) with no graph, and the squared block residual Σ (x_K − x)² per sample
    along axis 0 (shape (x.shape[0],)); None when this call is not fused (another device,
    dtype or shape): the loop then runs the step K times;
``blocks(x, theta, K, T) -> (x_KT, x_K(T−1), res_sq) | None`` (optional)
    T blocks at once, with no graph: ``res_sq`` of shape (T, x.shape[0]) holds each block's
    squared residual per sample, and x_K(T−1) is x itself when T = 1; a kernel that keeps each
    group in registers for all K·T steps saves T − 1 passes over memory. None when not fused.
    :func:`~.iteration.restart` uses it when present (and runs ``block`` T times otherwise);
``last_block(x, theta, K) -> x_K | None``
    Φ_K(x, θ) carrying a first-order autograd graph to θ (and to x when x requires grad)
    whose backward is the block's own VJP; None when not fused, or when the graph must be
    traced by a torch.func transform or forward-mode AD (the loop then records the steps).

The attribute is looked up on the step itself, then, for a bound method, on its object
(``step.__self__``). :func:`~.iteration.restart`, :func:`~.iteration.fixed_point` (every
solver: they all evaluate Φ_K by blocks), :func:`~.hypergrad.retune_last_block` (so
:func:`~.hypergrad.retune` and ``estimate("retune")``) and :func:`~.equilibrium.equilibrium`
(``backward="retune"``) use them; everything else records φ step by step. Autograd through φ
stays the fallback and the test oracle: a fused block must return the iterates of K calls of
the step (bit for bit where the platform allows) and the gradients of autograd through them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from .theta import Step, Theta

__all__ = ["FusedBlocks", "find_fused", "many_blocks"]


@runtime_checkable
class FusedBlocks(Protocol):
    """What a step offers through its ``fused_blocks`` attribute (module docstring)."""

    step: Step

    def block(
        self, x: torch.Tensor, theta: Theta, K: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def last_block(self, x: torch.Tensor, theta: Theta, K: int) -> torch.Tensor | None: ...


def find_fused(step: Step) -> FusedBlocks | None:
    """The fused blocks ``step`` offers (on itself, or on the object of a bound method), or
    None."""
    fused = getattr(step, "fused_blocks", None)
    if fused is None:
        owner = getattr(step, "__self__", None)
        fused = None if owner is None else getattr(owner, "fused_blocks", None)
    if fused is None or getattr(fused, "step", None) != step:
        return None
    return fused


def many_blocks(fused: FusedBlocks | None) -> Callable[..., tuple | None] | None:
    """The optional ``blocks(x, theta, K, T)`` of ``fused`` (module docstring), or None."""
    many = getattr(fused, "blocks", None) if fused is not None else None
    return many if callable(many) else None
