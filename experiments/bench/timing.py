"""One row of the bench: warm-up, timed calls (median time and working set), accuracy."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import statistics

import torch
from retune_suite.operators.errors import RetuneError

from ..common.measure import measure
from .problem import Bench, Spec, missing, rel

__all__ = ["release_free_memory", "time_row"]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without it a long-lived process serves each call from memory an earlier call freed, RSS
    does not grow, and :func:`retune_suite.experiments.common.measure.measure` reports a working set
    of ~0.
    """
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def time_row(spec: Spec, bench: Bench) -> dict:
    """Run one method: warm-up, timed calls, accuracy against its map's reference."""
    cfg, device = bench.cfg, bench.device
    row = dict(
        method=spec.method,
        library=spec.library,
        problem=spec.problem,
        gradient=spec.gradient,
        forward_steps=cfg.steps if spec.forward_steps is None else spec.forward_steps,
    )
    absent = missing(spec.requires)
    if absent is not None:
        print(f"  {spec.method:36s} {absent}", flush=True)
        return {**row, "status": absent}
    once = spec.once
    try:
        fn = spec.make()
        for _ in range(0 if once else cfg.warmup):
            fn()
        times, peaks = [], []
        for _ in range(1 if once else cfg.repeats):
            bench.counter.count = 0
            release_free_memory()
            (grad, out), m = measure(fn, device)
            times.append(m.seconds)
            peaks.append(m.peak_bytes)
        vjps = bench.counter.count
    except (RetuneError, RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0]
        print(f"  {spec.method:36s} failed: {first}", flush=True)
        return {**row, "status": f"failed: {type(error).__name__}: {first}"}
    ref = bench.reference(spec.problem)
    capped = spec.cap is not None and vjps - 1 >= spec.cap
    row.update(
        vjps=vjps,
        status=f"tolerance not reached in {spec.cap}" if capped else "ok",
        runs=len(times),
        seconds=statistics.median(times),
        peak_mb=statistics.median(peaks) / 2**20,
        rel_error=rel(grad, ref.grad),
        cosine=torch.nn.functional.cosine_similarity(grad, ref.grad, dim=0).item(),
        reference=f"{spec.problem} map: DEQ float64, GMRES→{cfg.reference_tol:.0e}",
        forward_agreement=(
            float("nan")
            if out is None or spec.output_steps is None
            else rel(out, bench.expected_output(spec.problem, spec.output_steps))
        ),
        forward_error=float("nan") if out is None else rel(out, ref.x_star),
        load_1min=os.getloadavg()[0],
    )
    print(
        f"  {spec.method:36s} {row['seconds']:8.3f} s {row['peak_mb']:8.1f} MB  "
        f"rel.err {row['rel_error']:.2e}  vjps {vjps}  load {row['load_1min']:.1f}",
        flush=True,
    )
    return row
