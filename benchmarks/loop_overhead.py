"""The generic loop's own cost around a user's step (issue 28, item 3): docs/performance.md,
"Generic loop".

A user's step of one elementwise kernel (x ↦ c + x·θ, contractive for θ = 0.5) on
4×3×256×256 float32. Timed in one process, interleaved pass by pass (minimum over
``--passes`` of the medians of ``--repeats`` calls):

- ``step``: one bare call of the step;
- ``step + residual + norms``: what one block of one step must compute (the step, the block
  residual ‖x_1 − x_0‖ and the norms ‖x_0‖, ‖x_1‖ of the growth check) as bare tensor ops;
- ``restart K=1 T=1``: :func:`~retune_suite.operators.restart` doing the same, so that the
  difference is the per-call overhead (validation, finiteness, Python, the host copy);
- ``bare x100`` and ``restart K=T=10``: 100 steps, bare and by restart.

Run it from a checkout (``PYTHONPATH=<checkout>``) to compare two commits; ``--label`` names
the row::

    python -m benchmarks.loop_overhead --threads 2 --label after --out overhead-after.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from retune_suite.operators import restart

from benchmarks.common import report


def _timed(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    shape = [4, 3, 256, 256]
    x0 = torch.rand(shape, generator=generator)
    c = torch.rand(shape, generator=generator)
    half = torch.tensor(0.5)

    def step(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(c, x, theta)

    diff, norms = torch.empty_like(x0), torch.empty(3)

    def by_hand() -> list[float]:
        with torch.no_grad():
            x = step(x0, half)
            torch.sub(x, x0, out=diff)
            torch.linalg.vector_norm(diff, out=norms[0])
            torch.linalg.vector_norm(x0, out=norms[1])
            torch.linalg.vector_norm(x, out=norms[2])
        return norms.tolist()

    def bare() -> torch.Tensor:
        with torch.no_grad():
            x = x0
            for _ in range(100):
                x = step(x, half)
        return x

    cases: dict[str, Callable[[], object]] = {
        "step": lambda: step(x0, half),
        "step + residual + norms": by_hand,
        "restart K=1 T=1": lambda: restart(step, half, x0, 1, 1),
        "bare x100": bare,
        "restart K=T=10": lambda: restart(step, half, x0, 10, 10),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.passes):
        for name, fn in cases.items():
            best[name] = min(best[name], _timed(fn, args.repeats))
    per_call = best["restart K=1 T=1"] - best["step + residual + norms"]
    rows = [{"label": args.label, "case": k, "ms": 1e3 * v} for k, v in best.items()]
    rows.append(
        {
            "label": args.label,
            "case": "per-call overhead (restart K=1 T=1 - by hand)",
            "ms": 1e3 * per_call,
            "in user steps": per_call / best["step"],
        }
    )
    rows.append(
        {
            "label": args.label,
            "case": "restart K=T=10 - bare x100",
            "ms": 1e3 * (best["restart K=T=10"] - best["bare x100"]),
            "in user steps": (best["restart K=T=10"] - best["bare x100"]) / best["step"],
        }
    )
    report(rows, args.threads, shape, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
