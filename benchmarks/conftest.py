"""pytest-benchmark sets (``bench_*.py``): intra-op threads pinned to ``RETUNE_BENCH_THREADS``
(default 2) for every benchmark, restored afterwards."""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import BENCH_THREADS


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(BENCH_THREADS)
    yield
    torch.set_num_threads(previous)
