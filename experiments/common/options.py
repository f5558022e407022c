"""Typed list options: one parser for every ``--Ks 1,5,10``-style flag of the CLI, one for
``K,T;K,T`` groups, and the conversion of a dataclass configuration's typed list fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from retune_suite.operators.errors import InvalidInputError


def parse_list(
    text: str | list | tuple, kind: Callable[[str], Any] = int, *, name: str = "option"
) -> tuple:
    """``"1,5,10"`` → ``(1, 5, 10)`` (``kind`` converts each item); lists pass through typed.

    Items may be separated by commas and/or spaces; ``kind=int`` items must be integers.

    Examples
    --------
    >>> parse_list("1, 5,10")
    (1, 5, 10)
    >>> parse_list("0.1 0.5", float)
    (0.1, 0.5)
    """
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    if not items:
        raise InvalidInputError(f"--{name} is empty: give comma-separated values, e.g. 1,5,10.")
    out = []
    for item in items:
        try:
            value = kind(item)
            if kind is int and isinstance(item, float) and item != value:
                raise ValueError(item)  # 1.5 is not an integer; int() would truncate it
            out.append(value)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(
                f"--{name}: {item!r} is not a valid {getattr(kind, '__name__', 'value')}; "
                "give comma-separated values, e.g. 1,5,10."
            ) from error
    return tuple(out)


def parse_groups(
    text: str | list | tuple,
    kind: Callable[[str], Any] = int,
    *,
    name: str = "option",
    size: int | None = None,
    example: str = "1,1;10,10",
) -> tuple[tuple, ...]:
    """``"1,1;10,10"`` → ``((1, 1), (10, 10))``: groups separated by ``;``, each one read by
    :func:`parse_list`; a sequence of sequences (a JSON list of lists) passes through typed.

    ``size``, when given, is the number of items every group must have.

    Examples
    --------
    >>> parse_groups("1,1; 10,10", size=2)
    ((1, 1), (10, 10))
    >>> parse_groups([[1, 10]])
    ((1, 10),)
    """
    if isinstance(text, str):
        groups: list = [group for group in text.split(";") if group.strip()]
    elif isinstance(text, list | tuple):
        groups = list(text)
    else:
        groups = []
    if not groups:
        raise InvalidInputError(f"--{name} {text!r}: give groups separated by ';', e.g. {example}.")
    out = []
    for group in groups:
        if not isinstance(group, str | list | tuple):
            raise InvalidInputError(
                f"--{name} {text!r}: {group!r} is not a group of values; write them as {example}."
            )
        values = parse_list(group, kind, name=name)
        if size is not None and len(values) != size:
            raise InvalidInputError(
                f"--{name} {text!r}: {group!r} has {len(values)} value(s), each group needs "
                f"{size}; write them as {example}."
            )
        out.append(values)
    return tuple(out)


def convert_fields(
    config: type, values: Mapping[str, Any], *, strict: bool = True
) -> dict[str, Any]:
    """``values`` with each field of the dataclass ``config`` that names a converter
    (``field(metadata={"parse": converter})``) converted by it; other keys are untouched.

    Used on command-line text, on a configuration saved as JSON (lists for tuples, or the text
    an older version stored) and in ``__post_init__``. With ``strict=False`` a value that its
    converter refuses is kept as it is, for the command's validation to report before any work
    (the command line builds a configuration before it can print a clean error).

    Examples
    --------
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Config:
    ...     ks: tuple[int, ...] = field(default=(1,), metadata={"parse": parse_list})
    >>> convert_fields(Config, {"ks": "1,5", "other": "x"})
    {'ks': (1, 5), 'other': 'x'}
    """
    out = dict(values)
    for f in dataclasses.fields(config):
        parse = f.metadata.get("parse")
        if parse is None or f.name not in out:
            continue
        try:
            out[f.name] = parse(out[f.name])
        except InvalidInputError:
            if strict:
                raise
    return out


class TypedFields:
    """Mixin for the jobs' dataclass configurations: after ``__init__``, every field that names
    a converter is converted (:func:`convert_fields`, ``strict=False``: text that does not
    parse is kept for the job's ``validate`` to report before any work)."""

    def __post_init__(self) -> None:
        for name, value in convert_fields(type(self), vars(self), strict=False).items():
            setattr(self, name, value)
