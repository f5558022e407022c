"""The runners of ``retune-suite reproduce`` and ``retune-suite pretrain-denoiser``.

:func:`run_reproduce` validates (:mod:`.presets`), splits the images, trains every
(model, K, T) of the figure with Algorithm 1 (:mod:`.train`), evaluates, writes the run folder
and draws the figure (:mod:`.figures`); :func:`run_pretrain` trains the suite's DRUNet
(:mod:`.denoiser`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from retune_suite.operators.errors import InvalidInputError

from ..common.devices import resolve_device
from ..common.io import remove_partial_writes, write_csv_atomic, write_json_atomic, write_npz_atomic
from ..common.lock import FolderInUseError, folder_lock
from ..common.metrics import psnr
from ..common.resume import INTERRUPTED, config_hash, interrupt_hint, read_saved_config, run_state
from .claims import WINDOW, check_claims, claims_paragraph, summarise
from .presets import (
    DENOISER_PRESETS,
    RESUMABLE,
    PretrainConfig,
    ReproduceConfig,
    denoiser_folder,
    parse_configs,
    parse_nc,
    run_folder,
    run_name,
    selected_models,
    validate,
    validate_pretrain,
)
from .train import FIGURES, Unit

__all__ = ["reproduce_command", "run_pretrain", "run_reproduce"]


def _check_run_folder(cfg: ReproduceConfig, folder: Path) -> str:
    """``"new"``, ``"resume"`` or ``"complete"``; refuses to overwrite a run, or to resume one
    with settings that change its iterates
    (:func:`retune_suite.experiments.common.resume.run_state`)."""
    # the configuration's fields only (config.json also records the torch version etc.), typed
    # as the configuration types them (older runs stored --configs as text); a field the run
    # predates (added since) resumes at its default: what the older version did without it
    return run_state(
        folder,
        exists=(folder / "config.json").exists() or any((folder / "checkpoints").glob("*.pt")),
        saved=read_saved_config(folder / "config.json", type(cfg), defaults=True, other="--name"),
        current=cfg,
        resume=cfg.resume,
        complete=lambda: _complete(cfg, folder),
        resumable=RESUMABLE,
        other="--name",
    )


def _complete(cfg: ReproduceConfig, folder: Path) -> bool:
    """Whether the run's last files are written: its summary has every (model, K, T), and the
    figure is there."""
    from ..common.resume import read_csv_records

    path = folder / "summary.csv"
    if not (path.exists() and (folder / f"{cfg.figure}.png").exists()):
        return False
    summary, _ = read_csv_records(path, required=("model", "K", "T"), other="--name")
    done = set(zip(summary.model, summary.K, summary["T"], strict=True))
    wanted = {(m, K, T) for m in selected_models(cfg) for K, T in parse_configs(cfg.configs)}
    return wanted <= done


def identity(cfg: ReproduceConfig) -> dict[str, Any]:
    """What every checkpoint of this run carries besides its unit (model, K, T, estimator,
    seed): the hash of the settings that change the iterates."""
    return {"config": config_hash(cfg, (*RESUMABLE, "out", "name"))}


def _images(folder: str | None) -> list:
    from ..common.data import embedded_images, load_folder

    if folder is None:
        return embedded_images()
    try:
        return load_folder(folder)
    except FileNotFoundError as error:
        raise InvalidInputError(f"--images {folder}: {error}") from None


def _split(cfg: ReproduceConfig | PretrainConfig) -> tuple[list, list]:
    """(training images, test images): the split by image, before any crop is cut."""
    from ..common.data import train_test_split

    images = _images(cfg.images)
    if cfg.test_images >= len(images):
        raise InvalidInputError(
            f"--test-images {cfg.test_images} leaves no training image out of {len(images)}: "
            f"use at most {len(images) - 1}, or give a larger --images folder."
        )
    return train_test_split(images, test=cfg.test_images, seed=cfg.seed)


def _shown_config(pairs: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The (K, T) whose estimates the figure shows: (10, 10), else the most steps."""
    return (10, 10) if (10, 10) in pairs else max(pairs, key=lambda p: (p[0] * p[1], p[0]))


