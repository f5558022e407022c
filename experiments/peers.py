r"""``retune-suite bench``: hypergradient cost and accuracy, ours and (``--peers``) the peers'.

One problem for every method: colour denoising (A = Id, noise std (0.1, 0.25, 0.5) per
channel) of ``batch`` crops of the embedded photographs, a db4 wavelet prior over 4 levels,
and one hypergradient of the image loss ½‖x − x̄‖² per call, in float32, every method starting
from the noisy image y and running ``steps`` forward steps.

Two maps are differentiated, because the libraries do not ship the same wavelet prior:

``ours``
    :class:`operators.wavelet_prior.WaveletFB`, eq. (51): D orthonormal (periodized), group
    ℓ₁,₂ over (band, channel) (θ_BC), τ = 1.95·min θ²; for A = Id the step is elementwise in
    the wavelet domain (no transform inside the loop). The iterate is u (image Dᵀθ⁻¹u), the
    hyperparameter θ_BC = (log λ (4,), log Λ (3, 3)) with λ_j = exp(log_lambda), Λ = 1, the
    start u₀ = θ₀Dy (image y) and the loss L(u) = ½‖Dᵀθ₀⁻¹u − x̄‖² with θ₀ frozen, as in
    ``retune-suite errors`` (the read-out's direct θ-term, the same for every estimator at a
    given point, is left out, so every method differentiates through the fixed point only, as
    the peers do). It contracts at ω = max(1 − τ, |1 − τ/λ²|) = 0.95 for λ = e^{-1.5}.
``ptwt``
    deepinv 0.5's PGD step with its :class:`deepinv.optim.prior.WaveletPrior` (ptwt, zero
    padding), written out by :class:`PtwtFB`: x ← Ψ⁺ soft_{γλ}(Ψ(x − γ(x − y))), Ψ a
    *redundant* frame (zero padding adds coefficients: Ψ⁺Ψ = Id but ΨΨ⁺ ≠ Id, not
    orthonormal), plain ℓ₁ on the details, iterate x = the image, x₀ = y, one scalar λ (the
    same value) and γ = 1 − ω, so that it contracts at our map's rate and equal iteration
    counts mean equal accuracy of the forward pass. It is a *different minimisation problem*
    (another transform, another norm, another fixed point: ``fixed_point_gap_ptwt_vs_ours`` in the
    checks), so its gradients are compared with the DEQ reference of the ptwt map, not ours.

Methods (``vjps``: the vector-Jacobian products through the step, counted by a tensor hook on
its output; for the DEQ rows that is the backward iterations plus one for ∂θφ):

* ours: ReTune K×T (eq. 25), JFB after ``steps`` steps, AD through ``steps`` unrolled steps,
  and the DEQ gradient after ``steps`` steps by GMRES on the adjoint equation
  (:func:`operators.hypergrad.deq_solve`, restart cycles of ``gmres_restart`` products: in
  float32 a longer Krylov basis loses orthogonality and stalls near 2e-5 here) twice: given
  ``backward_iters`` VJPs (``×50``: :func:`krylov_products` Krylov products and the residuals
  computed at each restart and at the end — the peers' IFT does ``backward_iters`` VJPs too)
  and run to relative residual ``solve_tol`` (``→1e-06``);
* deepinv (``--peers``): ``optim_builder("PGD", prior=WaveletPrior(...), ...,
  DEQ=DEQConfig(...))``, λ trainable, with the IFT backward (fixed-point iteration, Anderson
  off, ``backward_iters`` iterations: ``thres_conv = 0`` so it cannot stop early), with
  ``jacobian_free=True``, and the IFT run to ``thres_conv = solve_tol``;
* torchdeq (``--peers``): ``get_deq(f_solver="fixed_point_iter", f_max_iter=steps,
  b_solver="fixed_point_iter", b_max_iter=backward_iters, f_tol=0, b_tol=0)`` with
  ``ift=True`` and with ``grad=1`` (one-step gradient), on the ptwt map (as its users write
  it) and on our map (same map, same counts); and the IFT run to ``b_tol = solve_tol``
  (``b_stop_mode="rel"``).

The "→ tolerance" rows stop on each library's own criterion: ours ‖b − Mw‖/‖b‖ (GMRES), the
peers' ‖w_{k+1} − w_k‖/‖w_{k+1}‖ — the same residual, relative to ‖w‖ instead of ‖b‖, which is
the looser of the two when the adjoint amplifies (‖w‖ > ‖b‖). They run at most
20·``backward_iters`` iterations (status says when that cap stopped them).

Timing: ``warmup`` untimed calls, then ``repeats`` timed calls (median wall time, median
working set = peak RSS minus RSS before the call, :func:`experiments.common.measure.measure`, after
:func:`release_free_memory`); the peers' "→ tolerance" rows are timed once without warm-up.
``load_1min`` is the machine's load average when the row finished. A peer that cannot be
imported gives a row ``not installed: ...``; the run goes on.

Accuracy: ‖g − g_ref‖/‖g_ref‖ against the DEQ gradient of the same map in float64 at the same
size (fixed point by Anderson to ``fixed_point_rtol``, then
:func:`operators.hypergrad.deq_solve` by GMRES to ``reference_tol``). ``forward_agreement``
compares a peer's output with our iteration of the same map (``steps`` + 1 steps).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from operators import fixed_point, hypergrad, restart
from operators.errors import ConvergenceError, InvalidInputError, RetuneError

from .common.io import write_csv_atomic, write_json_atomic
from .common.measure import measure
from .errors import resolve_device

Loss = Callable[[torch.Tensor], torch.Tensor]
Call = Callable[[], tuple[torch.Tensor, torch.Tensor | None]]

DENOISE_SIGMA = (0.1, 0.25, 0.5)
"""(σ_R, σ_G, σ_B) of section 4.1, as :data:`operators.physics.DENOISE_SIGMA`."""
WAVELET, LEVELS = "db4", 4
DEEPINV_THS = 0.1
"""deepinv 0.5's ``WaveletPrior.prox`` default ``ths``: PGD passes its ``g_param`` in
``*args``, where it is ignored, so the threshold is always ``0.1·λ·γ``: pass ``λ/0.1``."""
AGREE_RTOL = 1e-4
"""Agreement asked of deepinv's iterates and :class:`PtwtFB`'s (float32 rounding, 3 steps)."""
TOL_CAP = 20
"""A "→ tolerance" row runs at most TOL_CAP·backward_iters backward iterations."""


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


def validate(cfg: BenchConfig) -> None:
    """Every check that can fail runs before any work starts."""
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


# ---------------------------------------------------------------------------------------------
# The ptwt map, and instruments


def soft(d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Soft thresholding, written as deepinv 0.5's ``WaveletDenoiser.prox_l1``."""
    zero = torch.zeros((), dtype=d.dtype, device=d.device)
    return torch.maximum(zero, d - t) + torch.minimum(zero, d + t)


