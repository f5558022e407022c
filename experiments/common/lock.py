"""One writer per folder: the lock every job takes on its run folder, and the sweep on its
root and on each point.

The lock is the file ``<folder>/.retune.lock`` holding its holder's host, pid, process start
time, a token and the time it was taken. It is created complete: written to a temporary file
beside it, then hard-linked to its name (``link`` fails when the name exists, atomically, also
on NFS), so that no reader ever sees it empty; where a file system has no hard links it is
created with ``O_CREAT | O_EXCL`` and then written. While it is held, a thread renews its
mtime (a heartbeat).

A lock is **stale**, and taken over with a message, when

- its holder is on this host and has ended (or is a zombie, or its pid now belongs to a process
  started at another time);
- the file is empty or unreadable and older than :data:`UNREADABLE_AFTER` seconds (a process
  killed between creating and writing it, before this module wrote locks complete);
- its heartbeat is older than ``stale_after`` seconds (a holder on another host).

:func:`folder_lock` is what the jobs use: it takes the lock before the job checks or writes
anything in the folder, or stops at once with :class:`FolderInUseError` (exit status 2 on the
command line) naming the holder; it is reentrant in the thread that holds it (a sweep point
holds its folder's lock and runs a job on the same folder). :func:`acquire`, :func:`release` and
:func:`hold` are the parts, for callers that report a held lock otherwise (a sweep point is
then ``busy``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retune_suite.operators.errors import InvalidInputError

__all__ = [
    "DEFAULT_STALE_AFTER",
    "LOCK",
    "UNREADABLE_AFTER",
    "FolderInUseError",
    "Lock",
    "acquire",
    "describe",
    "folder_lock",
    "hold",
    "holder",
    "release",
    "stale_reason",
]

LOCK = ".retune.lock"
"""The name of the lock file in a locked folder."""
DEFAULT_STALE_AFTER = 600.0
"""Seconds without a heartbeat before another host's lock is taken over."""
UNREADABLE_AFTER = 3.0
"""Seconds after which an empty or unreadable lock file is stale (a complete lock is written
in microseconds; an older version created it first and wrote it next)."""


