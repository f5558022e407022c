"""asv: the no-graph restart loop Φ_K^T (24), time, memory and steps per second."""

from __future__ import annotations

import time

from operators import restart

from .common import device_or_skip, synchronize, wavelet_problem


class RestartLoop:
    params = (["denoise", "inpaint"], [64, 256], ["float32"], ["cpu", "cuda"], [2, 10, 40])
    param_names = ("task", "size", "dtype", "device", "T")
    timeout = 300
    K = 10

    def setup(self, task, size, dtype, device, T):
        self.device = device_or_skip(device)
        self.step, self.theta, self.u0, _, _ = wavelet_problem(task, size, 4, dtype, self.device)
        restart(self.step, self.theta, self.u0, self.K, 1)  # warm-up
        synchronize(self.device)

    def _run(self, T):
        restart(self.step, self.theta, self.u0, self.K, T)
        synchronize(self.device)

    def time_restart(self, task, size, dtype, device, T):
        self._run(T)

    def peakmem_restart(self, task, size, dtype, device, T):
        self._run(T)

    def track_restart_iterations_per_second(self, task, size, dtype, device, T):
        start = time.perf_counter()
        self._run(T)
        return self.K * T / (time.perf_counter() - start)

    track_restart_iterations_per_second.unit = "steps/s"
