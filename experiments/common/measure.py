"""Wall time and peak memory of one call: CUDA max allocated on GPU, sampled RSS on CPU."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_PAGE = 4096


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:
        return 0


@dataclass(frozen=True)
class Measurement:
    """``seconds`` of wall time; ``peak_bytes`` above the level before the call."""

    seconds: float
    peak_bytes: int
    kind: str  # "cuda_max_allocated" or "cpu_rss_sampled"


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[Any, Measurement]:
    """Run ``fn`` once; on CUDA synchronise before stopping the clock.

    CPU memory is the peak of RSS sampled every millisecond by a thread, minus RSS before the
    call (the working set, as in the benchmarks issue); it can miss spikes shorter than 1 ms.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) - base
        return out, Measurement(seconds, int(peak), "cuda_max_allocated")
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            stop.wait(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return out, Measurement(seconds, peak[0] - base, "cpu_rss_sampled")
