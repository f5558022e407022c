"""Errors raised by retune-suite, each naming the fix."""

from __future__ import annotations

from collections.abc import Sequence


class RetuneError(Exception):
    """Base class of the suite's errors."""


class InvalidInputError(RetuneError, ValueError):
    """Bad argument (K or T < 1, NaN/inf, wrong shapes, theta with no gradient path)."""


class NotContractiveError(RetuneError, RuntimeError):
    """The fixed-point iteration of Φ_K diverged or stalled (Assumption 1 fails).

    ``residuals`` holds the history ‖Φ_K(x_t) − x_t‖₂ that shows it.
    """

    def __init__(self, message: str, residuals: Sequence[float] = ()):
        self.residuals = list(residuals)
        super().__init__(f"{message}\n  residual history: {_history(self.residuals)}")


class ConvergenceError(RetuneError, RuntimeError):
    """A linear (adjoint) solve did not reach its tolerance; never a silent zero gradient."""

    def __init__(self, message: str, residuals: Sequence[float] = ()):
        self.residuals = list(residuals)
        super().__init__(f"{message}\n  relative residual history: {_history(self.residuals)}")


def _history(values: Sequence[float], head: int = 5, tail: int = 5) -> str:
    shown = [f"{v:.3e}" for v in values]
    if len(shown) > head + tail:
        shown = [*shown[:head], f"... ({len(shown) - head - tail} more)", *shown[-tail:]]
    return "[" + ", ".join(shown) + "]"
