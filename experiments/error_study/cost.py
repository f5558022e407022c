"""Time and peak memory of one estimator call, measured the way the benchmarks measure them.

**Time**: one untimed warm-up call, then the median wall time of ``repeats`` calls (on CUDA the
device is synchronised before the clock stops), as ``retune-suite bench --peers`` and the asv
suites do. A single cold call would time one-off work (first-use kernels, the θ-map caches of
the wavelet steps) together with the estimator.

**Peak memory**, above the level before the call, on the warm-up call (the allocations of a
call do not depend on whether it is timed):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before (``"cuda_max_allocated"``);
- CPU: the bytes of the tensor storages the call creates and that are alive together, at
  their largest (``"cpu_live_storages"``, :class:`LiveStorages`): every operator's fresh
  output storage counts from the operator's return until the storage is freed, an in-place
  resize counts its new size. Storages from before the call and views of them do not count.
  Allocations a kernel makes and frees inside one operator are not seen; on every estimator
  of the study this reads byte for byte what ``torch.profiler(profile_memory=True)`` reads
  in the same conditions (tested), without its event log (see :class:`LiveStorages`). Rows
  written before 2026-12-03 read the profiler and say ``"cpu_allocator_profiled"``.

  Observing costs one thing, as with every Python dispatch mode (``MemTracker`` included):
  while a mode is active, autograd sums a gradient that reaches a tensor along two paths into
  a new buffer, where the unobserved backward adds in place. The reading is the observed
  call's peak; measured on ``deq_solve`` (denoising, wavelet-BC, 3×32², float64) 848 506 B
  against the unobserved profiler's 832 122 B (+2.0%), equal on the other estimators of the
  study (``tests/test_error_study.py``).

The resident set size is not used: a long-lived process serves a call from pages that earlier
calls freed, so RSS does not grow and a 10-step graph of a 3 MB batch read as 0.004 MiB.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from retune_suite.operators.errors import InvalidInputError
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["Cost", "LiveStorages", "allocated_peak", "measure_cost"]

CUDA_METHOD = "cuda_max_allocated"
CPU_METHOD = "cpu_live_storages"


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


class LiveStorages(TorchDispatchMode):
    """Running total and peak of the bytes of tensor storages created on ``device`` while the
    mode is active; constant memory per live storage, nothing per operator.

    Written here rather than taken from ``torch.profiler(profile_memory=True)``, which keeps
    every operator and memory event until it stops (O(operators) memory: > 24 GB for a 20 000-
    product GMRES solve at 256×256), or ``torch.distributed._tools.mem_tracker.MemTracker``,
    which reads the same storages with module bookkeeping at 3–4× the profiler's time on the
    study's calls and counts views of storages from before the call. Tested against the
    profiler on every estimator of the study (``tests/test_error_study.py``).

    An operator's output storage is new when the mode has not seen it and the operator does
    not return an alias (a view or an in-place result: those share a storage from before
    the call, or one already counted). A storage leaves the total when its Python object is
    freed, which torch defers until the C++ storage itself is freed (PyObject preservation),
    so storages saved by autograd stay counted while the graph holds them.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.level = 0
        self.peak = 0
        self._live: dict[int, tuple[weakref.ref, int]] = {}

    @property
    def live_storages(self) -> int:
        """How many storages the mode counts now (its only bookkeeping)."""
        return len(self._live)

    def _freed(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.level -= entry[1]

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)
        self._live.clear()  # storages that outlive the call no longer move the level

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        aliasing = any(r.alias_info is not None for r in func._schema.returns)
        for t in tree_leaves(out):
            if not (
                isinstance(t, torch.Tensor)
                and t.device == self.device
                and t.layout == torch.strided
            ):
                continue
            storage = t.untyped_storage()
            key, nbytes = id(storage), storage.nbytes()
            known = self._live.get(key)
            if known is None:
                if aliasing:
                    continue
                ref = weakref.ref(storage, lambda _, key=key: self._freed(key))
                self._live[key] = (ref, nbytes)
                self.level += nbytes
            elif known[1] != nbytes:  # resized in place (an out= operator)
                self._live[key] = (known[0], nbytes)
                self.level += nbytes - known[1]
            self.peak = max(self.peak, self.level)
        return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def allocated_peak(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int, str]:
    """Run ``fn`` once: its output, its peak bytes above the level before (the module
    docstring says how), and the method (:data:`CUDA_METHOD` or :data:`CPU_METHOD`)."""
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
    with LiveStorages(device) as live:
        out = fn()
    return out, live.peak, CPU_METHOD


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
