"""``retune-suite errors``: gradient-error study at image scale (section 4 models).

For one task (denoise / inpaint / deblur) and one wavelet prior (θ_B, θ_BC), on real images:
the DEQ reference hypergradient (matrix-free solve to a stated residual) and every estimator
(JFB, ReTune over a grid of K and T, unrolled, Neumann-P), their relative error
‖g − ĝ‖/‖g‖ and cosine similarity, time and peak memory, with the Lemma 1 and Theorem 2
(printed and corrected) bounds on the same axes.

The loss is L(u) = ½‖Dᵀθ₀⁻¹u − x̄‖² with θ₀ the current θ, frozen: the theory's setting
(a loss that does not depend on θ). The training gradient of the paper adds the direct term
∂_θ of the read-out x = Dᵀθ⁻¹u, which is the same for every estimator evaluated at û.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from bounds import constants as C
from bounds import statements as S
from operators import fixed_point, hypergrad, restart, unroll
from operators.errors import InvalidInputError, NotContractiveError

from .common.io import write_csv_atomic, write_json_atomic
from .common.measure import measure

TASKS = ("denoise", "inpaint", "deblur")
PRIORS = ("wavelet-B", "wavelet-BC", "pnp")
KEY = ["task", "prior", "estimator", "K", "T", "P"]


@dataclass
class ErrorStudyConfig:
    """Gradient-error study at image scale (section 4); ``--preset quick`` runs on the CPU."""

    task: str = "denoise"
    prior: str = "wavelet-BC"
    size: int = 256
    batch: int = 4
    images: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    ks: str = "1,2,5,10,20"
    t_ref: int = 50
    ts: str = "1,2,5,10,20,50"
    ks_for_t: str = "1,10"
    ps: str = "0,1,2,5,10,20"
    unrolled_max_steps: int = 500
    solve_tol: float = 1e-6
    fixed_point_rtol: float = 1e-7
    fixed_point_method: str = "anderson"
    log_lambda: float = -2.0
    segment_points: int = 5
    threads: int = 0
    denoiser: str | None = None
    pnp_sigma: float = 0.05
    pnp_tau: float = 1.0
    denoiser_steps: int = 300
    seed: int = 0
    out: str = "runs/errors"
    preset: str | None = None
    resume: bool = False


PRESETS = {
    "quick": dict(
        task="all",
        size=32,
        batch=1,
        device="cpu",
        dtype="float64",
        ks="1,2,5,10",
        t_ref=20,
        ts="1,2,5,10,20",
        ks_for_t="1,5",
        ps="0,1,2,5,10,20",
        unrolled_max_steps=200,
        solve_tol=1e-10,
        fixed_point_rtol=1e-12,
        segment_points=2,
        threads=1,
    ),
    "default": {},
}


def ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(
            f"--{name} must be a comma-separated list of integers, got {text!r}."
        ) from None
    if not values or min(values) < (0 if name == "ps" else 1):
        raise InvalidInputError(f"--{name} needs positive integers, got {text!r}.")
    return values


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "--device cuda asked for, but no CUDA device is visible: use --device cpu (or auto)."
        )
    return device


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
        ints(getattr(cfg, name), name)
    resolve_device(cfg.device)


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


def _vec(g) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in (g if isinstance(g, tuple) else (g,))])


def _denoiser_path(cfg: ErrorStudyConfig) -> Path:
    """--denoiser, or a small DRUNet trained once on the embedded images into the run folder."""
    if cfg.denoiser is not None:
        return Path(cfg.denoiser)
    from experiments.common.data import crops
    from experiments.denoiser import DenoiserConfig, train_denoiser

    folder = Path(cfg.out) / "denoiser"
    if (folder / "drunet.pt").exists():
        return folder / "drunet.pt"
    print(f"no --denoiser given: training a small DRUNet on the embedded images into {folder}")
    clean = crops(_images(cfg.images), min(cfg.size, 64), 256, cfg.seed + 1)
    config = DenoiserConfig(
        steps=cfg.denoiser_steps,
        batch=8,
        lr=1e-3,
        sigma_max=0.2,
        nc=(8, 16, 32, 64),
        nb=1,
        seed=cfg.seed,
        checkpoint_every=100,
    )
    return train_denoiser(
        clean.to(getattr(torch, cfg.dtype)), config, folder, resolve_device(cfg.device), resume=True
    )


@functools.lru_cache(maxsize=4)
def _images(folder: str | None) -> list:
    from experiments.common.data import embedded_images, load_folder

    return load_folder(folder) if folder else embedded_images()


class Study:
    """One (task, prior): data, map, reference, then rows appended to ``rows``."""

    def __init__(
        self, cfg: ErrorStudyConfig, task: str, prior: str, rows: list[dict], done: set[tuple]
    ):
        from experiments.common.data import crops
        from operators.physics import make_forward_model
        from operators.wavelet_prior import WaveletFB, init_theta

        self.cfg, self.task, self.prior, self.rows, self.done = cfg, task, prior, rows, done
        self.device = resolve_device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        images = _images(cfg.images)
        clean = crops(images, cfg.size, cfg.batch, cfg.seed).to(self.device, self.dtype)
        model = make_forward_model(
            task, 3, (cfg.size, cfg.size), device=self.device, dtype=self.dtype, seed=cfg.seed
        )
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        y = model.observe(clean, gen)
        self.has_bounds = prior != "pnp"
        if prior == "pnp":
            from operators.pnp import fb_pnp_sigma_tau, load_drunet, sigma_tau_theta

            denoiser = load_drunet(_denoiser_path(cfg), device=self.device, dtype=self.dtype)
            self.fb = None
            self.step = fb_pnp_sigma_tau(model, y, denoiser)
            self.theta = sigma_tau_theta(
                cfg.pnp_sigma, cfg.pnp_tau, device=self.device, dtype=self.dtype
            )
            self.u0 = model.A_adjoint(y)

            def loss(x: torch.Tensor) -> torch.Tensor:
                return 0.5 * ((x - clean) ** 2).sum()

            self.loss = loss
            return
        self.fb = WaveletFB(
            y, prior=prior.split("-")[1], model=None if task == "denoise" else model
        )
        self.theta = init_theta(
            self.fb.prior,
            self.fb.levels,
            3,
            log_lambda=cfg.log_lambda,
            device=self.device,
            dtype=self.dtype,
        )
        w0 = self.fb.weights(self.theta).detach()
        synthesis = self.fb.D.synthesis

        def loss_u(u: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((synthesis(u / w0) - clean) ** 2).sum()

        self.loss = loss_u
        self.u0 = self.fb.initial()
        self.step = self.fb.step

    def emit(self, estimator: str, K: int, T: int, P: int, fn, bounds: dict[str, float]) -> None:
        key = (self.task, self.prior, estimator, K, T, P)
        if key in self.done:
            return
        grad, m = measure(fn, self.device)
        g = _vec(grad)
        diff = torch.linalg.vector_norm(g - self.g_ref).item()
        cos = torch.nn.functional.cosine_similarity(g, self.g_ref, dim=0).item()
        row = dict(
            zip(KEY, key, strict=True),
            rel_error=diff / self.g_norm,
            cosine=cos,
            seconds=m.seconds,
            peak_bytes=m.peak_bytes,
            memory_kind=m.kind,
            device=str(self.device),
            dtype=self.cfg.dtype,
            size=self.cfg.size,
            batch=self.cfg.batch,
        )
        row.update({f"bound_{k}": v / self.g_norm for k, v in bounds.items()})
        self.rows.append(row)
        self.done.add(key)
        print(
            f"  {estimator:10s} K={K:<3d} T={T:<4d} P={P:<3d} rel.err={row['rel_error']:.3e} "
            f"cos={cos:.6f} {m.seconds:.3f}s",
            flush=True,
        )

    def run(self) -> None:
        cfg, step, theta, loss = self.cfg, self.step, self.theta, self.loss
        print(f"== {self.task} / {self.prior}: fixed point and DEQ reference", flush=True)
        try:
            fp = fixed_point(
                step,
                theta,
                self.u0,
                1,
                rtol=cfg.fixed_point_rtol,
                max_blocks=100_000,
                method=cfg.fixed_point_method,
            )
        except NotContractiveError as error:
            if self.has_bounds:
                raise
            # FB-PnP is not contractive in general: without a fixed point there is no DEQ
            # reference; record the measured local constant where the iteration starts.
            local = C.delta_measured(unroll(step, 1), self.u0, theta, method="power", iterations=50)
            print(
                f"  no fixed point: {str(error).splitlines()[0]}\n"
                f"  measured ‖∂xφ(x₀)‖₂ = {local:.4g}; estimators not compared",
                flush=True,
            )
            self.rows.append(
                dict(
                    task=self.task,
                    prior=self.prior,
                    estimator="constants",
                    K=0,
                    T=0,
                    P=-1,
                    local_contraction=local,
                    fixed_point="not reached",
                    device=str(self.device),
                )
            )
            return
        u_star = fp.x
        (g_ref, stats), m = measure(
            lambda: hypergrad.deq_solve(
                step, theta, u_star, loss, 1, tol=cfg.solve_tol, maxiter=20_000, return_stats=True
            ),
            self.device,
        )
        self.g_ref = _vec(g_ref)
        self.g_norm = torch.linalg.vector_norm(self.g_ref).item()
        print(
            f"  fixed point: {fp.stats.blocks} steps; adjoint GMRES: {stats.blocks} "
            f"residuals, final {stats.residuals[-1].item():.2e}; {m.seconds:.2f}s",
            flush=True,
        )
        if "deq_solve" not in {k[2] for k in self.done if k[:2] == (self.task, self.prior)}:
            self.rows.append(
                dict(
                    task=self.task,
                    prior=self.prior,
                    estimator="deq_solve",
                    K=1,
                    T=0,
                    P=-1,
                    rel_error=0.0,
                    cosine=1.0,
                    seconds=m.seconds,
                    peak_bytes=m.peak_bytes,
                    memory_kind=m.kind,
                    device=str(self.device),
                    dtype=cfg.dtype,
                    size=cfg.size,
                    batch=cfg.batch,
                    solve_residual=stats.residuals[-1].item(),
                    fixed_point_steps=fp.stats.blocks,
                )
            )
            self.done.add((self.task, self.prior, "deq_solve", 1, 0, -1))
        grad_loss = torch.linalg.vector_norm(hypergrad.loss_gradient(loss, u_star)).item()
        hess = C.hessian_power_norm(loss, u_star)
        dist0 = torch.linalg.vector_norm(self.u0 - u_star).item()
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed)

        def delta(K: int) -> tuple[float, str]:
            if self.task == "denoise" and self.fb is not None:
                return self.fb.omega(theta) ** K, "analytic"
            d = C.delta_measured(
                unroll(step, K), u_star, theta, method="power", iterations=50, generator=gen
            )
            return d, "measured"

        ks, ks_for_t = ints(cfg.ks, "ks"), ints(cfg.ks_for_t, "ks_for_t")
        for K in sorted(set(ks) | set(ks_for_t)):
            Phi = unroll(step, K)
            d, _ = delta(K)
            dtheta = C.dtheta_norm(Phi, u_star, theta)
            bounded = self.has_bounds and d < 1
            lemma = {"lemma1": S.lemma1(d, grad_loss, dtheta)} if bounded else {}
            # the T sweep first: its rows carry the Theorem 2 bounds; the K sweep reuses them
            if K in ks_for_t:
                for T in ints(cfg.ts, "ts"):
                    bounds = {}
                    if bounded:
                        x_prev = restart(step, theta, self.u0, K, T - 1).x if T > 1 else self.u0
                        L_theta = C.lipschitz_theta(
                            Phi, u_star, x_prev, theta, points=cfg.segment_points
                        )
                        args = (
                            d,
                            T,
                            grad_loss,
                            dtheta,
                            C.dtheta_norm(Phi, x_prev, theta),
                            L_theta,
                            dist0,
                            hess,
                        )
                        bounds = {
                            "theorem2": S.theorem2(*args),
                            "theorem2_corrected": S.theorem2_corrected(*args),
                        }
                    self.emit(
                        "retune",
                        K,
                        T,
                        -1,
                        lambda K=K, T=T: hypergrad.retune(step, theta, self.u0, loss, K, T),
                        bounds,
                    )
            if K in ks:
                T = cfg.t_ref
                self.emit(
                    "jfb", K, 0, -1, lambda K=K: hypergrad.jfb(step, theta, u_star, loss, K), lemma
                )
                self.emit(
                    "retune",
                    K,
                    T,
                    -1,
                    lambda K=K, T=T: hypergrad.retune(step, theta, self.u0, loss, K, T),
                    {},
                )
                if K * T <= cfg.unrolled_max_steps:
                    self.emit(
                        "unrolled",
                        K,
                        T,
                        -1,
                        lambda K=K, T=T: hypergrad.unrolled(step, theta, self.u0, loss, K, T),
                        {},
                    )
        K = ks_for_t[0]
        d, _ = delta(K)
        dtheta = C.dtheta_norm(unroll(step, K), u_star, theta)
        for P in ints(cfg.ps, "ps"):
            bounded = self.has_bounds and d < 1
            bound = {"neumann": S.neumann(d, P, grad_loss, dtheta)} if bounded else {}
            self.emit(
                "neumann",
                K,
                0,
                P,
                lambda P=P: hypergrad.deq_neumann(step, theta, u_star, loss, K, P),
                bound,
            )
        self.rows.append(
            dict(
                task=self.task,
                prior=self.prior,
                estimator="constants",
                K=0,
                T=0,
                P=-1,
                grad_loss=grad_loss,
                hess_loss=hess,
                dist0=dist0,
                g_norm=self.g_norm,
                omega=self.fb.omega(theta) if self.fb is not None else float("nan"),
                local_contraction=C.delta_measured(
                    unroll(step, 1), u_star, theta, method="power", iterations=50, generator=gen
                ),
                delta_kind=delta(1)[1],
                device=str(self.device),
            )
        )


def run_errors(cfg: ErrorStudyConfig) -> int:
    """Run the study; metrics.csv is rewritten atomically after each (task, prior)."""
    from .figures import error_study_figures

    validate(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.csv"
    rows: list[dict] = []
    done: set[tuple] = set()
    if cfg.resume and metrics.exists():
        previous = pd.read_csv(metrics)
        rows = previous.to_dict("records")
        done = {tuple(r[k] for k in KEY) for r in rows if r["estimator"] != "constants"}
        print(f"resuming: {len(done)} rows already in {metrics}")
    elif metrics.exists():
        raise InvalidInputError(
            f"{metrics} exists: pass --resume to continue that run, or "
            "choose another --out (nothing is overwritten)."
        )
    write_json_atomic(
        {
            **asdict(cfg),
            "device_resolved": str(resolve_device(cfg.device)),
            "torch": torch.__version__,
        },
        out / "config.json",
    )
    for task, prior in plan(cfg):
        finished = {k[:2] for k in done}
        constants_done = any(
            r.get("estimator") == "constants" and r["task"] == task and r["prior"] == prior
            for r in rows
        )
        if (task, prior) in finished and constants_done:
            print(f"== {task} / {prior}: already complete, skipped")
            continue
        rows = [
            r
            for r in rows
            if not (r.get("estimator") == "constants" and r["task"] == task and r["prior"] == prior)
        ]
        Study(cfg, task, prior, rows, done).run()
        write_csv_atomic(pd.DataFrame(rows), metrics)
    frame = pd.DataFrame(rows)
    paths = error_study_figures(frame, out)
    print(f"wrote {metrics}, {out / 'config.json'} and {len(paths)} figures")
    return 0
