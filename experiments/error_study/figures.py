"""The error study's figures, drawn from ``metrics.csv`` (so a figure is redrawn without
rerunning the study): one 2×3 figure per (task, prior), PDF and PNG. The a-posteriori
certificate (column ``certificate``) is drawn dash-dot next to the a-priori bounds (dashed)
for JFB (error vs K), ReTune per K (error vs T) and Neumann (error vs P); a second figure per
(task, prior) draws the tightness, bound / observed error (the ``tightness_*`` columns), of
every bound and certificate on the same axes (1 = attained, below 1 = violated). Time and memory are
``seconds_median`` and ``peak_mib`` (:mod:`.cost`); a run written before those columns is
drawn from its ``seconds`` and ``peak_bytes``, with its method in the title.

Curves that coincide stay visible: errors, bounds, Theorem 2 as printed and certificates
each have their own marker and line style (:data:`STYLE`; a bound and the certificate at x̂
are often equal to four digits). The y-range of an error or tightness panel is set by the
errors and the bounds (:class:`Panel`): a certificate beyond its top (up to 10¹¹ for ReTune
at T = 1) is drawn to the edge, each such point marked ▲ there, and the legend says so.
Where Lemma 1's bound is not monotone in K the figure says why (:func:`lemma1_note`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..common.io import save_figure

COLORS = {
    "jfb": "tab:orange",
    "retune": "tab:blue",
    "unrolled": "tab:green",
    "neumann": "tab:purple",
}

STYLE: dict[str, dict[str, Any]] = {
    "error": {"linestyle": "-", "marker": "o", "ms": 5, "lw": 1.5, "zorder": 4},
    "bound": {"linestyle": "--", "marker": "s", "ms": 8, "mfc": "none", "lw": 2.4, "zorder": 2},
    "printed": {"linestyle": ":", "marker": "D", "ms": 5, "mfc": "none", "lw": 1.8, "zorder": 2.5},
    "certificate": {"linestyle": "-.", "marker": "x", "ms": 7, "lw": 1.2, "zorder": 3},
}
"""Line style and marker per kind of curve: an error, an a-priori bound (Lemma 1, Theorem 2
corrected, Neumann), Theorem 2 as printed, the a-posteriori certificate. The bound is drawn
wide and underneath, the certificate thin on top, each with its own marker, so curves with
equal values show as a square, a diamond and a cross at the same points."""

ABOVE = "^"
"""The marker (▲) of a certificate point above the panel's top, drawn on the top edge."""


class Panel:
    """One log-scale panel whose y-range is set by its errors and bounds (:meth:`curve`);
    certificates (:meth:`certificate`) are drawn by :meth:`finish`, with each point above the
    top marked ▲ on the edge and a legend entry giving the largest value."""

    MARGIN = 3.0
    """The range is [lowest / MARGIN, highest · MARGIN] of what sets it."""

    def __init__(self, ax: Any):
        self.ax = ax
        self.ranged: list[np.ndarray] = []
        self.certificates: list[tuple[np.ndarray, np.ndarray, Any, str]] = []

    def curve(self, x: Any, y: Any, kind: str, color: Any, label: str) -> None:
        """Draw an error or a bound (``kind`` of :data:`STYLE`); it sets the y-range."""
        self.ax.plot(x, y, color=color, label=label, **STYLE[kind])
        self.ranged.append(np.asarray(y, dtype=float))

    def reference(self, value: float) -> None:
        """A value the range must show (the line at 1 of the tightness panels)."""
        self.ranged.append(np.array([value]))

    def certificate(self, x: Any, y: Any, color: Any, label: str) -> None:
        """A certificate curve, drawn by :meth:`finish` once the range is known."""
        self.certificates.append(
            (np.asarray(x, dtype=float), np.asarray(y, dtype=float), color, label)
        )

    def finish(self) -> None:
        ax = self.ax
        ax.set_yscale("log")
        values = np.concatenate(self.ranged) if self.ranged else np.array([])
        values = values[np.isfinite(values) & (values > 0)]
        top = values.max() * self.MARGIN if values.size else np.inf
        for x, y, color, label in self.certificates:
            ax.plot(x, y, color=color, label=label, **STYLE["certificate"])
            inside = y[np.isfinite(y) & (y > 0) & (y <= top)]
            values = np.concatenate([values, inside])
            above = np.isfinite(y) & (y > top)
            if above.any():
                ax.plot(
                    x[above],
                    np.full(int(above.sum()), top),
                    color=color,
                    linestyle="none",
                    marker=ABOVE,
                    ms=8,
                    clip_on=False,
                    zorder=5,
                    label=f"{label}: ▲ above the panel (up to {y[above].max():.1e})",
                )
        if values.size:
            ax.set_ylim(values.min() / self.MARGIN, top)


