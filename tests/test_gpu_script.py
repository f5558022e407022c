"""The GPU script (benchmarks/gpu) in its CPU-tiny mode: every part runs at toy sizes and
writes its files, a failing part is recorded without stopping the others, parts are
time-boxed. Figures are checked for sense only (speed lives in the script's GPU run)."""

from __future__ import annotations

import json
import math
import sys
import time

import pandas as pd
import pytest
import torch
from retune_suite.experiments.error_study.cost import CPU_METHOD
from retune_suite.operators.errors import InvalidInputError

from benchmarks.gpu import parts
from benchmarks.gpu.modes import MODES
from benchmarks.gpu.run import main, run_parts


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "results"
    assert main(["--out", str(out), "--mode", "cpu-tiny", "--budget-s", "900"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_every_part_runs_and_writes_its_files(tiny_run):
    out, summary = tiny_run
    assert summary["complete"] is True
    assert list(summary["parts"]) == [
        "environment",
        "cuda_tests",
        "bandwidth",
        "estimators",
        "peers",
        "errors",
        "training",
    ]
    for name, result in summary["parts"].items():
        assert result["status"].startswith("ok"), (name, result)
    env = json.loads((out / "environment.json").read_text())
    assert {"date", "commit", "device_name", "torch", "torch_cuda", "nvidia_smi"} <= set(env)
    tests = summary["parts"]["cuda_tests"]
    assert tests["failed"] == 0 and tests["skipped"] > 0  # the CUDA tests skip on a CPU
    junit = (out / "cuda_tests" / "junit.xml").read_text()
    assert "test_gpu_script" not in junit  # this file would run the script again, endlessly
    bandwidth = pd.read_csv(out / "bandwidth" / "bandwidth.csv")
    assert len(bandwidth) == 2 and (bandwidth.fraction_of_copy_bandwidth > 0).all()
    assert summary["parts"]["bandwidth"]["aim"] == parts.BANDWIDTH_AIM


def test_estimator_figures_are_those_of_the_graphs(tiny_run):
    """Unrolled carries K·T steps, ReTune K: unrolled's allocator peak is the larger."""
    out, _ = tiny_run
    frame = pd.read_csv(out / "estimators" / "estimators.csv")
    assert set(frame.estimator) == {"retune", "unrolled", "jfb", "deq_solve"}
    assert (frame.peak_mib > 0).all() and (frame.seconds_median > 0).all()
    assert set(frame.peak_method) == {CPU_METHOD}
    peak = frame.set_index("estimator").peak_mib
    assert peak["unrolled"] > peak["retune"]


def test_command_parts_leave_their_results(tiny_run):
    out, summary = tiny_run
    assert len(pd.read_csv(out / "peers" / "bench.csv")) == summary["parts"]["peers"]["rows"] > 0
    errors = pd.read_csv(out / "errors" / "metrics.csv")
    assert {"peak_mib", "peak_method", "seconds_median"} <= set(errors.columns)
    training = summary["parts"]["training"]
    assert training["training_steps"] >= 1 and math.isfinite(training["seconds_per_step_median"])


def _context(tmp_path, budget: float) -> parts.Context:
    return parts.Context(MODES["cpu-tiny"], tmp_path, time.monotonic() + budget)


def test_a_failing_part_is_recorded_and_the_others_run(tmp_path):
    def broken(ctx):
        raise RuntimeError("CUDA error: an illegal memory access\nmore")

    def fine(ctx, timeout):
        return {"status": "ok", "timeout": timeout}

    summary = run_parts(_context(tmp_path, 600), [("a", broken, False), ("b", fine, True)])
    assert (
        summary["parts"]["a"]["status"]
        == "failed: RuntimeError: CUDA error: an illegal memory access"
    )
    assert "Traceback" in summary["parts"]["a"]["traceback"]
    assert summary["parts"]["b"]["status"] == "ok"
    assert 500 < summary["parts"]["b"]["timeout"] < 600  # the last part gets the time left
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_parts_are_time_boxed(tmp_path):
    start = time.monotonic()
    code, seconds = parts.run_command(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log.txt", 1.0, grace=2
    )
    assert code is None and seconds < 10 and time.monotonic() - start < 10
    summary = run_parts(_context(tmp_path, 0), [("late", lambda ctx: {"status": "ok"}, False)])
    assert summary["parts"]["late"]["status"] == "skipped: no time left"


def test_bad_invocations_are_refused(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(InvalidInputError, match="holds a run"):
        main(["--out", str(tmp_path), "--mode", "cpu-tiny"])
    with pytest.raises(InvalidInputError, match="--budget-s must be above"):
        main(["--out", str(tmp_path / "new"), "--mode", "cpu-tiny", "--budget-s", "1"])
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="needs a CUDA device"):
            main(["--out", str(tmp_path / "new"), "--mode", "gpu"])
