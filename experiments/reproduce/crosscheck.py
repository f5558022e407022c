r"""Which estimator did a training run learn? Each learned θ evaluated at every (K, T) and at x̂.

Algorithm 1 at (K, T) fits θ so that the *truncated* estimate x̃ = R(Φ_K^T(x₀, θ)) is good;
with K·T small that is a learned shrinkage of x₀ (at (1, 1) one forward-backward step from
u₀ = D Aᵀy), not the equilibrium x̂_θ the paper's model defines. This module evaluates the
final θ of every configuration of a finished ``reproduce`` run on the run's own test crops at

- each (K, T) of the run (the diagonal is the run's own ``test_psnr``, recomputed: checked
  against ``summary.csv``), and
- the fixed point x̂_θ of φ (:func:`retune_suite.operators.fixed_point`, tolerance
``default_rtol``), the
  estimate the bilevel problem (2) is about (wavelet models only: FB-PnP with a DRUNet has no
  guaranteed fixed point, so its θ are evaluated at the grid of (K, T) alone),

and writes ``crosscheck.csv`` into the run folder::

    python -m retune_suite.experiments.reproduce.crosscheck runs/fig1/paper
    python -m retune_suite.experiments.reproduce.crosscheck runs/fig2/cpu --denoiser drunet.pt

Columns: ``model``, ``K``, ``T`` (the configuration θ was trained at), ``evaluated_at``
(``K=…,T=…`` or ``fixed point``), ``test_psnr`` (dB, mean over the test crops; NaN when the
iteration diverged), ``diverged`` (the iterates became NaN/inf: an FB-PnP θ run for more steps
than it was trained with need not stay bounded), ``blocks`` (Φ_K blocks of the fixed-point
solve; NaN otherwise).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import fields
from pathlib import Path

import pandas as pd
import torch
from retune_suite.operators import fixed_point, restart
from retune_suite.operators.errors import InvalidInputError, NotContractiveError
from retune_suite.operators.iteration import default_rtol
from retune_suite.operators.maps.pnp import load_drunet
from retune_suite.operators.theta import like

from ..common.data import crops
from ..common.io import write_csv_atomic
from ..common.metrics import psnr
from ..common.options import convert_fields
from .presets import ReproduceConfig, denoiser_folder, parse_configs, selected_models
from .train import FIGURES, Problem, Unit, initial_theta, load_checkpoint, make_data

__all__ = ["crosscheck", "main"]


def _config(folder: Path) -> ReproduceConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise InvalidInputError(f"{folder} has no config.json: give a run folder of reproduce.")
    saved = json.loads(path.read_text())
    values = {f.name: saved[f.name] for f in fields(ReproduceConfig) if f.name in saved}
    return ReproduceConfig(**convert_fields(ReproduceConfig, values, strict=False))


def crosscheck(
    folder: str | Path, *, batch: int | None = None, denoiser: str | Path | None = None
) -> pd.DataFrame:
    """Evaluate every learned θ of the run in ``folder`` at each (K, T) and at x̂; see above.

    FB-PnP rows need the run's DRUNet: ``denoiser``, else the run's ``--denoiser``, else the
    suite's DRUNet that the run trained (``<out>/denoiser/<preset>``). Runs on the CPU in the
    run's dtype.
    """
    from .command import _split

    folder = Path(folder)
    cfg = _config(folder)
    task = FIGURES[cfg.figure].task
    dtype = getattr(torch, cfg.dtype)
    device = torch.device("cpu")
    _, test_images = _split(cfg)
    test_clean = crops(test_images, cfg.size, cfg.test_crops, cfg.seed + 2)
    # the test observations are drawn from seed + 1 whatever the training pairs: pass the test
    # crops in both places rather than cutting the 600 training crops again
    data = make_data(task, test_clean, test_clean, cfg.seed, device, dtype, cfg.noise)
    pairs = parse_configs(cfg.configs)
    batch = batch or cfg.batch
    models = selected_models(cfg)
    net = None
    if any(m.startswith("pnp") for m in models):
        net = load_drunet(_denoiser_path(cfg, denoiser), device=device, dtype=dtype)
    rows = []
    for model in models:
        theta0 = initial_theta(
            model,
            log_lambda=cfg.log_lambda,
            pnp_sigma=cfg.pnp_sigma,
            pnp_tau=cfg.pnp_tau,
            denoiser=net,
            device=device,
            dtype=dtype,
        )
        for K, T in pairs:
            path = folder / "checkpoints" / Unit(model, K, T).filename
            if not path.is_file():
                raise InvalidInputError(f"{path} is missing: the run is not finished.")
            ckpt = load_checkpoint(path, {"model": model, "K": K, "T": T})
            theta = like(theta0, tuple(t.to(device=device, dtype=dtype) for t in ckpt["theta"]))
            problem = Problem(model, task, data.forward, net, start=cfg.start)
            if model == "pnp-weights":  # at the (σ, τ) it was trained with
                problem.sigma, problem.tau = ckpt["problem"]["sigma"], ckpt["problem"]["tau"]
            for K_e, T_e in pairs:
                try:
                    value, _ = _psnr_at(problem, theta, data, batch, K_e, T_e)
                except NotContractiveError:  # a finding, not a failure of the cross-check
                    rows.append(_row(model, K, T, f"K={K_e},T={T_e}", math.nan, math.nan, True))
                    continue
                rows.append(_row(model, K, T, f"K={K_e},T={T_e}", value, math.nan))
            if not model.startswith("pnp"):
                value, blocks = _psnr_at(problem, theta, data, batch, 1, None)
                rows.append(_row(model, K, T, "fixed point", value, blocks))
    frame = pd.DataFrame(rows)
    write_csv_atomic(frame, folder / "crosscheck.csv")
    return frame


def _denoiser_path(cfg: ReproduceConfig, denoiser: str | Path | None) -> Path:
    """The DRUNet the run's FB-PnP rows used."""
    from .denoiser import CHECKPOINT_NAME

    given = denoiser if denoiser is not None else cfg.denoiser
    path = (
        Path(given) if given is not None else denoiser_folder(cfg.out, cfg.preset) / CHECKPOINT_NAME
    )
    if not path.is_file():
        raise InvalidInputError(
            f"the run's DRUNet {path} is missing: pass the one it used with --denoiser PATH."
        )
    return path


