r"""Contractive instances with their exact constants, for tests (no hypothesis needed).

An :class:`Instance` is one map φ(x, θ) with parameters θ, an initial point x₀, the outer loss
L(x) = ½‖x − x̄‖² of Corollary 1, and ω, the Lipschitz constant of φ(·, θ) in x, **exact**
(attained at the point ``x_attained``) for every family the strategies draw: Assumption 1
holds by construction, with δ_K ≤ ω^K (10), so ``delta(K) = ω^K`` is a Lipschitz constant of
Φ_K that :func:`retune_suite.bounds.verify` may use for a verdict.

=========================  ==========================================  ====================
builder                    step φ(x, θ)                                ω (exact)
=========================  ==========================================  ====================
:func:`affine`             θ ⊙ x + b                                   max |θᵢ|
:func:`spectral_affine`    U diag(θ) Vᵀ x + b  (V = U: symmetric)      max |θᵢ|
:func:`tuple_affine`       γ Q diag(m) Qᵀ x + β,  θ = (γ, m, β)        |γ| max |mᵢ|
:func:`from_problem`       a problem of ``operators.maps.problems``    ω(τ), section 2.1
=========================  ==========================================  ====================

For the symmetric maps (everything above but ``spectral_affine(symmetric=False)``) the
Jacobian of Φ_K is a power of one symmetric matrix, so ω^K is the exact Lipschitz constant of
Φ_K too; otherwise it is an upper bound (‖M^K‖₂ ≤ ‖M‖₂^K). ``x_attained`` is a point where
‖∂ₓφ(x, θ)‖₂ = ω, so a test can check the stated constant against a dense Jacobian; where it
is None (some problems of :func:`from_problem`), ω is an upper bound only.

The hypothesis strategies that draw these instances are in
:mod:`retune_suite.testing.strategies`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.maps.problems import Problem
from retune_suite.operators.theta import Loss, Step, Theta

__all__ = ["Instance", "affine", "from_problem", "spectral_affine", "tuple_affine"]

DTYPE = torch.float64


@dataclass(frozen=True, eq=False)
class Instance:
    r"""One contractive map with its exact constant, ready for :func:`~retune_suite.bounds.verify`.

    Attributes
    ----------
    description : str
        The family and the parameters it was built with (hypothesis prints it on failure).
    step : callable
        φ(x, θ) -> x, one elementary step (7).
    theta : Tensor or tuple of Tensor
        The parameters θ (float64, not requiring grad).
    x0 : Tensor
        The initial point x₀ (float64, shape (n,)).
    loss : callable
        L(x) = ½‖x − x̄‖² (Corollary 1's loss), a scalar tensor.
    omega : float
        The Lipschitz constant ω of φ(·, θ) in x, in [0, 1) (Assumption 1 with K = 1):
        exact, ‖∂ₓφ(x_attained, θ)‖₂ = ω, when ``x_attained`` is given; else an upper bound.
    K : int
        Suggested block length of Φ_K (9).
    T : int
        Suggested number of restarts (24).
    x_attained : Tensor or None
        A point where ‖∂ₓφ(x, θ)‖₂ = ω; None where no point is known to attain ω.
    problem : Problem or None
        The :class:`~retune_suite.operators.maps.problems.Problem` behind the instance (its A, y,
        τ, μ, L and closed forms), for instances built by :func:`from_problem`.

    Examples
    --------
    >>> inst = affine([0.5, -0.8], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0], K=2, T=3)
    >>> inst.omega, inst.delta(), inst.delta(1), inst.dtype
    (0.8, 0.64..., 0.8, torch.float64)
    """

    description: str
    step: Step
    theta: Theta
    x0: torch.Tensor
    loss: Loss
    omega: float
    K: int
    T: int
    x_attained: torch.Tensor | None = None
    problem: Problem | None = None

    @property
    def name(self) -> str:
        """The description (the name the suite's own tests print)."""
        return self.description

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of x₀ and θ: float64 for every built-in family."""
        return self.x0.dtype

    def delta(self, K: int | None = None) -> float:
        """δ_K = ω^K, a Lipschitz constant of Φ_K (10): pass it to ``verify(delta=...)``.

        ``K`` defaults to the suggested :attr:`K`.
        """
        return self.omega ** (self.K if K is None else K)


def _mse(xbar: torch.Tensor) -> Loss:
    def loss(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - xbar) ** 2).sum()

    return loss


def _vector(values: Sequence[float] | torch.Tensor, name: str, n: int | None = None):
    t = torch.as_tensor(values, dtype=DTYPE)
    if t.dim() != 1 or (n is not None and t.numel() != n):
        want = "a vector" if n is None else f"a vector of length {n}"
        raise InvalidInputError(f"{name} must be {want}, got shape {tuple(t.shape)}.")
    return t


def _contraction(omega: float, what: str) -> float:
    if not 0.0 <= omega < 1.0:
        raise InvalidInputError(
            f"{what} = {omega:.6g} is not in [0, 1): φ would not be a contraction "
            "(Assumption 1); scale the values below 1 in absolute value."
        )
    return omega


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=DTYPE))
    return q * torch.sign(torch.diagonal(r))


def affine(
    theta: Sequence[float],
    b: Sequence[float],
    x0: Sequence[float],
    xbar: Sequence[float],
    K: int,
    T: int,
) -> Instance:
    r"""φ(x, θ) = θ ⊙ x + b with |θᵢ| < 1: ω = max |θᵢ| and δ_K = ω^K, both exact.

    ∂ₓφ = diag(θ) is constant, and L_θ of Assumption 2 is exact too. The map of finding F1's
    counterexample to Theorem 2 as printed (``docs/findings.md``) is
    ``affine([0.5], [0.0], [-1.0], [1.0], K=1, T=1)``.

    Examples
    --------
    >>> inst = affine([0.5], [1.0], [0.0], [2.0], K=1, T=3)
    >>> inst.step(torch.tensor([2.0], dtype=torch.float64), inst.theta)  # x̂ = 2
    tensor([2.], dtype=torch.float64)
    """
    th = _vector(theta, "theta")
    n = th.numel()
    bt = _vector(b, "b", n)
    omega = _contraction(float(th.abs().max()), "max |θᵢ|")

    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return t * x + bt

    x0_t = _vector(x0, "x0", n)
    return Instance(
        description=f"affine(θ={list(theta)}, b={list(b)}, x0={list(x0)}, x̄={list(xbar)})",
        step=step,
        theta=th,
        x0=x0_t,
        loss=_mse(_vector(xbar, "xbar", n)),
        omega=omega,
        K=K,
        T=T,
        x_attained=x0_t,
    )


def spectral_affine(
    values: Sequence[float],
    b: Sequence[float],
    x0: Sequence[float],
    xbar: Sequence[float],
    K: int,
    T: int,
    *,
    symmetric: bool = True,
    seed: int = 0,
) -> Instance:
    r"""φ(x, θ) = M(θ)x + b with M(θ) = U diag(θ) Vᵀ, U and V orthogonal (drawn from ``seed``).

    The spectral norm is prescribed: ‖M(θ)‖₂ = max |θᵢ| = ω exactly, so the map mixes every
    coordinate while its contraction factor stays known. With ``symmetric=True`` (V = U),
    ∂ₓΦ_K = M^K and δ_K = ω^K is exact; otherwise ω^K is an upper bound (‖M^K‖₂ ≤ ‖M‖₂^K)
    and ‖M‖₂ = ω is exact for K = 1 only.

    Examples
    --------
    >>> from retune_suite.operators.jacobians import jacobian_x, spectral_norm
    >>> inst = spectral_affine([0.9, -0.3, 0.1], [1, 0, 0], [0, 0, 0], [1, 1, 1], K=3, T=4)
    >>> J = jacobian_x(inst.step, inst.x_attained, inst.theta)
    >>> abs(spectral_norm(J) - inst.omega) < 1e-12
    True
    """
    th = _vector(values, "values")
    n = th.numel()
    bt = _vector(b, "b", n)
    omega = _contraction(float(th.abs().max()), "max |θᵢ|")
    gen = torch.Generator().manual_seed(seed)
    U = _orthogonal(n, gen)
    V = U if symmetric else _orthogonal(n, gen)

    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return ((x @ V) * t) @ U.T + bt  # M(θ)x on the last dimension

    x0_t = _vector(x0, "x0", n)
    kind = "symmetric" if symmetric else "general"
    return Instance(
        description=(
            f"spectral_affine({kind}, θ={list(values)}, b={list(b)}, x0={list(x0)}, "
            f"x̄={list(xbar)}, seed={seed})"
        ),
        step=step,
        theta=th,
        x0=x0_t,
        loss=_mse(_vector(xbar, "xbar", n)),
        omega=omega,
        K=K,
        T=T,
        x_attained=x0_t,
    )


def tuple_affine(
    gain: float,
    values: Sequence[float],
    bias: Sequence[float],
    x0: Sequence[float],
    xbar: Sequence[float],
    K: int,
    T: int,
    *,
    seed: int = 0,
) -> Instance:
    r"""θ a tuple of three tensors: φ(x, (γ, m, β)) = γ Q diag(m) Qᵀ x + β.

    γ is a 0-d tensor, m and β vectors, Q orthogonal (drawn from ``seed``); ω = |γ| max |mᵢ|
    exactly and δ_K = ω^K exactly (the Jacobian is symmetric). Every estimator returns a tuple
    of three gradients shaped like θ, as for a network's parameters.

    Examples
    --------
    >>> inst = tuple_affine(0.5, [1.0, -0.4], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], K=2, T=3)
    >>> [tuple(t.shape) for t in inst.theta], inst.omega
    ([(), (2,), (2,)], 0.5)
    """
    m = _vector(values, "values")
    n = m.numel()
    g = torch.tensor(float(gain), dtype=DTYPE)
    beta = _vector(bias, "bias", n)
    omega = _contraction(abs(float(gain)) * float(m.abs().max()), "|γ| max |mᵢ|")
    Q = _orthogonal(n, torch.Generator().manual_seed(seed))

    def step(x: torch.Tensor, t: tuple[torch.Tensor, ...]) -> torch.Tensor:
        gamma, mm, bb = t
        return gamma * (((x @ Q) * mm) @ Q.T) + bb

    x0_t = _vector(x0, "x0", n)
    return Instance(
        description=(
            f"tuple_affine(γ={gain}, m={list(values)}, β={list(bias)}, x0={list(x0)}, "
            f"x̄={list(xbar)}, seed={seed})"
        ),
        step=step,
        theta=(g, m, beta),
        x0=x0_t,
        loss=_mse(_vector(xbar, "xbar", n)),
        omega=omega,
        K=K,
        T=T,
        x_attained=x0_t,
    )


def _attaining_point(p: Problem) -> torch.Tensor | None:
    """A point where ‖∂ₓφ(x, θ̃)‖₂ = ω(τ), or None where ω(τ) is not known to be attained.

    The builder spreads the squared singular values of A over [μ − ρ, L − ρ], both ends
    included when n ≥ 2 (for n = 1 only L − ρ is one, and ω(τ) is attained only if the L end
    sets it). ``ridge`` with equal weights (the builder's default) is a gradient step with the
    constant symmetric Jacobian I − τH, H's eigenvalues running from μ to L: every point
    attains ω. ``l1`` is soft(Gx + τAᵀy, τw) with G = I − τ(AᵀA + ρI), symmetric with
    extreme eigenvalues 1 − τμ and 1 − τL; its Jacobian is D G (D the 0/1 mask of the active
    coordinates), and at x = R v (v the eigenvector of G's largest |eigenvalue| λ, R large)
    every coordinate in v's support is active, so ‖D G‖₂ ≥ ‖D G v‖₂ = |λ| = ω. For
    ``logcosh`` and ``group_l21`` the curvature that sets ω is reached only in a limit.
    """
    ends = p.n > 1 or abs(1.0 - p.tau * p.L) >= abs(1.0 - p.tau * p.mu)
    if p.prior not in ("ridge", "l1") or not ends:
        return None
    if p.prior == "ridge":
        equal = bool((p.theta == p.theta.reshape(-1)[0]).all())
        return p.x0 if equal else None
    n = p.n
    A = p.A.to(DTYPE)
    G = torch.eye(n, dtype=DTYPE) - p.tau * (A.T @ A + p.rho * torch.eye(n, dtype=DTYPE))
    eigenvalues, vectors = torch.linalg.eigh(G)
    i = int(eigenvalues.abs().argmax())
    lam, v = float(eigenvalues[i]), vectors[:, i]
    if lam == 0.0:  # ω = 0: the Jacobian D G = 0 everywhere
        return p.x0
    shift = p.tau * (A.T @ p.y.to(DTYPE)).abs().max() + p.tau * p.weights(p.theta).max()
    smallest = v.abs()[v != 0].min()
    R = float(2.0 * shift / (abs(lam) * smallest)) + 1.0
    return (R * v).to(device=p.x0.device, dtype=p.x0.dtype)


def from_problem(problem: Problem, K: int, T: int, *, description: str | None = None) -> Instance:
    r"""An :class:`Instance` from a :func:`~retune_suite.operators.maps.problems.make_problem`.

    ω = ω(τ) = max(|1 − τμ|, |1 − τL|) (section 2.1) with the problem's μ, L, τ: always a
    Lipschitz constant of one step, and the exact one, attained at ``x_attained``, for
    ``ridge`` (a gradient step; the builder's equal weights make μ and L eigenvalues of the
    Hessian) and ``l1`` (forward-backward (7) with the soft threshold; attained where every
    coordinate is active) when n ≥ 2. Otherwise (``logcosh``, ``group_l21``, unequal ridge
    weights, n = 1) ``x_attained`` is None and ω an upper bound. ``l1`` with ``rho=0`` is the
    lasso.

    Examples
    --------
    >>> from retune_suite.operators.maps import problems
    >>> p = problems.make_problem("l1", n=4, d=2, mu=0.5, L=1.0, tau="1/L")
    >>> inst = from_problem(p, K=3, T=5)
    >>> inst.omega == p.omega == 0.5, inst.delta() == 0.5**3
    (True, True)
    """
    p = problem
    return Instance(
        description=description
        or (f"{p.prior}(n={p.n}, d={p.d}, μ={p.mu:.3g}, L={p.L:.3g}, ρ={p.rho}, τ={p.tau:.4g})"),
        step=p.step,
        theta=p.theta,
        x0=p.x0,
        loss=p.loss,
        omega=p.omega,
        K=K,
        T=T,
        x_attained=_attaining_point(p),
        problem=p,
    )
