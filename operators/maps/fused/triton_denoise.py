r"""K denoising steps (51) per wavelet group in one Triton kernel, and their VJP (section 4.1).

For denoising (A = I) the forward-backward step (51) of
:class:`~retune_suite.operators.maps.wavelet_prior.WaveletFB` is elementwise in the packed
wavelet layout, with ``(tau, scale, shift) = WaveletFB._maps(theta)``:

.. math::

    φ(u) = \mathrm{prox}_{τ‖\cdot‖_{1,2}}(u ⊙ s + b), \qquad s = 1 − τ/θ^2, \; b = (τ/θ) D y,

where the prox multiplies each group g (the bands cH, cV, cD of one level at one position, per
channel for θ_B, over the channels too for θ_BC) by relu(1 − τ / √max(‖v_g‖², tiny)) and
leaves the approximation block alone. No group meets another, so one program runs all K steps
of its groups in registers: one read of (u₀, s, b) and one write of u_K, where the eager step
runs ~24 kernels over the whole tensor at every step. :func:`denoise_block_vjp` is the VJP of
those K steps with respect to (u₀, s, b) (τ is not differentiated, as in the eager step),
recomputing each group's states in the kernel, with the arithmetic of torch's backward through
``WaveletFB._prox`` (relu's gradient 0 where a factor is 0, clamp_min's below tiny).

These are the CUDA kernels of issue 28 (item 2), next to the C++ kernel of the CPU path.
tests/test_triton_denoise.py runs them in Triton's interpreter mode on CPU tensors against the
eager step unrolled K times (autograd for the VJP) in float32 and float64, and compiles them
for sm_90 without a GPU; they are not yet timed on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import types
from typing import NamedTuple

import torch

from ...errors import InvalidInputError

__all__ = ["available", "denoise_block", "denoise_block_vjp"]

PRIORS = ("B", "BC")

# The VJP recomputes state k from u₀ for each k (K(K+1)/2 steps, all in registers) up to this
# K and above it keeps the K states in a global scratch buffer (K copies of u, 2K extra passes
# over memory). An untuned guess: the crossover is for a GPU session to measure.
RECOMPUTE_MAX_K = 16


def available(device: torch.device | str) -> bool:
    """Whether the kernels can run on ``device``: triton importable and ``device`` CUDA, or
    Triton's interpreter mode on (``TRITON_INTERPRET=1`` before triton is imported; then on
    CPU tensors too)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.device(device).type == "cuda" or _interpreting()


