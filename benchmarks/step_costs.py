"""One FB step (51) with D in the loop against one forward + inverse DWT, and the no-graph
restart loop under ``torch.no_grad`` against ``torch.inference_mode``; in one run.

docs/performance.md quotes the results ("D in the loop", "Restart loop"). Every figure is
the median of ``--repeats`` calls after a warm-up, per step of a K = 10 block (θ-maps built
once per block, as in Φ_K), on crops of the embedded images, 4 × 3 × size × size float32::

    python -m benchmarks.step_costs --threads 2 --out benchmarks/results/step_costs-cpu.json
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import median_seconds, report, wavelet_problem
from operators import restart, unroll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu, rows = torch.device("cpu"), []
    for task in ("denoise", "inpaint", "deblur"):
        p = wavelet_problem(task, args.size, 4, "float32", cpu)
        step, theta, u0, fb = p.step, p.theta, p.x0, p.fb
        with torch.no_grad():
            block = median_seconds(lambda s=step, t=theta, u=u0: unroll(s, 10)(u, t), args.repeats)
            dwt = median_seconds(lambda fb=fb, u=u0: fb.D.analysis(fb.D.synthesis(u)), args.repeats)
            no_grad = median_seconds(
                lambda s=step, t=theta, u=u0: restart(s, t, u, 10, 5), args.repeats
            )
        with torch.inference_mode():
            th, u = tuple(t.clone() for t in theta), u0.clone()
            inference = median_seconds(
                lambda s=step, t=th, u=u: restart(s, t, u, 10, 5), args.repeats
            )
        rows.append(
            {
                "task": task,
                "step_ms": 1e3 * block / 10,
                "dwt_forward_inverse_ms": 1e3 * dwt,
                "step_over_dwt": block / 10 / dwt,
                "restart_K10_T5_no_grad_s": no_grad,
                "restart_K10_T5_inference_mode_s": inference,
            }
        )
    report(rows, args.threads, [4, 3, args.size, args.size], args.out)


if __name__ == "__main__":
    main()
