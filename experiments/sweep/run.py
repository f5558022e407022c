"""``retune-suite sweep SPEC``: a grid of ``reproduce``/``errors`` runs, on local processes or a
dask.distributed cluster, resumable and safe to run again (docs/sweeps.md).

Each grid point is one run of the command with ``--out <root>/<point>`` and ``--resume``, so its
folder is exactly what that single run writes (plus the sweep's markers, see
:mod:`retune_suite.experiments.sweep.point`). Finished points are skipped, interrupted ones resume,
a lock
file keeps every folder to one writer, a failure is recorded and the other points go on.
``<root>/sweep-summary.csv`` has one row per point (grid values, status, folder, results),
``<root>/sweep-results.csv`` every point's result table with its grid values in front.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from retune_suite.operators.errors import RetuneError, require

from ..common.io import remove_partial_writes, write_csv_atomic, write_json_atomic
from ..common.lock import folder_lock
from ..common.options import convert_fields
from ..common.resume import INTERRUPTED, check_resume
from .point import (
    DONE,
    FAILURE,
    LOCK,
    POINT,
    Task,
    failure_summary,
    holder,
    record_failure,
    run_point,
    stale_reason,
    task_for,
)
from .spec import Experiment, Point, Spec, expand, experiments, load_spec

__all__ = ["SweepConfig", "collect", "point_status", "run_sweep", "visible_gpus"]

SUMMARY = "sweep-summary.csv"
RESULTS = "sweep-results.csv"
MAX_POOL_RESTARTS = 3


@dataclass
class SweepConfig:
    """Run a grid of reproduce/errors runs (a TOML spec) on local processes or dask; resumable."""

    spec: str = field(
        default="",
        metadata={
            "positional": True,
            "help": "TOML spec (docs/sweeps.md), or an experiment name with --set/--grid",
        },
    )
    status: bool = field(default=False, metadata={"help": "show the progress table; run nothing"})
    out: str | None = field(default=None, metadata={"help": "output root (overrides the spec)"})
    executor: str | None = field(default=None, metadata={"help": "local or dask (default: local)"})
    scheduler: str | None = field(
        default=None, metadata={"help": "dask scheduler tcp://HOST:PORT (default: LocalCluster)"}
    )
    workers: int = field(
        default=0, metadata={"help": "parallel runs (0: one per GPU, else min(CPUs, 4))"}
    )
    set: str | None = field(default=None, metadata={"help": "fixed settings 'key=value ...'"})
    grid: str | None = field(default=None, metadata={"help": "grid 'key=v1,v2 key=v1,v2 ...'"})
    stale_after: float = field(
        default=0.0,
        metadata={"help": "s without heartbeat before another host's lock is taken (0: 600)"},
    )


def _spec(cfg: SweepConfig) -> Spec:
    return load_spec(
        cfg.spec,
        out=cfg.out,
        executor=cfg.executor,
        scheduler=cfg.scheduler,
        workers=cfg.workers,
        stale_after=cfg.stale_after,
        set_text=cfg.set,
        grid_text=cfg.grid,
    )


# ---------------------------------------------------------------- status and summary


def point_status(point: Point, stale_after: float) -> tuple[str, str]:
    """(status, detail) from the point's folder: done, running, failed or pending."""
    folder = point.folder
    if (folder / DONE).exists():
        done = _read_json(folder / DONE)
        return "done", f"{done.get('seconds', float('nan')):.1f} s on {done.get('host', '?')}"
    if (folder / LOCK).exists():
        reason = stale_reason(folder / LOCK, stale_after)
        owner = holder(folder / LOCK) or {}
        if reason is None:
            return "running", f"on {owner.get('host', '?')} pid {owner.get('pid', '?')}"
        return "pending", f"interrupted ({reason}): resumes"
    if (folder / FAILURE).exists():
        return "failed", failure_summary(folder)
    if folder.exists() and any(p.name != POINT for p in folder.iterdir()):
        return "pending", "partial: resumes"
    return "pending", ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collect(
    points: list[Point], experiment: Experiment, stale_after: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary (one row per point) and every done point's result table, from the folders."""
    rows, tables = [], []
    for point in points:
        status, detail = point_status(point, stale_after)
        run_folder = experiment.run_folder(point.config)
        row: dict[str, Any] = {"point": point.id, **point.params, "status": status}
        row.update(detail=detail, folder=str(run_folder))
        if status == "done":
            row["seconds"] = _read_json(point.folder / DONE).get("seconds")
            try:
                flat, table = experiment.results(run_folder)
            except (OSError, ValueError, KeyError) as error:
                row["detail"] = f"done, but its results cannot be read: {error}"
            else:
                row.update(flat)
                table.insert(0, "point", point.id)
                for i, (key, value) in enumerate(point.params.items(), start=1):
                    if key not in table:
                        table.insert(i, key, value)
                tables.append(table)
        rows.append(row)
    results = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return pd.DataFrame(rows), results


def _write_summary(spec: Spec, points: list[Point], experiment: Experiment) -> pd.DataFrame:
    summary, results = collect(points, experiment, spec.stale_after)
    write_csv_atomic(summary, spec.out / SUMMARY)
    if not results.empty:
        write_csv_atomic(results, spec.out / RESULTS)
    return summary


def _print_status(spec: Spec, points: list[Point]) -> None:
    rows = [(p.id, *point_status(p, spec.stale_after)) for p in points]
    counts = {s: sum(r[1] == s for r in rows) for s in ("done", "running", "failed", "pending")}
    print(
        f"sweep {spec.source} ({spec.experiment}, {len(points)} points) in {spec.out}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
    )
    width = max(len(r[0]) for r in rows)
    for pid, status, detail in rows:
        print(f"  {pid:<{width}}  {status:<7}  {detail}".rstrip())
    if (spec.out / SUMMARY).exists():
        print(f"summary of the last sweep: {spec.out / SUMMARY}")


# ---------------------------------------------------------------- executors


def visible_gpus() -> list[str]:
    """The CUDA devices a run may be pinned to (``CUDA_VISIBLE_DEVICES`` entries or indices)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _uses_gpu(points: list[Point]) -> bool:
    return any(str(p.config.device) != "cpu" for p in points)


def _init_local_worker(gpus: Any) -> None:
    """Pin this pool process to one GPU (before torch initialises CUDA)."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()


Report = Callable[[Task, dict[str, Any]], None]


def _run_local(tasks: list[Task], workers: int, gpus: list[str], report: Report) -> list[Task]:
    """A spawn process pool; a dead worker process breaks the pool: it is rebuilt (at most
    ``MAX_POOL_RESTARTS`` times) and the unfinished points go on (their runs resume)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    pending = list(tasks)
    for attempt in range(MAX_POOL_RESTARTS + 1):
        if not pending:
            break
        if attempt:
            print(
                f"a worker process died (killed, or out of memory): new pool for the "
                f"{len(pending)} unfinished points",
                flush=True,
            )
        queue = None
        if gpus:  # round robin when there are more workers than GPUs
            queue = context.Queue()
            for i in range(workers):
                queue.put(gpus[i % len(gpus)])
        pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_local_worker, initargs=(queue,)
        )
        futures = {pool.submit(run_point, task): task for task in pending}
        pending = []
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    pending.append(task)
                    continue
                except Exception as error:  # run_point catches the run's errors: this is ours
                    result = {"status": "failed", "error": record_failure(task, error)}
                report(task, result)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=not pending, cancel_futures=True)
    return pending


def _require_distributed() -> Any:
    """dask.distributed, or the error naming the extra ``retune-suite[sweep]``."""
    return require("distributed", "sweep", "the dask executor of `retune-suite sweep`")


def _worker_gpu_plugin(gpus: list[str]) -> Any:
    """A dask worker plugin pinning LocalCluster worker ``i`` to ``gpus[i % len(gpus)]``."""
    _require_distributed()
    from distributed.diagnostics.plugin import WorkerPlugin

    class PinGpu(WorkerPlugin):
        name = "retune-sweep-pin-gpu"

        def setup(self, worker: Any) -> None:
            index = int(worker.name) if str(worker.name).isdigit() else 0
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]

    return PinGpu()


def _connect(scheduler: str | None, workers: int, gpus: list[str]) -> tuple[Any, Any]:
    """A client of ``scheduler``, or of a new LocalCluster on the loopback (and the cluster)."""
    distributed = _require_distributed()
    Client, LocalCluster = distributed.Client, distributed.LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise RetuneError(
                f"cannot reach the dask scheduler at {scheduler} ({error}): start one "
                "(`dask scheduler`, or dask-jobqueue on Slurm: docs/sweeps.md), or leave "
                "--scheduler out for a LocalCluster on this machine."
            ) from None
        count = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        print(f"dask scheduler {scheduler}: {count} workers now", flush=True)
        return client, None
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = Client(cluster)
    if gpus:
        client.register_plugin(_worker_gpu_plugin(gpus))
    print(f"dask LocalCluster {cluster.scheduler_address}: {workers} workers", flush=True)
    return client, cluster


def _run_dask(
    tasks: list[Task], scheduler: str | None, workers: int, gpus: list[str], report: Report
) -> list[Task]:
    """Every point a dask task; a worker that dies is restarted by its nanny and its task
    rescheduled by the scheduler (the run resumes from its checkpoints)."""
    as_completed = _require_distributed().as_completed
    from distributed.scheduler import KilledWorker

    client, cluster = _connect(scheduler, workers, gpus)
    try:
        tag = uuid.uuid4().hex[:8]
        futures = {
            client.submit(run_point, t, key=f"retune-sweep-{t.point_id}-{tag}", pure=False): t
            for t in tasks
        }
        for future in as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except KilledWorker as error:
                note = (
                    "the workers running this point died repeatedly (killed, or out of memory: "
                    "see the workers' logs); re-run the sweep to resume it"
                )
                result = {"status": "failed", "error": record_failure(task, error, note)}
            except Exception as error:  # e.g. the suite is not importable on a worker
                note = (
                    "the dask task failed outside the run: is the suite installed on every "
                    "worker, and the output root reachable from them?"
                )
                result = {"status": "failed", "error": record_failure(task, error, note)}
            report(task, result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return []


# ---------------------------------------------------------------- the command


def _check_unchanged(points: list[Point], experiment: Experiment) -> None:
    """Refuse, before any work, to resume a point folder with other settings."""
    for point in points:
        saved = _read_json(point.folder / POINT).get("config")
        if not saved:
            continue
        check_resume(
            # typed as the configuration types them (JSON stores tuples as lists)
            convert_fields(experiment.config, saved, strict=False),
            point.config,
            where=f"point {point.id} in {point.folder}",
            resumable=experiment.resumable,
            fix="restore the spec, or give the sweep another out",
        )


def _default_workers(spec: Spec, gpus: list[str]) -> int:
    if spec.workers:
        return spec.workers
    return len(gpus) if gpus else max(1, min(os.cpu_count() or 1, 4))


def run_sweep(cfg: SweepConfig) -> int:
    """Validate the spec, then run every unfinished point; 0 when all are done, else 1."""
    spec = _spec(cfg)
    points = expand(spec)
    experiment = experiments()[spec.experiment]
    if cfg.status:
        _print_status(spec, points)
        return 0
    if spec.executor == "dask":
        _require_distributed()  # before any folder is written
    with folder_lock(spec.out, stale_after=spec.stale_after):  # one driver per root
        return _drive(spec, points, experiment)


def _drive(spec: Spec, points: list[Point], experiment: Experiment) -> int:
    """:func:`run_sweep` once the root's lock is held."""
    remove_partial_writes(spec.out, depth=0)  # the points clean their own folders
    _check_unchanged(points, experiment)
    write_json_atomic({**spec.to_dict(), "points": [p.id for p in points]}, spec.out / "sweep.json")
    before = {p.id: point_status(p, spec.stale_after)[0] for p in points}
    todo = [p for p in points if before[p.id] != "done"]
    gpus = visible_gpus() if _uses_gpu(todo) and not spec.scheduler else []
    workers = _default_workers(spec, gpus)
    gpus = gpus if len(gpus) > 1 else []  # one GPU: every run sees it, no pinning
    # CPU threads per run when its configuration leaves them, for the processes of this machine
    threads = 0 if spec.scheduler else max(1, (os.cpu_count() or 1) // workers)
    where = f"dask {spec.scheduler}" if spec.scheduler else f"{spec.executor}, {workers} workers"
    print(
        f"sweep {spec.source}: {spec.experiment}, {len(points)} points "
        f"({len(points) - len(todo)} done, {len(todo)} to run) on {where}"
        + (f", one per GPU {','.join(gpus)}" if gpus else "")
        + f"; root {spec.out}",
        flush=True,
    )
    tasks = [task_for(p, spec.experiment, spec.stale_after, threads) for p in todo]
    finished = len(points) - len(todo)
    started = time.perf_counter()

    def report(task: Task, result: dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        status = result.get("status", "failed")
        seconds = result.get("seconds")
        note = f" in {seconds:.1f} s" if seconds is not None else ""
        note += f": {result['error']}" if result.get("error") else ""
        print(f"[{finished}/{len(points)}] {status:<6} {task.point_id}{note}", flush=True)
        _write_summary(spec, points, experiment)

    try:
        if spec.executor == "dask":
            left = _run_dask(tasks, spec.scheduler, workers, gpus, report)
        else:
            left = _run_local(tasks, workers, gpus, report)
    except KeyboardInterrupt:
        _write_summary(spec, points, experiment)
        print(
            "\ninterrupted: finished points are kept and the others resume from their "
            f"checkpoints when the same sweep runs again ({spec.out / SUMMARY})",
            file=sys.stderr,
        )
        return INTERRUPTED
    summary = _write_summary(spec, points, experiment)
    return _final_report(spec, summary, left, time.perf_counter() - started)


def _final_report(spec: Spec, summary: pd.DataFrame, left: Iterable[Task], seconds: float) -> int:
    counts = summary.status.value_counts().to_dict()
    text = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "failed", "running", "pending"))
    print(f"\nsweep: {text} in {seconds:.1f} s; wrote {spec.out / SUMMARY}")
    for row in summary[summary.status != "done"].itertuples():
        print(f"  {row.point}: {row.status} {row.detail}".rstrip())
    if list(left):
        print("the worker processes kept dying: re-run the same command to resume")
    if counts.get("failed"):
        print(f"failures: see {FAILURE} in each failed point's folder; re-running retries them")
    return 0 if counts.get("done", 0) == len(summary) else 1
