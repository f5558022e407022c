"""Atomic result writing: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def write_atomic(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the same folder, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp", dir=path.parent
    )
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as CSV, atomically."""
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_json_atomic(data: dict, path: str | Path) -> Path:
    """Write ``data`` as indented JSON, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, default=str)

    return write_atomic(path, write)
