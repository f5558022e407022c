"""Smoke runs of the before/after step and DWT benchmark scripts on small images (timings are not
asserted: speed lives in benchmarks/), so that a change in operators/ cannot rot them."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import step_before_after, step_costs


def _run(module, monkeypatch, tmp_path, *args: str) -> list[dict]:
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", [module.__name__, *args, "--out", str(out)])
    module.main()
    return json.loads(out.read_text())["rows"]


@pytest.fixture(autouse=True)
def _restore_threads():
    import torch

    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_step_before_after(monkeypatch, tmp_path):
    rows = _run(
        step_before_after, monkeypatch, tmp_path,
        "--size", "16", "--batch", "1", "--repeats", "1", "--threads", "1", "--priors", "BC",
        "--variants", "unfused,after",
    )  # fmt: skip
    timed = {r["variant"]: r for r in rows if "step_ms" in r}
    assert set(timed) == {"unfused", "after"}
    assert all(0 < r["floor_fraction"] for r in timed.values())
    diffs = {
        r["variant"]: r["value"] for r in rows if "gradient rel. difference" in r.get("variant", "")
    }
    # the in-place step computes the unfused one's numbers bit for bit
    assert diffs["after: gradient rel. difference to unfused"] == 0.0


def test_step_costs(monkeypatch, tmp_path):
    rows = _run(
        step_costs, monkeypatch, tmp_path,
        "--size", "32", "--repeats", "1", "--passes", "1", "--threads", "1",
    )  # fmt: skip
    dwt = {r["dwt"] for r in rows if "dwt" in r}
    for name in ("before", "after"):
        assert {f"ours {name} {k}" for k in ("forward", "inverse", "round trip")} <= dwt
    steps = {(r["task"], r["dwt_variant"]) for r in rows if "task" in r}
    assert steps == {("denoise", "after")} | {
        (task, v) for task in ("inpaint", "deblur") for v in ("before", "after")
    }
