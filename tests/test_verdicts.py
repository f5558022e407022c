"""``retune-suite verdicts``: bounds.verify at image scale, one frame per (K, T), resumable.

The image-scale path of ``verify`` (n > DENSE_LIMIT: the DEQ reference by GMRES, the given
δ_K, dense ∂_θΦ_K in chunks) is exercised on 32×32 crops by lowering DENSE_LIMIT, so that the
file runs in seconds; the 256×256 runs are committed under docs/results/verdicts-*.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from retune_suite.experiments.cli import main
from retune_suite.experiments.error_study.verdicts import VerdictConfig, run_verdicts
from retune_suite.operators import hypergrad
from retune_suite.operators.errors import InvalidInputError


@pytest.fixture
def image_scale_path(monkeypatch):
    monkeypatch.setattr(hypergrad, "DENSE_LIMIT", 100)


def _bounds(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.kind != "constant"]


def test_foe_denoising_gets_a_verdict_on_every_statement(tmp_path, image_scale_path):
    """FoE denoising: analytic δ_K, L_θ (run ball) and H = 1, so every bound and every
    certificate gets True or False; each (K, T) is one frame of the CSV."""
    cfg = VerdictConfig(prior="foe", size=32, ks=(1, 2), ts=(1, 3), out=str(tmp_path), quiet=True)
    assert run_verdicts(cfg) == 0
    frame = pd.read_csv(tmp_path / "verdicts.csv")
    assert set(zip(frame["K"], frame["T"], strict=True)) == {(1, 1), (1, 3), (2, 1), (2, 3)}
    rows = _bounds(frame)
    names = set(rows.name)
    assert {"theorem1", "lemma1", "theorem2", "theorem2_corrected", "corollary1_corrected"} <= names
    assert {"certificate_retune", "certificate_jfb", "certificate_neumann"} <= names
    assert rows.holds.notna().all(), rows[rows.holds.isna()][["name", "reason"]]
    # the verdicts are the comparison they claim to be (no rounding margin is visible here)
    for _, r in rows[rows.observed > 0].iterrows():
        assert bool(r.holds) == (r.observed <= r.bound)
    constants = frame[(frame.kind == "constant") & (frame.name == "delta_source")]
    assert set(constants.quantity) == {"analytic (given)"}
    assert (tmp_path / "verdicts.png").stat().st_size > 0
    assert (tmp_path / "verdicts.pdf").stat().st_size > 0


def test_wavelet_denoising_verdicts_without_certificates(tmp_path, image_scale_path):
    """θ_BC denoising: Theorem 2 uses the exact secant L_θ at (x_{K(T−1)}, x̂), so it gets a
    verdict; the certificates need a global L_θ, which the wavelet prior has not: none."""
    cfg = VerdictConfig(
        prior="wavelet-BC", size=32, ks=(1,), ts=(2,), out=str(tmp_path), quiet=True
    )
    assert run_verdicts(cfg) == 0
    rows = _bounds(pd.read_csv(tmp_path / "verdicts.csv")).set_index("name")
    assert rows.loc[["theorem1", "lemma1", "theorem2_corrected"], "holds"].notna().all()
    assert not any(name.startswith("certificate") for name in rows.index)


def test_resume_skips_done_units_and_refuses_to_overwrite(tmp_path, image_scale_path, capsys):
    args = ["verdicts", "--prior", "foe", "--size", "32", "--ks", "1"]
    args += ["--out", str(tmp_path), "--quiet"]
    assert main([*args, "--ts", "1"]) == 0
    first = pd.read_csv(tmp_path / "verdicts.csv")
    capsys.readouterr()
    assert main([*args, "--ts", "1"]) == 0  # the same command again: complete, nothing redone
    assert "complete:" in capsys.readouterr().out
    assert main([*args, "--ts", "1", "--P", "3"]) == 2  # other settings: never overwritten
    assert "other settings (P: 5 -> 3)" in capsys.readouterr().err
    assert main([*args, "--ts", "1,2", "--resume"]) == 2
    assert "ts" in capsys.readouterr().err  # the grid is part of the run: not resumable
    assert main([*args, "--ts", "1", "--resume"]) == 0
    again = pd.read_csv(tmp_path / "verdicts.csv")
    pd.testing.assert_frame_equal(first, again)  # nothing recomputed, nothing lost


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(prior="pnp"), "convex lower level"),
        (dict(size=40), "multiple of 16"),
        (dict(ks="0"), "--ks"),
        (dict(task="segment"), "unknown task"),
        (dict(solve_tol=0.0), "solve-tol"),
    ],
)
def test_validation_before_any_work(tmp_path, changes, message):
    cfg = VerdictConfig(out=str(tmp_path / "v"), **changes)
    with pytest.raises(InvalidInputError, match=message):
        run_verdicts(cfg)
    assert not (tmp_path / "v").exists()


def test_a_cut_inside_the_last_unit_recomputes_that_unit(tmp_path, image_scale_path, monkeypatch):
    """verdicts.csv cut inside the rows of its last (K, T) used to count that (K, T) as done
    from its first rows; now a unit counts only with all its rows (``unit_rows``), and the
    resumed file equals the uninterrupted one."""
    from retune_suite.experiments.error_study import verdicts

    monkeypatch.setattr(verdicts, "verdict_figure", lambda frame, out: [])  # not the subject
    cfg = VerdictConfig(
        prior="wavelet-B", size=32, ks=(1,), ts=(1, 2), threads=1, out=str(tmp_path)
    )
    assert run_verdicts(dataclasses.replace(cfg, quiet=True)) == 0
    path = tmp_path / "verdicts.csv"
    full = pd.read_csv(path)
    last = full[(full.K == 1) & (full["T"] == 2)]
    assert len(last) > 2 and (last.unit_rows == len(last)).all()
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    cut = sum(map(len, lines[: len(lines) - len(last) + 2])) + 7  # inside its third row
    path.write_bytes(data[:cut])
    assert run_verdicts(dataclasses.replace(cfg, quiet=True, resume=True)) == 0
    again = pd.read_csv(path)
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), full.drop(columns="seconds"))
