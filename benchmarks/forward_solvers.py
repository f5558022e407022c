"""Forward solvers of the fixed-point modes, in one run: Picard, Anderson and Broyden
(:func:`retune_suite.operators.fixed_point`, ``method=``) on the same problems and starts.

Problems: the section-4 problems (``section4.build``: denoise, inpaint, deblur × wavelet-B,
wavelet-BC, foe) on one random 3 × 32 × 32 image in float64, K = 1; and a small convolutional
DEQ (:class:`TinyConvCell`: z ↦ tanh(ρ·conv(z)/σ + x), a ρ-contraction by construction, with
ρ = 0.9 and 0.99, σ the initial kernel's operator norm) on a batch of 4 × 8 × 16 × 16, per
sample (``batch_dim=0``). Each solve goes to the default tolerance (64 ulps); a solver that
does not get there within ``max_blocks`` is reported with its reason (best effort,
``on_nonconvergence="warn"``). Rows: blocks (= Φ_K evaluations), seconds (median of
``--repeats``), and both as ratios to Picard.

    python -m benchmarks.forward_solvers --threads 2 --out <file.json>
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from retune_suite.operators import fixed_point
from retune_suite.operators.errors import NonConvergenceWarning
from retune_suite.operators.maps import section4

from benchmarks.common import report

METHODS = ("picard", "anderson", "broyden")


class TinyConvCell(torch.nn.Module):
    """z ↦ tanh(ρ·conv(z)/σ + x), σ = ‖conv‖₂ of the initial kernel (power iteration): a
    ρ-contraction in z, with ∂_z of Lipschitz constant close to ρ near z = 0."""

    def __init__(self, channels: int, rho: float, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).double()
        v = torch.randn(1, channels, 16, 16, dtype=torch.float64)
        with torch.no_grad():
            for _ in range(200):  # σ² of convᵀconv on 16 × 16 images
                v = torch.nn.functional.conv_transpose2d(self.conv(v), self.conv.weight, padding=1)
                sigma2 = torch.linalg.vector_norm(v)
                v = v / sigma2
        self.scale = rho / float(sigma2.sqrt())

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.scale * self.conv(z) + x)


def problems() -> list[tuple[str, object, object, torch.Tensor, int | None]]:
    """(name, step, θ, x0, batch_dim) for every measured problem."""
    out = []
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=gen)
    for task in section4.TASKS:
        for prior in ("wavelet-B", "wavelet-BC", "foe"):
            p = section4.build(task, prior, clean=clean, seed=0)
            out.append((f"{task}/{prior}", p.step, p.theta, p.x0, None))
    for rho in (0.9, 0.99):
        cell = TinyConvCell(8, rho)
        x = 0.1 * torch.randn(4, 8, 16, 16, dtype=torch.float64, generator=gen)
        theta = tuple(cell.parameters())

        def step(z, theta, cell=cell, x=x):
            return cell(z, x)

        out.append((f"conv-DEQ ρ={rho}", step, theta, torch.zeros_like(x), 0))
    return out


def measure(repeats: int, max_blocks: int) -> list[dict]:
    rows = []
    for name, step, theta, x0, batch_dim in problems():
        base: dict = {}
        for method in METHODS:
            times, result = [], None
            for _ in range(repeats):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NonConvergenceWarning)
                    result = fixed_point(
                        step, theta, x0, 1, method=method, max_blocks=max_blocks,
                        batch_dim=batch_dim, on_nonconvergence="warn",
                    )  # fmt: skip
                times.append(time.perf_counter() - start)
            assert result is not None
            seconds = sorted(times)[len(times) // 2]
            blocks = result.stats.blocks
            if method == "picard":
                base = {"blocks": blocks, "seconds": seconds}
            rows.append(
                {
                    "problem": name,
                    "method": method,
                    "blocks": blocks,
                    "seconds": round(seconds, 4),
                    "blocks_vs_picard": round(blocks / base["blocks"], 3),
                    "seconds_vs_picard": round(seconds / base["seconds"], 3),
                    "converged": result.stats.converged,
                    "reason": result.stats.reason,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-blocks", type=int, default=5000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.repeats, args.max_blocks)
    report(rows, args.threads, [3, 32, 32], args.out)


if __name__ == "__main__":
    main()