class FolderInUseError(InvalidInputError):
    """Another live run holds the folder's lock."""


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
    """The lock's content, or None when it is missing, empty, unreadable or not a lock."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    if not isinstance(data.get("host"), str) or not isinstance(data.get("token"), str):
        return None
    return data


def holder(path: Path) -> dict[str, Any] | None:
    """The lock's content (host, pid, started, token, since; ``age``: seconds since its last
    heartbeat), or None if unlocked or unreadable."""
    data = _read(path)
    if data is None:
        return None
    with contextlib.suppress(OSError):
        data["age"] = time.time() - path.stat().st_mtime
    return data


def describe(owner: dict[str, Any] | None) -> str:
    """``pid 123 on host h, started 2026-12-04 18:00:00`` (what a lock says of its holder)."""
    if owner is None:
        return "an unreadable lock"
    return (
        f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
        f"started {owner.get('since', 'at an unknown time')}"
    )


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
    except OSError as error:
        return f"the lock file cannot be read ({error.strerror})"
    if owner is None:
        if age > UNREADABLE_AFTER:
            return f"the lock file is empty or unreadable ({age:.0f} s old)"
        return None
    if owner["host"] == socket.gethostname():
        started = owner.get("started")
        if not _alive(owner["pid"], started if isinstance(started, int | float) else None):
            return f"its holder (pid {owner['pid']} on this host) has ended"
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s (> stale_after = {stale_after:g} s)"
    return None


def _take_over(path: Path, stale_after: float) -> str | None:
    """Remove a stale lock and say why; only one contender removes a given holder's lock."""
    owner = holder(path) or {"token": "unreadable"}  # a holder that died while writing it
    reason = stale_reason(path, stale_after)
    if reason is None:
        return None
    marker = path.with_name(f"{path.name}.takeover-{owner.get('token')}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:  # another contender is on it (or died there: clear it when old)
        with contextlib.suppress(OSError):
            if time.time() - marker.stat().st_mtime > stale_after:
                marker.unlink()
        return None
    try:
        current = holder(path) or ({"token": "unreadable"} if path.exists() else {})
        if current.get("token") != owner.get("token"):
            return None
        try:
            path.unlink()
        except OSError as error:
            raise InvalidInputError(
                f"cannot remove the stale lock {path} ({reason}; {error.strerror}): remove it "
                "by hand if no run uses this folder, or choose another output folder."
            ) from None
        return reason
    finally:
        marker.unlink(missing_ok=True)


def _create(path: Path, info: dict[str, Any]) -> bool:
    """Create the lock file with ``info`` in it, complete; False when it exists."""
    text = json.dumps(info).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{info['token'][:8]}.tmp")  # removed if we are killed
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive create, then write
            pass
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return True


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def acquire(
    path: Path, stale_after: float, *, announce: Callable[[str], None] | None = _stderr
) -> Lock | None:
    """Create the lock file; None when another live holder has it.

    A stale lock is taken over first, and ``announce`` (stderr by default; None: silent) told
    which lock and why.
    """
    path = Path(path)
    for _ in range(3):
        token = uuid.uuid4().hex
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _start_time(os.getpid()),
            "token": token,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if _create(path, info):
            return Lock(path, token)
        reason = _take_over(path, stale_after)
        if reason is None:
            return None
        if announce is not None:
            announce(f"retune-suite: taking over the lock {path}: {reason}")
    return None


def release(lock: Lock) -> None:
    """Remove the lock if it is still ours."""
    owner = _read(lock.path)
    if owner is not None and owner.get("token") == lock.token:
        lock.path.unlink(missing_ok=True)


@dataclass
class _Held:
    lock: Lock
    thread: int
    pid: int


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def _key(path: Path) -> str:
    return os.path.abspath(path)


@contextlib.contextmanager
def hold(lock: Lock, period: float = 30.0) -> Iterator[Lock]:
    """Keep ``lock`` while the block runs: its heartbeat renewed every ``period`` seconds, and
    :func:`folder_lock` on its folder reentrant in this thread; released at the end."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            with contextlib.suppress(OSError):
                os.utime(lock.path)

    thread = threading.Thread(target=beat, name="retune-lock-heartbeat", daemon=True)
    key = _key(lock.path)
    with _HELD_GUARD:
        _HELD[key] = _Held(lock, threading.get_ident(), os.getpid())
    thread.start()
    try:
        yield lock
    finally:
        stop.set()
        thread.join()
        with _HELD_GUARD:
            _HELD.pop(key, None)
        release(lock)


def _held_here(path: Path) -> Lock | None:
    with _HELD_GUARD:
        held = _HELD.get(_key(path))
    if held is not None and held.thread == threading.get_ident() and held.pid == os.getpid():
        return held.lock
    return None


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, stale_after: float = DEFAULT_STALE_AFTER) -> Iterator[Lock]:
    """Hold ``folder``'s lock while the block runs (the folder is created if needed).

    Raises :class:`FolderInUseError`, before anything else is written, when another live run
    holds it; a stale lock is taken over with a message on stderr.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with folder_lock(folder):
    ...     (folder / LOCK).exists()
    True
    >>> (folder / LOCK).exists()
    False
    """
    folder = Path(folder)
    path = folder / LOCK
    held = _held_here(path)
    if held is not None:  # this thread holds it already (a sweep point running its job)
        yield held
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = acquire(path, stale_after)
    if lock is None and holder(path) is None and path.exists():
        # unreadable and younger than UNREADABLE_AFTER: a holder may be writing it; wait once
        time.sleep(UNREADABLE_AFTER + 0.1)
        lock = acquire(path, stale_after)
    if lock is None:
        raise FolderInUseError(
            f"{folder} is in use by another run ({describe(holder(path))}): wait for it to "
            f"finish or stop it, or choose another output folder; if no run uses this folder, "
            f"delete {path}."
        )
    with hold(lock, min(30.0, stale_after / 4)):
        yield lock
