"""Before/after, in one run, of one ``retune-suite verdicts`` grid point around the dense limit.

``verdicts`` runs :func:`retune_suite.bounds.verify` once per (K, T). At n ≤ ``DENSE_LIMIT``
(32×32 colour: n = 3072) ``verify`` used to take every dense quantity up front: ∂ₓΦ_K(x̂) twice
(the reference and its SVD), an SVD at every restart and a dense Hessian, even with the analytic
δ_K and H that ``verdicts`` gives; at 48×48 (n = 6912) it is matrix-free. ``before`` is that
path, which the shipped ``verify`` still takes up to ``EAGER_DENSE_LIMIT``: it is set to
``DENSE_LIMIT`` for the call. ``after`` is ``verify`` as shipped (dense matrices beyond
``EAGER_DENSE_LIMIT`` only where they decide a verdict). Each grid point is timed as the
command times it (``seconds`` of ``verdicts.csv``: x̂ and the given constants computed before
the clock starts, ∂_θΦ_K(x̂) computed inside it), and the two modes' verdicts are compared.

    python -m benchmarks.verdicts_before_after --threads 2 --out <file.json>
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import torch
from retune_suite.bounds import report as report_module
from retune_suite.experiments.error_study.verdicts import VerdictConfig, _given, _problem
from retune_suite.operators import fixed_point, hypergrad

from retune_suite import bounds


def _verdicts(r: bounds.Report) -> dict:
    return {**r.holds, **{f"certificate_{k}": v for k, v in r.certificate_holds.items()}}


def run_point(prior: str, size: int, K: int, T: int, mode: str) -> dict:
    p = _problem(VerdictConfig(prior=prior, size=size))
    given = _given(p, K)
    x_star = fixed_point(p.step, p.theta, p.x0, K, atol=0.0).x
    saved = report_module.EAGER_DENSE_LIMIT
    if mode == "before":
        report_module.EAGER_DENSE_LIMIT = hypergrad.DENSE_LIMIT
    try:
        start = time.perf_counter()
        r = bounds.verify(p.step, p.theta, p.x0, p.loss, K=K, T=T, x_star=x_star, **given)
        seconds = time.perf_counter() - start
    finally:
        report_module.EAGER_DENSE_LIMIT = saved
    return {
        "prior": prior,
        "size": size,
        "n": p.x0.numel(),
        "K": K,
        "T": T,
        "mode": mode,
        "seconds": seconds,
        "load_after": os.getloadavg()[0],
        "verdicts": _verdicts(r),
        "errors": r.errors,
        "reference": r.constants["reference"],
        "refuted": r.refuted,
    }


def verify_sizes(sizes: list[int], modes: tuple[str, ...]) -> list[dict]:
    """``retune-suite verify --n N`` (its built-in problems, K = 2, T = 3, δ analytic) timed per
    mode: the cliff at ``DENSE_LIMIT`` of the exact problems' own n."""
    from retune_suite.experiments.builtin import cases

    rows = []
    for case in cases(16, 4, 0):  # warm-up: imports, forward-mode decompositions, first calls
        bounds.verify(case.step, case.theta, case.x0, case.loss, K=2, T=3, delta=case.delta(2))
    for n in sizes:
        for mode in modes:
            saved = report_module.EAGER_DENSE_LIMIT
            if mode == "before":
                report_module.EAGER_DENSE_LIMIT = hypergrad.DENSE_LIMIT
            try:
                start = time.perf_counter()
                verdicts = {}
                for case in cases(n, 4, 0):
                    K, T = case.K or 2, case.T or 3
                    L_theta = case.lipschitz_theta(K) if case.lipschitz_theta else None
                    r = bounds.verify(
                        case.step,
                        case.theta,
                        case.x0,
                        case.loss,
                        K=K,
                        T=T,
                        P=3,
                        delta=case.delta(K),
                        lipschitz_theta=L_theta,
                        hessian_bound=case.hessian_bound,
                        lipschitz_x=0.0 if L_theta is not None else None,
                    )
                    verdicts[case.name] = _verdicts(r)
                seconds = time.perf_counter() - start
            finally:
                report_module.EAGER_DENSE_LIMIT = saved
            rows.append({"n": n, "mode": mode, "seconds": seconds, "verdicts": verdicts})
            print(f"verify --n {n} {mode:6s} {seconds:8.1f} s  load {os.getloadavg()[0]:.1f}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prior", default="foe")
    parser.add_argument("--points", default="1:5,10:1", help="K:T grid points, written 1:5,10:1")
    parser.add_argument("--sizes", default="48,32")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--verify-n", default="", help="instead: time `verify --n N` at these n, written 1024,4100"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.verify_n:
        torch.set_default_dtype(torch.float64)  # as `retune-suite verify` runs
        sizes = [int(n) for n in args.verify_n.split(",")]
        rows = verify_sizes(sizes, ("after", "before"))
        for n in sizes:
            same = [r for r in rows if r["n"] == n]
            if len(same) == 2 and same[0]["verdicts"] != same[1]["verdicts"]:
                print(f"  verdicts differ at n = {n}")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"load": os.getloadavg(), "runs": rows}, f, indent=1, default=str)
        return
    points = [tuple(int(v) for v in p.split(":")) for p in args.points.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    result = {
        "command": "python -m benchmarks.verdicts_before_after " + " ".join(argv or []),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "load_start": os.getloadavg(),
        "runs": [],
    }
    run_point(args.prior, min(sizes), 1, 1, "after")  # warm-up (imports, first calls): untimed
    result["load_start"] = os.getloadavg()
    for K, T in points:
        for size in sizes:
            for mode in ("after", "before"):
                row = run_point(args.prior, size, K, T, mode)
                result["runs"].append(row)
                print(
                    f"{args.prior} {size}x{size} (n={row['n']}) K={K} T={T} {mode:6s} "
                    f"{row['seconds']:8.1f} s  load {row['load_after']:.1f}  "
                    f"reference {row['reference'].split(' ')[0]}",
                    flush=True,
                )
                if args.out:
                    tmp = f"{args.out}.tmp"
                    with open(tmp, "w") as f:
                        json.dump(result, f, indent=1, default=str)
                    os.replace(tmp, args.out)
            same = [r for r in result["runs"] if (r["size"], r["K"], r["T"]) == (size, K, T)]
            if len(same) == 2 and same[0]["verdicts"] != same[1]["verdicts"]:
                print(f"  verdicts differ: {same[0]['verdicts']} vs {same[1]['verdicts']}")
    result["load_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    main()
