r"""Fused kernels of the built-in wavelet denoising step (51): K steps per pass, and their VJP.

The denoising FB step on packed wavelet coefficients is elementwise up to its groups, and every
group of ‖·‖₁,₂ evolves on its own, so K steps of Φ_K (9) can run group by group, each group
loaded once, iterated K times in registers or cache, and stored once; the VJP of the K steps
recomputes each group's K states the same way (exact, not a checkpointing approximation). The
contract, shared by every backend (:mod:`.reference` states it):

- ``denoise_block(u0, scale, shift, tau, *, prior, levels, K) -> (uK, res_sq)``;
- ``denoise_block_vjp(u0, scale, shift, tau, *, prior, levels, K, grad_uK, need_u0=False)
  -> (grad_u0 | None, grad_scale, grad_shift)``;
- ``denoise_blocks(u0, scale, shift, tau, *, prior, levels, K, T) -> (u_KT, u_K(T−1),
  res_sq)``: T blocks, ``res_sq`` (T, B) the squared residual of each block per sample; the C++
  kernel runs them in one pass over memory (each group iterated K·T times in registers), other
  backends as T calls of ``denoise_block``.

Backends, chosen by the device of u₀ (:func:`backend`):

- CPU: the C++ kernel (:mod:`.cpu`, ``torch.utils.cpp_extension``, built once per machine and
  cached; iterates equal to the eager step's bit for bit);
- CUDA: the Triton kernel (``triton_denoise``), imported on first use;
- otherwise, or when the kernel cannot be built or imported (logged once), or when
  ``$RETUNE_FUSED`` is ``0``/``off``/``false``/``eager`` (or :func:`set_enabled` ``(False)``):
  none — :func:`backend` returns ``"eager"`` and the step's owner runs the ordinary eager step
  instead of a fused block.

:class:`DenoiseBlock` wraps a backend as an autograd function of (u₀, scale, shift): its
backward is the backend's VJP (the eager reference under ``create_graph``, so a double backward
is exact too).
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

import torch

from . import reference

__all__ = [
    "ENV",
    "DenoiseBlock",
    "backend",
    "denoise_block",
    "denoise_block_vjp",
    "denoise_blocks",
    "set_enabled",
]

ENV = "RETUNE_FUSED"
"""``0``, ``off``, ``false``, ``no`` or ``eager`` turn the fused kernels off (the eager step
runs); anything else, or unset, leaves them on where they build."""

logger = logging.getLogger(__name__)

_ENABLED: bool | None = None
_TRITON: ModuleType | None = None
_TRITON_FAILED = False


def set_enabled(flag: bool | None) -> None:
    """Turn the fused kernels on (True) or off (False) for this process; None: ``$RETUNE_FUSED``
    decides (the default)."""
    global _ENABLED
    _ENABLED = flag


def enabled() -> bool:
    """Whether fused kernels may be used (:func:`set_enabled`, else ``$RETUNE_FUSED``)."""
    if _ENABLED is not None:
        return _ENABLED
    return os.environ.get(ENV, "").strip().lower() not in ("0", "off", "false", "no", "eager")


def _triton() -> ModuleType | None:
    global _TRITON, _TRITON_FAILED
    if _TRITON is None and not _TRITON_FAILED:
        try:
            from . import triton_denoise
        except Exception as error:
            _TRITON_FAILED = True
            logger.warning(
                "the Triton kernel of the wavelet denoising step is not available (%s: %s); "
                "the eager PyTorch step runs on CUDA instead",
                type(error).__name__,
                error,
            )
        else:
            _TRITON = triton_denoise
    return _TRITON


def _module(device: torch.device) -> Any | None:
    if not enabled():
        return None
    if device.type == "cpu":
        from . import cpu

        built = cpu.load()
        return None if built is None else _CppBackend(built)
    if device.type == "cuda":
        module = _triton()
        return module if module is not None and module.available(device) else None
    return None


def backend(device: torch.device | str) -> str:
    """``"cpp"``, ``"triton"`` or ``"eager"`` (no fused kernel) for tensors on ``device``."""
    device = torch.device(device)
    module = _module(device)
    if module is None:
        return "eager"
    return "cpp" if device.type == "cpu" else "triton"


class _CppBackend:
    """The contract over the compiled module (τ read on the host: CPU tensors only)."""

    def __init__(self, module: ModuleType):
        self.module = module

    def denoise_block(self, u0, scale, shift, tau, *, prior, levels, K):
        uK, res_sq = self.module.denoise_block(
            u0.contiguous(), scale.contiguous(), shift.contiguous(), float(tau), prior, levels, K
        )
        return uK, res_sq

    def denoise_blocks(self, u0, scale, shift, tau, *, prior, levels, K, T):
        uKT, prev, res_sq = self.module.denoise_blocks(
            u0.contiguous(), scale.contiguous(), shift.contiguous(), float(tau), prior, levels,
            K, T,
        )  # fmt: skip
        return uKT, prev, res_sq

    def denoise_block_vjp(self, u0, scale, shift, tau, *, prior, levels, K, grad_uK,
                          need_u0=False):  # fmt: skip
        out = self.module.denoise_block_vjp(
            u0.contiguous(), scale.contiguous(), shift.contiguous(), float(tau), prior, levels,
            K, grad_uK.contiguous(), need_u0,
        )  # fmt: skip
        return (out[2] if need_u0 else None), out[0], out[1]


def _require(device: torch.device) -> Any:
    module = _module(device)
    if module is None:
        raise RuntimeError(
            f"no fused kernel for {device} tensors (backend {backend(device)!r}): call the "
            "eager step (retune_suite.operators.maps.fused.reference) instead"
        )
    return module


def denoise_block(u0, scale, shift, tau, *, prior: str, levels: int, K: int):
    """K fused steps on u0's device: (u_K, Σ(u_K − u_0)² per sample) (module docstring)."""
    return _require(u0.device).denoise_block(u0, scale, shift, tau, prior=prior, levels=levels, K=K)


