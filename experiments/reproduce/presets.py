"""The configurations of ``reproduce`` and ``pretrain-denoiser``, their presets and validation.

:class:`ReproduceConfig` and :class:`PretrainConfig` are the single source of truth of the two
commands: the command line derives one flag per field (with the field's ``help``), the sweep
types its ``[set]``/``[grid]`` values by them. List-valued fields are typed (``configs`` is a
tuple of (K, T) pairs, ``denoiser_nc`` / ``nc`` a tuple of channel counts) and still accept
the documented text, ``--configs 1,1;10,10`` and ``--nc 64,128,256,512``.

>>> ReproduceConfig(configs="1,1;10,10", denoiser_nc="8,16,32,64").configs
((1, 1), (10, 10))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retune_suite.operators.errors import InvalidInputError

from ..common.devices import resolve_device
from ..common.options import TypedFields, parse_groups, parse_list
from .train import ESTIMATORS, FIGURES

__all__ = [
    "DENOISER_PRESETS",
    "PRESETS",
    "PRETRAIN_PRESETS",
    "RESUMABLE",
    "PretrainConfig",
    "ReproduceConfig",
    "denoiser_folder",
    "parse_configs",
    "parse_nc",
    "run_folder",
    "run_name",
    "selected_models",
    "validate",
    "validate_pretrain",
]


def parse_configs(value: str | Sequence) -> tuple[tuple[int, int], ...]:
    """``"1,1;10,10"`` → ((1, 1), (10, 10)): the (K, T) pairs, each K, T >= 1, no repeats.

    A sequence of pairs (as a configuration stores them) passes through typed.

    >>> parse_configs([[1, 10], (10, 10)])
    ((1, 10), (10, 10))
    """
    try:
        pairs = parse_groups(value, int, name="configs", size=2)
    except InvalidInputError:
        raise InvalidInputError(
            f"--configs {value!r}: write (K, T) pairs as K,T separated by ';', e.g. '1,1;10,10'."
        ) from None
    if min(min(p) for p in pairs) < 1 or len(set(pairs)) != len(pairs):
        raise InvalidInputError(
            f"--configs {value!r}: need at least one (K, T) with K, T >= 1, without repeats."
        )
    return pairs  # type: ignore[return-value]


def parse_nc(value: str | Sequence, name: str = "denoiser-nc") -> tuple[int, int, int, int]:
    """``"64,128,256,512"`` → (64, 128, 256, 512): the DRUNet's channels at its 4 scales."""
    try:
        nc = parse_list(value, int, name=name)
    except InvalidInputError:
        nc = ()
    if len(nc) != 4 or min(nc) < 1:
        raise InvalidInputError(
            f"--{name} {value!r}: give 4 positive channel counts, e.g. 64,128,256,512."
        )
    return nc  # type: ignore[return-value]


def _parse_pretrain_nc(value: str | Sequence) -> tuple[int, int, int, int]:
    return parse_nc(value, name="nc")


def _parse_tol(value: Any) -> float | None:
    """``--tol`` as given on the command line (text) or stored (a number, or None)."""
    if value is None or isinstance(value, bool) or isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"--tol {value!r}: give a number, e.g. 1e-3.") from None


