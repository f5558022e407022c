r"""The gradients along a training run: how far ReTune's g^R is from the DEQ gradient g.

``retune-suite reproduce fig1 --inspect-every N`` calls :class:`GradientInspector` at every
N-th gradient step of Algorithm 1 (and at the first), on the batch and at the θ^{[ℓ]} of that
step, before Adam moves θ. It compares the step's own gradient (the estimator being trained
with) with the DEQ gradient g (20) at the fixed point x̂ of Φ_K, and with the unrolled g^{KT}
(23) and Jacobian-free g^JF (28) on the same batch and loss:

- ``cos_<est>`` = ⟨ĝ, g⟩/(‖ĝ‖‖g‖) and ``rel_<est>`` = ‖ĝ − g‖/‖g‖;
- ``dist_prev`` = ‖x_{K(T−1)} − x̂‖/‖x̂‖, the distance of the last block's start to x̂ (the
  point where g^R takes ∂_θΦ_K, eq. (25)); ``delta_K`` its contraction factor where analytic;
- the split of ĝ − g for ReTune (the proof of Theorem 2 bounds each term):
  ``rel_loss_term`` = ‖(∂L(x_KT) − ∂L(x̂))ᵀ∂_θΦ_K(x_{K(T−1)})‖/‖g‖,
  ``rel_jacobian_term`` = ‖∂L(x̂)ᵀ(∂_θΦ_K(x_{K(T−1)}) − ∂_θΦ_K(x̂))‖/‖g‖ and
  ``rel_readout_term`` = ‖∂_θR(x_KT, θ)ᵀ∂L − ∂_θR(x̂, θ)ᵀ∂L‖/‖g‖ (the read-out's direct
  θ-derivative at the two points; 0 without a read-out) and ``rel_jfb`` = ‖g^JF − g‖/‖g‖:
  ĝ − g is the sum of the four vectors;
- ``secant_theta`` = ‖∂L(x̂)ᵀ(∂_θΦ_K(x_{K(T−1)}) − ∂_θΦ_K(x̂))‖/(‖x_{K(T−1)} − x̂‖‖g‖):
  the measured L_θ‖∂L(x̂)‖ of Assumption 2 along that segment, relative to ‖g‖, so that
  ``rel_jacobian_term`` = ``secant_theta`` · ``dist_prev`` · ‖x̂‖;
- ``grad_norm_deq`` = ‖g‖ and ``norm_<est>`` = ‖ĝ‖. Where g = 0 (at a θ whose x̂ has every
  group of the prox inactive, ∂_θΦ_K(x̂) = 0) the relative columns and cosines are NaN.

Everything is computed in the run's dtype and device (no silent cast): the reference g is
``deq_solve`` to ``solve_tol`` (its default by dtype) at x̂ from
:func:`retune_suite.operators.fixed_point`
(``default_rtol``), so in float32 the columns are good to about 1e-4 relative, enough for
errors of order one. The inspection draws no random numbers and does not change θ, so the
training run (``metrics.csv``) is the one without it. Rows are written to ``trajectory.csv``
atomically as they are computed; a resumed run keeps the rows up to its checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from retune_suite.operators import fixed_point, hypergrad, restart, unroll
from retune_suite.operators.iteration import default_rtol
from retune_suite.operators.theta import Theta, as_tuple, like

from ..common.io import write_csv_atomic

__all__ = ["TRAJECTORY_FILE", "GradientInspector", "inspect_gradients", "trajectory_figure"]

TRAJECTORY_FILE = "trajectory.csv"


def _flat(grad: Theta) -> torch.Tensor:
    return torch.cat([g.detach().reshape(-1) for g in as_tuple(grad)])


def _compare(g_hat: torch.Tensor, g: torch.Tensor) -> tuple[float, float]:
    """(cosine, relative error) of ĝ against g; NaN where a norm is 0 (g = 0 happens: at a θ
    where every group of the prox is inactive at x̂, ∂_θΦ_K(x̂) = 0)."""
    norm, norm_hat = float(torch.linalg.vector_norm(g)), float(torch.linalg.vector_norm(g_hat))
    if norm == 0.0:
        return math.nan, math.nan
    cos = float(torch.dot(g_hat, g)) / (norm_hat * norm) if norm_hat > 0 else math.nan
    return cos, float(torch.linalg.vector_norm(g_hat - g)) / norm


@dataclass
class GradientInspector:
    """Called by :func:`~retune_suite.experiments.reproduce.train.train_unit` as
    ``inspector(unit, step, theta, problem, loss, est)`` after each gradient is computed and
    before the optimiser step; writes one row of ``trajectory.csv`` every ``every`` steps.

    ``problem`` is the step's :class:`retune_suite.operators.maps.section4.Section4Problem`,
    ``loss`` the
    training loss of the read-out image, ``est`` the
    :class:`~retune_suite.operators.hypergrad.Estimate`
    the step trains with.
    """

    every: int
    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.path.exists():
            self.rows = pd.read_csv(self.path).to_dict("records")

    def resume(self, unit: Any, start: int) -> None:
        """Drop the rows of ``unit`` after ``start`` (its checkpoint): they are recomputed."""
        self.rows = [
            r
            for r in self.rows
            if (r["model"], r["K"], r["T"]) != (unit.model, unit.K, unit.T) or r["step"] <= start
        ]

    def due(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def __call__(
        self, unit: Any, step: int, theta: Theta, problem: Any, loss: Any, est: Any
    ) -> None:
        if not self.due(step):
            return
        row = {"model": unit.model, "K": unit.K, "T": unit.T, "step": step}
        row.update(
            inspect_gradients(
                problem, theta, loss, est.grad, unit.K, unit.T, readout=problem.readout
            )
        )
        self.rows.append(row)
        write_csv_atomic(pd.DataFrame(self.rows), self.path)


def inspect_gradients(
    problem: Any, theta: Theta, loss: Any, g_step: Theta, K: int, T: int, *, readout: Any
) -> dict[str, float]:
    """The columns of one ``trajectory.csv`` row (see the module docstring).

    ``loss`` is of the image R(u, θ) with ``readout`` R (training: ``problem.readout``), or of
    the iterate with ``readout=None`` (the error study's loss); ``g_step`` was computed with
    the same pair."""
    p = problem
    step, x0 = p.step, p.x0
    dtype = x0.dtype
    theta = like(theta, tuple(t.detach() for t in as_tuple(theta)))
    x_star = fixed_point(step, theta, x0, K=K, rtol=default_rtol(dtype)).x
    lin = hypergrad.linearise(step, theta, x_star, K)
    g = _flat(hypergrad.deq_solve(step, theta, x_star, loss, K=K, lin=lin, readout=readout))
    g_jfb = _flat(hypergrad.jfb(step, theta, x_star, loss, K=K, lin=lin, readout=readout))
    g_unrolled = _flat(hypergrad.unrolled(step, theta, x0, loss, K=K, T=T, readout=readout))
    g_hat = _flat(g_step)
    run = restart(step, theta, x0, K, T)
    norm_g = float(torch.linalg.vector_norm(g))
    relative = (lambda v: v / norm_g) if norm_g > 0 else (lambda v: math.nan)
    norm_star = float(torch.linalg.vector_norm(x_star))
    dist_prev = float(torch.linalg.vector_norm(run.x_prev - x_star))
    dist_KT = float(torch.linalg.vector_norm(run.x - x_star))
    # ReTune's error split as in the proof of Theorem 2: g^R − g = (loss term) + (Jacobian
    # term) + (g^JF − g), with ∂L including the read-out (its direct θ-term is in g^JF, g^R)
    objective = loss if readout is None else (lambda u: loss(readout(u, theta)))
    G_KT = hypergrad.loss_gradient(objective, run.x)
    G_star = hypergrad.loss_gradient(objective, x_star)
    loss_term = _vjp_theta(step, theta, run.x_prev, K, G_KT - G_star)
    jacobian_term = _vjp_theta(step, theta, run.x_prev, K, G_star) - _flat(
        lin.adjoint_theta(G_star)
    )
    readout_term = _direct(loss, readout, theta, run.x) - _direct(loss, readout, theta, x_star)
    cos_r, rel_r = _compare(g_hat, g)
    cos_u, rel_u = _compare(g_unrolled, g)
    cos_j, rel_j = _compare(g_jfb, g)
    delta = p.delta(K)
    jac = float(torch.linalg.vector_norm(jacobian_term))
    norms = {
        f"norm_{name}": float(torch.linalg.vector_norm(v))
        for name, v in (("step", g_hat), ("unrolled", g_unrolled), ("jfb", g_jfb))
    }
    return {
        "cos_step": cos_r,
        "rel_step": rel_r,
        "cos_unrolled": cos_u,
        "rel_unrolled": rel_u,
        "cos_jfb": cos_j,
        "rel_jfb": rel_j,
        "rel_loss_term": relative(float(torch.linalg.vector_norm(loss_term))),
        "rel_jacobian_term": relative(jac),
        "rel_readout_term": relative(float(torch.linalg.vector_norm(readout_term))),
        "secant_theta": relative(jac / dist_prev) if dist_prev > 0 else math.nan,
        "dist_prev": dist_prev / norm_star,
        "dist_KT": dist_KT / norm_star,
        "delta_K": math.nan if delta is None else delta,
        "grad_norm_deq": norm_g,
        **norms,
        "dtype": str(dtype).removeprefix("torch."),
    }


def _vjp_theta(step: Any, theta: Theta, x: torch.Tensor, K: int, v: torch.Tensor) -> torch.Tensor:
    """vᵀ∂_θΦ_K(x, θ), flattened."""
    block = unroll(step, K)
    return _theta_gradient(theta, lambda th: torch.sum(block(x.detach(), th) * v))


def _direct(loss: Any, readout: Any, theta: Theta, u: torch.Tensor) -> torch.Tensor:
    """∂_θ L(R(u, θ)) at fixed u, flattened (zeros without a read-out)."""
    if readout is None:
        return torch.cat([torch.zeros_like(t).reshape(-1) for t in as_tuple(theta)])
    return _theta_gradient(theta, lambda th: loss(readout(u.detach(), th)))


def _theta_gradient(theta: Theta, value: Any) -> torch.Tensor:
    """∂_θ value(θ), flattened, zeros where θ does not enter."""
    leaves = tuple(t.detach().requires_grad_(True) for t in as_tuple(theta))
    with torch.enable_grad():
        grads = torch.autograd.grad(value(like(theta, leaves)), leaves, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(t) if gr is None else gr).reshape(-1)
            for t, gr in zip(leaves, grads, strict=True)
        ]
    )


def trajectory_figure(rows: pd.DataFrame, base: Path) -> list[Path]:
    """Cosine and relative error to g along the run, one line per (model, K, T) and
    estimator; ``base.pdf`` and ``base.png`` beside ``trajectory.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..common.io import save_figure

    fig, (ax_cos, ax_rel) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"step": "-", "unrolled": "--", "jfb": ":"}
    for i, ((model, K, T), g) in enumerate(rows.groupby(["model", "K", "T"], sort=False)):
        color = plt.cm.tab10(i % 10)
        for name, style in styles.items():
            label = f"{model} K={K} T={T}: {'trained (g^R)' if name == 'step' else name}"
            ax_cos.plot(g.step, g[f"cos_{name}"], style, color=color, label=label)
            ax_rel.semilogy(g.step, g[f"rel_{name}"], style, color=color)
    ax_cos.axhline(0.0, color="grey", lw=0.6)
    ax_cos.set(xlabel="gradient step", ylabel="cosine to the DEQ gradient g", ylim=(-1.05, 1.05))
    ax_rel.axhline(1.0, color="grey", lw=0.6)
    ax_rel.set(xlabel="gradient step", ylabel="‖ĝ − g‖ / ‖g‖")
    ax_cos.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    paths = save_figure(fig, base)
    plt.close(fig)
    return paths


