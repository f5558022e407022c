"""``retune-suite reproduce``: Algorithm 1 trains, writes one metrics row per step and
configuration, resumes bit for bit after an interruption, draws the figure, validates before
any work; fig2 runs end to end with its three models. Tiny sizes: the whole file takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from retune_suite.experiments import reproduce as rp
from retune_suite.experiments.cli import main
from retune_suite.experiments.reproduce.figures import reproduce_figure
from retune_suite.experiments.reproduce.train import FIGURES, batch_indices
from retune_suite.operators.errors import InvalidInputError


def tiny(out: Path, **changes) -> rp.ReproduceConfig:
    """fig1 on 4 pairs of 32×32 (one batch), float64 on one CPU thread."""
    base = dict(
        figure="fig1",
        out=str(out),
        name="t",
        size=32,
        train_pairs=4,
        batch=4,
        epochs=3,
        test_images=1,
        test_crops=1,
        configs="1,1;10,10",
        dtype="float64",
        device="cpu",
        threads=1,
        checkpoint_every=2,
        quiet=True,
    )
    return dataclasses.replace(rp.ReproduceConfig(), **{**base, **changes})


@pytest.fixture(scope="module")
def fig1_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert rp.run_reproduce(tiny(out, epochs=12)) == 0
    return out / "fig1" / "t"


def test_loop_reduces_the_loss(fig1_run):
    metrics = pd.read_csv(fig1_run / "metrics.csv")
    for (model, K, T), g in metrics.groupby(["model", "K", "T"]):
        g = g.sort_values("step")
        # one fixed batch of 4 pairs: Adam on θ must lower the training MSE
        assert g.loss.iloc[-3:].mean() < g.loss.iloc[:3].mean(), (model, K, T)
        assert g.psnr.iloc[-1] > g.psnr.iloc[0], (model, K, T)


def test_metrics_one_row_per_step_and_configuration(fig1_run):
    metrics = pd.read_csv(fig1_run / "metrics.csv")
    keys = {(m, K, T) for m in FIGURES["fig1"].models for K, T in [(1, 1), (10, 10)]}
    assert set(metrics[["model", "K", "T"]].itertuples(index=False, name=None)) == keys
    assert len(metrics) == len(keys) * 12
    for _, g in metrics.groupby(["model", "K", "T"]):
        assert sorted(g.step) == list(range(1, 13))
    for column in ("psnr", "loss", "theta", "theta_norm", "grad_norm", "seconds", "epoch"):
        assert column in metrics
    summary = pd.read_csv(fig1_run / "summary.csv")
    assert len(summary) == len(keys) and summary.test_psnr.notna().all()
    claims = pd.read_csv(fig1_run / "claims.csv")
    assert "θ_BC beats θ_B at K=T=10" in set(claims.claim)
    assert {p.name for p in fig1_run.iterdir()} >= {
        "config.json",
        "metrics.csv",
        "summary.csv",
        "claims.csv",
        "reconstructions.npz",
        "fig1.pdf",
        "fig1.png",
        "checkpoints",
    }
    assert len(list((fig1_run / "checkpoints").glob("*.pt"))) == len(keys)
    assert not list(fig1_run.rglob(".*.tmp"))


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(s, 10, 3, seed=0) for s in range(3)])
    assert sorted(seen.tolist()) == sorted(set(seen.tolist())) and len(seen) == 9
    assert torch.equal(batch_indices(4, 10, 3, seed=0), batch_indices(4, 10, 3, seed=0))


def _final_thetas(folder: Path) -> dict[str, tuple[torch.Tensor, ...]]:
    return {
        p.name: torch.load(p, weights_only=True)["theta"]
        for p in sorted((folder / "checkpoints").glob("*.pt"))
    }


def test_resume_after_interruption_is_bit_for_bit(tmp_path):
    config = dict(configs="1,1;2,3", train_pairs=8, epochs=3)  # 6 steps, 2 batches per epoch
    assert rp.run_reproduce(tiny(tmp_path / "a", **config)) == 0

    def interrupt(unit, step):
        if (unit.model, unit.K, step) == ("wavelet-BC", 2, 3):  # after the step-2 checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rp.run_reproduce(tiny(tmp_path / "b", **config), on_step=interrupt)
    partial = pd.read_csv(tmp_path / "b" / "fig1" / "t" / "metrics.csv")
    assert len(partial) == 6 * 3 + 2  # step 3 of the 4th run was not checkpointed
    with pytest.raises(InvalidInputError, match="--resume"):
        rp.run_reproduce(tiny(tmp_path / "b", **config))
    resumed: list[tuple[str, int]] = []
    cfg = tiny(tmp_path / "b", resume=True, **config)
    assert rp.run_reproduce(cfg, on_step=lambda unit, step: resumed.append((unit.label, step))) == 0
    # the three finished runs are skipped; the fourth redoes step 3: none lost, none repeated
    assert resumed == [("wavelet-BC K=2 T=3", s) for s in (3, 4, 5, 6)]

    a, b = tmp_path / "a" / "fig1" / "t", tmp_path / "b" / "fig1" / "t"
    for name in ("metrics.csv", "summary.csv"):
        left = pd.read_csv(a / name).drop(columns=["seconds", "train_seconds"], errors="ignore")
        right = pd.read_csv(b / name).drop(columns=["seconds", "train_seconds"], errors="ignore")
        pd.testing.assert_frame_equal(left, right, check_exact=True)
    ta, tb = _final_thetas(a), _final_thetas(b)
    assert ta.keys() == tb.keys() and len(ta) == 4
    for key in ta:
        assert all(torch.equal(x, y) for x, y in zip(ta[key], tb[key], strict=True)), key


def test_resume_of_a_run_that_predates_a_new_field(tmp_path):
    """A config.json written before a field existed resumes at that field's default."""
    cfg = tiny(tmp_path, models="wavelet-BC", configs="1,1", epochs=1)
    assert rp.run_reproduce(cfg) == 0
    path = tmp_path / "fig1" / "t" / "config.json"
    saved = json.loads(path.read_text())
    for name in ("inspect_every", "start", "noise", "models"):
        del saved[name]
    saved["models"] = ["wavelet-BC"]
    path.write_text(json.dumps(saved))
    assert rp.run_reproduce(dataclasses.replace(cfg, resume=True)) == 0


