"""``retune-suite verify`` prints the table, writes CSV atomically, flags the finding."""

from __future__ import annotations

import pandas as pd
from retune_suite.experiments.cli import main


def test_verify_writes_csv(tmp_path, capsys):
    assert main(["verify", "--out", str(tmp_path), "--K", "2", "--T", "3"]) == 0
    out = capsys.readouterr().out
    assert "counterexample_thm2" in out and "theorem2_corrected" in out
    frame = pd.read_csv(tmp_path / "verify.csv")
    assert not list(tmp_path.glob(".*.tmp"))
    bounds_rows = frame[frame.kind == "bound"]
    assert set(bounds_rows.problem) == {
        "scalar_affine",
        "counterexample_thm2",
        "ridge",
        "logcosh",
        "l1",
        "group_l21",
    }
    corrected = bounds_rows[bounds_rows.name.str.endswith("corrected")]
    # every corrected statement gets a verdict (δ is analytic) and it is True; NaN (no
    # verdict) would be truthy under astype(bool), so compare the strings
    assert set(corrected.holds.astype(str)) == {"True"}
    printed = bounds_rows[
        (bounds_rows.problem == "counterexample_thm2")
        & bounds_rows.name.isin(["theorem2", "corollary1"])
    ]
    assert set(printed.holds.astype(str)) == {"False"}
