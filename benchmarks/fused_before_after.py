"""Before/after, in one run, of the fused path of the wavelet denoising map (issue 28):
docs/performance.md, "The fused path".

All variants are timed on the same data in the same process, interleaved pass by pass, so
that a load that comes and goes hits them alike (the minimum over ``--passes`` of the medians
of ``--repeats`` calls is reported, and the ratios are taken within the run):

- ``step``: one no-graph step (51) of a K = 10 block, eager (the step as shipped before the
  kernels, ``fused.set_enabled(False)``) and fused (the C++ kernel, a block of one); and one
  block of K = 10 steps, eager (10 steps) and fused (one kernel call). ``floor_fraction`` is
  the 4-pass bandwidth floor (read u and the two θ-maps, write u⁺, at the copy bandwidth
  measured in the same run) over the time per step;
- ``restart``: Φ_K^T without a graph, K = T = 10;
- ``last block``: the graph-carrying block and its θ-gradient (forward + VJP);
- ``loss``: the gradient of the loss in the image domain (½‖Dᵀθ₀⁻¹u − x̄‖²) and in the wavelet
  domain (½‖θ₀⁻¹u − Dx̄‖², D orthonormal);
- ``retune``: one ReTune hypergradient, K = T = 10: ``before`` (eager step, image-domain loss:
  the library before issue 28), ``eager + wavelet loss``, ``after`` (fused, wavelet loss);
- ``generic loop``: the overhead of :func:`~retune_suite.operators.restart` around a user's
  step (a one-kernel contraction x ↦ c + x·θ), against 100 bare calls of that step; and the
  finiteness check of one iterate before (``torch.isfinite(x).all()``) and after
  (:func:`~retune_suite.operators.theta.all_finite`);
- ``D in the loop``: one inpainting and one deblurring step against their transforms (D, Dᵀ)
  and forward model (A, Aᵀ): what a kernel of the elementwise part could save at most.

::

    python -m benchmarks.fused_before_after --threads 2 \\
        --out benchmarks/results/fused_before_after-cpu-2026-12-05.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from retune_suite.operators import hypergrad, restart
from retune_suite.operators.maps import fused, section4
from retune_suite.operators.theta import all_finite

from benchmarks.common import report, wavelet_problem
from benchmarks.restart import PASSES_PER_STEP, copy_bandwidth


def _timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _switched(on: bool, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with the fused kernels on or off for its duration."""

    def call():
        fused.set_enabled(on)
        try:
            return fn()
        finally:
            fused.set_enabled(None)

    return call


