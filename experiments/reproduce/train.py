r"""Algorithm 1 (ReTune) as a training loop: one (model, K, T) configuration of section 4.

Per gradient step ℓ (Algorithm 1, with the estimator chosen by name):

.. math::

    g^{[ℓ]} = \text{estimator}\big(φ_{y_B}, θ^{[ℓ]}, x_0(y_B), \mathcal{L}_B, K, T\big),
    \qquad θ^{[ℓ+1]} = \mathrm{Adam}(θ^{[ℓ]}, g^{[ℓ]})

where B is a batch of (clean, observed) training pairs, φ_{y_B} the step map built for its
observations (FB on weighted wavelet coefficients (51), or FB-PnP (53)), x_0 its start
(u₀ = DAᵀy, or Aᵀy) and 𝓛_B the mean squared error between the estimate and the clean batch.
For the wavelet models the iterate is u and the estimate x = Dᵀθ⁻¹u (section 4.1): the
estimators get ``readout=fb.estimate``, which also adds the read-out's direct θ-derivative.
With ``retune`` (the default) g is g^R of eq. (25); ``unrolled`` is g^{KT} (23); ``jfb`` (28)
and ``deq_solve`` (20) are taken at the fixed point of Φ_K computed by Anderson acceleration.
Every estimator runs through :func:`~retune_suite.operators.hypergrad.estimate` (given δ_K = ω^K
where it is
analytic, wavelet denoising): the gradient and the iterate it was taken at come from its
:class:`~retune_suite.operators.hypergrad.Estimate`, and each metrics row logs its ``certificate``
(NaN
when None: L_θ is unknown for these models and the wavelet models have a read-out),
``certificate_status`` and ``T_used``, the blocks of Φ_K behind the gradient (retune and
unrolled; NaN for jfb and deq_solve), which ``TrainSettings.T_auto`` chooses per step.

Every random draw is a function of its index: observation i uses a generator seeded by
(seed, i) and the batches of epoch e come from a permutation seeded by (seed, e). A
checkpoint (θ, Adam state, step count, the global RNG states, the metric rows so far) therefore
restarts the loop exactly where it stopped: no step is lost or repeated, and on the CPU a
resumed run ends bit for bit where an uninterrupted one does. A checkpoint also carries the
identity of its unit (:func:`unit_identity`: model, K, T, estimator, seed and the run's
configuration hash), checked before it is used, finished or not.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from retune_suite.operators import fixed_point, restart
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.hypergrad.certificate import Estimate, estimate
from retune_suite.operators.theta import Step, Theta, as_tuple, like

from ..common.io import save_torch_atomic
from ..common.metrics import psnr
from ..common.progress import progress as progress_bar
from ..common.resume import first_line

__all__ = [
    "ESTIMATORS",
    "FIGURES",
    "MODELS",
    "Data",
    "Figure",
    "Problem",
    "TrainSettings",
    "Unit",
    "batch_indices",
    "evaluate",
    "hypergradient",
    "initial_theta",
    "load_checkpoint",
    "make_data",
    "observe_pairs",
    "theta_summary",
    "train_unit",
    "unit_identity",
]

FORMAT = "retune-suite/reproduce-checkpoint-v1"
ESTIMATORS = ("retune", "unrolled", "jfb", "deq_solve")

MODELS = {
    "wavelet-B": "FB, wavelet prior θ_B (45)",
    "wavelet-BC": "FB, wavelet prior θ_BC (44)",
    "pnp-sigma-tau": "FB-PnP, θ = (σ, τ), DRUNet fixed (53)",
    "pnp-weights": "FB-PnP, θ = Λ (DRUNet weights) (53)",
}
"""The learning configurations of section 4, by name."""


@dataclass(frozen=True)
class Figure:
    """One figure of the paper: its forward model and the models learned on it."""

    task: str
    models: tuple[str, ...]
    title: str


FIGURES = {
    "fig1": Figure(
        "denoise",
        ("wavelet-B", "wavelet-BC"),
        "Fig. 1: wavelet denoising, (σ_R, σ_G, σ_B) = (0.1, 0.25, 0.5)",
    ),
    "fig2": Figure(
        "inpaint",
        ("wavelet-BC", "pnp-sigma-tau", "pnp-weights"),
        "Fig. 2: inpainting, 90% of the pixels missing, σ = 0.05",
    ),
    "fig3": Figure(
        "deblur",
        ("wavelet-BC", "pnp-sigma-tau", "pnp-weights"),
        "Fig. 3: anisotropic deblurring, uniform kernels of width 25, σ = 0.05",
    ),
}


@dataclass
class TrainSettings:
    """What Algorithm 1 needs besides the model: optimiser, batches, estimator and solves."""

    estimator: str = "retune"
    lr: float = 5e-2
    batch: int = 4
    epochs: int = 4
    seed: int = 0
    checkpoint_every: int = 25
    fixed_point_rtol: float = 1e-5
    fixed_point_max_blocks: int = 2000
    solve_tol: float = 1e-4
    solve_maxiter: int = 500
    T_auto: bool = False
    tol: float | None = None


@dataclass(frozen=True)
class Unit:
    """One training run: a model at one (K, T)."""

    model: str
    K: int
    T: int

    @property
    def label(self) -> str:
        return f"{self.model} K={self.K} T={self.T}"

    @property
    def filename(self) -> str:
        return f"{self.model}_K{self.K}_T{self.T}.pt"


@dataclass
class Data:
    """Clean images and their observations, training and test, on the run's device."""

    task: str
    forward: Any
    clean: torch.Tensor
    y: torch.Tensor
    test_clean: torch.Tensor
    test_y: torch.Tensor


