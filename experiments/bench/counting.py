"""Vector-Jacobian products through a step, counted by a tensor hook on its output."""

from __future__ import annotations

from collections.abc import Callable

import torch
from retune_suite.operators.fused_blocks import FusedBlocks, find_fused, many_blocks

__all__ = ["VJPCounter"]


class VJPCounter:
    """Counts backward passes through a step's output: one per vector-Jacobian product (K for
    a fused last block of K steps, :mod:`retune_suite.operators.fused_blocks`)."""

    def __init__(self) -> None:
        self.count = 0

    def _hook(self, grad: torch.Tensor) -> None:
        self.count += 1

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``fn`` with a hook on each output that carries a graph; its fused blocks, if it
        offers them, pass through (counted the same way)."""

        def counted(*args, **kwargs) -> torch.Tensor:
            out = fn(*args, **kwargs)
            if out.requires_grad:
                out.register_hook(self._hook)
            return out

        fused = find_fused(fn)
        if fused is not None:
            counted.fused_blocks = _CountedBlocks(fused, counted, self)  # type: ignore[attr-defined]
        return counted


class _CountedBlocks:
    """The fused blocks of a counted step: a last block of K steps counts K products."""

    def __init__(self, fused: FusedBlocks, step: Callable, counter: VJPCounter):
        self.fused, self.step, self.counter = fused, step, counter
        many = many_blocks(fused)
        if many is not None:  # T blocks in one call (no graph: nothing to count)
            self.blocks = many

    def block(self, x, theta, K):
        return self.fused.block(x, theta, K)

    def last_block(self, x, theta, K):
        out = self.fused.last_block(x, theta, K)
        if out is not None and out.requires_grad:

            def hook(grad: torch.Tensor) -> None:
                self.counter.count += K

            out.register_hook(hook)
        return out