@dataclass(eq=False)
class PtwtFB:
    r"""deepinv 0.5's PGD step with ``WaveletPrior(level, wv, p=1)``, written with ptwt.

    .. math:: φ(x, λ) = Ψ^{+}\,\mathrm{soft}_{γλ}\big(Ψ(x − γ(x − y))\big)

    Ψ = ``ptwt.wavedec2(·, mode="zero")`` (a redundant frame, not orthonormal), Ψ⁺ =
    ``ptwt.waverec2``, soft thresholding of the detail coefficients only; λ a 0-dim tensor.
    It contracts at about 1 − γ. deepinv iterates the same map when given ``lambda = λ/0.1``
    (:data:`DEEPINV_THS`); :meth:`Bench.check_deepinv_map` checks it.
    """

    y: torch.Tensor
    gamma: float
    wavelet: str = WAVELET
    levels: int = LEVELS

    def __post_init__(self) -> None:
        import pywt

        self._ptwt = importlib.import_module("ptwt")
        self._filters = pywt.Wavelet(self.wavelet)

    def step(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """φ(x, λ)."""
        z = x - self.gamma * (x - self.y)
        coeffs = self._ptwt.wavedec2(z, self._filters, mode="zero", level=self.levels)
        t = self.gamma * lam
        details = [tuple(soft(d, t) for d in level) for level in coeffs[1:]]
        return self._ptwt.waverec2((coeffs[0], *details), self._filters)


class VJPCounter:
    """Counts backward passes through a step's output: one per vector-Jacobian product."""

    def __init__(self) -> None:
        self.count = 0

    def _hook(self, grad: torch.Tensor) -> None:
        self.count += 1

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``fn`` with a hook on each output that carries a graph."""

        def counted(*args, **kwargs) -> torch.Tensor:
            out = fn(*args, **kwargs)
            if out.requires_grad:
                out.register_hook(self._hook)
            return out

        return counted


def torchdeq_gradient(
    deq,
    step: Callable[[torch.Tensor, object], torch.Tensor],
    theta: torch.Tensor | tuple[torch.Tensor, ...],
    z0: torch.Tensor,
    loss: Loss,
) -> Call:
    r"""A call that computes ∂_θ L(z*(θ)) with the torchdeq module ``deq`` on ``step(z, θ)``.

    θ is a tensor or a tuple of tensors, differentiated through detached copies (as
    :mod:`operators.hypergrad` does). The call returns (the gradient, flat, float64 on the
    CPU; the solver's output z, one step after its last iterate).
    """
    single = isinstance(theta, torch.Tensor)
    leaves = tuple(t.detach().clone().requires_grad_(True) for t in ((theta,) if single else theta))
    arg = leaves[0] if single else leaves

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        for leaf in leaves:
            leaf.grad = None
        z_out, _ = deq(lambda z: step(z, arg), z0)
        z = z_out[-1]
        loss(z).backward()
        return _flat(tuple(leaf.grad for leaf in leaves)), z.detach()

    return run


def _flat(grads) -> torch.Tensor:
    grads = grads if isinstance(grads, tuple | list) else (grads,)
    return torch.cat([g.detach().reshape(-1) for g in grads]).to("cpu", torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def _library(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def missing(requires: tuple[str, ...]) -> str | None:
    """``None`` when every module imports, else ``"not installed: name (error)"``."""
    for name in requires:
        try:
            importlib.import_module(name)
        except ImportError as error:
            return f"not installed: {name} ({error})"
    return None


@contextlib.contextmanager
def _not_a_fixed_point_ok() -> Iterator[None]:
    """JFB and DEQ are evaluated after ``steps`` steps by design: no warning about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="x_star is not a fixed point")
        yield


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without it a long-lived process serves each call from memory an earlier call freed, RSS
    does not grow, and :func:`experiments.common.measure.measure` reports a working set of ~0.
    """
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


# ---------------------------------------------------------------------------------------------
# The problem, its references, and the methods


@dataclass(frozen=True)
class Spec:
    """One row: what runs, and how to build the zero-argument call that is timed."""

    method: str
    library: str
    problem: str  # "ours" or "ptwt"
    gradient: str  # retune, jfb, deq, unrolled, ift, one-step
    requires: tuple[str, ...]
    make: Callable[[], Call]
    cap: int | None = None  # a "→ tolerance" row: its backward-iteration cap
    once: bool = False  # timed once, without warm-up (the peers' minutes-long "→ tolerance")


@dataclass(frozen=True)
class Reference:
    """The float64 DEQ gradient of one map, and how it was obtained."""

    grad: torch.Tensor
    x_hat: torch.Tensor  # the image of the fixed point
    seconds: float
    fixed_point_steps: int
    residual: float


class Bench:
    """The denoising problem in float32 (timed) and float64 (references), and every method."""

    def __init__(self, cfg: BenchConfig, device: torch.device):
        from experiments.common.data import crops, embedded_images
        from operators.wavelet_prior import WaveletFB, init_theta

        self.cfg, self.device = cfg, device
        f32, f64 = torch.float32, torch.float64
        clean = crops(embedded_images(), cfg.size, cfg.batch, cfg.seed).to(device, f32)
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        eps = torch.randn(clean.shape, generator=gen, device=device, dtype=f32)
        sigma = torch.tensor(DENOISE_SIGMA, device=device, dtype=f32).view(1, -1, 1, 1)
        y = clean + sigma * eps
        self.clean = {f32: clean, f64: clean.double()}
        self.y = {f32: y, f64: y.double()}  # the reference solves the float32 data exactly
        self.fb = {dt: WaveletFB(self.y[dt], prior="BC") for dt in self.y}
        self.theta = {
            dt: init_theta("BC", LEVELS, 3, log_lambda=cfg.log_lambda, device=device, dtype=dt)
            for dt in self.y
        }
        self.lam = math.exp(cfg.log_lambda)
        self.omega = self.fb[f64].omega(self.theta[f64])
        self.gamma = 1.0 - self.omega  # the ptwt map contracts at 1 − γ: our rate
        self.counter = VJPCounter()
        self.references: dict[str, Reference] = {}
        self.expected: dict[str, torch.Tensor] = {}
        self.checks: dict[str, float] = {"omega": self.omega, "gamma_ptwt": self.gamma}

    def problem(self, name: str, dtype: torch.dtype) -> tuple[Callable, object, torch.Tensor, Loss]:
        """(step, θ, x₀, loss of the iterate) of the ``ours`` or the ``ptwt`` map."""
        clean = self.clean[dtype]
        if name == "ours":
            fb, theta = self.fb[dtype], self.theta[dtype]
            w0 = fb.weights(theta).detach()
            u0 = w0 * fb.initial()  # θ₀Dy: its image Dᵀθ₀⁻¹u₀ is y

            def loss_u(u: torch.Tensor) -> torch.Tensor:
                return 0.5 * ((fb.D.synthesis(u / w0) - clean) ** 2).sum()

            return fb.step, theta, u0, loss_u
        ptwt = PtwtFB(self.y[dtype], self.gamma)

        def loss_x(x: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((x - clean) ** 2).sum()

        lam = torch.tensor(self.lam, dtype=dtype, device=self.device)
        return ptwt.step, lam, self.y[dtype], loss_x

    def reference(self, name: str) -> Reference:
        """The DEQ gradient of the map ``name`` in float64: Anderson, then GMRES."""
        if name in self.references:
            return self.references[name]
        cfg, f64 = self.cfg, torch.float64
        start = time.perf_counter()
        step, theta, x0, loss = self.problem(name, f64)
        fp = fixed_point(
            step, theta, x0, 1, rtol=cfg.fixed_point_rtol, max_blocks=20_000, method="anderson"
        )
        grad, stats = hypergrad.deq_solve(
            step, theta, fp.x, loss, 1, tol=cfg.reference_tol, maxiter=5000, return_stats=True
        )
        x_hat = self.fb[f64].estimate(fp.x, theta) if name == "ours" else fp.x
        ref = Reference(
            grad=_flat(grad),
            x_hat=x_hat.detach(),
            seconds=time.perf_counter() - start,
            fixed_point_steps=fp.stats.blocks,
            residual=stats.residuals[-1].item(),
        )
        self.references[name] = ref
        print(
            f"  reference ({name} map, float64): fixed point in {fp.stats.blocks} Anderson "
            f"steps, GMRES to {ref.residual:.1e}; {ref.seconds:.1f} s",
            flush=True,
        )
        return ref

    def expected_output(self, name: str) -> torch.Tensor:
        """φ^{steps+1}(x₀) in float32: what a peer returns (its last iterate plus one step)."""
        if name not in self.expected:
            step, theta, x0, _ = self.problem(name, torch.float32)
            self.expected[name] = restart(step, theta, x0, 1, self.cfg.steps + 1).x
        return self.expected[name]

    # -- ours -------------------------------------------------------------------------------

    def ours(self) -> list[Spec]:
        cfg, lib, n, b = self.cfg, "retune-suite", self.cfg.steps, self.cfg.backward_iters
        step, theta, u0, loss = self.problem("ours", torch.float32)
        step = self.counter.wrap(step)

        def retune():
            return _flat(hypergrad.retune(step, theta, u0, loss, cfg.K, cfg.T)), None

        def jfb():
            u = restart(step, theta, u0, 1, n).x
            with _not_a_fixed_point_ok():
                return _flat(hypergrad.jfb(step, theta, u, loss, 1)), None

        def deq(tol: float, maxiter: int) -> Call:
            def run():
                u = restart(step, theta, u0, 1, n).x
                with _not_a_fixed_point_ok():
                    grad = hypergrad.deq_solve(
                        step,
                        theta,
                        u,
                        loss,
                        1,
                        tol=tol,
                        maxiter=maxiter,
                        restart_every=cfg.gmres_restart,
                    )
                return _flat(grad), None

            return run

        def deq_fixed_count() -> Call:
            """GMRES given ``b`` VJPs: p Krylov products plus the residual at each restart and
            at the end. deq_solve never returns an unconverged gradient, so an untimed probe
            finds the residual p products reach, and the timed call asks for 5% above it."""
            p = krylov_products(b, cfg.gmres_restart)
            u = restart(step, theta, u0, 1, n).x
            try:
                with _not_a_fixed_point_ok():
                    hypergrad.deq_solve(
                        step,
                        theta,
                        u,
                        loss,
                        1,
                        tol=1e-30,
                        maxiter=p,
                        restart_every=cfg.gmres_restart,
                    )
                reached = 1e-30
            except ConvergenceError as error:
                reached = error.residuals[-1]  # the true residual after p products
            return deq(1.05 * reached, p)

        def unrolled():
            return _flat(hypergrad.unrolled(step, theta, u0, loss, 1, n)), None

        return [
            Spec(retune_name(cfg), lib, "ours", "retune", (), lambda: retune),
            Spec(f"ours JFB after {n}", lib, "ours", "jfb", (), lambda: jfb),
            Spec(deq_name(cfg, fixed=True), lib, "ours", "deq", (), deq_fixed_count),
            Spec(
                deq_name(cfg),
                lib,
                "ours",
                "deq",
                (),
                lambda: deq(cfg.solve_tol, TOL_CAP * b),
                cap=TOL_CAP * b,
            ),
            Spec(f"ours unrolled {n}", lib, "ours", "unrolled", (), lambda: unrolled),
        ]

    # -- deepinv ----------------------------------------------------------------------------

    def _deepinv(self, *, jacobian_free: bool, max_backward: int, thres: float) -> Call:
        from deepinv.optim import DEQConfig, optim_builder
        from deepinv.optim.data_fidelity import L2
        from deepinv.optim.prior import WaveletPrior
        from deepinv.physics import Denoising

        f32 = torch.float32
        prior = WaveletPrior(level=LEVELS, wv=WAVELET, p=1, device=self.device)
        prior.prox = self.counter.wrap(prior.prox)
        model = optim_builder(
            "PGD",
            prior=prior,
            data_fidelity=L2(),
            max_iter=self.cfg.steps,
            params_algo={
                "stepsize": self.gamma,
                # λ/0.1 (DEEPINV_THS); shape (1, 1): a 0-dim trainable λ breaks deepinv's
                # cost evaluation (flatten(1, -1)), computed at every iteration
                "lambda": [torch.tensor([[self.lam / DEEPINV_THS]])],
            },
            trainable_params=["lambda"],
            DEQ=DEQConfig(
                jacobian_free=jacobian_free,
                anderson_acceleration_backward=False,
                max_iter_backward=max_backward,
            ),
            anderson_acceleration=False,
            thres_conv=thres,  # only the backward fixed point reads it (early_stop=False)
        ).to(self.device)
        physics = Denoising(device=self.device)
        param = model.params_algo["lambda"][0]
        y, loss = self.y[f32], self.problem("ptwt", f32)[3]

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            param.grad = None
            x = model(y, physics)
            loss(x).backward()
            # ∂L/∂λ = ∂L/∂(λ/0.1) / 0.1: the gradient in the ptwt map's λ
            return _flat(param.grad / DEEPINV_THS), x.detach()

        return run

    def deepinv(self) -> list[Spec]:
        cfg, b = self.cfg, self.cfg.backward_iters
        lib, req = _library("deepinv"), ("deepinv", "ptwt")
        return [
            Spec(
                f"deepinv DEQ (FP {b})",
                lib,
                "ptwt",
                "ift",
                req,
                lambda: self._deepinv(jacobian_free=False, max_backward=b, thres=0.0),
            ),
            Spec(
                "deepinv Jacobian-free",
                lib,
                "ptwt",
                "one-step",
                req,
                lambda: self._deepinv(jacobian_free=True, max_backward=b, thres=0.0),
            ),
            Spec(
                f"deepinv DEQ (FP→{cfg.solve_tol:.0e})",
                lib,
                "ptwt",
                "ift",
                req,
                lambda: self._deepinv(
                    jacobian_free=False, max_backward=TOL_CAP * b, thres=cfg.solve_tol
                ),
                cap=TOL_CAP * b,
                once=True,
            ),
        ]

    def check_deepinv_map(self, steps: int = 3) -> None:
        """deepinv's PGD iterates against :class:`PtwtFB`'s, with λ/0.1 and with λ as given.

        Raises :class:`RetuneError` when even λ/0.1 does not reproduce the map (a deepinv
        whose prox changed): timing it would compare another problem.
        """
        from deepinv.optim import optim_builder
        from deepinv.optim.data_fidelity import L2
        from deepinv.optim.prior import WaveletPrior
        from deepinv.physics import Denoising

        f32 = torch.float32
        step, lam, x, _ = self.problem("ptwt", f32)
        with torch.no_grad():
            for _ in range(steps):
                x = step(x, lam)
            for name, value in (("lambda/0.1", self.lam / DEEPINV_THS), ("lambda", self.lam)):
                model = optim_builder(
                    "PGD",
                    prior=WaveletPrior(level=LEVELS, wv=WAVELET, p=1, device=self.device),
                    data_fidelity=L2(),
                    max_iter=steps,
                    params_algo={"stepsize": self.gamma, "lambda": value},
                ).to(self.device)
                out = model(self.y[f32], Denoising(device=self.device))
                self.checks[f"deepinv_vs_ptwt_map_{steps}_steps_{name}"] = _rel(out, x)
        if self.checks[f"deepinv_vs_ptwt_map_{steps}_steps_lambda/0.1"] > AGREE_RTOL:
            raise RetuneError(
                "deepinv's PGD with WaveletPrior does not iterate the ptwt map even with "
                "lambda/0.1: its prox has changed; check deepinv's version before timing it."
            )

    # -- torchdeq ---------------------------------------------------------------------------

    def _torchdeq(self, name: str, *, ift: bool, b_max: int, b_tol: float) -> Call:
        from torchdeq import get_deq

        options = dict(
            f_solver="fixed_point_iter",
            f_max_iter=self.cfg.steps,
            b_solver="fixed_point_iter",
            b_max_iter=b_max,
            f_tol=0.0,  # torchdeq's tolerances are absolute: 0 runs the counts given
            b_tol=b_tol,
            b_stop_mode="rel" if b_tol > 0 else "abs",
        )
        deq = get_deq(**options, ift=True) if ift else get_deq(**options, grad=1)
        step, theta, z0, loss = self.problem(name, torch.float32)
        return torchdeq_gradient(deq, self.counter.wrap(step), theta, z0, loss)

    def torchdeq(self) -> list[Spec]:
        cfg, b = self.cfg, self.cfg.backward_iters
        lib, tol = _library("torchdeq"), cfg.solve_tol
        specs = []
        for name, req, suffix in (
            ("ptwt", ("torchdeq", "ptwt"), ""),
            ("ours", ("torchdeq",), ", our map"),
        ):
            specs += [
                Spec(
                    f"torchdeq IFT (FP {b}){suffix}",
                    lib,
                    name,
                    "ift",
                    req,
                    lambda p=name: self._torchdeq(p, ift=True, b_max=b, b_tol=0.0),
                ),
                Spec(
                    f"torchdeq 1-step{suffix}",
                    lib,
                    name,
                    "one-step",
                    req,
                    lambda p=name: self._torchdeq(p, ift=False, b_max=b, b_tol=0.0),
                ),
                Spec(
                    f"torchdeq IFT (FP→{tol:.0e}){suffix}",
                    lib,
                    name,
                    "ift",
                    req,
                    lambda p=name: self._torchdeq(p, ift=True, b_max=TOL_CAP * b, b_tol=tol),
                    cap=TOL_CAP * b,
                    once=True,
                ),
            ]
        return specs


def krylov_products(vjps: int, restart_every: int) -> int:
    """The most GMRES products p with p + ⌈p/r⌉ + 1 ≤ vjps (a residual per cycle, one at the end).

    >>> krylov_products(50, 10), krylov_products(50, 50), krylov_products(3, 10)
    (44, 48, 1)
    """
    p = vjps
    while p > 1 and p + math.ceil(p / restart_every) + 1 > vjps:
        p -= 1
    return p


def retune_name(cfg: BenchConfig) -> str:
    return f"ours ReTune K={cfg.K} T={cfg.T}"


def deq_name(cfg: BenchConfig, *, fixed: bool = False) -> str:
    solve = f"×{cfg.backward_iters}" if fixed else f"→{cfg.solve_tol:.0e}"
    return f"ours DEQ GMRES{solve} after {cfg.steps}"


# ---------------------------------------------------------------------------------------------
# Timing, rows and targets


def time_row(spec: Spec, bench: Bench) -> dict:
    """Run one method: warm-up, timed calls, accuracy against its map's reference."""
    cfg, device = bench.cfg, bench.device
    row = dict(
        method=spec.method,
        library=spec.library,
        problem=spec.problem,
        gradient=spec.gradient,
        forward_steps=cfg.steps,
    )
    absent = missing(spec.requires)
    if absent is not None:
        print(f"  {spec.method:36s} {absent}", flush=True)
        return {**row, "status": absent}
    once = spec.once
    try:
        fn = spec.make()
        for _ in range(0 if once else cfg.warmup):
            fn()
        times, peaks = [], []
        for _ in range(1 if once else cfg.repeats):
            bench.counter.count = 0
            release_free_memory()
            (grad, out), m = measure(fn, device)
            times.append(m.seconds)
            peaks.append(m.peak_bytes)
        vjps = bench.counter.count
    except (RetuneError, RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0]
        print(f"  {spec.method:36s} failed: {first}", flush=True)
        return {**row, "status": f"failed: {type(error).__name__}: {first}"}
    ref = bench.reference(spec.problem)
    capped = spec.cap is not None and vjps - 1 >= spec.cap
    row.update(
        vjps=vjps,
        status=f"tolerance not reached in {spec.cap}" if capped else "ok",
        runs=len(times),
        seconds=statistics.median(times),
        peak_mb=statistics.median(peaks) / 2**20,
        rel_error=_rel(grad, ref.grad),
        cosine=torch.nn.functional.cosine_similarity(grad, ref.grad, dim=0).item(),
        reference=f"{spec.problem} map: DEQ float64, GMRES→{cfg.reference_tol:.0e}",
        forward_agreement=(
            float("nan") if out is None else _rel(out, bench.expected_output(spec.problem))
        ),
        load_1min=os.getloadavg()[0],
    )
    print(
        f"  {spec.method:36s} {row['seconds']:8.3f} s {row['peak_mb']:8.1f} MB  "
        f"rel.err {row['rel_error']:.2e}  vjps {vjps}  load {row['load_1min']:.1f}",
        flush=True,
    )
    return row


def _value(frame: pd.DataFrame, method: str, column: str) -> float:
    """``column`` of a row that ran (a capped "→ tolerance" row gives a lower bound)."""
    ran = frame.status.eq("ok") | frame.status.str.startswith("tolerance not reached")
    hits = frame.loc[(frame.method == method) & ran, column] if column in frame else []
    return float(hits.iloc[0]) if len(hits) else float("nan")


def targets(frame: pd.DataFrame, cfg: BenchConfig) -> pd.DataFrame:
    """The issue's targets, one row per (target, peer): the measured ratio, met or missed."""
    b, tol = cfg.backward_iters, f"{cfg.solve_tol:.0e}"
    retune, deq, deq_b = retune_name(cfg), deq_name(cfg), deq_name(cfg, fixed=True)
    rows = []

    def add(target: str, peer: str, ours: str, column: str, need: float) -> None:
        value = _value(frame, peer, column) / _value(frame, ours, column)
        result = "not measured" if math.isnan(value) else ("met" if value >= need else "missed")
        rows.append(dict(target=target, peer=peer, ratio=value, needed=need, result=result))

    for peer in ("deepinv Jacobian-free", "torchdeq 1-step"):
        add("ReTune ≥15× faster (peer time / ours)", peer, retune, "seconds", 15.0)
    add(
        "ReTune ≥2× faster, same map (peer time / ours)",
        "torchdeq 1-step, our map",
        retune,
        "seconds",
        2.0,
    )
    products = _value(frame, deq_b, "vjps") - 1  # the VJPs of the adjoint solve
    for peer in (
        f"deepinv DEQ (FP {b})",
        f"torchdeq IFT (FP {b})",
        f"torchdeq IFT (FP {b}), our map",
    ):
        target = f"DEQ more accurate at ≤{b} backward iterations (peer error / ours)"
        if products <= b:
            add(target, peer, deq_b, "rel_error", 1.0)
        else:
            rows.append(
                dict(
                    target=target,
                    peer=peer,
                    ratio=float("nan"),
                    needed=1.0,
                    result=f"not comparable: ours used {products:.0f} VJPs",
                )
            )
    for peer in (
        f"deepinv DEQ (FP→{tol})",
        f"torchdeq IFT (FP→{tol})",
        f"torchdeq IFT (FP→{tol}), our map",
    ):
        add(f"DEQ faster to {tol} relative residual (peer time / ours)", peer, deq, "seconds", 1.0)
    return pd.DataFrame(rows)


def _environment(cfg: BenchConfig, device: torch.device) -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        **asdict(cfg),
        "device_resolved": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "versions": {n: _library(n) for n in ("deepinv", "torchdeq", "ptwt")},
    }


