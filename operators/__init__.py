"""How a map is iterated and differentiated, apart from what is iterated.

Unrolled blocks Φ_K and restarts Φ_K^T (:mod:`.iteration`), fixed points (Picard, Anderson),
Jacobians (:mod:`.jacobians`), linear solves (:mod:`.linsolve`), the hypergradient estimators
and their certificates (:mod:`.hypergrad`) and the training layer (:mod:`.equilibrium`:
``equilibrium`` and its ``nn.Module`` form ``DEQ``). The
maps themselves (small exact problems, wavelet forward-backward, FB-PnP, fields of experts)
are in :mod:`retune_suite.operators.maps`, which uses this package and is never used by it.

The paper is "Restarted contractive operators to learn at equilibrium" (Davy, Briceño-Arias,
Pustelnik, 2025); equation numbers in docstrings refer to it.
"""

from . import hypergrad, jacobians, memory
from .equilibrium import DEQ, equilibrium
from .errors import (
    ConvergenceError,
    InvalidInputError,
    MemoryGuardError,
    NotContractiveError,
    RetuneError,
)
from .iteration import FixedPoint, IterationStats, Restart, fixed_point, restart, unroll

__all__ = [
    "DEQ",
    "ConvergenceError",
    "FixedPoint",
    "InvalidInputError",
    "IterationStats",
    "MemoryGuardError",
    "NotContractiveError",
    "Restart",
    "RetuneError",
    "equilibrium",
    "fixed_point",
    "hypergrad",
    "jacobians",
    "memory",
    "restart",
    "unroll",
]
