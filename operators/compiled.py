r"""Opt-in ``torch.compile`` for the elementwise kernels of the wavelet FB step (51).

The denoising step φ(u, θ) = prox_{τ‖·‖₁,₂}(u ⊙ (1 − τ/θ²) + (τ/θ) ⊙ Dy) (eqs. (50)–(51)) is
memory-bound: eager PyTorch runs it as ~24 small kernels
(retune_suite.operators.maps.wavelet_prior), inductor
fuses it into a few loops. Compiling costs time once per process and shape — measured on the
2-core CPU (``python -m benchmarks.step_before_after --compile``, docs/performance.md): tens
of seconds cold, a few seconds with inductor's on-disk caches warm — so it pays only in long
runs (training), never in tests or short CLI runs, and is **off unless asked for**:

- ``WaveletFB(..., compile=True)`` (inductor) or ``compile="aot_eager"`` (any
  ``torch.compile`` backend name); ``compile=False`` forces it off;
- with ``compile=None`` (the default) the environment variable ``RETUNE_COMPILE`` decides:
  unset, ``0``, ``false``, ``off`` → off; ``1``, ``true``, ``on`` → inductor; any other value is
  taken as a backend name.

Inductor keeps its compiled artifacts (the FX graph cache and the generated C++/Triton
code) under ``TORCHINDUCTOR_CACHE_DIR`` (default ``/tmp/torchinductor_$USER``); point it at a
persistent folder to keep them across machines' reboots. The compiled function is the same
graph as the eager one (same operations, AOTAutograd's backward), so gradients equal the
eager step's to rounding (tests/test_wavelet_prior.py); shapes are static
(``dynamic=False``): a new batch shape recompiles.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch

from .errors import InvalidInputError

__all__ = ["ENV", "compile_backend", "compile_function"]

ENV = "RETUNE_COMPILE"
_OFF = ("", "0", "false", "off", "no")
_ON = ("1", "true", "on", "yes")

F = TypeVar("F", bound=Callable)


def compile_backend(flag: bool | str | None) -> str | None:
    """The ``torch.compile`` backend asked for by ``flag`` (None: by ``$RETUNE_COMPILE``), or
    None for eager."""
    if flag is None:
        flag = os.environ.get(ENV, "").strip().lower()
        if flag in _OFF:
            return None
    if flag is False:
        return None
    if flag is True or (isinstance(flag, str) and flag.lower() in _ON):
        return "inductor"
    if isinstance(flag, str) and flag:
        if flag not in torch._dynamo.list_backends(exclude_tags=()):
            raise InvalidInputError(
                f"compile={flag!r} is not a torch.compile backend: use True (inductor), "
                f"False, or one of {sorted(torch._dynamo.list_backends())} "
                f"(also via ${ENV})."
            )
        return flag
    raise InvalidInputError(
        f"compile={flag!r}: use True, False, None (then ${ENV} decides) or a backend name."
    )


def compile_function(fn: F, backend: str) -> F:
    """``torch.compile(fn)`` with static shapes on ``backend``."""
    return torch.compile(fn, backend=backend, dynamic=False)  # type: ignore[return-value]
