r"""Independent NumPy reference for the six hypergradient estimators (no autograd).

For the four priors of :mod:`retune_suite.operators.maps.problems`, one elementary step
x_{k+1} = φ(x_k, θ̃) has closed-form Jacobians J_x = ∂φ/∂x (n×n) and J_θ = ∂φ/∂θ̃ (n×d),
written out below by hand. Forward-mode sensitivity propagation

.. math:: S_{k+1} = J_x(x_k) S_k + J_θ(x_k), \qquad S_0 = 0,

gives S_k = ∂x_k/∂θ̃ along a trajectory, and A_x = J_x(x_{K−1}) ⋯ J_x(x_0) the Jacobian of
Φ_K in x. With v = ∇L(x) = x − x̄ the estimators are (θ̃ flattened to ℝ^d)

============  =============================================================================
unrolled      S_{KT}ᵀ v(x_{KT}), S propagated through all K·T steps from x_0
retune        S_Kᵀ v(x_{KT}), S restarted at S = 0 at x_{K(T−1)}
jfb           S_Kᵀ v(x̂), S propagated through K steps from x̂
deq           S_Kᵀ (I − A_x)^{−T} v(x̂)   (numpy.linalg.solve), A_x, S_K at x̂
neumann(P)    S_Kᵀ Σ_{p=0}^{P} (A_xᵀ)^p v(x̂)
============  =============================================================================

Everything is float64 NumPy; torch is only touched to read the problem's tensors.

The two nonsmooth priors are differentiable except where |z_i| = τw_i (``l1``) or
‖z_g‖ = τw_g (``group_l21``), z = x − τ∇f(x) being the forward (gradient) point.
:func:`reference_gradients` also reports, under the key ``"margin"``, the smallest distance
to such a kink over every point where a Jacobian was evaluated (``inf`` for smooth priors),
so that tests can discard the (measure-zero) degenerate instances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ESTIMATORS", "NumpyProblem", "reference_gradients"]

ESTIMATORS = ("deq_exact", "deq_solve", "deq_neumann", "jfb", "retune", "unrolled")


def _np(t: object) -> np.ndarray:
    """A torch tensor (or array-like) as a float64 NumPy array, detached, on the CPU."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(t, dtype=np.float64)