def _cases(size: int, batch: int, prior: str) -> tuple[dict[str, Callable[[], object]], dict]:
    p = wavelet_problem("denoise", size, batch, "float32", torch.device("cpu"))
    if prior != "BC":
        p = section4.build("denoise", f"wavelet-{prior}", clean=p.clean, seed=0, log_lambda=-2.0)
    fb, theta, u0 = p.fb, p.theta, p.x0
    tau, scale, shift = fb._maps(theta)
    levels = fb.levels
    image_loss = section4.image_loss(fb, theta, p.clean, domain="image")
    wavelet_loss = section4.image_loss(fb, theta, p.clean, domain="wavelet")

    def eager_steps(K: int):
        def run():
            with torch.no_grad():
                u = u0
                for _ in range(K):
                    u = fb._prox(torch.addcmul(shift, u, scale), tau, inplace=True)
            return u

        return run

    def fused_block(K: int):
        return lambda: fused.denoise_block(
            u0, scale, shift, tau, prior=fb.prior, levels=levels, K=K
        )

    def loss_grad(loss):
        def run():
            z = u0.detach().requires_grad_(True)
            return torch.autograd.grad(loss(z), z)

        return run

    def last_block(on: bool):
        def run():
            return hypergrad.retune_last_block(fb.step, theta, u0, wavelet_loss, 10)

        return _switched(on, run)

    # a user's step: one elementwise kernel, contractive for θ = 0.5
    c = torch.rand_like(u0)
    half = torch.tensor(0.5)

    def user_step(x, th):
        return torch.addcmul(c, x, th)

    def bare_user_steps():
        with torch.no_grad():
            x = u0
            for _ in range(100):
                x = user_step(x, half)
        return x

    cases = {
        "eager step": eager_steps(1),
        "fused step": fused_block(1),
        "eager block K=10": eager_steps(10),
        "fused block K=10": fused_block(10),
        "eager restart K=T=10": _switched(False, lambda: restart(fb.step, theta, u0, 10, 10)),
        "fused restart K=T=10": _switched(True, lambda: restart(fb.step, theta, u0, 10, 10)),
        "eager last block K=10 + gradient": last_block(False),
        "fused last block K=10 + gradient": last_block(True),
        "loss gradient, image domain": loss_grad(image_loss),
        "loss gradient, wavelet domain": loss_grad(wavelet_loss),
        "retune before (eager, image loss)": _switched(
            False, lambda: hypergrad.retune(fb.step, theta, u0, image_loss, 10, 10)
        ),
        "retune eager + wavelet loss": _switched(
            False, lambda: hypergrad.retune(fb.step, theta, u0, wavelet_loss, 10, 10)
        ),
        "retune after (fused, wavelet loss)": _switched(
            True, lambda: hypergrad.retune(fb.step, theta, u0, wavelet_loss, 10, 10)
        ),
        "user step x100, bare loop": bare_user_steps,
        "user step x100, restart K=T=10": lambda: restart(user_step, half, u0, 10, 10),
        "finite check before (isfinite.all)": lambda: bool(torch.isfinite(u0).all()),
        "finite check after (all_finite)": lambda: all_finite(u0),
    }
    for task in ("inpaint", "deblur"):
        q = section4.build(task, "wavelet-BC", clean=p.clean, seed=0, log_lambda=-2.0)
        qfb, qth, qu = q.fb, q.theta, q.x0
        w = qfb.weights(qth)

        def transforms(qfb=qfb, qu=qu, w=w):
            with torch.no_grad():
                x = qfb.D.synthesis(qu / w)
                return qfb.D.analysis(qfb.model.A_adjoint(qfb.model.A(x)))

        def full_step(qfb=qfb, qth=qth, qu=qu):
            with torch.no_grad():
                return qfb.step(qu, qth)

        cases[f"{task} step (D in the loop)"] = full_step
        cases[f"{task} D, Dᵀ, A, Aᵀ of one step"] = transforms
    return cases, {"u0": u0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prior", default="BC", choices=("B", "BC"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    backend = fused.backend("cpu")  # builds the kernel (or finds it in the cache)
    build = time.perf_counter() - start
    cases, data = _cases(args.size, args.batch, args.prior)
    for fn in cases.values():  # warm-up: the first call of each
        fn()
    best: dict[str, float] = {}
    for _ in range(args.passes):
        for name, fn in cases.items():
            t = _timed(fn, args.repeats)
            best[name] = min(best.get(name, float("inf")), t)
    u0 = data["u0"]
    bandwidth = copy_bandwidth(u0)
    floor = PASSES_PER_STEP * u0.numel() * u0.element_size() / bandwidth
    rows = [{"case": name, "ms": 1e3 * t, **_extra(name, t, floor)} for name, t in best.items()]
    ratios = {
        "fused/eager step speed-up": best["eager step"] / best["fused step"],
        "fused/eager block K=10 speed-up": best["eager block K=10"] / best["fused block K=10"],
        "restart speed-up": best["eager restart K=T=10"] / best["fused restart K=T=10"],
        "last block speed-up": best["eager last block K=10 + gradient"]
        / best["fused last block K=10 + gradient"],
        "loss gradient speed-up (wavelet domain)": best["loss gradient, image domain"]
        / best["loss gradient, wavelet domain"],
        "retune speed-up, wavelet loss alone": best["retune before (eager, image loss)"]
        / best["retune eager + wavelet loss"],
        "retune speed-up, fused path (after/before)": best["retune before (eager, image loss)"]
        / best["retune after (fused, wavelet loss)"],
        "generic loop overhead, in user steps": (
            best["user step x100, restart K=T=10"] - best["user step x100, bare loop"]
        )
        / (best["user step x100, bare loop"] / 100),
        "generic loop overhead, % of one eager wavelet step": 100
        * (best["user step x100, restart K=T=10"] - best["user step x100, bare loop"])
        / best["eager step"],
        "finite check speed-up": best["finite check before (isfinite.all)"]
        / best["finite check after (all_finite)"],
    }
    for task in ("inpaint", "deblur"):
        full, transforms = (
            best[f"{task} step (D in the loop)"],
            best[f"{task} D, Dᵀ, A, Aᵀ of one step"],
        )
        ratios[f"{task}: elementwise share of the step (a kernel's most)"] = 1 - transforms / full
    rows += [{"case": name, "value": value} for name, value in ratios.items()]
    rows.append(
        {
            "case": "environment",
            "backend": backend,
            "kernel load s (build or cache)": build,
            "copy bandwidth GB/s": bandwidth / 1e9,
            "floor ms per step": 1e3 * floor,
            "loadavg": os.getloadavg(),
        }
    )
    report(rows, args.threads, list(u0.shape), args.out)


def _extra(name: str, t: float, floor: float) -> dict:
    """floor_fraction of the step and block rows (per step)."""
    steps = {"eager step": 1, "fused step": 1, "eager block K=10": 10, "fused block K=10": 10}
    if name not in steps:
        return {}
    return {"ms_per_step": 1e3 * t / steps[name], "floor_fraction": floor / (t / steps[name])}


if __name__ == "__main__":
    main()
