"""``retune-suite bench [--peers]``: every row, the targets, and the run's environment."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from ..common.devices import resolve_device
from ..common.io import remove_partial_writes, write_csv_atomic, write_json_atomic
from ..common.lock import folder_lock
from ..common.resume import interrupt_hint
from . import deepinv, ours, torchdeq
from .config import BenchConfig, check_output, validate
from .problem import Bench, library, missing, rel
from .targets import targets
from .timing import time_row

__all__ = ["TABLE", "run_bench"]

TABLE = [
    "method",
    "problem",
    "vjps",
    "runs",
    "seconds",
    "peak_mb",
    "rel_error",
    "cosine",
    "forward_error",
    "time_vs_retune",
    "mem_vs_retune",
    "status",
]
"""The columns printed at the end of a run."""


def _environment(cfg: BenchConfig, device: torch.device) -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        **asdict(cfg),
        "device_resolved": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "versions": {n: library(n) for n in ("deepinv", "torchdeq", "ptwt")},
    }


def run_bench(cfg: BenchConfig) -> int:
    """Run the benchmark; write ``bench.csv``, ``targets.csv`` and ``config.json`` under out.

    An ``--out`` that holds an earlier run's results is refused before any work, unless
    ``--overwrite`` is given; the folder is locked for the run (one writer).
    """
    validate(cfg)
    out = Path(cfg.out)
    with folder_lock(out), interrupt_hint(f"nothing was written to {out}; run it again."):
        remove_partial_writes(out)
        return _run_bench(cfg)


def _run_bench(cfg: BenchConfig) -> int:
    check_output(cfg)
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        env = _environment(cfg, device)
        print(
            f"bench: {cfg.batch}×3×{cfg.size}×{cfg.size} float32 on {device}, "
            f"{env['torch_threads']} threads, load {env['load_average_before'][0]:.2f}; "
            f"{cfg.steps} forward steps, {cfg.backward_iters} backward iterations",
            flush=True,
        )
        start = time.perf_counter()
        bench = Bench(cfg, device)
        specs = ours.specs(bench)
        if cfg.peers:
            if missing(("deepinv", "ptwt")) is None:
                deepinv.check_map(bench)
            specs += deepinv.specs(bench) + torchdeq.specs(bench)
        rows = [time_row(spec, bench) for spec in specs]
        for name, ref in bench.references.items():
            rows.append(
                dict(
                    method=f"reference: DEQ float64 ({name} map)",
                    library="retune-suite",
                    problem=name,
                    gradient="deq",
                    status="reference",
                    runs=1,
                    seconds=ref.seconds,
                    rel_error=0.0,
                    reference=f"Anderson {ref.fixed_point_steps} steps to "
                    f"{cfg.fixed_point_rtol:.0e}, GMRES residual {ref.residual:.1e}",
                )
            )
        if {"ours", "ptwt"} <= bench.references.keys():
            bench.checks["fixed_point_gap_ptwt_vs_ours"] = rel(
                bench.references["ptwt"].x_hat, bench.references["ours"].x_hat
            )
    finally:
        torch.set_num_threads(threads)
    frame = pd.DataFrame(rows)
    base = frame.method.eq(ours.retune_name(cfg)) & frame.status.eq("ok")
    if base.any():
        frame["time_vs_retune"] = frame.seconds / frame.loc[base, "seconds"].iloc[0]
        peak = frame.loc[base, "peak_mb"].iloc[0]
        frame["mem_vs_retune"] = frame.peak_mb / peak if peak > 0 else float("nan")
    frame = frame.assign(
        device=str(device), threads=env["torch_threads"], size=cfg.size, batch=cfg.batch
    )
    goals = targets(frame, cfg)
    env.update(
        load_average_after=os.getloadavg(),
        seconds_total=time.perf_counter() - start,
        checks=bench.checks,
    )
    out = Path(cfg.out)
    write_csv_atomic(frame, out / "bench.csv")
    write_csv_atomic(goals, out / "targets.csv")
    write_json_atomic(env, out / "config.json")
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print()
        shown = [c for c in TABLE if c in frame]
        print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print()
        print(goals.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\nchecks: " + ", ".join(f"{k} = {v:.3g}" for k, v in bench.checks.items()))
    print(f"wrote {out / 'bench.csv'}, {out / 'targets.csv'} and {out / 'config.json'}")
    return 0
