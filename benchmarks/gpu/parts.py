"""The parts of the GPU script. Each takes a :class:`Context` and returns a dict for the
summary; each writes its files into its own sub-folder of the results, atomically.

In-process parts (environment, bandwidth, estimators) stop starting new measurements once
their time share is spent; command-line parts run as subprocesses with a timeout (the process
group gets SIGINT, then SIGKILL), so a hang or a crash in one cannot stop the others.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from retune_suite.experiments.common.io import (
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)

from .modes import Mode

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the subprocesses run there, with it on PYTHONPATH."""
SELF_TEST = "test_gpu_script.py"
"""The tests of this script (never run by its ``cuda_tests`` part)."""
BANDWIDTH_AIM = 0.5
"""The issue's aim: the restart loop at ≥ 50% of the device's measured copy bandwidth."""


@dataclass
class Context:
    """One run: its mode, results folder, device and the time left."""

    mode: Mode
    out: Path
    deadline: float  # time.monotonic() by which the whole run ends

    @property
    def device(self) -> torch.device:
        return torch.device(self.mode.device)

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Any, device: torch.device, repeats: int) -> float:
    """Median of ``repeats`` timed calls after one warm-up (device synchronised)."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _command_output(args: list[str]) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"failed: {error}"
    return done.stdout.strip() or done.stderr.strip()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(ctx: Context) -> dict[str, Any]:
    """Device, driver, versions, date and commit (``git rev-parse HEAD``, else the
    ``RETUNE_COMMIT`` variable: the tree copied to a GPU machine may have no .git)."""
    commit = _command_output(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    if commit is None or len(commit) != 40:
        commit = os.environ.get("RETUNE_COMMIT", "unknown")
    cuda = torch.cuda.is_available()
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "mode": ctx.mode.name,
        "device": ctx.mode.device,
        "device_name": (
            torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
        ),
        "nvidia_smi": _command_output(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                "--format=csv,noheader",
            ]
        ),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "packages": {
            name: _version(name)
            for name in ("deepinv", "torchdeq", "ptwt", "PyWavelets", "numpy", "scipy", "asv")
        },
    }
    write_json_atomic(info, ctx.out / "environment.json")
    return {"status": "ok", **info}


def run_command(
    args: list[str], log: Path, timeout: float, *, grace: float = 10.0
) -> tuple[int | None, float]:
    """Run ``args`` in the repository root (output to ``log``); past ``timeout`` seconds the
    process group gets SIGINT, then SIGKILL after ``grace``. Returns (exit code or None when
    it was stopped, seconds)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=max(timeout, 1.0)), time.monotonic() - start
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return None, time.monotonic() - start


def _cli(ctx: Context, name: str, args: list[str], timeout: float) -> dict[str, Any]:
    """One ``retune-suite`` command as a subprocess; its log in ``<name>/log.txt``."""
    command = [sys.executable, "-m", "retune_suite.experiments.cli", *args]
    code, seconds = run_command(command, ctx.out / name / "log.txt", timeout)
    status = "ok" if code == 0 else ("timeout" if code is None else f"exit {code}")
    return {"status": status, "command": " ".join(command[1:]), "seconds": seconds}


def cuda_tests(ctx: Context, timeout: float) -> dict[str, Any]:
    """The tests that need a GPU (``-k cuda`` in the test files that mention cuda: they skip
    without one), JUnit XML counted into passed / failed / skipped. The script's own test file
    is left out: it runs this script, which would run its tests again, without end."""
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    files = [
        str(f.relative_to(ROOT)) for f in tests if "cuda" in f.read_text() and f.name != SELF_TEST
    ]
    folder = ctx.out / "cuda_tests"
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / "junit.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-k",
        "cuda",
        f"--junitxml={xml}",
        *files,
    ]
    code, seconds = run_command(command, folder / "log.txt", timeout)
    counts: dict[str, int] = {}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts = {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}
    status = "ok" if code == 0 else ("timeout" if code is None else f"exit {code}")
    return {"status": status, "seconds": seconds, **counts}


def bandwidth(ctx: Context) -> dict[str, Any]:
    """The no-graph restart loop Φ_K^T against the device's copy bandwidth (the cost model of
    benchmarks/restart.py: 4 passes over the batch per step), eager and, on CUDA, with CUDA
    graphs; at the benchmarks' batch and at one too large for the caches."""
    from retune_suite.operators import restart

    from benchmarks.common import wavelet_problem
    from benchmarks.restart import PASSES_PER_STEP, copy_bandwidth

    mode, device = ctx.mode, ctx.device
    share = time.monotonic() + mode.shares["bandwidth"] * max(ctx.left(), 0.0)
    T = max(mode.Ts)
    rows = []
    for task in mode.tasks:
        for batch in (mode.batch, mode.big_batch):
            p = wavelet_problem(task, mode.size, batch, "float32", device)
            copy = copy_bandwidth(p.x0)
            floor = PASSES_PER_STEP * p.x0.numel() * p.x0.element_size()
            for graph in (False, True) if device.type == "cuda" else (False,):
                if time.monotonic() > share:
                    break
                seconds = _median_seconds(
                    lambda p=p, g=graph: restart(p.step, p.theta, p.x0, mode.K, T, cuda_graph=g),
                    device,
                    mode.repeats,
                )
                steps = mode.K * T / seconds
                rows.append(
                    dict(
                        task=task,
                        size=mode.size,
                        batch=batch,
                        K=mode.K,
                        T=T,
                        cuda_graph=graph,
                        seconds=seconds,
                        steps_per_second=steps,
                        copy_bytes_per_second=copy,
                        fraction_of_copy_bandwidth=steps * floor / copy,
                    )
                )
    frame = pd.DataFrame(rows)
    write_csv_atomic(frame, ctx.out / "bandwidth" / "bandwidth.csv")
    best = float(frame.fraction_of_copy_bandwidth.max()) if len(frame) else float("nan")
    return {
        "status": "ok" if len(frame) else "no rows",
        "rows": len(frame),
        "best_fraction": best,
        "aim": BANDWIDTH_AIM,
        "aim_met": bool(best >= BANDWIDTH_AIM),
    }


