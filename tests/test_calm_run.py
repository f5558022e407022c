"""An everyday run is calm: the suite's commands print no warning the user cannot act on
(issue 26, item 7)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import torch
from retune_suite.operators.jacobians import jvp, load_forward_mode


def test_verify_prints_no_warning(tmp_path):
    """torch's first forward-mode product used to print a ``torch.jit.script`` FutureWarning on
    every run (its jvp decompositions are loaded with the deprecated scripter)."""
    done = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-m", "retune_suite.experiments.cli",
         "verify", "--out", str(tmp_path / "verify")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]


def test_quiet_load_leaves_the_users_filters_alone():
    """The one load is filtered for that message only; the caller's filters are unchanged and
    a warning of the caller's still shows."""
    before = list(warnings.filters)
    load_forward_mode()
    assert warnings.filters == before
    _, tangent = jvp(lambda x: 3 * x, (torch.ones(2),), (torch.ones(2),))
    assert torch.equal(tangent, torch.full((2,), 3.0))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn("the user's own", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["the user's own"]
