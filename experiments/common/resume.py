"""What every resumable job trusts of a run folder, and how it decides what to do with it.

- :func:`read_saved_config`: the settings in a run's ``config.json`` (one clear error when it
  is not JSON);
- :func:`read_csv_records`: the complete records of a CSV the job wrote (a last line cut short
  is dropped, to be computed again; random bytes are one clear error);
- :func:`check_resume` / :func:`config_changes`: is the saved configuration the one asked for
  now?
- :func:`run_state`: a new run, a resumption, or a run already complete (the same command run
  twice exits 0), or the error that says what to pass;
- :func:`config_hash`: the identity of a configuration, stored in checkpoints;
- :func:`interrupt_hint`: the line printed on Ctrl-C (the command line then exits 130);
- :func:`exit_with`: ``sys.exit`` for a ``python -m`` entry point that keeps 130 on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from retune_suite.operators.errors import InvalidInputError

from .options import convert_fields


def _as_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def _normal(value: Any) -> Any:
    """Compare as JSON would store it: tuples are lists, paths and dtypes are strings."""
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def config_changes(
    saved: Mapping[str, Any], current: Any, resumable: Iterable[str] = ()
) -> list[str]:
    """The settings that differ between ``saved`` and ``current``, as ``"name: old -> new"``.

    ``current`` is a dataclass instance or a mapping; keys in ``resumable`` may change.

    Examples
    --------
    >>> config_changes({"K": 10, "T": 5, "out": "a"}, {"K": 10, "T": 6, "out": "b"}, ["out"])
    ['T: 5 -> 6']
    """
    now = _as_dict(current)
    skip = set(resumable)
    changed = []
    for key in sorted(set(saved) | set(now)):
        if key in skip:
            continue
        old, new = _normal(saved.get(key)), _normal(now.get(key))
        if old != new:
            changed.append(f"{key}: {old!r} -> {new!r}")
    return changed


def check_resume(
    saved: Mapping[str, Any] | None,
    current: Any,
    *,
    where: str,
    resumable: Iterable[str] = (),
    fix: str = "give the same settings as the first run, or choose another output folder",
) -> None:
    """Raise :class:`InvalidInputError` naming every changed setting; ``saved=None`` passes.

    ``where`` names what is being resumed (a folder, a checkpoint), ``fix`` what to do.
    """
    if saved is None:
        return
    resumable = tuple(resumable)
    changed = config_changes(saved, current, resumable)
    if changed:
        allowed = f" Only {', '.join(resumable)} may change." if resumable else ""
        raise InvalidInputError(
            f"cannot resume {where}: the settings differ from the saved ones ("
            + "; ".join(changed)
            + f").{allowed} To continue, {fix} (nothing is overwritten)."
        )


def run_state(
    where: str | Path,
    *,
    exists: bool,
    saved: Mapping[str, Any] | None,
    current: Any,
    resume: bool,
    complete: Callable[[], bool],
    resumable: Iterable[str] = (),
    other: str = "--out",
) -> str:
    """``"new"``, ``"resume"`` or ``"complete"`` for a run folder ``where``, or the error that
    says what to pass.

    ``exists``: the folder holds results of a run; ``saved``: its settings (None: unknown);
    ``complete()``: whether every result of ``current`` is there. A folder of other settings
    is never resumed nor overwritten; with the same settings a finished run is ``"complete"``
    (nothing to do), an unfinished one resumes with ``resume`` only (a resumed run joins rows
    computed at two times: the researcher asks for it) and is otherwise refused with the flag
    to pass. ``other`` names the option that chooses another folder.

    Examples
    --------
    >>> run_state("runs/x", exists=True, saved={"K": 1}, current={"K": 1}, resume=False,
    ...           complete=lambda: True)
    'complete'
    """
    if not exists:
        return "new"
    resumable = tuple(resumable)
    if saved is not None:
        changed = config_changes(saved, current, resumable)
        if changed and resume:
            check_resume(
                saved,
                current,
                where=str(where),
                resumable=resumable,
                fix=f"give the settings of the first run, or choose another {other}",
            )
        if changed:
            raise InvalidInputError(
                f"{where} holds a run with other settings ({'; '.join(changed)}): choose "
                f"another {other}, or give the same settings to continue that run (nothing "
                "is overwritten)."
            )
    if resume:
        return "resume"
    if saved is not None and complete():
        return "complete"
    raise InvalidInputError(
        f"{where} holds an unfinished run of these settings: pass --resume to continue it, or "
        f"choose another {other} (nothing is overwritten)."
    )


def first_line(error: BaseException) -> str:
    """The first line of an error's message (torch's can run over many), for one-line errors."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def read_saved_config(
    path: str | Path, config: type, *, defaults: bool = False, other: str = "--out"
) -> dict[str, Any] | None:
    """The fields of ``config`` saved in ``path`` (a run's ``config.json``), typed as the
    dataclass types them; None when there is no such file.

    The run's metadata (``torch``, ``device_resolved``, ...) is left out. A field the file
    predates is left out too, or with ``defaults`` given its default (what the older version
    did without it). A file that is not a JSON object is one :class:`InvalidInputError` that
    names it and what to do.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(
            f"{path} is damaged: not readable JSON ({first_line(error)}); delete it and run "
            f"the same command with --resume (the results beside it are kept), or choose "
            f"another {other}."
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{path} is damaged: not a JSON object of settings; delete it and run the same "
            f"command with --resume (the results beside it are kept), or choose another {other}."
        )
    saved = {}
    for f in dataclasses.fields(config):
        if f.name in data:
            saved[f.name] = data[f.name]
        elif defaults:
            saved[f.name] = getattr(config(), f.name)
    return convert_fields(config, saved, strict=False)


def _record_ends(text: str) -> int:
    """The length of the part of ``text`` made of complete records: up to the last line end
    outside a quoted field (pandas quotes a field with a line end in it, doubling quotes)."""
    end, quoted, position = 0, False, 0
    for line in text.split("\n")[:-1]:  # the piece after the last "\n" has no line end
        position += len(line) + 1
        quoted ^= line.count('"') % 2 == 1
        if not quoted:
            end = position
    return end


def read_csv_records(
    path: str | Path, *, required: Iterable[str] = (), other: str = "--out"
) -> tuple[Any, bool]:
    """The complete records of a CSV a job wrote, as a DataFrame, and whether a last record
    cut short (a file truncated by a crash or a copy) was dropped: it is computed again.

    The jobs write every CSV atomically, so a torn file comes from outside; its complete rows
    are kept. A file that is not UTF-8 text, whose records do not match its header, or that
    lacks a column of ``required`` is one :class:`InvalidInputError` naming it and the fix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = path.write_text("K,status\\n1,done\\n2,estima")
    >>> frame, torn = read_csv_records(path)
    >>> frame.K.tolist(), torn
    ([1], True)
    """
    import csv

    import pandas as pd

    path = Path(path)
    fix = f"delete it and run the same command with --resume, or choose another {other}"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"cannot read {path} ({error.strerror}): {fix}.") from None
    complete = data[: data.rfind(b"\n") + 1]  # a character cut in two can only be at the end
    try:
        text = complete.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(
            f"{path} is damaged: not a CSV file of this job (byte {error.start} is not UTF-8 "
            f"text); {fix}."
        ) from None
    text = text[: _record_ends(text)]
    torn = len(text.encode("utf-8")) < len(data)
    if not text:
        return pd.DataFrame(columns=list(required)), torn
    records = list(csv.reader(io.StringIO(text)))
    width = len(records[0])
    for number, record in enumerate(records[1:], start=2):
        if len(record) != width:
            raise InvalidInputError(
                f"{path} is damaged: record {number} has {len(record)} fields, the header "
                f"{width}; {fix}."
            )
    missing = [name for name in required if name not in records[0]]
    if missing:
        raise InvalidInputError(
            f"{path} is damaged: not a CSV file of this job (no column {', '.join(missing)}); "
            f"{fix}."
        )
    return pd.read_csv(io.StringIO(text)), torn


def config_hash(config: Any, ignore: Iterable[str] = ()) -> str:
    """A short hash of the settings of a dataclass ``config`` that differ from its defaults,
    ``ignore`` left out: the identity of the run a checkpoint belongs to.

    Only the settings that differ from the defaults count, so that a field added to the
    configuration later (at its default) leaves the identity of older checkpoints unchanged.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     K: int = 1
    ...     out: str = "runs"
    >>> config_hash(C(K=1, out="a"), ["out"]) == config_hash(C(), ["out"])
    True
    """
    skip = set(ignore)
    default = type(config)()
    values = {}
    for f in dataclasses.fields(config):
        value = _normal(getattr(config, f.name))
        if f.name not in skip and value != _normal(getattr(default, f.name)):
            values[f.name] = value
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def interrupt_hint(text: str) -> Iterator[None]:
    """On Ctrl-C print ``interrupted: <text>`` (what is kept, how to go on) to stderr, then let
    the interruption go on (the command line exits 130 without a traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"\ninterrupted: {text}", file=sys.stderr, flush=True)
        raise


INTERRUPTED = 130  # the shell's status for a job stopped by Ctrl-C (128 + SIGINT)


def exit_with(status: int) -> NoReturn:
    """``sys.exit(status)`` for a ``python -m`` entry point, where 130 stays 130.

    CPython (3.11 and 3.12 at least, ``run_eval_code_obj``) marks a KeyboardInterrupt that
    ends a string ``exec``/``eval`` as unhandled even when a caller catches it; dataclasses and
    namedtuple run such strings while a module is imported, so a Ctrl-C that lands there sets
    the mark. Under ``python -m`` the interpreter then drops the exit status and kills itself
    with SIGINT (``returncode == -2``). A string eval resets the mark at its start, so after a
    caught interruption one harmless eval lets the status through. Console scripts never hit
    this.
    """
    if status == INTERRUPTED:
        eval("None")  # resets the mark described above; evaluates nothing of the user's
    sys.exit(status)
