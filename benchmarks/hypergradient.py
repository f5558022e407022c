"""asv: one hypergradient per estimator (time, memory), CUDA memory in a fresh process, and
accuracy figures so that a speed-up that breaks accuracy is caught.

What is slow to prepare is prepared once per suite, in ``setup_cache`` (asv runs it once and
hands its pickled result to every ``setup``): the fixed points x̂ at which JFB and deq_solve
are evaluated (the inpainting one took minutes per parameter combination when each ``setup``
solved for it), and the float64 references of the accuracy figures. The fixed points of the
timing suite are solved to ``FIXED_POINT_RTOL`` (Anderson): JFB costs K VJPs wherever it is
evaluated, and deq_solve's GMRES count near x̂ depends on ∂ₓΦ there, not on the last digits of
x̂; the accuracy suite keeps its float64 references at 1e-12 / 1e-11.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from retune_suite.operators import fixed_point, hypergrad

from .common import device_or_skip, synchronize, wavelet_problem

ESTIMATORS = ("retune", "unrolled", "jfb", "deq_solve")
ROOT = Path(__file__).resolve().parents[1]  # the probe imports benchmarks.common from here
FIXED_POINT_RTOL = 1e-4
"""Relative step ‖Φ(x) − x‖/‖Φ(x)‖ of the timing suite's x̂ (see the module docstring)."""
DEQ_TOL = 1e-4
"""Relative residual of the benchmarked deq_solve (a float32 DEQ training tolerance). At 1e-6
the 256² inpainting solve alone took 2.3 minutes of the quick run, twice (time and peakmem)."""
DEQ_MAXITER = 5000


def _call(name, step, theta, u0, u_star, loss, K, T):
    if name == "retune":
        return hypergrad.retune(step, theta, u0, loss, K, T)
    if name == "unrolled":
        return hypergrad.unrolled(step, theta, u0, loss, K, T)
    if name == "jfb":
        return hypergrad.jfb(step, theta, u_star, loss, K)
    return hypergrad.deq_solve(step, theta, u_star, loss, 1, tol=DEQ_TOL, maxiter=DEQ_MAXITER)


def fixed_points(tasks, sizes) -> dict[tuple[str, int], torch.Tensor]:
    """x̂ of each (task, size) problem of the timing suite (batch 4, float32, CPU), Anderson
    to :data:`FIXED_POINT_RTOL`; the CUDA combinations take a copy (explicit ``.to``)."""
    cpu = torch.device("cpu")
    out = {}
    for task in tasks:
        for size in sizes:
            p = wavelet_problem(task, size, 4, "float32", cpu)
            out[(task, size)] = fixed_point(
                p.step, p.theta, p.x0, 1, rtol=FIXED_POINT_RTOL, method="anderson"
            ).x
    return out


TASKS, SIZES = ("denoise", "inpaint"), (64, 256)


def _fixed_point_cache(self) -> dict[tuple[str, int], torch.Tensor]:
    """The suite's ``setup_cache``: every x̂ of :data:`TASKS` × :data:`SIZES`, once."""
    return fixed_points(TASKS, SIZES)


_fixed_point_cache.timeout = 1200


class Hypergradient:
    params = (ESTIMATORS, list(TASKS), list(SIZES), ["cpu", "cuda"], [2, 10, 40])
    param_names = ("estimator", "task", "size", "device", "T")
    timeout = 600
    K = 10

    setup_cache = _fixed_point_cache

    def setup(self, cache, estimator, task, size, device, T):
        if estimator in ("jfb", "deq_solve") and T != 10:
            raise NotImplementedError("T does not enter this estimator")
        self.device = device_or_skip(device)
        p = wavelet_problem(task, size, 4, "float32", self.device)
        self.step, self.theta, self.u0, self.loss = p.step, p.theta, p.x0, p.loss
        self.u_star = cache[(task, size)].to(self.device)  # CPU-solved x̂, copied explicitly

    def _run(self, estimator, T):
        out = _call(estimator, self.step, self.theta, self.u0, self.u_star, self.loss, self.K, T)
        synchronize(self.device)
        return out

    def time_hypergradient(self, cache, estimator, task, size, device, T):
        self._run(estimator, T)

    def peakmem_hypergradient(self, cache, estimator, task, size, device, T):
        self._run(estimator, T)


_CUDA_PROBE = """
import json, sys, torch
from benchmarks.common import wavelet_problem
from benchmarks.hypergradient import FIXED_POINT_RTOL, _call
from retune_suite.operators import fixed_point
estimator, task, size, T = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
device = torch.device("cuda")
p = wavelet_problem(task, size, 4, "float32", device)
step, theta, u0, loss = p.step, p.theta, p.x0, p.loss
u_star = fixed_point(step, theta, u0, 1, rtol=FIXED_POINT_RTOL, method="anderson").x
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


def accuracy_problem(task: str):
    """The accuracy suite's problem: 2 crops of 64², float64, CPU."""
    return wavelet_problem(task, 64, 2, "float64", torch.device("cpu"))


def accuracy_reference(task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂ (Anderson to rtol 1e-12) and the DEQ gradient there (GMRES to 1e-11), flattened."""
    p = accuracy_problem(task)
    u_star = fixed_point(p.step, p.theta, p.x0, 1, rtol=1e-12, method="anderson").x
    g = hypergrad.deq_solve(p.step, p.theta, u_star, p.loss, 1, tol=1e-11, maxiter=20_000)
    return u_star, torch.cat([t.reshape(-1) for t in g])


class Accuracy:
    """Relative error of ReTune and JFB to the DEQ reference, and Lemma 1 bound / observed."""

    params = (list(TASKS), [1, 10])
    param_names = ("task", "K")
    timeout = 600

    def setup_cache(self):
        return {task: accuracy_reference(task) for task in TASKS}

    setup_cache.timeout = 1200

    def setup(self, cache, task, K):
        self.problem = accuracy_problem(task)
        p = self.problem
        self.step, self.theta, self.u0, self.loss = p.step, p.theta, p.x0, p.loss
        self.u_star, self.g = cache[task]

    def _rel(self, grad):
        v = torch.cat([t.reshape(-1) for t in grad])
        return (torch.linalg.vector_norm(v - self.g) / torch.linalg.vector_norm(self.g)).item()

    def track_retune_relative_error(self, cache, task, K):
        return self._rel(hypergrad.retune(self.step, self.theta, self.u0, self.loss, K, 10))

    def track_jfb_relative_error(self, cache, task, K):
        return self._rel(hypergrad.jfb(self.step, self.theta, self.u_star, self.loss, K))

    def track_lemma1_bound_over_observed(self, cache, task, K):
        """Lemma 1 bound / observed JFB error (≥ 1 while the lemma holds; denoising only:
        without strong convexity there is no analytic δ_K, and the figure is NaN)."""
        delta = self.problem.delta(K)
        if delta is None:
            return float("nan")
        from retune_suite.bounds import constants, statements
        from retune_suite.operators import unroll

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