def denoise_block(
    u0: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    tau: torch.Tensor,
    *,
    prior: str,
    levels: int,
    K: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K denoising steps from u₀ without a graph: ``(u_K, res_sq)``.

    ``u0`` and ``shift`` have shape (B, C, H, W), ``scale`` (1, C, H, W), ``tau`` is a 0-dim
    tensor; all of one floating dtype (float32 or float64) on one device. ``res_sq[i]`` is
    Σ (u_K − u₀)² over sample i, shape (B,), in u's dtype.
    """
    B, C, H, W = _check(u0, scale, shift, tau, prior, levels, K)
    u0, scale, shift = u0.contiguous(), scale.contiguous(), shift.contiguous()
    kernels = _kernels()
    launch = _launch(B, C, H, W, prior, levels, u0.dtype)
    uK = torch.empty_like(u0)
    partial = u0.new_empty(launch.grid[1], launch.grid[0])
    with _on(u0.device):
        kernels["_block_kernel"][launch.grid](
            u0,
            scale,
            shift,
            *_scalars(tau, u0),
            uK,
            partial,
            K,
            **launch.meta,
        )
    return uK, partial.reshape(B, -1).sum(dim=1)


def denoise_block_vjp(
    u0: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    tau: torch.Tensor,
    *,
    prior: str,
    levels: int,
    K: int,
    grad_uK: torch.Tensor,
    need_u0: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The VJP of the K steps of :func:`denoise_block` at ``grad_uK`` (the gradient of a loss
    with respect to u_K): ``(grad_u0 or None, grad_scale, grad_shift)``.

    ``grad_scale`` has scale's shape (1, C, H, W), summed over the batch and the K steps;
    ``grad_shift`` has shift's shape (B, C, H, W); ``grad_u0`` (shape of u₀) only with
    ``need_u0``. τ is not differentiated. The states u_k are recomputed from u₀ inside the
    kernel (see ``RECOMPUTE_MAX_K``).
    """
    _check(u0, scale, shift, tau, prior, levels, K)
    if grad_uK.shape != u0.shape or grad_uK.dtype != u0.dtype or grad_uK.device != u0.device:
        raise InvalidInputError(
            f"grad_uK must match u0 ({tuple(u0.shape)}, {u0.dtype}, {u0.device}), got "
            f"({tuple(grad_uK.shape)}, {grad_uK.dtype}, {grad_uK.device})."
        )
    store = K > RECOMPUTE_MAX_K and u0.numel() * K < 2**31  # int32 offsets in the scratch
    return _vjp(u0, scale, shift, tau, prior, levels, K, grad_uK, need_u0, store)


def _vjp(u0, scale, shift, tau, prior, levels, K, grad_uK, need_u0, store):
    """:func:`denoise_block_vjp` after its checks; ``store`` keeps the K states in a scratch
    buffer instead of recomputing them (both paths are tested)."""
    B, C, H, W = u0.shape
    u0, scale, shift = u0.contiguous(), scale.contiguous(), shift.contiguous()
    grad_uK = grad_uK.contiguous()
    kernels = _kernels()
    launch = _launch(B, C, H, W, prior, levels, u0.dtype)
    grad_u0 = torch.empty_like(u0) if need_u0 else u0  # u0: a placeholder, never written
    grad_scale = torch.empty_like(u0)  # per sample, summed below
    grad_shift = torch.empty_like(u0)
    states = u0.new_empty(K, *u0.shape) if store and K > 0 else u0  # u0: never written
    with _on(u0.device):
        kernels["_vjp_kernel"][launch.grid](
            u0,
            scale,
            shift,
            *_scalars(tau, u0),
            grad_uK,
            grad_u0,
            grad_scale,
            grad_shift,
            states,
            K,
            NEED_U0=need_u0,
            STORE=bool(store),
            **launch.meta,
        )
    return (grad_u0 if need_u0 else None), grad_scale.sum(dim=0, keepdim=True), grad_shift


def _check(u0, scale, shift, tau, prior, levels, K) -> tuple[int, int, int, int]:
    if prior not in PRIORS:
        raise InvalidInputError(f"unknown wavelet prior {prior!r}: choose 'B' or 'BC'.")
    if not isinstance(K, int) or K < 0:
        raise InvalidInputError(f"K must be a non-negative int, got {K!r}.")
    if u0.ndim != 4:
        raise InvalidInputError(f"u0 must have shape (B, C, H, W), got {tuple(u0.shape)}.")
    B, C, H, W = u0.shape
    if not isinstance(levels, int) or levels < 0 or H % (1 << levels) or W % (1 << levels):
        raise InvalidInputError(
            f"H = {H} and W = {W} must be multiples of 2^levels = 2^{levels} (packed layout)."
        )
    if u0.dtype not in (torch.float32, torch.float64):
        raise InvalidInputError(f"the Triton kernels take float32 or float64, got {u0.dtype}.")
    if tuple(scale.shape) != (1, C, H, W) or shift.shape != u0.shape or tau.ndim != 0:
        raise InvalidInputError(
            f"expected scale (1, {C}, {H}, {W}), shift {tuple(u0.shape)} and a 0-dim tau, got "
            f"{tuple(scale.shape)}, {tuple(shift.shape)} and {tuple(tau.shape)}."
        )
    for name, t in (("scale", scale), ("shift", shift), ("tau", tau)):
        if t.dtype != u0.dtype or t.device != u0.device:
            raise InvalidInputError(
                f"{name} must have u0's dtype and device ({u0.dtype}, {u0.device}), got "
                f"({t.dtype}, {t.device})."
            )
    if u0.numel() >= 2**31:
        raise InvalidInputError("the kernels index with int32: B·C·H·W must be below 2^31.")
    return B, C, H, W


def _scalars(tau: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """τ and tiny as one-element tensors of u's dtype: a float argument would reach the kernel
    as float32 (tiny of float64 would be 0) and τ stays on the device (no host sync)."""
    return tau.detach().reshape(1), _tiny(u.dtype, u.device)


@functools.cache
def _tiny(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.finfo(dtype).tiny on ``device``, made once (not one more launch per call)."""
    return torch.full((1,), torch.finfo(dtype).tiny, dtype=dtype, device=device)


class _Launch(NamedTuple):
    grid: tuple[int, int]
    meta: dict[str, int]


def _launch(B: int, C: int, H: int, W: int, prior: str, levels: int, dtype: torch.dtype) -> _Launch:
    """Grid and compile-time constants. Axis 0 runs over blocks of groups, axis 1 over the
    samples (θ_BC: one program holds all channels of a group) or (sample, channel) pairs."""
    groups = sum((H >> (j + 1)) * (W >> (j + 1)) for j in range(levels))
    groups += (H >> levels) * (W >> levels)  # approximation: one coefficient per "group"
    CN = C if prior == "BC" else 1  # channels in one group
    CP = 1 << (CN - 1).bit_length()  # padded to a power of two
    if _interpreting():  # few programs: the interpreter's cost is per operation
        tile = 4096
    else:
        # coefficients of each band per program, 4 warps: ptxas -v for sm_90 (3 × 256 × 256,
        # 4 levels) gives the VJP 96–128 registers in float32 at 512 and 120–136 in float64
        # at 256, no spills. Untuned: the GPU timing is still to be done.
        tile = 512 if dtype == torch.float32 else 256
    block = min(1 << (groups - 1).bit_length(), max(tile // CP, 16))
    grid = (-(-groups // block), B * (C // CN))
    meta = dict(C=C, H=H, W=W, LEVELS=levels, CN=CN, CP=CP, BLOCK=block, num_warps=4)
    return _Launch(grid=grid, meta=meta)


def _interpreting() -> bool:
    try:
        from triton import knobs
    except ImportError:  # older triton: the environment variable itself
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)


def _on(device: torch.device):
    """``torch.cuda.device(device)`` for a CUDA device (Triton launches on the current one)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@functools.cache
def _kernels() -> dict[str, object]:
    """The kernels, decorated with ``triton.jit`` on first use.

    The plain functions below are decorated here, each copy with a namespace where ``tl`` is
    ``triton.language`` and the helper names are the decorated helpers, so that this module
    imports without triton. Triton's mode (compiled or interpreted) is fixed when
    ``triton.language`` is imported: ``TRITON_INTERPRET=1`` must be set before that.
    """
    import triton
    import triton.language

    namespace = {"__name__": __name__, "tl": triton.language}
    callees = (_locate, _tile, _load3, _store3, _step, _advance)
    for fn in (*callees, _block_kernel, _vjp_kernel):  # callees first
        copy = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__)
        copy.__qualname__ = fn.__qualname__
        namespace[fn.__name__] = triton.jit(copy)
    return namespace


# The kernels. ``tl`` and the helpers are bound in the namespace built by _kernels(); these
# plain functions are never called directly.
tl = None


def _locate(g, H: tl.constexpr, W: tl.constexpr, LEVELS: tl.constexpr):
    """Offsets in one (H, W) plane of the three coefficients (cH, cV, cD) of groups ``g``,
    numbered level by level (finest first), then the approximation coefficients (offset in
    o0, ``approx`` true)."""
    o0 = g * 0
    o1 = g * 0
    o2 = g * 0
    start = 0
    for j in tl.static_range(LEVELS):
        h = H >> (j + 1)
        w = W >> (j + 1)
        local = g - start
        inside = (local >= 0) & (local < h * w)
        p = local // w
        q = local % w
        o0 = tl.where(inside, (h + p) * W + q, o0)
        o1 = tl.where(inside, p * W + w + q, o1)
        o2 = tl.where(inside, (h + p) * W + w + q, o2)
        start += h * w
    wa = W >> LEVELS
    ha = H >> LEVELS
    local = g - start
    approx = local >= 0
    o0 = tl.where(approx, (local // wa) * W + local % wa, o0)
    valid = local < ha * wa
    return o0, o1, o2, approx, valid


def _tile(
    C: tl.constexpr,
    H: tl.constexpr,
    W: tl.constexpr,
    LEVELS: tl.constexpr,
    CN: tl.constexpr,
    CP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """This program's (CP, BLOCK) tile: offsets of the three bands in u (p) and in scale (q),
    masks of band 0 (m0) and of bands 1, 2 (m1: none on the approximation), ``approx``.

    Axis 0 of the grid runs over blocks of BLOCK groups, axis 1 over the samples (θ_BC: the
    CN = C channels of a group in one tile, padded to CP) or the (sample, channel) pairs
    (θ_B: CN = CP = 1)."""
    g = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    o0, o1, o2, approx, valid = _locate(g, H, W, LEVELS)
    pid_s = tl.program_id(1)
    ch = (pid_s % (C // CN)) + tl.arange(0, CP)
    batch = pid_s // (C // CN)
    m0 = (tl.arange(0, CP) < CN)[:, None] & valid[None, :]
    m1 = m0 & (approx == 0)[None, :]
    plane_u = ((batch * C + ch) * (H * W))[:, None]
    plane_s = (ch * (H * W))[:, None]
    p0 = plane_u + o0[None, :]
    p1 = plane_u + o1[None, :]
    p2 = plane_u + o2[None, :]
    q0 = plane_s + o0[None, :]
    q1 = plane_s + o1[None, :]
    q2 = plane_s + o2[None, :]
    return p0, p1, p2, q0, q1, q2, m0, m1, approx


def _load3(ptr, p0, p1, p2, m0, m1):
    """The three bands of a tile (0 where masked)."""
    x0 = tl.load(ptr + p0, mask=m0, other=0.0)
    x1 = tl.load(ptr + p1, mask=m1, other=0.0)
    x2 = tl.load(ptr + p2, mask=m1, other=0.0)
    return x0, x1, x2


def _store3(ptr, x0, x1, x2, p0, p1, p2, m0, m1):
    tl.store(ptr + p0, x0, mask=m0)
    tl.store(ptr + p1, x1, mask=m1)
    tl.store(ptr + p2, x2, mask=m1)


def _step(x0, x1, x2, s0, s1, s2, b0, b1, b2, tau, tiny, approx):
    """One step on (CP, BLOCK) tiles of the three bands: v = x ⊙ s + b, the group's squared
    norm n (channels, then cH + cV + cD, as WaveletFB._prox), r = rsqrt(max(n, tiny)),
    a = 1 − τr and the factor f = relu(a) (1 on the approximation)."""
    v0 = tl.fma(x0, s0, b0)  # torch.addcmul(b, x, s), one rounding as torch's CPU kernel
    v1 = tl.fma(x1, s1, b1)
    v2 = tl.fma(x2, s2, b2)
    n = (tl.sum(v0 * v0, axis=0) + tl.sum(v1 * v1, axis=0)) + tl.sum(v2 * v2, axis=0)
    # a NaN stays a NaN through the max, as through torch's clamp_min and relu
    r = tl.math.rsqrt(tl.maximum(n, tiny, propagate_nan=tl.PropagateNan.ALL))
    a = 1.0 - tau * r
    f = tl.where(approx, 1.0, tl.maximum(a, 0.0, propagate_nan=tl.PropagateNan.ALL))
    return v0, v1, v2, n, r, f


def _advance(x0, x1, x2, s0, s1, s2, b0, b1, b2, tau, tiny, approx):
    """u_{k+1} = f ⊙ v from u_k, the three bands."""
    v0, v1, v2, _n, _r, f = _step(x0, x1, x2, s0, s1, s2, b0, b1, b2, tau, tiny, approx)
    return v0 * f[None, :], v1 * f[None, :], v2 * f[None, :]


def _block_kernel(
    u0_ptr,
    scale_ptr,
    shift_ptr,
    tau_ptr,
    tiny_ptr,
    uK_ptr,
    res_ptr,
    K,
    C: tl.constexpr,
    H: tl.constexpr,
    W: tl.constexpr,
    LEVELS: tl.constexpr,
    CN: tl.constexpr,
    CP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    p0, p1, p2, q0, q1, q2, m0, m1, approx = _tile(C, H, W, LEVELS, CN, CP, BLOCK)
    tau = tl.load(tau_ptr)
    tiny = tl.load(tiny_ptr)
    u0, u1, u2 = _load3(u0_ptr, p0, p1, p2, m0, m1)
    s0, s1, s2 = _load3(scale_ptr, q0, q1, q2, m0, m1)
    b0, b1, b2 = _load3(shift_ptr, p0, p1, p2, m0, m1)

    x0 = u0
    x1 = u1
    x2 = u2
    for _ in range(K):
        x0, x1, x2 = _advance(x0, x1, x2, s0, s1, s2, b0, b1, b2, tau, tiny, approx)

    _store3(uK_ptr, x0, x1, x2, p0, p1, p2, m0, m1)
    d0 = x0 - u0
    d1 = x1 - u1
    d2 = x2 - u2
    res = tl.sum(tl.sum(d0 * d0 + d1 * d1 + d2 * d2, axis=1), axis=0)
    tl.store(res_ptr + tl.program_id(1) * tl.num_programs(0) + tl.program_id(0), res)


def _vjp_kernel(
    u0_ptr,
    scale_ptr,
    shift_ptr,
    tau_ptr,
    tiny_ptr,
    g_ptr,
    gu0_ptr,
    gscale_ptr,
    gshift_ptr,
    states_ptr,
    K,
    NEED_U0: tl.constexpr,
    STORE: tl.constexpr,
    C: tl.constexpr,
    H: tl.constexpr,
    W: tl.constexpr,
    LEVELS: tl.constexpr,
    CN: tl.constexpr,
    CP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    p0, p1, p2, q0, q1, q2, m0, m1, approx = _tile(C, H, W, LEVELS, CN, CP, BLOCK)
    tau = tl.load(tau_ptr)
    tiny = tl.load(tiny_ptr)
    u0, u1, u2 = _load3(u0_ptr, p0, p1, p2, m0, m1)
    s0, s1, s2 = _load3(scale_ptr, q0, q1, q2, m0, m1)
    b0, b1, b2 = _load3(shift_ptr, p0, p1, p2, m0, m1)
    g0, g1, g2 = _load3(g_ptr, p0, p1, p2, m0, m1)

    if STORE:  # states[k] = u_k, k < K, in a (K, B, C, H, W) scratch buffer
        numel = tl.num_programs(1) // (C // CN) * C * H * W
        x0 = u0
        x1 = u1
        x2 = u2
        for k in range(K):
            _store3(states_ptr + k * numel, x0, x1, x2, p0, p1, p2, m0, m1)
            x0, x1, x2 = _advance(x0, x1, x2, s0, s1, s2, b0, b1, b2, tau, tiny, approx)
        tl.debug_barrier()  # the loads below may come from other threads of the program

    gs0 = tl.zeros_like(u0)
    gs1 = tl.zeros_like(u0)
    gs2 = tl.zeros_like(u0)
    gb0 = tl.zeros_like(u0)
    gb1 = tl.zeros_like(u0)
    gb2 = tl.zeros_like(u0)
    for kk in range(K):
        k = K - 1 - kk
        if STORE:
            x0, x1, x2 = _load3(states_ptr + k * numel, p0, p1, p2, m0, m1)
        else:  # u_k recomputed from u0: k steps
            x0 = u0
            x1 = u1
            x2 = u2
            for _ in range(k):
                x0, x1, x2 = _advance(x0, x1, x2, s0, s1, s2, b0, b1, b2, tau, tiny, approx)
        v0, v1, v2, n, r, f = _step(x0, x1, x2, s0, s1, s2, b0, b1, b2, tau, tiny, approx)
        # u_{k+1} = f v: the factor's gradient, summed over the group
        gf = (tl.sum(g0 * v0, axis=0) + tl.sum(g1 * v1, axis=0)) + tl.sum(g2 * v2, axis=0)
        ga = tl.where(f > 0.0, gf, 0.0)  # relu: 0 where the factor is 0
        gr = -ga * tau  # a = 1 − τ r
        gm = (-0.5 * gr) * (r * r * r)  # rsqrt, as torch: −½ grad r³
        gn = tl.where((n >= tiny) & (approx == 0), gm, 0.0)  # clamp_min(tiny)
        t0 = gn[None, :] * v0
        t1 = gn[None, :] * v1
        t2 = gn[None, :] * v2
        gv0 = g0 * f[None, :] + (t0 + t0)  # n = Σ v²
        gv1 = g1 * f[None, :] + (t1 + t1)
        gv2 = g2 * f[None, :] + (t2 + t2)
        gs0 += gv0 * x0  # v = u s + b
        gs1 += gv1 * x1
        gs2 += gv2 * x2
        gb0 += gv0
        gb1 += gv1
        gb2 += gv2
        g0 = gv0 * s0
        g1 = gv1 * s1
        g2 = gv2 * s2

    if NEED_U0:
        _store3(gu0_ptr, g0, g1, g2, p0, p1, p2, m0, m1)
    _store3(gscale_ptr, gs0, gs1, gs2, p0, p1, p2, m0, m1)  # this sample's share
    _store3(gshift_ptr, gb0, gb1, gb2, p0, p1, p2, m0, m1)