def _to_image(x: torch.Tensor) -> Any:
    """(3, H, W) → (H, W, 3) float32 in [0, 1] (clipped for display only)."""
    return x.detach().to("cpu", torch.float32).clamp(0, 1).permute(1, 2, 0).numpy()


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
            f"DRUNet first (nc={_text(pretrain.nc)}, nb={pretrain.nb}, {pretrain.steps} steps on "
            f"{pretrain.crops} crops of {pretrain.size}×{pretrain.size} from the training "
            "images; `retune-suite pretrain-denoiser` does the same)",
            flush=True,
        )
    try:
        with folder_lock(folder):  # another run may be training the same DRUNet
            return _train_denoiser(pretrain, train_images, device)
    except FolderInUseError:
        raise
    except InvalidInputError as error:
        raise InvalidInputError(
            f"the DRUNet in {folder} does not match this preset's denoiser settings ({error}); "
            f"pass --denoiser {path} to use it as it is, or delete {folder} to retrain it."
        ) from None


def _denoiser_complete(path: Path, steps: int) -> bool:
    """Whether ``path`` is a checkpoint that has done at least ``steps`` steps."""
    if not path.exists():
        return False
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(ckpt, dict) and int(ckpt.get("step", 0)) >= steps


def _denoiser_config(cfg: PretrainConfig) -> Any:
    """The :class:`~.denoiser.DenoiserConfig` of ``cfg`` (validated on construction)."""
    from .denoiser import DenoiserConfig

    return DenoiserConfig(
        steps=cfg.steps,
        batch=cfg.batch,
        lr=cfg.lr,
        sigma_max=cfg.sigma_max,
        nc=parse_nc(cfg.nc, name="nc"),
        nb=cfg.nb,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
    )


def _train_denoiser(cfg: PretrainConfig, train_images: list, device: torch.device) -> Path:
    """Cut ``cfg.crops`` crops of the training images and train (or resume) the DRUNet."""
    from ..common.data import crops
    from .denoiser import train_denoiser

    clean = crops(train_images, cfg.size, cfg.crops, cfg.seed + 1).to(getattr(torch, cfg.dtype))
    folder = denoiser_folder(cfg.out, cfg.preset, cfg.name)
    return train_denoiser(
        clean, _denoiser_config(cfg), folder, device, resume=cfg.resume, progress=not cfg.quiet
    )


