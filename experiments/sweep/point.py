"""One sweep point on a worker: lock its folder, run (or resume) the command, record the outcome.

A point folder holds, besides the run the command writes:

- ``.sweep.lock``: the lock, created with ``O_CREAT | O_EXCL`` (one winner, also on NFS), with
  the holder's host, pid, process start time and a token; its mtime is a heartbeat, renewed
  while the run goes on. It is stale, and taken over, when its holder is on this host and no
  longer exists (or is a zombie), or when its heartbeat is older than ``stale_after`` seconds.
- ``sweep-point.json``: the point's grid values and full configuration.
- ``sweep-done.json``: written last, atomically, when the run returned 0: the point is done.
- ``failure.txt``: the traceback of the last failed attempt (removed by the next attempt).
- ``sweep.log``: the command's output, every attempt appended.

Everything here runs on the workers: it must only need the installed suite and the folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.io import write_json_atomic, write_text_atomic

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

LOCK = ".sweep.lock"
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


@dataclass(frozen=True)
class Lock:
    """A held lock: its path and the token written in it."""

    path: Path
    token: str


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holder(path: Path) -> dict[str, Any] | None:
    """The lock's content (host, pid, started, token, heartbeat age in s), or None if unlocked
    or unreadable."""
    data = _read(path)
    if data is None:
        return None
    with contextlib.suppress(OSError):
        data["age"] = time.time() - path.stat().st_mtime
    return data


def _alive(pid: int, started: float | None) -> bool:
    """Whether process ``pid`` of this host exists, is no zombie and is the one that locked."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with distributed
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def stale_reason(path: Path, stale_after: float) -> str | None:
    """Why the lock at ``path`` may be taken over, or None while its holder may be running."""
    owner = holder(path)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "released"
    if owner is not None and owner.get("host") == socket.gethostname():
        if not _alive(int(owner.get("pid", -1)), owner.get("started")):
            return f"its holder (pid {owner.get('pid')} on this host) has ended"
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s (> stale_after = {stale_after:g} s)"
    return None


def _take_over(path: Path, stale_after: float) -> bool:
    """Remove a stale lock; only one contender removes a given holder's lock."""
    owner = holder(path) or {"token": "unreadable"}  # a holder that died while writing it
    if stale_reason(path, stale_after) is None:
        return False
    marker = path.with_name(f"{path.name}.takeover-{owner.get('token')}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:  # another contender is on it (or died there: clear it when old)
        with contextlib.suppress(OSError):
            if time.time() - marker.stat().st_mtime > stale_after:
                marker.unlink()
        return False
    try:
        current = holder(path) or ({"token": "unreadable"} if path.exists() else {})
        if current.get("token") != owner.get("token"):
            return False
        path.unlink()
        return True
    finally:
        marker.unlink(missing_ok=True)


def acquire(path: Path, stale_after: float) -> Lock | None:
    """Create the lock file atomically; None when another live holder has it."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _take_over(path, stale_after):
                return None
            continue
        token = uuid.uuid4().hex
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _start_time(os.getpid()),
            "token": token,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return Lock(path, token)
    return None


def release(lock: Lock) -> None:
    """Remove the lock if it is still ours."""
    owner = _read(lock.path)
    if owner is not None and owner.get("token") == lock.token:
        lock.path.unlink(missing_ok=True)


@contextlib.contextmanager
def _heartbeat(lock: Lock, period: float):
    """Renew the lock's mtime every ``period`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            with contextlib.suppress(OSError):
                os.utime(lock.path)

    thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _clear_partial_writes(folder: Path) -> None:
    """Remove the temporary files of atomic writes that a killed attempt left (the folder is
    ours alone while we hold its lock)."""
    for tmp in folder.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


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
    from .spec import experiments

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
    started = time.perf_counter()
    try:
        if (folder / DONE).exists():  # finished by the holder we just followed
            return {**result, "status": "done", "skipped": True}
        _clear_partial_writes(folder)
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
            _heartbeat(lock, min(30.0, task.stale_after / 4)),
            open(folder / LOG, "a", buffering=1) as log,
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
    finally:
        release(lock)


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
