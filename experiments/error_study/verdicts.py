r"""``retune-suite verdicts``: the paper's statements checked at image scale, with verdicts.

The gradient-error study (:mod:`.study`) draws the bounds beside the errors; this job gives
them **verdicts**. For one section-4 problem (task, prior) on real crops, in float64, and for
every (K, T) of a grid it runs :func:`retune_suite.bounds.verify` (Theorem 1, Lemma 1 (29), the
Neumann
bound (22), Theorem 2 (33) as printed and corrected (F1), Corollary 1 (42) when the loss is an
MSE, and the a-posteriori certificates of ``docs/findings.md`` C) and writes its frame, one row
per (K, T, statement), to ``verdicts.csv``. A verdict (``holds`` True or False) is given only
where every constant is certified; the constants given here are:

- δ_K = ω(τ)^K, analytic, for denoising (wavelet θ_B, θ_BC: FB on a strongly convex problem;
  ``foe``: gradient descent, :mod:`retune_suite.operators.maps.foe`); None (measured, no verdict)
  elsewhere;
- H, the Lipschitz constant of ∂ₓL: exactly max θ₀⁻² for the wavelet priors (the loss
  ½‖Dᵀθ₀⁻¹u − x̄‖², D orthonormal), 1 for ``foe`` (½‖x − x̄‖²);
- L_θ of the certificates: analytic on
  :meth:`retune_suite.operators.maps.foe.FieldsOfExperts.run_ball` for
  ``foe`` denoising; none for the wavelet priors (∂_θΦ_K jumps where the active set changes),
  whose certificates are then not computed. Theorem 2 itself uses the exact secant L_θ at
  (x_{K(T−1)}, x̂), which is certified at every size
  (``retune_suite.bounds.constants.lipschitz_theta``).

Beyond n = 4096 the reference is the matrix-free DEQ solve (GMRES to ``solve_tol``), whose own
error ``verify`` bounds with the analytic δ_K; ∂_θΦ_K is dense (forward mode in chunks), so
‖∂_θΦ_K‖₂ and the secant L_θ are exact. x̂ is computed once per K and every ∂_θΦ_K(x̂) once per
K (one :func:`retune_suite.operators.jacobians.reuse_jacobians` block per K): at 256×256 with the
FoE's
d = 208 one dense ∂_θΦ_10 is 208 forward-mode passes of 10 steps (minutes on a CPU).

Rows are written atomically after each (K, T); ``--resume`` skips the (K, T) already there.
``verdicts.png``/``.pdf`` draw bound/observed (the tightness) against T, one panel per K, a
filled marker for True, a cross for False and an open one for no verdict.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from retune_suite.operators import fixed_point
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.jacobians import reuse_jacobians
from retune_suite.operators.maps import section4
from retune_suite.operators.maps.section4 import TASKS

from retune_suite import bounds

from ..common.io import remove_partial_writes, save_figure, write_csv_atomic, write_json_atomic
from ..common.lock import folder_lock
from ..common.options import TypedFields
from ..common.progress import progress
from ..common.resume import interrupt_hint, read_csv_records, read_saved_config, run_state
from .config import _counts

__all__ = ["PRIORS", "VerdictConfig", "run_verdicts", "verdict_figure"]

PRIORS = ("wavelet-B", "wavelet-BC", "foe")
"""The priors with a convex lower level (the statements' setting); FB-PnP has none."""

KEY = ("task", "prior", "size", "batch", "seed", "K", "T")
RESUMABLE = ("resume", "threads", "quiet", "out")


@dataclass
class VerdictConfig(TypedFields):
    """Verdicts on the paper's statements at image scale (float64, bounds.verify per (K, T))."""

    task: str = field(default="denoise", metadata={"help": "denoise, inpaint or deblur"})
    prior: str = field(default="foe", metadata={"help": "wavelet-B, wavelet-BC or foe"})
    size: int = field(default=256, metadata={"help": "crop size (multiple of 16, >= 32)"})
    batch: int = field(default=1, metadata={"help": "number of colour crops"})
    images: str | None = field(default=None, metadata={"help": "image folder (default: embedded)"})
    ks: tuple[int, ...] = field(
        default=(1, 10), metadata={"help": "K values, written 1,10", "parse": _counts("ks", 1)}
    )
    ts: tuple[int, ...] = field(
        default=(1, 2, 5),
        metadata={"help": "T values (every K), written 1,2,5", "parse": _counts("ts", 1)},
    )
    P: int = field(default=5, metadata={"help": "Neumann truncation"})
    log_lambda: float = field(default=-2.0, metadata={"help": "log λ_j of the wavelet priors"})
    solve_tol: float = field(
        default=1e-12, metadata={"help": "relative residual of the DEQ reference (GMRES)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the crops, noise and mask"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave as is)"})
    out: str = field(default="runs/verdicts", metadata={"help": "folder for verdicts.csv"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


def validate(cfg: VerdictConfig) -> None:
    """Every check that can fail runs before any work starts."""
    if cfg.task not in TASKS:
        raise InvalidInputError(f"unknown task {cfg.task!r}: choose from {', '.join(TASKS)}.")
    if cfg.prior not in PRIORS:
        raise InvalidInputError(
            f"--prior {cfg.prior!r}: verdicts need a convex lower level; choose from "
            f"{', '.join(PRIORS)}."
        )
    if cfg.size < 32 or cfg.size % 16:
        raise InvalidInputError(
            f"--size {cfg.size}: the 4-level transform needs a multiple of 16, at least 32."
        )
    for name in ("batch", "P"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (name == "batch"):
            raise InvalidInputError(f"--{name} must be an integer >= {int(name == 'batch')}.")
    _counts("ks", 1)(cfg.ks)
    _counts("ts", 1)(cfg.ts)
    if not (0 < cfg.solve_tol < 1):
        raise InvalidInputError(f"--solve-tol must be in (0, 1), got {cfg.solve_tol}.")
    if cfg.images is not None and not Path(cfg.images).is_dir():
        raise InvalidInputError(f"--images {cfg.images}: no such folder.")


def _problem(cfg: VerdictConfig) -> section4.Section4Problem:
    from retune_suite.experiments.common.data import crops, embedded_images, load_folder

    images = load_folder(cfg.images) if cfg.images else embedded_images()
    clean = crops(images, cfg.size, cfg.batch, cfg.seed).to(torch.float64)
    return section4.build(
        cfg.task, cfg.prior, clean=clean, seed=cfg.seed, log_lambda=cfg.log_lambda
    )


def _given(p: section4.Section4Problem, K: int) -> dict[str, Any]:
    """The constants ``verify`` is given at this K, and where each comes from."""
    delta = p.delta(K)
    if p.prior == "foe":
        H = p.fb.hessian_bound
        L_theta = L_x = None
        if delta is not None:
            c = p.fb.constants(p.theta, K, *p.fb.run_ball(p.theta, p.x0, K))
            L_theta, L_x = c.lipschitz_theta, c.lipschitz_x
    else:  # H = max θ₀⁻², exact for ½‖Dᵀθ₀⁻¹u − x̄‖²
        H = 1.0 / p.fb.weights(p.theta).detach().min().item() ** 2
        L_theta = L_x = None
    return dict(delta=delta, hessian_bound=H, lipschitz_theta=L_theta, lipschitz_x=L_x)


def _previous(path: Path, cfg: VerdictConfig) -> pd.DataFrame:
    """The complete (K, T) units of ``verdicts.csv``: its complete records (a last line cut
    short is dropped), less any (K, T) with fewer rows than its frame had (``unit_rows``)."""
    if not path.exists():
        return pd.DataFrame()
    rows, torn = read_csv_records(path, required=("K", "T", "kind", "name"))
    if "unit_rows" in rows and not rows.empty:  # files of older versions: every unit complete
        count = rows.groupby(["K", "T"])["K"].transform("size")
        partial = count != rows["unit_rows"]
        if partial.any():
            cut = sorted(set(zip(rows.K[partial], rows["T"][partial], strict=True)))
            print(f"{path}: the rows of (K, T) = {cut} are incomplete: computed again")
            rows = rows[~partial].reset_index(drop=True)
    elif torn:
        print(f"{path}: its last row was cut short: dropped")
    return rows


def run_verdicts(cfg: VerdictConfig) -> int:
    """Run :func:`~retune_suite.bounds.verify` at every (K, T); print the verdicts; write CSV and
    figure. The run folder is locked for the run; a finished run of the same settings is
    reported complete (exit 0), an unfinished one continues with ``--resume``."""
    validate(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    hint = (
        f"every (K, T) finished is kept in {out / 'verdicts.csv'}; continue with the same "
        "command and --resume."
    )
    with folder_lock(out), interrupt_hint(hint):
        return _run(cfg, out)


def _run(cfg: VerdictConfig, out: Path) -> int:
    remove_partial_writes(out)
    path = out / "verdicts.csv"
    units = [(K, T) for K in cfg.ks for T in cfg.ts]
    previous = functools.cache(lambda: _previous(path, cfg))

    def complete() -> bool:
        rows = previous()
        return not rows.empty and set(units) <= set(zip(rows["K"], rows["T"], strict=True))

    state = run_state(
        out,
        exists=path.exists() or (out / "config.json").exists(),
        saved=read_saved_config(out / "config.json", VerdictConfig),
        current=cfg,
        resume=cfg.resume,
        complete=complete,
        resumable=RESUMABLE,
    )
    rows = previous()
    if state == "complete" and (out / "verdicts.png").exists():
        print(
            f"complete: {out} holds this run with the same settings ({path}); nothing "
            "recomputed (pass --resume to redraw its figure, or choose another --out)."
        )
        return 0
    if not (out / "config.json").exists():
        write_json_atomic(
            {**dataclasses.asdict(cfg), "torch": torch.__version__}, out / "config.json"
        )
    p = _problem(cfg)
    done = set() if rows.empty else set(zip(rows["K"], rows["T"], strict=True))
    units = [(K, T) for K in cfg.ks for T in cfg.ts]
    bar = progress(
        len(units), initial=sum(u in done for u in units), desc="verify", enabled=not cfg.quiet
    )
    frames = [rows] if not rows.empty else []
    try:
        for K in cfg.ks:
            if all((K, T) in done for T in cfg.ts):
                continue
            given = _given(p, K)
            x_star = fixed_point(p.step, p.theta, p.x0, K, atol=0.0).x  # as verify computes it
            with reuse_jacobians():  # ∂_θΦ_K(x̂) once for every T of this K
                for T in cfg.ts:
                    if (K, T) in done:
                        continue
                    start = time.perf_counter()
                    report = bounds.verify(
                        p.step,
                        p.theta,
                        p.x0,
                        p.loss,
                        K=K,
                        T=T,
                        P=cfg.P,
                        x_star=x_star,
                        solve_tol=cfg.solve_tol,
                        **given,
                    )
                    frame = report.to_frame()
                    for i, (name, value) in enumerate(
                        zip(
                            KEY,
                            (cfg.task, cfg.prior, cfg.size, cfg.batch, cfg.seed, K, T),
                            strict=True,
                        )
                    ):
                        frame.insert(i, name, value)
                    frame["seconds"] = time.perf_counter() - start
                    frame["unit_rows"] = len(frame)  # a unit is complete with all its rows
                    frames.append(frame)
                    write_csv_atomic(pd.concat(frames, ignore_index=True), path)
                    if bar is not None:
                        bar.update(1)
                    _print(frame, K, T)
    finally:
        if bar is not None:
            bar.close()
    result = pd.concat(frames, ignore_index=True)
    figures = verdict_figure(result, out)
    print(f"wrote {path}, {out / 'config.json'} and {', '.join(str(f) for f in figures)}")
    return 0


def _print(frame: pd.DataFrame, K: int, T: int) -> None:
    table = frame[frame.kind != "constant"][["name", "observed", "bound", "holds", "reason"]]
    table = table.astype({"holds": object}).fillna({"holds": "no verdict"})
    print(f"\n== K={K} T={T} ({frame.seconds.iloc[0]:.0f} s)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4e}", max_colwidth=60))


def _verdict(value: Any) -> bool | None:
    """holds as read back from the CSV: True, False or None (empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return {"True": True, "False": False}.get(value)
    return bool(value)


def verdict_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """bound/observed against T per statement, one panel per K (PDF and PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frame[frame.kind != "constant"].copy()
    rows["ratio"] = pd.to_numeric(rows["bound"], errors="coerce") / pd.to_numeric(
        rows["observed"], errors="coerce"
    )
    ks = sorted(rows.K.unique())
    fig, axes = plt.subplots(1, len(ks), figsize=(5.5 * len(ks), 4.2), squeeze=False)
    for ax, K in zip(axes[0], ks, strict=True):
        sub = rows[rows.K == K]
        for i, (name, group) in enumerate(sub.groupby("name", sort=False)):
            color = f"C{i % 10}"
            group = group.sort_values("T")
            ax.plot(group["T"], group["ratio"], color=color, lw=1, label=name)
            for _, r in group.iterrows():
                verdict = _verdict(r["holds"])
                marker = {True: "o", False: "x", None: "o"}[verdict]
                face = color if verdict is True else "none"
                ax.scatter(
                    r["T"],
                    r["ratio"],
                    marker=marker,
                    s=30,
                    color=color,
                    facecolors=face if verdict is not False else None,
                )
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("T (restarts)")
        ax.set_ylabel("bound / observed error")
        ax.set_title(f"K = {K}")
        ax.legend(fontsize=6, loc="best")
    first = frame.iloc[0]
    fig.suptitle(
        f"{first['task']} / {first['prior']}, {first['size']}×{first['size']}, float64: "
        "filled = holds (certified), × = violated, open = no verdict",
        fontsize=9,
    )
    fig.tight_layout()
    paths = save_figure(fig, out / "verdicts")
    plt.close(fig)
    return paths
