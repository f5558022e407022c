"""The DWT (ours before and after the block-GEMM passes, and ptwt), one FB step (51) with D in
the loop against one forward + inverse DWT, the denoising step against its bandwidth floor,
and the no-graph restart loop under ``torch.no_grad`` against ``torch.inference_mode``; in one
run, interleaved.

docs/performance.md quotes the results ("D in the loop", "Restart loop"). Every figure is
the median of ``--repeats`` calls after a warm-up (the minimum over ``--passes`` interleaved
passes), per step of a K = 10 block (θ-maps built once per block, as in Φ_K), on crops of the
embedded images, 4 × 3 × size × size float32. ``before`` is the transform of commit 5809945
(``benchmarks/wavelet_before.py``: strided conv1d along W, L shifted multiply-adds along H);
ptwt is ``wavedec2``/``waverec2`` (db4, its default padding: a redundant frame, not the
periodized D, see docs/wavelet.md), skipped when not installed::

    python -m benchmarks.step_costs --threads 2 \\
        --out benchmarks/results/step_costs-cpu-2026-12-02.json
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from contextlib import nullcontext

import torch
from retune_suite.operators import restart, unroll
from retune_suite.operators.maps.wavelet import Wavelet2D

from benchmarks.common import median_seconds, report, wavelet_problem
from benchmarks.restart import PASSES_PER_STEP, copy_bandwidth
from benchmarks.wavelet_before import wavelet_before

TASKS = ("denoise", "inpaint", "deblur")


def _variants(fb) -> dict[str, Callable[[], object]]:
    """Context factories: the shipped DWT and the one before (fresh banks inside each)."""

    def before():
        fb.D._banks.clear()
        return wavelet_before()

    def after():
        fb.D._banks.clear()
        return nullcontext()

    return {"before": before, "after": after}


def _dwt_rows(x: torch.Tensor, repeats: int, passes: int) -> list[dict]:
    """Forward, inverse and round trip of ours (before, after) and ptwt, interleaved."""
    ours = {"before": Wavelet2D("db4", 4), "after": Wavelet2D("db4", 4)}
    contexts = {"before": wavelet_before, "after": nullcontext}
    cases: dict[str, Callable[[], object]] = {}
    for name, D in ours.items():
        with contexts[name]():
            coeffs = D.forward(x)

        def run(fn, ctx=contexts[name]):
            def call():
                with ctx():
                    return fn()

            return call

        cases[f"ours {name} forward"] = run(lambda D=D: D.forward(x))
        cases[f"ours {name} inverse"] = run(lambda D=D, c=coeffs: D.inverse(*c))
        cases[f"ours {name} round trip"] = run(lambda D=D: D.inverse(*D.forward(x)))
    try:
        import ptwt

        warnings.filterwarnings("ignore", module="ptwt")
        pc = ptwt.wavedec2(x, "db4", level=4)
        cases["ptwt forward"] = lambda: ptwt.wavedec2(x, "db4", level=4)
        cases["ptwt inverse"] = lambda: ptwt.waverec2(pc, "db4")
        cases["ptwt round trip"] = lambda: ptwt.waverec2(ptwt.wavedec2(x, "db4", level=4), "db4")
    except ImportError:
        pass
    times: dict[str, list[float]] = {}
    with torch.no_grad():
        for _ in range(passes):
            for name, fn in cases.items():
                times.setdefault(name, []).append(median_seconds(fn, repeats))
    return [{"dwt": name, "ms": 1e3 * min(t)} for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--skip-restart", action="store_true", help="leave out the no_grad/inference_mode loops"
    )
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu, rows = torch.device("cpu"), [{"loadavg_start": os.getloadavg()}]
    x = torch.randn(4, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    rows += _dwt_rows(x, args.repeats, args.passes)
    for task in TASKS:
        p = wavelet_problem(task, args.size, 4, "float32", cpu)
        step, theta, u0, fb = p.step, p.theta, p.x0, p.fb
        variants = _variants(fb) if task != "denoise" else {"after": _variants(fb)["after"]}
        res: dict[str, list[tuple[float, float]]] = {}
        with torch.no_grad():
            for _ in range(args.passes):
                for name, ctx in variants.items():
                    with ctx():
                        block = median_seconds(
                            lambda s=step, t=theta, u=u0: unroll(s, 10)(u, t), args.repeats
                        )
                        dwt = median_seconds(
                            lambda fb=fb, u=u0: fb.D.analysis(fb.D.synthesis(u)), args.repeats
                        )
                    res.setdefault(name, []).append((block / 10, dwt))
            if not args.skip_restart:
                no_grad = median_seconds(
                    lambda s=step, t=theta, u=u0: restart(s, t, u, 10, 5), args.repeats
                )
        if not args.skip_restart:
            with torch.inference_mode():
                th, u = tuple(t.clone() for t in theta), u0.clone()
                inference = median_seconds(
                    lambda s=step, t=th, u=u: restart(s, t, u, 10, 5), args.repeats
                )
        floor = PASSES_PER_STEP * u0.numel() * u0.element_size() / copy_bandwidth(u0)
        for name, runs in res.items():
            step_s, dwt_s = min(r[0] for r in runs), min(r[1] for r in runs)
            row = {
                "task": task,
                "dwt_variant": name,
                "step_ms": 1e3 * step_s,
                "dwt_forward_inverse_ms": 1e3 * dwt_s,
                "step_over_dwt": step_s / dwt_s,
            }
            if task == "denoise":
                row.update(floor_ms=1e3 * floor, floor_fraction=floor / step_s)
            if name == "after" and not args.skip_restart:
                row.update(
                    restart_K10_T5_no_grad_s=no_grad, restart_K10_T5_inference_mode_s=inference
                )
            rows.append(row)
    rows.append({"loadavg_end": os.getloadavg()})
    report(rows, args.threads, [4, 3, args.size, args.size], args.out)


if __name__ == "__main__":
    main()
