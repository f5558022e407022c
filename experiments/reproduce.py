r"""``retune-suite reproduce fig1|fig2|fig3`` and ``retune-suite pretrain-denoiser``.

The experiments of section 4 with Algorithm 1 (:mod:`experiments.train`): for each model of
the figure and each (K, T) ∈ {(1, 1), (1, 10), (10, 1), (10, 10)}, Adam on θ for ``epochs``
passes over ``train_pairs`` (clean, observed) crops, batch 4, lr 5·10⁻² (5·10⁻⁵ for the
DRUNet weights), then the test PSNR of x̃ = R(Φ_K^T(x₀, θ)) on held-out images.

======  ===========  ========================================================================
figure  task         models
======  ===========  ========================================================================
fig1    denoise      (a) θ_B, (b) θ_BC: FB on weighted wavelet coefficients (51)
fig2    inpaint      (a) wavelet θ_BC, (b) FB-PnP θ = (σ, τ), DRUNet fixed, (c) FB-PnP θ = Λ
fig3    deblur       the same three; (c) starts from (b)'s final (σ, τ) at the same (K, T)
======  ===========  ========================================================================

A run writes ``<out>/<figure>/<name>/``: ``config.json``, ``metrics.csv`` (one row per gradient
step and configuration), ``checkpoints/<model>_K<K>_T<T>.pt`` (θ, Adam state, step, RNG
states, the rows so far; every ``checkpoint_every`` steps and at the end, atomically),
``summary.csv`` (final train PSNR = mean of the last 25 steps, test PSNR), ``claims.csv`` (the
paper's statements about these figures, checked on the run), ``reconstructions.npz`` and the
figure ``<figure>.pdf``/``.png`` in the paper's layout. ``--resume`` continues an interrupted
run with no step lost or repeated.

The PnP models use the suite's DRUNet from ``<out>/denoiser/<preset>/drunet.pt``
(``retune-suite pretrain-denoiser`` writes it; when it is missing it is trained first, on the
training images only) or ``--denoiser PATH``, a deepinv DRUNet state dict.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from operators.errors import InvalidInputError

from .common.io import write_csv_atomic, write_json_atomic, write_npz_atomic
from .errors import resolve_device
from .train import ESTIMATORS, FIGURES, Unit

__all__ = [
    "PRESETS",
    "PRETRAIN_PRESETS",
    "PretrainConfig",
    "ReproduceConfig",
    "check_claims",
    "parse_configs",
    "run_pretrain",
    "run_reproduce",
    "summarise",
]

WINDOW = 25
"""Moving-average window of the figures and of the final train PSNR (section 4, Fig. 1)."""


@dataclass
class ReproduceConfig:
    """Reproduce Fig. 1, 2 or 3 (section 4) with Algorithm 1; ``--preset quick`` on a CPU."""

    figure: str = field(default="fig1", metadata={"positional": True, "help": "fig1, fig2 or fig3"})
    preset: str | None = field(default=None, metadata={"help": "quick or paper"})
    name: str | None = field(default=None, metadata={"help": "run folder name (default: preset)"})
    out: str = field(default="runs", metadata={"help": "root of the run folders"})
    images: str | None = field(default=None, metadata={"help": "image folder (default: embedded)"})
    test_images: int = field(default=4, metadata={"help": "images held out for testing"})
    test_crops: int = field(default=4, metadata={"help": "test crops cut from them"})
    size: int = field(default=256, metadata={"help": "crop size (multiple of 16, >= 32)"})
    train_pairs: int = field(default=600, metadata={"help": "training (clean, observed) pairs"})
    batch: int = field(default=4, metadata={"help": "pairs per gradient step"})
    epochs: int = field(default=4, metadata={"help": "passes over the training pairs"})
    configs: str = field(default="1,1;1,10;10,1;10,10", metadata={"help": "(K,T) list K,T;K,T"})
    estimator: str = field(default="retune", metadata={"help": ", ".join(ESTIMATORS)})
    lr: float = field(default=5e-2, metadata={"help": "Adam learning rate"})
    lr_weights: float = field(default=5e-5, metadata={"help": "Adam lr for the DRUNet weights"})
    log_lambda: float = field(default=0.0, metadata={"help": "initial log λ_j (wavelet)"})
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
    denoiser_nc: str = field(default="64,128,256,512", metadata={"help": "DRUNet channels"})
    denoiser_nb: int = field(default=4, metadata={"help": "DRUNet residual blocks per scale"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    dtype: str = field(default="float32", metadata={"help": "float32 or float64"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave)"})
    seed: int = field(default=0, metadata={"help": "seed of the crops, noise and batches"})
    checkpoint_every: int = field(default=25, metadata={"help": "gradient steps between saves"})
    resume: bool = field(default=False, metadata={"help": "continue the run in the folder"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


DENOISER_PRESETS = {
    "quick": dict(steps=1500, size=32, crops=512, batch=8, lr=3e-3, nc="8,16,32,64", nb=1),
    "paper": dict(steps=10000, size=128, crops=4000, batch=16, lr=1e-4, nc="64,128,256,512", nb=4),
}
"""The suite's DRUNet per preset: tiny for ``quick``; deepinv's architecture for ``paper``."""

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
3 min 20 s (with the DRUNet), fig3 3 min. ``paper``: section 4's 600 pairs of 256×256,
4 epochs (600 steps), 4 test images, deepinv's DRUNet architecture, for a GPU."""