def _pair_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2**63 - 1)


def observe_pairs(forward: Any, clean: torch.Tensor, seed: int) -> torch.Tensor:
    """y_i = A x̄_i + ε_i with ε_i drawn by a generator seeded by (seed, i) on x̄'s device.

    Observation i depends on (seed, i) only, not on the order of the draws, so a resumed run
    and a run on a subset of the pairs see the same y_i.
    """
    out = torch.empty_like(clean)
    for i in range(clean.shape[0]):
        generator = torch.Generator(device=clean.device).manual_seed(_pair_seed(seed, i))
        out[i : i + 1] = forward.observe(clean[i : i + 1], generator)
    return out


def make_data(
    task: str,
    train_clean: torch.Tensor,
    test_clean: torch.Tensor,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    noise: float | None = None,
) -> Data:
    """The forward model of ``task`` (section 4) and every observation, drawn once.

    ``train_clean`` and ``test_clean`` (N, 3, H, W) are moved to ``device`` and ``dtype``
    here, explicitly; the training observations use ``seed``, the test ones ``seed + 1``.
    ``noise`` replaces the paper's σ of the task (every channel), None keeps it.
    """
    from retune_suite.operators.maps.physics import make_forward_model

    H, W = train_clean.shape[-2:]
    forward = make_forward_model(
        task, 3, (H, W), device=device, dtype=dtype, seed=seed, sigma=noise
    )
    clean = train_clean.to(device=device, dtype=dtype)
    test = test_clean.to(device=device, dtype=dtype)
    return Data(
        task,
        forward,
        clean,
        observe_pairs(forward, clean, seed),
        test,
        observe_pairs(forward, test, seed + 1),
    )


@dataclass
class Problem:
    """Builds φ, x₀ and the read-out of one model for a batch of observations.

    ``denoiser`` (a DRUNet) is needed by the PnP models; ``sigma`` and ``tau`` are the fixed
    (σ, τ) of ``pnp-weights`` (the final values of ``pnp-sigma-tau`` at the same (K, T)).
    """

    model: str
    task: str
    forward: Any
    denoiser: torch.nn.Module | None = None
    sigma: float | None = None
    tau: float | None = None
    start: str = "adjoint"
    """``adjoint``: x₀ = D Aᵀy (wavelet) or Aᵀy (PnP), the paper's text after (52);
    ``observation``: u₀ = Dy, x₀ = y, as the authors' code starts (``docs/reproduce.md``)."""

    def build(
        self, y: torch.Tensor, theta: Theta | None = None
    ) -> tuple[Step, torch.Tensor, Callable | None]:
        """(step, x₀, readout) for observations y (B, C, H, W), from the one builder of the
        section-4 problems (:func:`retune_suite.operators.maps.section4.build`): x₀ = u₀ = D Aᵀy and
        the read-out
        R(u, θ) = Dᵀθ⁻¹u for the wavelet priors, x₀ = Aᵀy and no read-out for FB-PnP.

        ``theta`` (the current θ) only spares the builder its default θ⁰; the step does not
        depend on it.
        """
        problem = self.section4(y, theta)
        return problem.step, problem.x0, problem.readout

    def section4(self, y: torch.Tensor, theta: Theta | None = None) -> Any:
        """The :class:`~retune_suite.operators.maps.section4.Section4Problem` behind
        :meth:`build` (with its
        analytic δ_K = ``.delta(K)`` where there is one: wavelet denoising)."""
        from retune_suite.operators.maps import section4

        if self.model == "pnp-weights" and (self.sigma is None or self.tau is None):
            raise InvalidInputError("pnp-weights needs the (σ, τ) learned by pnp-sigma-tau.")
        fixed = {} if self.sigma is None else {"pnp_sigma": self.sigma, "pnp_tau": self.tau}
        problem = section4.build(
            self.task,
            self.model,
            y=y,
            physics=self.forward,
            theta=theta,
            denoiser=self.denoiser,
            **fixed,
        )
        if self.start == "adjoint":
            return problem
        if self.start != "observation":
            raise InvalidInputError(
                f"start {self.start!r}: choose adjoint (x₀ = D Aᵀy) or observation (u₀ = Dy)."
            )
        x0 = y.clone() if problem.fb is None else problem.fb.D.analysis(y)
        return dataclasses.replace(problem, x0=x0)


