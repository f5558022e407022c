"""``retune-suite errors`` on a tiny grid: outputs, bounds on the same rows, resume, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from experiments.cli import main
from experiments.errors import ErrorStudyConfig, run_errors, validate
from operators.errors import InvalidInputError

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
    import experiments.errors as E

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
    from operators.pnp import load_drunet

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
