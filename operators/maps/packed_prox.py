r"""The prox of τ‖·‖₁,₂ on packed wavelet coefficients (the backward step of (51)).

The groups are those of the wavelet priors (44)–(45) in the packed layout of
:meth:`.wavelet.Wavelet2D.pack`: at each level j (detail size h × w) and position, the three
bands cH = [h:2h, :w], cV = [:h, w:2w], cD = [h:2h, w:2w], per channel for θ_B and over the
channels too for θ_BC; the approximation block is not penalised. Shared by
:class:`.wavelet_prior.WaveletFB` and the eager reference of the fused kernels
(:mod:`.fused.reference`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.autograd.forward_ad as forward_ad

__all__ = ["prox_l12", "records_graph"]


def prox_l12(
    u: torch.Tensor,
    t: torch.Tensor,
    prior: str,
    levels: int,
    pack: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor],
    *,
    inplace: bool = False,
    fused: bool | None = None,
) -> torch.Tensor:
    """prox of t‖·‖₁,₂ on the packed coefficients u (B, C, H, W): :meth:`WaveletFB._prox`.

    ``pack`` packs (approximation, details) as :meth:`.wavelet.Wavelet2D.pack` does (the graph
    form builds the factor map with it); the group structure is that of ``prior`` ("B": the
    three bands per channel, "BC": over the channels too) over ``levels`` levels.
    """
    H, W = u.shape[-2:]
    sq = u * u
    if prior == "BC":
        sq = sq.sum(dim=1, keepdim=True)
    tiny = torch.finfo(u.dtype).tiny
    hw = _detail_hw(H, W, levels)
    if fused is None:
        fused = not records_graph(u, t)
    if not fused:
        norms = torch.cat([_group_norm_sq(sq, h, w).flatten(-2) for h, w in hw], dim=-1)
        # clamp_min keeps t/‖·‖ finite (and its gradient 0) where a group is 0; the
        # factor is 0 there anyway.
        flat = torch.relu(1 - t * torch.rsqrt(norms.clamp_min(tiny)))
        factors, start = [], 0
        for h, w in hw:
            f = flat[..., start : start + h * w].unflatten(-1, (h, w))
            factors.append(f.unsqueeze(-3).expand(*f.shape[:-2], 3, h, w))
            start += h * w
        ones = torch.ones((1, 1, H >> levels, W >> levels), device=u.device, dtype=u.dtype)
        return u * pack(ones, factors)
    flat = sq.new_empty(*sq.shape[:-2], sum(h * w for h, w in hw))
    views, start = [], 0
    for h, w in hw:
        view = flat[..., start : start + h * w].unflatten(-1, (h, w))
        torch.add(sq[..., h : 2 * h, :w], sq[..., :h, w : 2 * w], out=view)
        view.add_(sq[..., h : 2 * h, w : 2 * w])
        views.append(view)
        start += h * w
    # relu(1 − t·rsqrt(max(n, tiny))), the same roundings as the graph form
    flat.clamp_min_(tiny).rsqrt_().mul_(t).neg_().add_(1).relu_()
    out = u if inplace else u.clone()
    for (h, w), f in zip(hw, views, strict=True):
        # rows [h, 2h) hold cH | cD side by side: one product for both
        out[..., h : 2 * h, : 2 * w].unflatten(-1, (2, w)).mul_(f.unsqueeze(-2))
        out[..., :h, w : 2 * w].mul_(f)
    return out


def _detail_hw(H: int, W: int, levels: int) -> list[tuple[int, int]]:
    return [(H >> (j + 1), W >> (j + 1)) for j in range(levels)]


def _group_norm_sq(sq: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Σ over the three bands of one level (cH, cV, cD) of the packed squares ``sq``."""
    return sq[..., h : 2 * h, :w] + sq[..., :h, w : 2 * w] + sq[..., h : 2 * h, w : 2 * w]


def records_graph(*tensors: torch.Tensor) -> bool:
    """Whether an operation on ``tensors`` may be recorded: autograd (a tensor that requires
    grad, with grad mode on), forward-mode AD or a torch.func transform."""
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
