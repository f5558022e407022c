"""The examples run and do what they say."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_train_your_own_map_learns():
    """A learned prox in forward-backward, trained through ``equilibrium(backward="retune")``
    with ``.backward()`` and Adam: the training loss falls by more than half in 60 steps."""
    main = runpy.run_path(str(EXAMPLES / "train_your_own.py"))["main"]
    first, last = main(steps=60)
    assert last < 0.5 * first, (first, last)
