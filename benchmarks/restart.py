"""asv: the no-graph restart loop Φ_K^T (24): time, memory, steps per second, and the loop's
memory traffic against the machine's measured copy bandwidth.

Cost model (docs/performance.md): any FB step must at least read the iterate u and the two
constant maps of the step (the factor 1 − τ/θ² and the shift (τ/θ)D Aᵀy) and write the new
iterate, 4 passes over n = B·C·H·W numbers. ``track_restart_bandwidth_fraction`` divides that
floor, per second of the loop, by the copy bandwidth (``copy_`` of a tensor of the same size:
2 passes) measured in the same process; 1 would be a step as fast as memory allows.
"""

from __future__ import annotations

import statistics
import time

import torch
from retune_suite.operators import restart

from .common import device_or_skip, synchronize, wavelet_problem

PASSES_PER_STEP = 4


def copy_bandwidth(like: torch.Tensor, repeats: int = 20) -> float:
    """Bytes per second of ``copy_`` (one read and one write of ``like``), median of repeats."""
    dst = torch.empty_like(like)
    dst.copy_(like)
    times = []
    for _ in range(repeats):
        synchronize(like.device)
        start = time.perf_counter()
        dst.copy_(like)
        synchronize(like.device)
        times.append(time.perf_counter() - start)
    return 2 * like.numel() * like.element_size() / statistics.median(times)


class RestartLoop:
    params = (
        ["denoise", "inpaint"],
        [64, 256],
        ["float32"],
        ["cpu", "cuda"],
        [1, 10],
        [2, 10, 40],
    )
    param_names = ("task", "size", "dtype", "device", "K", "T")
    timeout = 300

    def setup(self, task, size, dtype, device, K, T):
        self.device = device_or_skip(device)
        p = wavelet_problem(task, size, 4, dtype, self.device)
        self.step, self.theta, self.u0 = p.step, p.theta, p.x0
        restart(self.step, self.theta, self.u0, K, 1)  # warm-up
        synchronize(self.device)

    def _run(self, K, T):
        restart(self.step, self.theta, self.u0, K, T)
        synchronize(self.device)

    def time_restart(self, task, size, dtype, device, K, T):
        self._run(K, T)

    def peakmem_restart(self, task, size, dtype, device, K, T):
        self._run(K, T)

    def track_restart_iterations_per_second(self, task, size, dtype, device, K, T):
        start = time.perf_counter()
        self._run(K, T)
        return K * T / (time.perf_counter() - start)

    def track_restart_bandwidth_fraction(self, task, size, dtype, device, K, T):
        bandwidth = copy_bandwidth(self.u0)
        steps = self.track_restart_iterations_per_second(task, size, dtype, device, K, T)
        floor = PASSES_PER_STEP * self.u0.numel() * self.u0.element_size()
        return steps * floor / bandwidth

    track_restart_iterations_per_second.unit = "steps/s"
    track_restart_bandwidth_fraction.unit = "fraction of copy bandwidth"
