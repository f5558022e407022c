r"""torchdeq's rows: ``get_deq`` with fixed-point and Broyden solvers; IFT, one-step and
phantom gradients.

On the ptwt map (as its users write it) and on our map (same map, same counts):

* ``get_deq(f_solver="fixed_point_iter", f_max_iter=steps, b_solver="fixed_point_iter",
  b_max_iter=backward_iters, f_tol=0, b_tol=0)`` with ``ift=True`` (IFT) and with ``grad=1``
  (one-step gradient); and the IFT run to ``b_tol = solve_tol`` (``b_stop_mode="rel"``);
* Broyden: ``f_solver="broyden", b_solver="broyden"`` with the same counts (``steps``
  forward iterations, ``backward_iters`` backward), IFT backward;
* phantom gradient: ``grad=K, tau=1`` after a no-grad fixed-point solve of ``steps − K``
  iterations: K graph-carrying steps from x_{steps−K}, the same forward work and the same
  backward as ReTune K×T (Algorithm 1 with T − 1 restarts is exactly this), the fairest
  baseline; on our map also with the damping ``tau = 0.5`` torchdeq recommends for MDEQ
  (the K graph steps are then z ← τφ(z) + (1 − τ)z, so its output is no iterate of φ).

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
    :mod:`retune_suite.operators.hypergrad` does). The call returns (the gradient, flat, float64 on
    the
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


def _call(bench: Bench, name: str, **options) -> Call:
    """``get_deq(**options)`` on the map ``name``, tolerances 0 unless given (torchdeq's are
    absolute: 0 runs the counts given)."""
    from torchdeq import get_deq

    options = dict(options)
    options.setdefault("f_tol", 0.0)
    options.setdefault("b_tol", 0.0)
    options.setdefault("b_stop_mode", "rel" if options["b_tol"] > 0 else "abs")
    deq = get_deq(**options)
    step, theta, z0, loss = bench.problem(name, torch.float32)
    return torchdeq_gradient(deq, bench.counter.wrap(step), theta, z0, loss)


def _spec(
    bench: Bench,
    method: str,
    name: str,
    gradient: str,
    req: tuple[str, ...],
    options: dict,
    **extra,
) -> Spec:
    """One torchdeq row on the map ``name``."""
    lib = library("torchdeq")
    return Spec(method, lib, name, gradient, req, lambda: _call(bench, name, **options), **extra)


def specs(bench: Bench) -> list[Spec]:
    """torchdeq's five rows on the ptwt map, the same five on our map, and a damped phantom."""
    cfg, b, n, K = bench.cfg, bench.cfg.backward_iters, bench.cfg.steps, bench.cfg.K
    tol = cfg.solve_tol
    fp = dict(f_solver="fixed_point_iter", b_solver="fixed_point_iter", f_max_iter=n)
    broyden = dict(f_solver="broyden", b_solver="broyden", f_max_iter=n, b_max_iter=b)
    phantom = dict(f_solver="fixed_point_iter", f_max_iter=n - K, grad=K)
    rows = []
    for name, req, suffix in (
        ("ptwt", ("torchdeq", "ptwt"), ""),
        ("ours", ("torchdeq",), ", our map"),
    ):

        def row(method: str, gradient: str, options: dict, **extra) -> Spec:
            return _spec(bench, method + suffix, name, gradient, req, options, **extra)  # noqa: B023

        rows += [
            row(
                f"torchdeq IFT (FP {b})",
                "ift",
                {**fp, "ift": True, "b_max_iter": b},
                output_steps=n + 1,
            ),
            row(
                "torchdeq 1-step",
                "one-step",
                {**fp, "grad": 1, "b_max_iter": b},
                output_steps=n + 1,
            ),
            row(
                f"torchdeq IFT (FP→{tol:.0e})",
                "ift",
                {**fp, "ift": True, "b_max_iter": TOL_CAP * b, "b_tol": tol},
                cap=TOL_CAP * b,
                once=True,
                output_steps=n + 1,
            ),
            row(f"torchdeq Broyden {n} + IFT (Broyden {b})", "ift", {**broyden, "ift": True}),
            row(f"torchdeq phantom K={K} τ=1", "phantom", {**phantom, "tau": 1.0}, output_steps=n),
        ]
    damped = {**phantom, "tau": 0.5}
    rows.append(
        _spec(
            bench,
            f"torchdeq phantom K={K} τ=0.5, our map",
            "ours",
            "phantom",
            ("torchdeq",),
            damped,
        )
    )
    return rows
