r"""Test helpers for your own maps: the paper's bounds as assertions, and valid instances.

The suite checks the paper's statements (Theorem 1, Lemma 1, Theorem 2 (corrected),
Corollary 1) on its own problems; this module lets a test suite check them on *your* map
φ(x, θ), and compare your hypergradients with the suite's:

- :func:`assert_bounds_hold`: runs :func:`retune_suite.bounds.verify` and fails with, per
  failing statement, what it says, the observed error and the bound; a statement without a
  verdict (a constant only estimated) fails too unless ``allow_unverified=True``;
- :func:`assert_hypergrad_close`: two hypergradients (tensors or tuples) agree, or a diff
  per tensor (largest absolute and relative differences, where, and the norms);
- :class:`Instance` and its builders (:func:`affine`, :func:`spectral_affine`,
  :func:`tuple_affine`, :func:`from_problem`): contractive maps with the exact Lipschitz
  constant ω of φ, δ_K = ω^K;
- :mod:`retune_suite.testing.strategies`: hypothesis strategies that draw those instances
  (needs the ``testing`` extra, ``pip install "retune-suite[testing]"``; the rest of this
  module does not).

See ``docs/testing.md`` for a complete test file.

Examples
--------
>>> from retune_suite import testing
>>> inst = testing.affine([0.5], [0.0], [-1.0], [1.0], K=1, T=3)
>>> report = testing.assert_bounds_hold(inst.step, inst.theta, inst.x0, inst.loss,
...                                     K=inst.K, T=inst.T, delta=inst.delta())
>>> sorted(k for k, v in report.holds.items() if v is False)  # F1: Theorem 2 as printed
['corollary1', 'theorem2']
"""

from .assertions import (
    CONFIRMED_STATEMENTS,
    STATEMENTS,
    Statement,
    assert_bounds_hold,
    assert_hypergrad_close,
)
from .instances import Instance, affine, from_problem, spectral_affine, tuple_affine

__all__ = [
    "CONFIRMED_STATEMENTS",
    "STATEMENTS",
    "Instance",
    "Statement",
    "affine",
    "assert_bounds_hold",
    "assert_hypergrad_close",
    "from_problem",
    "spectral_affine",
    "tuple_affine",
]
