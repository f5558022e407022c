"""Typed list options: one parser for every ``--Ks 1,5,10``-style flag of the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from operators.errors import InvalidInputError


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
