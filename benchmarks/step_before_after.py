"""Before/after, in one run, of the denoising FB step (51) (docs/performance.md, "Making the
step fast"), against its bandwidth floor.

Variants, all timed on the same data in the same process, interleaved, medians of
``--repeats`` (the minimum over the two interleaved passes is reported):

- ``before``: the step as first written (gradient in five elementwise passes, the prox by
  unpacking the coefficients and ``torch.linalg.vector_norm`` over (channel, band));
- ``unfused``: the step as shipped until 2026-12-02 (:func:`_step_unfused`): one ``addcmul``,
  the group norms from three strided views of u², the factors packed into a full map by
  ``torch.cat`` and one product (~45 kernels);
- ``after``: :meth:`retune_suite.operators.maps.wavelet_prior.WaveletFB.step` as shipped (in place
without a
  graph: one flat buffer of factors, ~24 kernels);
- ``compiled`` (with ``--compile``): ``WaveletFB(compile=True)``, inductor; its compile time
  (first no-grad call, first call with a graph and its backward) is reported separately.

Per variant: one step (of a K = 10 block), the no-graph restart loop (K = T = 10) and one
ReTune hypergradient (K = T = 10). The floor is 4 passes over the batch (read u and the two
θ-maps, write u⁺) at the copy bandwidth measured in the same run (``copy_`` of the batch, 2
passes); ``floor_fraction`` = floor ÷ step. ::

    python -m benchmarks.step_before_after --threads 2 --compile \\
        --out benchmarks/results/step_before_after-cpu-2026-12-02.json
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager

import retune_suite.operators.iteration as iteration
import torch
from retune_suite.operators import hypergrad, restart
from retune_suite.operators.maps import section4
from retune_suite.operators.maps.wavelet_prior import WaveletFB
from retune_suite.operators.memo import memoize

from benchmarks.common import median_seconds, report
from benchmarks.restart import PASSES_PER_STEP, copy_bandwidth


def _prox_before(fb: WaveletFB, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    approx, details = fb.D.unpack(u)
    dims = (1, 2) if fb.prior == "BC" else (2,)
    out = []
    for d in details:
        norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
        out.append(torch.relu(1 - t / norm.clamp_min(torch.finfo(d.dtype).tiny)) * d)
    return fb.D.pack(approx, out)


def _step_before(fb: WaveletFB, u: torch.Tensor, theta) -> torch.Tensor:
    w = fb.weights(theta)
    tau = fb.tau(w)
    grad = (u / w - fb.D_aty) / w
    return _prox_before(fb, u - tau * grad, tau)


def _prox_unfused(fb: WaveletFB, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """WaveletFB.prox as shipped until 2026-12-02 (commit 5809945)."""
    sq = u * u
    if fb.prior == "BC":
        sq = sq.sum(dim=1, keepdim=True)
    tiny = torch.finfo(u.dtype).tiny
    factors = []
    for h, w in fb._detail_hw():
        norm_sq = sq[..., h : 2 * h, :w] + sq[..., :h, w : 2 * w] + sq[..., h : 2 * h, w : 2 * w]
        f = torch.relu(1 - t * torch.rsqrt(norm_sq.clamp_min(tiny)))
        factors.append(f.unsqueeze(-3).expand(*f.shape[:-2], 3, h, w))
    ones = torch.ones((1, 1, *fb._approx_hw()), device=u.device, dtype=u.dtype)
    return u * fb.D.pack(ones, factors)


def _step_unfused(fb: WaveletFB, u: torch.Tensor, theta) -> torch.Tensor:
    """WaveletFB.step (denoising) as shipped until 2026-12-02: memoized θ-maps, one addcmul."""
    tau, scale, shift = memoize(fb, "denoising", theta, lambda: fb._maps(theta))
    return _prox_unfused(fb, torch.addcmul(shift, u, scale), tau)


@contextmanager
def _variant(name: str):
    original = WaveletFB.step
    if name == "before":
        WaveletFB.step = lambda self, u, theta: _step_before(self, u, theta)
    elif name == "unfused":
        WaveletFB.step = lambda self, u, theta: _step_unfused(self, u, theta)
    try:
        yield
    finally:
        WaveletFB.step = original


def _timings(fb: WaveletFB, u0, theta, loss, repeats: int) -> tuple[float, float, float, list]:
    with torch.no_grad():
        step = median_seconds(lambda: iteration.unroll(fb.step, 10)(u0, theta), repeats) / 10
    loop = median_seconds(lambda: restart(fb.step, theta, u0, 10, 10), repeats)
    g = hypergrad.retune(fb.step, theta, u0, loss, K=10, T=10)
    rt = median_seconds(lambda: hypergrad.retune(fb.step, theta, u0, loss, K=10, T=10), repeats)
    return step, loop, rt, [t.detach() for t in g]


def _compile_seconds(fb: WaveletFB, u0, theta, loss) -> dict[str, float]:
    """Wall time of the first compiled calls: no-grad step, then one ReTune (graph + backward)."""
    start = time.perf_counter()
    with torch.no_grad():
        fb.step(u0, theta)
    no_grad = time.perf_counter() - start
    start = time.perf_counter()
    hypergrad.retune(fb.step, theta, u0, loss, K=10, T=10)
    return {
        "compile_no_grad_s": no_grad,
        "compile_graph_and_backward_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--priors", default="BC,B")
    parser.add_argument("--compile", action="store_true", help="add the inductor variant")
    parser.add_argument(
        "--variants", default="before,unfused,after", help="eager variants to time (comma list)"
    )
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    sigma = torch.tensor([0.1, 0.25, 0.5]).reshape(1, 3, 1, 1)
    y = clean + sigma * torch.randn(clean.shape, generator=gen)
    rows = [{"loadavg_start": os.getloadavg()}]
    for prior in args.priors.split(","):
        # the section-4 problem on these data: u₀ = Dy, L(u) = ½‖Dᵀθ₀⁻¹u − x̄‖² (θ₀ frozen)
        p = section4.build("denoise", f"wavelet-{prior}", clean=clean, y=y, log_lambda=-1.5)
        fb, u0, loss = p.fb, p.x0, p.loss
        theta = tuple(t.requires_grad_() for t in p.theta)
        fbs = {name: fb for name in args.variants.split(",") if name}
        if args.compile:
            fbs["compiled"] = WaveletFB(fb.y, prior=prior, compile=True)
            compile_row = {"prior": prior, "variant": "compiled: compile time"}
            compile_row.update(_compile_seconds(fbs["compiled"], u0, theta, loss))
            rows.append(compile_row)
        results: dict[str, list] = {}
        floors = []
        for name in list(fbs) * 2:  # interleaved against drift
            with _variant(name):
                results.setdefault(name, []).append(
                    _timings(fbs[name], u0, theta, loss, args.repeats)
                )
            floors.append(PASSES_PER_STEP * u0.numel() * u0.element_size() / copy_bandwidth(u0))
        floor = min(floors)
        for name, runs in results.items():
            step = min(r[0] for r in runs)
            rows.append(
                {
                    "prior": prior,
                    "variant": name,
                    "step_ms": 1e3 * step,
                    "floor_ms": 1e3 * floor,
                    "floor_fraction": floor / step,
                    "restart_K10_T10_s": min(r[1] for r in runs),
                    "retune_K10_T10_s": min(r[2] for r in runs),
                }
            )
        g_ref = results["unfused"][0][3] if "unfused" in results else None
        for name in results if g_ref is not None else ():
            diff = max(
                ((a - b).norm() / b.norm()).item()
                for a, b in zip(results[name][0][3], g_ref, strict=True)
            )
            rows.append(
                {
                    "prior": prior,
                    "variant": f"{name}: gradient rel. difference to unfused",
                    "value": diff,
                }
            )
    rows.append({"loadavg_end": os.getloadavg()})
    report(rows, args.threads, [args.batch, 3, args.size, args.size], args.out)


if __name__ == "__main__":
    main()
