"""One check for every resumable job: is the saved configuration the one asked for now?"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from retune_suite.operators.errors import InvalidInputError


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
