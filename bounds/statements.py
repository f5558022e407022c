r"""The paper's statements, one function each, returning the right-hand side of the bound.

Every function takes the constants the statement names (see :mod:`retune_suite.bounds.constants`)
and
returns a float. The printed statements are kept exactly as printed; where the suite found a
printed statement false, the corrected statement sits beside it with a ``_corrected`` suffix
(see ``docs/findings.md``).
"""

from __future__ import annotations

import math

from retune_suite.operators.errors import InvalidInputError


def _check_delta(delta: float) -> None:
    if not 0.0 <= delta < 1.0:
        raise InvalidInputError(
            f"δ_K = {delta:.6g} is not in [0, 1): Φ_K is not a contraction (Assumption 1); "
            "reduce the step size or increase K."
        )


def theorem1(delta: float, t: int, dist0: float) -> float:
    r"""Theorem 1 (rate of the restarted iteration).

    "Suppose that Φ_K satisfies Assumption 1. Then, for every θ ∈ Θ and x₀ ∈ ℝⁿ,
    (∀t ∈ ℕ) ‖x_{Kt} − x̂_θ‖ ≤ δ_K(θ)^t ‖x₀ − x̂_θ‖."

    Returns δ_K^t ‖x₀ − x̂‖.
    """
    _check_delta(delta)
    return delta**t * dist0


def lemma1(delta: float, grad_loss: float, dtheta: float) -> float:
    r"""Lemma 1, eq. (29) (Jacobian-free error at the fixed point).

    "If L is differentiable and Assumption 1 holds, then
    ‖g(θ) − g^JF(θ)‖₂ ≤ δ_K/(1 − δ_K) ‖∂_xL(x̂_θ)‖₂ ‖∂_θΦ_K(x̂_θ, ·)(θ)‖₂."
    """
    _check_delta(delta)
    return delta / (1.0 - delta) * grad_loss * dtheta


def neumann(delta: float, P: int, grad_loss: float, dtheta: float) -> float:
    r"""Neumann truncation of eq. (22) (beyond the paper; P = 0 is Lemma 1).

    ‖g − g_P‖₂ ≤ δ_K^{P+1}/(1 − δ_K) ‖∂_xL(x̂)‖₂ ‖∂_θΦ_K(x̂)‖₂, because
    J⁻¹ − I_P = Σ_{p>P} H^p with H = ∂_xΦ_K(x̂), ‖H‖₂ ≤ δ_K.
    """
    _check_delta(delta)
    return delta ** (P + 1) / (1.0 - delta) * grad_loss * dtheta


def theorem2(
    delta: float,
    T: int,
    grad_loss: float,
    dtheta_star: float,
    dtheta_prev: float,
    L_theta: float,
    dist0: float,
    hess_loss: float,
    remainder: float = 0.0,
) -> float:
    r"""Theorem 2, eq. (33), **as printed**, its o-term evaluated as the proof defines it.

    "If L is twice differentiable and Assumptions 1 and 2 are satisfied, then
    ‖g(θ) − g^R(θ)‖₂ ≤ δ_K/(1−δ_K) ‖∂_xL(x̂_θ)‖₂ ‖∂_θΦ_K(x̂_θ,·)‖₂
    + δ_K^T L_θ ‖x̂_θ − x₀‖₂ ‖∂_xL(x̂_θ)‖₂
    + δ_K^T ‖x̂_θ − x₀‖₂ ‖∂_xxL(x̂_θ)‖₂ ‖∂_θΦ_K(x_{K(T−1)},·)(θ)‖₂
    + ‖∂_θΦ_K(x_{K(T−1)},·)(θ)‖₂ o(δ_K^T ‖x̂_θ − x₀‖₂)."

    In the proof the o-term is ‖∂_θΦ_K(x_{K(T−1)})‖₂ times the first-order Taylor remainder
    ‖∂_xL(x_{KT}) − ∂_xL(x̂) − ∂_xxL(x̂)(x_{KT} − x̂)‖₂ (``remainder``, exact from one
    Hessian-vector product, :func:`retune_suite.bounds.constants.taylor_remainder`); it is zero for
    a
    quadratic loss. The suite refutes this statement (the second term needs δ_K^{T−1}): see
    :func:`theorem2_corrected` and ``docs/findings.md``.
    """
    _check_delta(delta)
    first = lemma1(delta, grad_loss, dtheta_star)
    o_term = dtheta_prev * remainder
    return first + delta**T * dist0 * (L_theta * grad_loss + hess_loss * dtheta_prev) + o_term