def run_reproduce(cfg: ReproduceConfig, *, on_step: Any = None) -> int:
    """Validate, train every (model, K, T) (resuming if asked), evaluate, write, print.

    ``on_step(unit, step)`` is called after each gradient step (see
    :func:`retune_suite.experiments.reproduce.train.train_unit`). A KeyboardInterrupt prints how to
    resume and
    propagates.
    """
    validate(cfg)
    train_images, test_images = _split(cfg)  # checks --test-images against the images
    from ..common.data import crops

    train_clean = crops(train_images, cfg.size, cfg.train_pairs, cfg.seed)  # and --size
    test_clean = crops(test_images, cfg.size, cfg.test_crops, cfg.seed + 2)
    folder = run_folder(cfg)
    hint = (
        f"the checkpoints in {folder / 'checkpoints'} keep every {cfg.checkpoint_every}th "
        "step; continue with the same command and --resume."
    )
    with folder_lock(folder), interrupt_hint(hint):
        remove_partial_writes(folder)
        if _check_run_folder(cfg, folder) == "complete":
            print(
                f"complete: {folder} holds this run with the same settings; nothing recomputed "
                "(pass --resume to evaluate and redraw it, or choose another --name)."
            )
            return 0
        previous_threads = torch.get_num_threads()
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        try:
            return _run(cfg, folder, train_images, train_clean, test_clean, on_step)
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
    from retune_suite.operators.maps.pnp import load_drunet
    from retune_suite.operators.theta import like

    from .figures import reproduce_figure
    from .train import (
        MODELS,
        Problem,
        TrainSettings,
        evaluate,
        initial_theta,
        load_checkpoint,
        make_data,
        train_unit,
        unit_identity,
    )

    started = time.perf_counter()
    figure = FIGURES[cfg.figure]
    ident = identity(cfg)
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    pairs = parse_configs(cfg.configs)
    models = selected_models(cfg)
    denoiser = None
    if any(m.startswith("pnp") for m in models):  # before the run folder is written
        path = _ensure_denoiser(cfg, train_images, device, cfg.quiet)
        denoiser = load_drunet(path, device=device, dtype=dtype)
        print(f"DRUNet: {path} ({sum(p.numel() for p in denoiser.parameters())} weights)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints").mkdir(exist_ok=True)
    write_json_atomic(
        {
            **asdict(cfg),
            "run_name": run_name(cfg),
            "device_resolved": str(device),
            "torch": torch.__version__,
            "threads_used": torch.get_num_threads(),
        },
        folder / "config.json",
    )
    data = make_data(figure.task, train_clean, test_clean, cfg.seed, device, dtype, cfg.noise)
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
        T_auto=cfg.T == "auto",
        tol=cfg.tol,
    )
    total = cfg.epochs * (cfg.train_pairs // cfg.batch)
    print(
        f"== {figure.title}\n   {cfg.figure}/{run_name(cfg)}: {len(models)} models × "
        f"{len(pairs)} (K, T), {total} gradient steps each ({cfg.epochs} epochs of "
        f"{cfg.train_pairs // cfg.batch}), {cfg.size}×{cfg.size}, {cfg.estimator}"
        f"{f' (T auto, tol {cfg.tol:g}, T_max from --configs)' if cfg.T == 'auto' else ''}, "
        f"{cfg.dtype} on {device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    units = [Unit(m, K, T) for m in models for K, T in pairs]
    rows: dict[Unit, list[dict[str, Any]]] = {u: [] for u in units}
    thetas: dict[Unit, Any] = {}
    tests: list[dict[str, Any]] = []
    shown = _shown_config(pairs)
    # the figure shows the most textured test crop (largest standard deviation): small crops
    # of a photograph are often flat sky or wall
    show = int(data.test_clean.flatten(1).std(1).argmax())
    # the images are clipped to [0, 1] for display; their PSNRs (the figure's labels) are
    # computed before, unclipped, as every PSNR of summary.csv
    clean_shown = data.test_clean[show : show + 1]
    arrays: dict[str, Any] = {
        "ground_truth": _to_image(data.test_clean[show]),
        "observation": _to_image(data.test_y[show]),
        "psnr_observation": float(psnr(data.test_y[show : show + 1], clean_shown)[0]),
        "K": shown[0],
        "T": shown[1],
    }

    def write_metrics() -> None:
        frames = [pd.DataFrame(r) for r in rows.values() if r]
        if frames:
            write_csv_atomic(pd.concat(frames, ignore_index=True), folder / "metrics.csv")

    inspector = None
    if cfg.inspect_every:
        from .trajectory import TRAJECTORY_FILE, GradientInspector

        inspector = GradientInspector(cfg.inspect_every, folder / TRAJECTORY_FILE)
    for unit in units:
        problem = Problem(unit.model, figure.task, data.forward, denoiser, start=cfg.start)
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
        ckpt = (
            load_checkpoint(path, unit_identity(unit, settings, **ident)) if path.exists() else None
        )
        if ckpt is not None and int(ckpt["step"]) >= total:
            rows[unit][:] = list(ckpt["rows"])
            theta = like(theta0, tuple(t.to(device=device, dtype=dtype) for t in ckpt["theta"]))
            print(f"   {unit.label}: complete in {path.name}, skipped", flush=True)
        else:
            if ckpt is not None:
                print(f"   {unit.label}: resuming at step {int(ckpt['step'])}", flush=True)
            if inspector is not None:
                inspector.resume(unit, 0 if ckpt is None else int(ckpt["step"]))
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
                identity=ident,
                on_checkpoint=write_metrics,
                on_step=on_step,
                inspect=inspector,
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
            arrays[f"psnr_estimate_{unit.model}"] = float(values[show])
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
    write_npz_atomic(arrays, folder / "reconstructions.npz")
    labels = {m: MODELS[m] for m in models}
    paths = reproduce_figure(
        metrics,
        arrays,
        folder / cfg.figure,
        title=f"{figure.title} — {cfg.figure}/{run_name(cfg)}, {cfg.estimator}",
        labels=labels,
        window=WINDOW,
    )
    if inspector is not None and inspector.rows:
        from .trajectory import trajectory_figure

        paths += trajectory_figure(pd.DataFrame(inspector.rows), folder / "trajectory")
    seconds = time.perf_counter() - started
    shown_cols = ["model", "K", "T", "steps", "final_train_psnr", "test_psnr", "train_seconds"]
    print("\n" + summary[shown_cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    header = (
        f"Claims of section 4 on {cfg.figure}/{run_name(cfg)} ({total} steps, {cfg.size}×"
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
        return INTERRUPTED


def run_pretrain(cfg: PretrainConfig) -> int:
    """Train (or continue with ``--resume``) the DRUNet; print where the checkpoint is.

    The folder is locked for the run. Without ``--resume`` an existing checkpoint is never
    overwritten: a finished one of the same settings is reported complete (exit 0), an
    unfinished one needs ``--resume``.
    """
    from .denoiser import CHECKPOINT_NAME, finished_steps

    validate_pretrain(cfg)
    config = _denoiser_config(cfg)  # its checks too, before the folder is touched
    train_images, _ = _split(cfg)  # checks --test-images against the images
    from ..common.data import crops

    crops(train_images, cfg.size, len(train_images), cfg.seed)  # checks --size against them
    folder = denoiser_folder(cfg.out, cfg.preset, cfg.name)
    path = folder / CHECKPOINT_NAME
    hint = (
        f"{path} keeps every {cfg.checkpoint_every}th step; continue with the same command "
        "and --resume."
    )
    with folder_lock(folder), interrupt_hint(hint):
        remove_partial_writes(folder)
        if path.exists() and not cfg.resume:
            shape = (cfg.crops, 3, cfg.size, cfg.size)
            if finished_steps(path, config, shape, getattr(torch, cfg.dtype)) >= cfg.steps:
                print(
                    f"complete: {path} holds this DRUNet with the same settings, trained for "
                    f"{cfg.steps} steps; nothing recomputed (choose another --name to train "
                    "it again)."
                )
                return 0
            raise InvalidInputError(
                f"{path} holds an unfinished DRUNet of these settings: pass --resume to continue "
                "it, or choose another --name (nothing is overwritten)."
            )
        device = resolve_device(cfg.device)
        previous = torch.get_num_threads()
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        started = time.perf_counter()
        try:
            print(
                f"training DRUNet nc={_text(cfg.nc)} nb={cfg.nb}: {cfg.steps} steps, batch "
                f"{cfg.batch}, {cfg.crops} crops of {cfg.size}×{cfg.size} from "
                f"{len(train_images)} training images, {cfg.dtype} on {device}",
                flush=True,
            )
            path = _train_denoiser(cfg, train_images, device)
        finally:
            torch.set_num_threads(previous)
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s")
    return 0


def _text(values: tuple[int, ...]) -> str:
    """(8, 16) → ``8,16``: a list option as it is written on the command line."""
    return ",".join(str(v) for v in values)
