"""asv: one hypergradient per estimator (time, memory), CUDA memory in a fresh process, and
accuracy figures so that a speed-up that breaks accuracy is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from operators import fixed_point, hypergrad

from .common import device_or_skip, synchronize, wavelet_problem

ESTIMATORS = ("retune", "unrolled", "jfb", "deq_solve")
ROOT = Path(__file__).resolve().parents[1]  # the probe imports benchmarks.common from here


def _call(name, step, theta, u0, u_star, loss, K, T):
    if name == "retune":
        return hypergrad.retune(step, theta, u0, loss, K, T)
    if name == "unrolled":
        return hypergrad.unrolled(step, theta, u0, loss, K, T)
    if name == "jfb":
        return hypergrad.jfb(step, theta, u_star, loss, K)
    return hypergrad.deq_solve(step, theta, u_star, loss, 1, tol=1e-6, maxiter=5000)


class Hypergradient:
    params = (ESTIMATORS, ["denoise", "inpaint"], [64, 256], ["cpu", "cuda"], [2, 10, 40])
    param_names = ("estimator", "task", "size", "device", "T")
    timeout = 600
    K = 10

    def setup(self, estimator, task, size, device, T):
        if estimator in ("jfb", "deq_solve") and T != 10:
            raise NotImplementedError("T does not enter this estimator")
        self.device = device_or_skip(device)
        p = wavelet_problem(task, size, 4, "float32", self.device)
        self.step, self.theta, self.u0, self.loss = p.step, p.theta, p.x0, p.loss
        self.u_star = fixed_point(
            self.step, self.theta, self.u0, 1, rtol=1e-6, method="anderson", max_blocks=20_000
        ).x

    def _run(self, estimator, T):
        _call(estimator, self.step, self.theta, self.u0, self.u_star, self.loss, self.K, T)
        synchronize(self.device)

    def time_hypergradient(self, estimator, task, size, device, T):
        self._run(estimator, T)

    def peakmem_hypergradient(self, estimator, task, size, device, T):
        self._run(estimator, T)


_CUDA_PROBE = """
import json, sys, torch
from benchmarks.common import wavelet_problem
from benchmarks.hypergradient import _call
from operators import fixed_point
estimator, task, size, T = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
device = torch.device("cuda")
p = wavelet_problem(task, size, 4, "float32", device)
step, theta, u0, loss = p.step, p.theta, p.x0, p.loss
u_star = fixed_point(step, theta, u0, 1, rtol=1e-6, method="anderson", max_blocks=20000).x
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
base = torch.cuda.memory_allocated()
_call(estimator, step, theta, u0, u_star, loss, 10, T)
torch.cuda.synchronize()
print(json.dumps(torch.cuda.max_memory_allocated() - base))
"""


class CudaMemory:
    """CUDA max allocated bytes of one hypergradient, measured in a fresh process."""

    params = (ESTIMATORS, [256], [2, 10, 40])
    param_names = ("estimator", "size", "T")
    timeout = 600

    def setup(self, estimator, size, T):
        device_or_skip("cuda")

    def track_cuda_max_allocated_bytes(self, estimator, size, T):
        out = subprocess.run(
            [sys.executable, "-c", _CUDA_PROBE, estimator, "denoise", str(size), str(T)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    track_cuda_max_allocated_bytes.unit = "bytes"


class Accuracy:
    """Relative error of ReTune and JFB to the DEQ reference, and Lemma 1 bound / observed."""

    params = (["denoise", "inpaint"], [1, 10])
    param_names = ("task", "K")
    timeout = 600

    def setup(self, task, K):
        self.problem = wavelet_problem(task, 64, 2, "float64", torch.device("cpu"))
        p = self.problem
        self.step, self.theta, self.u0, self.loss = p.step, p.theta, p.x0, p.loss
        self.u_star = fixed_point(
            self.step, self.theta, self.u0, 1, rtol=1e-12, method="anderson"
        ).x
        g = hypergrad.deq_solve(
            self.step, self.theta, self.u_star, self.loss, 1, tol=1e-11, maxiter=20_000
        )
        self.g = torch.cat([t.reshape(-1) for t in g])

    def _rel(self, grad):
        v = torch.cat([t.reshape(-1) for t in grad])
        return (torch.linalg.vector_norm(v - self.g) / torch.linalg.vector_norm(self.g)).item()

    def track_retune_relative_error(self, task, K):
        return self._rel(hypergrad.retune(self.step, self.theta, self.u0, self.loss, K, 10))

    def track_jfb_relative_error(self, task, K):
        return self._rel(hypergrad.jfb(self.step, self.theta, self.u_star, self.loss, K))

    def track_lemma1_bound_over_observed(self, task, K):
        """Lemma 1 bound / observed JFB error (≥ 1 while the lemma holds; denoising only:
        without strong convexity there is no analytic δ_K, and the figure is NaN)."""
        delta = self.problem.delta(K)
        if delta is None:
            return float("nan")
        from bounds import constants, statements
        from operators import unroll

        Phi = unroll(self.step, K)
        bound = statements.lemma1(
            delta,
            torch.linalg.vector_norm(hypergrad.loss_gradient(self.loss, self.u_star)).item(),
            constants.dtheta_norm(Phi, self.u_star, self.theta),
        )
        observed = self._rel(hypergrad.jfb(self.step, self.theta, self.u_star, self.loss, K))
        return bound / (observed * torch.linalg.vector_norm(self.g).item())

    track_retune_relative_error.unit = "relative error"
    track_jfb_relative_error.unit = "relative error"
    track_lemma1_bound_over_observed.unit = "ratio"