def denoise_blocks(u0, scale, shift, tau, *, prior: str, levels: int, K: int, T: int):
    """T blocks of K fused steps on u0's device: (u_KT, u_K(T−1), res_sq (T, B)), res_sq[t]
    the squared residual Σ(u_K(t+1) − u_Kt)² per sample; u_K(T−1) is u0 itself when T = 1. One
    pass on the CPU; T calls of :func:`denoise_block` where the backend has no such kernel."""
    module = _require(u0.device)
    if hasattr(module, "denoise_blocks"):
        return module.denoise_blocks(u0, scale, shift, tau, prior=prior, levels=levels, K=K, T=T)
    return reference.blocks_of(module.denoise_block, u0, scale, shift, tau, prior=prior,
                               levels=levels, K=K, T=T)  # fmt: skip


def denoise_block_vjp(u0, scale, shift, tau, *, prior: str, levels: int, K: int, grad_uK,
                      need_u0: bool = False):  # fmt: skip
    """The VJP of :func:`denoise_block` on u0's device: (∂u₀ | None, ∂scale, ∂shift)."""
    return _require(u0.device).denoise_block_vjp(
        u0, scale, shift, tau, prior=prior, levels=levels, K=K, grad_uK=grad_uK,
        need_u0=need_u0,
    )  # fmt: skip


class DenoiseBlock(torch.autograd.Function):
    """u_K = Φ_K(u₀) as a differentiable function of (u₀, scale, shift), τ a constant.

    Forward: the fused kernel. Backward: the fused VJP (states recomputed per group); under
    ``create_graph`` (a double backward), autograd through the eager reference steps instead,
    so second derivatives are exact too.
    """

    @staticmethod
    def forward(u0, scale, shift, tau, prior, levels, K):  # type: ignore[override]
        """u_K by the fused kernel of u0's device."""
        return denoise_block(u0, scale, shift, tau, prior=prior, levels=levels, K=K)[0]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        """Keep (u₀, scale, shift) and the constants: the backward recomputes the states."""
        u0, scale, shift, tau, prior, levels, K = inputs
        ctx.save_for_backward(u0, scale, shift)
        ctx.tau, ctx.prior, ctx.levels, ctx.K = tau, prior, levels, K

    @staticmethod
    def backward(ctx: Any, grad_uK: torch.Tensor) -> Any:
        """(∂u₀, ∂scale, ∂shift): the fused VJP, or the eager one under ``create_graph``."""
        u0, scale, shift = ctx.saved_tensors
        need_u0 = ctx.needs_input_grad[0]
        kw = {"prior": ctx.prior, "levels": ctx.levels, "K": ctx.K, "need_u0": need_u0}
        if torch.is_grad_enabled():
            g = reference.denoise_block_vjp(u0, scale, shift, ctx.tau, grad_uK=grad_uK,
                                            create_graph=True, **kw)  # fmt: skip
        else:
            g = denoise_block_vjp(u0, scale, shift, ctx.tau, grad_uK=grad_uK, **kw)
        grad_u0, grad_scale, grad_shift = g
        if ctx.needs_input_grad[1] is False:
            grad_scale = None
        return grad_u0, grad_scale, grad_shift, None, None, None, None
