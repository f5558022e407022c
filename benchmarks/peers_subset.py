"""The rows of ``retune-suite bench --peers`` that issue 28's targets compare, before and after
the fused path, in one process, interleaved call by call.

The full ``bench --peers`` (24 rows, each warmed up and timed 5 times, plus two float64
references) runs for an hour on a loaded 2-core machine; this script builds the same
:class:`~retune_suite.experiments.bench.problem.Bench` at the bench's defaults (4 × 3 × 256 ×
256 float32, K = T = 10, 100 forward steps, 2 threads) and times only the target rows: ours
ReTune with the fused kernels (after) and with the eager step (before,
``fused.set_enabled(False)``), deepinv's Jacobian-free and torchdeq's 1-step gradients on the
ptwt map (as their users write them), and torchdeq's 1-step and phantom gradients on our map
(with the fused step, the best form of it torchdeq can call, and with the eager step). One
warm-up call each, then ``--repeats`` passes over all rows, one call per row per pass (``--inner``
calls for our rows, 40 ms each where the peers' take seconds; so a load that comes and goes
hits every row alike); the median per row, the ratios within the run,
and the load average at each pass are reported. Accuracy is not re-measured (the bench's
``rel_error`` needs its float64 references; the gradients are those of the full bench).

``--kernel-before REV`` adds ReTune with the C++ kernel built from the source at git revision
REV, run as the library ran it then (block by block: no ``denoise_blocks``), so a change of
the kernel is measured before and after in the same process, pass by pass. ::

    python -m benchmarks.peers_subset --out benchmarks/results/peers-subset-cpu-2026-12-05.json
    python -m benchmarks.peers_subset --kernel-before 5c397e0 --out peers-subset-kernel.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import torch
from retune_suite.experiments.bench import deepinv, ours, torchdeq
from retune_suite.experiments.bench.config import BenchConfig
from retune_suite.experiments.bench.problem import Bench, missing
from retune_suite.operators.maps import fused
from retune_suite.operators.maps.wavelet_prior import DenoisingBlocks

from benchmarks.common import kernel_of, report

ROWS = (
    "deepinv Jacobian-free",
    "torchdeq 1-step",
    "torchdeq 1-step, our map",
    "torchdeq phantom K=10 τ=1, our map",
)


def _switched(on: bool, fn: Callable[[], object]) -> Callable[[], object]:
    def call():
        fused.set_enabled(on)
        try:
            return fn()
        finally:
            fused.set_enabled(None)

    return call


class _BlockByBlock:
    """A built kernel with only what every version has: one block, and its VJP."""

    def __init__(self, module: ModuleType):
        self.backend = fused._CppBackend(module)
        self.denoise_block = self.backend.denoise_block
        self.denoise_block_vjp = self.backend.denoise_block_vjp


def _with_kernel(module: ModuleType, fn: Callable[[], object]) -> Callable[[], object]:
    """fn() with ``module`` as the CPU kernel, restart running it block by block (no
    ``blocks``: the loop as it was before T blocks ran in one pass)."""
    backend = _BlockByBlock(module)

    def call():
        saved = fused._module, DenoisingBlocks.blocks
        fused._module = lambda device: backend
        DenoisingBlocks.blocks = lambda self, *args: None
        try:
            return fn()
        finally:
            fused._module, DenoisingBlocks.blocks = saved

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--kernel-before", default=None, metavar="REV")
    parser.add_argument("--inner", type=int, default=5, help="calls per pass of our rows")
    args = parser.parse_args()
    cfg = BenchConfig(peers=True)
    torch.set_num_threads(cfg.threads)
    bench = Bench(cfg, torch.device("cpu"))
    specs = ours.specs(bench)
    if missing(("deepinv", "ptwt")) is None:
        specs += deepinv.specs(bench)
    if missing(("torchdeq",)) is None:
        specs += torchdeq.specs(bench)
    by_name = {s.method: s for s in specs}
    retune = by_name[ours.retune_name(cfg)].make()
    calls = {
        "ours ReTune K=10 T=10, fused (after)": _switched(True, retune),
        "ours ReTune K=10 T=10, eager (before)": _switched(False, retune),
    }
    if args.kernel_before is not None:
        old = kernel_of(args.kernel_before)
        calls[f"ours ReTune K=10 T=10, kernel of {args.kernel_before}"] = _with_kernel(old, retune)
    for name in ROWS:
        if name in by_name:
            fn = by_name[name].make()
            if name.endswith("our map"):
                calls[f"{name} (fused step)"] = _switched(True, fn)
                calls[f"{name} (eager step)"] = _switched(False, fn)
            else:
                calls[name] = fn
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    loads = []
    for _ in range(args.repeats):
        loads.append(os.getloadavg()[0])
        for name, fn in calls.items():
            for _ in range(args.inner if name.startswith("ours") else 1):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    rows = [{"method": name, "seconds": s, "all": times[name]} for name, s in median.items()]
    after, before = (
        median[f"ours ReTune K=10 T=10, {v}"] for v in ("fused (after)", "eager (before)")
    )
    for name, s in median.items():
        if not name.startswith("ours"):
            rows.append({"ratio": f"{name} / ReTune after", "value": s / after})
            rows.append({"ratio": f"{name} / ReTune before", "value": s / before})
    rows.append({"ratio": "ReTune before / after", "value": before / after})
    for name, s in median.items():
        if name.startswith("ours ReTune K=10 T=10, kernel of"):
            rows.append({"ratio": f"{name.split(', ')[-1]} / current kernel", "value": s / after})
            for peer, p in median.items():
                if not peer.startswith("ours"):
                    rows.append({"ratio": f"{peer} / ReTune, {name.split(', ')[-1]}",
                                 "value": p / s})  # fmt: skip
    rows.append({"environment": "loadavg at each pass", "value": loads})
    report(rows, cfg.threads, [cfg.batch, 3, cfg.size, cfg.size], args.out)


if __name__ == "__main__":
    main()
