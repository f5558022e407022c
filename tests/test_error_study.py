"""``retune-suite errors`` on a tiny grid: outputs, bounds on the same rows, resume, errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from retune_suite.experiments.cli import main
from retune_suite.experiments.error_study import KEY, ErrorStudyConfig, run_errors, validate
from retune_suite.experiments.error_study.cost import CPU_METHOD
from retune_suite.operators.errors import InvalidInputError
from torch.utils._python_dispatch import TorchDispatchMode

TINY = [
    "--size",
    "32",
    "--batch",
    "1",
    "--device",
    "cpu",
    "--dtype",
    "float64",
    "--ks",
    "1,3",
    "--t-ref",
    "3",
    "--ts",
    "1,3",
    "--ks-for-t",
    "3",
    "--ps",
    "0,2",
    "--solve-tol",
    "1e-11",
    "--fixed-point-rtol",
    "1e-12",
    "--segment-points",
    "2",
    "--threads",
    "1",
    "--timing-repeats",
    "1",
]


def test_tiny_study_outputs_bounds_and_resume(tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        main(["errors", "--task", "denoise", "--prior", "wavelet-B", "--out", str(out), *TINY]) == 0
    )
    frame = pd.read_csv(out / "metrics.csv")
    assert json.loads((out / "config.json").read_text())["task"] == "denoise"
    for ext in ("pdf", "png"):
        assert (out / f"errors_denoise_wavelet-B.{ext}").stat().st_size > 10_000
    est = frame[frame.estimator.isin(["jfb", "retune", "unrolled", "neumann"])]
    assert set(est.estimator) == {"jfb", "retune", "unrolled", "neumann"}
    assert ((est.cosine >= -1 - 1e-12) & (est.cosine <= 1 + 1e-12)).all()
    jfb = frame[frame.estimator == "jfb"]
    assert (jfb.rel_error <= jfb.bound_lemma1).all()  # Lemma 1, denoising: analytic δ
    with_bound = frame[frame.bound_theorem2_corrected.notna()]
    assert (
        len(with_bound) == 2 and (with_bound.rel_error <= with_bound.bound_theorem2_corrected).all()
    )
    neumann = frame[frame.estimator == "neumann"]
    assert (neumann.rel_error <= neumann.bound_neumann).all()
    ref = frame[frame.estimator == "deq_solve"]
    assert ref.solve_residual.iloc[0] <= 1e-11
    # resuming a finished run recomputes nothing and duplicates nothing
    capsys.readouterr()
    assert (
        main(
            [
                "errors",
                "--task",
                "denoise",
                "--prior",
                "wavelet-B",
                "--out",
                str(out),
                "--resume",
                *TINY,
            ]
        )
        == 0
    )
    assert "already complete" in capsys.readouterr().out
    again = pd.read_csv(out / "metrics.csv")
    assert len(again) == len(frame)
    # without --resume an existing run is never overwritten
    assert main(["errors", "--task", "denoise", "--out", str(out), *TINY]) == 2


def test_resume_after_interruption(tmp_path, monkeypatch):
    """A run stopped after its first (task, prior) resumes with the rest, nothing lost."""
    import retune_suite.experiments.error_study as E

    cfg = ErrorStudyConfig(
        task="all",
        size=32,
        batch=1,
        device="cpu",
        dtype="float64",
        ks="1",
        t_ref=2,
        ts="2",
        ks_for_t="1",
        ps="0",
        solve_tol=1e-10,
        fixed_point_rtol=1e-11,
        segment_points=2,
        threads=1,
        timing_repeats=1,
        out=str(tmp_path / "all"),
    )
    calls = []
    original = E.Study.run

    def interrupted(self):
        calls.append((self.task, self.prior))
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(E.Study, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_errors(cfg)
    first = pd.read_csv(tmp_path / "all" / "metrics.csv")
    assert set(first.task) == {"denoise"} and set(first.prior) == {"wavelet-B"}
    monkeypatch.setattr(E.Study, "run", original)
    cfg.resume = True
    run_errors(cfg)
    final = pd.read_csv(tmp_path / "all" / "metrics.csv")
    keys = final[final.estimator != "constants"][["task", "prior", "estimator", "K", "T", "P"]]
    assert not keys.duplicated().any()
    assert set(zip(final.task, final.prior, strict=True)) == {
        ("denoise", "wavelet-B"),
        ("denoise", "wavelet-BC"),
        ("inpaint", "wavelet-BC"),
        ("deblur", "wavelet-BC"),
    }
    pd.testing.assert_frame_equal(
        final.iloc[: len(first)].reset_index(drop=True), first, check_dtype=False
    )


@pytest.mark.parametrize(
    "change,message",
    [
        ({"task": "segment"}, "unknown task"),
        ({"prior": "tv"}, "unknown prior"),
        ({"size": 40}, "multiple of 16"),
        ({"dtype": "float16"}, "float32 or float64"),
        ({"images": "/nonexistent/folder"}, "no such folder"),
        ({"ks": "1,x"}, "integers"),
    ],
)
def test_configuration_validated_before_work(change, message):
    with pytest.raises(InvalidInputError, match=message):
        validate(ErrorStudyConfig(**change))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="no CUDA device"):
        validate(ErrorStudyConfig(device="cuda"))


def test_pnp_study_has_no_bounds_and_reports_local_contraction(tmp_path):
    """FB-PnP (53) with a (contractive, untrained) tiny DRUNet: estimators, no bounds."""
    from retune_suite.operators.maps.pnp import load_drunet

    with torch.random.fork_rng():  # deepinv draws the random weights from the global RNG
        torch.manual_seed(0)
        net = load_drunet(channels=3, nc=(8, 16, 32, 64), nb=1, dtype=torch.float64)
    path = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), path)
    out = tmp_path / "pnp"
    assert (
        main(
            [
                "errors",
                "--task",
                "inpaint",
                "--prior",
                "pnp",
                "--denoiser",
                str(path),
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    frame = pd.read_csv(out / "metrics.csv")
    est = frame[frame.estimator.isin(["jfb", "retune", "neumann"])]
    assert len(est) > 0 and est.rel_error.notna().all()
    assert not any(c.startswith("bound_") for c in frame.columns)
    constants = frame[frame.estimator == "constants"].iloc[0]
    assert 0 < constants.local_contraction < 1


# K ∈ {1, 3}, T ∈ {1, 2}, P ∈ {0, 2}: a unit of nine estimator rows in a few seconds.
SMALL = dict(
    task="denoise",
    prior="wavelet-B",
    size=32,
    batch=1,
    device="cpu",
    dtype="float64",
    ks=(1, 3),
    t_ref=2,
    ts=(1, 2),
    ks_for_t=(3,),
    ps=(0, 2),
    solve_tol=1e-10,
    fixed_point_rtol=1e-11,
    threads=1,
    timing_repeats=1,
    quiet=True,
)


def _flags(values: dict) -> list[str]:
    out = []
    for name, value in values.items():
        flag = f"--{name.replace('_', '-')}"
        if value is True:
            out.append(flag)
        else:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            out += [flag, text]
    return out


def test_resume_refuses_a_changed_configuration(tmp_path, capsys):
    """--resume compares config.json with the settings given: a changed K grid is refused
    (naming it) and config.json is kept; a resumable field (threads) may change."""
    out = tmp_path / "study"
    args = ["errors", *_flags(SMALL), "--out", str(out)]
    assert main(args) == 0
    saved = (out / "config.json").read_text()
    rows = pd.read_csv(out / "metrics.csv")
    capsys.readouterr()
    assert main([*args, "--resume", "--ks", "1,2"]) == 2
    message = capsys.readouterr().err
    assert "cannot resume" in message and "ks: [1, 3] -> [1, 2]" in message
    assert (out / "config.json").read_text() == saved
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), rows)
    assert main([*args, "--resume", "--threads", "2"]) == 0
    assert (out / "config.json").read_text() == saved


def test_rows_of_other_settings_are_not_taken_for_this_run(tmp_path):
    """The row key holds size, batch, dtype and seed: rows of another seed in metrics.csv are
    neither skipped as done nor mixed with this run's."""
    cfg = ErrorStudyConfig(**SMALL, out=str(tmp_path / "run"))
    run_errors(cfg)
    path = tmp_path / "run" / "metrics.csv"
    first = pd.read_csv(path)
    assert {"size", "batch", "dtype", "seed"} <= set(first.columns)
    assert (first.seed == 0).all() and (first["size"] == 32).all()
    other = first.assign(seed=1, rel_error=-1.0)  # rows of seed 1, marked
    other.to_csv(path, index=False)
    cfg.resume = True
    run_errors(cfg)
    final = pd.read_csv(path)
    ours = final[final.seed == 0]
    assert len(ours) == len(first) and (ours.rel_error.dropna() >= 0).all()
    assert len(final[final.seed == 1]) == len(first)
    keys = final[final.estimator != "constants"][list(KEY)]
    assert not keys.duplicated().any()


