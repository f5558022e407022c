r"""Truncated unrolled blocks Φ_K, restarts Φ_K^T, and the fixed point of Φ_K.

.. math::

    Φ_K(x, θ) = φ(\cdot, θ)^{∘K}(x)              \quad (9), (12)

    Φ_K^T(x_0, θ) = Φ_K(\cdot, θ)^{∘T}(x_0)        \quad (24)

Every iteration returns its iterate(s) plus a typed :class:`IterationStats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .errors import InvalidInputError, NotContractiveError
from .memo import block_scope
from .theta import Step, Theta, check_count, check_point, check_step_output, first_step

Block = Callable[[torch.Tensor, Theta], torch.Tensor]


@dataclass(frozen=True)
class IterationStats:
    """Statistics of one iteration of Φ_K.

    ``residuals[t]`` is ‖x_{K(t+1)} − x_{Kt}‖₂ (one per block, a CPU float tensor),
    ``blocks`` the number of Φ_K applications and ``evaluations`` the number of φ calls.
    """

    residuals: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    blocks: int = 0
    evaluations: int = 0
    converged: bool = False
    reason: str = ""


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
            x = first_step(step, x, theta)
            for _ in range(K - 1):
                # metadata only (no host synchronisation): a step must keep x's shape and dtype
                x = check_step_output(step(x, theta), x)
        return x

    block.K = K  # type: ignore[attr-defined]
    block.step = step  # type: ignore[attr-defined]  # jacobians.reuse_jacobians keys on it
    return block


def _block(step: Step, theta: Theta, x: torch.Tensor, K: int, first: bool) -> torch.Tensor:
    """Φ_K(x, θ) inline (no memo scope of its own: the caller holds one); ``first`` names a
    shape error of the very first step."""
    x = first_step(step, x, theta) if first else check_step_output(step(x, theta), x)
    for _ in range(K - 1):
        # metadata only (no host synchronisation): a step must keep x's shape and dtype
        x = check_step_output(step(x, theta), x)
    return x


def _restart_eager(
    step: Step, theta: Theta, x0: torch.Tensor, K: int, T: int, residuals: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """T blocks; residuals[t] = ‖x_{K(t+1)} − x_{Kt}‖ written in place (no list, no stack).

    The loop owns one buffer, the block difference, reused by every block (``out=``); the
    iterates are the step's own outputs (a step returns a new tensor; no user tensor is
    written). Nothing is read back to the host."""
    diff = torch.empty_like(x0)
    x_prev, x = x0, x0
    for t in range(T):
        x_prev, x = x, _block(step, theta, x, K, first=t == 0)
        torch.sub(x, x_prev, out=diff)
        torch.linalg.vector_norm(diff, out=residuals[t])
    return x, x_prev


def _restart_cuda_graph(
    step: Step, theta: Theta, x0: torch.Tensor, K: int, T: int, residuals: torch.Tensor
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
        x1 = _block(step, theta, x0, K, first=True)
        residuals[0] = torch.linalg.vector_norm(x1 - x0)
    current.wait_stream(side)
    if T == 1:
        return x1, x0
    static_in = x1.clone()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_out = _block(step, theta, static_in, K, first=False)
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


def restart(
    step: Step, theta: Theta, x0: torch.Tensor, K: int, T: int, *, cuda_graph: bool = False
) -> Restart:
    r"""T restarts of Φ_K without a graph, eq. (24): returns x_{KT} and x_{K(T−1)}.

    The loop runs under one :func:`torch.no_grad` and one memo scope (θ-only work of the step
    is done once for the whole loop, :mod:`retune_suite.operators.memo`), writes the block residuals
    into
    one preallocated device tensor and reuses one buffer for the block difference; it makes
    no host synchronisation: the residuals are copied to the host once, at the end.

    ``cuda_graph=True`` (CUDA tensors only; elsewhere the eager loop runs, there is nothing
    to capture) captures Φ_K once and replays it for blocks 2…T. The step must then be
    capturable: no host synchronisation and no CPU→GPU copies inside, and no Python side
    effects that must happen at every call (the step's Python code runs K times in block 1
    and K times at capture, not K·T times). A step that cannot be captured raises
    :class:`InvalidInputError`.

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
    check_point(x0, "x0", theta)
    if not isinstance(cuda_graph, bool):
        raise InvalidInputError(f"cuda_graph must be True or False, got {cuda_graph!r}.")
    residuals = torch.empty(T, dtype=x0.dtype, device=x0.device)
    with torch.no_grad(), block_scope():
        if cuda_graph and x0.device.type == "cuda":
            x, x_prev = _restart_cuda_graph(step, theta, x0, K, T, residuals)
        else:
            x, x_prev = _restart_eager(step, theta, x0, K, T, residuals)
    res = residuals.to("cpu", torch.float64)
    if not torch.isfinite(res).all():
        raise NotContractiveError(
            "the restarted iteration produced NaN/inf: the step is not contractive; reduce the "
            "step size (τ < 2/L) or check θ",
            res.tolist(),
        )
    stats = IterationStats(residuals=res, blocks=T, evaluations=K * T, converged=False)
    return Restart(x.detach(), x_prev.detach(), stats)


