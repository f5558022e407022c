r"""Jacobians of Φ_K: dense (torch.func, small n) and matrix-free (products, power iteration).

Notation of the paper: ∂_xΦ_K(x, θ) ∈ ℝ^{n×n} (its norm at x̂ is the measured δ_K) and
∂_θΦ_K(x, θ) ∈ ℝ^{n×d}, with θ flattened to ℝ^d in the order of its leaves.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad
from torch.func import jacrev, vjp, vmap
from torch.func import jvp as _torch_jvp

from .errors import InvalidInputError
from .memory import check_dense
from .theta import Theta, as_tuple, flat, like, unflat

Block = Callable[[torch.Tensor, Theta], torch.Tensor]

_forward_mode_loaded = False


def load_forward_mode() -> None:
    """Load torch's forward-mode decompositions once per process, quietly.

    torch's first forward-mode product (``torch.func.jvp``, ``jacfwd``, ``hessian``) loads
    its jvp decompositions, which call the deprecated ``torch.jit.script`` and print a
    FutureWarning that the user cannot act on, on every run of every command. The suite calls
    this before its forward-mode products: the load happens under a filter for exactly that
    message, the user's warning filters are restored right after, nothing else is silenced.
    """
    global _forward_mode_loaded
    if not _forward_mode_loaded:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
            )
            with forward_ad.dual_level():
                forward_ad.make_dual(torch.zeros(()), torch.zeros(()))
        _forward_mode_loaded = True


def jvp(func: Callable[..., Any], primals: tuple, tangents: tuple, **kwargs: Any) -> Any:
    """:func:`torch.func.jvp` after :func:`load_forward_mode`."""
    load_forward_mode()
    return _torch_jvp(func, primals, tangents, **kwargs)


def _detached(theta: Theta) -> Theta:
    return like(theta, tuple(t.detach() for t in as_tuple(theta)))


X_ALTERNATIVE = (
    "use matrix-free products instead: hypergrad.deq_solve for the DEQ gradient, "
    "jacobians.power_norm_x for ‖∂ₓΦ_K‖₂ (a lower estimate), or give delta"
)
THETA_ALTERNATIVE = (
    "use matrix-free products instead: hypergrad.linearise(...).adjoint_theta(w) for "
    "∂_θΦ_Kᵀw, or hypergrad.estimate, which takes ‖∂_θΦ_K‖₂ by power iteration beyond its "
    "dense limits (a lower estimate)"
)


def jacobian_x(Phi: Block, x: torch.Tensor, theta: Theta) -> torch.Tensor:
    """Dense ∂_xΦ_K(x, θ) as an (n, n) matrix, n = x.numel() (torch.func.jacrev).

    Refused with :class:`~.errors.MemoryGuardError` before any work when the matrix and the
    n × n identity basis jacrev pushes through Φ_K exceed the memory limit
    (:mod:`~retune_suite.operators.memory`).
    """
    n = x.numel()
    check_dense("the dense ∂ₓΦ_K(x)", n, n, x.dtype, x.device, copies=2,
                alternative=X_ALTERNATIVE)  # fmt: skip
    th = _detached(theta)
    shape = x.shape

    def f(z: torch.Tensor) -> torch.Tensor:
        return Phi(z.reshape(shape), th).reshape(-1)

    z = x.detach().reshape(-1)
    try:
        return jacrev(f)(z)
    except (RuntimeError, NotImplementedError):  # steps that torch.func cannot transform
        return torch.autograd.functional.jacobian(f, z)


CHUNK_ENTRIES = 2**22
"""Forward-mode columns of ∂_θΦ_K are pushed ``CHUNK_ENTRIES // n`` at a time (vmap
``chunk_size``), so the activations held at once stay near 2²² entries per step whatever d is:
at 256×256 colour (n = 196608, d = 208) all d at once needed several GB per step."""

_REUSE: ContextVar[list[tuple[Any, ...]] | None] = ContextVar("jacobian_reuse", default=None)


@contextmanager
def reuse_jacobians() -> Iterator[None]:
    """Within the block, :func:`jacobian_theta` computes each dense ∂_θΦ_K once.

    A second call with the same step and K (a block of :func:`retune_suite.operators.unroll`), the
    same θ
    tensors (identity and version) and an x equal to an earlier one (``torch.equal``, bit for
    bit) returns the matrix already computed. :func:`retune_suite.bounds.verify` opens one: its
    bounds, the
    secant L_θ and the certificates need ∂_θΦ_K at x̂ and at x_{K(T−1)} several times, each
    d forward-mode passes of Φ_K (minutes at 256×256). The step must be a pure function of
    (x, θ) inside the block, as every estimator already assumes.

    Nested blocks share the outermost cache: a study that calls ``verify`` at several T with
    the same K and x̂ (``retune-suite certify``) computes ∂_θΦ_K(x̂) once. The matrices live
    until the outermost block closes (n·d·8 bytes each: 327 MB at 256×256 with d = 208).
    """
    token = _REUSE.set([] if _REUSE.get() is None else _REUSE.get())
    try:
        yield
    finally:
        _REUSE.reset(token)


def _cached(Phi: Block, x: torch.Tensor, leaves: tuple[torch.Tensor, ...]) -> list | None:
    """The open reuse cache when this call may use it, else None."""
    cache = _REUSE.get()
    step = getattr(Phi, "step", None)
    # x wrapped by torch.func (mixed_derivative's jvp carries a tangent on it) must be
    # differentiated through, never answered from the cache.
    if cache is None or step is None or torch._C._functorch.is_functorch_wrapped_tensor(x):
        return None
    return cache


def jacobian_theta(Phi: Block, x: torch.Tensor, theta: Theta) -> torch.Tensor:
    """Dense ∂_θΦ_K(x, θ) as an (n, d) matrix (forward mode, :data:`CHUNK_ENTRIES` at a time).

    Inside :func:`reuse_jacobians` a repeated call is answered from the first one. The basis
    of ℝ^d is built a chunk at a time (never the d × d identity). Refused with
    :class:`~.errors.MemoryGuardError` before any work when the matrix (twice when it is
    assembled from several chunks) exceeds the memory limit
    (:mod:`~retune_suite.operators.memory`).
    """
    leaves = tuple(t.detach() for t in as_tuple(theta))
    # x is not detached: under torch.func.jvp (mixed_derivative) that would drop its tangent.
    cache = _cached(Phi, x, leaves)
    if cache is not None:
        for step, K, ts, versions, xc, J in cache:
            if (
                step is Phi.step
                and K == getattr(Phi, "K", None)
                and len(ts) == len(leaves)
                and all(a is b for a, b in zip(ts, as_tuple(theta), strict=True))
                and versions == tuple(t._version for t in as_tuple(theta))
                and xc.shape == x.shape
                and xc.dtype == x.dtype
                and xc.device == x.device
                and torch.equal(xc, x)
            ):
                return J

    def f(v: torch.Tensor) -> torch.Tensor:
        return Phi(x, like(theta, unflat(v, leaves))).reshape(-1)

    v = flat(leaves)
    n, d = x.numel(), v.numel()
    chunk = max(1, min(d, CHUNK_ENTRIES // max(1, n)))
    check_dense("the dense ∂_θΦ_K(x)", n, d, x.dtype, x.device, copies=1 if chunk >= d else 2,
                extra=chunk * d, alternative=THETA_ALTERNATIVE)  # fmt: skip
    push = vmap(lambda t: jvp(f, (v,), (t,))[1])
    try:
        columns = [push(_basis(start, min(chunk, d - start), v)) for start in range(0, d, chunk)]
        if not columns:  # d = 0: θ has no entries
            columns = [torch.zeros(0, n, dtype=x.dtype, device=x.device)]
        J = (columns[0] if len(columns) == 1 else torch.cat(columns, dim=0)).T
    except (RuntimeError, NotImplementedError):  # steps that torch.func cannot transform
        J = torch.autograd.functional.jacobian(f, v)
    if cache is not None:
        ts = as_tuple(theta)
        cache.append((Phi.step, Phi.K, ts, tuple(t._version for t in ts), x.detach().clone(), J))
    return J


def _basis(start: int, count: int, v: torch.Tensor) -> torch.Tensor:
    """Rows start, ..., start + count − 1 of the identity of ℝ^{v.numel()}."""
    rows = torch.zeros(count, v.numel(), dtype=v.dtype, device=v.device)
    index = torch.arange(count, device=v.device)
    rows[index, start + index] = 1
    return rows


def mixed_derivative(
    Phi: Block, x: torch.Tensor, theta: Theta, direction: torch.Tensor
) -> torch.Tensor:
    r"""Directional mixed derivative d/ds ∂_θΦ_K(x + s·v, θ)|_{s=0}, an (n, d) matrix.

    Its spectral norm over ‖v‖ bounds, by the mean-value inequality on the segment, the
    Lipschitz ratio of Assumption 2 along v.
    """
    shape = x.shape

    def dtheta(z: torch.Tensor) -> torch.Tensor:
        return jacobian_theta(Phi, z.reshape(shape), theta)

    _, tangent = jvp(dtheta, (x.detach().reshape(-1),), (direction.detach().reshape(-1),))
    return tangent


def spectral_norm(matrix: torch.Tensor) -> float:
    """‖M‖₂, the largest singular value (dense SVD; refused with
    :class:`~.errors.MemoryGuardError` when the copy LAPACK works on exceeds the memory limit).
    """
    if matrix.numel() == 0:
        return 0.0
    rows, cols = matrix.shape[-2], matrix.shape[-1]
    check_dense("a dense SVD", rows, cols, matrix.dtype, matrix.device,
                alternative="take ‖M‖₂ by jacobians.power_iteration on MᵀM (matrix-free, a "
                "lower estimate)")  # fmt: skip
    return torch.linalg.matrix_norm(matrix, ord=2).item()


def power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    *,
    iterations: int = 100,
    rtol: float = 0.0,
) -> float:
    r"""The suite's one power iteration: ‖A‖₂ of a symmetric linear map A (matrix-free).

    .. math:: v_{k+1} = A v_k / ‖A v_k‖, \qquad σ_k = ‖A v_k‖ \ (‖v_k‖ = 1)

    σ_k ≤ ‖A‖₂ for every k and σ_k → |λ|_max: a **lower** estimate (for AᵀA it estimates
    ‖A‖₂², for a Hessian ‖∂ₓₓL‖₂). Stops after ``iterations`` products or when σ changes by at
    most ``rtol``·σ. Returns 0 when A v = 0. A bound that uses the result is not certified.
    """
    if iterations < 1:
        raise InvalidInputError(f"iterations must be >= 1, got {iterations}.")
    v = v0 / torch.linalg.vector_norm(v0)
    sigma = 0.0
    for _ in range(iterations):
        Av = apply(v)
        new_sigma = torch.linalg.vector_norm(Av).item()
        if new_sigma == 0.0:
            return 0.0
        v = Av / new_sigma
        if abs(new_sigma - sigma) <= rtol * new_sigma:
            return new_sigma
        sigma = new_sigma
    return sigma


def start_vector(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """v₀ ~ N(0, I) shaped like x, drawn on the generator's device (x's when none is given)
    and placed on x's device: the start of a seeded power iteration."""
    where = generator.device if generator is not None else x.device
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=where)
    return v.to(x.device)