def test_resume_refuses_changed_settings(tmp_path):
    assert rp.run_reproduce(tiny(tmp_path, configs="1,1", epochs=1)) == 0
    with pytest.raises(InvalidInputError, match="lr"):
        rp.run_reproduce(tiny(tmp_path, configs="1,1", epochs=1, lr=0.1, resume=True))


def test_figure_writer_makes_pdf_and_png(tmp_path):
    rows = [
        {"model": m, "K": K, "T": T, "step": s, "psnr": 20 + 0.1 * s + K * 0.01 * T}
        for m in ("wavelet-B", "wavelet-BC")
        for K, T in [(1, 1), (1, 10), (10, 1), (10, 10)]
        for s in range(1, 41)
    ]
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3))
    recon = {
        "ground_truth": image,
        "observation": np.clip(image + 0.2 * rng.standard_normal(image.shape), 0, 1),
        "estimate_wavelet-B": image * 0.9,
        "estimate_wavelet-BC": image * 0.95,
        "K": 10,
        "T": 10,
    }
    paths = reproduce_figure(pd.DataFrame(rows), recon, tmp_path / "fig", title="test")
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert not list(tmp_path.glob(".*.tmp"))


def test_figure_keeps_diverged_steps_off_scale(tmp_path, monkeypatch):
    """A step at -165 dB (fig. 2, cpu preset, pnp-weights (10, 10)) used to stretch its panel
    down to -170 dB: the axis now stops at 0 dB and the steps below are counted."""
    import matplotlib.axes

    rows = [
        {"model": "pnp-weights", "K": K, "T": T, "step": s, "psnr": 15.0 + 0.01 * s}
        for K, T in [(1, 10), (10, 10)]
        for s in range(1, 41)
    ]
    rows[41]["psnr"], rows[44]["psnr"] = -29.5, -164.9  # (10, 10), steps 2 and 5
    limits: list[tuple[float, float]] = []
    labels: list[str] = []
    real = matplotlib.axes.Axes.legend

    def record(self, *args, **kwargs):
        limits.append(self.get_ylim())
        labels.extend(self.get_legend_handles_labels()[1])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", record)
    reproduce_figure(pd.DataFrame(rows), None, tmp_path / "fig")
    ((bottom, top),) = limits
    assert bottom == 0.0 and top > 15.4
    assert labels == ["K=1, T=10", "K=10, T=10 (2 steps < 0 dB: ▼)"]


