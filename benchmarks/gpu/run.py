"""The GPU script: every GPU figure of the speed issue in one time-boxed run, one results folder.

    python -m benchmarks.gpu.run --out DIR [--mode gpu|cpu-tiny] [--budget-s 480]

Parts, in order (``parts.py``): ``environment`` (device, driver from nvidia-smi, torch/CUDA
versions, date, commit), ``cuda_tests`` (the tests that skip without a GPU, ``-k cuda``),
``bandwidth`` (the restart loop against the measured copy bandwidth, aim ≥ 50%),
``estimators`` (the asv Hypergradient figures: median time and ``max_memory_allocated``),
``peers``
(``retune-suite bench --peers``), ``errors`` (the 256×256 error study, denoising θ_BC) and
``training`` (as many steps of the paper-preset FB-PnP (σ, τ) training as the budget leaves).

Each part gets at most its share of the time left (``modes.py``), and a failure is recorded in
``summary.json`` without stopping the others; ``summary.json`` is rewritten atomically after
every part, so an interrupted run still says what it did. ``--mode cpu-tiny`` runs the same
parts at toy sizes on the CPU (tests/test_gpu_script.py). How to run it on the GPU machine:
``benchmarks/gpu/README.md``.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retune_suite.experiments.common.io import write_json_atomic
from retune_suite.operators.errors import InvalidInputError

from . import parts
from .modes import MODES

__all__ = ["main", "run_parts"]

RESERVE_S = 5.0
"""Seconds kept back at the end for the summary."""


def run_parts(
    ctx: parts.Context, plan: list[tuple[str, Callable[..., dict[str, Any]], bool]]
) -> dict[str, Any]:
    """Run ``plan`` (name, function, takes a timeout) in order; each part's result or failure
    goes into the summary, written after every part. The last part gets all the time left."""
    summary: dict[str, Any] = {"mode": ctx.mode.name, "parts": {}}
    path = ctx.out / "summary.json"
    for i, (name, fn, timed) in enumerate(plan):
        left = ctx.left() - RESERVE_S
        last = i == len(plan) - 1
        share = left if last else ctx.mode.shares.get(name, 0.1) * ctx.left()
        start = time.monotonic()
        if left <= 1.0:
            result: dict[str, Any] = {"status": "skipped: no time left"}
        else:
            try:
                result = fn(ctx, share) if timed else fn(ctx)
            except Exception as error:  # recorded, and the next part runs
                result = {
                    "status": f"failed: {type(error).__name__}: {str(error).splitlines()[0]}",
                    "traceback": traceback.format_exc(),
                }
        result.setdefault("seconds", time.monotonic() - start)
        summary["parts"][name] = result
        print(f"[gpu-script] {name}: {result['status']} ({result['seconds']:.1f} s)", flush=True)
        write_json_atomic(summary, path)
    summary["complete"] = True
    write_json_atomic(summary, path)
    return summary


PLAN: list[tuple[str, Callable[..., dict[str, Any]], bool]] = [
    ("environment", parts.environment, False),
    ("cuda_tests", parts.cuda_tests, True),
    ("bandwidth", parts.bandwidth, False),
    ("estimators", parts.estimators, False),
    ("peers", parts.peers, True),
    ("errors", parts.errors, True),
    ("training", parts.training, True),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu.run", description=__doc__)
    parser.add_argument("--out", required=True, help="results folder (must not hold a run)")
    parser.add_argument("--mode", default="gpu", choices=sorted(MODES))
    parser.add_argument("--budget-s", type=float, default=480.0, help="whole run, seconds")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    out = Path(args.out)
    if (out / "summary.json").exists():
        raise InvalidInputError(f"{out} holds a run (summary.json): choose another --out.")
    if mode.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError("--mode gpu needs a CUDA device: use --mode cpu-tiny here.")
    if not args.budget_s > RESERVE_S:
        raise InvalidInputError(f"--budget-s must be above {RESERVE_S}, got {args.budget_s}.")
    out.mkdir(parents=True, exist_ok=True)
    ctx = parts.Context(mode=mode, out=out, deadline=time.monotonic() + args.budget_s)
    summary = run_parts(ctx, PLAN)
    failed = [n for n, r in summary["parts"].items() if not str(r["status"]).startswith("ok")]
    print(f"[gpu-script] wrote {out}; not ok: {', '.join(failed) or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
