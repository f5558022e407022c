r"""The gradient-error study of one (task, prior) at image scale (section 4 models).

For one task (denoise / inpaint / deblur) and one prior (θ_B, θ_BC, FB-PnP), on real images:
the DEQ reference hypergradient (matrix-free solve to a stated residual) and every estimator
(JFB, ReTune over a grid of K and T, unrolled, Neumann-P), their relative error
‖g − ĝ‖/‖g‖ and cosine similarity, time and peak memory, with the Lemma 1 (29), Neumann (22)
and Theorem 2 (33) (printed and corrected) bounds on the same rows.

Time and memory are measured as the benchmarks measure them (:mod:`.cost`): one warm-up call,
whose peak memory above the level before it is read from the allocator (CUDA
``max_memory_allocated``; on the CPU torch's allocator events recorded by the profiler), then
``timing_repeats`` timed calls. The columns are ``seconds_median``, ``timing_repeats``,
``peak_mib`` and ``peak_method``. Rows written before them (columns ``seconds``: one cold
call; ``peak_bytes``/``memory_kind``: sampled RSS above a baseline that earlier allocations
had already raised, near 0 for ReTune) resume with NaN in the new columns and are kept as
they were.

The problem comes from :func:`retune_suite.operators.maps.section4.build`: x₀ = D Aᵀy (Dy for
denoising, the
paper's start after eq. (52)) and the loss L(u) = ½‖Dᵀθ₀⁻¹u − x̄‖² with θ₀ the current θ,
frozen: the theory's setting (a loss that does not depend on θ). The training gradient of the
paper adds the direct term ∂_θ of the read-out x = Dᵀθ⁻¹u, which is the same for every
estimator evaluated at û.

The fixed-point estimators (the DEQ reference, JFB (28), Neumann (22)) share one
linearisation of Φ_K at x̂ per K (:func:`retune_suite.operators.hypergrad.linearise`): their time and
memory are those of the products alone, and ``linearise_seconds`` is the one (cold) forward
pass of Φ_K with its graph that they share.

Every row is written to ``metrics.csv`` as soon as it is computed (atomically); a row whose
key (:data:`~retune_suite.experiments.error_study.config.KEY`) is already there is skipped, so an
interrupted unit resumes where it stopped.

Every ReTune, JFB, Neumann and deq_solve row also carries the a-posteriori certificate of
:func:`retune_suite.operators.hypergrad.estimate` (an upper bound on ‖g − ĝ‖ computed without x̂),
divided
by ‖g‖ like the ``bound_*`` columns (``certificate``), its ``certificate_status`` and
``certificate_reason``, and the tightness columns ``tightness_certificate`` and
``tightness_<bound>`` = column / ``rel_error`` (NaN where the observed error is 0). The
certificate uses H = max θ₀⁻² (exact: the loss is ½‖Dᵀθ₀⁻¹u − x̄‖², D orthonormal), δ_K
analytic (denoising) or measured, and the *measured* secant L_θ of Φ_K at (x₀, x̂), so its
status is never ``"certified"``: ``"estimated"``, or ``"none"`` (NaN) where δ_K ≥ 1 or the
prior has no bounds. A run written before these columns existed resumes with NaN in them for
its old rows (its rows are kept as they were, not recomputed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from retune_suite.bounds import constants as C
from retune_suite.bounds import statements as S
from retune_suite.operators import fixed_point, hypergrad, restart, unroll
from retune_suite.operators.errors import ConvergenceError, NotContractiveError
from retune_suite.operators.hypergrad.certificate import jacobian_free_certificate
from retune_suite.operators.maps import section4

from ..common.devices import resolve_device
from ..common.io import write_csv_atomic
from ..common.measure import measure
from ..common.progress import progress
from .config import KEY, ErrorStudyConfig, with_tolerances
from .cost import measure_cost

__all__ = ["Metrics", "Study", "row_key"]

NAN = float("nan")
REFERENCE_MAXITER = 20_000
"""Products the DEQ reference's GMRES may take."""