def _certificate(panel: Panel, g: pd.DataFrame, x: str, color: Any, what: str) -> None:
    """The a-posteriori certificate of the rows ``g`` (dash-dot), where it was computed;
    labelled "(estimated)" unless every point is certified."""
    if "certificate" not in g or not g.certificate.notna().any():
        return
    g = g[g.certificate.notna()]
    certified = (g.certificate_status == "certified").all()
    label = "certificate" + ("" if certified else " (estimated)") + f", {what}"
    panel.certificate(g[x], g.certificate, color, label)


def lemma1_note(sub: pd.DataFrame) -> str | None:
    """Why Lemma 1's bound is not monotone in K, when the JFB rows of ``sub`` show it.

    Lemma 1 (29) is δ_K/(1−δ_K)·‖∂ₓL(x̂)‖·‖∂_θΦ_K(x̂)‖. With the analytic δ_K = ω^K
    (denoising) the first factor falls with K, so the zigzag is ‖∂_θΦ_K(x̂)‖'s: recovered
    here from the column as bound·(1 − δ_K)/δ_K (relative to the first K). The reason was
    measured on 32×32 wavelet denoising (θ_B and θ_BC, float64, dense Jacobians): ∂ₓφ(x̂) has
    eigenvalues down to 1 − τL = −0.95 (ω = 0.964) and ∂_θφ(x̂) lies entirely on eigenvectors
    with negative eigenvalues, so ∂_θΦ_K = Σ_{k<K} ∂ₓφ^k ∂_θφ ≈ (1 − (−0.95)^K)/1.95·∂_θφ;
    ‖∂_θΦ_K‖ = 3.31, 0.17, 3.15, 0.32, 3.01, 0.45 for K = 1–6 (θ_BC), and the ratios recovered
    from the 256×256 run (1, 0.050, 0.91, 0.21, 0.33 for K = 1, 2, 5, 10, 20) are those of
    that formula. With a measured δ_K (inpainting, deblurring) the note says only that.
    """
    if "bound_lemma1" not in sub:
        return None
    jfb = sub[(sub.estimator == "jfb") & sub.bound_lemma1.notna()].sort_values("K")
    bound = jfb.bound_lemma1.to_numpy(dtype=float)
    steps = np.diff(bound)
    if len(bound) < 3 or (steps <= 0).all() or (steps >= 0).all():
        return None
    ks = jfb.K.astype(int).to_numpy()
    head = "Lemma 1's bound δ_K/(1−δ_K)·‖∂ₓL(x̂)‖·‖∂_θΦ_K(x̂)‖ is not monotone in K"
    constants = sub[sub.estimator == "constants"]
    analytic = (
        not constants.empty
        and "delta_kind" in constants
        and constants.delta_kind.iloc[0] == "analytic"
        and np.isfinite(constants.omega.iloc[0])
    )
    if not analytic:
        return (
            f"{head}. δ_K here is a measured local estimate, one per K (no analytic δ_K); the "
            "parity effect measured on denoising (eigenvalues of ∂ₓφ(x̂) near −ω) was not "
            "measured for this setting."
        )
    delta = float(constants.omega.iloc[0]) ** ks
    beta = bound * (1 - delta) / delta
    ratios = ", ".join(f"{b / beta[0]:.2g}" for b in beta)
    return (
        f"{head}: δ_K = ω^K falls smoothly, but ‖∂_θΦ_K(x̂)‖ (from this column, relative to "
        f"K = {ks[0]}: {ratios} for K = {', '.join(str(k) for k in ks)}) follows the parity of "
        "K. ∂_θΦ_K = Σ_{k<K} ∂ₓφ(x̂)^k ∂_θφ, and ∂_θφ lies on eigenvectors of ∂ₓφ(x̂) whose "
        "eigenvalues are near −ω (down to 1 − τL), so the sum is about "
        "(1 − (−ω)^K)/(1 + ω)·∂_θφ: large for odd K, small for even K. Measured on 32×32 "
        "wavelet denoising (float64, dense): eigenvalues down to −0.95 (ω = 0.964), all of "
        "∂_θφ on the negative ones, ‖∂_θΦ_K‖ = 3.3, 0.17, 3.2, 0.32 for K = 1–4."
    )


def _note(fig: Any, text: str | None) -> None:
    """``text`` under the panels, wrapped to the figure's width."""
    if text:
        width = int(fig.get_figwidth() * 14)
        fig.text(0.01, 0.005, textwrap.fill(text, width), ha="left", va="bottom", fontsize=8)


