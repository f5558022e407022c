"""CI smoke run of the asv suites (benchmarks/): each suite's ``setup`` and every benchmark
method once, on the smallest CPU parameters, with the ``track_`` figures checked for sense.

This is what ``asv run --quick`` would do for these combinations, in seconds and without asv's
environments, so that a suite broken by a change in operators/ fails the default test run.
CUDA combinations raise ``NotImplementedError`` in ``setup`` without a GPU (asv's skip), and
that is checked too. Timings are not asserted: speed lives in asv, not in unit tests.
"""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch

from benchmarks import hypergradient, restart
from benchmarks.common import device_or_skip

METHOD_PREFIXES = ("time_", "peakmem_", "track_")


def _smallest_cpu(suite: type) -> list[tuple]:
    """Parameter combinations with the smallest size, on the CPU."""
    names = suite.param_names
    choices = []
    for name, values in zip(names, suite.params, strict=True):
        if name == "size":
            values = [min(values)]
        elif name == "device":
            values = ["cpu"]
        choices.append(values)
    return list(itertools.product(*choices))


def _run_suite(suite: type, combo: tuple) -> dict[str, object]:
    bench = suite()
    try:
        bench.setup(*combo)
    except NotImplementedError:
        return {}
    out = {}
    for name, method in inspect.getmembers(bench, inspect.ismethod):
        if name.startswith(METHOD_PREFIXES):
            out[name] = method(*combo)
    return out


@pytest.mark.parametrize(
    "combo",
    [c for c in _smallest_cpu(restart.RestartLoop) if c[-1] == 2],
    ids=lambda c: "-".join(map(str, c)),
)
def test_restart_suite_runs(combo):
    figures = _run_suite(restart.RestartLoop, combo)
    expected = {"time_restart", "peakmem_restart", "track_restart_iterations_per_second"}
    assert set(figures) >= expected
    rate = figures["track_restart_iterations_per_second"]
    assert math.isfinite(rate) and rate > 0
    bandwidth = figures["track_restart_bandwidth_fraction"]
    assert math.isfinite(bandwidth) and bandwidth > 0


@pytest.mark.parametrize(
    "combo",
    [c for c in _smallest_cpu(hypergradient.Hypergradient) if c[1] == "denoise" and c[-1] == 10],
    ids=lambda c: "-".join(map(str, c)),
)
def test_hypergradient_suite_runs(combo):
    figures = _run_suite(hypergradient.Hypergradient, combo)
    assert set(figures) == {"time_hypergradient", "peakmem_hypergradient"}


def test_hypergradient_suite_skips_combinations_that_do_not_exist():
    with pytest.raises(NotImplementedError, match="T does not enter"):
        hypergradient.Hypergradient().setup("jfb", "denoise", 64, "cpu", 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without a GPU")
def test_cuda_combinations_skip_without_a_gpu():
    with pytest.raises(NotImplementedError, match="no CUDA"):
        device_or_skip("cuda")
    with pytest.raises(NotImplementedError):
        hypergradient.CudaMemory().setup("retune", 256, 10)


def test_accuracy_tracks_are_honest_figures():
    """Finite, positive relative errors of ReTune (K = T = 10) and JFB on denoising, and the
    Lemma 1 bound above the observed JFB error (ratio ≥ 1: the lemma holds there)."""
    figures = _run_suite(hypergradient.Accuracy, ("denoise", 10))
    for name in ("track_retune_relative_error", "track_jfb_relative_error"):
        assert math.isfinite(figures[name]) and figures[name] > 0, (name, figures[name])
    assert figures["track_lemma1_bound_over_observed"] >= 1.0