def estimators(ctx: Context) -> dict[str, Any]:
    """The asv Hypergradient figures on the device: median time of ``repeats`` warm calls and
    the allocator's peak above the level before (CUDA ``max_memory_allocated``), per
    estimator and T, x̂ solved on the device as in the asv suite (Anderson to its rtol)."""
    from retune_suite.experiments.error_study.cost import allocated_peak
    from retune_suite.operators import fixed_point

    from benchmarks.common import wavelet_problem
    from benchmarks.hypergradient import ESTIMATORS, FIXED_POINT_RTOL, _call

    mode, device = ctx.mode, ctx.device
    share = time.monotonic() + mode.shares["estimators"] * max(ctx.left(), 0.0)
    rows = []
    for task in mode.tasks:
        p = wavelet_problem(task, mode.size, mode.batch, "float32", device)
        u_star = fixed_point(p.step, p.theta, p.x0, 1, rtol=FIXED_POINT_RTOL, method="anderson").x
        for name in ESTIMATORS:
            for T in mode.Ts if name in ("retune", "unrolled") else (None,):
                if time.monotonic() > share:
                    break

                def call(name=name, T=T, p=p, u_star=u_star):
                    return _call(name, p.step, p.theta, p.x0, u_star, p.loss, mode.K, T)

                _, peak, method = allocated_peak(call, device)
                seconds = _median_seconds(call, device, mode.repeats)
                rows.append(
                    dict(
                        task=task,
                        size=mode.size,
                        batch=mode.batch,
                        estimator=name,
                        K=mode.K,
                        T=T,
                        seconds_median=seconds,
                        repeats=mode.repeats,
                        peak_mib=peak / 2**20,
                        peak_method=method,
                    )
                )
    frame = pd.DataFrame(rows)
    write_csv_atomic(frame, ctx.out / "estimators" / "estimators.csv")
    return {"status": "ok" if len(frame) else "no rows", "rows": len(frame)}


def peers(ctx: Context, timeout: float) -> dict[str, Any]:
    """``retune-suite bench [--peers]`` on the device (peers only where importable)."""
    args = ["bench", *ctx.mode.bench_args, "--device", ctx.mode.device]
    if "--peers" in args and not all(_version(n) for n in ("deepinv", "torchdeq")):
        args.remove("--peers")
    result = _cli(ctx, "peers", [*args, "--out", str(ctx.out / "peers")], timeout)
    bench = ctx.out / "peers" / "bench.csv"
    if bench.exists():
        result["rows"] = len(pd.read_csv(bench))
    return result


def errors(ctx: Context, timeout: float) -> dict[str, Any]:
    """``retune-suite errors`` (denoising, θ_BC) on the device; rows are written as they are
    computed, so a time-boxed run still leaves its rows."""
    out = ctx.out / "errors"
    args = ["errors", *ctx.mode.errors_args, "--device", ctx.mode.device, "--quiet"]
    result = _cli(ctx, "errors", [*args, "--out", str(out)], timeout)
    metrics = out / "metrics.csv"
    if metrics.exists():
        result["rows"] = len(pd.read_csv(metrics))
    return result


def training(ctx: Context, timeout: float) -> dict[str, Any]:
    """As many steps of the FB-PnP (σ, τ) training of fig. 2 as fit in ``timeout`` (the run
    checkpoints and writes metrics.csv as it goes; stopped at the deadline, it is counted)."""
    out = ctx.out / "reproduce"
    args = [
        "reproduce",
        *ctx.mode.reproduce_args,
        "--device",
        ctx.mode.device,
        "--quiet",
        "--out",
        str(out),
        "--name",
        "run",
    ]
    result = _cli(ctx, "reproduce", args, timeout)
    if result["status"] == "timeout":
        result["status"] = "ok (time-boxed)"
    metrics = sorted(out.glob("*/run/metrics.csv"))  # <out>/<figure>/<name>/metrics.csv
    steps = 0
    if metrics:
        frame = pd.read_csv(metrics[0])
        steps = int((frame.model == "pnp-sigma-tau").sum()) if "model" in frame else 0
        result["seconds_per_step_median"] = (
            float(frame.seconds.median()) if steps and "seconds" in frame else None
        )
    result["training_steps"] = steps
    write_text_atomic(f"{steps}\n", out / "steps.txt")
    return result