TABLE = [
    "method",
    "problem",
    "vjps",
    "runs",
    "seconds",
    "peak_mb",
    "rel_error",
    "time_vs_retune",
    "mem_vs_retune",
    "status",
]


def run_bench(cfg: BenchConfig) -> int:
    """Run the benchmark; write ``bench.csv``, ``targets.csv`` and ``config.json`` under out."""
    validate(cfg)
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        env = _environment(cfg, device)
        print(
            f"bench: {cfg.batch}×3×{cfg.size}×{cfg.size} float32 on {device}, "
            f"{env['torch_threads']} threads, load {env['load_average_before'][0]:.2f}; "
            f"{cfg.steps} forward steps, {cfg.backward_iters} backward iterations",
            flush=True,
        )
        start = time.perf_counter()
        bench = Bench(cfg, device)
        specs = bench.ours()
        if cfg.peers:
            if missing(("deepinv", "ptwt")) is None:
                bench.check_deepinv_map()
            specs += bench.deepinv() + bench.torchdeq()
        rows = [time_row(spec, bench) for spec in specs]
        for name, ref in bench.references.items():
            rows.append(
                dict(
                    method=f"reference: DEQ float64 ({name} map)",
                    library="retune-suite",
                    problem=name,
                    gradient="deq",
                    status="reference",
                    runs=1,
                    seconds=ref.seconds,
                    rel_error=0.0,
                    reference=f"Anderson {ref.fixed_point_steps} steps to "
                    f"{cfg.fixed_point_rtol:.0e}, GMRES residual {ref.residual:.1e}",
                )
            )
        if {"ours", "ptwt"} <= bench.references.keys():
            bench.checks["fixed_point_gap_ptwt_vs_ours"] = _rel(
                bench.references["ptwt"].x_hat, bench.references["ours"].x_hat
            )
    finally:
        torch.set_num_threads(threads)
    frame = pd.DataFrame(rows)
    base = frame.method.eq(retune_name(cfg)) & frame.status.eq("ok")
    if base.any():
        frame["time_vs_retune"] = frame.seconds / frame.loc[base, "seconds"].iloc[0]
        peak = frame.loc[base, "peak_mb"].iloc[0]
        frame["mem_vs_retune"] = frame.peak_mb / peak if peak > 0 else float("nan")
    frame = frame.assign(
        device=str(device), threads=env["torch_threads"], size=cfg.size, batch=cfg.batch
    )
    goals = targets(frame, cfg)
    env.update(
        load_average_after=os.getloadavg(),
        seconds_total=time.perf_counter() - start,
        checks=bench.checks,
    )
    out = Path(cfg.out)
    write_csv_atomic(frame, out / "bench.csv")
    write_csv_atomic(goals, out / "targets.csv")
    write_json_atomic(env, out / "config.json")
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print()
        shown = [c for c in TABLE if c in frame]
        print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print()
        print(goals.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\nchecks: " + ", ".join(f"{k} = {v:.3g}" for k, v in bench.checks.items()))
    print(f"wrote {out / 'bench.csv'}, {out / 'targets.csv'} and {out / 'config.json'}")
    return 0
