"""The performance issue's targets, one row per (target, peer): the measured ratio, the
ratio needed, met or missed, and the margin (how far above or below the need, relative)."""

from __future__ import annotations

import math

import pandas as pd

from .config import BenchConfig
from .ours import MEMORY_T, deq_name, memory_name, retune_name

__all__ = ["FASTER_AS_USED", "FASTER_SAME_MAP", "MEMORY_FLAT", "targets"]

FASTER_AS_USED = 100.0
"""ReTune K×T at least this many times faster than the peers' one-step gradients as their
users write them (deepinv's Jacobian-free, torchdeq's 1-step), same iteration counts, on a
quiet machine (issue 28; 50× with a second process busy on the other core)."""
FASTER_SAME_MAP = 10.0
"""ReTune at least this many times faster than torchdeq's 1-step and phantom gradients given
our own step map (the fused step, the best form of it torchdeq can call), same iteration
counts (issue 28)."""
MEMORY_FLAT = 1.10
"""ReTune's working set at T = 40 at most this multiple of its working set at T = 2."""


def _value(frame: pd.DataFrame, method: str, column: str) -> float:
    """``column`` of a row that ran (a capped "→ tolerance" row gives a lower bound)."""
    ran = frame.status.eq("ok") | frame.status.str.startswith("tolerance not reached")
    hits = frame.loc[(frame.method == method) & ran, column] if column in frame else []
    return float(hits.iloc[0]) if len(hits) else float("nan")


def _judge(value: float, need: float, at_most: bool) -> tuple[str, float]:
    """(met / missed / not measured, margin): margin > 0 when met, by that fraction of need."""
    if math.isnan(value):
        return "not measured", float("nan")
    margin = (need - value) / need if at_most else (value - need) / need
    return ("met" if margin >= 0 else "missed"), margin


def targets(frame: pd.DataFrame, cfg: BenchConfig) -> pd.DataFrame:
    """The issue's targets, one row per (target, peer): the measured ratio, met or missed."""
    b, tol, K = cfg.backward_iters, f"{cfg.solve_tol:.0e}", cfg.K
    retune, deq, deq_b = retune_name(cfg), deq_name(cfg), deq_name(cfg, fixed=True)
    rows = []

    def add(target: str, peer: str, ours: str, column: str, need: float, at_most=False) -> None:
        num, den = _value(frame, peer, column), _value(frame, ours, column)
        value = num / den if den > 0 else float("nan")  # a working set of 0: not measured
        result, margin = _judge(value, need, at_most)
        rows.append(
            dict(target=target, peer=peer, ratio=value, needed=need, result=result, margin=margin)
        )

    for peer in ("deepinv Jacobian-free", "torchdeq 1-step"):
        add(
            f"ReTune ≥{FASTER_AS_USED:g}× faster (peer time / ours)",
            peer,
            retune,
            "seconds",
            FASTER_AS_USED,
        )
    for peer in ("torchdeq 1-step, our map", f"torchdeq phantom K={K} τ=1, our map"):
        add(
            f"ReTune ≥{FASTER_SAME_MAP:g}× faster, same map (peer time / ours)",
            peer,
            retune,
            "seconds",
            FASTER_SAME_MAP,
        )
    short, long = (memory_name(cfg, T) for T in MEMORY_T)
    add(
        f"ReTune's working set flat in T (T={MEMORY_T[1]} / T={MEMORY_T[0]}, ≤{MEMORY_FLAT:g})",
        long,
        short,
        "peak_mb",
        MEMORY_FLAT,
        at_most=True,
    )
    products = _value(frame, deq_b, "vjps") - 1  # the VJPs of the adjoint solve
    for peer in (
        f"deepinv DEQ (FP {b})",
        f"deepinv DEQ (Anderson {b})",
        f"torchdeq IFT (FP {b})",
        f"torchdeq IFT (FP {b}), our map",
    ):
        target = f"DEQ more accurate at ≤{b} backward iterations (peer error / ours)"
        if products <= b:
            add(target, peer, deq_b, "rel_error", 1.0)
        else:
            rows.append(
                dict(
                    target=target,
                    peer=peer,
                    ratio=float("nan"),
                    needed=1.0,
                    result=f"not comparable: ours used {products:.0f} VJPs",
                    margin=float("nan"),
                )
            )
    for peer in (
        f"deepinv DEQ (FP→{tol})",
        f"torchdeq IFT (FP→{tol})",
        f"torchdeq IFT (FP→{tol}), our map",
    ):
        add(f"DEQ faster to {tol} relative residual (peer time / ours)", peer, deq, "seconds", 1.0)
    return pd.DataFrame(rows)
