"""Shared set-up of the asv suites: one image-scale problem per parameter combination.

CUDA is never touched at import time (asv imports every benchmark file during discovery and
launches with ``spawn``); a CUDA combination without a GPU raises NotImplementedError in
``setup``, which asv reports as skipped.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

BENCH_THREADS = int(os.environ.get("RETUNE_BENCH_THREADS", "2"))
"""Intra-op threads of the pytest-benchmark sets and the before/after scripts."""


def report(rows: list[dict], threads: int, shape: list[int], out: str | None) -> None:
    """Print the rows and the run's metadata (date, machine, threads, torch, shape); write
    both atomically as JSON to ``out`` when given."""
    import platform
    from datetime import datetime, timezone

    from retune_suite.experiments.common.io import write_json_atomic

    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "threads": threads,
        "torch": torch.__version__,
        "shape": shape,
    }
    for row in rows:
        print(row, flush=True)
    print(meta)
    if out:
        write_json_atomic({"meta": meta, "rows": rows}, out)


def kernel_of(rev: str) -> ModuleType:
    """The C++ kernel built from ``operators/maps/fused/denoise_cpu.cpp`` at git revision
    ``rev``, by :func:`cpu.load` with its source pointed at that text (cached like any build);
    the module of the current source is left as it was."""
    from retune_suite.operators.maps.fused import cpu

    text = subprocess.run(
        ["git", "show", f"{rev}:operators/maps/fused/denoise_cpu.cpp"],
        capture_output=True,
        check=True,
    ).stdout
    saved = cpu.SOURCE, cpu._MODULE, cpu._FAILED, cpu._BUILD_SECONDS
    with tempfile.TemporaryDirectory() as folder:  # the build compiles its own copy
        source = Path(folder) / cpu.SOURCE.name
        source.write_bytes(text)
        cpu.SOURCE, cpu._MODULE, cpu._FAILED = source, None, None
        try:
            module = cpu.load()
        finally:
            cpu.SOURCE, cpu._MODULE, cpu._FAILED, cpu._BUILD_SECONDS = saved
    if module is None:
        raise RuntimeError(f"the kernel of {rev} could not be built (see the log)")
    return module


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_or_skip(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wavelet_problem(task: str, size: int, batch: int, dtype: str, device: torch.device):
    """The section-4 problem FB (51) with θ_BC (log λ = −2) on ``batch`` crops of the embedded
    images (seed 0), from :func:`retune_suite.operators.maps.section4.build`: ``.step``, ``.theta``,
    ``.x0``
    (u₀ = D Aᵀy), ``.loss`` (½‖Dᵀθ₀⁻¹u − x̄‖², θ₀ frozen), ``.fb``."""
    from retune_suite.experiments.common.data import crops, embedded_images
    from retune_suite.operators.maps import section4

    clean = crops(embedded_images(), size, batch, 0).to(device, getattr(torch, dtype))
    return section4.build(task, "wavelet-BC", clean=clean, seed=0, log_lambda=-2.0)