class _Anderson:
    """Type-II Anderson mixing: x⁺ = g − ΔG γ, γ = argmin ‖f − ΔF γ‖ (f = g − x)."""

    def __init__(self, memory: int):
        if memory < 1:
            raise InvalidInputError(f"Anderson memory must be >= 1, got {memory}.")
        self.memory = memory
        self.dF: list[torch.Tensor] = []
        self.dG: list[torch.Tensor] = []
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def mix(self, x: torch.Tensor, g: torch.Tensor, restart: bool) -> torch.Tensor:
        f = (g - x).reshape(-1)
        if restart:
            self.dF.clear()
            self.dG.clear()
            self.last = None
        if self.last is not None:
            self.dF.append(f - self.last[0])
            self.dG.append(g.reshape(-1) - self.last[1])
            del self.dF[: -self.memory], self.dG[: -self.memory]
        self.last = (f, g.reshape(-1))
        if not self.dF:
            return g
        F, G = torch.stack(self.dF, dim=1), torch.stack(self.dG, dim=1)
        gram = F.T @ F
        # Tikhonov term relative to the Gram matrix keeps the small solve well posed.
        reg = 1e-10 * gram.diagonal().sum() / gram.shape[0] + torch.finfo(gram.dtype).tiny
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        gamma = torch.linalg.solve(gram + reg * eye, F.T @ f)
        return (g.reshape(-1) - G @ gamma).reshape(g.shape)


def default_rtol(dtype: torch.dtype) -> float:
    """Relative residual that a fixed-point solve aims for: 64 ulps of the dtype."""
    return 64 * torch.finfo(dtype).eps


def fixed_point(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    K: int,
    *,
    rtol: float | None = None,
    max_blocks: int = 200_000,
    patience: int = 200,
    method: str = "picard",
    memory: int = 5,
) -> FixedPoint:
    r"""Fixed point x̂ = Φ_K(x̂, θ) to dtype precision.

    ``method="picard"`` iterates x ← Φ_K(x) (Theorem 1: linear rate δ_K).
    ``method="anderson"`` mixes the last ``memory`` iterates (Anderson acceleration, the
    forward solver of DEQ libraries) for slowly contracting maps such as forward-backward on
    non-strongly convex problems (inpainting, deblurring); when the residual jumps above 1e3
    times its best value the history is dropped and a Picard step taken (safeguard).

    Stops when ‖Φ_K(x) − x‖₂ ≤ rtol·‖Φ_K(x)‖₂ (rtol defaults to 64 ulps) and returns
    Φ_K(x), or when the residual reaches the rounding floor (no new minimum for ``patience``
    blocks while already below √eps·‖x‖). Raises :class:`NotContractiveError` with the residual
    history when the iteration diverges, produces NaN, stalls above the floor, or exhausts
    ``max_blocks``.
    """
    if method not in ("picard", "anderson"):
        raise InvalidInputError(f"method must be 'picard' or 'anderson', got {method!r}.")
    check_count(K, "K")
    check_point(x0, "x0", theta)
    dtype = x0.dtype
    rtol = default_rtol(dtype) if rtol is None else rtol
    floor = math.sqrt(torch.finfo(dtype).eps)
    Phi = unroll(step, K)
    history: list[float] = []
    best, since_best = math.inf, 0
    reason = ""
    mixer = _Anderson(memory) if method == "anderson" else None
    with torch.no_grad(), block_scope():
        x = x0
        for _ in range(max_blocks):
            nxt = Phi(x, theta)
            r = torch.linalg.vector_norm(nxt - x).item()
            scale = torch.linalg.vector_norm(nxt).item()
            history.append(r)
            previous, x = x, nxt
            if not math.isfinite(r):
                raise NotContractiveError(
                    "fixed-point iteration of Φ_K produced NaN/inf: the step is not "
                    "contractive; reduce the step size (τ < 2/L) or check θ",
                    history,
                )
            if r <= rtol * scale:
                reason = "tolerance"
                break
            if r < best:
                best, since_best = r, 0
            else:
                since_best += 1
            if best > 0 and r > 1e8 * best:
                raise NotContractiveError(
                    "fixed-point iteration of Φ_K diverges (residual grew by 1e8 over its "
                    "minimum): Φ_K is not a contraction; reduce the step size or increase K",
                    history,
                )
            if mixer is not None:
                x = mixer.mix(previous, nxt, restart=r > 1e3 * best)
            if since_best >= patience:
                if best <= floor * max(scale, 1e-300):
                    reason = "rounding floor"
                    break
                raise NotContractiveError(
                    f"fixed-point iteration of Φ_K stalls: no progress in {patience} blocks at "
                    f"residual {best:.3e}; Φ_K is not a contraction (Assumption 1), or it has "
                    "no unique fixed point; reduce the step size",
                    history,
                )
        else:
            raise NotContractiveError(
                f"fixed-point iteration of Φ_K did not converge in {max_blocks} blocks; "
                "δ_K is too close to 1: increase K or max_blocks, or use a better step size",
                history,
            )
    stats = IterationStats(
        residuals=torch.tensor(history, dtype=torch.float64),
        blocks=len(history),
        evaluations=K * len(history),
        converged=True,
        reason=reason,
    )
    return FixedPoint(x.detach(), stats)