RESUMABLE = ("resume", "checkpoint_every", "threads", "quiet")
"""Fields that may change when a run is resumed (they do not change the iterates)."""


def parse_configs(text: str) -> list[tuple[int, int]]:
    """``"1,1;10,10"`` → [(1, 1), (10, 10)]: the (K, T) pairs, each K, T >= 1, no repeats."""
    pairs = []
    try:
        for item in text.replace(" ", "").split(";"):
            if item:
                K, T = (int(v) for v in item.split(","))
                pairs.append((K, T))
    except ValueError:
        raise InvalidInputError(
            f"--configs {text!r}: write (K, T) pairs as K,T separated by ';', e.g. '1,1;10,10'."
        ) from None
    if not pairs or min(min(p) for p in pairs) < 1 or len(set(pairs)) != len(pairs):
        raise InvalidInputError(
            f"--configs {text!r}: need at least one (K, T) with K, T >= 1, without repeats."
        )
    return pairs


def _nc(text: str) -> tuple[int, int, int, int]:
    try:
        nc = tuple(int(v) for v in text.split(","))
    except ValueError:
        nc = ()
    if len(nc) != 4 or min(nc) < 1:
        raise InvalidInputError(
            f"--denoiser-nc {text!r}: give 4 positive channel counts, e.g. 64,128,256,512."
        )
    return nc  # type: ignore[return-value]


