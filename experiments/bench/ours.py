r"""Our rows: ReTune (25), JFB (28), unrolled (23) and the DEQ gradient (20) by GMRES."""

from __future__ import annotations

import math

import torch
from retune_suite.operators import hypergrad, restart
from retune_suite.operators.errors import ConvergenceError

from .config import TOL_CAP, BenchConfig
from .problem import Bench, Call, Spec, flat, not_a_fixed_point_ok

__all__ = ["MEMORY_T", "deq_name", "krylov_products", "memory_name", "retune_name", "specs"]

MEMORY_T = (2, 40)
"""ReTune's restarts in the memory rows: its working set must not grow with T (Algorithm 1)."""


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
    """The method name of our ReTune row."""
    return f"ours ReTune K={cfg.K} T={cfg.T}"


def memory_name(cfg: BenchConfig, T: int) -> str:
    """The method name of a ReTune row with T restarts, timed for its working set."""
    return f"ours ReTune K={cfg.K} T={T} (memory in T)"


def deq_name(cfg: BenchConfig, *, fixed: bool = False) -> str:
    """The method name of our DEQ row: given ``backward_iters`` VJPs, or to ``solve_tol``."""
    solve = f"×{cfg.backward_iters}" if fixed else f"→{cfg.solve_tol:.0e}"
    return f"ours DEQ GMRES{solve} after {cfg.steps}"


def specs(bench: Bench) -> list[Spec]:
    """Our five rows on our map, and ReTune at T ∈ MEMORY_T (its working set against T), in
    float32, every step counted by the bench's VJP counter."""
    cfg, lib, n, b = bench.cfg, "retune-suite", bench.cfg.steps, bench.cfg.backward_iters
    step, theta, u0, loss = bench.problem("ours", torch.float32)
    step = bench.counter.wrap(step)

    def retune(T: int = cfg.T) -> Call:
        return lambda: (flat(hypergrad.retune(step, theta, u0, loss, cfg.K, T)), None)

    def jfb():
        u = restart(step, theta, u0, 1, n).x
        with not_a_fixed_point_ok():
            return flat(hypergrad.jfb(step, theta, u, loss, 1)), None

    def deq(tol: float, maxiter: int) -> Call:
        def run():
            u = restart(step, theta, u0, 1, n).x
            with not_a_fixed_point_ok():
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
            return flat(grad), None

        return run

    def deq_fixed_count() -> Call:
        """GMRES given ``b`` VJPs: p Krylov products plus the residual at each restart and
        at the end. deq_solve never returns an unconverged gradient, so an untimed probe
        finds the residual p products reach, and the timed call asks for 5% above it."""
        p = krylov_products(b, cfg.gmres_restart)
        u = restart(step, theta, u0, 1, n).x
        try:
            with not_a_fixed_point_ok():
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
        return flat(hypergrad.unrolled(step, theta, u0, loss, 1, n)), None

    return [
        Spec(retune_name(cfg), lib, "ours", "retune", (), retune),
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
    ] + [
        Spec(
            memory_name(cfg, T),
            lib,
            "ours",
            "retune",
            (),
            lambda T=T: retune(T),
            forward_steps=cfg.K * T,
        )
        for T in MEMORY_T
    ]