def theorem2_corrected(
    delta: float,
    T: int,
    grad_loss: float,
    dtheta_star: float,
    dtheta_prev: float,
    L_theta: float,
    dist0: float,
    loss_lipschitz: float,
) -> float:
    r"""Theorem 2 corrected (finding F1 of ``docs/findings.md``), with no o-term.

    ‖g − g^R‖₂ ≤ δ_K/(1−δ_K) ‖∂_xL(x̂)‖ ‖∂_θΦ_K(x̂)‖
    + δ_K^{T−1} L_θ ‖x̂ − x₀‖ ‖∂_xL(x̂)‖
    + δ_K^T ‖x̂ − x₀‖ H ‖∂_θΦ_K(x_{K(T−1)})‖,

    H with ‖∂_xL(x_{KT}) − ∂_xL(x̂)‖ ≤ H‖x_{KT} − x̂‖ (``loss_lipschitz``: a Lipschitz
    constant of ∂_xL, or the exact secant ratio at that pair,
    :func:`retune_suite.bounds.constants.loss_gradient_secant`). Assumption 2 is applied at
    x = x_{K(T−1)}, whose distance to x̂ is at most δ_K^{T−1}‖x₀ − x̂‖ (Theorem 1), not δ_K^T.
    """
    _check_delta(delta)
    first = lemma1(delta, grad_loss, dtheta_star)
    return (
        first
        + delta ** (T - 1) * L_theta * dist0 * grad_loss
        + delta**T * dist0 * loss_lipschitz * dtheta_prev
    )


def corollary1(
    delta: float,
    T: int,
    residual: float,
    dtheta_star: float,
    dtheta_prev: float,
    L_theta: float,
    dist0: float,
) -> float:
    r"""Corollary 1, eq. (42), **as printed** (L(x) = ½‖x − x̄‖², so ∂_xL(x̂) = x̂ − x̄).

    "‖g(θ) − g^R(θ)‖₂ ≤ δ_K/(1−δ_K) ‖x̂_θ − x̄‖₂ ‖∂_θΦ_K(x̂_θ,·)‖₂
    + δ_K^T ‖x₀ − x̂_θ‖₂ (‖∂_θΦ_K(x_{K(T−1)},·)(θ)‖₂ + L_θ ‖x̂_θ − x̄‖₂)."

    ``residual`` is ‖x̂ − x̄‖₂. Refuted with Theorem 2; see :func:`corollary1_corrected`.
    """
    return theorem2(delta, T, residual, dtheta_star, dtheta_prev, L_theta, dist0, 1.0)


def corollary1_corrected(
    delta: float,
    T: int,
    residual: float,
    dtheta_star: float,
    dtheta_prev: float,
    L_theta: float,
    dist0: float,
) -> float:
    r"""Corollary 1 corrected: δ_K^{T−1} on the L_θ term (finding F1).

    ‖g − g^R‖₂ ≤ δ_K/(1−δ_K) ‖x̂ − x̄‖ ‖∂_θΦ_K(x̂)‖
    + ‖x₀ − x̂‖ (δ_K^T ‖∂_θΦ_K(x_{K(T−1)})‖ + δ_K^{T−1} L_θ ‖x̂ − x̄‖).
    """
    return theorem2_corrected(delta, T, residual, dtheta_star, dtheta_prev, L_theta, dist0, 1.0)


def lemma2(omega: float) -> float:
    r"""Lemma 2, eq. (54): ‖H‖₂ = ω < 1 ⇒ ‖I − (I − H)⁻¹‖₂ ≤ ω/(1 − ω)."""
    _check_delta(omega)
    return omega / (1.0 - omega) if omega < 1 else math.inf
