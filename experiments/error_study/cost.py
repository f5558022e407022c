"""Time and peak memory of one estimator call, measured the way the benchmarks measure them.

**Time**: one untimed warm-up call, then the median wall time of ``repeats`` calls (on CUDA the
device is synchronised before the clock stops), as ``retune-suite bench --peers`` and the asv
suites do. A single cold call would time one-off work (first-use kernels, the θ-map caches of
the wavelet steps) together with the estimator.

**Peak memory**, above the level before the call, from the allocator's own bookkeeping, on the
warm-up call (the allocations of a call do not depend on whether it is timed):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before (``"cuda_max_allocated"``);
- CPU: every allocation and free of torch's CPU allocator during the call, as recorded by
  ``torch.profiler`` with ``profile_memory=True``; the peak of their running sum
  (``"cpu_allocator_profiled"``). Frees of blocks allocated before the call count (they lower
  the level), frees the profiler cannot size (blocks from before any profiling) are not
  reported, so the figure can only err upwards.

The resident set size is not used: a long-lived process serves a call from pages that earlier
calls freed, so RSS does not grow and a 10-step graph of a 3 MB batch read as 0.004 MiB.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from operators.errors import InvalidInputError

__all__ = ["Cost", "allocated_peak", "measure_cost"]

CUDA_METHOD = "cuda_max_allocated"
CPU_METHOD = "cpu_allocator_profiled"


@dataclass(frozen=True)
class Cost:
    """Median seconds of ``repeats`` warm calls; peak bytes above the level before a call."""

    seconds_median: float
    repeats: int
    peak_bytes: int
    method: str

    def columns(self) -> dict[str, Any]:
        """The CSV columns of the error study (``peak_mib`` in MiB = 2**20 bytes)."""
        return {
            "seconds_median": self.seconds_median,
            "timing_repeats": self.repeats,
            "peak_mib": self.peak_bytes / 2**20,
            "peak_method": self.method,
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def allocated_peak(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int, str]:
    """Run ``fn`` once: its output, the allocator's peak bytes above the level before, and
    the method (:data:`CUDA_METHOD` or :data:`CPU_METHOD`)."""
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        _synchronize(device)
        return out, int(torch.cuda.max_memory_allocated(device) - base), CUDA_METHOD
    if device.type != "cpu":
        raise InvalidInputError(
            f"peak memory is measured on cpu or cuda, got {device}: run the study there."
        )
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    ]
    level = peak = 0
    for _, nbytes in sorted(events):
        level += nbytes
        peak = max(peak, level)
    return out, peak, CPU_METHOD


def measure_cost(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, Cost]:
    """The output of the last call of ``fn`` and its :class:`Cost`: the first call untimed
    (warm-up, peak memory), then ``repeats`` timed calls."""
    if repeats < 1:
        raise InvalidInputError(f"--timing-repeats must be at least 1, got {repeats}.")
    out, peak, method = allocated_peak(fn, device)
    times = []
    for _ in range(repeats):
        del out  # the previous result is not alive during the next call
        _synchronize(device)
        start = time.perf_counter()
        out = fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return out, Cost(statistics.median(times), repeats, peak, method)
