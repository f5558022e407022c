"""The C++ denoising kernel before/after a change of its source, in one process, interleaved.

Builds the kernel from ``denoise_cpu.cpp`` at git revision ``--before`` (cached like any build,
:func:`benchmarks.common.kernel_of`) beside the current one and times, on the bench's problem
(4 × 3 × 256 × 256 float32, θ_BC, 4 levels, the θ-maps of its start), pass by pass:

- one block of K = 10 steps (``denoise_block``);
- the restarts of ReTune without a graph, T − 1 = 9 blocks: before, 9 calls of the block (as
  ``restart`` ran it); after, ``denoise_blocks`` (9 blocks in one pass) where the current
  source has it;
- the VJP of a block of K = 10 (``denoise_block_vjp``, ∂scale and ∂shift).

Before timing, the outputs of the two builds are compared: iterates and VJP bit for bit,
residuals to rounding (the sums of squares may be taken in another order). The minimum over
``--passes`` of the medians of ``--repeats`` calls is reported, with the ratios. ::

    python -m benchmarks.kernel_before_after --before 5c397e0 --out kernel.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from retune_suite.experiments.bench.config import BenchConfig
from retune_suite.experiments.bench.problem import Bench
from retune_suite.operators.maps.fused import cpu

from benchmarks.common import kernel_of, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, metavar="REV")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cfg = BenchConfig(peers=True)
    torch.set_num_threads(cfg.threads)
    step, theta, u0, _ = Bench(cfg, torch.device("cpu")).problem("ours", torch.float32)
    fb = step.__self__
    tau, scale, shift = (t.detach().contiguous() for t in fb._maps(theta))
    args_of = (scale, shift, float(tau), fb.prior, fb.levels)
    old, new = kernel_of(args.before), cpu.load()
    if new is None:
        raise SystemExit("the current kernel cannot be built here")
    K, T = cfg.K, cfg.T - 1
    g = torch.randn(u0.shape, generator=torch.Generator().manual_seed(0))

    def block_by_block(module):
        u = prev = u0
        for _ in range(T):
            prev, u = u, module.denoise_block(u, *args_of, K)[0]
        return u, prev

    def old_blocks():
        return block_by_block(old)

    def new_blocks():
        if hasattr(new, "denoise_blocks"):
            return new.denoise_blocks(u0, *args_of, K, T)[:2]
        return block_by_block(new)

    a, b = old.denoise_block(u0, *args_of, K), new.denoise_block(u0, *args_of, K)
    equal = {
        "block iterates": torch.equal(a[0], b[0]),
        "block residual, max relative difference": ((a[1] - b[1]).abs() / a[1]).max().item(),
        "T blocks (x_KT, x_K(T-1))": all(map(torch.equal, old_blocks(), new_blocks())),
        "vjp": all(
            map(
                torch.equal,
                old.denoise_block_vjp(u0, *args_of, K, g, True),
                new.denoise_block_vjp(u0, *args_of, K, g, True),
            )
        ),
    }
    calls = {
        "block K=10, before": lambda: old.denoise_block(u0, *args_of, K),
        "block K=10, after": lambda: new.denoise_block(u0, *args_of, K),
        "9 blocks, before (block by block)": old_blocks,
        "9 blocks, after": new_blocks,
        "vjp K=10, before": lambda: old.denoise_block_vjp(u0, *args_of, K, g, False),
        "vjp K=10, after": lambda: new.denoise_block_vjp(u0, *args_of, K, g, False),
    }
    for fn in calls.values():
        fn()
    medians: dict[str, list[float]] = {name: [] for name in calls}
    loads = []
    for _ in range(args.passes):
        loads.append(os.getloadavg()[0])
        for name, fn in calls.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            medians[name].append(statistics.median(times))
    best = {name: min(m) for name, m in medians.items()}
    rows: list[dict] = [{"check": name, "value": v} for name, v in equal.items()]
    rows += [{"case": name, "ms": 1e3 * s, "medians_ms": [1e3 * m for m in medians[name]]}
             for name, s in best.items()]  # fmt: skip
    pairs = {
        "block K=10": ("block K=10, before", "block K=10, after"),
        "9 blocks": ("9 blocks, before (block by block)", "9 blocks, after"),
        "vjp K=10": ("vjp K=10, before", "vjp K=10, after"),
    }
    for case, (before, after) in pairs.items():
        rows.append({"ratio": f"{case} before / after", "value": best[before] / best[after]})
    rows.append({"environment": "loadavg at each pass", "value": loads, "before": args.before})
    report(rows, cfg.threads, list(u0.shape), args.out)
    if not (equal["block iterates"] and equal["T blocks (x_KT, x_K(T-1))"] and equal["vjp"]):
        raise SystemExit("the two builds disagree: see the checks above")


if __name__ == "__main__":
    main()
