"""Atomic, durable result writing: a reader never sees a half-written file, a crash loses none.

Every file the suite writes goes through :func:`write_atomic`: the content is written to a
temporary file in the target's folder, flushed and ``fsync``-ed, renamed over the target
(``os.replace`` is atomic on POSIX), and the folder is ``fsync``-ed so that the rename itself
survives a power loss. The file gets the permissions a plain ``open(path, "w")`` would give
(``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.

The temporary file is ``.<name>.<8 random characters>.tmp``: a write killed before its rename
leaves one behind, which :func:`remove_partial_writes` removes when the folder's next run holds
its lock. Writing through a symbolic link planted in an output folder is refused: the rename
replaces the link itself, never its target, and :func:`open_append` (the one file the suite
appends to, a log) opens with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from retune_suite.operators.errors import InvalidInputError

PARTIAL_WRITE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
"""The names of :func:`write_atomic`'s temporary files (``tempfile.mkstemp``'s random part)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms (Windows) cannot open folders: the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a binary temporary file beside ``path``, then rename it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_atomic(folder / "a.txt", lambda f: f.write(b"hi")).read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` (UTF-8), atomically."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_csv_atomic(frame: Any, path: str | Path) -> Path:
    """Write a pandas DataFrame as CSV (no index), atomically."""
    return write_text_atomic(frame.to_csv(index=False), path)


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON, atomically (non-JSON values as ``str``)."""
    return write_text_atomic(json.dumps(data, indent=2, default=str) + "\n", path)


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)``, atomically (checkpoints)."""
    import torch

    return write_atomic(path, lambda handle: torch.save(obj, handle))


def write_npz_atomic(arrays: dict[str, Any], path: str | Path) -> Path:
    """``numpy.savez_compressed(**arrays)``, atomically."""
    import numpy as np

    return write_atomic(path, lambda handle: np.savez_compressed(handle, **arrays))


def save_figure(figure: Any, base: str | Path, *, dpi: int = 110) -> list[Path]:
    """Save a matplotlib figure as ``base.pdf`` and ``base.png``, each atomically."""
    base = Path(base)
    return [
        write_atomic(
            base.with_suffix(f".{ext}"),
            lambda handle, ext=ext: figure.savefig(
                handle, format=ext, dpi=dpi, bbox_inches="tight"
            ),
        )
        for ext in ("pdf", "png")
    ]


def remove_partial_writes(folder: str | Path, *, depth: int = 3) -> list[Path]:
    """Remove the temporary files that killed atomic writes left in ``folder`` and its
    subfolders (``depth`` levels; a subfolder with a lock of its own, which another run may
    hold, is left alone; links are not followed). Call it while holding the folder's lock.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / ".metrics.csv.a1b2c3d4.tmp").write_text("half")
    >>> [p.name for p in remove_partial_writes(folder)]
    ['.metrics.csv.a1b2c3d4.tmp']
    """
    from .lock import LOCK

    top = Path(folder)
    removed: list[Path] = []
    for root, dirs, files in os.walk(top):
        here = Path(root)
        level = len(here.relative_to(top).parts)
        if level and LOCK in files:
            dirs[:] = []
            continue
        if level >= depth:
            dirs[:] = []
        for name in files:
            if PARTIAL_WRITE.fullmatch(name):
                (here / name).unlink(missing_ok=True)
                removed.append(here / name)
    return removed


def open_append(path: str | Path) -> IO[str]:
    """Open a text file for appending, line-buffered, never through a symbolic link.

    Raises :class:`InvalidInputError` when ``path`` is a link (planted in an output folder:
    its target is left unchanged).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError:
        if path.is_symlink():
            raise InvalidInputError(
                f"{path} is a symbolic link: the suite does not write through links in its "
                "output folders; remove the link (its target is unchanged)."
            ) from None
        raise
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")
