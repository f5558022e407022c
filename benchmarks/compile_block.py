"""Opt-in compilation of Φ_K as one graph (``restart(compile=True)``, issue 28 item 3): the
no-graph restart loop K = T = 10 eager and compiled (inductor), in one run, interleaved, for

- a user's step of a few elementwise kernels (x ↦ relu(c + x·θ) − 0.1·x), and
- the wavelet denoising step (51) with the fused kernels off (the eager step, ~24 kernels).

The compile time (the first compiled call) is reported apart; the figures are the minimum over
``--passes`` of the medians of ``--repeats`` calls. ::

    python -m benchmarks.compile_block --threads 2 \\
        --out benchmarks/results/compile_block-cpu-2026-12-05.json
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from retune_suite.operators import restart
from retune_suite.operators.maps import fused

from benchmarks.common import median_seconds, report, wavelet_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = wavelet_problem("denoise", args.size, args.batch, "float32", torch.device("cpu"))
    c = torch.rand_like(p.x0)
    half = torch.tensor(0.5)

    def user_step(x, theta):
        return torch.relu(torch.addcmul(c, x, theta)) - 0.1 * x

    problems = {"user step": (user_step, half), "wavelet step, eager": (p.step, p.theta)}
    fused.set_enabled(False)
    cases, rows = {}, []
    try:
        for name, (step, theta) in problems.items():
            for mode in ("eager", "compiled"):
                flag = args.backend if mode == "compiled" else False

                def run(step=step, theta=theta, flag=flag):
                    return restart(step, theta, p.x0, 10, 10, compile=flag)

                start = time.perf_counter()
                run()
                if mode == "compiled":
                    rows.append(
                        {"case": f"{name}: compile (first call)", "s": time.perf_counter() - start}
                    )
                cases[f"{name}, {mode}"] = run
        best: dict[str, float] = {}
        for _ in range(args.passes):
            for name, fn in cases.items():
                best[name] = min(best.get(name, float("inf")), median_seconds(fn, args.repeats))
    finally:
        fused.set_enabled(None)
    rows += [{"case": name, "ms": 1e3 * t} for name, t in best.items()]
    for name in problems:
        rows.append(
            {
                "case": f"{name}: compiled speed-up",
                "value": best[f"{name}, eager"] / best[f"{name}, compiled"],
            }
        )
    rows.append({"case": "environment", "loadavg": os.getloadavg(), "backend": args.backend})
    report(rows, args.threads, list(p.x0.shape), args.out)


if __name__ == "__main__":
    main()
