"""float64 by default; hypothesis profiles ``ci`` (default, derandomized) and ``thorough``.

Choose with ``RETUNE_HYPOTHESIS_PROFILE=thorough pytest``.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("RETUNE_HYPOTHESIS_PROFILE", "ci"))

# Tolerances per dtype for comparisons of two computations of one quantity (not for bounds).
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.fixture(autouse=True)
def _float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