def reference_hint(message: str, dtype: torch.dtype, tol: float) -> str:
    """The error of a DEQ reference solve that stopped short of ``tol``, with the fix: below
    about 100 machine epsilons of ``dtype`` the residual is rounding, not convergence (the
    256×256 deblurring reference in float32 stagnated at 1.7·10⁻⁶ for 20 000 products)."""
    first = message.splitlines()[0]
    if tol < 100 * torch.finfo(dtype).eps:
        return (
            f"DEQ reference: {first}. A relative residual of {tol:.0e} is within rounding of "
            f"{dtype} (eps {torch.finfo(dtype).eps:.1e}): run this setting with --dtype "
            "float64, or raise --solve-tol."
        )
    return f"DEQ reference: {first}. Raise --solve-tol, or check that φ contracts at x̂."


def row_key(row: dict[str, Any]) -> tuple:
    """The :data:`KEY` of a row (a dict, or a record read back from ``metrics.csv``)."""
    return tuple(row.get(k) for k in KEY)


class Metrics:
    """``metrics.csv`` of one run: the rows so far, rewritten atomically after each new row."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.keys = {row_key(r) for r in self.rows if r.get("estimator") != "constants"}

    def has(self, key: tuple) -> bool:
        """Whether the row ``key`` was already computed."""
        return key in self.keys

    def complete(self, unit: tuple) -> bool:
        """Whether the unit (its first six key fields) has its closing ``constants`` row."""
        return any(
            r.get("estimator") == "constants" and row_key(r)[: len(unit)] == unit for r in self.rows
        )

    def add(self, row: dict[str, Any]) -> None:
        """Append ``row`` and rewrite the CSV (a reader never sees a half-written file)."""
        self.rows.append(row)
        if row.get("estimator") != "constants":
            self.keys.add(row_key(row))
        write_csv_atomic(pd.DataFrame(self.rows), self.path)


def _vec(g) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in (g if isinstance(g, tuple) else (g,))])


def _denoiser_path(cfg: ErrorStudyConfig) -> Path:
    """--denoiser, or a small DRUNet trained once on the embedded images into the run folder."""
    if cfg.denoiser is not None:
        return Path(cfg.denoiser)
    from retune_suite.experiments.common.data import crops
    from retune_suite.experiments.reproduce.denoiser import DenoiserConfig, train_denoiser

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
    from retune_suite.experiments.common.data import embedded_images, load_folder

    return load_folder(folder) if folder else embedded_images()


class Study:
    """One (task, prior): data, map, reference, then rows added to ``metrics`` one by one."""

    def __init__(self, cfg: ErrorStudyConfig, task: str, prior: str, metrics: Metrics):
        from retune_suite.experiments.common.data import crops

        cfg = with_tolerances(cfg)  # the dtype's where the caller left them unset
        self.cfg, self.task, self.prior, self.metrics = cfg, task, prior, metrics
        self.unit = (task, prior, cfg.size, cfg.batch, cfg.dtype, cfg.seed)
        self.device = resolve_device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        clean = crops(_images(cfg.images), cfg.size, cfg.batch, cfg.seed)
        denoiser = None
        if prior == "pnp":
            from retune_suite.operators.maps.pnp import load_drunet

            denoiser = load_drunet(_denoiser_path(cfg), device=self.device, dtype=self.dtype)
        self.problem = section4.build(
            task,
            prior,
            clean=clean.to(self.device, self.dtype),
            seed=cfg.seed,
            log_lambda=cfg.log_lambda,
            pnp_sigma=cfg.pnp_sigma,
            pnp_tau=cfg.pnp_tau,
            denoiser=denoiser,
        )
        self.has_bounds = self.problem.has_bounds
        self._lins: dict[int, tuple[hypergrad.Linearisation, float]] = {}
        self._bar: Any = None

    # -- rows ---------------------------------------------------------------------------------

    def _row(self, **values: Any) -> dict[str, Any]:
        """A row with the unit's key fields and the device."""
        unit = dict(zip(KEY[:6], self.unit, strict=True))
        return {**unit, **values, "device": str(self.device)}

    def linearisation(self, K: int) -> tuple[hypergrad.Linearisation, float]:
        """Φ_K linearised at x̂ (built once per K, shared by the fixed-point estimators), and
        the seconds it took."""
        if K not in self._lins:
            p = self.problem
            lin, m = measure(
                lambda: hypergrad.linearise(p.step, p.theta, self.u_star, K), self.device
            )
            self._lins[K] = (lin, m.seconds)
        return self._lins[K]

    def emit(
        self,
        estimator: str,
        K: int,
        T: int,
        P: int,
        fn: Callable[..., Any],
        bounds: dict[str, float],
        *,
        shared: bool = False,
        certify: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        """Compute and write one row, unless its key is already in ``metrics.csv``.

        With ``shared`` the estimator is called as ``fn(lin)`` with the shared linearisation
        of Φ_K at x̂ (:meth:`linearisation`), built outside the measured call.
        """
        key = (*self.unit, estimator, K, T, P)
        if self.metrics.has(key):
            return
        extra: dict[str, float] = {}
        call, lin = fn, None
        if shared:
            lin, seconds = self.linearisation(K)
            extra["linearise_seconds"] = seconds
            call = functools.partial(fn, lin)
        grad, cost = measure_cost(call, self.device, self.cfg.timing_repeats)
        g = _vec(grad)
        diff = torch.linalg.vector_norm(g - self.g_ref).item()
        cos = torch.nn.functional.cosine_similarity(g, self.g_ref, dim=0).item()
        row = self._row(
            estimator=estimator,
            K=K,
            T=T,
            P=P,
            rel_error=diff / self.g_norm,
            cosine=cos,
            **cost.columns(),
            **extra,
        )
        row.update({f"bound_{k}": v / self.g_norm for k, v in bounds.items()})
        if certify is not None:
            row.update(self._relative(certify(grad=grad, lin=lin if shared else None), row))
        self.metrics.add(row)
        if self._bar is not None:
            self._bar.update(1)
        print(
            f"  {estimator:10s} K={K:<3d} T={T:<4d} P={P:<3d} rel.err={row['rel_error']:.3e} "
            f"cos={cos:.6f} {cost.seconds_median:.3f}s {cost.peak_bytes / 2**20:.2f} MiB",
            flush=True,
        )

    def _relative(self, cert: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """The certificate columns relative to ‖g‖, and the tightness of every bound column."""
        out = {**cert, "certificate": cert["certificate"] / self.g_norm}
        observed = row["rel_error"]
        for name in ("certificate", *(k for k in row if k.startswith("bound_"))):
            value = out[name] if name == "certificate" else row[name]
            label = name.removeprefix("bound_")
            out[f"tightness_{label}"] = value / observed if observed > 0 else float("nan")
        return out

    def _certificate(
        self,
        method: str,
        K: int,
        d: float,
        kind: str,
        L_theta: float | None,
        *,
        T: int | None = None,
        P: int | None = None,
        grad: Any = None,
        lin: hypergrad.Linearisation | None = None,
    ) -> dict[str, Any]:
        """The a-posteriori certificate of one row (absolute), its status and reason.

        ReTune: :func:`retune_suite.operators.hypergrad.estimate` (T blocks from x₀ again, without
        x̂).
        JFB, Neumann and the DEQ solve at x̂: the same certificate as ``estimate`` (without
        ``lipschitz_x``: the JFB certificate at x_s, plus ‖ĝ − g^JF(x_s)‖ unless JFB or P = 0),
        from the row's gradient ``grad`` and the shared linearisation ``lin`` of Φ_K at x_s = x̂
        (no second linearisation, no second solve); β = ‖∂_θΦ_K(x̂)‖₂ from the dense Jacobian
        as in ``estimate``.

        L_θ is measured (a secant), so a status ``"certified"`` (``estimate`` trusts the numbers
        it is given) is reported as ``"estimated"``; δ_K is measured too where it is not
        analytic (``kind``). FoE denoising (prior ``foe``) has analytic δ_K, L_θ (on
        :meth:`retune_suite.operators.maps.foe.FieldsOfExperts.run_ball`) and H = 1: its
        certificates are
        ``"certified"`` when ‖∂_θΦ_K‖₂ is exact (dense limits of ``estimate``).
        """
        p = self.problem
        if not self.has_bounds or L_theta is None or self.H is None or not d < 1:
            reason = "no bounds for this prior" if not self.has_bounds else f"δ_K = {d:.4g} ≥ 1"
            return {"certificate": NAN, "certificate_status": "none", "certificate_reason": reason}
        if method == "retune":
            est = hypergrad.estimate(
                "retune",
                p.step,
                p.theta,
                p.x0,
                p.loss,
                K=K,
                T=T,
                delta=d,
                lipschitz_theta=L_theta,
                hessian_bound=self.H,
                generator=torch.Generator(device=self.device).manual_seed(self.cfg.seed),
            )
            if est.certificate is None:
                reason = est.certificate_source.get("reason", "no certificate")
                return {
                    "certificate": NAN,
                    "certificate_status": "none",
                    "certificate_reason": reason,
                }
            total, status = float(est.certificate), est.certificate_source["status"]
        else:
            assert lin is not None and grad is not None
            s = torch.linalg.vector_norm(lin.out.detach() - lin.x).item()
            rho = s / (1.0 - d)
            G = torch.linalg.vector_norm(hypergrad.loss_gradient(p.loss, self.u_star)).item()
            beta = C.dtheta_norm(unroll(p.step, K), self.u_star, p.theta)  # exact (dense)
            total, _ = jacobian_free_certificate(d, G, beta, rho, rho, L_theta, self.H)
            if not (method == "jfb" or (method == "deq_neumann" and P == 0)):
                g_jf = _vec(hypergrad.jfb(p.step, p.theta, self.u_star, p.loss, K, lin=lin))
                total += torch.linalg.vector_norm(_vec(grad) - g_jf).item()
            status = "certified"
        measured = [] if self.analytic_lipschitz else ["L_θ (measured secant of ∂_θΦ_K at (x₀, x̂))"]
        if kind != "analytic":
            measured.append("δ_K (measured local constant)")
        reason = "measured: " + "; ".join(measured) if measured else "analytic δ_K, L_θ and H"
        if status != "certified":
            reason += f"; ‖∂_θΦ_K‖₂ {status} by estimate()"
        certified = status == "certified" and not measured
        return {
            "certificate": total,
            "certificate_status": "certified" if certified else "estimated",
            "certificate_reason": reason,
        }

    def planned(self) -> list[tuple]:
        """The keys of every estimator row :meth:`run` computes, in order."""
        cfg = self.cfg
        keys = []
        for K in sorted(set(cfg.ks) | set(cfg.ks_for_t)):
            if K in cfg.ks_for_t:
                keys += [("retune", K, T, -1) for T in cfg.ts]
            if K in cfg.ks:
                keys += [("jfb", K, 0, -1), ("retune", K, cfg.t_ref, -1)]
                if K * cfg.t_ref <= cfg.unrolled_max_steps:
                    keys.append(("unrolled", K, cfg.t_ref, -1))
        keys += [("neumann", cfg.ks_for_t[0], 0, P) for P in cfg.ps]
        return [(*self.unit, *k) for k in dict.fromkeys(keys)]

    # -- the study ----------------------------------------------------------------------------

    def run(self) -> None:
        """Fixed point, DEQ reference, then every row of :meth:`planned` and the constants."""
        planned = self.planned()
        done = sum(self.metrics.has(k) for k in planned)
        self._bar = progress(
            len(planned), initial=done, desc=f"{self.task}/{self.prior}", enabled=not self.cfg.quiet
        )
        try:
            self._run()
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
            self._lins.clear()

    def _run(self) -> None:
        cfg, p = self.cfg, self.problem
        step, theta, loss, u0 = p.step, p.theta, p.loss, p.x0
        print(f"== {self.task} / {self.prior}: fixed point and DEQ reference", flush=True)
        try:
            fp = fixed_point(
                step,
                theta,
                u0,
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
            local = C.delta_measured(unroll(step, 1), u0, theta, method="power", iterations=50)
            print(
                f"  no fixed point: {str(error).splitlines()[0]}\n"
                f"  measured ‖∂xφ(x₀)‖₂ = {local:.4g}; estimators not compared",
                flush=True,
            )
            self.metrics.add(
                self._row(
                    estimator="constants",
                    K=0,
                    T=0,
                    P=-1,
                    local_contraction=local,
                    fixed_point="not reached",
                )
            )
            return
        self.u_star = u_star = fp.x
        lin1, lin_seconds = self.linearisation(1)
        try:
            (g_ref, stats), cost = measure_cost(
                lambda: hypergrad.deq_solve(
                    step,
                    theta,
                    u_star,
                    loss,
                    1,
                    tol=cfg.solve_tol,
                    maxiter=REFERENCE_MAXITER,
                    return_stats=True,
                    lin=lin1,
                ),
                self.device,
                cfg.timing_repeats,
            )
        except ConvergenceError as error:
            raise ConvergenceError(
                reference_hint(str(error), u_star.dtype, cfg.solve_tol), error.residuals
            ) from None
        self.g_ref = _vec(g_ref)
        self.g_norm = torch.linalg.vector_norm(self.g_ref).item()
        print(
            f"  fixed point: {fp.stats.blocks} steps; adjoint GMRES: {stats.blocks} "
            f"residuals, final {stats.residuals[-1].item():.2e}; {cost.seconds_median:.2f}s",
            flush=True,
        )
        grad_loss = torch.linalg.vector_norm(hypergrad.loss_gradient(loss, u_star)).item()
        # from its own seeded generator: a resumed run computes the same value (the global
        # generator's state differs there)
        hess = C.hessian_power_norm(
            loss, u_star, generator=torch.Generator(device=self.device).manual_seed(cfg.seed)
        )
        dist0 = torch.linalg.vector_norm(u0 - u_star).item()
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed)

        def delta(K: int, generator: torch.Generator = gen) -> tuple[float, str]:
            analytic = p.delta(K)
            if analytic is not None:
                return analytic, "analytic"
            d = C.delta_measured(
                unroll(step, K), u_star, theta, method="power", iterations=50, generator=generator
            )
            return d, "measured"

        # H: the loss ½‖Dᵀθ₀⁻¹u − x̄‖² has Hessian diag(θ₀⁻²) (D orthonormal), exactly; the
        # FoE loss ½‖x − x̄‖² has H = 1. FoE denoising has an analytic L_θ
        # (retune_suite.operators.maps.foe).
        if self.prior == "foe":
            self.H = p.fb.hessian_bound
        else:
            self.H = 1.0 / p.fb.weights(theta).detach().min().item() ** 2 if p.fb else None
        self.analytic_lipschitz = self.prior == "foe" and p.delta(1) is not None
        lipschitz: dict[int, float] = {}

        def certify(
            method: str, K: int, d: float, kind: str, **kw: Any
        ) -> Callable[..., dict[str, Any]]:
            """The certificate columns of one row: with the δ_K of the row's bounds (so no
            extra draw from ``gen``: the bounds are those of a run without certificates) and
            the measured L_θ(K), computed once per K."""

            def run(**given: Any) -> dict[str, Any]:
                if self.has_bounds and K not in lipschitz and self.analytic_lipschitz:
                    ball = p.fb.run_ball(theta, u0, K)  # holds x̂ and every certificate ball
                    lipschitz[K] = p.fb.constants(theta, K, *ball).lipschitz_theta
                elif self.has_bounds and K not in lipschitz:
                    lipschitz[K] = C.lipschitz_theta(unroll(step, K), u_star, u0, theta)
                return self._certificate(method, K, d, kind, lipschitz.get(K), **kw, **given)

            return run

        reference = (*self.unit, "deq_solve", 1, 0, -1)
        if not self.metrics.has(reference):
            row = self._row(
                estimator="deq_solve",
                K=1,
                T=0,
                P=-1,
                rel_error=0.0,
                cosine=1.0,
                **cost.columns(),
                linearise_seconds=lin_seconds,
                solve_residual=stats.residuals[-1].item(),
                fixed_point_steps=fp.stats.blocks,
            )
            # δ_1 of the reference from its own generator (``gen`` is the bounds')
            d1, kind1 = delta(1, torch.Generator(device=self.device).manual_seed(cfg.seed))
            cert = certify("deq_solve", 1, d1, kind1)(grad=g_ref, lin=lin1)
            row.update(self._relative(cert, row))
            self.metrics.add(row)
        K_neumann = cfg.ks_for_t[0]
        for K in sorted(set(cfg.ks) | set(cfg.ks_for_t)):
            Phi = unroll(step, K)
            d, kind = delta(K)
            dtheta = C.dtheta_norm(Phi, u_star, theta)
            bounded = self.has_bounds and d < 1
            lemma = {"lemma1": S.lemma1(d, grad_loss, dtheta)} if bounded else {}
            # the T sweep first: its rows carry the Theorem 2 bounds; the K sweep reuses them
            if K in cfg.ks_for_t:
                for T in cfg.ts:
                    bounds = {}
                    if bounded and not self.metrics.has((*self.unit, "retune", K, T, -1)):
                        bounds = self._theorem2(K, T, d, grad_loss, dtheta, dist0, hess)
                    self.emit(
                        "retune",
                        K,
                        T,
                        -1,
                        lambda K=K, T=T: hypergrad.retune(step, theta, u0, loss, K, T),
                        bounds,
                        certify=certify("retune", K, d, kind, T=T),
                    )
            if K in cfg.ks:
                T = cfg.t_ref
                self.emit(
                    "jfb",
                    K,
                    0,
                    -1,
                    lambda lin, K=K: hypergrad.jfb(step, theta, u_star, loss, K, lin=lin),
                    lemma,
                    shared=True,
                    certify=certify("jfb", K, d, kind),
                )
                self.emit(
                    "retune",
                    K,
                    T,
                    -1,
                    lambda K=K, T=T: hypergrad.retune(step, theta, u0, loss, K, T),
                    {},
                    certify=certify("retune", K, d, kind, T=T),
                )
                if K * T <= cfg.unrolled_max_steps:
                    self.emit(
                        "unrolled",
                        K,
                        T,
                        -1,
                        lambda K=K, T=T: hypergrad.unrolled(step, theta, u0, loss, K, T),
                        {},
                    )
            if K != K_neumann:
                self._lins.pop(K, None)  # free the graph of Φ_K once its rows are written
        K = K_neumann
        d, kind = delta(K)
        dtheta = C.dtheta_norm(unroll(step, K), u_star, theta)
        for P in cfg.ps:
            bounded = self.has_bounds and d < 1
            bound = {"neumann": S.neumann(d, P, grad_loss, dtheta)} if bounded else {}
            self.emit(
                "neumann",
                K,
                0,
                P,
                lambda lin, P=P: hypergrad.deq_neumann(step, theta, u_star, loss, K, P, lin=lin),
                bound,
                shared=True,
                certify=certify("deq_neumann", K, d, kind, P=P),
            )
        self.metrics.add(
            self._row(
                estimator="constants",
                K=0,
                T=0,
                P=-1,
                grad_loss=grad_loss,
                hess_loss=hess,
                dist0=dist0,
                g_norm=self.g_norm,
                omega=p.fb.omega(theta) if p.fb is not None else float("nan"),
                local_contraction=C.delta_measured(
                    unroll(step, 1), u_star, theta, method="power", iterations=50, generator=gen
                ),
                delta_kind=delta(1)[1],
            )
        )

    def _theorem2(
        self,
        K: int,
        T: int,
        d: float,
        grad_loss: float,
        dtheta: float,
        dist0: float,
        hess: float,
    ) -> dict[str, float]:
        """Theorem 2 (33) as printed and corrected, with the constants at this (K, T).

        L_θ is the exact secant of ∂_θΦ_K at (x_{K(T−1)}, x̂), H the exact secant of ∂_xL at
        (x_{KT}, x̂), and the o-term of the printed statement the exact Taylor remainder of
        ∂_xL there (:mod:`retune_suite.bounds.constants`).
        """
        p, u_star = self.problem, self.u_star
        step, theta, loss, u0 = p.step, p.theta, p.loss, p.x0
        Phi = unroll(step, K)
        x_prev = restart(step, theta, u0, K, T - 1).x if T > 1 else u0
        x_last = restart(step, theta, x_prev, K, 1).x
        dtheta_prev = C.dtheta_norm(Phi, x_prev, theta)
        L_theta = C.lipschitz_theta(Phi, u_star, x_prev, theta)
        args = (d, T, grad_loss, dtheta, dtheta_prev, L_theta, dist0)
        return {
            "theorem2": S.theorem2(*args, hess, remainder=C.taylor_remainder(loss, u_star, x_last)),
            "theorem2_corrected": S.theorem2_corrected(
                *args, C.loss_gradient_secant(loss, u_star, x_last)
            ),
        }
