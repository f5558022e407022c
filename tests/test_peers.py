"""``retune-suite bench`` on tiny problems: ours, the peers, a missing peer, and agreement."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import pandas as pd
import pytest
import torch
from retune_suite.experiments.bench import (
    Bench,
    BenchConfig,
    missing,
    retune_name,
    run_bench,
    torchdeq_gradient,
    validate,
)
from retune_suite.experiments.bench.ours import MEMORY_T, memory_name
from retune_suite.operators import fixed_point, hypergrad
from retune_suite.operators.errors import InvalidInputError

# K·T = steps = 4, 3 backward iterations: every code path, a few seconds; one thread, because
# small tensors on an oversubscribed machine spend most of their time in OpenMP barriers
TINY = dict(size=32, batch=1, K=2, T=2, steps=4, backward_iters=3, repeats=1, warmup=0)
TINY.update(threads=1, device="cpu")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frame(out) -> pd.DataFrame:
    return pd.read_csv(out / "bench.csv")


def test_ours_only(tmp_path):
    assert run_bench(BenchConfig(**TINY, out=str(tmp_path))) == 0
    frame = _frame(tmp_path)
    ours = frame[frame.library == "retune-suite"].set_index("method")
    assert set(ours.status) == {"ok", "reference"}
    assert not frame.library.str.contains("deepinv|torchdeq").any()
    # VJPs through the step: ReTune backpropagates through its last block of K steps, JFB
    # through one step, unrolled through all of them, DEQ through one step per product + ∂θφ
    assert ours.loc[retune_name(BenchConfig(**TINY)), "vjps"] == 2
    assert ours.loc["ours JFB after 4", "vjps"] == 1
    assert ours.loc["ours unrolled 4", "vjps"] == 4
    assert ours.loc["ours DEQ GMRES→1e-06 after 4", "vjps"] >= 2
    assert ours.loc["ours DEQ GMRES×3 after 4", "vjps"] == 3 + 1  # as many as FP 3 + ∂θφ
    # ReTune's memory rows: K VJPs and K·T forward steps whatever T
    for T in MEMORY_T:
        row = ours.loc[memory_name(BenchConfig(**TINY), T)]
        assert (row.vjps, row.forward_steps) == (2, 2 * T)
    ok = ours[ours.status == "ok"]
    assert ok.rel_error.between(0, float("inf")).all()
    assert (ok.seconds > 0).all() and (ok.time_vs_retune > 0).all()
    assert ours.loc[retune_name(BenchConfig(**TINY)), "time_vs_retune"] == 1.0
    goals = pd.read_csv(tmp_path / "targets.csv")
    # without peers only ReTune's own memory target is measured
    memory = goals.target.str.startswith("ReTune's working set flat in T")
    assert len(goals) == 12 and memory.sum() == 1
    assert goals[~memory].result.str.startswith("not ").all()
    assert goals[memory].result.isin(["met", "missed", "not measured"]).all()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["checks"]["omega"] == pytest.approx(0.95, abs=1e-3)
    assert len(config["load_average_before"]) == 3


def test_with_peers(tmp_path):
    for name in ("deepinv", "torchdeq", "ptwt"):
        pytest.importorskip(name)
    assert run_bench(BenchConfig(**TINY, peers=True, out=str(tmp_path))) == 0
    frame = _frame(tmp_path).set_index("method")
    peers = frame[frame.library.str.contains("deepinv|torchdeq")]
    assert len(peers) == 15
    ran = peers.status.eq("ok") | peers.status.str.startswith("tolerance not reached")
    assert ran.all(), peers.status.to_dict()
    # the fixed-point peers iterate the map we iterate: deepinv (with λ/0.1) the ptwt map,
    # torchdeq both; Broyden and the damped phantom iterate something else (no agreement)
    other = peers.index.str.contains("Broyden|τ=0.5")
    assert other.sum() == 3 and peers[other].forward_agreement.isna().all()
    agree = peers[~other].forward_agreement
    assert (agree < 1e-5).all(), agree.to_dict()
    assert (peers.forward_error > 0).all()  # every peer's output, against the fixed point
    # fixed iteration counts: 3 backward iterations + the VJP for ∂θφ; one-step: 1
    assert frame.loc["deepinv DEQ (FP 3)", "vjps"] == 4
    assert frame.loc["deepinv DEQ (Anderson 3)", "vjps"] == 4
    assert frame.loc["torchdeq IFT (FP 3)", "vjps"] == 4
    assert frame.loc["torchdeq IFT (FP 3), our map", "vjps"] == 4
    assert frame.loc["deepinv Jacobian-free", "vjps"] == 1
    assert frame.loc["torchdeq 1-step, our map", "vjps"] == 1
    # Broyden's backward evaluates its residual once before its 3 iterations; + ∂θφ
    assert frame.loc["torchdeq Broyden 4 + IFT (Broyden 3), our map", "vjps"] == 3 + 2
    # the phantom gradient backpropagates through its K graph steps, as ReTune
    for name in ("", ", our map"):
        assert frame.loc[f"torchdeq phantom K=2 τ=1{name}", "vjps"] == 2
        assert frame.loc[f"torchdeq phantom K=2 τ=1{name}", "forward_steps"] == 4
    # on our map, τ = 1 after a no-grad solve is ReTune: the same gradient (float32 rounding)
    phantom = frame.loc["torchdeq phantom K=2 τ=1, our map", "rel_error"]
    assert phantom == pytest.approx(
        frame.loc[retune_name(BenchConfig(**TINY)), "rel_error"], rel=1e-4
    )
    # deepinv and torchdeq differentiate the same ptwt map: the same one-step gradient (their
    # IFT differ: deepinv's backward starts from the incoming gradient, torchdeq's from 0)
    one_step = frame.loc[["deepinv Jacobian-free", "torchdeq 1-step"], "rel_error"]
    assert one_step.iloc[0] == pytest.approx(one_step.iloc[1], rel=1e-4)
    checks = json.loads((tmp_path / "config.json").read_text())["checks"]
    assert checks["deepinv_vs_ptwt_map_3_steps_lambda/0.1"] < 1e-5
    assert checks["deepinv_vs_ptwt_map_3_steps_lambda"] > 1e-3  # the pitfall, measured
    assert 0 < checks["fixed_point_gap_ptwt_vs_ours"] < 1  # two different problems
    goals = pd.read_csv(tmp_path / "targets.csv")
    assert goals.result.str.match("met|missed|not ").all()


def test_missing_peers_give_rows(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdeq", None)  # `import torchdeq` raises ImportError
    monkeypatch.setitem(sys.modules, "ptwt", None)
    assert missing(("torchdeq",)).startswith("not installed: torchdeq")
    assert run_bench(BenchConfig(**TINY, peers=True, out=str(tmp_path))) == 0
    frame = _frame(tmp_path)
    peers = frame[frame.library.str.contains("deepinv|torchdeq")]
    assert len(peers) == 15
    torchdeq = peers[peers.library.str.startswith("torchdeq")]
    assert torchdeq.status.str.startswith("not installed: torchdeq").all()
    deepinv = peers[peers.library.str.startswith("deepinv")]
    assert deepinv.status.str.startswith("not installed: ptwt").all()
    assert frame[frame.library == "retune-suite"].status.isin(["ok", "reference"]).all()


def test_torchdeq_ift_on_our_map_is_our_deq_gradient(one_thread):
    """Same map, same loss: torchdeq's IFT is deq_solve's DEQ gradient, its 1-step our JFB."""
    torchdeq = pytest.importorskip("torchdeq")
    bench = Bench(BenchConfig(size=32, batch=1), torch.device("cpu"))
    step, theta, u0, loss = bench.problem("ours", torch.float64)
    # ω = 0.95: 700 steps contract by 0.95^700 ≈ 2e-16, forward and backward
    n = 700
    options = dict(f_solver="fixed_point_iter", f_max_iter=n, b_solver="fixed_point_iter")
    options.update(b_max_iter=n, f_tol=0.0, b_tol=0.0)
    ift, _ = torchdeq_gradient(torchdeq.get_deq(**options, ift=True), step, theta, u0, loss)()
    one, _ = torchdeq_gradient(torchdeq.get_deq(**options, grad=1), step, theta, u0, loss)()
    u_star = fixed_point(step, theta, u0, 1, rtol=1e-14, method="anderson").x
    deq = hypergrad.deq_solve(step, theta, u_star, loss, 1, tol=1e-13)
    jfb = hypergrad.jfb(step, theta, u_star, loss, 1)
    deq, jfb = (torch.cat([g.reshape(-1) for g in grads]) for grads in (deq, jfb))
    # both solve to ~1e-14 relative; the adjoint amplifies by at most 1/(1 − ω) = 20
    assert torch.allclose(ift, deq, rtol=1e-10, atol=1e-10 * deq.norm().item())
    assert torch.allclose(one, jfb, rtol=1e-10, atol=1e-10 * jfb.norm().item())
    assert (ift - one).norm() > 0.1 * deq.norm()  # and the two estimators differ


def test_torchdeq_phantom_after_a_no_grad_solve_is_retune(one_thread):
    """grad=K, tau=1 after K(T − 1) no-grad steps: Algorithm 1's gradient, in float64."""
    torchdeq = pytest.importorskip("torchdeq")
    bench = Bench(BenchConfig(size=32, batch=1), torch.device("cpu"))
    step, theta, u0, loss = bench.problem("ours", torch.float64)
    K, T = 3, 4
    options = dict(f_solver="fixed_point_iter", f_max_iter=K * (T - 1), f_tol=0.0)
    deq = torchdeq.get_deq(**options, grad=K, tau=1.0)
    phantom, _ = torchdeq_gradient(deq, step, theta, u0, loss)()
    ours = torch.cat([g.reshape(-1) for g in hypergrad.retune(step, theta, u0, loss, K, T)])
    assert torch.allclose(phantom, ours, rtol=1e-12, atol=1e-12 * ours.norm().item())
    damped, _ = torchdeq_gradient(
        torchdeq.get_deq(**options, grad=K, tau=0.5), step, theta, u0, loss
    )()
    assert (damped - ours).norm() > 1e-3 * ours.norm()  # damping changes the estimator


