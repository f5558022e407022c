"""Before/after, in one run, of the no-graph restart loop Φ_K^T (eq. 24).

``before`` is the loop as it was (kept below as :func:`restart_before`, the reference): one
call of the unrolled block per restart, each opening its own memo scope, the block residual
``‖x − x_prev‖`` of a fresh difference tensor appended to a list and stacked at the end.
``after`` is :func:`retune_suite.operators.restart` as shipped: the K·T steps inline under one
``no_grad`` and one memo scope, the residuals written in place into one preallocated device
tensor, the block difference into one reused buffer (``out=``). Neither reads a tensor on the
host inside the loop. Both are timed interleaved in one process on the same data, medians of
``--repeats``, on

* ``denoise``: the section-4 denoising step (51), 4 × 3 × 256 × 256 float32, θ_BC, K = T = 10
  (the step costs ~2 ms: the loop's own work is a small part of it);
* ``tiny``: an affine step x ↦ θx + 1 on 1000 numbers, K = T = 10, where the per-step and
  per-block overhead of the loop is what is measured.

Allocations are counted per step by a :class:`TorchDispatchMode` that counts the tensors aten
ops create (outputs that share no storage with an input); this includes the step's own
output and temporaries, which the loop cannot avoid (a step returns a new tensor).

    python -m benchmarks.restart_before_after --threads 2 --out <file.json>
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.utils._pytree as pytree
from retune_suite.operators import restart, unroll
from retune_suite.operators.errors import NotContractiveError
from retune_suite.operators.maps import section4
from retune_suite.operators.memo import block_scope
from retune_suite.operators.theta import check_count, check_point
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import median_seconds, report


def restart_before(step, theta, x0: torch.Tensor, K: int, T: int):
    """The restart loop before this change (reference for the timing; same results)."""
    check_count(K, "K")
    check_count(T, "T")
    check_point(x0, "x0", theta)
    Phi = unroll(step, K)
    residuals = []
    with torch.no_grad(), block_scope():
        x_prev, x = x0, x0
        for _ in range(T):
            x_prev, x = x, Phi(x, theta)
            residuals.append(torch.linalg.vector_norm(x - x_prev))
    res = torch.stack(residuals).to("cpu", torch.float64)
    if not torch.isfinite(res).all():
        raise NotContractiveError("NaN/inf", res.tolist())
    return x.detach(), x_prev.detach(), res


class NewTensors(TorchDispatchMode):
    """Counts the tensors that aten ops create (outputs sharing no storage with an input:
    views and ``out=`` results are not new) and the host reads of a tensor's value
    (``_local_scalar_dense``: ``.item()``, ``bool()``, ``float()``; a sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.host_reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten._local_scalar_dense.default:
            self.host_reads += 1
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        seen = {t.untyped_storage().data_ptr() for t in inputs if t.numel() > 0}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.count += 1
        return out


def allocations(fn) -> int:
    """Tensors created by aten ops during one call of ``fn`` (a dispatch-mode counter: one per
    op output that is not a view or an ``out=`` argument; the step's own outputs included)."""
    fn()
    with NewTensors() as counter:
        fn()
    return counter.count


def _problems(size: int, batch: int):
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, size, size, generator=gen)
    sigma = torch.tensor([0.1, 0.25, 0.5]).reshape(1, 3, 1, 1)
    y = clean + sigma * torch.randn(clean.shape, generator=gen)
    p = section4.build("denoise", "wavelet-BC", clean=clean, y=y, log_lambda=-1.5)
    yield "denoise", p.step, p.theta, p.x0

    def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return theta * x + 1.0

    yield "tiny", affine, torch.tensor(0.5), torch.zeros(1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (min taken)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    K, T = args.K, args.T
    rows = [{"load_average_before": os.getloadavg()}]
    for name, step, theta, x0 in _problems(args.size, args.batch):
        variants = {
            "before": lambda s=step, th=theta, x=x0: restart_before(s, th, x, K, T),
            "after": lambda s=step, th=theta, x=x0: restart(s, th, x, K, T),
        }
        old, new = variants["before"](), variants["after"]()
        same = torch.equal(old[0], new.x) and torch.equal(old[1], new.x_prev)
        same = same and torch.equal(old[2], new.stats.residuals)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):  # interleaved against drift
            for v, fn in variants.items():
                times[v].append(median_seconds(fn, args.repeats))
        for v, fn in variants.items():
            best = min(times[v])
            rows.append(
                {
                    "problem": name,
                    "variant": v,
                    "loop_s": best,
                    "ms_per_step": 1e3 * best / (K * T),
                    "allocations_per_step": allocations(fn) / (K * T),
                    "medians_per_round_s": times[v],
                }
            )
        rows.append(
            {
                "problem": name,
                "variant": "after / before",
                "time_ratio": min(times["after"]) / min(times["before"]),
                "bitwise_equal_results": same,
            }
        )
    rows.append({"load_average_after": os.getloadavg()})
    report(rows, args.threads, [args.batch, 3, args.size, args.size], args.out)


if __name__ == "__main__":
    main()
