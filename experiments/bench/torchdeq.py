r"""torchdeq's rows: ``get_deq`` with fixed-point solvers, IFT and one-step gradients.

``get_deq(f_solver="fixed_point_iter", f_max_iter=steps, b_solver="fixed_point_iter",
b_max_iter=backward_iters, f_tol=0, b_tol=0)`` with ``ift=True`` and with ``grad=1`` (one-step
gradient), on the ptwt map (as its users write it) and on our map (same map, same counts);
and the IFT run to ``b_tol = solve_tol`` (``b_stop_mode="rel"``).

torchdeq is imported inside the functions (this module's name does not shadow it: imports
are absolute), so the bench runs, with ``not installed`` rows, where torchdeq is missing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import TOL_CAP
from .problem import Bench, Call, Loss, Spec, flat, library

__all__ = ["specs", "torchdeq_gradient"]


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
        return flat(tuple(leaf.grad for leaf in leaves)), z.detach()

    return run


def _call(bench: Bench, name: str, *, ift: bool, b_max: int, b_tol: float) -> Call:
    from torchdeq import get_deq

    options = dict(
        f_solver="fixed_point_iter",
        f_max_iter=bench.cfg.steps,
        b_solver="fixed_point_iter",
        b_max_iter=b_max,
        f_tol=0.0,  # torchdeq's tolerances are absolute: 0 runs the counts given
        b_tol=b_tol,
        b_stop_mode="rel" if b_tol > 0 else "abs",
    )
    deq = get_deq(**options, ift=True) if ift else get_deq(**options, grad=1)
    step, theta, z0, loss = bench.problem(name, torch.float32)
    return torchdeq_gradient(deq, bench.counter.wrap(step), theta, z0, loss)


def specs(bench: Bench) -> list[Spec]:
    """torchdeq's three rows on the ptwt map, and the same three on our map."""
    cfg, b = bench.cfg, bench.cfg.backward_iters
    lib, tol = library("torchdeq"), cfg.solve_tol
    rows = []
    for name, req, suffix in (
        ("ptwt", ("torchdeq", "ptwt"), ""),
        ("ours", ("torchdeq",), ", our map"),
    ):
        rows += [
            Spec(
                f"torchdeq IFT (FP {b}){suffix}",
                lib,
                name,
                "ift",
                req,
                lambda p=name: _call(bench, p, ift=True, b_max=b, b_tol=0.0),
            ),
            Spec(
                f"torchdeq 1-step{suffix}",
                lib,
                name,
                "one-step",
                req,
                lambda p=name: _call(bench, p, ift=False, b_max=b, b_tol=0.0),
            ),
            Spec(
                f"torchdeq IFT (FP→{tol:.0e}){suffix}",
                lib,
                name,
                "ift",
                req,
                lambda p=name: _call(bench, p, ift=True, b_max=TOL_CAP * b, b_tol=tol),
                cap=TOL_CAP * b,
                once=True,
            ),
        ]
    return rows
