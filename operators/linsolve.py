r"""Restarted GMRES in torch, for the adjoint equation (I − ∂_xΦ_Kᵀ) w = ∇L(x̂) of eq. (20).

Written here rather than taken from SciPy because the solve must stay on the tensors' device
(CUDA included) and use only matrix-free products; ``tests/test_linsolve.py`` checks it
against :func:`scipy.sparse.linalg.gmres` (CPU, float64 and complex128, one system and a batch
of independent systems).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .errors import ConvergenceError, InvalidInputError


@dataclass(frozen=True)
class SolveInfo:
    """What a solve did: true relative residuals ‖b − Mw‖/‖b‖ (at the start and at the end of
    every restart cycle; for a batch, the largest over its systems), GMRES's own per-product
    estimates (largest over the systems), and the number of products with M (Krylov products
    plus one per true residual; ``maxiter`` counts Krylov products only; one product is one
    call of ``matvec``, on the whole batch). ``system_residuals[s]`` is system s's history of
    true relative residuals (one list, the same as ``residuals``, for a 1-D ``b``)."""

    residuals: list[float]
    estimates: list[float]
    products: int
    system_residuals: list[list[float]] = field(default_factory=list)


def gmres(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    tol: float = 1e-10,
    restart: int = 50,
    maxiter: int = 1000,
) -> tuple[torch.Tensor, SolveInfo]:
    r"""Solve M w = b for a matrix-free M to a true ‖b − Mw‖ ≤ tol‖b‖.

    ``b`` is one right-hand side (shape (n,)) or a batch of independent systems (shape
    (S, n): ``matvec`` maps an (S, n) tensor to (M_s v_s)_s, each row by its own matrix;
    every system gets its own Krylov basis, least-squares problem and stopping test, and the
    solve ends when all have converged). Real and complex dtypes: inner products conjugate
    their first argument (⟨u, v⟩ = Σ ū v, in the Arnoldi step too), so a complex M is solved
    as such, not as a real one of twice the size.

    Returns the solution and a :class:`SolveInfo`. Convergence is declared only on the true
    residual, computed with one extra product at the end of each cycle (the least-squares
    estimate inside a cycle decides only when a cycle ends). Raises :class:`ConvergenceError`
    with the true residual history when ``maxiter`` products do not reach ``tol``, and
    :class:`InvalidInputError` for a ``b`` that is not 1-D or 2-D or not floating/complex.
    """
    if not isinstance(b, torch.Tensor) or b.ndim not in (1, 2):
        raise InvalidInputError(
            "gmres solves M w = b for b of shape (n,) or a batch of independent systems of "
            f"shape (S, n); got {getattr(b, 'shape', type(b).__name__)}: flatten each "
            "right-hand side to a row."
        )
    if not (b.is_floating_point() or b.is_complex()):
        raise InvalidInputError(f"gmres needs a floating or complex b, got {b.dtype}.")
    batched = b.ndim == 2
    B = b if batched else b.unsqueeze(0)

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = matvec(v) if batched else matvec(v[0]).unsqueeze(0)
        if out.shape != v.shape:
            raise InvalidInputError(
                f"matvec returned shape {tuple(out.shape)} for an input of shape "
                f"{tuple(v.shape if batched else v[0].shape)}: it must keep the shape."
            )
        return out

    x, info = _gmres(apply, B, tol, restart, maxiter)
    return (x if batched else x[0]), info


def _gmres(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    tol: float,
    restart: int,
    maxiter: int,
) -> tuple[torch.Tensor, SolveInfo]:
    """GMRES on the rows of b (S, n), each its own system."""
    S = b.shape[0]
    real = b.real.dtype if b.is_complex() else b.dtype
    tiny = torch.finfo(real).tiny
    bnorm = torch.linalg.vector_norm(b, dim=1)
    bnorm_host = bnorm.tolist()
    scale = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    x = torch.zeros_like(b)
    history: list[list[float]] = [[] for _ in range(S)]
    residuals: list[float] = []
    estimates: list[float] = []
    products = krylov = 0  # all products; Krylov products only (what maxiter counts)
    if all(v == 0.0 for v in bnorm_host):
        return x, SolveInfo([0.0], [], 0, [[0.0] for _ in range(S)])
    while True:
        r = b - apply(x)
        products += 1
        beta = torch.linalg.vector_norm(r, dim=1)
        rel = (beta / scale).tolist()
        for s in range(S):
            history[s].append(rel[s])
        residuals.append(max(rel))
        if max(rel) <= tol:
            return x, SolveInfo(residuals, estimates, products, history)
        if krylov >= maxiter or not math.isfinite(max(rel)):
            worst = max(range(S), key=lambda s: rel[s])
            which = f" (system {worst} of {S})" if S > 1 else ""
            raise ConvergenceError(
                f"GMRES did not reach relative residual {tol:.1e} in {maxiter} products (true "
                f"residual {rel[worst]:.3e}{which}); raise maxiter, loosen tol, or check that "
                "Φ_K is contractive at x_star",
                residuals,
            )
        # A system already converged starts with a zero basis vector: it is carried along
        # (its least-squares coefficients are 0), so the others' products stay batched.
        inactive = torch.tensor([v <= tol for v in rel], device=b.device)
        safe = torch.where(beta > 0, beta, torch.ones_like(beta)).to(b.dtype)
        basis = [torch.where(inactive[:, None], torch.zeros_like(r), r / safe[:, None])]
        H = torch.zeros(S, restart + 1, restart, dtype=b.dtype, device=b.device)
        rhs = torch.zeros(S, restart + 1, 1, dtype=b.dtype, device=b.device)
        rhs[:, 0, 0] = beta.to(b.dtype)
        y = rhs[:, :1]
        for j in range(restart):
            w = apply(basis[j])
            products += 1
            krylov += 1
            for i in range(j + 1):  # modified Gram-Schmidt, ⟨v_i, w⟩ = Σ conj(v_i) w
                h = (basis[i].conj() * w).sum(1)
                H[:, i, j] = h
                w = w - h[:, None] * basis[i]
            hn = torch.linalg.vector_norm(w, dim=1)
            H[:, j + 1, j] = hn.to(b.dtype)
            # a system inactive before this step has a zero column: a unit diagonal keeps the
            # least-squares problem of full rank and gives it a zero coefficient
            H[:, j, j] = torch.where(inactive, torch.ones_like(H[:, j, j]), H[:, j, j])
            Hj = H[:, : j + 2, : j + 1]
            y = torch.linalg.lstsq(Hj, rhs[:, : j + 2]).solution
            estimate = torch.linalg.vector_norm((Hj @ y - rhs[:, : j + 2])[..., 0], dim=1) / scale
            broken = hn <= tiny
            inactive = inactive | broken
            done = ((estimate <= tol) | inactive).tolist()
            estimates.append(max(estimate.tolist()))
            if all(done) or krylov >= maxiter:
                break
            safe_h = torch.where(broken, torch.ones_like(hn), hn).to(b.dtype)
            basis.append(torch.where(inactive[:, None], torch.zeros_like(w), w / safe_h[:, None]))
        V = torch.stack(basis[: y.shape[1]], dim=2)  # (S, n, k)
        x = x + (V @ y)[..., 0]