def initial_theta(
    model: str,
    *,
    log_lambda: float,
    pnp_sigma: float,
    pnp_tau: float,
    denoiser: torch.nn.Module | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Theta:
    """θ^{[0]}: (log λ, log Λ) for the wavelet models, (log σ, log τ), or the DRUNet's weights."""
    if model in ("wavelet-B", "wavelet-BC"):
        from retune_suite.operators.maps.wavelet_prior import init_theta

        return init_theta(
            model.split("-")[1], 4, 3, log_lambda=log_lambda, device=device, dtype=dtype
        )
    if model == "pnp-sigma-tau":
        from retune_suite.operators.maps.pnp import sigma_tau_theta

        return sigma_tau_theta(pnp_sigma, pnp_tau, device=device, dtype=dtype)
    if model == "pnp-weights":
        if denoiser is None:
            raise InvalidInputError("pnp-weights needs a DRUNet denoiser.")
        return tuple(p.detach().to(device=device, dtype=dtype) for p in denoiser.parameters())
    raise InvalidInputError(f"unknown model {model!r}: choose from {', '.join(MODELS)}.")


def batch_indices(step: int, n: int, batch: int, seed: int) -> torch.Tensor:
    """Indices of the pairs of gradient step ``step`` (0-based): epoch e = step // (n // batch)
    walks a permutation of the n pairs seeded by (seed, e), dropping the last partial batch."""
    per_epoch = n // batch
    if per_epoch < 1:
        raise InvalidInputError(f"{n} training pairs make no batch of {batch}: lower --batch.")
    epoch, position = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(_pair_seed(seed + 7919, epoch))
    permutation = torch.randperm(n, generator=generator)
    return permutation[position * batch : (position + 1) * batch]


def hypergradient(
    settings: TrainSettings,
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
    K: int,
    T: int,
    readout: Callable | None,
    *,
    delta: float | None = None,
) -> Estimate:
    r"""g by the estimator named in ``settings``, as an
    :class:`~retune_suite.operators.hypergrad.Estimate`:
    ``grad`` (exactly the matching function of :mod:`retune_suite.operators.hypergrad`), ``x`` the
    iterate
    it was taken at (x_{KT} for retune and unrolled, the fixed point for jfb and deq_solve),
    the certificate (None here: it needs L_θ, unknown for these models, and no read-out).

    ``delta`` is δ_K, the analytic Lipschitz constant of Φ_K when known (wavelet denoising),
    else None. T is used by retune and unrolled only. With ``settings.T_auto`` (retune only)
    T is the most blocks, T_max: blocks of Φ_K run one at a time without a graph until the
    a-posteriori distance of the next iterate to x̂, δ_K r/(1 − δ_K) with r the block
    residual (``docs/findings.md`` C, Lemma A), is at most ``settings.tol``, or T_max blocks;
    the last block is then rerun with the graph (estimate's T=1 from x_{K(T−1)}), so g is
    ``hypergrad.retune`` at the T used, and ``stats.forward.blocks`` is that T.

    ``jfb`` and ``deq_solve`` first compute the fixed point of Φ_K from x₀ with
    :func:`retune_suite.operators.fixed_point` (Anderson, ``fixed_point_rtol``,
    ``fixed_point_max_blocks``);
    its :class:`~retune_suite.operators.NotContractiveError` propagates with its residual history.
    The gradient is taken at that x̂, a fixed point to ``fixed_point_rtol`` (the inexact
    fixed point of DEQ training, and what the run's cost is measured for), and ``estimate`` is
    told so: its fixed-point check is at that tolerance, not at √eps.
    """
    name = settings.estimator
    if name not in ESTIMATORS:
        raise InvalidInputError(f"unknown estimator {name!r}: choose from {', '.join(ESTIMATORS)}.")
    if settings.T_auto:
        return _retune_auto(settings, step, theta, x0, loss, K, T, readout, delta)
    if name in ("retune", "unrolled"):
        return estimate(name, step, theta, x0, loss, K=K, T=T, delta=delta, readout=readout)
    x_star = fixed_point(
        step,
        theta,
        x0,
        K,
        method="anderson",
        rtol=settings.fixed_point_rtol,
        max_blocks=settings.fixed_point_max_blocks,
    ).x
    return estimate(
        name,
        step,
        theta,
        x0,
        loss,
        K=K,
        x_star=x_star,
        fixed_point_rtol=settings.fixed_point_rtol,  # x̂'s own tolerance: checked at it
        delta=delta,
        readout=readout,
        tol=settings.solve_tol,
        maxiter=settings.solve_maxiter,
    )


def _retune_auto(
    settings: TrainSettings,
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
    K: int,
    T_max: int,
    readout: Callable | None,
    delta: float | None,
) -> Estimate:
    """retune with T chosen per step (see :func:`hypergradient`); T_used in stats.forward."""
    if settings.estimator != "retune":
        raise InvalidInputError("T auto is for the retune estimator only.")
    if settings.tol is None or not settings.tol > 0:
        raise InvalidInputError(f"T auto needs tol > 0, got {settings.tol!r}.")
    if delta is None:
        raise InvalidInputError(
            "T auto stops on the a-posteriori distance δ_K r/(1 − δ_K), which needs the "
            "analytic δ_K of Φ_K: wavelet denoising (fig1) only."
        )
    y, T_used = x0, 1
    for t in range(1, T_max + 1):
        T_used = t
        if t == T_max:
            break
        block = restart(step, theta, y, K, 1)  # one block, no graph
        r = block.stats.residuals[0].item()
        if delta * r / (1.0 - delta) <= settings.tol:
            break
        y = block.x
    est = estimate("retune", step, theta, y, loss, K=K, T=1, delta=delta, readout=readout)
    forward = est.stats.forward
    assert forward is not None
    converged = delta * forward.residuals[-1].item() / (1.0 - delta) <= settings.tol
    stats = dataclasses.replace(
        forward,
        blocks=T_used,
        evaluations=K * T_used,
        converged=converged,
        reason="tolerance" if converged else "T_max",
    )
    return dataclasses.replace(est, stats=dataclasses.replace(est.stats, forward=stats))


def theta_summary(model: str, theta: Theta, theta0: Theta) -> dict[str, Any]:
    """Columns describing θ: σ and τ for PnP, λ_j and the range of Λ for the wavelet priors,
    ‖θ − θ⁰‖/‖θ⁰‖ for the weights; ``theta_norm`` = ‖θ‖₂ of the stored parameters."""
    leaves = [t.detach() for t in as_tuple(theta)]
    norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in leaves)))
    row: dict[str, Any] = {"theta_norm": norm, "sigma": float("nan"), "tau": float("nan")}
    if model.startswith("wavelet"):
        lam, Lam = (t.exp().double().cpu() for t in leaves)
        row["theta"] = (
            "λ=(" + ", ".join(f"{v:.3g}" for v in lam.tolist()) + ") "
            f"Λ∈[{Lam.min().item():.3g}, {Lam.max().item():.3g}]"
        )
    elif model == "pnp-sigma-tau":
        sigma, tau = leaves[0].exp().double().cpu().tolist()
        row.update(sigma=sigma, tau=tau, theta=f"σ={sigma:.4g} τ={tau:.4g}")
    else:
        start = [t.detach() for t in as_tuple(theta0)]
        change = sum(
            ((a.double() - b.double()) ** 2).sum() for a, b in zip(leaves, start, strict=True)
        )
        base = sum((b.double() ** 2).sum() for b in start)
        row["theta"] = f"‖Λ−Λ⁰‖/‖Λ⁰‖={float(torch.sqrt(change / base)):.3e}"
    return row