@dataclass(frozen=True)
class NumpyProblem:
    """The data of an :class:`~retune_suite.operators.maps.problems.Problem`, as float64 NumPy
    arrays."""

    prior: str
    A: np.ndarray
    y: np.ndarray
    target: np.ndarray
    rho: float
    tau: float
    eps: float
    d: int

    @classmethod
    def from_problem(cls, problem: object) -> NumpyProblem:
        p = problem
        return cls(
            prior=p.prior,  # type: ignore[attr-defined]
            A=_np(p.A),  # type: ignore[attr-defined]
            y=_np(p.y),  # type: ignore[attr-defined]
            target=_np(p.target),  # type: ignore[attr-defined]
            rho=float(p.rho),  # type: ignore[attr-defined]
            tau=float(p.tau),  # type: ignore[attr-defined]
            eps=float(p.eps),  # type: ignore[attr-defined]
            d=int(p.d),  # type: ignore[attr-defined]
        )

    @property
    def n(self) -> int:
        return self.A.shape[1]

    @property
    def group_size(self) -> int:
        return self.n // self.d

    @property
    def H(self) -> np.ndarray:
        """Hessian of f = ½‖Ax − y‖² + ρ/2‖x‖²: AᵀA + ρI."""
        return self.A.T @ self.A + self.rho * np.eye(self.n)

    def groups(self) -> np.ndarray:
        """(n, d) one-hot matrix E of the contiguous groups: E[i, g] = 1 iff i ∈ g."""
        g = np.arange(self.n) // self.group_size
        return (g[:, None] == np.arange(self.d)[None, :]).astype(np.float64)

    def weights(self, theta: np.ndarray) -> np.ndarray:
        """Per-coordinate weights w_i = exp(θ̃_{g(i)})."""
        return np.repeat(np.exp(theta), self.group_size)

    def grad_f(self, x: np.ndarray) -> np.ndarray:
        """∇f(x) = Aᵀ(Ax − y) + ρx."""
        return self.A.T @ (self.A @ x - self.y) + self.rho * x

    def loss_grad(self, x: np.ndarray) -> np.ndarray:
        """∇L(x) for L(x) = ½‖x − x̄‖²."""
        return x - self.target

    def step(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """φ(x, θ̃) only (no Jacobians)."""
        return self.linearise(x, theta, jacobians=False)[0]

    def linearise(
        self, x: np.ndarray, theta: np.ndarray, *, jacobians: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float]:
        """φ(x, θ̃), J_x = ∂φ/∂x (n×n), J_θ = ∂φ/∂θ̃ (n×d), and the distance to a kink."""
        n, tau = self.n, self.tau
        w = self.weights(theta)
        E = self.groups()
        eye = np.eye(n)
        if self.prior == "ridge":
            # φ = x − τ(AᵀAx − Aᵀy + ρx + w⊙x)
            out = x - tau * (self.grad_f(x) + w * x)
            if not jacobians:
                return out, None, None, np.inf
            Jx = eye - tau * (self.H + np.diag(w))
            # ∂(w_i x_i)/∂θ̃_g = w_i x_i [i ∈ g]   (∂w_g/∂θ̃_g = w_g)
            Jth = -tau * (w * x)[:, None] * E
            return out, Jx, Jth, np.inf
        if self.prior == "logcosh":
            # φ = x − τ(∇f + w⊙tanh(x/ε)), d/dx tanh(x/ε) = (1 − tanh²(x/ε))/ε
            th = np.tanh(x / self.eps)
            out = x - tau * (self.grad_f(x) + w * th)
            if not jacobians:
                return out, None, None, np.inf
            Jx = eye - tau * (self.H + np.diag(w * (1.0 - th**2) / self.eps))
            Jth = -tau * (w * th)[:, None] * E
            return out, Jx, Jth, np.inf
        # forward-backward: z = x − τ∇f(x), ∂z/∂x = I − τH
        z = x - tau * self.grad_f(x)
        Jz = eye - tau * self.H
        if self.prior == "l1":
            t = tau * w
            active = np.abs(z) > t
            out = np.where(active, np.sign(z) * (np.abs(z) - t), 0.0)
            margin = float(np.min(np.abs(np.abs(z) - t)))
            if not jacobians:
                return out, None, None, margin
            mask = active.astype(np.float64)
            Jx = mask[:, None] * Jz
            # ∂/∂t [sign(z)(|z| − t)] = −sign(z), ∂t_i/∂θ̃_g = τw_i [i ∈ g]
            Jth = (-t * np.sign(z) * mask)[:, None] * E
            return out, Jx, Jth, margin
        if self.prior == "group_l21":
            m = self.group_size
            out = np.zeros(n)
            D = np.zeros((n, n))  # block-diagonal ∂prox/∂z
            Jth = np.zeros((n, self.d))
            margin = np.inf
            for g in range(self.d):
                sl = slice(g * m, (g + 1) * m)
                zg = z[sl]
                r = float(np.sqrt(zg @ zg))
                t = tau * float(np.exp(theta[g]))
                margin = min(margin, abs(r - t))
                if r <= t:
                    continue  # prox_g(z) = 0 on a neighbourhood: zero Jacobians
                # prox_g(z) = (1 − t/r) z_g
                out[sl] = (1.0 - t / r) * zg
                # ∂/∂z_g: (1 − t/r) I + (t/r³) z_g z_gᵀ   (∂r/∂z_g = z_g/r)
                D[sl, sl] = (1.0 - t / r) * np.eye(m) + (t / r**3) * np.outer(zg, zg)
                # ∂/∂θ̃_g: ∂/∂t = −z_g/r, ∂t/∂θ̃_g = t
                Jth[sl, g] = -(t / r) * zg
            if not jacobians:
                return out, None, None, margin
            return out, D @ Jz, Jth, margin
        raise ValueError(f"unknown prior {self.prior!r}")

    # ----------------------------------------------------------------- trajectories

    def forward(self, x: np.ndarray, theta: np.ndarray, steps: int) -> np.ndarray:
        """φ^steps(x), no derivatives."""
        for _ in range(steps):
            x = self.step(x, theta)
        return x

    def sensitivity(
        self, x: np.ndarray, theta: np.ndarray, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """x_steps, S_steps = ∂x_steps/∂θ̃ (S_0 = 0), A_x = ∂x_steps/∂x_0, and the kink margin."""
        n = x.shape[0]
        S = np.zeros((n, self.d))
        Ax = np.eye(n)
        margin = np.inf
        for _ in range(steps):
            x_next, Jx, Jth, mg = self.linearise(x, theta)
            assert Jx is not None and Jth is not None
            S = Jx @ S + Jth
            Ax = Jx @ Ax
            margin = min(margin, mg)
            x = x_next
        return x, S, Ax, margin


def reference_gradients(
    problem: object,
    x0: object,
    x_star: object,
    K: int,
    T: int,
    P: int,
    theta: object | None = None,
) -> dict[str, np.ndarray]:
    """All six estimators for a torch ``Problem``, in NumPy, at ``theta`` (default its θ̃).

    Returns a dict with keys :data:`ESTIMATORS` (each a (d,) array; ``deq_exact`` and
    ``deq_solve`` are the same exact DEQ gradient; ``deq_neumann`` uses P) plus two 0-d arrays:
    ``"margin"``, the smallest distance to a kink of the prox over every point where a Jacobian
    was evaluated (``inf`` for the smooth priors), and ``"scale"``, the natural size
    τ·max(w)·max(1, ‖x‖)·‖∇L‖ of one term of the gradient sums (to scale absolute tolerances).
    """
    prob = NumpyProblem.from_problem(problem)
    th = _np(problem.theta if theta is None else theta).reshape(-1)  # type: ignore[attr-defined]
    x0_, xs = _np(x0).reshape(-1), _np(x_star).reshape(-1)
    n = prob.n

    # Unrolled: sensitivities through all K·T steps from x_0.
    x_KT, S_unr, _, m_unr = prob.sensitivity(x0_, th, K * T)
    unrolled = S_unr.T @ prob.loss_grad(x_KT)

    # ReTune: K(T − 1) steps without derivatives, then a fresh S = 0 for the last block.
    x_prev = prob.forward(x0_, th, K * (T - 1))
    x_KT_r, S_ret, _, m_ret = prob.sensitivity(x_prev, th, K)
    retune = S_ret.T @ prob.loss_grad(x_KT_r)

    # Fixed-point estimators: the K steps of Φ_K linearised at x̂.
    _, S, Ax, m_fp = prob.sensitivity(xs, th, K)
    v = prob.loss_grad(xs)
    jfb = S.T @ v
    w = np.linalg.solve((np.eye(n) - Ax).T, v)
    deq = S.T @ w
    total, term = v.copy(), v.copy()
    for _ in range(P):
        term = Ax.T @ term
        total = total + term
    neumann = S.T @ total

    # Size of one term of the gradient sums: |∂φ/∂θ̃_g| ≤ τ w_max max(1, |x|) for every prior,
    # times |∇L|. A gradient far below this is a cancellation, reproducible only to rounding
    # relative to this size (not to itself); tests use it as the absolute tolerance's scale.
    x_size = max(1.0, *(float(np.linalg.norm(z)) for z in (x0_, xs, x_prev, x_KT)))
    v_size = max(float(np.linalg.norm(prob.loss_grad(z))) for z in (xs, x_KT))
    scale = prob.tau * float(np.exp(th.max())) * x_size * v_size

    return {
        "deq_exact": deq,
        "deq_solve": deq.copy(),
        "deq_neumann": neumann,
        "jfb": jfb,
        "retune": retune,
        "unrolled": unrolled,
        "margin": np.asarray(min(m_unr, m_ret, m_fp)),
        "scale": np.asarray(scale),
    }
