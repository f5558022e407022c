"""asv: the fused path of the wavelet denoising map (issue 28): one K-step block, its VJP,
and ReTune with the kernels on and off, against the 4-pass bandwidth floor.

``track_block_floor_fraction`` is the floor (read u and the two θ-maps, write u⁺, per step, at
the copy bandwidth measured in the same process) over the measured time per step: 1 would be a
step as fast as memory allows; above 1 the block beats the per-step floor, which a K-step block
may (it reads and writes u once per K steps). The kernel is built (or loaded from torch's
extension cache) in ``setup``; a combination without a kernel for its device raises
NotImplementedError (asv's skip). The Triton kernel runs on ``cuda`` where it is available.
"""

from __future__ import annotations

import time

import torch
from retune_suite.operators import hypergrad

from .common import device_or_skip, synchronize, wavelet_problem
from .restart import PASSES_PER_STEP, copy_bandwidth


def _fused_or_skip(device: torch.device):
    from retune_suite.operators.maps import fused

    if fused.backend(device) == "eager":
        raise NotImplementedError(f"no fused kernel for {device}")
    return fused


class FusedBlock:
    params = (["B", "BC"], [64, 256], ["cpu", "cuda"], [1, 10])
    param_names = ("prior", "size", "device", "K")
    timeout = 300

    def setup(self, prior, size, device, K):
        self.device = device_or_skip(device)
        self.fused = _fused_or_skip(self.device)
        p = wavelet_problem("denoise", size, 4, "float32", self.device)
        fb = p.fb
        if prior != fb.prior:
            from retune_suite.operators.maps import section4

            p = section4.build("denoise", f"wavelet-{prior}", clean=p.clean, log_lambda=-2.0)
            fb = p.fb
        self.tau, self.scale, self.shift = fb._maps(p.theta)
        self.u0 = p.x0
        self.kw = {"prior": prior, "levels": fb.levels, "K": K}
        self.grad = torch.ones_like(self.u0)
        self._block()  # warm-up
        synchronize(self.device)

    def _block(self):
        out = self.fused.denoise_block(self.u0, self.scale, self.shift, self.tau, **self.kw)
        synchronize(self.device)
        return out

    def _vjp(self):
        out = self.fused.denoise_block_vjp(
            self.u0, self.scale, self.shift, self.tau, grad_uK=self.grad, **self.kw
        )
        synchronize(self.device)
        return out

    def time_block(self, prior, size, device, K):
        self._block()

    def time_block_vjp(self, prior, size, device, K):
        self._vjp()

    def track_block_floor_fraction(self, prior, size, device, K):
        bandwidth = copy_bandwidth(self.u0)
        start = time.perf_counter()
        self._block()
        per_step = (time.perf_counter() - start) / K
        floor = PASSES_PER_STEP * self.u0.numel() * self.u0.element_size() / bandwidth
        return floor / per_step

    track_block_floor_fraction.unit = "floor / time per step"


class FusedRetune:
    """One ReTune hypergradient (K = T = 10) of the 4 × 3 × size² colour denoising problem,
    with the fused kernels (``fused``) and with the eager step (``eager``)."""

    params = (["fused", "eager"], [64, 256], ["cpu", "cuda"])
    param_names = ("path", "size", "device")
    timeout = 300

    def setup(self, path, size, device):
        self.device = device_or_skip(device)
        self.fused = _fused_or_skip(self.device)
        p = wavelet_problem("denoise", size, 4, "float32", self.device)
        self.p = p
        self.on = path == "fused"
        self._run()  # warm-up

    def teardown(self, path, size, device):
        # asv calls teardown after a skipped setup too (no CUDA): nothing was switched then
        if hasattr(self, "fused"):
            self.fused.set_enabled(None)

    def _run(self):
        self.fused.set_enabled(self.on)
        p = self.p
        hypergrad.retune(p.step, p.theta, p.x0, p.loss, 10, 10)
        synchronize(self.device)

    def time_retune(self, path, size, device):
        self._run()

    def peakmem_retune(self, path, size, device):
        self._run()