def split_over_T(
    task: str,
    prior: str,
    *,
    size: int = 256,
    batch: int = 4,
    K: int = 10,
    Ts: tuple[int, ...] = (1, 2, 5, 8, 10, 12, 15, 20, 30),
    log_lambda: float = -2.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> pd.DataFrame:
    """The columns of :func:`inspect_gradients` for ReTune at one θ over T: the error study's
    problem (``retune-suite errors``: the same crops, θ⁰ with λ_j = e^``log_lambda``, Λ = 1,
    and its loss ½‖Dᵀθ₀⁻¹u − x̄‖² on the iterate, no read-out), on the CPU in ``dtype``."""
    from retune_suite.operators.maps import section4

    from ..common.data import crops, embedded_images

    clean = crops(embedded_images(), size, batch, seed).to(dtype)
    p = section4.build(task, prior, clean=clean, seed=seed, log_lambda=log_lambda)
    rows = []
    for T in Ts:
        g_r = hypergrad.retune(p.step, p.theta, p.x0, p.loss, K=K, T=T)
        split = inspect_gradients(p, p.theta, p.loss, g_r, K, T, readout=None)
        rows.append({"K": K, "T": T, **split})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.reproduce.trajectory --out FILE.csv [--log-lambda -2] ...``:
    :func:`split_over_T` written to ``--out`` (atomically) and printed."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m retune_suite.experiments.reproduce.trajectory",
        description=split_over_T.__doc__,
    )
    parser.add_argument("--task", default="denoise")
    parser.add_argument("--prior", default="wavelet-BC")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--T", default="1,2,5,8,10,12,15,20,30", help="T values, e.g. 5,10,20")
    parser.add_argument("--log-lambda", type=float, default=-2.0)
    parser.add_argument("--out", required=True, help="CSV file to write")
    args = parser.parse_args(argv)
    Ts = tuple(int(t) for t in args.T.split(","))
    frame = split_over_T(
        args.task,
        args.prior,
        size=args.size,
        batch=args.batch,
        K=args.K,
        Ts=Ts,
        log_lambda=args.log_lambda,
    )
    write_csv_atomic(frame, Path(args.out))
    columns = ["T", "cos_step", "rel_step", "rel_loss_term", "rel_jacobian_term", "rel_jfb"]
    print(frame[[*columns, "secant_theta", "dist_prev", "delta_K"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
