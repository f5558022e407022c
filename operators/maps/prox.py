r"""Proximity operators of the priors used by the small exact problems (section 2.1).

All act on the last dimension of x, so a batch of signals of shape (..., n) works.
"""

from __future__ import annotations

import torch


def soft_threshold(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""prox of t·|·| (weighted ℓ1), elementwise: sign(z)·max(|z| − t, 0).

    >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), torch.tensor(1.0))
    tensor([-1.,  0.,  2.])
    """
    return torch.sign(z) * torch.relu(z.abs() - t)


def group_soft_threshold(z: torch.Tensor, t: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""prox of Σ_g t_g‖z_g‖₂ (group ℓ2,1) over contiguous groups of ``group_size``.

    .. math:: \mathrm{prox}(z)_g = \max(0, 1 − t_g/‖z_g‖₂)\, z_g

    ``t`` has one entry per group (shape (n / group_size,)) or broadcasts to it.

    >>> group_soft_threshold(torch.tensor([3.0, 4.0, 0.1, 0.0]), torch.tensor([1.0, 1.0]), 2)
    tensor([2.4000, 3.2000, 0.0000, 0.0000])
    """
    groups = z.reshape(*z.shape[:-1], -1, group_size)
    norms = torch.linalg.vector_norm(groups, dim=-1, keepdim=True)
    # clamp_min keeps t/‖z_g‖ finite at ‖z_g‖ = 0, where the factor is 0 anyway.
    factor = torch.relu(1.0 - t.unsqueeze(-1) / norms.clamp_min(torch.finfo(z.dtype).tiny))
    return (factor * groups).reshape(z.shape)


def ridge_shrink(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""prox of (t/2)·‖·‖² elementwise: z / (1 + t).

    >>> ridge_shrink(torch.tensor([2.0]), torch.tensor(1.0))
    tensor([1.])
    """
    return z / (1.0 + t)
