r"""The fused-block contract in eager PyTorch: the oracle of the kernels and their fallback.

Both functions act on the packed wavelet coefficients of
:class:`~retune_suite.operators.maps.wavelet_prior.WaveletFB` (denoising, ``model=None``), where
one step (51) is

.. math:: φ(u) = \mathrm{prox}_{τ‖\cdot‖_{1,2}}(u ⊙ \mathrm{scale} + \mathrm{shift}),
    \qquad (τ, \mathrm{scale}, \mathrm{shift}) = \texttt{WaveletFB.\_maps}(θ),

with ``scale`` (1, C, H, W), ``shift`` (B, C, H, W) and the groups of ``prior`` over ``levels``
levels (the approximation block has factor 1):

- ``denoise_block(u0, scale, shift, tau, *, prior, levels, K) -> (uK, res_sq)``: K steps
  without a graph; ``res_sq`` is Σ (u_K − u_0)² per sample, shape (B,), in u's dtype;
- ``denoise_block_vjp(u0, scale, shift, tau, *, prior, levels, K, grad_uK, need_u0=False) ->
  (grad_u0 | None, grad_scale, grad_shift)``: the vector-Jacobian product of the K steps with
  ``grad_uK`` (τ is not differentiated, as in the eager step); ``grad_scale`` has scale's shape
  (summed over the batch), ``grad_shift`` shift's.

Here the K steps are the eager step itself (:func:`~..packed_prox.prox_l12`) and the VJP is
autograd through them; ``create_graph`` keeps the VJP differentiable (double backward).
"""

from __future__ import annotations

import functools

import torch

from ..packed_prox import prox_l12

__all__ = ["denoise_block", "denoise_block_vjp", "steps"]


@functools.cache
def _pack(levels: int):
    from ..wavelet import Wavelet2D

    return Wavelet2D("haar", levels).pack


def steps(
    u: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    tau: torch.Tensor | float,
    *,
    prior: str,
    levels: int,
    K: int,
) -> torch.Tensor:
    """K eager steps φ(u) (a graph when one is recorded; in place where none is)."""
    t = torch.as_tensor(tau, dtype=u.dtype, device=u.device)
    for _ in range(K):
        u = prox_l12(torch.addcmul(shift, u, scale), t, prior, levels, _pack(levels), inplace=True)
    return u


def denoise_block(
    u0: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    tau: torch.Tensor | float,
    *,
    prior: str,
    levels: int,
    K: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_K, Σ(u_K − u_0)² per sample), K eager steps without a graph."""
    with torch.no_grad():
        uK = steps(u0, scale, shift, tau, prior=prior, levels=levels, K=K)
        res_sq = ((uK - u0) ** 2).flatten(1).sum(1)
    return uK, res_sq


def denoise_block_vjp(
    u0: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    tau: torch.Tensor | float,
    *,
    prior: str,
    levels: int,
    K: int,
    grad_uK: torch.Tensor,
    need_u0: bool = False,
    create_graph: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(∂u₀, ∂scale, ∂shift) of ⟨grad_uK, u_K⟩, by autograd through the K eager steps."""
    tau = tau.detach() if isinstance(tau, torch.Tensor) else tau
    with torch.enable_grad():
        # fresh nodes: the gradient with respect to each collects the paths through this
        # block only (u0 may itself depend on scale and shift), while under create_graph they
        # stay connected to the graph the inputs came from
        inputs = [t.view_as(t) if t.requires_grad and create_graph
                  else t.detach().requires_grad_(True) for t in (u0, scale, shift)]  # fmt: skip
        uK = steps(*inputs, tau, prior=prior, levels=levels, K=K)
        grads = torch.autograd.grad(
            uK, inputs if need_u0 else inputs[1:], grad_uK, create_graph=create_graph
        )
    if need_u0:
        return grads[0], grads[1], grads[2]
    return None, grads[0], grads[1]
