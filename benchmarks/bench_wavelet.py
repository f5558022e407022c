"""pytest-benchmark: the wavelet transform D (operators.maps.wavelet) against ptwt and PyWavelets.

One batch B = 4 × 3 × 256 × 256 float32 on the CPU with 2 intra-op threads
(``RETUNE_BENCH_THREADS`` overrides), db4, 4 levels; every figure is the median of 30 timed
rounds after 3 warm-up rounds. ``ours_before_*`` is the transform before the block-GEMM
passes (``benchmarks/wavelet_before.py``), in the same run as the shipped one. Run::

    python -m pytest benchmarks/bench_wavelet.py --benchmark-only \\
        --benchmark-columns=min,median,iqr,rounds --benchmark-sort=name \\
        -k "ours or (ptwt_wave and reflect) or ptwt_round" \\
        --benchmark-json=benchmarks/results/bench-wavelet-cpu-2026-12-02.json

``python -m benchmarks.step_costs`` times the same transforms interleaved in one process.

Two threads only pay off on an otherwise idle machine: while another process keeps one of two
cores busy, every parallel region waits for a descheduled thread (milliseconds each), and
the op-heavy transforms here slow down by 10–50×. Check ``/proc/loadavg`` first.

ptwt (optional, skipped when absent) has no periodization in its convolution transforms: its
``wavedec2`` pads ("reflect" by default, or "periodic", "zero", "symmetric", "constant") and
returns (N + L − 1)/2 coefficients per axis and level, a redundant, non-orthonormal frame.
``ptwt.MatrixWavedec2`` / ``MatrixWaverec2`` are orthonormal (QR-orthogonalised boundary
wavelets, not periodization); their sparse matrices are built in the warm-up rounds, not
timed. PyWavelets runs on the NumPy array (``axes=(-2, -1)``), no autograd. The results and
the decision they support are in ``docs/wavelet.md``.

The ``Wavelet`` class at the end is the same measurement as an asv suite.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from retune_suite.operators.maps.wavelet import Wavelet2D

from benchmarks.common import BENCH_THREADS
from benchmarks.wavelet_before import wavelet_before

SHAPE = (4, 3, 256, 256)
WAVELET, LEVELS = "db4", 4
ROUNDS, WARMUP = 30, 3
PTWT_MODES = ("reflect", "periodic", "zero", "symmetric", "constant")


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def run(benchmark, fn, *args):
    """Median of ROUNDS timed calls after WARMUP untimed ones, autograd off."""
    with torch.no_grad():
        return benchmark.pedantic(fn, args, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)


def ptwt_module():
    ptwt = pytest.importorskip("ptwt")
    warnings.filterwarnings("ignore", module="ptwt")  # sparse-tensor beta warnings
    return ptwt


# -- ours ----------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="forward")
def test_bench_ours_forward(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    approx, details = run(benchmark, D.forward, x)
    assert approx.shape == (4, 3, 16, 16) and len(details) == LEVELS


@pytest.mark.benchmark(group="forward")
def test_bench_ours_analysis_packed(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    assert run(benchmark, D.analysis, x).shape == SHAPE


@pytest.mark.benchmark(group="inverse")
def test_bench_ours_inverse(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    approx, details = D.forward(x)
    assert run(benchmark, D.inverse, approx, details).shape == SHAPE


@pytest.mark.benchmark(group="inverse")
def test_bench_ours_synthesis_packed(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    assert run(benchmark, D.synthesis, D.analysis(x)).shape == SHAPE


@pytest.mark.benchmark(group="forward+inverse")
def test_bench_ours_round_trip(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    out = run(benchmark, lambda z: D.inverse(*D.forward(z)), x)
    assert float((out - x).abs().max()) < 1e-5


@pytest.mark.benchmark(group="forward+backward")
def test_bench_ours_forward_backward(benchmark, x):
    """⟨Dx, g⟩ differentiated: the forward plus one Dᵀ (the custom backward)."""
    D = Wavelet2D(WAVELET, LEVELS)
    z = x.clone().requires_grad_()
    g = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))

    def step():
        z.grad = None
        D.analysis(z).backward(g)

    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)


# -- ours before the block-GEMM passes -----------------------------------------------------------


def before(fn):
    """fn with the old level passes (a fresh transform: banks are cached per transform)."""

    def call(*args):
        with wavelet_before():
            return fn(*args)

    return call


@pytest.mark.benchmark(group="forward")
def test_bench_ours_before_forward(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    approx, details = run(benchmark, before(D.forward), x)
    assert approx.shape == (4, 3, 16, 16) and len(details) == LEVELS


@pytest.mark.benchmark(group="inverse")
def test_bench_ours_before_inverse(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    approx, details = before(D.forward)(x)
    assert run(benchmark, before(D.inverse), approx, details).shape == SHAPE


@pytest.mark.benchmark(group="forward+inverse")
def test_bench_ours_before_round_trip(benchmark, x):
    D = Wavelet2D(WAVELET, LEVELS)
    out = run(benchmark, before(lambda z: D.inverse(*D.forward(z))), x)
    assert float((out - x).abs().max()) < 1e-5


# -- ptwt ----------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="forward")
@pytest.mark.parametrize("mode", PTWT_MODES)
def test_bench_ptwt_wavedec2(benchmark, x, mode):
    ptwt = ptwt_module()
    coeffs = run(benchmark, lambda z: ptwt.wavedec2(z, WAVELET, mode=mode, level=LEVELS), x)
    assert coeffs[0].shape[-1] > 16  # redundant: 22 × 22 at level 4, not 16 × 16


@pytest.mark.benchmark(group="inverse")
@pytest.mark.parametrize("mode", PTWT_MODES)
def test_bench_ptwt_waverec2(benchmark, x, mode):
    ptwt = ptwt_module()
    coeffs = ptwt.wavedec2(x, WAVELET, mode=mode, level=LEVELS)
    assert run(benchmark, lambda c: ptwt.waverec2(c, WAVELET), coeffs).shape == SHAPE


@pytest.mark.benchmark(group="forward+inverse")
def test_bench_ptwt_round_trip(benchmark, x):
    ptwt = ptwt_module()

    def round_trip(z):
        return ptwt.waverec2(ptwt.wavedec2(z, WAVELET, level=LEVELS), WAVELET)

    assert run(benchmark, round_trip, x).shape == SHAPE


@pytest.mark.benchmark(group="forward+backward")
def test_bench_ptwt_forward_backward(benchmark, x):
    ptwt = ptwt_module()
    z = x.clone().requires_grad_()

    def step():
        z.grad = None
        approx, *details = ptwt.wavedec2(z, WAVELET, level=LEVELS)
        loss = approx.square().sum() + sum(d.square().sum() for level in details for d in level)
        loss.backward()

    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)


@pytest.mark.benchmark(group="forward")
def test_bench_ptwt_matrix_wavedec2(benchmark, x):
    ptwt = ptwt_module()
    forward = ptwt.MatrixWavedec2(WAVELET, level=LEVELS)
    coeffs = run(benchmark, forward, x)
    assert coeffs[0].shape == (4, 3, 16, 16)


@pytest.mark.benchmark(group="inverse")
def test_bench_ptwt_matrix_waverec2(benchmark, x):
    ptwt = ptwt_module()
    coeffs = ptwt.MatrixWavedec2(WAVELET, level=LEVELS)(x)
    inverse = ptwt.MatrixWaverec2(WAVELET)
    assert run(benchmark, inverse, coeffs).shape == SHAPE


@pytest.mark.benchmark(group="forward+inverse")
def test_bench_ptwt_matrix_round_trip(benchmark, x):
    ptwt = ptwt_module()
    forward, inverse = ptwt.MatrixWavedec2(WAVELET, level=LEVELS), ptwt.MatrixWaverec2(WAVELET)
    out = run(benchmark, lambda z: inverse(forward(z)), x)
    assert float((out - x).abs().max()) < 1e-4


# -- PyWavelets (NumPy) --------------------------------------------------------------------------


@pytest.mark.benchmark(group="forward")
def test_bench_pywt_wavedec2(benchmark, x):
    pywt = pytest.importorskip("pywt")
    a = x.numpy()
    coeffs = benchmark.pedantic(
        lambda: pywt.wavedec2(a, WAVELET, mode="periodization", level=LEVELS, axes=(-2, -1)),
        rounds=ROUNDS,
        warmup_rounds=WARMUP,
    )
    assert coeffs[0].shape == (4, 3, 16, 16)


@pytest.mark.benchmark(group="inverse")
def test_bench_pywt_waverec2(benchmark, x):
    pywt = pytest.importorskip("pywt")
    coeffs = pywt.wavedec2(x.numpy(), WAVELET, mode="periodization", level=LEVELS, axes=(-2, -1))
    out = benchmark.pedantic(
        lambda: pywt.waverec2(coeffs, WAVELET, mode="periodization", axes=(-2, -1)),
        rounds=ROUNDS,
        warmup_rounds=WARMUP,
    )
    assert out.shape == SHAPE


@pytest.mark.benchmark(group="forward+inverse")
def test_bench_pywt_round_trip(benchmark, x):
    pywt = pytest.importorskip("pywt")
    a = x.numpy()

    def round_trip():
        c = pywt.wavedec2(a, WAVELET, mode="periodization", level=LEVELS, axes=(-2, -1))
        return pywt.waverec2(c, WAVELET, mode="periodization", axes=(-2, -1))

    out = benchmark.pedantic(round_trip, rounds=ROUNDS, warmup_rounds=WARMUP)
    assert out.shape == SHAPE


# -- asv -----------------------------------------------------------------------------------------


class Wavelet:
    """asv: D and Dᵀ on B = 4 × 3 × 256 × 256, 2 threads, CPU."""

    params = (["float32", "float64"],)
    param_names = ("dtype",)
    timeout = 120

    def setup(self, dtype: str) -> None:
        torch.set_num_threads(BENCH_THREADS)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(SHAPE, generator=g, dtype=getattr(torch, dtype))
        self.D = Wavelet2D(WAVELET, LEVELS)
        self.coeffs = self.D.forward(self.x)
        self.u = self.D.analysis(self.x)

    def time_forward(self, dtype: str) -> None:
        self.D.forward(self.x)

    def time_inverse(self, dtype: str) -> None:
        self.D.inverse(*self.coeffs)

    def time_analysis(self, dtype: str) -> None:
        self.D.analysis(self.x)

    def time_synthesis(self, dtype: str) -> None:
        self.D.synthesis(self.u)

    def peakmem_forward_inverse(self, dtype: str) -> None:
        self.D.inverse(*self.D.forward(self.x))
