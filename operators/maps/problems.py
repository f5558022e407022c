r"""Small exact problems: strongly convex composites with known μ, L and analytic ω(τ).

Each problem is, for x ∈ ℝⁿ (or a batch (B, n)) and weights w = exp(θ̃) ∈ ℝ^d_{>0}, one per
contiguous group of n/d coordinates (positivity by parameterisation, as in the paper):

==============  ==================================================  ==================  =========
prior           energy E_θ(x)                                       step φ(x, θ̃)        Assump. 2
==============  ==================================================  ==================  =========
``ridge``       ½‖Ax−y‖² + ½Σ w_{g(i)} x_i²                         gradient descent    global
``logcosh``     ½‖Ax−y‖² + ρ/2‖x‖² + Σ w_{g(i)} ε logcosh(x_i/ε)    gradient descent    global
``l1``          ½‖Ax−y‖² + ρ/2‖x‖² + Σ w_{g(i)} |x_i|  (elastic)    forward-backward    local
``group_l21``   ½‖Ax−y‖² + ρ/2‖x‖² + Σ_g w_g ‖x_g‖₂  (wavelet)      forward-backward    local
==============  ==================================================  ==================  =========

For forward-backward (7) on f = ½‖Ax−y‖² + ρ/2‖x‖² with μ = σ_min(A)² + ρ, L = σ_max(A)² + ρ,
and for gradient descent on a μ-strongly convex E with L-Lipschitz gradient, one step is
ω(τ)-Lipschitz with ω(τ) = max(|1 − τμ|, |1 − τL|) (section 2.1), so δ_K ≤ ω(τ)^K (10).
The step size τ is fixed when the problem is built (it does not depend on θ̃ afterwards).
``group_l21`` is the paper's weighted ℓ2,1 wavelet prior (44)–(45) at tiny size: x holds the
coefficients, groups play the role of (scale, band) blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from .prox import group_soft_threshold, soft_threshold

PRIORS = ("ridge", "logcosh", "l1", "group_l21")


def omega(tau: float, mu: float, L: float) -> float:
    r"""Lipschitz constant of one FB / GD step, ω(τ) = max(|1 − τμ|, |1 − τL|) (section 2.1)."""
    return max(abs(1.0 - tau * mu), abs(1.0 - tau * L))


def optimal_step(mu: float, L: float) -> float:
    """τ* = 2/(μ + L), which gives ω* = (L − μ)/(L + μ)."""
    return 2.0 / (mu + L)


@dataclass(frozen=True, eq=False)
class Problem:
    """One instance; ``step`` is the elementary map φ(x, θ̃) and ``loss`` the MSE ½‖x − x̄‖²."""

    prior: str
    A: torch.Tensor
    y: torch.Tensor
    rho: float
    d: int
    tau: float
    theta: torch.Tensor
    x0: torch.Tensor
    target: torch.Tensor
    mu: float
    L: float
    eps: float = 0.5

    @property
    def n(self) -> int:
        return self.A.shape[1]

    @property
    def group_size(self) -> int:
        return self.n // self.d

    @property
    def omega(self) -> float:
        """ω(τ) of one step."""
        return omega(self.tau, self.mu, self.L)

    def delta(self, K: int) -> float:
        """Analytic δ_K = ω(τ)^K, an upper bound of the Lipschitz constant of Φ_K (10)."""
        return self.omega**K

    def weights(self, theta: torch.Tensor) -> torch.Tensor:
        """Per-coordinate weights w_{g(i)} = exp(θ̃_{g(i)})."""
        return torch.exp(theta).repeat_interleave(self.group_size, dim=-1)

    def grad_f(self, x: torch.Tensor) -> torch.Tensor:
        """∇f(x) = Aᵀ(Ax − y) + ρx (batched over leading dimensions)."""
        return (x @ self.A.T - self.y) @ self.A + self.rho * x

    def step(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """One elementary step φ(x, θ̃), eq. (7) (FB) or a gradient step."""
        tau = self.tau
        if self.prior == "ridge":
            return x - tau * (self.grad_f(x) + self.weights(theta) * x)
        if self.prior == "logcosh":
            return x - tau * (self.grad_f(x) + self.weights(theta) * torch.tanh(x / self.eps))
        z = x - tau * self.grad_f(x)
        if self.prior == "l1":
            return soft_threshold(z, tau * self.weights(theta))
        return group_soft_threshold(z, tau * torch.exp(theta), self.group_size)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Outer loss ½‖x − x̄‖² (Corollary 1)."""
        return 0.5 * ((x - self.target) ** 2).sum()

    def closed_form_fixed_point(self) -> torch.Tensor:
        """x̂ for ``ridge``: (AᵀA + ρI + W)⁻¹Aᵀy."""
        if self.prior != "ridge":
            raise InvalidInputError(
                f"the closed-form fixed point exists for ridge, not {self.prior}."
            )
        H = self.A.T @ self.A + torch.diag(self.rho + self.weights(self.theta))
        return torch.linalg.solve(H, self.A.T @ self.y)

    def closed_form_hypergradient(self, x_star: torch.Tensor) -> torch.Tensor:
        r"""∂_θ̃ L(x̂_θ̃) by implicit differentiation of the optimality condition, no autograd.

        ``ridge``: ∂x̂/∂θ̃_g = −H⁻¹ diag(1_g w) x̂ with H = AᵀA + ρI + W.
        ``l1`` (elastic net): on the support S of x̂, x̂_S = H_S⁻¹(A_Sᵀy − w_S ⊙ sign x̂_S),
        so ∂x̂_S/∂θ̃_g = −H_S⁻¹ (1_g w sign x̂)_S and ∂x̂_{S^c} = 0 (strict complementarity).
        """
        w = self.weights(self.theta)
        groups = torch.arange(self.n, device=w.device) // self.group_size
        onehot = (groups[:, None] == torch.arange(self.d, device=w.device)[None, :]).to(w.dtype)
        AtA = self.A.T @ self.A
        if self.prior == "ridge":
            H = AtA + torch.diag(self.rho + w)
            jac = -torch.linalg.solve(H, (w * x_star)[:, None] * onehot)
        elif self.prior == "l1":
            S = x_star != 0
            H = AtA[S][:, S] + self.rho * torch.eye(int(S.sum()), dtype=w.dtype, device=w.device)
            jac = torch.zeros(self.n, self.d, dtype=w.dtype, device=w.device)
            rhs = (w * torch.sign(x_star))[S, None] * onehot[S]
            jac[S] = -torch.linalg.solve(H, rhs)
        else:
            raise InvalidInputError(
                f"the closed-form hypergradient exists for ridge and l1, not {self.prior}."
            )
        return jac.T @ (x_star - self.target)