@dataclass
class ReproduceConfig(TypedFields):
    """Reproduce Fig. 1, 2 or 3 (section 4) with Algorithm 1; ``--preset quick`` on a CPU."""

    figure: str = field(default="fig1", metadata={"positional": True, "help": "fig1, fig2 or fig3"})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "quick (a CPU, minutes), cpu (64×64 crops and a narrow DRUNet: the FB-PnP "
            "rows in about an hour per figure on 2 CPU cores) or paper (section 4; its FB-PnP "
            "rows need a GPU)"
        },
    )
    name: str | None = field(default=None, metadata={"help": "run folder name (default: preset)"})
    out: str = field(default="runs", metadata={"help": "root of the run folders"})
    images: str | None = field(default=None, metadata={"help": "image folder (default: embedded)"})
    test_images: int = field(default=4, metadata={"help": "images held out for testing"})
    test_crops: int = field(default=4, metadata={"help": "test crops cut from them"})
    size: int = field(default=256, metadata={"help": "crop size (multiple of 16, >= 32)"})
    train_pairs: int = field(default=600, metadata={"help": "training (clean, observed) pairs"})
    batch: int = field(default=4, metadata={"help": "pairs per gradient step"})
    epochs: int = field(default=4, metadata={"help": "passes over the training pairs"})
    configs: tuple[tuple[int, int], ...] = field(
        default=((1, 1), (1, 10), (10, 1), (10, 10)),
        metadata={"help": "(K, T) pairs, written K,T;K,T;...", "parse": parse_configs},
    )
    models: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "the figure's rows (models) to run, names separated by commas; empty: all "
            "(the σ and τ rows must come with the weights rows, which start from them)",
            "parse": lambda v: parse_list(v, str, name="models"),
        },
    )
    estimator: str = field(default="retune", metadata={"help": ", ".join(ESTIMATORS)})
    T: str | None = field(
        default=None,
        metadata={
            "help": "auto: T chosen per gradient step (retune, fig1 only), the T of each "
            "--configs pair becoming its most blocks T_max: blocks of Φ_K run until the "
            "a-posteriori distance δ_K r/(1 − δ_K) of the iterate to x̂ (r the block residual "
            "‖Φ_K(u) − u‖₂ over the batch, δ_K the analytic ω^K) is at most --tol (absolute); "
            "metrics.csv logs the T used (T_used), "
            "the test estimates use T_max blocks; default: the configs' T"
        },
    )
    tol: float | None = field(
        default=None,
        metadata={"help": "--T auto's tolerance on that distance (> 0)", "parse": _parse_tol},
    )
    lr: float = field(default=5e-2, metadata={"help": "Adam learning rate"})
    lr_weights: float = field(default=5e-5, metadata={"help": "Adam lr for the DRUNet weights"})
    log_lambda: float = field(default=0.0, metadata={"help": "initial log λ_j (wavelet)"})
    start: str = field(
        default="adjoint",
        metadata={
            "help": "adjoint: x0 = D A^T y, the paper's text after (52); observation: u0 = D y "
            "(x0 = y), as the authors' code starts"
        },
    )
    noise: float | None = field(
        default=None,
        metadata={
            "help": "observation noise σ on every channel (default: the paper's per task; the "
            "authors' inpainting data use 0.1)",
            "parse": lambda v: None if v in (None, "", "None") else float(v),
        },
    )
    pnp_sigma: float = field(default=0.05, metadata={"help": "initial σ of pnp-sigma-tau"})
    pnp_tau: float = field(default=1.0, metadata={"help": "initial τ of pnp-sigma-tau"})
    fixed_point_rtol: float = field(default=1e-5, metadata={"help": "jfb/deq_solve fixed point"})
    fixed_point_max_blocks: int = field(default=2000, metadata={"help": "cap on Φ_K blocks"})
    solve_tol: float = field(default=1e-4, metadata={"help": "deq_solve adjoint tolerance"})
    solve_maxiter: int = field(default=500, metadata={"help": "deq_solve GMRES iterations"})
    denoiser: str | None = field(default=None, metadata={"help": "DRUNet state dict to load"})
    denoiser_steps: int = field(default=10000, metadata={"help": "DRUNet pretraining steps"})
    denoiser_size: int = field(default=128, metadata={"help": "DRUNet pretraining crop size"})
    denoiser_crops: int = field(default=4000, metadata={"help": "DRUNet pretraining crops"})
    denoiser_batch: int = field(default=16, metadata={"help": "DRUNet pretraining batch"})
    denoiser_lr: float = field(default=1e-4, metadata={"help": "DRUNet pretraining lr"})
    denoiser_nc: tuple[int, int, int, int] = field(
        default=(64, 128, 256, 512),
        metadata={"help": "DRUNet channels per scale, written 64,128,256,512", "parse": parse_nc},
    )
    denoiser_nb: int = field(default=4, metadata={"help": "DRUNet residual blocks per scale"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    dtype: str = field(default="float32", metadata={"help": "float32 or float64"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave)"})
    seed: int = field(default=0, metadata={"help": "seed of the crops, noise and batches"})
    checkpoint_every: int = field(default=25, metadata={"help": "gradient steps between saves"})
    inspect_every: int = field(
        default=0,
        metadata={
            "help": "every N-th gradient step (and the first) compare the step's gradient "
            "with the DEQ, unrolled and JFB gradients on its batch, in trajectory.csv "
            "(wavelet models; 0: off)"
        },
    )
    resume: bool = field(default=False, metadata={"help": "continue the run in the folder"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


DENOISER_PRESETS = {
    "quick": dict(steps=1500, size=32, crops=512, batch=8, lr=3e-3, nc=(8, 16, 32, 64), nb=1),
    "cpu": dict(steps=3000, size=64, crops=2000, batch=16, lr=1e-3, nc=(16, 32, 64, 128), nb=1),
    "paper": dict(
        steps=10000, size=128, crops=4000, batch=16, lr=1e-4, nc=(64, 128, 256, 512), nb=4
    ),
}
"""The suite's DRUNet per preset: tiny for ``quick``, a quarter of deepinv's width with one block
per scale for ``cpu`` (575 472 weights against 32.6 million), deepinv's architecture for
``paper``."""

PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        size=32,
        train_pairs=100,
        batch=4,
        epochs=3,
        test_images=1,
        test_crops=4,
        device="cpu",
        dtype="float32",
        threads=1,
        lr_weights=5e-4,
        checkpoint_every=25,
        **{f"denoiser_{k}": v for k, v in DENOISER_PRESETS["quick"].items()},
    ),
    "cpu": dict(
        size=64,
        train_pairs=200,
        batch=4,
        epochs=4,
        test_images=4,
        test_crops=4,
        device="cpu",
        dtype="float32",
        threads=1,
        lr_weights=5e-5,  # the paper's text; 5e-4 (the authors') diverged in fig. 2 (c)
        checkpoint_every=10,
        **{f"denoiser_{k}": v for k, v in DENOISER_PRESETS["cpu"].items()},
    ),
    "paper": dict(
        size=256,
        train_pairs=600,
        batch=4,
        epochs=4,
        test_images=4,
        test_crops=4,
        checkpoint_every=50,
        **{f"denoiser_{k}": v for k, v in DENOISER_PRESETS["paper"].items()},
    ),
}
"""``quick``: 32×32 crops, 100 pairs, 3 epochs (75 steps), 1 test image (4 crops), float32 on
one CPU thread (measured 4× faster than two on these small tensors), a tiny DRUNet
(nc = 8, 16, 32, 64, nb = 1; 1500 steps, about 30 s) and lr 5·10⁻⁴ for its weights (5·10⁻⁵
barely moves a network this small in 75 steps). Measured on 2 CPU cores: fig1 38 s, fig2
3 min 20 s (with the DRUNet), fig3 3 min. ``cpu``: the largest FB-PnP setting that runs in
about an hour per figure on 2 CPU cores, not the paper's: 64×64 crops (1/16 of the paper's
pixels), 200 pairs, 4 epochs (200 steps), the paper's 4 test images, a DRUNet of a quarter of
deepinv's width with one residual block per scale (3000 pretraining steps on 64×64 crops),
lr 5·10⁻⁵ for its weights (the paper's text; until 2026-12-03 the authors' stage-2 rate
5·10⁻⁴, with which fig. 2 (c) diverged at (10, 10): measured in docs/reproduce.md,
``--lr-weights 5e-4`` reruns those runs), one thread per run so that two figures run side by
side (measured: a (10, 10) FB-PnP gradient about 3 s, docs/reproduce.md). ``paper``: section
4's 600 pairs of 256×256, 4 epochs (600 steps), 4 test images, deepinv's DRUNet architecture,
for a GPU."""

RESUMABLE = ("resume", "checkpoint_every", "threads", "quiet")
"""Fields that may change when a run is resumed (they do not change the iterates)."""


@dataclass
class PretrainConfig(TypedFields):
    """Train the suite's DRUNet (deepinv architecture) on the training images for figs 2–3."""

    preset: str | None = field(
        default=None, metadata={"help": "quick or paper: the DRUNet of that reproduce preset"}
    )
    name: str | None = field(default=None, metadata={"help": "folder name (default: preset)"})
    out: str = field(default="runs", metadata={"help": "writes <out>/denoiser/<name>/drunet.pt"})
    images: str | None = field(default=None, metadata={"help": "image folder (default: embedded)"})
    test_images: int = field(default=4, metadata={"help": "images held out (as reproduce)"})
    steps: int = field(default=10000, metadata={"help": "Adam steps"})
    size: int = field(default=128, metadata={"help": "crop size"})
    crops: int = field(default=4000, metadata={"help": "training crops"})
    batch: int = field(default=16, metadata={"help": "crops per step"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate"})
    sigma_max: float = field(default=0.2, metadata={"help": "noise levels σ ~ U[0, σ_max]"})
    nc: tuple[int, int, int, int] = field(
        default=(64, 128, 256, 512),
        metadata={
            "help": "channels per scale, written 64,128,256,512",
            "parse": _parse_pretrain_nc,
        },
    )
    nb: int = field(default=4, metadata={"help": "residual blocks per scale"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    dtype: str = field(default="float32", metadata={"help": "float32 or float64"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave)"})
    seed: int = field(default=0, metadata={"help": "seed of the split, crops and noise"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between saves"})
    resume: bool = field(default=False, metadata={"help": "continue the checkpoint"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


PRETRAIN_PRESETS: dict[str, dict[str, Any]] = {
    name: {
        **DENOISER_PRESETS[name],
        **{k: v for k, v in PRESETS[name].items() if k in ("test_images", "device", "threads")},
    }
    for name in PRESETS
}
"""The denoiser settings of each ``reproduce`` preset, so that both commands agree."""


def _positive_ints(cfg: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            flag = name.replace("_", "-")
            raise InvalidInputError(f"--{flag} must be an integer >= 1, got {value!r}.")


def _common_checks(cfg: ReproduceConfig | PretrainConfig) -> None:
    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise InvalidInputError(f"unknown preset {cfg.preset!r}: choose from {', '.join(PRESETS)}.")
    if cfg.dtype not in ("float32", "float64"):
        raise InvalidInputError(f"--dtype must be float32 or float64, got {cfg.dtype!r}.")
    if cfg.images is not None and not Path(cfg.images).is_dir():
        raise InvalidInputError(
            f"--images {cfg.images}: no such folder; give a folder of PNG/JPEG images "
            "(e.g. DIV2K's), or leave it out to use the embedded images."
        )
    name = cfg.name if cfg.name is not None else cfg.preset
    if name is not None and (not name or "/" in name or "\\" in name or name in (".", "..")):
        raise InvalidInputError(f"--name {name!r}: give a plain folder name.")
    resolve_device(cfg.device)


def validate(cfg: ReproduceConfig) -> None:
    """Every check of ``reproduce`` that needs no data runs here, before any work."""
    if cfg.figure not in FIGURES:
        raise InvalidInputError(f"unknown figure {cfg.figure!r}: choose from {', '.join(FIGURES)}.")
    if cfg.estimator not in ESTIMATORS:
        raise InvalidInputError(
            f"unknown estimator {cfg.estimator!r}: choose from {', '.join(ESTIMATORS)}."
        )
    _common_checks(cfg)
    _positive_ints(
        cfg,
        (
            "test_images",
            "test_crops",
            "size",
            "train_pairs",
            "batch",
            "epochs",
            "fixed_point_max_blocks",
            "solve_maxiter",
            "checkpoint_every",
            "denoiser_steps",
            "denoiser_size",
            "denoiser_crops",
            "denoiser_batch",
            "denoiser_nb",
        ),
    )
    if cfg.size < 32 or cfg.size % 16:
        raise InvalidInputError(
            f"--size {cfg.size}: the 4-level wavelet transform needs a multiple of 16, at "
            "least 32 (the deblurring kernel is 25 pixels wide)."
        )
    if cfg.train_pairs < cfg.batch:
        raise InvalidInputError(
            f"--train-pairs {cfg.train_pairs} is fewer than one batch of {cfg.batch}: "
            "raise --train-pairs or lower --batch."
        )
    for name in ("lr", "lr_weights", "denoiser_lr", "pnp_sigma", "pnp_tau", "solve_tol"):
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InvalidInputError(f"--{name.replace('_', '-')} must be positive, got {value}.")
    if not 0 < cfg.fixed_point_rtol < 1:
        raise InvalidInputError(
            f"--fixed-point-rtol must be in (0, 1), got {cfg.fixed_point_rtol}."
        )
    parse_configs(cfg.configs)
    models = selected_models(cfg)
    if cfg.start not in ("adjoint", "observation"):
        raise InvalidInputError(f"--start {cfg.start!r}: choose adjoint or observation.")
    if cfg.noise is not None and not (math.isfinite(cfg.noise) and cfg.noise >= 0):
        raise InvalidInputError(f"--noise must be a noise level >= 0, got {cfg.noise}.")
    if not (isinstance(cfg.inspect_every, int) and cfg.inspect_every >= 0):
        raise InvalidInputError(
            f"--inspect-every must be 0 (off) or positive, got {cfg.inspect_every}."
        )
    if cfg.inspect_every and any(m.startswith("pnp") for m in models):
        raise InvalidInputError(
            "--inspect-every compares with the DEQ gradient at the fixed point, which FB-PnP "
            "does not guarantee: select the wavelet rows with --models wavelet-BC."
        )
    parse_nc(cfg.denoiser_nc)
    _check_T_auto(cfg)
    if cfg.denoiser is not None and not Path(cfg.denoiser).is_file():
        raise InvalidInputError(
            f"--denoiser {cfg.denoiser}: no such file; give a deepinv DRUNet state dict "
            "(or a checkpoint of retune-suite pretrain-denoiser), or leave it out to train "
            "the suite's own."
        )


def _check_T_auto(cfg: ReproduceConfig) -> None:
    """--T auto: retune on fig1 (the analytic δ_K), with --tol > 0; --tol only with it."""
    if cfg.T is None:
        if cfg.tol is not None:
            raise InvalidInputError(f"--tol {cfg.tol} is for --T auto only: add --T auto.")
        return
    if cfg.T != "auto":
        raise InvalidInputError(
            f"--T {cfg.T!r}: the only value is auto (the fixed T are in --configs)."
        )
    tol = cfg.tol
    if isinstance(tol, bool) or not (
        isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0
    ):
        raise InvalidInputError(f"--T auto needs --tol > 0 (e.g. --tol 1e-3), got {tol!r}.")
    if cfg.estimator != "retune":
        raise InvalidInputError(f"--T auto is for --estimator retune only, got {cfg.estimator!r}.")
    if cfg.figure != "fig1":
        raise InvalidInputError(
            f"--T auto needs the analytic δ_K of Φ_K, known for wavelet denoising (fig1) "
            f"only, not {cfg.figure}."
        )


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Every check of ``pretrain-denoiser`` that needs no data, before any work."""
    _common_checks(cfg)
    _positive_ints(cfg, ("test_images", "steps", "size", "crops", "batch", "nb"))
    _positive_ints(cfg, ("checkpoint_every",))
    if not cfg.lr > 0 or not cfg.sigma_max > 0:
        raise InvalidInputError("--lr and --sigma-max must be positive.")
    parse_nc(cfg.nc, name="nc")


def selected_models(cfg: ReproduceConfig) -> tuple[str, ...]:
    """The rows of ``cfg.figure`` that ``--models`` selects, in the figure's order.

    >>> selected_models(ReproduceConfig("fig2", models="wavelet-BC"))
    ('wavelet-BC',)
    """
    rows = FIGURES[cfg.figure].models
    chosen = tuple(parse_list(cfg.models, str, name="models")) if cfg.models else rows
    unknown = [m for m in chosen if m not in rows]
    if unknown or not chosen:
        raise InvalidInputError(
            f"--models {','.join(chosen)!r}: {cfg.figure} has the rows {', '.join(rows)}."
        )
    if "pnp-weights" in chosen and "pnp-sigma-tau" not in chosen:
        raise InvalidInputError(
            "--models: pnp-weights starts from the σ, τ that pnp-sigma-tau learns; select "
            "pnp-sigma-tau too."
        )
    return tuple(m for m in rows if m in chosen)


def run_name(cfg: ReproduceConfig | PretrainConfig) -> str:
    """``--name``, else the preset, else ``default``."""
    return cfg.name or cfg.preset or "default"


def run_folder(cfg: ReproduceConfig) -> Path:
    """``<out>/<figure>/<name>``."""
    return Path(cfg.out) / cfg.figure / run_name(cfg)


def denoiser_folder(out: str, preset: str | None, name: str | None = None) -> Path:
    """Where ``pretrain-denoiser`` writes and ``reproduce`` looks: ``<out>/denoiser/<name>``."""
    return Path(out) / "denoiser" / (name or preset or "default")
