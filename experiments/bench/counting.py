"""Vector-Jacobian products through a step, counted by a tensor hook on its output."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["VJPCounter"]


class VJPCounter:
    """Counts backward passes through a step's output: one per vector-Jacobian product."""

    def __init__(self) -> None:
        self.count = 0

    def _hook(self, grad: torch.Tensor) -> None:
        self.count += 1

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``fn`` with a hook on each output that carries a graph."""

        def counted(*args, **kwargs) -> torch.Tensor:
            out = fn(*args, **kwargs)
            if out.requires_grad:
                out.register_hook(self._hook)
            return out

        return counted
