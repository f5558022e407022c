"""The configuration of ``retune-suite bench``: one flag per field, validated before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from retune_suite.operators.errors import InvalidInputError

from ..common.devices import resolve_device

__all__ = ["LEVELS", "OUTPUTS", "TOL_CAP", "WAVELET", "BenchConfig", "check_output", "validate"]

WAVELET, LEVELS = "db4", 4
"""The wavelet of both maps (section 4.1: Daubechies-4, 4 levels)."""
TOL_CAP = 20
"""A "→ tolerance" row runs at most TOL_CAP·backward_iters backward iterations."""
OUTPUTS = ("bench.csv", "targets.csv", "config.json")
"""The files a run writes under ``--out``."""


@dataclass
class BenchConfig:
    """Hypergradient cost and accuracy on wavelet denoising; --peers adds deepinv, torchdeq."""

    peers: bool = field(default=False, metadata={"help": "add deepinv and torchdeq"})
    size: int = field(default=256, metadata={"help": "crop size (multiple of 16)"})
    batch: int = field(default=4, metadata={"help": "number of colour crops"})
    K: int = field(default=10, metadata={"help": "ReTune block length"})
    T: int = field(default=10, metadata={"help": "ReTune restarts (K·T = steps)"})
    steps: int = field(default=100, metadata={"help": "forward steps of every method"})
    backward_iters: int = field(default=50, metadata={"help": "IFT backward iterations"})
    repeats: int = field(default=5, metadata={"help": "timed calls per method (median)"})
    warmup: int = field(default=1, metadata={"help": "untimed calls before timing"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads (0: leave as is)"})
    seed: int = field(default=0, metadata={"help": "crops and noise"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    log_lambda: float = field(default=-1.5, metadata={"help": "log λ at every scale"})
    solve_tol: float = field(default=1e-6, metadata={"help": "adjoint relative residual"})
    gmres_restart: int = field(default=10, metadata={"help": "our GMRES restart cycle"})
    reference_tol: float = field(default=1e-8, metadata={"help": "reference GMRES residual"})
    fixed_point_rtol: float = field(default=1e-11, metadata={"help": "reference fixed point"})
    out: str = field(default="runs/bench", metadata={"help": "folder for bench.csv"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace the results already in --out"}
    )


def validate(cfg: BenchConfig) -> None:
    """Every check of the configuration that can fail, before any work starts."""
    if cfg.size < 32 or cfg.size % 16:
        raise InvalidInputError(
            f"--size {cfg.size}: the 4-level transform needs a multiple of 16, at least 32."
        )
    for name, low in (
        ("batch", 1),
        ("K", 1),
        ("T", 1),
        ("steps", 1),
        ("backward_iters", 3),
        ("gmres_restart", 1),
        ("repeats", 1),
        ("warmup", 0),
        ("threads", 0),
    ):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(
                f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}."
            )
    if cfg.K * cfg.T != cfg.steps:
        raise InvalidInputError(
            f"ReTune runs K·T = {cfg.K * cfg.T} forward steps but --steps is {cfg.steps}: "
            "set --steps to K·T so that every method does the same forward work."
        )
    for name in ("solve_tol", "reference_tol", "fixed_point_rtol"):
        value = getattr(cfg, name)
        if not 0 < value < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be in (0, 1), got {value}.")
    if not cfg.log_lambda < 0:
        raise InvalidInputError(
            f"--log-lambda {cfg.log_lambda}: λ must be below 1 (τ = 1.95·min θ² and the "
            "approximation band has θ = 1)."
        )
    resolve_device(cfg.device)


def check_output(cfg: BenchConfig) -> None:
    """Refuse to replace the results of an earlier run in ``--out`` without ``--overwrite``."""
    out = Path(cfg.out)
    found = [name for name in OUTPUTS if (out / name).exists()]
    if found and not cfg.overwrite:
        raise InvalidInputError(
            f"{out} already holds the results of a run ({', '.join(found)}): choose another "
            "--out, or pass --overwrite to replace them (nothing was written)."
        )
