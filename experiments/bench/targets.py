"""The benchmark issue's targets, one row per (target, peer): the measured ratio, met or not."""

from __future__ import annotations

import math

import pandas as pd

from .config import BenchConfig
from .ours import deq_name, retune_name

__all__ = ["targets"]


def _value(frame: pd.DataFrame, method: str, column: str) -> float:
    """``column`` of a row that ran (a capped "→ tolerance" row gives a lower bound)."""
    ran = frame.status.eq("ok") | frame.status.str.startswith("tolerance not reached")
    hits = frame.loc[(frame.method == method) & ran, column] if column in frame else []
    return float(hits.iloc[0]) if len(hits) else float("nan")


def targets(frame: pd.DataFrame, cfg: BenchConfig) -> pd.DataFrame:
    """The issue's targets, one row per (target, peer): the measured ratio, met or missed."""
    b, tol = cfg.backward_iters, f"{cfg.solve_tol:.0e}"
    retune, deq, deq_b = retune_name(cfg), deq_name(cfg), deq_name(cfg, fixed=True)
    rows = []

    def add(target: str, peer: str, ours: str, column: str, need: float) -> None:
        value = _value(frame, peer, column) / _value(frame, ours, column)
        result = "not measured" if math.isnan(value) else ("met" if value >= need else "missed")
        rows.append(dict(target=target, peer=peer, ratio=value, needed=need, result=result))

    for peer in ("deepinv Jacobian-free", "torchdeq 1-step"):
        add("ReTune ≥15× faster (peer time / ours)", peer, retune, "seconds", 15.0)
    add(
        "ReTune ≥2× faster, same map (peer time / ours)",
        "torchdeq 1-step, our map",
        retune,
        "seconds",
        2.0,
    )
    products = _value(frame, deq_b, "vjps") - 1  # the VJPs of the adjoint solve
    for peer in (
        f"deepinv DEQ (FP {b})",
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
                )
            )
    for peer in (
        f"deepinv DEQ (FP→{tol})",
        f"torchdeq IFT (FP→{tol})",
        f"torchdeq IFT (FP→{tol}), our map",
    ):
        add(f"DEQ faster to {tol} relative residual (peer time / ours)", peer, deq, "seconds", 1.0)
    return pd.DataFrame(rows)
