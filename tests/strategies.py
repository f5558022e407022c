"""The suite's hypothesis strategies: they live in :mod:`retune_suite.testing` (public, one
helper in one place), imported here under the names the tests use."""

from __future__ import annotations

from retune_suite.testing.instances import Instance, affine
from retune_suite.testing.strategies import (
    affine_instances,
    coordinate,
    exact_instances,
    instances,
    problem_instances,
)

__all__ = [
    "Instance",
    "affine",
    "affine_instances",
    "coordinate",
    "exact_instances",
    "instances",
    "problem_instances",
]
