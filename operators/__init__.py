"""Contractive maps φ(x, θ), their unrolled blocks Φ_K and restarts Φ_K^T, and hypergradients.

The paper is "Restarted contractive operators to learn at equilibrium" (Davy, Briceño-Arias,
Pustelnik, 2025); equation numbers in docstrings refer to it.
"""

from . import foe, hypergrad, jacobians, problems, prox
from .equilibrium import equilibrium
from .errors import ConvergenceError, InvalidInputError, NotContractiveError, RetuneError
from .iteration import FixedPoint, IterationStats, Restart, fixed_point, restart, unroll

__all__ = [
    "ConvergenceError",
    "FixedPoint",
    "InvalidInputError",
    "IterationStats",
    "NotContractiveError",
    "Restart",
    "RetuneError",
    "equilibrium",
    "fixed_point",
    "foe",
    "hypergrad",
    "jacobians",
    "problems",
    "prox",
    "restart",
    "unroll",
]