def power_norm_x(
    Phi: Block,
    x: torch.Tensor,
    theta: Theta,
    *,
    iterations: int = 100,
    rtol: float = 1e-10,
    generator: torch.Generator | None = None,
) -> float:
    r"""Matrix-free ‖∂_xΦ_K(x, θ)‖₂ by :func:`power_iteration` on AᵀA (one JVP and one VJP a
    step). A lower estimate that increases to the norm; ``generator`` seeds the start vector.
    """
    th = _detached(theta)
    xd = x.detach()

    def f(z: torch.Tensor) -> torch.Tensor:
        return Phi(z, th)

    _, pullback = vjp(f, xd)

    def gram(v: torch.Tensor) -> torch.Tensor:
        _, Av = jvp(f, (xd,), (v,))
        return pullback(Av)[0]

    # ‖AᵀA‖ = ‖A‖²; the tolerance on σ² is twice the tolerance on σ
    return (
        power_iteration(gram, start_vector(x, generator), iterations=iterations, rtol=2 * rtol)
        ** 0.5
    )


def dot_product_gap(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
) -> float:
    r"""The suite's one adjointness (dot-product) test, relative:

    .. math:: \frac{|⟨Ax, y⟩ − ⟨x, A^\top y⟩|}{\max(‖Ax‖‖y‖,\ ‖x‖‖A^\top y‖)}

    0 up to rounding when ``adjoint`` is the adjoint of ``forward``. deepinv's
    ``LinearPhysics.adjointness_test`` returns the unnormalised gap for one random pair; this
    one is scale-free (so one tolerance per dtype serves every operator) and takes the pair
    from the caller (seeded, on any device). ``tests/test_physics.py`` checks it against
    deepinv's.
    """
    Ax, ATy = forward(x), adjoint(y)
    gap = (torch.vdot(Ax.flatten(), y.flatten()) - torch.vdot(x.flatten(), ATy.flatten())).abs()
    scale = max(
        float(Ax.norm() * y.norm()), float(x.norm() * ATy.norm()), torch.finfo(x.dtype).tiny
    )
    return float(gap) / scale