def _row(
    model: str, K: int, T: int, at: str, value: float, blocks: float, diverged: bool = False
) -> dict:
    return {
        "model": model,
        "K": K,
        "T": T,
        "evaluated_at": at,
        "test_psnr": value,
        "diverged": diverged,
        "blocks": blocks,
    }


def _psnr_at(
    problem: Problem, theta, data, batch: int, K: int, T: int | None
) -> tuple[float, float]:
    """Mean test PSNR of R(Φ_K^T(x₀, θ)), or of R(x̂_θ) when T is None (and the blocks)."""
    values, blocks = [], 0
    with torch.no_grad():
        for i in range(0, data.test_clean.shape[0], batch):
            step, x0, readout = problem.build(data.test_y[i : i + batch], theta)
            if T is None:
                result = fixed_point(step, theta, x0, K=K, rtol=default_rtol(x0.dtype))
                u, blocks = result.x, max(blocks, result.stats.blocks)
            else:
                u = restart(step, theta, x0, K, T).x
            x = u if readout is None else readout(u, theta)
            values.append(psnr(x, data.test_clean[i : i + batch]))
    return float(torch.cat(values).mean()), (float(blocks) if T is None else math.nan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retune_suite.experiments.reproduce.crosscheck",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument("folder", help="a finished run folder of retune-suite reproduce")
    parser.add_argument("--denoiser", help="the DRUNet of the run's FB-PnP rows (default: its own)")
    args = parser.parse_args(argv)
    try:
        frame = crosscheck(args.folder, denoiser=args.denoiser)
    except InvalidInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = frame.pivot_table(
        index=["model", "K", "T"], columns="evaluated_at", values="test_psnr", sort=False
    )
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"\nwrote {Path(args.folder) / 'crosscheck.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