def test_interruption_keeps_every_row_computed(tmp_path, monkeypatch):
    """Each row is written as it is computed: stopped in the middle of a (task, prior), the
    rows so far are on disk, and --resume computes only the others."""
    from retune_suite.operators import hypergrad

    calls: list[tuple] = []
    original = hypergrad.retune

    def retune(step, theta, x0, loss, K, T, **kwargs):
        if (K, T) not in calls:  # a row calls it 1 + timing_repeats times
            calls.append((K, T))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(step, theta, x0, loss, K, T, **kwargs)

    monkeypatch.setattr(hypergrad, "retune", retune)
    cfg = ErrorStudyConfig(**SMALL, out=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        run_errors(cfg)
    partial = pd.read_csv(tmp_path / "run" / "metrics.csv")
    # K = 1 done (its ReTune at t_ref = 2 is the T sweep's), then ReTune K = 3, T = 1
    assert set(partial.estimator) == {"deq_solve", "jfb", "retune", "unrolled"}
    retunes = partial[partial.estimator == "retune"]
    assert sorted(zip(retunes.K, retunes["T"], strict=True)) == [(1, 2), (3, 1)]
    assert not list((tmp_path / "run").glob(".*.tmp"))
    calls.clear()
    cfg.resume = True
    run_errors(cfg)
    final = pd.read_csv(tmp_path / "run" / "metrics.csv")
    retunes = final[final.estimator == "retune"]
    # ReTune rows (1, 2), (3, 1), (3, 2): only the one missing is computed on resumption
    assert sorted(zip(retunes.K, retunes["T"], strict=True)) == [(1, 2), (3, 1), (3, 2)]
    assert calls == [(3, 2)]
    assert not final[final.estimator != "constants"][list(KEY)].duplicated().any()
    pd.testing.assert_frame_equal(
        final.iloc[: len(partial)][partial.columns].reset_index(drop=True),
        partial,
        check_dtype=False,
    )


def test_fixed_point_estimators_share_one_linearisation_per_K(tmp_path, monkeypatch):
    """The DEQ reference, JFB and Neumann at x̂ reuse hypergrad.linearise, once per K."""
    from retune_suite.operators import hypergrad

    built: list[int] = []
    original = hypergrad.linearise

    def linearise(step, theta, x_star, K):
        built.append(K)
        return original(step, theta, x_star, K)

    monkeypatch.setattr(hypergrad, "linearise", linearise)
    run_errors(ErrorStudyConfig(**SMALL, out=str(tmp_path / "run")))
    assert built == [1, 3]  # the reference and JFB at K = 1; JFB and Neumann at K = 3
    frame = pd.read_csv(tmp_path / "run" / "metrics.csv")
    shared = frame[frame.estimator.isin(["deq_solve", "jfb", "neumann"])]
    assert (shared.linearise_seconds > 0).all()


def test_every_field_has_help_and_list_fields_are_typed(capsys):
    from retune_suite.experiments.cli import _add_dataclass_arguments

    for f in dataclasses.fields(ErrorStudyConfig):
        assert f.metadata.get("help"), f.name
    with pytest.raises(SystemExit):
        main(["errors", "--help"])
    shown = capsys.readouterr().out
    assert "Neumann truncations P" in shown and "K of the T sweep" in shown
    assert ErrorStudyConfig().ks == (1, 2, 5, 10, 20)
    parser = argparse.ArgumentParser()
    _add_dataclass_arguments(parser, ErrorStudyConfig)
    args = vars(parser.parse_args(["--ks", "1,3", "--ps", "0, 2", "--ks-for-t", "3"]))
    cfg = dataclasses.replace(ErrorStudyConfig(), **args)
    assert (cfg.ks, cfg.ps, cfg.ks_for_t) == ((1, 3), (0, 2), (3,))
    with pytest.raises(InvalidInputError, match="--ps must be a comma-separated list"):
        validate(ErrorStudyConfig(ps="-1"))


CERTIFIED_ROWS = ["deq_solve", "jfb", "retune", "neumann"]


def test_certificate_and_tightness_columns(tmp_path):
    """Every ReTune / JFB / Neumann / deq_solve row carries the a-posteriori certificate
    (relative to ‖g‖, like the bound columns), its status and the tightness columns; L_θ is
    measured, so no status is "certified"; the fixed-point rows match
    retune_suite.operators.estimate."""
    from retune_suite.bounds import constants as C
    from retune_suite.experiments.common.data import crops, embedded_images
    from retune_suite.operators import fixed_point, hypergrad, unroll
    from retune_suite.operators.maps import section4

    run_errors(ErrorStudyConfig(**SMALL, out=str(tmp_path / "run")))
    frame = pd.read_csv(tmp_path / "run" / "metrics.csv")
    rows = frame[frame.estimator.isin(CERTIFIED_ROWS)]
    assert len(rows) == 8
    assert rows.certificate.notna().all() and (rows.certificate > 0).all()
    assert set(rows.certificate_status) == {"estimated"}  # never "certified": L_θ measured
    assert rows.certificate_reason.str.contains("L_θ").all()
    # where a status were "certified" the certificate would bound the observed error
    certified = rows[rows.certificate_status == "certified"]
    assert (certified.certificate >= certified.rel_error).all()
    # the fixed-point rows (x_s = x̂: the L_θ terms vanish up to the residual) bound it here
    at_fixed_point = rows[rows.estimator.isin(["jfb", "neumann"])]
    assert (at_fixed_point.certificate >= at_fixed_point.rel_error).all()
    # tightness = column / observed (both relative to ‖g‖); NaN for the reference (error 0)
    observed = rows[rows.rel_error > 0]
    assert len(observed) == 7
    pd.testing.assert_series_equal(
        observed.tightness_certificate,
        observed.certificate / observed.rel_error,
        check_names=False,
    )
    for bound in ("lemma1", "neumann", "theorem2", "theorem2_corrected"):
        has = observed[observed[f"bound_{bound}"].notna()]
        assert len(has) > 0, bound
        pd.testing.assert_series_equal(
            has[f"tightness_{bound}"], has[f"bound_{bound}"] / has.rel_error, check_names=False
        )
        assert observed[f"tightness_{bound}"].notna().sum() == len(has)
    assert rows[rows.estimator == "deq_solve"].tightness_certificate.isna().all()
    assert frame[frame.estimator == "unrolled"].certificate.isna().all()
    # JFB's certificate is retune_suite.operators.estimate's with the study's constants
    constants = frame[frame.estimator == "constants"].iloc[0]
    g_norm = constants.g_norm
    clean = crops(embedded_images(), 32, 1, 0).to(torch.float64)
    p = section4.build("denoise", "wavelet-B", clean=clean, seed=0, log_lambda=-2.0)
    x_star = fixed_point(p.step, p.theta, p.x0, 1, rtol=1e-11, method="anderson").x
    H = 1.0 / p.fb.weights(p.theta).min().item() ** 2
    for K in (1, 3):
        L_theta = C.lipschitz_theta(unroll(p.step, K), x_star, p.x0, p.theta)
        est = hypergrad.estimate(
            "jfb",
            p.step,
            p.theta,
            p.x0,
            p.loss,
            K=K,
            x_star=x_star,
            delta=p.delta(K),
            lipschitz_theta=L_theta,
            hessian_bound=H,
        )
        row = rows[(rows.estimator == "jfb") & (rows.K == K)].iloc[0]
        assert row.certificate == pytest.approx(est.certificate / g_norm, rel=1e-6)
        assert est.certificate_source["status"] == "certified"  # the study says "estimated"


def test_resume_of_a_run_without_certificate_columns(tmp_path):
    """A run written before the certificate columns resumes: its rows are kept (NaN in the new
    columns), the rows still missing are computed with them, nothing duplicated."""
    cfg = ErrorStudyConfig(**SMALL, out=str(tmp_path / "run"))
    run_errors(cfg)
    path = tmp_path / "run" / "metrics.csv"
    full = pd.read_csv(path)
    new = [c for c in full.columns if c.startswith(("certificate", "tightness_"))]
    assert {"certificate", "certificate_status", "tightness_certificate"} <= set(new)
    old = full.drop(columns=new)
    old = old[~((old.estimator == "neumann") & (old.P == 2)) & (old.estimator != "constants")]
    old.to_csv(path, index=False)
    cfg.resume = True
    run_errors(cfg)
    final = pd.read_csv(path)
    assert not final[final.estimator != "constants"][list(KEY)].duplicated().any()
    kept = final.iloc[: len(old)]
    pd.testing.assert_frame_equal(
        kept[old.columns].reset_index(drop=True), old.reset_index(drop=True), check_dtype=False
    )
    # the new row has the certificate and its own tightness columns (Neumann: no Lemma 1 or
    # Theorem 2 bound, so no tightness_lemma1 ... unless an old row had them: none did)
    present = [c for c in new if c in final.columns]
    assert {"certificate", "certificate_status", "tightness_neumann"} <= set(present)
    assert kept[present].isna().all().all()
    added = final[(final.estimator == "neumann") & (final.P == 2)].iloc[0]
    expected = full[(full.estimator == "neumann") & (full.P == 2)].iloc[0]
    assert added.certificate_status == "estimated"
    assert added.certificate == pytest.approx(expected.certificate, rel=1e-9)
    assert added.tightness_certificate == pytest.approx(expected.tightness_certificate, rel=1e-9)


COST_COLUMNS = ["seconds_median", "timing_repeats", "peak_mib", "peak_method"]


def test_allocator_peak_is_exact_for_known_allocations():
    """The CPU peak is the largest running sum of the allocator's events during the call:
    8000 + 2000 bytes live together, then 2000 + 3000; a tensor freed before the call and
    one kept from before do not count."""
    from retune_suite.experiments.error_study.cost import CPU_METHOD, allocated_peak

    def fn():
        a = torch.empty(1000, dtype=torch.float64)
        b = torch.empty(500, dtype=torch.float32)
        del a
        return b, torch.empty(3000, dtype=torch.uint8)

    _, peak, method = allocated_peak(fn, torch.device("cpu"))
    assert (peak, method) == (10_000, CPU_METHOD)


class _Observed(TorchDispatchMode):
    """A dispatch mode that only passes operators through: the conditions LiveStorages
    measures in (any Python dispatch mode makes autograd accumulate out of place)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _profiled_peak(fn, *, observed: bool = False) -> int:
    """The library's reading of a call's CPU peak: the largest running sum of the memory
    events of ``torch.profiler(profile_memory=True)`` (the error study's method before
    LiveStorages; it keeps every operator event). ``observed``: run ``fn`` under a
    pass-through dispatch mode, as LiveStorages runs it."""
    import contextlib

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    mode = _Observed() if observed else contextlib.nullcontext()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, mode:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_live_storages_read_what_the_profiler_reads_on_every_estimator(task):
    """The CPU peak of each estimator of the study (x̂ given to jfb, neumann, deq_solve) is
    the profiler's, byte for byte, in the same conditions (measured equal on all five
    estimators and three tasks at 32², float32 and float64, before LiveStorages replaced the
    profiler). Unobserved, the profiler may read less, never more: autograd then accumulates
    gradients in place (deq_solve on denoise, 2026-12-05: 832 122 B unobserved against
    848 506 B observed)."""
    from retune_suite.experiments.common.data import crops, embedded_images
    from retune_suite.experiments.error_study.cost import allocated_peak
    from retune_suite.operators import fixed_point, hypergrad
    from retune_suite.operators.maps import section4

    clean = crops(embedded_images(), 32, 1, 0).to(torch.float64)  # the blur kernel is 25²
    p = section4.build(task, "wavelet-BC", clean=clean, seed=0, log_lambda=-2.0)
    u = fixed_point(p.step, p.theta, p.x0, 1, rtol=1e-10, method="anderson").x
    calls = {
        "retune": lambda: hypergrad.retune(p.step, p.theta, p.x0, p.loss, 3, 2),
        "unrolled": lambda: hypergrad.unrolled(p.step, p.theta, p.x0, p.loss, 3, 2),
        "jfb": lambda: hypergrad.jfb(p.step, p.theta, u, p.loss, 3),
        "neumann": lambda: hypergrad.deq_neumann(p.step, p.theta, u, p.loss, 3, 2),
        "deq_solve": lambda: hypergrad.deq_solve(p.step, p.theta, u, p.loss, 1, tol=1e-8),
    }
    for name, call in calls.items():
        call()  # the θ-map caches of the wavelet step are filled once, outside both readings
        _, peak, _ = allocated_peak(call, torch.device("cpu"))
        assert peak == _profiled_peak(call, observed=True) > 0, name
        assert _profiled_peak(call) <= peak, name


def test_live_storages_count_what_autograd_keeps_until_it_frees_it():
    """sin saves its input 2x (8000 B) in the graph: dropping the Python names of the graph's
    tensors does not free it, backward does; the peak is the backward's cos, product and the
    saved 2x together, with h and the seed of the backward (8 B each)."""
    from retune_suite.experiments.error_study.cost import LiveStorages

    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    with LiveStorages(torch.device("cpu")) as live:
        y = (x * 2).sin()
        assert live.level == 16_000
        h = y.sum()
        del y  # sum keeps no tensor: y goes, 2x stays with sin's node
        assert live.level == 8_008
        h.backward()
        assert live.level == 8_008  # x.grad and h; the graph and its 2x are freed
        assert live.peak == 24_016
        del h
        assert live.level == 8_000


def test_live_storages_skip_what_existed_before_and_follow_resizes():
    """Views and in-place results of a tensor from before the call add nothing; an out=
    operator that resizes a tensor made in the call counts its new size; the mode's
    bookkeeping holds the live storages only (no per-operator log: 10 000 operators leave
    it as it was)."""
    from retune_suite.experiments.error_study.cost import LiveStorages

    before = torch.zeros(1000, dtype=torch.float64)
    with LiveStorages(torch.device("cpu")) as live:
        view = before.reshape(10, 100)[1:]
        before.add_(1.0)
        assert live.level == live.peak == 0
        out = torch.empty(0, dtype=torch.float64)
        torch.add(before, 1.0, out=out)
        assert live.level == 8_000
        for _ in range(10_000):
            out = out * 1.0
        assert live.level == 8_000 and live.peak == 16_000
        assert live.live_storages == 1
    assert view.shape == (9, 100)


def test_measure_cost_warms_up_and_takes_the_median_of_repeats():
    from retune_suite.experiments.error_study.cost import measure_cost

    calls = []
    out, cost = measure_cost(lambda: calls.append(1) or len(calls), torch.device("cpu"), 3)
    assert calls == [1, 1, 1, 1] and out == 4  # warm-up, then 3 timed; the last result
    assert cost.repeats == 3 and cost.seconds_median > 0
    with pytest.raises(InvalidInputError, match="at least 1"):
        measure_cost(lambda: None, torch.device("cpu"), 0)
    with pytest.raises(InvalidInputError, match="--timing-repeats must be at least 1"):
        validate(ErrorStudyConfig(timing_repeats=0))


def test_retune_and_unrolled_memory_is_that_of_their_graphs(tmp_path):
    """On the eager path ReTune carries the graph of its last K steps, so its peak is at
    least K·n·itemsize (one saved n-element tensor per step); unrolled carries K·T steps and
    costs more. With the RSS baseline of earlier versions ReTune read 4096 bytes here (0.004
    MiB at 256²). The fused last block (retune_suite.operators.maps.fused) keeps only its
    start and recomputes the K states in its VJP: its peak does not grow with K."""
    from retune_suite.operators.maps import fused

    fused.set_enabled(False)
    try:
        run_errors(ErrorStudyConfig(**SMALL, out=str(tmp_path / "run")))
    finally:
        fused.set_enabled(None)
    frame = pd.read_csv(tmp_path / "run" / "metrics.csv")
    rows = frame[frame.estimator != "constants"]
    assert rows[COST_COLUMNS].notna().all().all()
    assert set(rows.peak_method) == {CPU_METHOD}
    assert (rows.timing_repeats == SMALL["timing_repeats"]).all()
    assert (rows.seconds_median > 0).all()
    assert "peak_bytes" not in frame and "seconds" not in frame
    n, itemsize = 1 * 3 * 32 * 32, 8  # batch × colours × 32², float64
    for K in (1, 3):
        retune = rows[(rows.estimator == "retune") & (rows.K == K) & (rows["T"] == 2)].iloc[0]
        assert retune.peak_mib * 2**20 >= K * n * itemsize
        unrolled = rows[(rows.estimator == "unrolled") & (rows.K == K)].iloc[0]
        assert unrolled["T"] == 2 and unrolled.peak_mib > retune.peak_mib
    # the graph of Φ_K grows with K: ReTune at K = 3 above ReTune at K = 1 (same T)
    retune = rows[(rows.estimator == "retune") & (rows["T"] == 2)].set_index("K").peak_mib
    assert retune[3] > retune[1]
    if fused.backend("cpu") == "eager":
        return  # no kernel on this machine: the default path is the eager one above
    run_errors(ErrorStudyConfig(**SMALL, out=str(tmp_path / "fused")))
    kernel = pd.read_csv(tmp_path / "fused" / "metrics.csv")
    fused_retune = kernel[(kernel.estimator == "retune") & (kernel["T"] == 2)].set_index("K")
    assert fused_retune.peak_mib[3] == fused_retune.peak_mib[1] < retune[1]


def test_resume_of_a_run_with_the_old_time_and_memory_columns(tmp_path):
    """A run written with one cold call and sampled RSS (``seconds``, ``peak_bytes``,
    ``memory_kind``; no ``timing_repeats`` in config.json) resumes: its rows are kept, NaN in
    the new columns; the missing row is measured the new way; the figures are drawn."""
    cfg = ErrorStudyConfig(**SMALL, out=str(tmp_path / "run"))
    run_errors(cfg)
    out = tmp_path / "run"
    full = pd.read_csv(out / "metrics.csv")
    old = full.drop(columns=COST_COLUMNS).assign(
        seconds=0.01, peak_bytes=4096.0, memory_kind="cpu_rss_sampled"
    )
    old = old[~((old.estimator == "neumann") & (old.P == 2)) & (old.estimator != "constants")]
    old.to_csv(out / "metrics.csv", index=False)
    saved = json.loads((out / "config.json").read_text())
    del saved["timing_repeats"]
    (out / "config.json").write_text(json.dumps(saved))
    for png in out.glob("*.png"):
        png.unlink()
    cfg.resume = True
    run_errors(cfg)
    final = pd.read_csv(out / "metrics.csv")
    kept = final.iloc[: len(old)]
    pd.testing.assert_frame_equal(
        kept[old.columns].reset_index(drop=True), old.reset_index(drop=True), check_dtype=False
    )
    assert kept[COST_COLUMNS].isna().all().all()
    added = final[(final.estimator == "neumann") & (final.P == 2)].iloc[0]
    assert added.peak_method == CPU_METHOD and added.peak_mib > 0
    assert (out / "errors_denoise_wavelet-B.png").stat().st_size > 10_000


def test_tightness_figure_draws_the_tightness_columns(tmp_path, monkeypatch):
    """One tightness figure per (task, prior), drawn from metrics.csv alone: each line is a
    ``tightness_*`` column, which is its bound column over ``rel_error``."""
    import matplotlib.axes
    from retune_suite.experiments.error_study.figures import error_study_figures

    frame = pd.read_csv(Path(__file__).parents[1] / "docs/results/errors-quick/metrics.csv")
    rows = frame[frame.estimator == "retune"].dropna(subset=["bound_theorem2_corrected"])
    np.testing.assert_allclose(
        rows.tightness_theorem2_corrected, rows.bound_theorem2_corrected / rows.rel_error
    )
    drawn = []
    original = matplotlib.axes.Axes.plot

    def plot(self, x, y, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(y)))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    paths = error_study_figures(frame[frame.prior == "wavelet-BC"], tmp_path)
    assert (tmp_path / "tightness_denoise_wavelet-BC.png").stat().st_size > 10_000
    assert tmp_path / "tightness_inpaint_wavelet-BC.pdf" in paths
    sub = frame[(frame.task == "denoise") & (frame.prior == "wavelet-BC")]
    k1 = sub[(sub.estimator == "retune") & (sub.K == 1)].sort_values("T")
    assert ("Thm 2 corrected, K=1", list(k1.tightness_theorem2_corrected)) in [
        (label, y) for label, y in drawn
    ]


def test_resume_with_a_lower_unrolled_cap_keeps_the_rows_and_skips_the_rest(tmp_path):
    """unrolled_max_steps is resumable: it changes no row, only which unrolled rows are still
    planned (a run that ran out of memory resumes with a lower cap)."""
    out = tmp_path / "run"
    cfg = ErrorStudyConfig(**{**SMALL, "unrolled_max_steps": 6}, out=str(out))
    run_errors(cfg)
    full = pd.read_csv(out / "metrics.csv")
    assert set(full[full.estimator == "unrolled"].K) == {1, 3}  # K·T = 2 and 6
    # as if interrupted before the 6-step unrolled row and the closing constants row
    cut = full[
        ~(((full.estimator == "unrolled") & (full.K == 3)) | (full.estimator == "constants"))
    ]
    cut.to_csv(out / "metrics.csv", index=False)
    run_errors(dataclasses.replace(cfg, unrolled_max_steps=2, resume=True))
    again = pd.read_csv(out / "metrics.csv")
    pd.testing.assert_frame_equal(
        again.iloc[: len(cut)].reset_index(drop=True), cut.reset_index(drop=True), check_dtype=False
    )
    assert list(again.iloc[len(cut) :].estimator) == ["constants"]  # nothing else computed


def test_a_reference_solve_short_of_its_tolerance_names_the_fix(tmp_path, monkeypatch):
    """The DEQ reference stops at REFERENCE_MAXITER products: the error says which setting,
    and, when the tolerance is within rounding of the dtype (10⁻⁶ in float32: the 256×256
    deblurring reference stagnated at 1.7·10⁻⁶), to run it in float64; nothing is written
    as a result."""
    from retune_suite.experiments.error_study import study
    from retune_suite.operators.errors import ConvergenceError

    monkeypatch.setattr(study, "REFERENCE_MAXITER", 1)
    cfg = dict(SMALL, task="deblur", prior="wavelet-BC", dtype="float32", solve_tol=1e-6)
    with pytest.raises(ConvergenceError, match="run this setting with --dtype float64") as info:
        run_errors(ErrorStudyConfig(**cfg, out=str(tmp_path / "f32")))
    assert str(info.value).startswith("DEQ reference: GMRES did not reach")
    assert info.value.residuals  # the history travels with the error
    cfg = dict(cfg, dtype="float64", solve_tol=1e-10)
    with pytest.raises(ConvergenceError, match="Raise --solve-tol, or check") as info:
        run_errors(ErrorStudyConfig(**cfg, out=str(tmp_path / "f64")))
    assert "float64, or" not in str(info.value)
    assert not (tmp_path / "f64" / "metrics.csv").exists()


# ---------------------------------------------------------------- trusted state, calm reruns

# one unit of six rows (the reference, JFB, ReTune, unrolled, Neumann, the constants)
ONE_UNIT = dict(SMALL, ks=(1,), t_ref=1, ts=(1,), ks_for_t=(1,), ps=(0,))
TIMING = ["seconds_median", "peak_mib", "peak_method", "linearise_seconds", "timing_repeats"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "run"
    assert run_errors(ErrorStudyConfig(**ONE_UNIT, out=str(out))) == 0
    return out


def _last_row_offsets(path: Path) -> range:
    data = path.read_bytes()
    return range(data.rindex(b"\n", 0, len(data) - 1) + 1, len(data))


def test_a_torn_last_row_is_dropped_at_every_byte_offset(finished_run, tmp_path):
    """metrics.csv cut in the middle of its last row used to resume with the torn row kept
    (certificate_status 'estima', later cells empty); every cut drops it, nothing else."""
    from retune_suite.experiments.common.resume import read_csv_records

    full = pd.read_csv(finished_run / "metrics.csv")
    data = (finished_run / "metrics.csv").read_bytes()
    path = tmp_path / "metrics.csv"
    for cut in _last_row_offsets(finished_run / "metrics.csv"):
        path.write_bytes(data[:cut])
        rows, _ = read_csv_records(path, required=KEY)
        pd.testing.assert_frame_equal(rows, full.iloc[:-1], check_dtype=False)


@given(st.data())
@settings(max_examples=2)
def test_a_resumed_torn_run_recomputes_that_row_and_equals_the_uninterrupted_run(
    finished_run, tmp_path_factory, data
):
    import shutil

    from retune_suite.experiments.error_study import figures, study

    offsets = _last_row_offsets(finished_run / "metrics.csv")
    cut = data.draw(st.integers(offsets.start, offsets.stop - 1), label="byte offset")
    out = tmp_path_factory.mktemp("torn") / "run"
    shutil.copytree(finished_run, out)
    path = out / "metrics.csv"
    path.write_bytes(path.read_bytes()[:cut])
    killed = [out / ".metrics.csv.k1ll3d00.tmp", out / ".config.json.zz9y8x7w.tmp"]
    for temp in killed:  # temporary files of atomic writes killed before their rename
        temp.write_text("half")
    added = []
    original = study.Metrics.add
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            study.Metrics, "add", lambda self, row: added.append(row) or original(self, row)
        )
        patch.setattr(figures, "error_study_figures", lambda frame, out: [])  # not the subject
        assert run_errors(ErrorStudyConfig(**ONE_UNIT, out=str(out), resume=True)) == 0
    assert [row["estimator"] for row in added] == ["constants"]  # exactly the torn row
    assert not any(temp.exists() for temp in killed)
    resumed = pd.read_csv(path).drop(columns=TIMING, errors="ignore")
    full = pd.read_csv(finished_run / "metrics.csv").drop(columns=TIMING, errors="ignore")
    pd.testing.assert_frame_equal(resumed, full, check_exact=True)


def test_the_same_command_twice_is_complete_and_an_unfinished_run_says_what_to_pass(
    finished_run, tmp_path, capsys
):
    """The README's set-up command run twice failed ("metrics.csv exists: pass --resume"): a
    finished run of the same settings is complete (exit 0, nothing rewritten); one with other
    settings is refused; an unfinished one says to pass --resume."""
    import shutil

    args = ["errors", *_flags(ONE_UNIT), "--out", str(finished_run)]
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    capsys.readouterr()
    assert main(args) == 0
    assert "complete:" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before
    assert main([*args, "--seed", "1"]) == 2
    assert "other settings (seed: 0 -> 1)" in capsys.readouterr().err
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    rows = pd.read_csv(out / "metrics.csv")
    rows.iloc[:-1].to_csv(out / "metrics.csv", index=False)  # stopped before its last row
    assert main([*args[:-1], str(out)]) == 2
    assert "unfinished run of these settings: pass --resume" in capsys.readouterr().err


# -- the figures: coinciding curves, clipped certificates, the Lemma 1 note (issue 26, 7) --------


def _quick_unit(task: str, prior: str = "wavelet-BC") -> pd.DataFrame:
    """The rows of one (task, prior) of the committed quick run, its constants row included."""
    frame = pd.read_csv(Path(__file__).parents[1] / "docs/results/errors-quick/metrics.csv")
    return frame[(frame.task == task) & (frame.prior == prior)]


def test_error_figure_clips_certificates_beyond_the_errors_and_bounds():
    """The ReTune panel's range is set by its errors and bounds, not by the certificates (up
    to 10¹¹ at T = 1 on inpainting): each certificate point above the top is a ▲ on the top
    edge, and the legend says how far above."""
    import matplotlib.pyplot as plt
    from retune_suite.experiments.error_study.figures import ABOVE, error_figure

    for task in ("denoise", "inpaint"):
        sub = _quick_unit(task)
        fig = error_figure(sub)
        ax = fig.axes[1]  # ReTune error vs T
        retune = sub[(sub.estimator == "retune") & sub.bound_theorem2_corrected.notna()]
        ranged = pd.concat(
            [retune.rel_error, retune.bound_theorem2, retune.bound_theorem2_corrected]
        )
        bottom, top = ax.get_ylim()
        assert ranged.max() <= top < retune.certificate.max() / 100
        assert bottom <= ranged.min()
        above = [line for line in ax.get_lines() if line.get_marker() == ABOVE]
        assert sum(len(line.get_ydata()) for line in above) == (retune.certificate > top).sum()
        assert all(np.all(line.get_ydata() == top) and not line.get_clip_on() for line in above)
        labels = ax.get_legend_handles_labels()[1]
        assert any("above the panel" in label for label in labels), labels
        plt.close(fig)


def test_coinciding_bound_and_certificate_curves_are_distinguishable():
    """The JFB certificate at x̂ equals Lemma 1's bound to four digits, and ReTune's
    certificate at K = 10, T = 50 the two Theorem 2 bounds: curves that coincide carry
    different markers (each drawn), so every legend entry has something visible."""
    import matplotlib.pyplot as plt
    from retune_suite.experiments.error_study.figures import error_figure, tightness_figure

    frame = pd.read_csv(Path(__file__).parents[1] / "docs/results/errors-paper-scale/metrics.csv")
    sub = frame[(frame.task == "denoise") & (frame.prior == "wavelet-BC")]
    figures = [error_figure(sub), tightness_figure(sub, "denoise, wavelet-BC")]
    pairs = 0
    for fig in figures:
        for ax in [fig.axes[0], fig.axes[1], fig.axes[2]]:
            lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
            for i, one in enumerate(lines):
                for other in lines[i + 1 :]:
                    x1, y1 = np.asarray(one.get_xdata(), float), np.asarray(one.get_ydata(), float)
                    x2, y2 = (
                        np.asarray(other.get_xdata(), float),
                        np.asarray(other.get_ydata(), float),
                    )
                    if x1.shape != x2.shape or not (
                        np.array_equal(x1, x2) and np.allclose(y1, y2, rtol=1e-2)
                    ):
                        continue
                    pairs += 1
                    markers = {one.get_marker(), other.get_marker()}
                    assert len(markers) == 2 and not markers & {"None", "", None, " "}, (
                        one.get_label(),
                        other.get_label(),
                    )
        plt.close(fig)
    assert pairs >= 2  # Lemma 1 = JFB certificate, in both figures


def test_figures_say_why_lemma1_is_not_monotone_in_K():
    """Lemma 1's bound zigzags in K on denoising; the figure says why (∂ₓφ(x̂) has
    eigenvalues near −ω, so ‖∂_θΦ_K(x̂)‖ follows the parity of K), with ‖∂_θΦ_K‖ recovered
    from the column; a monotone bound gets no note, a measured δ_K a note that says so."""
    import matplotlib.pyplot as plt
    from retune_suite.experiments.error_study.figures import (
        error_figure,
        lemma1_note,
        tightness_figure,
    )

    sub = _quick_unit("denoise")
    for fig in (error_figure(sub), tightness_figure(sub, "denoise")):
        text = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
        assert "not monotone in K" in text and "parity of K" in text and "−ω" in text, text
        plt.close(fig)
    jfb = sub[sub.estimator == "jfb"].sort_values("K")
    omega = sub[sub.estimator == "constants"].omega.iloc[0]
    delta = omega ** jfb.K.to_numpy()
    beta = jfb.bound_lemma1.to_numpy() * (1 - delta) / delta
    # the parity: odd K (1, 5) above the even K next to them (2, 10)
    assert beta[0] > 10 * beta[1] and beta[2] > 2 * beta[3]
    assert f"{beta[1] / beta[0]:.2g}" in lemma1_note(sub)
    monotone = sub.copy()
    rows = monotone.estimator == "jfb"
    monotone.loc[rows, "bound_lemma1"] = 100.0 / monotone.loc[rows, "K"]
    assert lemma1_note(monotone) is None
    note = lemma1_note(_quick_unit("inpaint"))  # measured δ_K: no parity claim
    assert note is not None and "measured local estimate" in note and "parity" in note


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tolerances_left_unset_are_the_dtypes(tmp_path, dtype):
    """`errors --dtype float64` without tolerance flags solved x̂ to float32's 1e-7 and warned
    at every linearisation (x̂ not a fixed point to √eps). The unset tolerances are now the
    dtype's (float32's unchanged), saved in config.json, and no estimator warns."""
    from retune_suite.experiments.error_study import TOLERANCES

    settings = {k: v for k, v in SMALL.items() if k not in ("solve_tol", "fixed_point_rtol")}
    out = tmp_path / dtype
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main(["errors", *_flags({**settings, "dtype": dtype}), "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved[k] for k in TOLERANCES[dtype]} == TOLERANCES[dtype]
    assert TOLERANCES["float32"] == {"solve_tol": 1e-6, "fixed_point_rtol": 1e-7}
    rows = pd.read_csv(out / "metrics.csv")
    assert (rows.dtype == dtype).all() and rows.rel_error.notna().any()
    # the same command again finds the run complete: the filled tolerances are its identity
    assert main(["errors", *_flags({**settings, "dtype": dtype}), "--out", str(out)]) == 0
