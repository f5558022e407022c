"""asv: restart loop and hypergradient estimators on the small exact problems (CPU, float64).

Image-scale suites (float32, CUDA) come with the image-scale operators.
"""

from __future__ import annotations

import torch

from operators import fixed_point, hypergrad, problems, restart


class SmallProblem:
    """Base class: one exact problem per (prior, n), float64 on the CPU."""

    params = (["l1", "group_l21", "logcosh"], [64, 1024])
    param_names = ("prior", "n")
    timeout = 120

    def setup(self, prior: str, n: int) -> None:
        torch.set_num_threads(1)
        self.p = problems.make_problem(prior, n=n, d=8, mu=0.1, L=1.0, rho=0.01)
        self.x_star = fixed_point(self.p.step, self.p.theta, self.p.x0, 10).x


class Restart(SmallProblem):
    def time_restart_K10_T10(self, prior: str, n: int) -> None:
        restart(self.p.step, self.p.theta, self.p.x0, 10, 10)

    def peakmem_restart_K10_T10(self, prior: str, n: int) -> None:
        restart(self.p.step, self.p.theta, self.p.x0, 10, 10)

    def track_restart_iterations_per_second(self, prior: str, n: int) -> float:
        import time

        start = time.perf_counter()
        restart(self.p.step, self.p.theta, self.p.x0, 10, 10)
        return 100 / (time.perf_counter() - start)

    track_restart_iterations_per_second.unit = "steps/s"


class Hypergradient(SmallProblem):
    def time_hypergradient_retune(self, prior: str, n: int) -> None:
        hypergrad.retune(self.p.step, self.p.theta, self.p.x0, self.p.loss, 10, 10)

    def time_hypergradient_unrolled(self, prior: str, n: int) -> None:
        hypergrad.unrolled(self.p.step, self.p.theta, self.p.x0, self.p.loss, 10, 10)

    def time_hypergradient_jfb(self, prior: str, n: int) -> None:
        hypergrad.jfb(self.p.step, self.p.theta, self.x_star, self.p.loss, 10)

    def time_hypergradient_deq_solve(self, prior: str, n: int) -> None:
        hypergrad.deq_solve(self.p.step, self.p.theta, self.x_star, self.p.loss, 10, tol=1e-10)

    def peakmem_hypergradient_retune(self, prior: str, n: int) -> None:
        hypergrad.retune(self.p.step, self.p.theta, self.p.x0, self.p.loss, 10, 10)

    def peakmem_hypergradient_unrolled(self, prior: str, n: int) -> None:
        hypergrad.unrolled(self.p.step, self.p.theta, self.p.x0, self.p.loss, 10, 10)

    def track_retune_relative_error(self, prior: str, n: int) -> float:
        """‖g − g^R‖/‖g‖ against the DEQ reference: a speed-up must not break accuracy."""
        g = hypergrad.deq_solve(self.p.step, self.p.theta, self.x_star, self.p.loss, 10, tol=1e-12)
        g_r = hypergrad.retune(self.p.step, self.p.theta, self.p.x0, self.p.loss, 10, 10)
        return (torch.linalg.vector_norm(g - g_r) / torch.linalg.vector_norm(g)).item()

    track_retune_relative_error.unit = "relative error"
