"""The paper's statements about Figs. 1–3 (section 4), measured on a run's metrics.

:func:`summarise` reduces ``metrics.csv`` to one row per (model, K, T) (``summary.csv``),
:func:`check_claims` states section 4's claims and whether the run bears them out
(``claims.csv``), :func:`claims_paragraph` prints them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..common.metrics import moving_average

__all__ = ["WINDOW", "check_claims", "claims_paragraph", "summarise"]

WINDOW = 25
"""Moving-average window of the figures and of the final train PSNR (section 4, Fig. 1)."""


def summarise(metrics: pd.DataFrame, tests: pd.DataFrame, window: int = WINDOW) -> pd.DataFrame:
    """Per (model, K, T): final train PSNR (mean of the last ``window`` steps), final loss,
    steps, training seconds, last θ, and the test PSNR (from ``tests``)."""
    rows = []
    for (model, K, T), g in metrics.groupby(["model", "K", "T"], sort=False):
        g = g.sort_values("step")
        rows.append(
            {
                "model": model,
                "K": int(K),
                "T": int(T),
                "steps": int(g.step.max()),
                "final_train_psnr": g.psnr.tail(window).mean(),
                "final_loss": g.loss.tail(window).mean(),
                "train_seconds": g.seconds.sum(),
                "theta": g.theta.iloc[-1],
            }
        )
    summary = pd.DataFrame(rows)
    if not tests.empty:
        summary = summary.merge(tests, on=["model", "K", "T"], how="left")
    return summary


def _first_step_at(g: pd.DataFrame, level: float, window: int) -> int | None:
    g = g.sort_values("step")
    # full windows only: the first window − 1 steps have no average
    ma = moving_average(g.psnr.reset_index(drop=True), window, full=True)
    hits = (ma >= level - 1e-12).to_numpy().nonzero()[0]
    return int(g.step.iloc[hits[0]]) if len(hits) else None


def check_claims(
    figure: str, metrics: pd.DataFrame, summary: pd.DataFrame, window: int = WINDOW
) -> pd.DataFrame:
    """The paper's statements about ``figure`` (section 4), measured on this run.

    For each model (needs (10, 10) and another (K, T) in the run):

    - *best*: K = T = 10 reaches the highest final train PSNR (mean of the last ``window``
      steps) of the configurations.
    - *faster*: with L the best final train PSNR of the other configurations, reached by
      configuration c, the first step at which the ``window``-step moving average of
      K = T = 10 is ≥ L comes before the first step at which c's moving average is ≥ L
      (never reaching L counts as not faster).

    fig1: θ_BC beats θ_B at K = T = 10 (final train PSNR; the test PSNR is reported beside).
    fig2, fig3: learning the denoiser (c) beats the fixed denoiser (b), and (b) beats the
    wavelet prior (a), at K = T = 10 (same measures).
    """
    rows: list[dict[str, Any]] = []
    final = {(r.model, r.K, r.T): r for r in summary.itertuples()}

    def test_of(key: tuple) -> float:
        return float(getattr(final[key], "test_psnr", float("nan")))

    for model in summary.model.unique():
        key = (model, 10, 10)
        others = [k for k in final if k[0] == model and k != key]
        if key not in final or not others:
            continue
        best_other = max(others, key=lambda k: final[k].final_train_psnr)
        level = final[best_other].final_train_psnr
        mine = final[key].final_train_psnr
        rows.append(
            {
                "figure": figure,
                "model": model,
                "claim": "K=T=10 reaches the highest final train PSNR",
                "holds": bool(mine >= level),
                "measured": (
                    f"K=T=10 {mine:.2f} dB; best other (K={best_other[1]}, T={best_other[2]}) "
                    f"{level:.2f} dB"
                ),
            }
        )
        g = metrics[metrics.model == model]
        at = {k: g[(g.K == k[1]) & (g["T"] == k[2])] for k in (key, best_other)}
        s_mine = _first_step_at(at[key], level, window)
        s_other = _first_step_at(at[best_other], level, window)
        rows.append(
            {
                "figure": figure,
                "model": model,
                "claim": "K=T=10 gets there in fewer steps",
                "holds": bool(s_mine is not None and (s_other is None or s_mine < s_other)),
                "measured": (
                    f"{window}-step average ≥ {level:.2f} dB: K=T=10 at step "
                    f"{s_mine if s_mine is not None else 'never'}, (K={best_other[1]}, "
                    f"T={best_other[2]}) at step {s_other if s_other is not None else 'never'}"
                ),
            }
        )

    def compare(better: str, worse: str, claim: str) -> None:
        a, b = (better, 10, 10), (worse, 10, 10)
        if a not in final or b not in final:
            return
        ta, tb = final[a].final_train_psnr, final[b].final_train_psnr
        rows.append(
            {
                "figure": figure,
                "model": better,
                "claim": claim,
                "holds": bool(ta > tb),
                "measured": (
                    f"final train {ta:.2f} vs {tb:.2f} dB; test {test_of(a):.2f} vs "
                    f"{test_of(b):.2f} dB"
                ),
            }
        )

    if figure == "fig1":
        compare("wavelet-BC", "wavelet-B", "θ_BC beats θ_B at K=T=10")
    else:
        compare("pnp-weights", "pnp-sigma-tau", "learning the denoiser beats the fixed one")
        compare("pnp-sigma-tau", "wavelet-BC", "FB-PnP (σ, τ) beats the wavelet prior")
    return pd.DataFrame(rows, columns=["figure", "model", "claim", "holds", "measured"])


def claims_paragraph(figure: str, claims: pd.DataFrame, header: str) -> str:
    """The claims as one printed paragraph."""
    if claims.empty:
        return f"{header}: no claim checkable (the run needs K=T=10 and another (K, T))."
    parts = [
        f"{r.model}: {r.claim}: {'yes' if r.holds else 'NO'} ({r.measured})"
        for r in claims.itertuples()
    ]
    return f"{header}. " + "; ".join(parts) + "."
