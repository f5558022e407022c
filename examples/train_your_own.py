"""Train your own map at equilibrium: a learned prox inside forward-backward, with ReTune.

φ(x, θ) = prox_θ(x − τ Aᵀ(Ax − y)), prox_θ a small residual MLP (an ``nn.Module``), θ its
parameters. ``retune_suite.operators.equilibrium`` runs T − 1 restarts of Φ_K without a graph and
the last
block with it (Algorithm 1), so ``loss(x).backward()`` gives the ReTune gradient (25) and any
``torch.optim`` optimizer takes the step. Run: ``python examples/train_your_own.py``.
"""

from __future__ import annotations

import torch
from retune_suite.operators import equilibrium


def main(steps: int = 60, seed: int = 0) -> tuple[float, float]:
    """Train for ``steps`` Adam steps; return the training loss before and after."""
    torch.manual_seed(seed)
    n, m = 16, 12
    A = torch.randn(m, n) / n**0.5
    x_true = torch.randn(64, n).clamp(-1, 1)
    y = x_true @ A.T + 0.05 * torch.randn(64, m)
    tau = 1.0 / torch.linalg.matrix_norm(A, ord=2) ** 2
    prox = torch.nn.Sequential(torch.nn.Linear(n, 32), torch.nn.Tanh(), torch.nn.Linear(32, n))
    theta = tuple(prox.parameters())

    def step(x: torch.Tensor, th: tuple[torch.Tensor, ...]) -> torch.Tensor:
        z = x - tau * (x @ A.T - y) @ A  # gradient step on ½‖Ax − y‖²
        h = torch.tanh(z @ th[0].T + th[1]) @ th[2].T + th[3]
        return z + 0.1 * h  # residual learned prox, small: Φ_K stays a contraction here

    optimizer = torch.optim.Adam(theta, lr=1e-2)
    losses = []
    for _ in range(steps):
        x = equilibrium(step, theta, torch.zeros_like(x_true), K=5, T=4, backward="retune")
        loss = ((x - x_true) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()  # θ.grad ← the ReTune gradient
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


if __name__ == "__main__":
    first, last = main()
    print(f"training loss {first:.4f} → {last:.4f}")
