"""CI smoke run of the asv suites (benchmarks/): each suite's ``setup`` and every benchmark
method once, on the smallest CPU parameters, with the ``track_`` figures checked for sense.

This is what ``asv run --quick`` would do for these combinations, in seconds and without asv's
environments, so that a suite broken by a change in operators/ fails the default test run. A
suite with ``setup_cache`` gets the cache of just the combinations run here (asv passes it as
the first argument of ``setup`` and of every benchmark).
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


def _run_suite(suite: type, combo: tuple, cache: object = None) -> dict[str, object]:
    bench = suite()
    args = combo if cache is None else (cache, *combo)
    try:
        bench.setup(*args)
    except NotImplementedError:
        return {}
    out = {}
    for name, method in inspect.getmembers(bench, inspect.ismethod):
        if name.startswith(METHOD_PREFIXES):
            out[name] = method(*args)
    return out


@pytest.fixture(scope="module")
def fixed_points_64():
    return hypergradient.fixed_points(("denoise",), (64,))


@pytest.fixture(scope="module")
def accuracy_cache():
    return {"denoise": hypergradient.accuracy_reference("denoise")}


def test_setup_cache_covers_every_combination_and_solves_to_its_tolerance(fixed_points_64):
    """One cache for the timing suite, keyed by every (task, size) of its parameters; its x̂
    is a fixed point to FIXED_POINT_RTOL (Anderson's stopping rule: ‖Φ(x) − x‖ ≤ rtol‖Φ(x)‖)."""
    suite = hypergradient.Hypergradient
    assert suite.setup_cache is hypergradient._fixed_point_cache
    names = suite.param_names
    tasks, sizes = suite.params[names.index("task")], suite.params[names.index("size")]
    assert (tuple(tasks), tuple(sizes)) == (hypergradient.TASKS, hypergradient.SIZES)
    p = hypergradient.wavelet_problem("denoise", 64, 4, "float32", torch.device("cpu"))
    x = fixed_points_64[("denoise", 64)]
    step = p.step(x, p.theta)
    residual = torch.linalg.vector_norm(step - x) / torch.linalg.vector_norm(step)
    assert residual <= hypergradient.FIXED_POINT_RTOL


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
def test_hypergradient_suite_runs(combo, fixed_points_64):
    figures = _run_suite(hypergradient.Hypergradient, combo, fixed_points_64)
    assert set(figures) == {"time_hypergradient", "peakmem_hypergradient"}


def test_hypergradient_suite_skips_combinations_that_do_not_exist():
    with pytest.raises(NotImplementedError, match="T does not enter"):
        hypergradient.Hypergradient().setup({}, "jfb", "denoise", 64, "cpu", 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without a GPU")
def test_cuda_combinations_skip_without_a_gpu():
    with pytest.raises(NotImplementedError, match="no CUDA"):
        device_or_skip("cuda")
    with pytest.raises(NotImplementedError):
        hypergradient.CudaMemory().setup("retune", 256, 10)


def _independent_relative_errors(bench, K: int, T: int) -> tuple[float, float]:
    """ReTune (25) and JFB (28) relative errors to the suite's DEQ reference, computed with
    torch.func from the step alone (no retune_suite.operators.hypergrad, no
    retune_suite.operators.iteration)."""
    from torch.func import grad, vjp

    theta = bench.theta
    leaves = theta if isinstance(theta, tuple) else (theta,)

    def block(x, *th):
        th = th if isinstance(theta, tuple) else th[0]
        for _ in range(K):
            x = bench.step(x, th)
        return x

    def loss_grad(x):
        return grad(lambda z: bench.loss(z).reshape(()))(x)

    def theta_vjp(x, w):
        _, pull = vjp(lambda *th: block(x, *th), *leaves)
        return torch.cat([g.reshape(-1) for g in pull(w)])

    with torch.no_grad():
        x = bench.u0
        for _ in range(T - 1):
            x = block(x, *leaves)
        x_KT = block(x, *leaves)
    g = bench.g
    retune = theta_vjp(x, loss_grad(x_KT))
    jfb = theta_vjp(bench.u_star, loss_grad(bench.u_star))
    rel = lambda v: (torch.linalg.vector_norm(v - g) / torch.linalg.vector_norm(g)).item()  # noqa: E731
    return rel(retune), rel(jfb)


def test_accuracy_tracks_are_honest_figures(accuracy_cache):
    """The tracked ReTune (K = T = 10) and JFB relative errors on denoising are the errors of
    the formulas (25) and (28), recomputed independently with torch.func: a wrong or
    sign-flipped estimator changes the figure and fails here (ReTune's error is about 1.19 at
    this size, so a range such as (0, 1.5) could not tell a sign flip). The Lemma 1 bound is
    above the observed JFB error (ratio ≥ 1: the lemma holds there)."""
    figures = _run_suite(hypergradient.Accuracy, ("denoise", 10), accuracy_cache)
    bench = hypergradient.Accuracy()
    bench.setup(accuracy_cache, "denoise", 10)
    retune, jfb = _independent_relative_errors(bench, K=10, T=10)
    assert figures["track_retune_relative_error"] == pytest.approx(retune, rel=1e-9)
    assert figures["track_jfb_relative_error"] == pytest.approx(jfb, rel=1e-9)
    assert figures["track_lemma1_bound_over_observed"] >= 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without a GPU")
def test_teardown_after_a_skipped_setup():
    """asv calls ``teardown`` after a ``setup`` that raised NotImplementedError (its skip): a
    suite's teardown must not assume what setup would have made (it failed 4 CUDA
    combinations of fused.FusedRetune in `asv run --quick` on 2026-12-05)."""
    import benchmarks

    for module_name in ("fused", "restart", "hypergradient", "bench_wavelet", "forward_solvers"):
        module = __import__(f"benchmarks.{module_name}", fromlist=["_"])
        for suite in vars(module).values():
            if not (isinstance(suite, type) and suite.__module__ == module.__name__):
                continue
            if not hasattr(suite, "teardown"):
                continue
            params = [p[-1] if "cuda" not in p else "cuda" for p in suite.params]
            bench = suite()
            with pytest.raises(NotImplementedError):
                bench.setup(*params)
            bench.teardown(*params)  # must not raise
    assert benchmarks is not None
