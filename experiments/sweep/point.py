"""One sweep point on a worker: lock its folder, run (or resume) the command, record the outcome.

A point folder holds, besides the run the command writes:

- ``.retune.lock``: the lock of every run folder (:mod:`retune_suite.experiments.common.lock`:
  created complete, one winner, also on NFS), with the holder's host, pid, process start time
  and a token; its mtime is a heartbeat, renewed while the run goes on. It is stale, and taken
  over, when its holder is on this host and no longer exists (or is a zombie), when it is empty
  or unreadable and a few seconds old, or when its heartbeat is older than ``stale_after``
  seconds. The point's run takes the same lock (reentrant in the worker's thread).
- ``sweep-point.json``: the point's grid values and full configuration.
- ``sweep-done.json``: written last, atomically, when the run returned 0: the point is done.
- ``failure.txt``: the traceback of the last failed attempt (removed by the next attempt).
- ``sweep.log``: the command's output, every attempt appended (never through a link).

Everything here runs on the workers: it must only need the installed suite and the folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.io import open_append, remove_partial_writes, write_json_atomic, write_text_atomic
from ..common.lock import LOCK, Lock, acquire, hold, holder, release, stale_reason

__all__ = [
    "DONE",
    "FAILURE",
    "LOCK",
    "LOG",
    "POINT",
    "Lock",
    "Task",
    "acquire",
    "failure_summary",
    "holder",
    "release",
    "run_point",
    "stale_reason",
]

POINT = "sweep-point.json"
DONE = "sweep-done.json"
FAILURE = "failure.txt"
LOG = "sweep.log"


@dataclass(frozen=True)
class Task:
    """What a worker needs to run one point (plain data: it travels to dask workers)."""

    experiment: str
    point_id: str
    params: dict[str, Any]
    config: dict[str, Any]
    folder: str
    stale_after: float = 600.0
    threads: int = 0
    """torch CPU threads for runs whose config leaves them (``threads = 0``); 0: leave."""


def record_failure(task: Task, error: BaseException, note: str = "") -> str:
    """Write ``failure.txt`` (a header, ``error: <one line>``, ``note``, the traceback) in the
    point's folder; return the one line. The driver uses it too, when a worker died."""
    first = next((ln for ln in str(error).splitlines() if ln.strip()), "").strip()
    summary = f"{type(error).__name__}: {first}"[:300]
    text = (
        f"sweep point {task.point_id} ({task.experiment}) failed on {socket.gethostname()} "
        f"(pid {os.getpid()}) at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"error: {summary}\n{note and note + chr(10)}\n"
        + "".join(traceback.format_exception(error))
    )
    folder = Path(task.folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(text, folder / FAILURE)
    return summary


def failure_summary(folder: Path) -> str:
    """The ``error:`` line of the point's ``failure.txt``."""
    try:
        lines = (folder / FAILURE).read_text().splitlines()
    except OSError:
        return ""
    return next((ln[len("error: ") :] for ln in lines if ln.startswith("error: ")), "failed")


def run_point(task: Task) -> dict[str, Any]:
    """Run one point unless it is done or held elsewhere; never raises for a failed run.

    Returns ``{"status": "done" | "failed" | "busy", ...}`` with ``seconds``, ``host``,
    ``pid`` and, for a failure, ``error`` (the last line of the traceback).
    """
    folder = Path(task.folder)
    result: dict[str, Any] = {"id": task.point_id, "host": socket.gethostname(), "pid": os.getpid()}
    if (folder / DONE).exists():
        return {**result, "status": "done", "skipped": True}
    folder.mkdir(parents=True, exist_ok=True)
    lock = acquire(folder / LOCK, task.stale_after)
    if lock is None:
        owner = holder(folder / LOCK) or {}
        where = f"{owner.get('host', '?')}:{owner.get('pid', '?')}"
        return {**result, "status": "busy", "error": f"held by {where}"}
    with hold(lock, min(30.0, task.stale_after / 4)):  # released at the end
        return _run_held(task, folder, result)


def _run_held(task: Task, folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_point` once the point's lock is held."""
    from .spec import experiments

    started = time.perf_counter()
    try:
        if (folder / DONE).exists():  # finished by the holder we just followed
            return {**result, "status": "done", "skipped": True}
        remove_partial_writes(folder)
        (folder / FAILURE).unlink(missing_ok=True)
        write_json_atomic(
            {
                "id": task.point_id,
                "experiment": task.experiment,
                "params": task.params,
                "config": task.config,
            },
            folder / POINT,
        )
        experiment = experiments()[task.experiment]
        cfg = experiment.config(**task.config)
        with (
            open_append(folder / LOG) as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            print(
                f"\n=== sweep point {task.point_id}: {result['host']} pid {result['pid']}, "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}",
                flush=True,
            )
            try:
                status = _run(experiment.run, cfg, task.threads)
            except Exception:
                print(traceback.format_exc(), flush=True)
                raise
        if status != 0:
            raise RuntimeError(f"{task.experiment} returned exit status {status}")
        seconds = time.perf_counter() - started
        write_json_atomic(
            {**result, "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")},
            folder / DONE,
        )
        return {**result, "status": "done", "seconds": seconds}
    except Exception as error:
        return {
            **result,
            "status": "failed",
            "error": record_failure(task, error),
            "seconds": time.perf_counter() - started,
        }


def _run(run: Any, cfg: Any, threads: int) -> int:
    """``run(cfg)`` with ``threads`` torch threads when the configuration leaves them."""
    if threads <= 0 or getattr(cfg, "threads", 1) > 0:
        return run(cfg)
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run(cfg)
    finally:
        torch.set_num_threads(previous)


def task_for(point: Any, experiment: str, stale_after: float, threads: int) -> Task:
    """The :class:`Task` of a :class:`~retune_suite.experiments.sweep.spec.Point`."""
    return Task(
        experiment=experiment,
        point_id=point.id,
        params=point.params,
        config=dataclasses.asdict(point.config),
        folder=str(point.folder),
        stale_after=stale_after,
        threads=threads,
    )