def _layout(fig: Any, text: str | None) -> None:
    lines = textwrap.fill(text, int(fig.get_figwidth() * 14)).count("\n") + 1 if text else 0
    bottom = (0.012 + 0.16 * lines) / fig.get_figheight() if text else 0.0
    fig.tight_layout(rect=(0, bottom, 1, 1))


def _cost_columns(sub: pd.DataFrame) -> tuple[pd.DataFrame, str, str, str, str]:
    """The rows with a time and memory, the two columns and the labels of the panels: the
    warm median and allocator peak (:mod:`.cost`) where this (task, prior) has them, else
    the one cold call and sampled RSS of runs written before."""
    if "peak_mib" in sub and sub.peak_mib.notna().any():
        rows = sub[sub.peak_mib.notna()]
        methods = ", ".join(sorted(set(rows.peak_method.dropna())))
        repeats = "/".join(str(int(r)) for r in sorted(set(rows.timing_repeats.dropna())))
        return (
            rows.assign(_mib=rows.peak_mib),
            "seconds_median",
            f"median of {repeats} warm calls",
            "MiB above the level before",
            methods,
        )
    rows = sub.assign(_mib=sub.peak_bytes / 2**20)
    kind = sub.memory_kind.iloc[0] if "memory_kind" in sub else "unknown"
    return rows, "seconds", "one cold call", "MiB above baseline", kind


