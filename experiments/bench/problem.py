"""The bench's problem (both maps, float32 timed and float64 references) and what a row is."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from retune_suite.operators import fixed_point, hypergrad, restart
from retune_suite.operators.errors import MissingExtraError, require
from retune_suite.operators.maps import section4

from .config import BenchConfig
from .counting import VJPCounter
from .ptwt_map import PtwtFB

__all__ = [
    "Bench",
    "Call",
    "Loss",
    "Reference",
    "Spec",
    "flat",
    "library",
    "missing",
    "not_a_fixed_point_ok",
    "rel",
]

Loss = Callable[[torch.Tensor], torch.Tensor]
Call = Callable[[], tuple[torch.Tensor, torch.Tensor | None]]


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
    output_steps: int | None = None  # the output is φ^n(x₀) for this n (None: not an FP iterate)
    forward_steps: int | None = None  # forward steps of the row when not ``cfg.steps``


@dataclass(frozen=True)
class Reference:
    """The float64 DEQ gradient of one map, and how it was obtained."""

    grad: torch.Tensor
    x_hat: torch.Tensor  # the image of the fixed point
    x_star: torch.Tensor  # the fixed point of the map's iterate (u for ours, the image for ptwt)
    seconds: float
    fixed_point_steps: int
    residual: float


def flat(grads) -> torch.Tensor:
    """A gradient (a tensor or a tuple) as one float64 vector on the CPU."""
    grads = grads if isinstance(grads, tuple | list) else (grads,)
    return torch.cat([g.detach().reshape(-1) for g in grads]).to("cpu", torch.float64)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = a.detach().double(), b.detach().double()
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def library(name: str) -> str:
    """``"name version"`` of an installed distribution, or the bare name."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def missing(requires: tuple[str, ...]) -> str | None:
    """``None`` when every module imports, else ``"not installed: name (error)"``, the error
    naming the extra that installs the peers (``retune-suite[peers]``)."""
    for name in requires:
        try:
            require(name, "peers", "`retune-suite bench --peers`")
        except MissingExtraError as error:
            return f"not installed: {name} ({error})"
    return None


@contextlib.contextmanager
def not_a_fixed_point_ok() -> Iterator[None]:
    """JFB and DEQ are evaluated after ``steps`` steps by design: no warning about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="x_star is not a fixed point")
        yield


class Bench:
    """The denoising problem in float32 (timed) and float64 (references), both maps.

    Our map is :func:`retune_suite.operators.maps.section4.build` ("denoise", "wavelet-BC"): the
    error study's
    problem, started from the same x₀ = Dy. The float64 problem solves the float32 data
    exactly (y in float64 is the float32 y, not a new draw).
    """

    def __init__(self, cfg: BenchConfig, device: torch.device):
        from retune_suite.experiments.common.data import crops, embedded_images

        self.cfg, self.device = cfg, device
        f32, f64 = torch.float32, torch.float64
        clean = crops(embedded_images(), cfg.size, cfg.batch, cfg.seed).to(device, f32)
        ours32 = section4.build(
            "denoise", "wavelet-BC", clean=clean, seed=cfg.seed, log_lambda=cfg.log_lambda
        )
        ours64 = section4.build(
            "denoise",
            "wavelet-BC",
            clean=clean.double(),
            y=ours32.y.double(),
            seed=cfg.seed,
            log_lambda=cfg.log_lambda,
        )
        self.ours = {f32: ours32, f64: ours64}
        self.clean = {f32: clean, f64: ours64.clean}
        self.y = {f32: ours32.y, f64: ours64.y}
        self.lam = math.exp(cfg.log_lambda)
        self.omega = ours64.omega
        self.gamma = 1.0 - self.omega  # the ptwt map contracts at 1 − γ: our rate
        self.counter = VJPCounter()
        self.references: dict[str, Reference] = {}
        self.expected: dict[tuple[str, int], torch.Tensor] = {}
        self.checks: dict[str, float] = {"omega": self.omega, "gamma_ptwt": self.gamma}

    def problem(self, name: str, dtype: torch.dtype) -> tuple[Callable, object, torch.Tensor, Loss]:
        """(step, θ, x₀, loss of the iterate) of the ``ours`` or the ``ptwt`` map."""
        if name == "ours":
            p = self.ours[dtype]
            return p.step, p.theta, p.x0, p.loss
        clean = self.clean[dtype]
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
        x_hat = self.ours[f64].estimate(fp.x) if name == "ours" else fp.x
        ref = Reference(
            grad=flat(grad),
            x_hat=x_hat.detach(),
            x_star=fp.x.detach(),
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

    def expected_output(self, name: str, steps: int) -> torch.Tensor:
        """φ^steps(x₀) in float32: what a fixed-point peer returns after ``steps`` steps (a
        forward solve of ``steps − 1`` plus its graph step, or ``steps − K`` plus K)."""
        if (name, steps) not in self.expected:
            step, theta, x0, _ = self.problem(name, torch.float32)
            self.expected[name, steps] = restart(step, theta, x0, 1, steps).x
        return self.expected[name, steps]