def test_validate_rejects_unequal_work():
    with pytest.raises(InvalidInputError, match="K·T"):
        validate(BenchConfig(K=10, T=10, steps=50))
    with pytest.raises(InvalidInputError, match="multiple of 16"):
        validate(BenchConfig(size=40))
    with pytest.raises(InvalidInputError, match="repeats"):
        validate(BenchConfig(repeats=0))


def test_config_fields_become_flags():
    """Every field has a default and a type the CLI derives a flag from; ``--peers`` a switch."""
    from retune_suite.experiments.cli import _add_dataclass_arguments

    parser = argparse.ArgumentParser()
    _add_dataclass_arguments(parser, BenchConfig)
    args = vars(parser.parse_args(["--peers", "--size", "64", "--backward-iters", "7"]))
    cfg = dataclasses.replace(BenchConfig(), **args)
    assert (cfg.peers, cfg.size, cfg.backward_iters, cfg.out) == (True, 64, 7, "runs/bench")
    assert BenchConfig().peers is False and BenchConfig().device == "auto"


def test_an_earlier_run_is_not_overwritten(tmp_path, capsys):
    """An --out that holds results is refused before any work, naming the two ways on."""
    from retune_suite.experiments.cli import main

    (tmp_path / "bench.csv").write_text("earlier run\n")
    cfg = BenchConfig(**TINY, out=str(tmp_path))
    with pytest.raises(InvalidInputError, match="another --out, or pass --overwrite"):
        run_bench(cfg)
    assert (tmp_path / "bench.csv").read_text() == "earlier run\n"
    assert not (tmp_path / "config.json").exists()
    capsys.readouterr()
    assert main(["bench", "--size", "32", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_bench(dataclasses.replace(cfg, overwrite=True)) == 0
    assert _frame(tmp_path).method.str.startswith("ours").any()


def test_every_config_field_has_help():
    for f in dataclasses.fields(BenchConfig):
        assert f.metadata.get("help"), f.name