def test_figure_labels_are_the_psnr_of_summary_csv(fig1_run, monkeypatch):
    """The figure used to label its images with the PSNR of the [0, 1]-clipped images, so that
    its numbers disagreed with summary.csv (by 0.1 dB and more here); now both are the one
    unclipped PSNR. One test crop: the shown estimate's PSNR is the test PSNR."""
    import matplotlib.axes

    titles: list[str] = []
    real = matplotlib.axes.Axes.set_title

    def record(self, label, *args, **kwargs):
        titles.append(label)
        return real(self, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", record)
    rp.redraw(fig1_run)
    summary = pd.read_csv(fig1_run / "summary.csv")
    recon = np.load(fig1_run / "reconstructions.npz")
    for letter, model in zip("ab", FIGURES["fig1"].models, strict=True):
        (title,) = [t for t in titles if t.startswith(f"({letter}) {model}, K=10, T=10")]
        (test_psnr,) = summary[(summary.model == model) & (summary.K == 10)].test_psnr
        assert title.endswith(f"\n{test_psnr:.2f} dB"), (title, test_psnr)
        clipped = recon[f"estimate_{model}"].astype(np.float64)
        assert float(recon[f"psnr_estimate_{model}"]) == pytest.approx(test_psnr, rel=1e-12)
        truth = recon["ground_truth"].astype(np.float64)
        old = -10 * np.log10(np.mean((clipped - truth) ** 2))
        assert f"{old:.2f}" != f"{test_psnr:.2f}"  # this run tells the two apart
    (observation,) = [t for t in titles if t.startswith("observation")]
    assert observation == f"observation\n{float(recon['psnr_observation']):.2f} dB"


def test_checkpoints_get_the_permissions_of_plain_files(fig1_run):
    """Checkpoints were written through mkstemp and kept its private 0o600; every file of a run
    now has the permissions open(path, "w") would give (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    files = [*(fig1_run / "checkpoints").glob("*.pt"), fig1_run / "metrics.csv"]
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o666 & ~umask)}


def test_list_options_are_typed_and_take_the_documented_text():
    cfg = rp.ReproduceConfig(configs="1,1; 10,10", denoiser_nc="8,16,32,64")
    assert cfg.configs == ((1, 1), (10, 10)) and cfg.denoiser_nc == (8, 16, 32, 64)
    assert rp.ReproduceConfig(configs=[[1, 10]]).configs == ((1, 10),)  # as config.json has it
    assert rp.PretrainConfig(nc="8,16,32,64").nc == (8, 16, 32, 64)
    with pytest.raises(InvalidInputError, match="--configs"):
        rp.validate(rp.ReproduceConfig(configs="1,1;10"))  # kept as given, refused here
    with pytest.raises(InvalidInputError, match="--nc"):
        rp.validate_pretrain(rp.PretrainConfig(nc="8,16"))


def test_resume_accepts_a_config_json_with_text_lists(tmp_path):
    """Runs written before the list options were typed stored them as text: they resume."""
    cfg = tiny(tmp_path, configs="1,1", epochs=1)
    assert rp.run_reproduce(cfg) == 0
    path = tmp_path / "fig1" / "t" / "config.json"
    saved = json.loads(path.read_text())
    saved.update(configs="1,1", denoiser_nc="64,128,256,512")
    path.write_text(json.dumps(saved))
    assert rp.run_reproduce(dataclasses.replace(cfg, resume=True)) == 0
    with pytest.raises(InvalidInputError, match=r"configs: \[\[1, 1\]\] -> \[\[1, 1\], \[2, 2\]\]"):
        rp.run_reproduce(dataclasses.replace(cfg, configs="1,1;2,2", resume=True))


@pytest.mark.parametrize(
    ("command", "config"),
    [("reproduce", rp.ReproduceConfig), ("pretrain-denoiser", rp.PretrainConfig)],
)
def test_every_flag_has_help(command, config, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(config):
        assert f.metadata.get("help"), f.name
        flag = f.name if f.metadata.get("positional") else f"--{f.name.replace('_', '-')}"
        assert flag in text and " ".join(f.metadata["help"].split()) in text, f.name


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(figure="fig4"), "unknown figure"),
        (dict(estimator="neumann"), "unknown estimator"),
        (dict(preset="fast"), "unknown preset"),
        (dict(images="/no/such/folder"), "--images"),
        (dict(size=40), "multiple of 16"),
        (dict(size=16), "multiple of 16"),
        (dict(train_pairs=2), "fewer than one batch"),
        (dict(configs="1,1;0,3"), "--configs"),
        (dict(configs="10"), "--configs"),
        (dict(test_images=5), "leaves no training image"),
        (dict(size=320), "exceeds image"),
        (dict(denoiser="/no/such/file.pt"), "--denoiser"),
        (dict(dtype="float16"), "--dtype"),
        (dict(name="a/b"), "--name"),
        (dict(T="auto"), "--tol > 0"),
        (dict(T="auto", tol=0.0), "--tol > 0"),
        (dict(T="auto", tol=float("nan")), "--tol > 0"),
        (dict(T="auto", tol=1e-3, estimator="jfb"), "retune only"),
        (dict(T="auto", tol=1e-3, figure="fig2"), "fig1"),
        (dict(tol=1e-3), "--T auto only"),
        (dict(T="5", tol=1e-3), "only value is auto"),
        (dict(models="pnp-weights"), "fig1 has the rows wavelet-B, wavelet-BC"),
        (dict(figure="fig2", models="pnp-weights"), "select pnp-sigma-tau too"),
        (dict(start="y"), "--start 'y'"),
        (dict(noise=-0.1), "--noise"),
        (dict(inspect_every=-1), "--inspect-every"),
        (dict(figure="fig2", inspect_every=5), "select the wavelet rows"),
    ],
)
def test_validation_before_any_work(tmp_path, changes, message):
    with pytest.raises(InvalidInputError, match=message):
        rp.run_reproduce(tiny(tmp_path, **changes))
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_gpu_is_refused(tmp_path, capsys):
    code = main(["reproduce", "fig1", "--device", "cuda", "--out", str(tmp_path)])
    assert code == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["reproduce", "fig9", "--out", str(tmp_path)]) == 2
    assert "unknown figure 'fig9'" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown preset" in capsys.readouterr().err
    # a typed list option that does not parse is an error message too, not a traceback
    assert main(["reproduce", "fig1", "--configs", "1,1;x", "--out", str(tmp_path)]) == 2
    assert "--configs '1,1;x': write (K, T) pairs" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_inspection_leaves_the_run_unchanged_and_splits_the_error(tmp_path):
    """--inspect-every: the training (metrics.csv) is the run without it; at K = T = 1 ReTune
    is the unrolled gradient; ReTune's error is the sum of the four terms of trajectory.py
    (so their norms bound it: a wrong split breaks the triangle inequality)."""
    plain, inspected = tmp_path / "a", tmp_path / "b"
    assert rp.run_reproduce(tiny(plain, models="wavelet-BC")) == 0
    assert rp.run_reproduce(tiny(inspected, models="wavelet-BC", inspect_every=2)) == 0
    a = pd.read_csv(plain / "fig1" / "t" / "metrics.csv").drop(columns="seconds")
    b = pd.read_csv(inspected / "fig1" / "t" / "metrics.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)
    rows = pd.read_csv(inspected / "fig1" / "t" / "trajectory.csv")
    assert sorted(set(rows.step)) == [1, 2] and set(zip(rows.K, rows["T"], strict=True)) == {
        (1, 1),
        (10, 10),
    }
    one = rows[rows.K == 1]
    np.testing.assert_allclose(one.cos_step, one.cos_unrolled, rtol=1e-12)
    np.testing.assert_allclose(one.rel_step, one.rel_unrolled, rtol=1e-10)
    terms = rows.rel_loss_term + rows.rel_jacobian_term + rows.rel_readout_term + rows.rel_jfb
    assert (rows.rel_step <= terms * (1 + 1e-9)).all()
    assert (rows.rel_step[rows.K == 1] > 1e-3).all()  # the split is not vacuous
    assert (inspected / "fig1" / "t" / "trajectory.png").is_file()


def test_crosscheck_diagonal_is_the_runs_test_psnr(fig1_run):
    """Each θ at its own (K, T) gives the run's test PSNR again; at x̂ the (1, 1) θ is another
    estimator (a learned one-step shrinkage), the (10, 10) θ nearly its fixed point."""
    from retune_suite.experiments.reproduce.crosscheck import crosscheck

    frame = crosscheck(fig1_run)
    summary = pd.read_csv(fig1_run / "summary.csv")
    for r in summary.itertuples():
        own = frame[(frame.model == r.model) & (frame.K == r.K) & (frame["T"] == r.T)]
        at = own.set_index("evaluated_at").test_psnr
        assert at[f"K={r.K},T={r.T}"] == pytest.approx(r.test_psnr, abs=1e-9)
        assert np.isfinite(at["fixed point"])
        if (r.K, r.T) == (1, 1):  # a learned one-step shrinkage: far worse at its own x̂
            assert at["K=1,T=1"] > at["fixed point"] + 3.0
        else:  # (10, 10): 100 steps from u₀ are its equilibrium estimate to 0.01 dB
            assert abs(at["K=10,T=10"] - at["fixed point"]) < 0.01
    assert (fig1_run / "crosscheck.csv").is_file()


def test_crosscheck_records_a_diverged_evaluation(fig1_run, tmp_path, monkeypatch):
    """An iteration that blows up at some (K, T) (an FB-PnP θ of fig. 2 at the cpu preset did)
    is a row with diverged = True and NaN PSNR, not the end of the cross-check."""
    import shutil

    from retune_suite.experiments.reproduce import crosscheck as cc
    from retune_suite.operators.errors import NotContractiveError

    real = cc.restart

    def restart(step, theta, x0, K, T):
        if (K, T) == (10, 10):
            raise NotContractiveError("the restarted iteration produced NaN/inf")
        return real(step, theta, x0, K, T)

    monkeypatch.setattr(cc, "restart", restart)
    run = shutil.copytree(fig1_run, tmp_path / "run")  # the module's run keeps its csv
    frame = cc.crosscheck(run)
    bad = frame.evaluated_at == "K=10,T=10"
    assert bad.sum() == 4 and frame.diverged[bad].all() and frame.test_psnr[bad].isna().all()
    assert not frame.diverged[~bad].any() and np.isfinite(frame.test_psnr[~bad]).all()


def test_start_observation_is_u0_Dy():
    from retune_suite.experiments.reproduce.train import Problem, make_data

    clean = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    data = make_data("deblur", clean, clean, 0, torch.device("cpu"), torch.float64, noise=0.1)
    assert data.forward.sigma.tolist() == [0.1] * 3
    y = data.y
    ours = Problem("wavelet-BC", "deblur", data.forward).section4(y)
    theirs = Problem("wavelet-BC", "deblur", data.forward, start="observation").section4(y)
    torch.testing.assert_close(theirs.x0, ours.fb.D.analysis(y))
    torch.testing.assert_close(ours.x0, ours.fb.D.analysis(data.forward.A_adjoint(y)))
    assert not torch.allclose(ours.x0, theirs.x0)  # Aᵀy ≠ y for a blur


def test_models_selects_rows_in_the_figures_order(tmp_path):
    cfg = tiny(tmp_path, models="wavelet-BC", configs="1,1", epochs=1)
    assert rp.run_reproduce(cfg) == 0
    summary = pd.read_csv(tmp_path / "fig1" / "t" / "summary.csv")
    assert summary.model.tolist() == ["wavelet-BC"]
    cfg = dataclasses.replace(cfg, figure="fig2", models="pnp-sigma-tau,wavelet-BC")
    assert rp.selected_models(cfg) == ("wavelet-BC", "pnp-sigma-tau")


@pytest.mark.parametrize("estimator", ["unrolled", "jfb", "deq_solve"])
def test_other_estimators_train(tmp_path, estimator):
    cfg = tiny(tmp_path, estimator=estimator, configs="2,2", epochs=1, fixed_point_rtol=1e-10)
    assert rp.run_reproduce(cfg) == 0
    metrics = pd.read_csv(tmp_path / "fig1" / "t" / "metrics.csv")
    assert len(metrics) == 2 and np.isfinite(metrics.grad_norm).all()


def test_fig2_three_models_end_to_end(tmp_path, capsys):
    cfg = tiny(
        tmp_path,
        figure="fig2",
        dtype="float32",
        epochs=2,
        configs="1,1;2,2",
        denoiser_steps=2,
        denoiser_size=32,
        denoiser_crops=8,
        denoiser_batch=4,
        denoiser_nc="8,16,32,64",
        denoiser_nb=1,
        denoiser_lr=1e-3,
    )
    assert rp.run_reproduce(cfg) == 0
    out = capsys.readouterr().out
    assert "training the suite's DRUNet first" in out
    assert (tmp_path / "denoiser" / "default" / "drunet.pt").exists()
    folder = tmp_path / "fig2" / "t"
    metrics = pd.read_csv(folder / "metrics.csv")
    assert list(dict.fromkeys(metrics.model)) == list(FIGURES["fig2"].models)
    assert len(metrics) == 3 * 2 * 2
    for K, T in [(1, 1), (2, 2)]:  # (c) runs at the (σ, τ) that (b) ended with
        b = torch.load(folder / "checkpoints" / f"pnp-sigma-tau_K{K}_T{T}.pt", weights_only=True)
        c = torch.load(folder / "checkpoints" / f"pnp-weights_K{K}_T{T}.pt", weights_only=True)
        sigma, tau = b["theta"][0].exp().tolist()  # θ = ((log σ, log τ),)
        assert (c["problem"]["sigma"], c["problem"]["tau"]) == pytest.approx((sigma, tau))
    assert (folder / "fig2.png").exists() and (folder / "fig2.pdf").exists()
    recon = np.load(folder / "reconstructions.npz")
    assert {f"estimate_{m}" for m in FIGURES["fig2"].models} <= set(recon.files)
    # crosscheck evaluates the FB-PnP θ too (with the run's DRUNet, at the (σ, τ) of (b)): its
    # diagonal is the run's test PSNR; no fixed point for FB-PnP
    from retune_suite.experiments.reproduce.crosscheck import crosscheck

    frame = crosscheck(folder)
    for r in pd.read_csv(folder / "summary.csv").itertuples():
        own = frame[(frame.model == r.model) & (frame.K == r.K) & (frame["T"] == r.T)]
        at = own.set_index("evaluated_at").test_psnr
        assert at[f"K={r.K},T={r.T}"] == pytest.approx(r.test_psnr, abs=1e-4), r  # float32
        assert ("fixed point" in at) is (r.model == "wavelet-BC")
    # a second figure reuses the trained denoiser without retraining it
    assert rp.run_reproduce(dataclasses.replace(cfg, name="again", configs="1,1", epochs=1)) == 0
    assert "training the suite's DRUNet first" not in capsys.readouterr().out


def test_pretrain_denoiser_command(tmp_path, capsys):
    args = ["pretrain-denoiser", "--out", str(tmp_path), "--name", "tiny", "--steps", "2"]
    args += ["--size", "32", "--crops", "4", "--batch", "2", "--nc", "8,16,32,64", "--nb", "1"]
    args += ["--test-images", "1", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert (tmp_path / "denoiser" / "tiny" / "drunet.pt").exists()
    capsys.readouterr()
    assert main(args) == 0  # the same command again: complete, nothing retrained
    assert "complete:" in capsys.readouterr().out
    assert main([*args, "--steps", "3"]) == 2  # more steps: an unfinished run, needs --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--steps", "3", "--resume"]) == 0


def test_pretrain_denoiser_resume_refuses_changed_settings(tmp_path, capsys):
    """Through the one resume check: it names the checkpoint, what changed and what to do."""
    args = ["pretrain-denoiser", "--out", str(tmp_path), "--name", "tiny", "--steps", "2"]
    args += ["--size", "32", "--crops", "4", "--batch", "2", "--nc", "8,16,32,64", "--nb", "1"]
    args += ["--test-images", "1", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    path = tmp_path / "denoiser" / "tiny" / "drunet.pt"
    before = path.read_bytes()
    assert main([*args, "--resume", "--lr", "0.01", "--steps", "3"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot resume the DRUNet checkpoint {path}" in err
    assert "(lr: 0.0001 -> 0.01)" in err  # steps may change: a longer run continues
    assert "Only steps, checkpoint_every, log_every may change" in err
    assert path.read_bytes() == before
    assert main([*args, "--resume", "--crops", "6", "--steps", "3"]) == 2
    assert "data shape: [4, 3, 32, 32] -> [6, 3, 32, 32]" in capsys.readouterr().err


def _batch(model: str, dtype=torch.float64):
    """A fig1 batch of 4 pairs (32×32) at θ⁰: (Problem, its section-4 problem, θ, clean)."""
    from retune_suite.experiments.common.data import crops
    from retune_suite.experiments.reproduce import train as tr
    from retune_suite.experiments.reproduce.command import _split

    train_images, _ = _split(rp.ReproduceConfig(test_images=1))
    clean = crops(train_images, 32, 4, 0)
    data = tr.make_data("denoise", clean, clean[:1], 0, torch.device("cpu"), dtype)
    theta = tr.initial_theta(
        model, log_lambda=0.0, pnp_sigma=0.05, pnp_tau=1.0, denoiser=None,
        device=torch.device("cpu"), dtype=dtype,
    )  # fmt: skip
    problem = tr.Problem(model, "denoise", data.forward)
    return problem, problem.section4(data.y, theta), theta, data.clean


@pytest.mark.parametrize("estimator", ["retune", "unrolled", "jfb", "deq_solve"])
@pytest.mark.parametrize("model", ["wavelet-B", "wavelet-BC"])
def test_step_gives_exactly_the_hypergrad_estimator(estimator, model):
    """The training step goes through operators.estimate and gives the gradient of the matching
    hypergrad function bit for bit, and the iterate it was taken at."""
    from retune_suite.experiments.reproduce import train as tr
    from retune_suite.operators import fixed_point, hypergrad, restart

    _, p, theta, clean = _batch(model)
    K, T = 2, 3
    settings = tr.TrainSettings(estimator=estimator, fixed_point_rtol=1e-10)

    def loss(x):
        return torch.mean((x - clean) ** 2)

    est = tr.hypergradient(settings, p.step, theta, p.x0, loss, K, T, p.readout, delta=p.delta(K))
    if estimator in ("retune", "unrolled"):
        want = getattr(hypergrad, estimator)(p.step, theta, p.x0, loss, K, T, readout=p.readout)
        x = restart(p.step, theta, p.x0, K, T).x
        assert est.stats.forward.blocks == T
    else:
        x = fixed_point(
            p.step, theta, p.x0, K, method="anderson", rtol=1e-10,
            max_blocks=settings.fixed_point_max_blocks,
        ).x  # fmt: skip
        if estimator == "jfb":
            want = hypergrad.jfb(p.step, theta, x, loss, K, readout=p.readout)
        else:
            want = hypergrad.deq_solve(
                p.step, theta, x, loss, K, tol=settings.solve_tol,
                maxiter=settings.solve_maxiter, readout=p.readout,
            )  # fmt: skip
    assert _same(est.grad, want)
    assert torch.equal(est.x, x)
    # a read-out: no certificate (with δ_K given), and the reason says so
    assert est.certificate is None and est.certificate_source["status"] == "none"
    assert "readout" in est.certificate_source["reason"]


@pytest.mark.parametrize("estimator", ["retune", "unrolled", "jfb"])
@pytest.mark.parametrize("model", ["wavelet-B", "wavelet-BC"])
def test_training_loss_in_the_wavelet_domain_gives_the_image_domain_gradient(estimator, model):
    """Section4Problem.mse: for wavelet denoising the pair (mean((w − Dx̄)²), θ⁻¹u) gives the
    gradient, loss and per-image PSNR of (mean((x − x̄)²), Dᵀθ⁻¹u) to rounding (D orthonormal),
    without the transforms; elsewhere it is that image-domain pair."""
    from retune_suite.experiments.common.metrics import psnr
    from retune_suite.experiments.reproduce import train as tr
    from retune_suite.operators.maps import section4
    from retune_suite.operators.theta import flat

    _, p, theta, clean = _batch(model)
    K, T = 2, 3
    settings = tr.TrainSettings(estimator=estimator, fixed_point_rtol=1e-12)
    mse = p.mse(clean)
    assert mse.readout is not p.readout and mse.reference.shape == clean.shape

    def image_loss(x):
        return torch.mean((x - clean) ** 2)

    ours = tr.hypergradient(
        settings, p.step, theta, p.x0, mse.loss, K, T, mse.readout, delta=p.delta(K)
    )
    image = tr.hypergradient(
        settings, p.step, theta, p.x0, image_loss, K, T, p.readout, delta=p.delta(K)
    )
    a, b = flat(tuple(ours.grad)), flat(tuple(image.grad))
    assert torch.linalg.vector_norm(b) > 0
    assert torch.linalg.vector_norm(a - b) <= 1e-12 * torch.linalg.vector_norm(b)
    seen, x = mse.readout(ours.x, theta), p.readout(ours.x, theta)
    assert torch.allclose(mse.loss(seen), image_loss(x), rtol=1e-12, atol=0)
    assert torch.allclose(psnr(seen, mse.reference), psnr(x, clean), rtol=1e-12, atol=0)
    # no shortcut where D is not the whole step: the image-domain pair itself
    inpaint = section4.build("inpaint", model, clean=clean, seed=0)
    pair = inpaint.mse(clean)
    assert pair.readout is inpaint.readout and pair.reference is clean
    with pytest.raises(InvalidInputError, match="shape"):
        p.mse(clean[:, :1])


def _same(a, b) -> bool:
    """θ-structured gradients equal bit for bit, leaf by leaf."""
    from retune_suite.operators.theta import as_tuple

    left, right = as_tuple(a), as_tuple(b)
    return len(left) == len(right) and all(
        torch.equal(x, y) for x, y in zip(left, right, strict=True)
    )


@pytest.mark.parametrize("model", ["wavelet-B", "wavelet-BC"])
def test_T_auto_step_is_retune_at_the_T_it_used(model):
    """--T auto: the first T whose distance bound δ_K r_T/(1 − δ_K) is <= tol, at most T_max,
    and g is hypergrad.retune at that T, bit for bit."""
    from retune_suite.experiments.reproduce import train as tr
    from retune_suite.operators import hypergrad, restart

    _, p, theta, clean = _batch(model)
    K, T_max, tol = 2, 30, 4.0
    delta = p.delta(K)

    def loss(x):
        return torch.mean((x - clean) ** 2)

    residuals = restart(p.step, theta, p.x0, K, T_max).stats.residuals
    bounds = delta * residuals / (1 - delta)
    expected = int(torch.nonzero(bounds <= tol)[0]) + 1  # 1-based: the first block below tol
    assert 1 < expected < T_max  # this batch tests a T strictly inside the range
    settings = tr.TrainSettings(T_auto=True, tol=tol)
    est = tr.hypergradient(settings, p.step, theta, p.x0, loss, K, T_max, p.readout, delta=delta)
    assert est.stats.forward.blocks == expected
    assert est.stats.forward.converged and est.stats.forward.reason == "tolerance"
    want = hypergrad.retune(p.step, theta, p.x0, loss, K, expected, readout=p.readout)
    assert _same(est.grad, want)
    assert torch.equal(est.x, restart(p.step, theta, p.x0, K, expected).x)
    # T_max caps it; without δ_K there is nothing to stop on
    capped = tr.hypergradient(settings, p.step, theta, p.x0, loss, K, 3, p.readout, delta=delta)
    assert capped.stats.forward.blocks == 3 and capped.stats.forward.reason == "T_max"
    with pytest.raises(InvalidInputError, match="analytic"):
        tr.hypergradient(settings, p.step, theta, p.x0, loss, K, T_max, p.readout)


def test_metrics_have_the_certificate_columns(fig1_run):
    metrics = pd.read_csv(fig1_run / "metrics.csv")
    for column in ("certificate", "certificate_status", "T_used"):
        assert column in metrics
    # the wavelet models read their image out (R(u, θ) = Dᵀθ⁻¹u) and L_θ is unknown: no
    # certificate, logged as NaN with status none; T_used is the configuration's T
    assert metrics.certificate.isna().all() and set(metrics.certificate_status) == {"none"}
    assert (metrics.T_used == metrics["T"]).all()


def test_T_auto_trains_and_logs_the_T_used(tmp_path):
    cfg = tiny(tmp_path, configs="2,1;2,30", epochs=3, T="auto", tol=4.0)
    assert rp.run_reproduce(cfg) == 0
    metrics = pd.read_csv(tmp_path / "fig1" / "t" / "metrics.csv")
    assert len(metrics) == 2 * 2 * 3 and np.isfinite(metrics.grad_norm).all()
    assert (metrics.T_used >= 1).all() and (metrics.T_used <= metrics["T"]).all()
    assert (metrics[metrics["T"] == 1].T_used == 1).all()
    long = metrics[metrics["T"] == 30]
    assert (long.T_used > 1).all() and (long.T_used < 30).all()  # stopped on the tolerance
    saved = json.loads((tmp_path / "fig1" / "t" / "config.json").read_text())
    assert (saved["T"], saved["tol"]) == ("auto", 4.0)


def test_T_auto_from_the_command_line(tmp_path, capsys):
    assert main(["reproduce", "fig1", "--T", "auto", "--out", str(tmp_path)]) == 2
    assert "--T auto needs --tol > 0" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--T", "auto", "--tol", "x", "--out", str(tmp_path)]) == 2
    assert "--T auto needs --tol > 0 (e.g. --tol 1e-3), got 'x'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    args = ["reproduce", "fig1", "--out", str(tmp_path), "--name", "c", "--size", "32"]
    args += ["--train-pairs", "4", "--test-images", "1", "--test-crops", "1", "--epochs", "1"]
    args += ["--configs", "2,30", "--T", "auto", "--tol", "4", "--device", "cpu"]
    assert main([*args, "--dtype", "float64", "--threads", "1", "--quiet"]) == 0
    metrics = pd.read_csv(tmp_path / "fig1" / "c" / "metrics.csv")
    assert len(metrics) == 2 and (metrics.T_used < 30).all() and (metrics.T_used > 1).all()


def test_cpu_preset_is_the_documented_pnp_setting():
    """``--preset cpu``: 64×64 crops, 200 steps, the paper's 4 test images, a DRUNet of a
    quarter of deepinv's width with one block per scale (the count its docstring states), and
    ``pretrain-denoiser --preset cpu`` trains the same network ``reproduce`` looks for."""
    from deepinv.models import DRUNet
    from retune_suite.experiments.reproduce.presets import DENOISER_PRESETS

    cpu = rp.PRESETS["cpu"]
    steps = cpu["train_pairs"] // cpu["batch"] * cpu["epochs"]
    assert (cpu["size"], steps, cpu["test_images"], cpu["device"]) == (64, 200, 4, "cpu")
    den = DENOISER_PRESETS["cpu"]
    assert {k: cpu[f"denoiser_{k}"] for k in den} == den
    assert {k: rp.PRETRAIN_PRESETS["cpu"][k] for k in den} == den
    full = DRUNet(3, 3, pretrained=None)
    narrow = DRUNet(3, 3, nc=list(den["nc"]), nb=den["nb"], pretrained=None)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert (count(narrow), count(full)) == (575_472, 32_640_960)
    rp.validate(dataclasses.replace(rp.ReproduceConfig(figure="fig3"), preset="cpu", **cpu))


def _claims_metrics(psnr: dict[tuple[str, int, int], np.ndarray]) -> pd.DataFrame:
    """metrics.csv rows of a synthetic run: one PSNR per step per configuration."""
    return pd.DataFrame(
        [
            {
                "model": m,
                "K": K,
                "T": T,
                "step": s + 1,
                "psnr": v,
                "loss": 0.0,
                "seconds": 1.0,
                "theta": "",
            }
            for (m, K, T), values in psnr.items()
            for s, v in enumerate(values)
        ]
    )


def test_claims_tell_a_tie_from_a_difference():
    """Configurations trained on the same batches share the image-to-image scatter (±1 dB)
    and differ by 0.08 dB of training noise per step: 0.02 dB apart is a tie, reported as
    such; 0.5 dB apart is resolved although the unpaired scatter (0.57 dB) is larger."""
    from retune_suite.experiments.reproduce.claims import (
        check_claims,
        claims_paragraph,
        difference_and_noise,
        summarise,
    )

    rng = np.random.default_rng(0)
    images = rng.choice([-1.0, 1.0], size=25)  # the batch of each step, shared by all
    jitter = rng.normal(0.0, 0.08, size=(3, 25))  # what training adds per step
    jitter -= jitter.mean(axis=1, keepdims=True)  # the window means are 20, 19.98, 20.5
    psnr = {
        ("wavelet-B", 1, 1): 20.0 + images + jitter[0],
        ("wavelet-B", 10, 10): 19.98 + images + jitter[1],
        ("wavelet-BC", 10, 10): 20.5 + images + jitter[2],
        ("wavelet-BC", 1, 1): 18.0 + images,
    }
    metrics = _claims_metrics(psnr)
    summary = summarise(metrics, pd.DataFrame())
    claims = check_claims("fig1", metrics, summary).set_index(["model", "claim"])
    tie = claims.loc[("wavelet-B", "K=T=10 reaches the highest final train PSNR")]
    assert not tie.holds and tie.resolved is False
    assert tie.difference_db == pytest.approx(-0.02) and 0.02 < tie.noise_db < 0.1
    gap = claims.loc[("wavelet-BC", "θ_BC beats θ_B at K=T=10")]
    assert gap.holds and gap.resolved is True and gap.noise_db < 0.1
    faster = claims.loc[("wavelet-B", "K=T=10 gets there in fewer steps")]
    assert faster.resolved is None and np.isnan(faster.noise_db)
    text = claims_paragraph("fig1", claims.reset_index(), "fig1")
    tie_text = r"wavelet-B: K=T=10 reaches the highest final train PSNR: NO \(.*?\) — "
    assert re.search(tie_text + r"within noise: -0\.02 ± 0\.0\d dB, a tie;", text)
    assert "within noise" not in text.split("θ_BC beats θ_B at K=T=10: ")[1]
    # unpaired (different steps): the image scatter counts, 2·√(2·1²/25) = 0.57 dB
    a = pd.Series(psnr[("wavelet-BC", 10, 10)], index=range(25))
    b = pd.Series(psnr[("wavelet-B", 10, 10)], index=range(100, 125))
    difference, noise = difference_and_noise(a, b)
    assert difference == pytest.approx(0.52, abs=0.01) and noise == pytest.approx(0.57, abs=0.02)


def test_claims_csv_has_the_noise_columns(fig1_run):
    claims = pd.read_csv(fig1_run / "claims.csv")
    assert list(claims.columns) == [
        "figure",
        "model",
        "claim",
        "holds",
        "measured",
        "difference_db",
        "noise_db",
        "resolved",
    ]
    compared = claims[claims.claim != "K=T=10 gets there in fewer steps"]
    assert compared.noise_db.notna().all() and (compared.noise_db > 0).all()
    assert (compared.resolved == (compared.difference_db.abs() > compared.noise_db)).all()


def test_a_checkpoint_of_another_unit_is_refused_finished_or_not(tmp_path):
    """The finished checkpoint of (K, T) = (1, 1) copied over that of (2, 2) used to be taken
    as complete ("complete ..., skipped", metrics labelled (1, 1) twice): every checkpoint
    carries its unit's identity (model, K, T, estimator, seed, configuration hash) and is
    checked before it is used, finished or not. The error names both identities; the run
    stops there rather than recompute, so that nothing written is replaced."""
    import shutil

    cfg = tiny(tmp_path, configs="1,1;2,2", epochs=1, models="wavelet-BC")
    assert rp.run_reproduce(cfg) == 0
    folder = tmp_path / "fig1" / "t" / "checkpoints"
    ckpt = torch.load(folder / "wavelet-BC_K1_T1.pt", weights_only=True)
    assert ckpt["identity"]["estimator"] == "retune" and len(ckpt["identity"]["config"]) == 16
    shutil.copy(folder / "wavelet-BC_K1_T1.pt", folder / "wavelet-BC_K2_T2.pt")
    with pytest.raises(InvalidInputError, match="checkpoint of another unit") as info:
        rp.run_reproduce(dataclasses.replace(cfg, resume=True))
    message = str(info.value)
    assert "K=1, T=1" in message and "not of model=wavelet-BC, K=2, T=2" in message
    assert "delete it and run the same command with --resume" in message
    # a checkpoint of the same unit from a run with other settings: the configuration differs
    other = tiny(tmp_path / "other", configs="2,2", epochs=1, models="wavelet-BC", lr=0.1)
    assert rp.run_reproduce(other) == 0
    theirs = tmp_path / "other" / "fig1" / "t" / "checkpoints" / "wavelet-BC_K2_T2.pt"
    shutil.copy(theirs, folder / "wavelet-BC_K2_T2.pt")
    with pytest.raises(InvalidInputError, match="config="):
        rp.run_reproduce(dataclasses.replace(cfg, resume=True))
