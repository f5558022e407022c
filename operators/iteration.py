r"""Truncated unrolled blocks Φ_K, restarts Φ_K^T, and the fixed point of Φ_K.

.. math::

    Φ_K(x, θ) = φ(\cdot, θ)^{∘K}(x)              \quad (9), (12)

    Φ_K^T(x_0, θ) = Φ_K(\cdot, θ)^{∘T}(x_0)        \quad (24)

Every iteration returns its iterate(s) plus a typed :class:`IterationStats`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .compiled import compile_backend, compile_function
from .errors import InvalidInputError, NonConvergenceWarning, NotContractiveError
from .fused_blocks import find_fused, many_blocks
from .memo import block_scope
from .theta import (
    Step,
    Theta,
    check_count,
    check_finite_norm,
    check_point,
    check_step_output,
    start_block,
)

Block = Callable[[torch.Tensor, Theta], torch.Tensor]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IterationStats:
    """Statistics of one iteration of Φ_K.

    ``residuals[t]`` is ‖x_{K(t+1)} − x_{Kt}‖₂ (one per block, a CPU float tensor),
    ``blocks`` the number of Φ_K applications and ``evaluations`` the number of φ calls.

    Per sample, along the batch axis ``batch_dim`` of x (one sample, the whole tensor, when it
    is None): ``sample_residuals[t, i]`` is the residual of sample i at block t (shape
    (blocks, N); ``residuals`` is the norm of each row), ``sample_blocks[i]`` the blocks after
    which sample i stopped (was frozen), ``sample_converged[i]`` whether it converged and
    ``sample_reasons[i]`` why it stopped ("tolerance", "rounding floor", or the failure:
    "diverged", "stalled", "NaN", "max_blocks"). ``solver`` names the forward solver.
    """

    residuals: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    blocks: int = 0
    evaluations: int = 0
    converged: bool = False
    reason: str = ""
    sample_residuals: torch.Tensor | None = None
    sample_blocks: torch.Tensor | None = None
    sample_converged: torch.Tensor | None = None
    sample_reasons: tuple[str, ...] | None = None
    batch_dim: int | None = None
    solver: str = "picard"

    def __post_init__(self) -> None:
        # A statistics object built without per-sample fields has one sample: the whole tensor.
        defaults = {
            "sample_residuals": self.residuals.reshape(-1, 1),
            "sample_blocks": torch.tensor([self.blocks], dtype=torch.int64),
            "sample_converged": torch.tensor([self.converged]),
            "sample_reasons": (self.reason,),
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)


class Restart(NamedTuple):
    """Result of :func:`restart`: x_{KT}, x_{K(T−1)} and the statistics."""

    x: torch.Tensor
    x_prev: torch.Tensor
    stats: IterationStats


class FixedPoint(NamedTuple):
    """Result of :func:`fixed_point`: x̂ with ‖Φ_K(x̂) − x̂‖ below tolerance, and statistics."""

    x: torch.Tensor
    stats: IterationStats


def unroll(step: Step, K: int) -> Block:
    r"""Φ_K: compose the elementary step K times, eq. (9)/(12).

    A step that differentiates inside (an energy gradient, see
    :func:`~retune_suite.operators.theta.start_block`) works with gradients on and off.

    Examples
    --------
    >>> import torch
    >>> Phi = unroll(lambda x, theta: theta * x + 1.0, K=2)
    >>> Phi(torch.tensor([0.0]), torch.tensor([0.5]))
    tensor([1.5000])
    """
    check_count(K, "K")

    def block(x: torch.Tensor, theta: Theta) -> torch.Tensor:
        with (
            block_scope()
        ):  # θ is fixed over the block: θ-only work once (retune_suite.operators.memo)
            x, run, th = start_block(step, x, theta)
            for _ in range(K - 1):
                # metadata only (no host synchronisation): a step must keep x's shape and dtype
                x = check_step_output(run(x, th), x)
        return x

    block.K = K  # type: ignore[attr-defined]
    block.step = step  # type: ignore[attr-defined]  # jacobians.reuse_jacobians keys on it
    return block


def unroll_blocks(
    Phi: Block, x: torch.Tensor, theta: Theta, T: int
) -> tuple[torch.Tensor, tuple[list[float], float, float]]:
    """Φ_K^T(x) with the graph (every block recorded), and what :func:`check_growth` needs:
    the block residuals, ‖x_0‖ and ‖x_{KT}‖, read on the host once, at the end."""
    start, norms = x, []
    for _ in range(T):
        nxt = Phi(x, theta)
        with torch.no_grad():
            norms.append(torch.linalg.vector_norm(nxt - x))
        x = nxt
    with torch.no_grad():
        norms += [torch.linalg.vector_norm(start), torch.linalg.vector_norm(x)]
        values = torch.stack(norms).to("cpu", torch.float64).tolist()
    return x, (values[:T], values[T], values[T + 1])


class _Blocks:
    """Φ_K without a graph, as the loops apply it (under their ``no_grad`` and memo scope).

    A step that offers fused blocks (:mod:`~.fused_blocks`) runs one block per call of its
    ``block``, whose squared residual per sample is kept in ``res_sq`` for the loop; the first
    call it declines (None) makes this object run the step itself from then on.

    The first call finds how the step is called (:func:`~.theta.start_block`: the step itself,
    or, when it differentiates inside, a wrapper with gradients on and θ detached) and every
    later call reuses that: a step that does not differentiate pays nothing.
    """

    def __init__(
        self, step: Step, theta: Theta, K: int, *, fused: bool = True, compile: str | None = None
    ):
        self.step, self.theta, self.K = step, theta, K
        self.run: Step | None = None
        self.th: Theta = theta
        self.fused = find_fused(step) if fused else None
        self.compiled: Callable | None = None
        if compile is not None:  # traced at its first call (after a declined fused block)
            self.compiled = compile_function(self._steps, compile)
        self.res_sq: torch.Tensor | None = None
        """Σ(x_K − x)² per sample of the last block when a fused block ran it, else None."""

    @property
    def uses_autograd(self) -> bool:
        return self.run is not None and self.run is not self.step

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            done = self.fused.block(x, self.theta, self.K)
            if done is not None:
                self.res_sq = done[1]
                return check_step_output(done[0], x)
            self.fused = None  # not for this iterate: the step runs from now on
        self.res_sq = None
        if self.compiled is not None and self.run is self.step:
            return check_step_output(self.compiled(x, self.th), x)
        if self.run is None:
            x, self.run, self.th = start_block(self.step, x, self.theta)
        else:
            x = check_step_output(self.run(x, self.th), x)
        run, th = self.run, self.th
        for _ in range(self.K - 1):
            # metadata only (no host synchronisation): a step must keep x's shape and dtype
            x = check_step_output(run(x, th), x)
        return x

    def _steps(self, x: torch.Tensor, theta: Theta) -> torch.Tensor:
        """Φ_K as one function of (x, θ): what ``compile`` traces (after the first block,
        which found that the step runs as it is)."""
        for _ in range(self.K):
            x = self.step(x, theta)
        return x


def _restart_eager(
    blocks: _Blocks, x0: torch.Tensor, T: int, residuals: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """T blocks; residuals[t] = ‖x_{K(t+1)} − x_{Kt}‖ written in place (no list, no stack).

    A fused step with ``blocks`` (:func:`~.fused_blocks.many_blocks`) runs all T in one call,
    which returns the per-block residuals with the two last iterates. Otherwise the loop owns
    one buffer, the block difference, reused by every block (``out=``); the iterates are the
    step's own outputs (a step returns a new tensor; no user tensor is written). Nothing is
    read back to the host."""
    many = many_blocks(blocks.fused)
    if many is not None:  # all T blocks in one call of the step's own kernel
        done = many(x0, blocks.theta, blocks.K, T)
        if done is not None:
            x, x_prev, res_sq = done
            torch.sqrt(res_sq.sum(dim=1), out=residuals[:T])
            return check_step_output(x, x0), x_prev
    diff = torch.empty_like(x0)
    x_prev, x = x0, x0
    for t in range(T):
        x_prev, x = x, blocks(x)
        if blocks.res_sq is not None:  # a fused block measured its residual in its pass
            torch.sqrt(blocks.res_sq.sum(), out=residuals[t])
            continue
        torch.sub(x, x_prev, out=diff)
        torch.linalg.vector_norm(diff, out=residuals[t])
    return x, x_prev


def _restart_cuda_graph(
    blocks: _Blocks, x0: torch.Tensor, T: int, residuals: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same T blocks with blocks 2…T replayed from one CUDA graph of Φ_K.

    Block 1 runs eagerly on a side stream (the warm-up capture needs; it also fills the
    block memo, whose θ-maps the captured block then reads in place). Block 2 is captured
    from a static input buffer and replayed T − 1 times, the static input refreshed by a
    device copy between replays: one graph launch per block instead of K·(kernels per step)
    launches, and no host synchronisation inside the loop.
    """
    current = torch.cuda.current_stream(x0.device)
    side = torch.cuda.Stream(device=x0.device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        x1 = blocks(x0)
        residuals[0] = torch.linalg.vector_norm(x1 - x0)
    current.wait_stream(side)
    if T == 1:
        return x1, x0
    if blocks.fused is not None:  # a fused block ran block 1: one kernel per block, no capture
        x_prev, x = _restart_eager(blocks, x1, T - 1, residuals[1:])
        return x, x_prev
    if blocks.uses_autograd:
        raise InvalidInputError(
            "restart(cuda_graph=True): the step differentiates inside (torch.autograd.grad), "
            "which a CUDA graph cannot capture: call restart with cuda_graph=False"
        )
    static_in = x1.clone()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_out = blocks(static_in)
    except RuntimeError as error:
        raise InvalidInputError(
            f"restart(cuda_graph=True): the step cannot be captured in a CUDA graph ({error}); "
            "a captured step must not synchronise the host (.item(), .tolist(), printing a "
            "tensor, data-dependent shapes) nor copy from CPU tensors: call restart with "
            "cuda_graph=False"
        ) from error
    diff = torch.empty_like(static_in)
    for t in range(1, T):
        graph.replay()
        torch.sub(static_out, static_in, out=diff)
        torch.linalg.vector_norm(diff, out=residuals[t])
        if t < T - 1:
            static_in.copy_(static_out)
    return static_out.clone(), static_in.clone()


GROWTH = 1e8
"""Growth that proves divergence: a block residual ‖x_{K(t+1)} − x_{Kt}‖ above ``GROWTH`` times
the smallest one before it, or an iterate ‖x_{Kt}‖ above ``GROWTH`` times the start's scale
‖x_0‖ + ‖x_K − x_0‖. Under Assumption 1 neither can happen: the residuals of a δ_K-contraction
never increase (r_{t+1} ≤ δ_K r_t), and ‖x_{Kt}‖ ≤ ‖x_0‖ + 2‖x_K − x_0‖/(1 − δ_K), below the
threshold for every δ_K < 1 − 2·10⁻⁸. A slow contraction (δ = 0.999) is far from both."""


def check_growth(
    residuals: list[float], start_scale: float, last_norm: float, what: str, hint: str = ""
) -> None:
    """Raise :class:`NotContractiveError` with the measured growth when the iterates of
    ``what`` grow without bound (:data:`GROWTH`); do nothing for a contraction."""
    best, first = math.inf, None
    for t, r in enumerate(residuals):
        if best > 0 and r > GROWTH * best:
            first = t
            break
        best = min(best, r)
    scale = start_scale + (residuals[0] if residuals else 0.0)
    grows = scale > 0 and last_norm > GROWTH * scale
    if first is None and not grows:
        return
    fix = hint or "reduce the step size (τ < 2/L) or check θ"
    if first is not None:
        low = residuals.index(best)
        rate = (residuals[first] / best) ** (1.0 / (first - low))
        measured = (
            f"the block residual grew from {best:.3e} (block {low + 1}) to "
            f"{residuals[first]:.3e} (block {first + 1}), ×{rate:.3g} per block"
        )
    else:
        measured = (
            f"‖x‖ reached {last_norm:.3e}, {last_norm / scale:.2e} times the start's scale "
            f"‖x_0‖ + ‖x_K − x_0‖ = {scale:.3e}"
        )
    raise NotContractiveError(
        f"{what} diverges: {measured}; Φ_K is not a contraction (Assumption 1): {fix}",
        residuals,
    )


def restart(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    K: int,
    T: int,
    *,
    cuda_graph: bool = False,
    compile: bool | str | None = False,
) -> Restart:
    r"""T restarts of Φ_K without a graph, eq. (24): returns x_{KT} and x_{K(T−1)}.

    The loop runs under one :func:`torch.no_grad` and one memo scope (θ-only work of the step
    is done once for the whole loop, :mod:`retune_suite.operators.memo`), writes the block
    residuals into one preallocated device tensor and reuses one buffer for the block
    difference; it makes no host synchronisation: the residuals are copied to the host once,
    at the end. A step that differentiates inside (x − τ∇ₓE(x, θ) by ``torch.autograd.grad``)
    is run with gradients on for its own use (found at its first call; steps that do not pay
    nothing, :func:`~retune_suite.operators.theta.start_block`).

    Raises :class:`NotContractiveError` when an iterate is NaN/inf or the iterates grow
    without bound (:func:`check_growth`: a block residual 1e8 times the smallest before it, or
    ‖x_{KT}‖ 1e8 times ‖x_0‖ + ‖x_K − x_0‖), with the measured growth; a contraction, however
    slow, never triggers it.

    ``cuda_graph=True`` (CUDA tensors only; elsewhere the eager loop runs, there is nothing
    to capture) captures Φ_K once and replays it for blocks 2…T. The step must then be
    capturable: no host synchronisation and no CPU→GPU copies inside, and no Python side
    effects that must happen at every call (the step's Python code runs K times in block 1
    and K times at capture, not K·T times). A step that cannot be captured raises
    :class:`InvalidInputError`. A step with fused blocks (:mod:`~.fused_blocks`) runs one
    kernel per block already: it is not captured.

    A step that offers fused blocks runs each block as one call of its ``block`` (K steps in
    one pass, its residual measured in the same pass); the iterates are those of the step.

    ``compile=True`` (inductor) or a ``torch.compile`` backend name (None: as
    ``$RETUNE_COMPILE`` says, :mod:`~.compiled`) traces Φ_K, the K steps,
    as one graph (:func:`~.compiled.compile_function`, static shapes), so the compiler can
    fuse across steps: opt-in, for a user's step in long runs (compiling costs seconds to a
    minute once per process and shape; docs/performance.md has the measurement). Not with a
    step that differentiates inside or offers fused blocks (those run as they are).

    Examples
    --------
    >>> import torch
    >>> x, x_prev, stats = restart(lambda x, th: th * x + 1.0, torch.tensor(0.5),
    ...                            torch.zeros(1), K=1, T=3)
    >>> x, x_prev, stats.blocks
    (tensor([1.7500]), tensor([1.5000]), 3)
    """
    check_count(K, "K")
    check_count(T, "T")
    check_point(x0, "x0", theta, finite=False)
    if not isinstance(cuda_graph, bool):
        raise InvalidInputError(f"cuda_graph must be True or False, got {cuda_graph!r}.")
    # T residuals, then ‖x_0‖ and ‖x_{KT}‖ (the growth check): one copy to the host
    residuals = torch.empty(T + 2, dtype=x0.dtype, device=x0.device)
    backend = compile_backend(compile) if compile is not False else None
    with torch.no_grad():
        # ‖x_0‖ serves the growth check and proves x_0 finite: one pass instead of two
        torch.linalg.vector_norm(x0, out=residuals[T])
    check_finite_norm(residuals[T], x0, "x0")
    with torch.no_grad(), block_scope():
        blocks = _Blocks(step, theta, K, compile=backend)
        if cuda_graph and x0.device.type == "cuda":
            x, x_prev = _restart_cuda_graph(blocks, x0, T, residuals)
        else:
            x, x_prev = _restart_eager(blocks, x0, T, residuals)
        torch.linalg.vector_norm(x, out=residuals[T + 1])
    values = residuals.to("cpu", torch.float64)
    res = values[:T]
    if not torch.isfinite(values).all():
        raise NotContractiveError(
            "the restarted iteration produced NaN/inf: the step is not contractive; reduce the "
            "step size (τ < 2/L) or check θ",
            res.tolist(),
        )
    x0_norm, x_norm = values[T:].tolist()
    check_growth(res.tolist(), x0_norm, x_norm, "the restarted iteration Φ_K^T")
    stats = IterationStats(residuals=res, blocks=T, evaluations=K * T, converged=False)
    return Restart(x.detach(), x_prev.detach(), stats)


def _per_sample(x: torch.Tensor, batch_dim: int | None) -> torch.Tensor:
    """x as an (N, n) matrix, one row per sample (N = 1 when ``batch_dim`` is None)."""
    if batch_dim is None:
        return x.reshape(1, -1)
    return x.movedim(batch_dim, 0).reshape(x.shape[batch_dim], -1)


def _from_samples(v: torch.Tensor, like: torch.Tensor, batch_dim: int | None) -> torch.Tensor:
    """The inverse of :func:`_per_sample`."""
    if batch_dim is None:
        return v.reshape(like.shape)
    return v.reshape(like.movedim(batch_dim, 0).shape).movedim(0, batch_dim)


def _norms(x: torch.Tensor, batch_dim: int | None) -> torch.Tensor:
    """‖x_i‖₂ of each sample, shape (N,)."""
    if batch_dim is None:
        return torch.linalg.vector_norm(x).reshape(1)
    dims = [d for d in range(x.ndim) if d != batch_dim]
    if not dims:
        return x.abs()
    return torch.linalg.vector_norm(x, dim=dims)


class _Picard:
    """x ← Φ_K(x)."""

    def __init__(self, memory: int, x: torch.Tensor, batch_dim: int | None):
        del memory, x, batch_dim

    def update(self, x: torch.Tensor, nxt: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        return nxt


class _Anderson:
    """Type-II Anderson mixing, one per sample: x⁺ = g − ΔG γ, γ = argmin ‖f − ΔF γ‖ (f = g − x,
    g = Φ_K(x)), over the last ``memory`` differences; a sample whose row of ``reset`` is set
    drops its history and takes a Picard step (safeguard)."""

    def __init__(self, memory: int, x: torch.Tensor, batch_dim: int | None):
        if memory < 1:
            raise InvalidInputError(f"Anderson memory must be >= 1, got {memory}.")
        v = _per_sample(x, batch_dim)
        N, n = v.shape
        self.memory, self.batch_dim, self.pos = memory, batch_dim, 0
        self.dF = torch.zeros(N, memory, n, dtype=x.dtype, device=x.device)
        self.dG = torch.zeros_like(self.dF)
        self.valid = torch.zeros(N, memory, dtype=torch.bool, device=x.device)
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, x: torch.Tensor, nxt: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        g = _per_sample(nxt, self.batch_dim)
        f = g - _per_sample(x, self.batch_dim)
        keep = ~reset
        self.valid &= keep[:, None]
        if self.last is not None:
            self.dF[:, self.pos] = f - self.last[0]
            self.dG[:, self.pos] = g - self.last[1]
            self.valid[:, self.pos] = keep
            self.pos = (self.pos + 1) % self.memory
        self.last = (f, g)
        if not bool(self.valid.any()):
            return nxt
        mask = self.valid.to(f.dtype)
        F = self.dF * mask[:, :, None]
        gram = F @ F.transpose(1, 2)
        diag = gram.diagonal(dim1=1, dim2=2)
        count = mask.sum(1).clamp(min=1.0)
        # Tikhonov term relative to the Gram matrix keeps the small solve well posed; an empty
        # slot gets a unit diagonal and a zero right-hand side, so its coefficient is 0.
        reg = 1e-10 * diag.sum(1) / count + torch.finfo(f.dtype).tiny
        gram = gram + torch.diag_embed(reg[:, None] * mask + (1.0 - mask))
        gamma, info = torch.linalg.solve_ex(gram, (F @ f[:, :, None]))
        gamma = torch.where((info == 0)[:, None, None], gamma, torch.zeros_like(gamma))
        mixed = g - (gamma.transpose(1, 2) @ (self.dG * mask[:, :, None])).squeeze(1)
        return _from_samples(mixed, nxt, self.batch_dim)


class _Broyden:
    r"""Limited-memory "good" Broyden on g(x) = Φ_K(x) − x = 0, one per sample.

    B ≈ (∂g)⁻¹ = −I + U Vᵀ, x⁺ = x − B g; after each block the rank-one inverse update
    B ← B + (s − By) sᵀB / sᵀBy with s = x⁺ − x, y = g⁺ − g keeps the last ``memory``
    pairs. B = −I is a Picard step; a sample whose row of ``reset`` is set drops its pairs.
    """

    REJECT = 2.0

    def __init__(self, memory: int, x: torch.Tensor, batch_dim: int | None):
        if memory < 1:
            raise InvalidInputError(f"Broyden memory must be >= 1, got {memory}.")
        v = _per_sample(x, batch_dim)
        N, n = v.shape
        self.memory, self.batch_dim, self.pos = memory, batch_dim, 0
        self.U = torch.zeros(N, n, memory, dtype=x.dtype, device=x.device)
        self.V = torch.zeros_like(self.U)
        self.valid = torch.zeros(N, memory, dtype=torch.bool, device=x.device)
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def _apply(self, w: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """B w (or Bᵀ w) for a batch of vectors w (N, n)."""
        mask = self.valid.to(w.dtype)[:, :, None]
        first, second = (self.V, self.U) if transpose else (self.U, self.V)
        coef = (second.transpose(1, 2) @ w[:, :, None]) * mask
        return -w + (first @ coef).squeeze(2)

    def update(self, x: torch.Tensor, nxt: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        xv = _per_sample(x, self.batch_dim)
        g = _per_sample(nxt, self.batch_dim) - xv
        if self.last is not None:
            # a step that multiplied the residual by more than REJECT is undone: back to the
            # last point, with a Picard step from there and no history (safeguard)
            bad = torch.linalg.vector_norm(g, dim=1) > self.REJECT * torch.linalg.vector_norm(
                self.last[1], dim=1
            )
            if bool(bad.any()):
                back = self.last[0] + self.last[1]
                reset = reset | bad
                self.valid &= ~reset[:, None]
                xv = torch.where(bad[:, None], self.last[0], xv)
                g = torch.where(bad[:, None], self.last[1], g)
                self.last = (xv, g)
                new = torch.where(bad[:, None], back, xv - self._apply(g))
                return _from_samples(new, nxt, self.batch_dim)
        self.valid &= ~reset[:, None]
        if self.last is not None:
            s, y = xv - self.last[0], g - self.last[1]
            By = self._apply(y)
            denom = (s * By).sum(1)
            ok = denom.abs() > 1e-12 * torch.linalg.vector_norm(s, dim=1) * (
                torch.linalg.vector_norm(By, dim=1)
            )
            ok &= ~reset
            safe = torch.where(ok, denom, torch.ones_like(denom))
            self.U[:, :, self.pos] = (s - By) / safe[:, None]
            self.V[:, :, self.pos] = self._apply(s, transpose=True)
            self.valid[:, self.pos] = ok
            self.pos = (self.pos + 1) % self.memory
        self.last = (xv, g)
        new = xv - self._apply(g)
        return _from_samples(new, nxt, self.batch_dim)


SOLVERS = {"picard": _Picard, "anderson": _Anderson, "broyden": _Broyden}
"""The forward solvers of :func:`fixed_point` (``method=``)."""

DEFAULT_MEMORY = {"picard": 0, "anderson": 5, "broyden": 20}

ON_NONCONVERGENCE = ("raise", "warn")


ATOL_SCALE = 1e-6
"""The default absolute tolerance of :func:`fixed_point` is ``ATOL_SCALE`` · rtol · the start's
scale: small enough to act only when x̂ is a million times smaller than the start (x̂ = 0, where
a relative test can never pass), so the defaults stop every other solve at the block where the
relative test alone stopped it (``tests/test_forward_solvers.py``)."""


def default_rtol(dtype: torch.dtype) -> float:
    """Relative residual that a fixed-point solve aims for: 64 ulps of the dtype."""
    return 64 * torch.finfo(dtype).eps


def _check_batch_dim(batch_dim: int | None, x0: torch.Tensor) -> int | None:
    if batch_dim is None:
        return None
    if isinstance(batch_dim, bool) or not isinstance(batch_dim, int):
        raise InvalidInputError(f"batch_dim must be an integer or None, got {batch_dim!r}.")
    if not -x0.ndim <= batch_dim < x0.ndim:
        raise InvalidInputError(
            f"batch_dim={batch_dim} is not an axis of x0 of shape {tuple(x0.shape)}: pass "
            "the axis along which samples are stacked, or None (the whole tensor is one sample)."
        )
    return batch_dim % x0.ndim


def fixed_point(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    K: int,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_blocks: int = 200_000,
    patience: int = 200,
    method: str = "picard",
    memory: int | None = None,
    batch_dim: int | None = None,
    on_nonconvergence: str = "raise",
) -> FixedPoint:
    r"""Fixed point x̂ = Φ_K(x̂, θ) to dtype precision.

    ``method`` is the forward solver (all evaluate Φ_K once per block):

    - ``"picard"`` iterates x ← Φ_K(x) (Theorem 1: linear rate δ_K);
    - ``"anderson"`` mixes the last ``memory`` (default 5) iterates (Anderson acceleration, the
      forward solver of DEQ libraries), for slowly contracting maps such as forward-backward
      on non-strongly convex problems (inpainting, deblurring);
    - ``"broyden"`` is limited-memory good Broyden (default ``memory`` 20) on Φ_K(x) − x = 0.

    Anderson and Broyden drop their history and take a Picard step when the residual jumps
    above 1e3 times its best value (safeguard).

    Stopping is per sample along ``batch_dim`` (None: the whole tensor is one sample): sample i
    stops when ‖Φ_K(x)_i − x_i‖₂ ≤ max(atol, rtol·‖Φ_K(x)_i‖₂) and is frozen at Φ_K(x)_i, or
    when its residual reaches the rounding floor (no new minimum for ``patience`` blocks while
    already below √eps·‖x_i‖); the solve ends when every sample has stopped. ``rtol``
    defaults to 64 ulps, ``atol`` to 64 ulps of 10⁻⁶ times the start's scale
    max(‖x0_i‖, ‖Φ_K(x0)_i‖) (:data:`ATOL_SCALE`): a fixed point at 0 converges, and any other
    stops where the relative test alone stopped it before ``atol`` existed. The solvers act on
    each sample on its own (a sample's result does not depend on the others), which assumes
    the step treats samples independently.

    Raises :class:`NotContractiveError` with the residual history when a sample diverges
    (its residual grows 1e8-fold over its minimum, or ‖x_i‖ exceeds 1e8 times the start's
    scale), produces NaN, stalls above the floor, or exhausts ``max_blocks``. With
    ``on_nonconvergence="warn"`` (the best-effort mode of DEQ libraries) it instead returns,
    for each such sample, its iterate of lowest residual, with ``stats.converged`` False and
    the reason per sample, and reports them with a :class:`NonConvergenceWarning` and on the
    ``retune_suite.operators.iteration`` logger.

    A step that differentiates inside (an energy gradient) is run with gradients on for its
    own use (:func:`~retune_suite.operators.theta.start_block`); the result carries no graph.
    A step that offers fused blocks (:mod:`~.fused_blocks`) runs each block of every solver as
    one call of its ``block``, whose per-sample residual the stopping test reuses (along
    ``batch_dim`` 0 or for the whole tensor).
    """
    if method not in SOLVERS:
        raise InvalidInputError(f"method must be one of {', '.join(SOLVERS)}, got {method!r}.")
    if on_nonconvergence not in ON_NONCONVERGENCE:
        raise InvalidInputError(
            f"on_nonconvergence must be 'raise' or 'warn', got {on_nonconvergence!r}."
        )
    check_count(K, "K")
    check_point(x0, "x0", theta)
    batch_dim = _check_batch_dim(batch_dim, x0)
    dtype = x0.dtype
    rtol = default_rtol(dtype) if rtol is None else rtol
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (isinstance(value, int | float) and value >= 0):
            raise InvalidInputError(f"{name} must be a number >= 0, got {value!r}.")
    floor = math.sqrt(torch.finfo(dtype).eps)
    memory = DEFAULT_MEMORY[method] if memory is None else memory
    warn = on_nonconvergence == "warn"
    with torch.no_grad(), block_scope():
        run = _Solve(_Blocks(step, theta, K), x0, batch_dim, SOLVERS[method](memory, x0, batch_dim))
        run.solve(rtol, atol, floor, max_blocks, patience, keep_best=warn)
    reasons = tuple(run.reasons)
    converged = torch.tensor([r in ("tolerance", "rounding floor") for r in reasons])
    history = torch.tensor(run.history, dtype=torch.float64).reshape(-1, run.N)
    blocks = history.shape[0]
    stats = IterationStats(
        residuals=torch.linalg.vector_norm(history, dim=1),
        blocks=blocks,
        evaluations=K * blocks,
        converged=bool(converged.all()),
        reason=", ".join(dict.fromkeys(reasons)),
        sample_residuals=history,
        sample_blocks=torch.tensor(run.stopped_at, dtype=torch.int64),
        sample_converged=converged,
        sample_reasons=reasons,
        batch_dim=batch_dim,
        solver=method,
    )
    failed = [i for i, ok in enumerate(converged.tolist()) if not ok]
    if failed:
        message = run.failure_message(failed, max_blocks, patience)
        if not warn:
            raise NotContractiveError(message, stats.residuals.tolist())
        text = f"fixed_point returns a best effort (on_nonconvergence='warn'): {message}"
        warnings.warn(NonConvergenceWarning(text), stacklevel=2)
        logger.warning("%s; residual history %s", text, stats.residuals.tolist()[-10:])
    return FixedPoint(run.x.detach(), stats)


_FAILURES = {
    "NaN": "produced NaN/inf: the step is not contractive; reduce the step size (τ < 2/L) or "
    "check θ",
    "diverged": "diverges (residual grew by 1e8 over its minimum, or ‖x‖ by 1e8 over the "
    "start's scale): Φ_K is not a contraction; reduce the step size or increase K",
    "stalled": "stalls: no progress in {patience} blocks at residual {best:.3e}; Φ_K is not a "
    "contraction (Assumption 1), or it has no unique fixed point; reduce the step size",
    "max_blocks": "did not converge in {max_blocks} blocks (residual {last:.3e}); δ_K is too "
    "close to 1: increase K or max_blocks, use a better step size, or "
    "method='anderson'/'broyden'",
}


class _Solve:
    """The state of one :func:`fixed_point` solve: per-sample stopping, freezing, statistics."""

    def __init__(self, blocks: _Blocks, x0: torch.Tensor, batch_dim: int | None, solver):
        self.blocks, self.batch_dim, self.solver = blocks, batch_dim, solver
        self.x = x0
        self.N = 1 if batch_dim is None else x0.shape[batch_dim]
        self.history: list[float] = []  # (blocks × N), row-major
        self.reasons = [""] * self.N
        self.stopped_at = [0] * self.N
        self.best = [math.inf] * self.N

    def _mask(self, rows: list[bool]) -> torch.Tensor:
        """A per-sample mask that broadcasts against x along ``batch_dim``."""
        mask = torch.tensor(rows, device=self.x.device)
        if self.batch_dim is None:
            return mask.reshape([1] * self.x.ndim)
        shape = [1] * self.x.ndim
        shape[self.batch_dim] = self.N
        return mask.reshape(shape)

    def solve(
        self,
        rtol: float,
        atol: float | None,
        floor: float,
        max_blocks: int,
        patience: int,
        keep_best: bool,
    ) -> None:
        if self.N == 1:
            self._solve_one(rtol, atol, floor, max_blocks, patience, keep_best)
            return
        N, bd = self.N, self.batch_dim
        active = [True] * N
        since = [0] * N
        start = _norms(self.x, bd)
        start_scale: list[float] = []
        growth_scale: list[float] = []
        x_best = self.x if keep_best else None
        for block in range(max_blocks):
            nxt = self.blocks(self.x)
            res_sq = self.blocks.res_sq
            step_norms = (
                res_sq.sqrt() if res_sq is not None and bd == 0 else _norms(nxt - self.x, bd)
            )
            values = torch.stack([step_norms, _norms(nxt, bd)])
            if block == 0:
                values = torch.cat([values, start.reshape(1, -1)])
            host = values.to("cpu", torch.float64).tolist()
            r, scale = host[0], host[1]
            if block == 0:
                start_scale = [max(a, b) for a, b in zip(host[2], scale, strict=True)]
                growth_scale = [a + b for a, b in zip(host[2], r, strict=True)]
            self.history.extend(r)
            take_next, take_best = [False] * N, [False] * N
            reset, improved = [False] * N, [False] * N
            for i in range(N):
                if not active[i]:
                    continue
                ri, si = r[i], scale[i]
                floor_i = ATOL_SCALE * rtol * start_scale[i]
                tol = max(floor_i if atol is None else atol, rtol * si)
                reason = ""
                if not math.isfinite(ri) or not math.isfinite(si):
                    reason = "NaN"
                elif ri <= tol:
                    reason = "tolerance"
                else:
                    if ri < self.best[i]:
                        self.best[i], since[i], improved[i] = ri, 0, True
                    else:
                        since[i] += 1
                    if (self.best[i] > 0 and ri > GROWTH * self.best[i]) or (
                        growth_scale[i] > 0 and si > GROWTH * growth_scale[i]
                    ):
                        reason = "diverged"
                    elif since[i] >= patience:
                        stalled_low = self.best[i] <= floor * max(si, 1e-300)
                        reason = "rounding floor" if stalled_low else "stalled"
                    reset[i] = ri > 1e3 * self.best[i]
                if reason:
                    active[i] = False
                    self.reasons[i], self.stopped_at[i] = reason, block + 1
                    if reason in ("tolerance", "rounding floor") or not keep_best:
                        take_next[i] = True
                    else:
                        take_best[i] = True
            if keep_best and any(improved):
                x_best = nxt if N == 1 else torch.where(self._mask(improved), nxt, x_best)
            if not keep_best and any(
                self.reasons[i] not in ("", "tolerance", "rounding floor") for i in range(N)
            ):
                self.x = nxt
                return
            if not any(active):
                if N == 1:
                    self.x = nxt if take_next[0] else x_best  # type: ignore[assignment]
                else:
                    self.x = self._compose(nxt, x_best, take_next, take_best)
                return
            mixed = (
                nxt
                if isinstance(self.solver, _Picard)
                else self.solver.update(self.x, nxt, torch.tensor(reset, device=self.x.device))
            )
            if N == 1:
                self.x = mixed
            else:
                self.x = self._compose(nxt, x_best, take_next, take_best, mixed, active)
        for i in range(N):
            if active[i]:
                self.reasons[i], self.stopped_at[i] = "max_blocks", max_blocks
        if keep_best and x_best is not None:
            self.x = (
                x_best
                if N == 1
                else torch.where(self._mask([self.reasons[i] == "max_blocks" for i in range(N)]),
                                 x_best, self.x)
            )  # fmt: skip

    def _solve_one(
        self,
        rtol: float,
        atol: float | None,
        floor: float,
        max_blocks: int,
        patience: int,
        keep_best: bool,
    ) -> None:
        """:meth:`solve` for one sample (the whole tensor): the same tests on scalars."""
        x = self.x
        picard = isinstance(self.solver, _Picard)
        best, since = math.inf, 0
        x_best = x
        start = torch.linalg.vector_norm(x)
        tol = growth = 0.0
        norm = torch.linalg.vector_norm
        for block in range(max_blocks):
            nxt = self.blocks(x)
            res_sq = self.blocks.res_sq
            step_norm = norm(nxt - x) if res_sq is None else res_sq.sum().sqrt()
            if block == 0:
                r, scale, s0 = torch.stack([step_norm, norm(nxt), start]).tolist()
                tol = ATOL_SCALE * rtol * max(s0, scale) if atol is None else atol
                growth = s0 + r
            else:
                r, scale = torch.stack([step_norm, norm(nxt)]).tolist()
            self.history.append(r)
            reason = ""
            if not math.isfinite(r) or not math.isfinite(scale):
                reason = "NaN"
            elif r <= tol or r <= rtol * scale:
                reason = "tolerance"
            else:
                if r < best:
                    best, since = r, 0
                    if keep_best:
                        x_best = nxt
                else:
                    since += 1
                if (best > 0 and r > GROWTH * best) or (growth > 0 and scale > GROWTH * growth):
                    reason = "diverged"
                elif since >= patience:
                    reason = "rounding floor" if best <= floor * max(scale, 1e-300) else "stalled"
            if reason:
                self.reasons[0], self.stopped_at[0], self.best[0] = reason, block + 1, best
                converged = reason in ("tolerance", "rounding floor")
                self.x = nxt if converged or not keep_best else x_best
                return
            if picard:
                x = nxt
            else:
                reset = torch.tensor([r > 1e3 * best], device=x.device)
                x = self.solver.update(x, nxt, reset)
        self.reasons[0], self.stopped_at[0], self.best[0] = "max_blocks", max_blocks, best
        self.x = x_best if keep_best else x

    def _compose(
        self,
        nxt: torch.Tensor,
        x_best: torch.Tensor | None,
        take_next: list[bool],
        take_best: list[bool],
        mixed: torch.Tensor | None = None,
        active: list[bool] | None = None,
    ) -> torch.Tensor:
        """x after a block: Φ_K(x) for samples that just converged, the best iterate for those
        that just failed (best effort), the solver's update for active ones, else unchanged."""
        x = self.x
        if mixed is not None and active is not None and any(active):
            x = torch.where(self._mask(active), mixed, x)
        if any(take_next):
            x = torch.where(self._mask(take_next), nxt, x)
        if any(take_best) and x_best is not None:
            x = torch.where(self._mask(take_best), x_best, x)
        return x

    def failure_message(self, failed: list[int], max_blocks: int, patience: int) -> str:
        parts = []
        for i in failed:
            at = self.stopped_at[i] - 1
            last = self.history[at * self.N + i] if at >= 0 else 0.0
            text = _FAILURES[self.reasons[i]].format(
                patience=patience, best=self.best[i], max_blocks=max_blocks, last=last
            )
            where = "" if self.batch_dim is None else f" (sample {i} along batch_dim)"
            parts.append(f"fixed-point iteration of Φ_K{where} {text}")
        if len(parts) > 3:
            parts = [*parts[:3], f"... and {len(parts) - 3} more samples"]
        return "; ".join(parts)