def make_problem(
    prior: str = "group_l21",
    n: int = 16,
    d: int = 4,
    *,
    mu: float = 0.2,
    L: float = 1.0,
    rho: float = 0.0,
    tau: float | str = "optimal",
    log_weight: float | torch.Tensor = -2.0,
    eps: float = 0.5,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> Problem:
    r"""Random instance with prescribed μ and L (A = Q₁ diag(s) Q₂ᵀ, s² spread over [μ−ρ, L−ρ]).

    ``tau`` is a float, ``"optimal"`` (τ* = 2/(μ+L)) or a string ``"c/L"`` such as
    ``"1.95/L"``. For the gradient-descent priors, μ and L are those of the whole energy
    (L includes max w for ``ridge`` and max w/ε for ``logcosh``).
    """
    if prior not in PRIORS:
        raise InvalidInputError(f"unknown prior {prior!r}: choose one of {', '.join(PRIORS)}.")
    if n < 1 or d < 1 or n % d:
        raise InvalidInputError(f"n = {n} must be a positive multiple of d = {d}.")
    if not 0 <= rho < mu <= L:
        raise InvalidInputError(f"need 0 <= rho < mu <= L, got rho={rho}, mu={mu}, L={L}.")
    gen = torch.Generator().manual_seed(seed)

    def orthogonal() -> torch.Tensor:
        q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        return q * torch.sign(torch.diagonal(r))

    s2 = (
        torch.linspace(mu - rho, L - rho, n, dtype=torch.float64)
        if n > 1
        else torch.tensor([L - rho], dtype=torch.float64)
    )
    A = orthogonal() @ torch.diag(s2.sqrt()) @ orthogonal().T
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    theta = torch.as_tensor(log_weight, dtype=torch.float64) * torch.ones(d, dtype=torch.float64)
    x0 = torch.randn(n, generator=gen, dtype=torch.float64)
    target = torch.randn(n, generator=gen, dtype=torch.float64)
    w_max = math.exp(theta.max().item())
    mu_e, L_e = mu, L
    if prior == "ridge":
        mu_e, L_e = mu + math.exp(theta.min().item()), L + w_max
    elif prior == "logcosh":
        L_e = L + w_max / eps
    if tau == "optimal":
        tau_v = optimal_step(mu_e, L_e)
    elif isinstance(tau, str) and tau.endswith("/L"):
        tau_v = float(tau[:-2]) / L_e
    else:
        tau_v = float(tau)
    if not 0 < tau_v < 2 / L_e:
        raise InvalidInputError(
            f"step size τ = {tau_v:.4g} is not in (0, 2/L) = (0, {2 / L_e:.4g}): Φ_K would not "
            "be contractive; use tau='optimal' or a value below 2/L."
        )

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype)

    return Problem(
        prior=prior,
        A=cast(A),
        y=cast(y),
        rho=rho,
        d=d,
        tau=tau_v,
        theta=cast(theta),
        x0=cast(x0),
        target=cast(target),
        mu=mu_e,
        L=L_e,
        eps=eps,
    )
