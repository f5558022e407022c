r"""``retune-suite reproduce foe``: bilevel learning of a fields-of-experts prior as a DEQ.

Algorithm 1 (:func:`retune_suite.experiments.reproduce.train.train_unit`, imported, not copied)
trains
θ = (α̃, w) of the FoE energy (:mod:`retune_suite.operators.maps.foe`) on each task of section 4
(denoise,
inpaint, deblur) with several estimators of the hypergradient: ReTune (25) at several (K, T),
JFB (28) and the DEQ gradient (20) by an adjoint solve (``deq_solve``) at the fixed point of
Φ_K, and AD through K·T unrolled steps (23). Bilevel learning with a fixed-point lower level
*is* DEQ training (the ``deq_solve`` rows); the question is which estimator trains best for the
same cost, and whether ReTune's restarts (T > 1) help.

A run writes ``<out>/foe/<name>/``: ``config.json``, ``metrics.csv`` (one row per gradient
step, task, estimator and (K, T), with its seconds), ``<task>/checkpoints/<estimator>_K<K>_T<T>.pt``
(resumable, :func:`~retune_suite.experiments.reproduce.train.train_unit`), ``summary.csv`` (final
train PSNR
= mean of the last 25 steps, test PSNR, seconds), ``claims.csv`` and the figure ``foe.pdf`` /
``foe.png`` (train PSNR per gradient step, one panel per task, one line per estimator and
(K, T)) with ``metrics.csv`` beside it (:func:`redraw_foe`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.maps.physics import TASKS

from ..common.devices import resolve_device
from ..common.io import remove_partial_writes, save_figure, write_csv_atomic, write_json_atomic
from ..common.lock import folder_lock
from ..common.metrics import moving_average
from ..common.options import TypedFields, parse_list
from ..common.resume import (
    INTERRUPTED,
    config_hash,
    interrupt_hint,
    read_csv_records,
    read_saved_config,
    run_state,
)
from .claims import (
    CLAIM_COLUMNS,
    NO_DIFFERENCE,
    WINDOW,
    difference_and_noise,
    final_window,
    noise_columns,
    verdict,
)
from .presets import parse_configs

__all__ = ["FOE_PRESETS", "FoeConfig", "check_foe_claims", "redraw_foe", "run_foe", "units"]

RESUMABLE = ("resume", "checkpoint_every", "threads", "quiet")


@dataclass
class FoeConfig(TypedFields):
    """Train a fields-of-experts prior (operators.maps.foe) with ReTune, JFB, DEQ and unrolled."""

    preset: str | None = field(default=None, metadata={"help": "quick (CPU, seconds) or paper"})
    name: str | None = field(default=None, metadata={"help": "run folder name (default: preset)"})
    out: str = field(default="runs", metadata={"help": "writes <out>/foe/<name>/"})
    images: str | None = field(default=None, metadata={"help": "image folder (default: embedded)"})
    tasks: tuple[str, ...] = field(
        default=TASKS,
        metadata={
            "help": "tasks, written denoise,inpaint,deblur",
            "parse": lambda v: parse_list(v, str, name="tasks"),
        },
    )
    test_images: int = field(default=1, metadata={"help": "images held out for testing"})
    test_crops: int = field(default=2, metadata={"help": "test crops cut from them"})
    size: int = field(default=256, metadata={"help": "crop size (>= 32)"})
    train_pairs: int = field(default=200, metadata={"help": "training (clean, observed) pairs"})
    batch: int = field(default=1, metadata={"help": "pairs per gradient step"})
    epochs: int = field(default=1, metadata={"help": "passes over the training pairs"})
    retune_configs: tuple[tuple[int, int], ...] = field(
        default=((1, 1), (10, 1), (1, 10), (10, 10)),
        metadata={"help": "ReTune (K, T) pairs, written K,T;K,T", "parse": parse_configs},
    )
    fixed_point_k: int = field(default=10, metadata={"help": "K of jfb and deq_solve"})
    unrolled_configs: tuple[tuple[int, int], ...] = field(
        default=((10, 10),),
        metadata={"help": "unrolled (K, T) pairs (K·T steps)", "parse": parse_configs},
    )
    estimators: tuple[str, ...] = field(
        default=("retune", "jfb", "deq_solve", "unrolled"),
        metadata={
            "help": "estimators, written retune,jfb,deq_solve,unrolled",
            "parse": lambda v: parse_list(v, str, name="estimators"),
        },
    )
    filters: int = field(default=8, metadata={"help": "number of 5×5 filters"})
    log_alpha: float = field(default=-3.0, metadata={"help": "initial log α_k"})
    lr: float = field(default=5e-2, metadata={"help": "Adam learning rate"})
    fixed_point_rtol: float = field(default=1e-5, metadata={"help": "jfb/deq_solve fixed point"})
    fixed_point_max_blocks: int = field(default=2000, metadata={"help": "cap on Φ_K blocks"})
    solve_tol: float = field(default=1e-4, metadata={"help": "deq_solve adjoint tolerance"})
    solve_maxiter: int = field(default=200, metadata={"help": "deq_solve GMRES iterations"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    dtype: str = field(default="float32", metadata={"help": "float32 or float64"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave)"})
    seed: int = field(default=0, metadata={"help": "seed of the crops, noise and batches"})
    checkpoint_every: int = field(default=25, metadata={"help": "gradient steps between saves"})
    resume: bool = field(default=False, metadata={"help": "continue the run in the folder"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


FOE_PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        size=32,
        train_pairs=6,
        batch=1,
        epochs=1,
        test_images=1,
        test_crops=1,
        device="cpu",
        dtype="float32",
        threads=1,
        checkpoint_every=3,
        fixed_point_rtol=1e-3,
        solve_tol=1e-3,
        solve_maxiter=30,
    ),
    "paper": dict(
        tasks=("denoise",),
        size=256,
        train_pairs=200,
        batch=1,
        epochs=1,
        test_images=1,
        test_crops=2,
        device="cpu",
        dtype="float32",
        threads=1,
        checkpoint_every=25,
        fixed_point_rtol=1e-4,
        solve_tol=1e-3,
        solve_maxiter=50,
    ),
}
"""``quick``: 32×32, 6 steps per configuration, the three tasks (the default tests run it).
``paper``: 256×256 crops, denoising, 200 steps of batch 1 per configuration, the FFT step. On
the shared 2-core CPU (2026-12-03, load 2–5, one thread) ReTune (10, 10) took 20 min, JFB 29,
deq_solve 60 and unrolled (10, 10) 44: the seven configurations 2.7 hours of training there
(``docs/results/foe-paper/RUN.md``). On a GPU pass ``--tasks denoise,inpaint,deblur
--train-pairs 600 --batch 4 --device cuda``."""


def units(cfg: FoeConfig) -> list[tuple[str, int, int]]:
    """(estimator, K, T) in run order. jfb and deq_solve have T = 0 (they run to x̂)."""
    out: list[tuple[str, int, int]] = []
    for name in cfg.estimators:
        if name == "retune":
            out += [("retune", K, T) for K, T in cfg.retune_configs]
        elif name in ("jfb", "deq_solve"):
            out.append((name, cfg.fixed_point_k, 0))
        elif name == "unrolled":
            out += [("unrolled", K, T) for K, T in cfg.unrolled_configs]
    return out


def validate(cfg: FoeConfig) -> None:
    """Every check that needs no data, before any work."""
    if cfg.preset is not None and cfg.preset not in FOE_PRESETS:
        raise InvalidInputError(f"unknown preset {cfg.preset!r}: choose quick or paper.")
    bad = [t for t in parse_list(cfg.tasks, str, name="tasks") if t not in TASKS]
    if bad:
        raise InvalidInputError(f"--tasks: unknown {bad}; choose from {', '.join(TASKS)}.")
    known = ("retune", "jfb", "deq_solve", "unrolled")
    bad = [e for e in parse_list(cfg.estimators, str, name="estimators") if e not in known]
    if bad:
        raise InvalidInputError(f"--estimators: unknown {bad}; choose from {', '.join(known)}.")
    for name in (
        "size",
        "train_pairs",
        "batch",
        "epochs",
        "filters",
        "fixed_point_k",
        "test_images",
        "test_crops",
        "fixed_point_max_blocks",
        "solve_maxiter",
        "checkpoint_every",
    ):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be an integer >= 1.")
    for name in ("solve_tol", "fixed_point_rtol"):
        value = getattr(cfg, name)
        if not (isinstance(value, int | float) and 0 < value < 1):
            raise InvalidInputError(f"--{name.replace('_', '-')} must be in (0, 1), got {value}.")
    if cfg.size < 32:
        raise InvalidInputError(f"--size {cfg.size}: at least 32 (the blur kernel is 25 wide).")
    if not 1 <= cfg.filters <= 24:
        raise InvalidInputError(f"--filters {cfg.filters}: choose 1 to 24 (5×5 zero-mean).")
    if cfg.train_pairs < cfg.batch:
        raise InvalidInputError("--train-pairs is fewer than one batch: lower --batch.")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise InvalidInputError(f"--lr must be positive, got {cfg.lr}.")
    if cfg.dtype not in ("float32", "float64"):
        raise InvalidInputError(f"--dtype must be float32 or float64, got {cfg.dtype!r}.")
    parse_configs(cfg.retune_configs)
    parse_configs(cfg.unrolled_configs)
    resolve_device(cfg.device)


def run_folder(cfg: FoeConfig) -> Path:
    """``<out>/foe/<name or preset or default>``."""
    return Path(cfg.out) / "foe" / (cfg.name or cfg.preset or "default")


def _check_folder(cfg: FoeConfig, folder: Path) -> str:
    """``"new"``, ``"resume"`` or ``"complete"``
    (:func:`retune_suite.experiments.common.resume.run_state`)."""
    return run_state(
        folder,
        exists=(folder / "config.json").exists(),
        saved=read_saved_config(folder / "config.json", FoeConfig, other="--name"),
        current=cfg,
        resume=cfg.resume,
        complete=lambda: _complete(cfg, folder),
        resumable=RESUMABLE,
        other="--name",
    )


def _complete(cfg: FoeConfig, folder: Path) -> bool:
    """Whether the run's last files are written: a summary row per (task, estimator, K, T),
    and the figure."""
    path = folder / "summary.csv"
    if not (path.exists() and (folder / "foe.png").exists()):
        return False
    summary, _ = read_csv_records(path, required=("task", "estimator", "K", "T"), other="--name")
    done = set(zip(summary.task, summary.estimator, summary.K, summary["T"], strict=True))
    return {(t, *u) for t in cfg.tasks for u in units(cfg)} <= done


def run_foe(cfg: FoeConfig, *, on_step: Any = None) -> int:
    """Validate, train every (task, estimator, K, T), evaluate, write, draw, print the claims.

    The run folder is locked for the run; a finished run of the same settings is reported
    complete (exit 0), an unfinished one continues with ``--resume``.
    """
    validate(cfg)
    from .command import _split

    train_images, test_images = _split(cfg)  # checks --test-images against the images
    from ..common.data import crops

    train_clean = crops(train_images, cfg.size, cfg.train_pairs, cfg.seed)  # and --size
    test_clean = crops(test_images, cfg.size, cfg.test_crops, cfg.seed + 2)
    folder = run_folder(cfg)
    hint = f"the checkpoints in {folder} are kept; continue with the same command and --resume."
    with folder_lock(folder), interrupt_hint(hint):
        remove_partial_writes(folder)
        if _check_folder(cfg, folder) == "complete":
            print(
                f"complete: {folder} holds this run with the same settings; nothing recomputed "
                "(pass --resume to evaluate and redraw it, or choose another --name)."
            )
            return 0
        previous = torch.get_num_threads()
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        try:
            return _run(cfg, folder, train_clean, test_clean, on_step)
        finally:
            torch.set_num_threads(previous)


def _run(
    cfg: FoeConfig, folder: Path, train_clean: torch.Tensor, test_clean: torch.Tensor, on_step: Any
) -> int:
    from retune_suite.operators.maps.foe import init_theta

    from .train import Problem, TrainSettings, Unit, evaluate, make_data, train_unit

    started = time.perf_counter()
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        {**asdict(cfg), "device_resolved": str(device), "torch": torch.__version__},
        folder / "config.json",
    )
    plan = units(cfg)
    steps = cfg.epochs * (cfg.train_pairs // cfg.batch)
    run_hash = config_hash(cfg, (*RESUMABLE, "out", "name"))
    print(
        f"== fields of experts ({cfg.filters} filters 5×5): {len(cfg.tasks)} tasks × {len(plan)} "
        f"(estimator, K, T), {steps} gradient steps each, {cfg.size}×{cfg.size}, batch "
        f"{cfg.batch}, {cfg.dtype} on {device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    rows: dict[tuple, list[dict[str, Any]]] = {}
    tests: list[dict[str, Any]] = []

    def write_metrics() -> None:
        frames = []
        for (task, name, K, T), r in rows.items():
            if r:
                frame = pd.DataFrame(r).drop(columns=["model", "theta"], errors="ignore")
                frame.insert(0, "task", task)
                frame.insert(1, "estimator", name)
                frame["K"], frame["T"] = K, T
                frames.append(frame)
        if frames:
            write_csv_atomic(pd.concat(frames, ignore_index=True), folder / "metrics.csv")

    for task in cfg.tasks:
        data = make_data(task, train_clean, test_clean, cfg.seed, device, dtype)
        problem = Problem("foe", task, data.forward)
        (folder / task / "checkpoints").mkdir(parents=True, exist_ok=True)
        for name, K, T in plan:
            unit = Unit(name, K, max(T, 1))
            settings = TrainSettings(
                estimator=name,
                batch=cfg.batch,
                epochs=cfg.epochs,
                seed=cfg.seed,
                checkpoint_every=cfg.checkpoint_every,
                fixed_point_rtol=cfg.fixed_point_rtol,
                fixed_point_max_blocks=cfg.fixed_point_max_blocks,
                solve_tol=cfg.solve_tol,
                solve_maxiter=cfg.solve_maxiter,
            )
            theta0 = init_theta(cfg.filters, log_alpha=cfg.log_alpha, device=device, dtype=dtype)
            key = (task, name, K, T)
            rows[key] = []
            result = train_unit(
                unit,
                problem,
                data,
                theta0,
                settings,
                cfg.lr,
                folder / task / "checkpoints" / unit.filename,
                rows=rows[key],
                identity={"task": task, "config": run_hash},
                on_checkpoint=write_metrics,
                on_step=on_step,
                progress=not cfg.quiet,
            )
            if T > 0:
                _, values = evaluate(
                    problem, result.theta, data.test_clean, data.test_y, K, T, cfg.batch
                )
            else:
                values = _evaluate_fixed_point(problem, result.theta, data, K, cfg)
            alpha = result.theta[0].detach().exp()
            tests.append(
                {
                    "task": task,
                    "estimator": name,
                    "K": K,
                    "T": T,
                    "test_psnr": float(values.mean()),
                    "alpha_min": float(alpha.min()),
                    "alpha_max": float(alpha.max()),
                }
            )
            last = rows[key][-1]
            seconds = sum(r["seconds"] for r in rows[key])
            print(
                f"   {task} {name} K={K} T={T}: train PSNR {last['psnr']:.2f} dB (last step), "
                f"test {tests[-1]['test_psnr']:.2f} dB, {seconds:.1f} s",
                flush=True,
            )
    write_metrics()
    metrics = pd.read_csv(folder / "metrics.csv")
    summary = summarise_foe(metrics, pd.DataFrame(tests))
    claims = check_foe_claims(metrics, summary)
    write_csv_atomic(summary, folder / "summary.csv")
    write_csv_atomic(claims, folder / "claims.csv")
    paths = foe_figure(metrics, folder / "foe", title=f"fields of experts — foe/{folder.name}")
    cols = ["task", "estimator", "K", "T", "final_train_psnr", "test_psnr", "train_seconds"]
    print("\n" + summary[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for r in claims.itertuples():
        print(f"   {r.task}: {r.claim}: {verdict(r)}")
    print(
        f"\nwrote {folder}/: config.json, metrics.csv, summary.csv, claims.csv, "
        f"{', '.join(p.name for p in paths)} in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _evaluate_fixed_point(
    problem: Any, theta: Any, data: Any, K: int, cfg: FoeConfig
) -> torch.Tensor:
    """Test PSNRs at the fixed point of Φ_K (what jfb and deq_solve train for), computed as
    in training (Anderson, ``fixed_point_rtol``, ``fixed_point_max_blocks``)."""
    from retune_suite.operators import fixed_point

    from ..common.metrics import psnr

    values = []
    with torch.no_grad():
        for i in range(0, data.test_clean.shape[0], cfg.batch):
            step, x0, _ = problem.build(data.test_y[i : i + cfg.batch], theta)
            x = fixed_point(
                step,
                theta,
                x0,
                K,
                method="anderson",
                rtol=cfg.fixed_point_rtol,
                max_blocks=cfg.fixed_point_max_blocks,
            ).x
            values.append(psnr(x, data.test_clean[i : i + cfg.batch]))
    return torch.cat(values)


def _label(estimator: str, K: int, T: int) -> str:
    return f"{estimator} K={K}" + (f" T={T}" if T > 0 else "")


def summarise_foe(metrics: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Per (task, estimator, K, T): final train PSNR (mean of the last 25 steps), seconds."""
    out = []
    for (task, name, K, T), g in metrics.groupby(["task", "estimator", "K", "T"], sort=False):
        g = g.sort_values("step")
        out.append(
            {
                "task": task,
                "estimator": name,
                "K": int(K),
                "T": int(T),
                "steps": int(g.step.max()),
                "first_train_psnr": float(g.psnr.iloc[0]),
                "final_train_psnr": float(g.psnr.tail(WINDOW).mean()),
                "final_loss": float(g.loss.tail(WINDOW).mean()),
                "train_seconds": float(g.seconds.sum()),
                "seconds_per_step": float(g.seconds.median()),
            }
        )
    summary = pd.DataFrame(out)
    if not tests.empty:
        summary = summary.merge(tests, on=["task", "estimator", "K", "T"], how="left")
    return summary