def error_study_figures(frame: pd.DataFrame, out: Path) -> list[Path]:
    """One 2×3 figure per (task, prior): errors vs K, T, P with bounds; cosine, time, memory;
    and its tightness figure. PDF and PNG in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    if "estimator" not in frame:
        return paths
    for (task, prior), sub in frame.groupby(["task", "prior"]):
        if sub[~sub.estimator.isin(["constants", "deq_solve"])].empty:
            continue
        fig = error_figure(sub)
        paths += save_figure(fig, out / f"errors_{task}_{prior}")
        plt.close(fig)
        fig = tightness_figure(sub, f"{task}, {prior}")
        if fig is not None:
            paths += save_figure(fig, out / f"tightness_{task}_{prior}")
            plt.close(fig)
    return paths


def error_figure(frame: pd.DataFrame) -> Any:
    """The 2×3 figure of one (task, prior) (the rows of ``frame``, its ``constants`` row
    included): errors vs K, T, P with bounds and certificates (:class:`Panel`), cosine, time,
    memory; :func:`lemma1_note` under the panels."""
    import matplotlib.pyplot as plt

    sub = frame[~frame.estimator.isin(["constants", "deq_solve"])]
    task, prior = sub.task.iloc[0], sub.prior.iloc[0]
    T_ref = int(sub[sub.estimator == "retune"]["T"].max())
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    (a, b, c), (d, e, f) = axes
    pa, pb, pc = Panel(a), Panel(b), Panel(c)
    ksweep = sub[((sub.estimator == "jfb") | ((sub.estimator != "neumann") & (sub["T"] == T_ref)))]
    costed, seconds, timing, mib, method = _cost_columns(ksweep)
    for name, g in costed.groupby("estimator"):
        g = g.sort_values("K")
        e.loglog(g.K, g[seconds], "o-", color=COLORS[name], label=name)
        f.loglog(g.K, g["_mib"].clip(lower=2**-20), "o-", color=COLORS[name], label=name)
    for name, g in ksweep.groupby("estimator"):
        g = g.sort_values("K")
        label = f"{name}" + ("" if name == "jfb" else f" (T={T_ref})")
        pa.curve(g.K, g.rel_error.clip(lower=1e-17), "error", COLORS[name], label)
        d.semilogx(g.K, g.cosine, "o-", color=COLORS[name], label=name)
    jfb = sub[sub.estimator == "jfb"].sort_values("K")
    if "bound_lemma1" in jfb and jfb.bound_lemma1.notna().any():
        pa.curve(jfb.K, jfb.bound_lemma1, "bound", COLORS["jfb"], "Lemma 1 bound")
    _certificate(pa, jfb, "K", COLORS["jfb"], "JFB")
    a.set_xscale("log")
    a.set(
        xlabel="K (steps per block)",
        ylabel="‖g − ĝ‖ / ‖g‖",
        title="error vs K (JFB at x̂; ReTune, unrolled at T)",
    )
    tsweep = sub[
        (sub.estimator == "retune")
        & sub.get("bound_theorem2_corrected", pd.Series(index=sub.index)).notna()
    ]
    if tsweep.empty:
        tsweep = sub[(sub.estimator == "retune")]
    for i, (K, g) in enumerate(tsweep.groupby("K")):
        g = g.sort_values("T")
        color = plt.cm.viridis(i / max(1, tsweep.K.nunique() - 1))
        pb.curve(g["T"], g.rel_error.clip(lower=1e-17), "error", color, f"ReTune K={K}")
        if "bound_theorem2_corrected" in g and g.bound_theorem2_corrected.notna().any():
            pb.curve(g["T"], g.bound_theorem2_corrected, "bound", color, f"Thm 2 corrected, K={K}")
            pb.curve(g["T"], g.bound_theorem2, "printed", color, f"Thm 2 as printed, K={K}")
        _certificate(pb, g, "T", color, f"K={K}")
    b.set(xlabel="T (restarts)", ylabel="‖g − g^R‖ / ‖g‖", title="ReTune error vs T")
    neu = sub[sub.estimator == "neumann"].sort_values("P")
    if not neu.empty:
        label = f"Neumann (K={int(neu.K.iloc[0])})"
        pc.curve(neu.P, neu.rel_error.clip(lower=1e-17), "error", COLORS["neumann"], label)
        if "bound_neumann" in neu and neu.bound_neumann.notna().any():
            pc.curve(neu.P, neu.bound_neumann, "bound", COLORS["neumann"], "δ^{P+1}/(1−δ) bound")
        _certificate(pc, neu, "P", COLORS["neumann"], "Neumann")
    c.set(xlabel="P (Neumann terms)", ylabel="‖g − g_P‖ / ‖g‖", title="Neumann truncation")
    for panel in (pa, pb, pc):
        panel.finish()
    d.set(xlabel="K", ylabel="cosine(g, ĝ)", title="cosine similarity to DEQ")
    e.set(xlabel="K", ylabel="seconds", title=f"time per hypergradient ({timing})")
    f.set(xlabel="K", ylabel=mib, title=f"peak memory ({method})")
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    row = sub.iloc[0]
    fig.suptitle(
        f"{task}, {prior}: {int(row['size'])}×{int(row['size'])}, batch "
        f"{int(row['batch'])}, {row['dtype']} on {row['device']}"
    )
    note = lemma1_note(frame)
    _note(fig, note)
    _layout(fig, note)
    return fig


TIGHTNESS = {
    "jfb": (("lemma1", "bound", "Lemma 1 (29)"), ("certificate", "certificate", "certificate")),
    "retune": (
        ("theorem2_corrected", "bound", "Thm 2 corrected"),
        ("theorem2", "printed", "Thm 2 as printed"),
        ("certificate", "certificate", "certificate"),
    ),
    "neumann": (
        ("neumann", "bound", "Neumann (22)"),
        ("certificate", "certificate", "certificate"),
    ),
}
"""Per estimator, the ``tightness_<name>`` columns drawn, their kind (:data:`STYLE`) and
label."""


def tightness_figure(frame: pd.DataFrame, title: str) -> Any:
    """bound / observed against K (JFB), T (ReTune, per K) and P (Neumann), log scale; None
    without tightness columns. The bounds and the line at 1 set each panel's range; a
    certificate's tightness beyond it is marked ▲ (:class:`Panel`)."""
    import matplotlib.pyplot as plt

    sub = frame[~frame.estimator.isin(["constants", "deq_solve"])]
    if not any(c.startswith("tightness_") and sub[c].notna().any() for c in sub):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (("jfb", "K", axes[0]), ("retune", "T", axes[1]), ("neumann", "P", axes[2]))
    for estimator, x, ax in panels:
        panel = Panel(ax)
        panel.reference(1.0)
        rows = sub[sub.estimator == estimator]
        groups = rows.groupby("K") if estimator == "retune" else [(None, rows)]
        for i, (K, g) in enumerate(groups):
            g = g.sort_values(x)
            color = plt.cm.viridis(i / max(1, rows.K.nunique() - 1)) if K else COLORS[estimator]
            for column, kind, label in TIGHTNESS[estimator]:
                values = g.get(f"tightness_{column}")
                if values is None or not values.notna().any():
                    continue
                label += f", K={K}" if K else ""
                if kind == "certificate":
                    panel.certificate(g[x], values, color, label)
                else:
                    panel.curve(g[x], values, kind, color, label)
        ax.axhline(1.0, color="k", lw=0.8)
        panel.finish()
        ax.set(xlabel=x, ylabel="bound / observed error", title=f"{estimator}: tightness vs {x}")
        if estimator == "jfb":
            ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    row = sub.iloc[0]
    fig.suptitle(
        f"{title}: {int(row['size'])}×{int(row['size'])}, {row['dtype']} — a bound is attained "
        "at 1 and violated below it"
    )
    note = lemma1_note(frame)
    _note(fig, note)
    _layout(fig, note)
    return fig