@dataclass
class UnitResult:
    """The end of a (model, K, T) run: final θ and its metric rows (one per gradient step)."""

    theta: Theta
    rows: list[dict[str, Any]] = field(default_factory=list)


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def unit_identity(unit: Unit, settings: TrainSettings, **extra: Any) -> dict[str, Any]:
    """What a checkpoint of ``unit`` must be: model, K, T, estimator, seed and ``extra`` (the
    run's ``config`` hash, the ``task``), written in it and checked before it is used."""
    return {
        "model": unit.model,
        "K": unit.K,
        "T": unit.T,
        "estimator": settings.estimator,
        "seed": settings.seed,
        **extra,
    }


def _identity_text(identity: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in identity.items())


def load_checkpoint(path: Path, identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint written by :func:`train_unit` (tensors on the CPU), checked to be of the
    unit ``identity`` (finished or not) when it is given.

    A checkpoint written before identities were stored is checked on its model, K and T.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InvalidInputError(
            f"cannot read the checkpoint {path} ({first_line(error)}): delete it and run the "
            "same command with --resume to recompute that configuration, or choose another "
            "--name."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InvalidInputError(
            f"{path} is not a checkpoint of retune-suite reproduce: delete it and run the same "
            "command with --resume, or choose another --name."
        )
    if identity is not None:
        saved = ckpt.get("identity") or {k: ckpt.get(k) for k in ("model", "K", "T")}
        if any(k in saved and saved[k] != v for k, v in identity.items()):
            shown = {k: saved.get(k) for k in identity}
            raise InvalidInputError(
                f"{path} is the checkpoint of another unit ({_identity_text(shown)}), not of "
                f"{_identity_text(identity)}: delete it and run the same command with --resume "
                "to recompute this unit, or choose another --name."
            )
    return ckpt


def train_unit(
    unit: Unit,
    problem: Problem,
    data: Data,
    theta0: Theta,
    settings: TrainSettings,
    lr: float,
    path: Path,
    *,
    rows: list[dict[str, Any]],
    identity: dict[str, Any] | None = None,
    on_checkpoint: Callable[[], None] = lambda: None,
    on_step: Callable[[Unit, int], None] | None = None,
    inspect: Callable[..., None] | None = None,
    progress: bool = True,
) -> UnitResult:
    r"""Algorithm 1 for one (model, K, T): Adam on θ with the hypergradient of ``settings``.

    Parameters
    ----------
    unit
        The model and (K, T).
    problem
        Builds φ, x₀ and the read-out for each batch.
    data
        Training pairs (clean, y) on the run's device.
    theta0
        θ^{[0]} (copied; the caller's tensors are not changed).
    settings, lr
        Estimator, batch, epochs, seed, checkpoint period; Adam's learning rate.
    path
        The checkpoint file. If it exists the run continues from it (the caller decides
        whether that is allowed); it is rewritten atomically every ``checkpoint_every`` steps
        and after the last one.
    rows
        Filled in place with one dict per gradient step (and replaced by the checkpoint's rows
        on resumption), so that ``on_checkpoint`` can write every run's metrics together.
    identity
        What identifies the run besides the unit (its ``config`` hash, a ``task``): written in
        the checkpoint with the unit's :func:`unit_identity`, and checked against an existing
        checkpoint before it is resumed.
    on_checkpoint
        Called after each checkpoint is written.
    on_step
        Called as ``on_step(unit, step)`` after gradient step ``step`` (1-based) and its
        checkpoint, if any; the tests interrupt a run from here.
    inspect
        Called as ``inspect(unit, step, theta, problem, loss, est)`` after the gradient of
        step ``step`` is computed and before Adam uses it (θ^{[ℓ]}, the batch's
        :class:`~retune_suite.operators.maps.section4.Section4Problem`, the training loss, the
        :class:`~retune_suite.operators.hypergrad.Estimate`); it must not change θ
        (:class:`retune_suite.experiments.reproduce.trajectory.GradientInspector`).
    progress
        Show a progress bar (:func:`retune_suite.experiments.common.progress.progress`).
    """
    device = data.clean.device
    leaves = tuple(t.detach().clone().requires_grad_(True) for t in as_tuple(theta0))
    start_leaves = tuple(t.detach().clone() for t in leaves)
    optimizer = torch.optim.Adam(leaves, lr=lr)
    n = data.clean.shape[0]
    total = settings.epochs * (n // settings.batch)
    start = 0
    ident = unit_identity(unit, settings, **(identity or {}))
    if path.exists():
        ckpt = load_checkpoint(path, ident)
        if len(ckpt["theta"]) != len(leaves):
            raise InvalidInputError(
                f"{path} holds a θ of {len(ckpt['theta'])} tensors, this unit has "
                f"{len(leaves)}: delete it and run the same command with --resume."
            )
        with torch.no_grad():
            for leaf, saved in zip(leaves, ckpt["theta"], strict=True):
                leaf.copy_(saved.to(device=device, dtype=leaf.dtype))
            start_leaves = tuple(s.to(device=device, dtype=leaf.dtype) for s in ckpt["theta0"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_states(ckpt["rng"], device)
        start = int(ckpt["step"])
        rows[:] = list(ckpt["rows"])
    else:
        rows.clear()
    theta = like(theta0, leaves)
    theta_start = like(theta0, start_leaves)

    def checkpoint(step: int) -> None:
        save_torch_atomic(
            {
                "format": FORMAT,
                "model": unit.model,
                "K": unit.K,
                "T": unit.T,
                "identity": ident,
                "step": step,
                "total": total,
                "theta": tuple(t.detach().to("cpu", copy=True) for t in leaves),
                "theta0": tuple(t.to("cpu", copy=True) for t in start_leaves),
                "optimizer": optimizer.state_dict(),
                "rng": _rng_states(device),
                "rows": list(rows),
                "problem": {"sigma": problem.sigma, "tau": problem.tau},
            },
            path,
        )
        on_checkpoint()

    bar = progress_bar(total, initial=start, desc=unit.label, enabled=progress)
    try:
        for index in range(start, total):
            idx = batch_indices(index, n, settings.batch, settings.seed).to(device)
            clean, y = data.clean[idx], data.y[idx]
            p = problem.section4(y, theta)
            step, x0 = p.step, p.x0
            delta = p.delta(unit.K)

            def loss(x: torch.Tensor, clean: torch.Tensor = clean) -> torch.Tensor:
                """mean((x − x̄)²) of the image x = R(u, θ): the inspector's form of the loss."""
                return torch.mean((x - clean) ** 2)

            started = time.perf_counter()
            # the same loss, in the wavelet domain for wavelet denoising (Section4Problem.mse)
            mse = p.mse(clean)
            est = hypergradient(
                settings, step, theta, x0, mse.loss, unit.K, unit.T, mse.readout, delta=delta
            )
            grad = est.grad
            if inspect is not None:  # not counted in the step's seconds
                inspected = time.perf_counter()
                inspect(unit, index + 1, theta, p, loss, est)
                started += time.perf_counter() - inspected
            with torch.no_grad():  # the estimate the loss saw, at the θ of this step
                seen = est.x if mse.readout is None else mse.readout(est.x, theta)
            for leaf, g in zip(leaves, as_tuple(grad), strict=True):
                leaf.grad = g.detach()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            forward = est.stats.forward
            T_used = forward.blocks if settings.estimator in ("retune", "unrolled") else None
            gnorm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in as_tuple(grad))))
            row = {
                "model": unit.model,
                "K": unit.K,
                "T": unit.T,
                "step": index + 1,
                "epoch": index // (n // settings.batch) + 1,
                "psnr": float(psnr(seen, mse.reference).mean()),
                "loss": float(mse.loss(seen)),
                "grad_norm": gnorm,
                "certificate": math.nan if est.certificate is None else est.certificate,
                "certificate_status": est.certificate_source.get("status", "none"),
                "T_used": math.nan if T_used is None or forward is None else T_used,
                **theta_summary(unit.model, theta, theta_start),
                "seconds": seconds,
            }
            rows.append(row)
            if (index + 1) % settings.checkpoint_every == 0 or index + 1 == total:
                checkpoint(index + 1)
            if bar is not None:
                bar.set_postfix(psnr=f"{row['psnr']:.2f}", loss=f"{row['loss']:.2e}")
                bar.update(1)
            if on_step is not None:
                on_step(unit, index + 1)
    finally:
        if bar is not None:
            bar.close()
    return UnitResult(theta=like(theta0, tuple(t.detach() for t in leaves)), rows=rows)


def evaluate(
    problem: Problem,
    theta: Theta,
    clean: torch.Tensor,
    y: torch.Tensor,
    K: int,
    T: int,
    batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimates x̃ = R(Φ_K^T(x₀, θ)) of the given images and their PSNR, ``batch`` at a time."""
    estimates, values = [], []
    with torch.no_grad():
        for i in range(0, clean.shape[0], batch):
            step, x0, readout = problem.build(y[i : i + batch], theta)
            u = restart(step, theta, x0, K, T).x
            x = u if readout is None else readout(u, theta)
            estimates.append(x)
            values.append(psnr(x, clean[i : i + batch]))
    return torch.cat(estimates), torch.cat(values)
