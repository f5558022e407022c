r"""Hypergradients of a loss at the fixed point of Φ_K: the six estimators of the paper and
:func:`estimate`, which runs one of them with its evidence.

==============  ================================================  =======================
function        what it returns                                   module
==============  ================================================  =======================
deq_exact       DEQ gradient, dense Jacobian and direct solve     :mod:`.estimators`, (20)
deq_solve       DEQ gradient, matrix-free adjoint solve           :mod:`.estimators`, (20)
deq_neumann     Neumann-truncated DEQ gradient                    :mod:`.estimators`, (22)
jfb             Jacobian-free gradient at x̂                       :mod:`.estimators`, (28)
retune          ReTune, Algorithm 1                               :mod:`.estimators`, (25)
unrolled        AD through all K·T steps                          :mod:`.estimators`, (23)
estimate        one of the above, with a certificate and stats    :mod:`.certificate`
==============  ================================================  =======================

The estimators know nothing of certificates; :mod:`.certificate` builds on them. This package
only gathers both under one name (``hypergrad.retune``, ``hypergrad.estimate``), so neither
module imports the other's user.
"""

from .certificate import Estimate, EstimateStats, estimate
from .estimators import (
    DENSE_LIMIT,
    Linearisation,
    Readout,
    default_solve_tol,
    deq_exact,
    deq_neumann,
    deq_solve,
    jfb,
    linearise,
    loss_gradient,
    retune,
    retune_last_block,
    unrolled,
)

__all__ = [
    "DENSE_LIMIT",
    "Estimate",
    "EstimateStats",
    "Linearisation",
    "Readout",
    "default_solve_tol",
    "deq_exact",
    "deq_neumann",
    "deq_solve",
    "estimate",
    "jfb",
    "linearise",
    "loss_gradient",
    "retune",
    "retune_last_block",
    "unrolled",
]
