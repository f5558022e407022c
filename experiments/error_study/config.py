"""The configuration of ``retune-suite errors``: fields (one flag each), presets, validation.

:class:`ErrorStudyConfig` is the single source of truth of the command: the command line
derives one flag per field, with the field's ``help``; the list fields (``ks``, ``ts``,
``ks_for_t``, ``ps``) are typed tuples that still accept the documented text ``--ks 1,2,5``.

>>> ErrorStudyConfig(ks="1, 5,10", ps="0,2").ks
(1, 5, 10)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.maps.section4 import TASKS

from ..common.devices import resolve_device
from ..common.options import TypedFields, parse_list

__all__ = [
    "KEY",
    "PRESETS",
    "PRIORS",
    "RESUMABLE",
    "TASKS",
    "TOLERANCES",
    "ErrorStudyConfig",
    "plan",
    "validate",
    "with_tolerances",
]

PRIORS = ("wavelet-B", "wavelet-BC", "pnp", "foe")
"""The error study's priors (``pnp`` is FB-PnP with θ = (σ, τ), ``foe`` the fields of experts of
operators.foe; retune_suite.operators.maps.section4)."""
KEY = ("task", "prior", "size", "batch", "dtype", "seed", "estimator", "K", "T", "P")
"""What identifies a row of ``metrics.csv``: the problem (task, prior, crop size, batch,
dtype, seed of the crops and noise) and the estimator with its (K, T, P)."""

RESUMABLE = ("resume", "threads", "quiet", "out", "timing_repeats", "unrolled_max_steps")
"""Fields that may change when a run is resumed: they change no row (``out`` is where the
run is, wherever it was first written; every row records its own ``timing_repeats``;
``unrolled_max_steps`` only decides which unrolled rows are still to be computed, e.g. lower
it to resume a run that ran out of memory: at 256×256 with a batch of 4 the unrolled graph
takes 26 MB per step, and the profiled warm-up call of 250 steps reached 20.6 GB)."""


def _counts(name: str, low: int) -> Any:
    """The converter of a list field: comma-separated integers, each at least ``low``."""
    flag = name.replace("_", "-")

    def parse(value: str | list | tuple) -> tuple[int, ...]:
        try:
            values = parse_list(value, int, name=flag)
        except InvalidInputError:
            values = ()
        if not values or min(values) < low:
            raise InvalidInputError(
                f"--{flag} must be a comma-separated list of integers >= {low}, got {value!r}."
            )
        return values

    parse.__name__ = f"parse_{name}"
    return parse


def _optional_tol(value: str | float | None) -> float | None:
    """A tolerance flag: a number, or None (the dtype's, :data:`TOLERANCES`)."""
    return None if value in (None, "", "None") else float(value)


TOLERANCES = {
    "float32": {"solve_tol": 1e-6, "fixed_point_rtol": 1e-7},
    "float64": {"solve_tol": 1e-10, "fixed_point_rtol": 1e-12},
}
"""The DEQ reference's and x̂'s tolerances where none is given, per dtype. A float64 study
measures errors far below 1e-7, so its reference is solved that far too: with float32's
tolerances x̂ was a fixed point to 1e-7 only, and every linearisation warned."""


@dataclass
class ErrorStudyConfig(TypedFields):
    """Gradient-error study at image scale (section 4); ``--preset quick`` runs on the CPU."""

    task: str = field(
        default="denoise", metadata={"help": "denoise, inpaint, deblur, or all (the four)"}
    )
    prior: str = field(default="wavelet-BC", metadata={"help": "wavelet-B, wavelet-BC, pnp or foe"})
    size: int = field(default=256, metadata={"help": "crop size (multiple of 16, >= 32)"})
    batch: int = field(default=4, metadata={"help": "number of colour crops"})
    images: str | None = field(default=None, metadata={"help": "image folder (default: embedded)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    dtype: str = field(default="float32", metadata={"help": "float32 or float64"})
    ks: tuple[int, ...] = field(
        default=(1, 2, 5, 10, 20),
        metadata={"help": "K of the K sweep, written 1,2,5", "parse": _counts("ks", 1)},
    )
    t_ref: int = field(default=50, metadata={"help": "T of the K sweep (ReTune, unrolled)"})
    ts: tuple[int, ...] = field(
        default=(1, 2, 5, 10, 20, 50),
        metadata={"help": "T of the ReTune T sweep (Theorem 2)", "parse": _counts("ts", 1)},
    )
    ks_for_t: tuple[int, ...] = field(
        default=(1, 10),
        metadata={
            "help": "K of the T sweep; the first also the Neumann K",
            "parse": _counts("ks_for_t", 1),
        },
    )
    ps: tuple[int, ...] = field(
        default=(0, 1, 2, 5, 10, 20),
        metadata={"help": "Neumann truncations P, eq. (22)", "parse": _counts("ps", 0)},
    )
    unrolled_max_steps: int = field(
        default=500, metadata={"help": "unrolled only while K·T is at most this"}
    )
    solve_tol: float | None = field(
        default=None,
        metadata={
            "help": "relative residual of the DEQ reference (GMRES); default: 1e-6 in float32, "
            "1e-10 in float64",
            "parse": _optional_tol,
        },
    )
    fixed_point_rtol: float | None = field(
        default=None,
        metadata={
            "help": "relative step of the fixed point x̂; default: 1e-7 in float32, 1e-12 in "
            "float64",
            "parse": _optional_tol,
        },
    )
    fixed_point_method: str = field(
        default="anderson",
        metadata={"help": "fixed-point solver (retune_suite.operators.fixed_point)"},
    )
    log_lambda: float = field(default=-2.0, metadata={"help": "log λ_j of the wavelet priors"})
    segment_points: int = field(
        default=5,
        metadata={
            "help": "unused: L_θ is the exact secant at (x_K(T-1), x̂) (kept so that saved "
            "configurations and scripts still parse)"
        },
    )
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave as is)"})
    timing_repeats: int = field(
        default=3,
        metadata={
            "help": "timed calls per estimator after one warm-up call (seconds_median is "
            "their median; peak memory is the warm-up call's)"
        },
    )
    denoiser: str | None = field(
        default=None, metadata={"help": "DRUNet state dict for pnp (default: train a small one)"}
    )
    pnp_sigma: float = field(default=0.05, metadata={"help": "σ of FB-PnP (53)"})
    pnp_tau: float = field(default=1.0, metadata={"help": "τ of FB-PnP (53)"})
    denoiser_steps: int = field(
        default=300, metadata={"help": "training steps of the small DRUNet (no --denoiser)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the crops, noise and mask"})
    out: str = field(default="runs/errors", metadata={"help": "folder for metrics.csv, figures"})
    preset: str | None = field(
        default=None, metadata={"help": "quick (CPU, float64, minutes) or default"}
    )
    resume: bool = field(default=False, metadata={"help": "continue the run in --out"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        task="all",
        size=32,
        batch=1,
        device="cpu",
        dtype="float64",
        ks=(1, 2, 5, 10),
        t_ref=20,
        ts=(1, 2, 5, 10, 20),
        ks_for_t=(1, 5),
        ps=(0, 1, 2, 5, 10, 20),
        unrolled_max_steps=200,
        solve_tol=1e-10,
        fixed_point_rtol=1e-12,
        segment_points=2,
        threads=1,
        timing_repeats=1,  # one warm call after the warm-up: the run stays about 1.5 min
    ),
    "default": {},
}


def validate(cfg: ErrorStudyConfig) -> None:
    """Every check that can fail runs before any work starts."""
    tasks = TASKS if cfg.task == "all" else (cfg.task,)
    for t in tasks:
        if t not in TASKS:
            raise InvalidInputError(f"unknown task {t!r}: choose from {', '.join(TASKS)} or all.")
    if cfg.prior not in PRIORS:
        raise InvalidInputError(f"unknown prior {cfg.prior!r}: choose from {', '.join(PRIORS)}.")
    if cfg.size < 32 or cfg.size % 16:
        raise InvalidInputError(
            f"--size {cfg.size}: the 4-level transform needs a multiple of 16, at least 32."
        )
    if cfg.dtype not in ("float32", "float64"):
        raise InvalidInputError(f"--dtype must be float32 or float64, got {cfg.dtype!r}.")
    if cfg.denoiser is not None and not Path(cfg.denoiser).is_file():
        raise InvalidInputError(
            f"--denoiser {cfg.denoiser}: no such file (a deepinv DRUNet "
            "state dict, or a checkpoint of retune-suite pretrain-denoiser)."
        )
    if cfg.images is not None and not Path(cfg.images).is_dir():
        raise InvalidInputError(f"--images {cfg.images}: no such folder.")
    for name in ("ks", "ts", "ks_for_t", "ps"):
        _FIELDS[name].metadata["parse"](getattr(cfg, name))
    if cfg.timing_repeats < 1:
        raise InvalidInputError(
            f"--timing-repeats must be at least 1 (timed calls after the warm-up), "
            f"got {cfg.timing_repeats}."
        )
    for name, low in (
        ("batch", 1),
        ("t_ref", 1),
        ("unrolled_max_steps", 0),
        ("threads", 0),
        ("denoiser_steps", 1),
    ):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(
                f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}."
            )
    for name in ("solve_tol", "fixed_point_rtol"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, int | float) and 0 < value < 1):
            raise InvalidInputError(f"--{name.replace('_', '-')} must be in (0, 1), got {value}.")
    for name in ("pnp_sigma", "pnp_tau"):
        value = getattr(cfg, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise InvalidInputError(f"--{name.replace('_', '-')} must be positive, got {value}.")
    resolve_device(cfg.device)


def with_tolerances(cfg: ErrorStudyConfig) -> ErrorStudyConfig:
    """``cfg`` with the tolerances it leaves unset taken from :data:`TOLERANCES` for its dtype
    (what the run uses, saves in ``config.json`` and compares on ``--resume``)."""
    unset = {k: v for k, v in TOLERANCES[cfg.dtype].items() if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **unset)


def plan(cfg: ErrorStudyConfig) -> list[tuple[str, str]]:
    """(task, prior) pairs: the given one, or for ``all`` the paper's four settings."""
    if cfg.task == "all":
        return [
            ("denoise", "wavelet-B"),
            ("denoise", "wavelet-BC"),
            ("inpaint", "wavelet-BC"),
            ("deblur", "wavelet-BC"),
        ]
    return [(cfg.task, cfg.prior)]


_FIELDS = {f.name: f for f in dataclasses.fields(ErrorStudyConfig)}
