"""pytest-benchmark: the hypergradient estimators side by side at fixed sizes.

Wavelet denoising (eq. 51, θ_BC) on crops of the embedded images, float32 on the CPU with 2
intra-op threads (``RETUNE_BENCH_THREADS`` overrides), K = T = 10 (so every estimator but
the DEQ ones runs 100 forward steps), batch 4 × 3 × ``RETUNE_BENCH_SIZE`` (default 128); the
DEQ and JFB estimators start from the fixed point, computed once outside the timer, as their
formulas assume. Medians of 10 rounds after 2 warm-up rounds. Not part of the default test
run; run and save the JSON with::

    python -m pytest benchmarks/bench_estimators.py --benchmark-only \\
        --benchmark-json=runs/bench-estimators.json --benchmark-columns=min,median,iqr,rounds

Each benchmark also stores the estimator's relative error to the float32 DEQ reference in
``extra_info``, so the JSON holds cost and accuracy together.
"""

from __future__ import annotations

import os

import pytest
import torch
from retune_suite.operators import fixed_point, hypergrad

from benchmarks.common import wavelet_problem

SIZE = int(os.environ.get("RETUNE_BENCH_SIZE", "128"))
K, T = 10, 10
ROUNDS, WARMUP = 10, 2


@pytest.fixture(scope="module")
def problem():
    p = wavelet_problem("denoise", SIZE, 4, "float32", torch.device("cpu"))
    step, theta, u0, loss = p.step, p.theta, p.x0, p.loss
    u_star = fixed_point(step, theta, u0, 1, rtol=1e-6, method="anderson").x
    reference = hypergrad.deq_solve(step, theta, u_star, loss, 1, tol=1e-6)
    return step, theta, u0, u_star, loss, torch.cat([g.reshape(-1) for g in reference])


ESTIMATORS = {
    "retune": lambda s, th, u0, us, L: hypergrad.retune(s, th, u0, L, K, T),
    "unrolled": lambda s, th, u0, us, L: hypergrad.unrolled(s, th, u0, L, K, T),
    "jfb": lambda s, th, u0, us, L: hypergrad.jfb(s, th, us, L, K),
    "neumann_P5": lambda s, th, u0, us, L: hypergrad.deq_neumann(s, th, us, L, K, 5),
    "deq_solve": lambda s, th, u0, us, L: hypergrad.deq_solve(s, th, us, L, 1, tol=1e-5),
}


@pytest.mark.benchmark(group="hypergradient")
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimator(benchmark, problem, name):
    step, theta, u0, u_star, loss, reference = problem
    call = ESTIMATORS[name]
    grad = benchmark.pedantic(
        call, (step, theta, u0, u_star, loss), rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1
    )
    flat = torch.cat([g.reshape(-1) for g in grad])
    error = ((flat - reference).norm() / reference.norm()).item()
    benchmark.extra_info.update(relative_error=error, size=SIZE, K=K, T=T)
    assert torch.isfinite(flat).all()
