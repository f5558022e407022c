"""Before/after, in one run, of the denoising FB step (51) speed-ups recorded in
docs/performance.md ("Making the step fast").

``before`` is the step as it was: the gradient in five elementwise passes and the group prox
by unpacking the coefficients and calling ``torch.linalg.vector_norm`` over the (channel,
band) dimensions. ``no-memo`` is :meth:`operators.wavelet_prior.WaveletFB.step` as shipped
with the per-block memo of :mod:`operators.memo` switched off (its θ-maps rebuilt at every
step); ``after`` is the step as shipped. All are timed on the same data in the same process,
interleaved, medians of ``--repeats``: one step (of a K = 10 block), the no-graph restart loop
(K = T = 10) and one ReTune hypergradient (K = T = 10).

    python -m benchmarks.step_before_after --threads 2
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager, nullcontext

import torch

import operators.iteration as iteration
from benchmarks.common import median_seconds, report
from operators import hypergrad, restart, section4
from operators.wavelet_prior import WaveletFB


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


@contextmanager
def _variant(name: str):
    original, scope = WaveletFB.step, iteration.block_scope
    if name == "before":
        WaveletFB.step = lambda self, u, theta: _step_before(self, u, theta)
    if name in ("before", "no-memo"):
        iteration.block_scope = nullcontext
    try:
        yield
    finally:
        WaveletFB.step, iteration.block_scope = original, scope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    sigma = torch.tensor([0.1, 0.25, 0.5]).reshape(1, 3, 1, 1)
    y = clean + sigma * torch.randn(clean.shape, generator=gen)
    rows = []
    for prior in ("BC", "B"):
        # the section-4 problem on these data: u₀ = Dy, L(u) = ½‖Dᵀθ₀⁻¹u − x̄‖² (θ₀ frozen)
        p = section4.build("denoise", f"wavelet-{prior}", clean=clean, y=y, log_lambda=-1.5)
        fb, u0, loss = p.fb, p.x0, p.loss
        theta = tuple(t.requires_grad_() for t in p.theta)
        results = {}
        variants = ("before", "no-memo", "after")
        for name in variants + variants:  # interleaved against drift
            with _variant(name):
                with torch.no_grad():

                    def block(fb=fb, u0=u0, theta=theta):
                        return iteration.unroll(fb.step, 10)(u0, theta)

                    step = median_seconds(block, args.repeats) / 10  # per step of Φ_10

                def loop(fb=fb, u0=u0, theta=theta):
                    return restart(fb.step, theta, u0, 10, 10)

                def hypergradient(fb=fb, u0=u0, theta=theta, loss=loss):
                    return hypergrad.retune(fb.step, theta, u0, loss, K=10, T=10)

                g = hypergradient()
                loop_s = median_seconds(loop, args.repeats)
                rt = median_seconds(hypergradient, args.repeats)
            results.setdefault(name, []).append((step, loop_s, rt, [t.detach() for t in g]))
        for name, runs in results.items():
            rows.append(
                {
                    "prior": prior,
                    "variant": name,
                    "step_ms": 1e3 * min(r[0] for r in runs),
                    "restart_K10_T10_s": min(r[1] for r in runs),
                    "retune_K10_T10_s": min(r[2] for r in runs),
                }
            )
        g_before, g_after = results["before"][0][3], results["after"][0][3]
        diff = max(
            ((a - b).norm() / b.norm()).item() for a, b in zip(g_after, g_before, strict=True)
        )
        rows.append({"prior": prior, "variant": "gradient rel. difference", "value": diff})
    report(rows, args.threads, [args.batch, 3, args.size, args.size], args.out)


if __name__ == "__main__":
    main()
