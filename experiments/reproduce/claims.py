"""The paper's statements about Figs. 1–3 (section 4), measured on a run's metrics.

:func:`summarise` reduces ``metrics.csv`` to one row per (model, K, T) (``summary.csv``),
:func:`check_claims` states section 4's claims and whether the run bears them out
(``claims.csv``), :func:`claims_paragraph` prints them. A claim that compares two final train
PSNRs carries their difference and its noise (:func:`difference_and_noise`); ``resolved`` says
whether the difference is larger than the noise, so a 0.02 dB "NO" reads as the tie it is.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..common.metrics import moving_average

__all__ = [
    "CLAIM_COLUMNS",
    "NO_DIFFERENCE",
    "WINDOW",
    "check_claims",
    "claims_paragraph",
    "difference_and_noise",
    "final_window",
    "noise_columns",
    "summarise",
    "verdict",
]

WINDOW = 25
"""Moving-average window of the figures and of the final train PSNR (section 4, Fig. 1)."""
CLAIM_COLUMNS = ["claim", "holds", "measured", "difference_db", "noise_db", "resolved"]
"""The columns of ``claims.csv`` after the figure (or task) and model columns."""


def difference_and_noise(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """mean(a) − mean(b) of two windows of per-step train PSNR (indexed by step), and its
    noise: twice the standard error of that difference (about a 95 % interval).

    When both windows cover the same steps the comparison is paired: every configuration of
    a run trains on the same batch at a given step (:func:`~.train.batch_indices` depends on
    the seed and the step only), so the per-step differences d = a − b drop the image-to-
    image scatter, and the noise is 2·s_d/√n. Otherwise it is 2·√(s_a²/n_a + s_b²/n_b).
    The steps are taken as independent; a trend inside the window adds to s, so the noise
    errs on the wide side. NaN with fewer than two steps.
    """
    a, b = a.astype(float), b.astype(float)
    difference = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return difference, float("nan")
    if a.index.equals(b.index):
        d = a - b
        return difference, float(2.0 * d.std(ddof=1) / len(d) ** 0.5)
    return difference, float(2.0 * (a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) ** 0.5)


def noise_columns(difference: float, noise: float) -> dict[str, Any]:
    r"""The columns ``difference_db``, ``noise_db``, ``resolved`` of a claim on two final
    train PSNRs (``resolved``: \|difference\| > noise; None without a noise)."""
    resolved = bool(abs(difference) > noise) if noise == noise else None
    return {"difference_db": difference, "noise_db": noise, "resolved": resolved}


NO_DIFFERENCE = {"difference_db": float("nan"), "noise_db": float("nan"), "resolved": None}
"""The noise columns of a claim that does not compare two PSNRs."""


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


def final_window(g: pd.DataFrame, window: int) -> pd.Series:
    """The per-step train PSNR behind a final train PSNR: the last ``window`` steps, indexed
    by step."""
    return g.sort_values("step").set_index("step").psnr.tail(window)


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

    The claims on two final train PSNRs carry ``difference_db``, ``noise_db`` and
    ``resolved`` (:func:`difference_and_noise`); *faster* has none (NaN, empty).
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
        g = metrics[metrics.model == model]
        at = {k: g[(g.K == k[1]) & (g["T"] == k[2])] for k in (key, best_other)}
        mine_w, other_w = final_window(at[key], window), final_window(at[best_other], window)
        gap = difference_and_noise(mine_w, other_w)
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
                **noise_columns(*gap),
            }
        )
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
                **NO_DIFFERENCE,
            }
        )

    def compare(better: str, worse: str, claim: str) -> None:
        a, b = (better, 10, 10), (worse, 10, 10)
        if a not in final or b not in final:
            return
        ta, tb = final[a].final_train_psnr, final[b].final_train_psnr
        wa, wb = (
            final_window(
                metrics[(metrics.model == m) & (metrics.K == 10) & (metrics["T"] == 10)], window
            )
            for m in (better, worse)
        )
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
                **noise_columns(*difference_and_noise(wa, wb)),
            }
        )

    if figure == "fig1":
        compare("wavelet-BC", "wavelet-B", "θ_BC beats θ_B at K=T=10")
    else:
        compare("pnp-weights", "pnp-sigma-tau", "learning the denoiser beats the fixed one")
        compare("pnp-sigma-tau", "wavelet-BC", "FB-PnP (σ, τ) beats the wavelet prior")
    return pd.DataFrame(rows, columns=["figure", "model", *CLAIM_COLUMNS])


def claims_paragraph(figure: str, claims: pd.DataFrame, header: str) -> str:
    """The claims as one printed paragraph."""
    if claims.empty:
        return f"{header}: no claim checkable (the run needs K=T=10 and another (K, T))."
    parts = [f"{r.model}: {r.claim}: {verdict(r)}" for r in claims.itertuples()]
    return f"{header}. " + "; ".join(parts) + "."


def verdict(claim: Any) -> str:
    """One claim row as printed: yes / NO, what was measured, and "within noise" when the
    difference it rests on is not larger than its noise."""
    text = f"{'yes' if claim.holds else 'NO'} ({claim.measured})"
    if claim.resolved is False:
        text += f" — within noise: {claim.difference_db:+.2f} ± {claim.noise_db:.2f} dB, a tie"
    return text