def _positive_ints(cfg: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            flag = name.replace("_", "-")
            raise InvalidInputError(f"--{flag} must be an integer >= 1, got {value!r}.")


def _common_checks(cfg: Any) -> None:
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
    """Every check that needs no data runs here, before any work."""
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
    _nc(cfg.denoiser_nc)
    if cfg.denoiser is not None and not Path(cfg.denoiser).is_file():
        raise InvalidInputError(
            f"--denoiser {cfg.denoiser}: no such file; give a deepinv DRUNet state dict "
            "(or a checkpoint of retune-suite pretrain-denoiser), or leave it out to train "
            "the suite's own."
        )


def _run_name(cfg: Any) -> str:
    return cfg.name or cfg.preset or "default"


def run_folder(cfg: ReproduceConfig) -> Path:
    """``<out>/<figure>/<name>``."""
    return Path(cfg.out) / cfg.figure / _run_name(cfg)


def denoiser_folder(out: str, preset: str | None, name: str | None = None) -> Path:
    """Where ``pretrain-denoiser`` writes and ``reproduce`` looks: ``<out>/denoiser/<name>``."""
    return Path(out) / "denoiser" / (name or preset or "default")


def _check_run_folder(cfg: ReproduceConfig, folder: Path) -> None:
    existing = (folder / "config.json").exists() or any((folder / "checkpoints").glob("*.pt"))
    if existing and not cfg.resume:
        raise InvalidInputError(
            f"{folder} already holds a run: pass --resume to continue it, or choose another "
            "--name (nothing is overwritten)."
        )
    if existing and (folder / "config.json").exists():
        import json

        saved = json.loads((folder / "config.json").read_text())
        changed = [
            f"{f.name}: {saved.get(f.name)!r} -> {getattr(cfg, f.name)!r}"
            for f in fields(cfg)
            if f.name not in RESUMABLE and saved.get(f.name) != getattr(cfg, f.name)
        ]
        if changed:
            raise InvalidInputError(
                f"cannot resume {folder}: the settings differ from its config.json ("
                + "; ".join(changed)
                + f"). Only {', '.join(RESUMABLE)} may change; give the same flags "
                "(and --preset) as the first run, or choose another --name."
            )


def _images(folder: str | None) -> list:
    from .common.data import embedded_images, load_folder

    if folder is None:
        return embedded_images()
    try:
        return load_folder(folder)
    except FileNotFoundError as error:
        raise InvalidInputError(f"--images {folder}: {error}") from None


def _split(cfg: Any) -> tuple[list, list]:
    from .common.data import train_test_split

    images = _images(cfg.images)
    if cfg.test_images >= len(images):
        raise InvalidInputError(
            f"--test-images {cfg.test_images} leaves no training image out of {len(images)}: "
            f"use at most {len(images) - 1}, or give a larger --images folder."
        )
    return train_test_split(images, test=cfg.test_images, seed=cfg.seed)


def summarise(metrics: pd.DataFrame, tests: pd.DataFrame, window: int = WINDOW) -> pd.DataFrame:
    """Per (model, K, T): final train PSNR (mean of the last ``window`` steps), final loss,
    steps, training seconds, last θ, and the test PSNR (from ``tests``)."""
    rows = []
    for (model, K, T), g in metrics.groupby(["model", "K", "T"], sort=False):
        g = g.sort_values("step")
        rows.append(
            {
                "model": model,
                "K": int(K),
                "T": int(T),
                "steps": int(g.step.max()),
                "final_train_psnr": g.psnr.tail(window).mean(),
                "final_loss": g.loss.tail(window).mean(),
                "train_seconds": g.seconds.sum(),
                "theta": g.theta.iloc[-1],
            }
        )
    summary = pd.DataFrame(rows)
    if not tests.empty:
        summary = summary.merge(tests, on=["model", "K", "T"], how="left")
    return summary


def _moving_average(psnr: pd.Series, window: int) -> pd.Series:
    """Trailing mean over full windows (the first ``window − 1`` steps have none)."""
    return psnr.rolling(min(window, len(psnr)), min_periods=min(window, len(psnr))).mean()


def _first_step_at(g: pd.DataFrame, level: float, window: int) -> int | None:
    g = g.sort_values("step")
    ma = _moving_average(g.psnr.reset_index(drop=True), window)
    hits = (ma >= level - 1e-12).to_numpy().nonzero()[0]
    return int(g.step.iloc[hits[0]]) if len(hits) else None


def check_claims(
    figure: str, metrics: pd.DataFrame, summary: pd.DataFrame, window: int = WINDOW
) -> pd.DataFrame:
    """The paper's statements about ``figure`` (section 4), measured on this run.

    For each model (needs (10, 10) and another (K, T) in the run):

    - *best*: K = T = 10 reaches the highest final train PSNR (mean of the last ``window``
      steps) of the configurations.
    - *faster*: with L the best final train PSNR of the other configurations, reached by
      configuration c, the first step at which the ``window``-step moving average of
      K = T = 10 is ≥ L comes before the first step at which c's moving average is ≥ L
      (never reaching L counts as not faster).

    fig1: θ_BC beats θ_B at K = T = 10 (final train PSNR; the test PSNR is reported beside).
    fig2, fig3: learning the denoiser (c) beats the fixed denoiser (b), and (b) beats the
    wavelet prior (a), at K = T = 10 (same measures).
    """
    rows: list[dict[str, Any]] = []
    final = {(r.model, r.K, r.T): r for r in summary.itertuples()}

    def test_of(key: tuple) -> float:
        return float(getattr(final[key], "test_psnr", float("nan")))

    for model in summary.model.unique():
        key = (model, 10, 10)
        others = [k for k in final if k[0] == model and k != key]
        if key not in final or not others:
            continue
        best_other = max(others, key=lambda k: final[k].final_train_psnr)
        level = final[best_other].final_train_psnr
        mine = final[key].final_train_psnr
        rows.append(
            {
                "figure": figure,
                "model": model,
                "claim": "K=T=10 reaches the highest final train PSNR",
                "holds": bool(mine >= level),
                "measured": (
                    f"K=T=10 {mine:.2f} dB; best other (K={best_other[1]}, T={best_other[2]}) "
                    f"{level:.2f} dB"
                ),
            }
        )
        g = metrics[metrics.model == model]
        at = {k: g[(g.K == k[1]) & (g["T"] == k[2])] for k in (key, best_other)}
        s_mine = _first_step_at(at[key], level, window)
        s_other = _first_step_at(at[best_other], level, window)
        rows.append(
            {
                "figure": figure,
                "model": model,
                "claim": "K=T=10 gets there in fewer steps",
                "holds": bool(s_mine is not None and (s_other is None or s_mine < s_other)),
                "measured": (
                    f"{window}-step average ≥ {level:.2f} dB: K=T=10 at step "
                    f"{s_mine if s_mine is not None else 'never'}, (K={best_other[1]}, "
                    f"T={best_other[2]}) at step {s_other if s_other is not None else 'never'}"
                ),
            }
        )

    def compare(better: str, worse: str, claim: str) -> None:
        a, b = (better, 10, 10), (worse, 10, 10)
        if a not in final or b not in final:
            return
        ta, tb = final[a].final_train_psnr, final[b].final_train_psnr
        rows.append(
            {
                "figure": figure,
                "model": better,
                "claim": claim,
                "holds": bool(ta > tb),
                "measured": (
                    f"final train {ta:.2f} vs {tb:.2f} dB; test {test_of(a):.2f} vs "
                    f"{test_of(b):.2f} dB"
                ),
            }
        )

    if figure == "fig1":
        compare("wavelet-BC", "wavelet-B", "θ_BC beats θ_B at K=T=10")
    else:
        compare("pnp-weights", "pnp-sigma-tau", "learning the denoiser beats the fixed one")
        compare("pnp-sigma-tau", "wavelet-BC", "FB-PnP (σ, τ) beats the wavelet prior")
    return pd.DataFrame(rows, columns=["figure", "model", "claim", "holds", "measured"])


def claims_paragraph(figure: str, claims: pd.DataFrame, header: str) -> str:
    """The claims as one printed paragraph."""
    if claims.empty:
        return f"{header}: no claim checkable (the run needs K=T=10 and another (K, T))."
    parts = [
        f"{r.model}: {r.claim}: {'yes' if r.holds else 'NO'} ({r.measured})"
        for r in claims.itertuples()
    ]
    return f"{header}. " + "; ".join(parts) + "."


def _shown_config(pairs: list[tuple[int, int]]) -> tuple[int, int]:
    return (10, 10) if (10, 10) in pairs else max(pairs, key=lambda p: (p[0] * p[1], p[0]))


def _to_image(x: torch.Tensor) -> Any:
    return x.detach().to("cpu", torch.float32).clamp(0, 1).permute(1, 2, 0).numpy()


def _write_npz(arrays: dict[str, Any], path: Path) -> Path:
    return write_npz_atomic(arrays, path)


def _ensure_denoiser(
    cfg: ReproduceConfig, train_images: list, device: torch.device, quiet: bool
) -> Path:
    """``--denoiser``, or the suite's DRUNet in ``<out>/denoiser/<preset>`` (trained if missing
    or unfinished, on crops of the training images only)."""
    if cfg.denoiser is not None:
        return Path(cfg.denoiser)
    from .denoiser import CHECKPOINT_NAME

    folder = denoiser_folder(cfg.out, cfg.preset)
    path = folder / CHECKPOINT_NAME
    pretrain = PretrainConfig(
        preset=cfg.preset,
        out=cfg.out,
        images=cfg.images,
        test_images=cfg.test_images,
        seed=cfg.seed,
        device=cfg.device,
        resume=True,
        quiet=quiet,
        **{k: getattr(cfg, f"denoiser_{k}") for k in DENOISER_PRESETS["quick"]},
    )
    if not _denoiser_complete(path, pretrain.steps):
        print(
            f"no --denoiser given and no finished DRUNet in {folder}: training the suite's "
            f"DRUNet first (nc={pretrain.nc}, nb={pretrain.nb}, {pretrain.steps} steps on "
            f"{pretrain.crops} crops of {pretrain.size}×{pretrain.size} from the training "
            "images; `retune-suite pretrain-denoiser` does the same)",
            flush=True,
        )
    try:
        return _train_denoiser(pretrain, train_images, device)
    except InvalidInputError as error:
        raise InvalidInputError(
            f"the DRUNet in {folder} does not match this preset's denoiser settings ({error}); "
            f"pass --denoiser {path} to use it as it is, or delete {folder} to retrain it."
        ) from None


def _denoiser_complete(path: Path, steps: int) -> bool:
    if not path.exists():
        return False
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(ckpt, dict) and int(ckpt.get("step", 0)) >= steps


def _train_denoiser(cfg: PretrainConfig, train_images: list, device: torch.device) -> Path:
    from .common.data import crops
    from .denoiser import DenoiserConfig, train_denoiser

    clean = crops(train_images, cfg.size, cfg.crops, cfg.seed + 1).to(getattr(torch, cfg.dtype))
    config = DenoiserConfig(
        steps=cfg.steps,
        batch=cfg.batch,
        lr=cfg.lr,
        sigma_max=cfg.sigma_max,
        nc=_nc(cfg.nc),
        nb=cfg.nb,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
    )
    folder = denoiser_folder(cfg.out, cfg.preset, cfg.name)
    return train_denoiser(clean, config, folder, device, resume=cfg.resume, progress=not cfg.quiet)


def run_reproduce(cfg: ReproduceConfig, *, on_step: Any = None) -> int:
    """Validate, train every (model, K, T) (resuming if asked), evaluate, write, print.

    ``on_step(unit, step)`` is called after each gradient step (see
    :func:`experiments.train.train_unit`). A KeyboardInterrupt prints how to resume and
    propagates.
    """
    validate(cfg)
    folder = run_folder(cfg)
    _check_run_folder(cfg, folder)
    train_images, test_images = _split(cfg)
    from .common.data import crops

    train_clean = crops(train_images, cfg.size, cfg.train_pairs, cfg.seed)
    test_clean = crops(test_images, cfg.size, cfg.test_crops, cfg.seed + 2)
    previous_threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, folder, train_images, train_clean, test_clean, on_step)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the checkpoints in {folder / 'checkpoints'} keep every "
            f"{cfg.checkpoint_every}th step; continue with the same command and --resume.",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    cfg: ReproduceConfig,
    folder: Path,
    train_images: list,
    train_clean: torch.Tensor,
    test_clean: torch.Tensor,
    on_step: Any,
) -> int:
    from operators.pnp import load_drunet
    from operators.theta import like

    from .reproduce_figures import reproduce_figure
    from .train import (
        MODELS,
        Problem,
        TrainSettings,
        evaluate,
        initial_theta,
        load_checkpoint,
        make_data,
        train_unit,
    )

    started = time.perf_counter()
    figure = FIGURES[cfg.figure]
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    pairs = parse_configs(cfg.configs)
    denoiser = None
    if any(m.startswith("pnp") for m in figure.models):  # before the run folder is written
        path = _ensure_denoiser(cfg, train_images, device, cfg.quiet)
        denoiser = load_drunet(path, device=device, dtype=dtype)
        print(f"DRUNet: {path} ({sum(p.numel() for p in denoiser.parameters())} weights)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints").mkdir(exist_ok=True)
    write_json_atomic(
        {
            **asdict(cfg),
            "run_name": _run_name(cfg),
            "device_resolved": str(device),
            "torch": torch.__version__,
            "threads_used": torch.get_num_threads(),
        },
        folder / "config.json",
    )
    data = make_data(figure.task, train_clean, test_clean, cfg.seed, device, dtype)
    settings = TrainSettings(
        estimator=cfg.estimator,
        batch=cfg.batch,
        epochs=cfg.epochs,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
        fixed_point_rtol=cfg.fixed_point_rtol,
        fixed_point_max_blocks=cfg.fixed_point_max_blocks,
        solve_tol=cfg.solve_tol,
        solve_maxiter=cfg.solve_maxiter,
    )
    total = cfg.epochs * (cfg.train_pairs // cfg.batch)
    print(
        f"== {figure.title}\n   {cfg.figure}/{_run_name(cfg)}: {len(figure.models)} models × "
        f"{len(pairs)} (K, T), {total} gradient steps each ({cfg.epochs} epochs of "
        f"{cfg.train_pairs // cfg.batch}), {cfg.size}×{cfg.size}, {cfg.estimator}, "
        f"{cfg.dtype} on {device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    units = [Unit(m, K, T) for m in figure.models for K, T in pairs]
    rows: dict[Unit, list[dict[str, Any]]] = {u: [] for u in units}
    thetas: dict[Unit, Any] = {}
    tests: list[dict[str, Any]] = []
    shown = _shown_config(pairs)
    # the figure shows the most textured test crop (largest standard deviation): small crops
    # of a photograph are often flat sky or wall
    show = int(data.test_clean.flatten(1).std(1).argmax())
    arrays: dict[str, Any] = {
        "ground_truth": _to_image(data.test_clean[show]),
        "observation": _to_image(data.test_y[show]),
        "K": shown[0],
        "T": shown[1],
    }

    def write_metrics() -> None:
        frames = [pd.DataFrame(r) for r in rows.values() if r]
        if frames:
            write_csv_atomic(pd.concat(frames, ignore_index=True), folder / "metrics.csv")

    for unit in units:
        problem = Problem(unit.model, figure.task, data.forward, denoiser)
        if unit.model == "pnp-weights":
            sigma, tau = thetas[Unit("pnp-sigma-tau", unit.K, unit.T)].exp().tolist()
            problem.sigma, problem.tau = sigma, tau
        theta0 = initial_theta(
            unit.model,
            log_lambda=cfg.log_lambda,
            pnp_sigma=cfg.pnp_sigma,
            pnp_tau=cfg.pnp_tau,
            denoiser=denoiser,
            device=device,
            dtype=dtype,
        )
        path = folder / "checkpoints" / unit.filename
        ckpt = load_checkpoint(path) if path.exists() else None
        if ckpt is not None and int(ckpt["step"]) >= total:
            rows[unit][:] = list(ckpt["rows"])
            theta = like(theta0, tuple(t.to(device=device, dtype=dtype) for t in ckpt["theta"]))
            print(f"   {unit.label}: complete in {path.name}, skipped", flush=True)
        else:
            if ckpt is not None:
                print(f"   {unit.label}: resuming at step {int(ckpt['step'])}", flush=True)
            lr = cfg.lr_weights if unit.model == "pnp-weights" else cfg.lr
            theta = train_unit(
                unit,
                problem,
                data,
                theta0,
                settings,
                lr,
                path,
                rows=rows[unit],
                on_checkpoint=write_metrics,
                on_step=on_step,
                progress=not cfg.quiet,
            ).theta
        thetas[unit] = theta
        estimates, values = evaluate(
            problem, theta, data.test_clean, data.test_y, unit.K, unit.T, cfg.batch
        )
        tests.append(
            {"model": unit.model, "K": unit.K, "T": unit.T, "test_psnr": float(values.mean())}
        )
        if (unit.K, unit.T) == shown:
            arrays[f"estimate_{unit.model}"] = _to_image(estimates[show])
        r = rows[unit][-1]
        print(
            f"   {unit.label}: train PSNR {r['psnr']:.2f} dB (last step), test PSNR "
            f"{tests[-1]['test_psnr']:.2f} dB, {r['theta']}",
            flush=True,
        )
    write_metrics()
    metrics = pd.read_csv(folder / "metrics.csv")
    summary = summarise(metrics, pd.DataFrame(tests))
    summary.insert(0, "figure", cfg.figure)
    summary.insert(4, "estimator", cfg.estimator)
    claims = check_claims(cfg.figure, metrics, summary)
    write_csv_atomic(summary, folder / "summary.csv")
    write_csv_atomic(claims, folder / "claims.csv")
    _write_npz(arrays, folder / "reconstructions.npz")
    labels = {m: MODELS[m] for m in figure.models}
    paths = reproduce_figure(
        metrics,
        arrays,
        folder / cfg.figure,
        title=f"{figure.title} — {cfg.figure}/{_run_name(cfg)}, {cfg.estimator}",
        labels=labels,
        window=WINDOW,
    )
    seconds = time.perf_counter() - started
    shown_cols = ["model", "K", "T", "steps", "final_train_psnr", "test_psnr", "train_seconds"]
    print("\n" + summary[shown_cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    header = (
        f"Claims of section 4 on {cfg.figure}/{_run_name(cfg)} ({total} steps, {cfg.size}×"
        f"{cfg.size}, {cfg.estimator}, final = mean of the last {WINDOW} steps)"
    )
    print("\n" + claims_paragraph(cfg.figure, claims, header))
    print(
        f"\nwrote {folder}/: config.json, metrics.csv, summary.csv, claims.csv, "
        f"reconstructions.npz, {', '.join(p.name for p in paths)} in {seconds:.1f} s"
    )
    return 0


def reproduce_command(cfg: ReproduceConfig) -> int:
    """The CLI runner: exit status 130 after an interruption (the resume hint is printed)."""
    try:
        return run_reproduce(cfg)
    except KeyboardInterrupt:
        return 130


@dataclass
class PretrainConfig:
    """Train the suite's DRUNet (deepinv architecture) on the training images for figs 2–3."""

    preset: str | None = field(default=None, metadata={"help": "quick or paper"})
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
    nc: str = field(default="64,128,256,512", metadata={"help": "channels per scale"})
    nb: int = field(default=4, metadata={"help": "residual blocks per scale"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
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


def run_pretrain(cfg: PretrainConfig) -> int:
    """Train (or continue with ``--resume``) the DRUNet; print where the checkpoint is."""
    from .denoiser import CHECKPOINT_NAME

    _common_checks(cfg)
    _positive_ints(cfg, ("test_images", "steps", "size", "crops", "batch", "nb"))
    _positive_ints(cfg, ("checkpoint_every",))
    if not cfg.lr > 0 or not cfg.sigma_max > 0:
        raise InvalidInputError("--lr and --sigma-max must be positive.")
    _nc(cfg.nc)
    folder = denoiser_folder(cfg.out, cfg.preset, cfg.name)
    if (folder / CHECKPOINT_NAME).exists() and not cfg.resume:
        raise InvalidInputError(
            f"{folder / CHECKPOINT_NAME} exists: pass --resume to continue (or to check it is "
            "complete), or choose another --name."
        )
    train_images, _ = _split(cfg)
    device = resolve_device(cfg.device)
    previous = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    try:
        print(
            f"training DRUNet nc={cfg.nc} nb={cfg.nb}: {cfg.steps} steps, batch {cfg.batch}, "
            f"{cfg.crops} crops of {cfg.size}×{cfg.size} from {len(train_images)} training "
            f"images, {cfg.dtype} on {device}",
            flush=True,
        )
        path = _train_denoiser(cfg, train_images, device)
    finally:
        torch.set_num_threads(previous)
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s")
    return 0