def _psnr_at_time(g: pd.DataFrame, budget: float) -> float:
    """The 25-step moving average of the train PSNR at the last step done within ``budget``
    seconds of training (NaN if none)."""
    g = g.sort_values("step").reset_index(drop=True)
    ma = moving_average(g.psnr, WINDOW)
    done = g.seconds.cumsum() <= budget
    return float(ma[done].iloc[-1]) if done.any() else float("nan")


def check_foe_claims(metrics: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per task: which configuration trains best (final train PSNR; and at equal wall time:
    the moving-average PSNR reached within the smallest total training time of the run), and
    whether the restart helps (ReTune (1, 10) vs (10, 1), (10, 10) vs (10, 1): equal and 10×
    forward steps) and ReTune (10, 10) vs unrolled (10, 10) (equal forward steps). The
    pairwise claims compare the mean train PSNR over the last 25 of the steps that every
    configuration ran (all of them, unless the run was interrupted)."""
    rows: list[dict[str, Any]] = []
    for task, s in summary.groupby("task", sort=False):
        best = s.loc[s.final_train_psnr.idxmax()]
        rows.append(
            {
                "task": task,
                "claim": "best final train PSNR",
                "holds": True,
                **NO_DIFFERENCE,
                "measured": f"{_label(best.estimator, best.K, best['T'])}: "
                f"{best.final_train_psnr:.2f} dB; "
                + ", ".join(
                    f"{_label(r.estimator, r.K, r.T)} {r.final_train_psnr:.2f}"
                    for r in s.itertuples()
                ),
            }
        )
        budget = float(s.train_seconds.min())
        m = metrics[metrics.task == task]
        at = {
            (r.estimator, r.K, r.T): _psnr_at_time(
                m[(m.estimator == r.estimator) & (m.K == r.K) & (m["T"] == r.T)], budget
            )
            for r in s.itertuples()
        }
        finite = {k: v for k, v in at.items() if math.isfinite(v)}
        if finite:
            k = max(finite, key=finite.__getitem__)
            rows.append(
                {
                    "task": task,
                    "claim": f"best at equal cost ({budget:.1f} s of training)",
                    "holds": True,
                    **NO_DIFFERENCE,
                    "measured": f"{_label(*k)}: {finite[k]:.2f} dB; "
                    + ", ".join(f"{_label(*kk)} {v:.2f}" for kk, v in finite.items()),
                }
            )
        # over the steps every configuration ran (an interrupted run has fewer for some)
        common = int(m.groupby(["estimator", "K", "T"]).step.max().min())
        windows = {
            (e, int(K), int(T)): final_window(g[g.step <= common], WINDOW)
            for (e, K, T), g in m.groupby(["estimator", "K", "T"])
        }
        final = {key: float(w.mean()) for key, w in windows.items()}
        for a, b, claim in (
            (("retune", 1, 10), ("retune", 10, 1), "restart helps at equal steps: (1,10) > (10,1)"),
            (("retune", 10, 10), ("retune", 10, 1), "restart helps: (10,10) > (10,1)"),
            (("retune", 10, 10), ("unrolled", 10, 10), "ReTune (10,10) ≥ unrolled (10,10)"),
        ):
            if a in final and b in final:
                rows.append(
                    {
                        "task": task,
                        "claim": claim,
                        "holds": bool(final[a] >= final[b]),
                        "measured": f"{final[a]:.2f} vs {final[b]:.2f} dB (train PSNR, mean "
                        f"of steps {max(1, common - WINDOW + 1)}–{common})",
                        **noise_columns(*difference_and_noise(windows[a], windows[b])),
                    }
                )
    return pd.DataFrame(rows, columns=["task", *CLAIM_COLUMNS])


def foe_figure(metrics: pd.DataFrame, base: Path, *, title: str = "") -> list[Path]:
    """Train PSNR per gradient step, one panel per task, a line per (estimator, K, T): the
    exact values as dots and the 25-step moving average (the paper's layout); PDF and PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(metrics.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    configs = list(dict.fromkeys(zip(metrics.estimator, metrics.K, metrics["T"], strict=True)))
    for ax, task in zip(axes[0], tasks, strict=True):
        m = metrics[metrics.task == task]
        for i, (name, K, T) in enumerate(configs):
            g = m[(m.estimator == name) & (m.K == K) & (m["T"] == T)].sort_values("step")
            if g.empty:
                continue
            color = cmap(i % 10)
            ax.plot(g.step, g.psnr, ".", ms=3, alpha=0.35, color=color)
            ma = moving_average(g.psnr.reset_index(drop=True), WINDOW)
            ax.plot(g.step, ma, "-", lw=1.6, color=color, label=_label(name, int(K), int(T)))
        ax.set_title(f"{task}: FoE prior", fontsize=10)
        ax.set_xlabel("gradient step ℓ")
        ax.set_ylabel("train PSNR (dB)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    paths = save_figure(fig, Path(base))
    plt.close(fig)
    return paths


def redraw_foe(folder: str | Path) -> list[Path]:
    """Redraw ``foe.pdf``/``.png`` of a run from its ``metrics.csv``."""
    folder = Path(folder)
    return foe_figure(pd.read_csv(folder / "metrics.csv"), folder / "foe", title=folder.name)


def foe_command(cfg: FoeConfig) -> int:
    """The CLI runner: exit status 130 after an interruption."""
    try:
        return run_foe(cfg)
    except KeyboardInterrupt:
        return INTERRUPTED
