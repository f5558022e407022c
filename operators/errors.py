"""Errors raised by retune-suite, each naming the fix."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType


class RetuneError(Exception):
    """Base class of the suite's errors."""


class InvalidInputError(RetuneError, ValueError):
    """Bad argument (K or T < 1, NaN/inf, wrong shapes, theta with no gradient path)."""


class MemoryGuardError(RetuneError, MemoryError):
    """Dense work or an unrolled graph would need more memory than the limit
    (:mod:`~retune_suite.operators.memory`); raised before it starts.

    ``nbytes`` is the (lower) estimate of what it needs, ``limit`` the limit it exceeds,
    ``alternative`` the matrix-free way to the same result; the message names all three.
    """

    def __init__(self, message: str, *, nbytes: int, limit: float, alternative: str):
        self.nbytes, self.limit, self.alternative = nbytes, limit, alternative
        super().__init__(message)


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


class NonConvergenceWarning(UserWarning):
    """A solve that was asked for a best effort (``on_nonconvergence="warn"``) did not converge;
    the message names the samples, why, and their residuals."""


class MissingExtraError(RetuneError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the
    extra of retune-suite that installs it (``pip install 'retune-suite[extra]'``).

    ``module`` is the missing module, ``extra`` the extra, ``feature`` what needed it. The
    command line prints the message on one line and exits with status 2.
    """

    def __init__(self, module: str, extra: str, feature: str, hint: str = ""):
        self.module, self.extra, self.feature = module, extra, feature
        message = f"{feature} needs {module}: pip install 'retune-suite[{extra}]'"
        super().__init__(f"{message} {hint}" if hint else message)
        self.name = module


def require(module: str, extra: str, feature: str, *, hint: str = "") -> ModuleType:
    """``import module`` for ``feature``, or :class:`MissingExtraError` naming ``extra``.

    The one way the suite imports an optional dependency (deepinv, dask, PyWavelets, ptwt,
    torchdeq, ...; pyproject's extras): the core installs and runs without them.

    >>> require("math", "none", "this example").sqrt(4.0)
    2.0
    >>> try:
    ...     require("no_such_module_here", "pnp", "the DRUNet")
    ... except MissingExtraError as error:
    ...     print(error)
    the DRUNet needs no_such_module_here: pip install 'retune-suite[pnp]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or ""
        if missing and missing != module and not missing.startswith(module + "."):
            # the module is there but one of its own dependencies is not
            hint = f"{hint} (import {module} failed: {error})".strip()
        raise MissingExtraError(module, extra, feature, hint) from error


def _history(values: Sequence[float], head: int = 5, tail: int = 5) -> str:
    shown = [f"{v:.3e}" for v in values]
    if len(shown) > head + tail:
        shown = [*shown[:head], f"... ({len(shown) - head - tail} more)", *shown[-tail:]]
    return "[" + ", ".join(shown) + "]"
