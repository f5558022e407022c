"""The one progress-bar helper (tqdm, which deepinv already depends on)."""

from __future__ import annotations

from typing import Any


def progress(total: int, *, initial: int = 0, desc: str = "", enabled: bool = True) -> Any:
    """A tqdm bar over ``total`` steps starting at ``initial`` (resumed runs), or ``None``.

    ``None`` when disabled, so callers write ``if bar is not None: bar.update()``. tqdm writes
    to stderr and stays quiet when stderr is not a terminal only if the caller disables it.
    """
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=True)
