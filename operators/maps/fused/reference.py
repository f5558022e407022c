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
- ``denoise_blocks(u0, scale, shift, tau, *, prior, levels, K, T) -> (u_KT, u_K(T−1),
  res_sq)``: T such blocks, ``res_sq`` of shape (T, B) (block t's squared residual per sample),
  u_K(T−1) being u0 itself when T = 1;
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

__all__ = ["blocks_of", "denoise_block", "denoise_block_vjp", "denoise_blocks", "steps"]


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


def blocks_of(
    block, u0: torch.Tensor, scale, shift, tau, *, prior: str, levels: int, K: int, T: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``denoise_blocks`` as T calls of a backend's ``block`` (its ``denoise_block``)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    prev, u, res = u0, u0, []
    for _ in range(T):
        prev = u
        u, res_sq = block(u, scale, shift, tau, prior=prior, levels=levels, K=K)
        res.append(res_sq)
    return u, prev, torch.stack(res)


def denoise_blocks(
    u0: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    tau: torch.Tensor | float,
    *,
    prior: str,
    levels: int,
    K: int,
    T: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u_KT, u_K(T−1), res_sq (T, B)): T eager blocks without a graph."""
    return blocks_of(denoise_block, u0, scale, shift, tau, prior=prior, levels=levels, K=K, T=T)


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
