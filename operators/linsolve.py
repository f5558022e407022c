r"""Restarted GMRES in torch, for the adjoint equation (I − ∂_xΦ_Kᵀ) w = ∇L(x̂) of eq. (20).

Written here rather than taken from SciPy because the solve must stay on the tensors' device
(CUDA included) and use only matrix-free products; ``tests/test_linsolve.py`` checks it
against :func:`scipy.sparse.linalg.gmres` (CPU, float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import ConvergenceError


@dataclass(frozen=True)
class SolveInfo:
    """What a solve did: true relative residuals ‖b − Mw‖/‖b‖ (at the start and at the end of
    every restart cycle), GMRES's own per-product estimates, and the number of products with M
    (Krylov products plus one per true residual; ``maxiter`` counts Krylov products only)."""

    residuals: list[float]
    estimates: list[float]
    products: int


def gmres(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    tol: float = 1e-10,
    restart: int = 50,
    maxiter: int = 1000,
) -> tuple[torch.Tensor, SolveInfo]:
    """Solve M w = b for a matrix-free M (1-D tensors) to a true ‖b − Mw‖ ≤ tol‖b‖.

    Returns the solution and a :class:`SolveInfo`. Convergence is declared only on the true
    residual, computed with one extra product at the end of each cycle (the least-squares
    estimate inside a cycle decides only when a cycle ends). Raises :class:`ConvergenceError`
    with the true residual history when ``maxiter`` products do not reach ``tol``.
    """
    bnorm = torch.linalg.vector_norm(b).item()
    x = torch.zeros_like(b)
    if bnorm == 0.0:
        return x, SolveInfo([0.0], [], 0)
    residuals: list[float] = []
    estimates: list[float] = []
    products = krylov = 0  # all products; Krylov products only (what maxiter counts)
    tiny = torch.finfo(b.dtype).tiny
    while True:
        r = b - matvec(x)
        products += 1
        beta = torch.linalg.vector_norm(r).item()
        residuals.append(beta / bnorm)
        if beta / bnorm <= tol:
            return x, SolveInfo(residuals, estimates, products)
        if krylov >= maxiter or not math.isfinite(beta):
            raise ConvergenceError(
                f"GMRES did not reach relative residual {tol:.1e} in {maxiter} products (true "
                f"residual {beta / bnorm:.3e}); raise maxiter, loosen tol, or check that Φ_K "
                "is contractive at x_star",
                residuals,
            )
        basis = [r / beta]
        H = torch.zeros(restart + 1, restart, dtype=b.dtype, device=b.device)
        rhs = torch.zeros(restart + 1, dtype=b.dtype, device=b.device)
        rhs[0] = beta
        y = rhs[:1]
        for j in range(restart):
            w = matvec(basis[j])
            products += 1
            krylov += 1
            for i in range(j + 1):  # modified Gram-Schmidt
                H[i, j] = torch.dot(w, basis[i])
                w = w - H[i, j] * basis[i]
            H[j + 1, j] = torch.linalg.vector_norm(w)
            Hj = H[: j + 2, : j + 1]
            y = torch.linalg.lstsq(Hj, rhs[: j + 2].unsqueeze(1)).solution.squeeze(1)
            estimate = (torch.linalg.vector_norm(Hj @ y - rhs[: j + 2]) / bnorm).item()
            estimates.append(estimate)
            if H[j + 1, j].item() <= tiny or estimate <= tol or krylov >= maxiter:
                break
            basis.append(w / H[j + 1, j])
        x = x + torch.stack(basis[: y.numel()], dim=1) @ y
