"""The error study's figures, drawn from ``metrics.csv`` (so a figure is redrawn without
rerunning the study): one 2×3 figure per (task, prior), PDF and PNG. The a-posteriori
certificate (column ``certificate``) is drawn dash-dot next to the a-priori bounds (dashed)
for JFB (error vs K), ReTune per K (error vs T) and Neumann (error vs P); a second figure per
(task, prior) draws the tightness, bound / observed error (the ``tightness_*`` columns), of
every bound and certificate on the same axes (1 = attained, below 1 = violated). Time and memory are
``seconds_median`` and ``peak_mib`` (:mod:`.cost`); a run written before those columns is
drawn from its ``seconds`` and ``peak_bytes``, with its method in the title."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..common.io import save_figure

COLORS = {
    "jfb": "tab:orange",
    "retune": "tab:blue",
    "unrolled": "tab:green",
    "neumann": "tab:purple",
}


def _certificate(ax, g: pd.DataFrame, x: str, color: str, what: str) -> None:
    """The a-posteriori certificate of the rows ``g`` (dash-dot), where it was computed;
    labelled "(estimated)" unless every point is certified."""
    if "certificate" not in g or not g.certificate.notna().any():
        return
    g = g[g.certificate.notna()]
    certified = (g.certificate_status == "certified").all()
    label = "certificate" + ("" if certified else " (estimated)") + f", {what}"
    ax.plot(g[x], g.certificate, "-.", color=color, label=label)


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
    """One 2×3 figure per (task, prior): errors vs K, T, P with bounds; cosine, time, memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    if "estimator" not in frame:
        return paths
    est = frame[~frame.estimator.isin(["constants", "deq_solve"])]
    for (task, prior), sub in est.groupby(["task", "prior"]):
        T_ref = int(sub[sub.estimator == "retune"]["T"].max())
        fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
        (a, b, c), (d, e, f) = axes
        ksweep = sub[
            ((sub.estimator == "jfb") | ((sub.estimator != "neumann") & (sub["T"] == T_ref)))
        ]
        costed, seconds, timing, mib, method = _cost_columns(ksweep)
        for name, g in costed.groupby("estimator"):
            g = g.sort_values("K")
            e.loglog(g.K, g[seconds], "o-", color=COLORS[name], label=name)
            f.loglog(g.K, g["_mib"].clip(lower=2**-20), "o-", color=COLORS[name], label=name)
        for name, g in ksweep.groupby("estimator"):
            g = g.sort_values("K")
            a.loglog(
                g.K,
                g.rel_error.clip(lower=1e-17),
                "o-",
                color=COLORS[name],
                label=f"{name}" + ("" if name == "jfb" else f" (T={T_ref})"),
            )
            d.semilogx(g.K, g.cosine, "o-", color=COLORS[name], label=name)
        jfb = sub[sub.estimator == "jfb"].sort_values("K")
        if "bound_lemma1" in jfb and jfb.bound_lemma1.notna().any():
            a.loglog(jfb.K, jfb.bound_lemma1, "--", color=COLORS["jfb"], label="Lemma 1 bound")
        _certificate(a, jfb, "K", COLORS["jfb"], "JFB")
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
            b.semilogy(
                g["T"], g.rel_error.clip(lower=1e-17), "o-", color=color, label=f"ReTune K={K}"
            )
            if "bound_theorem2_corrected" in g and g.bound_theorem2_corrected.notna().any():
                b.semilogy(
                    g["T"],
                    g.bound_theorem2_corrected,
                    "--",
                    color=color,
                    label=f"Thm 2 corrected, K={K}",
                )
                b.semilogy(
                    g["T"], g.bound_theorem2, ":", color=color, label=f"Thm 2 as printed, K={K}"
                )
            _certificate(b, g, "T", color, f"K={K}")
        b.set(xlabel="T (restarts)", ylabel="‖g − g^R‖ / ‖g‖", title="ReTune error vs T")
        neu = sub[sub.estimator == "neumann"].sort_values("P")
        if not neu.empty:
            c.semilogy(
                neu.P,
                neu.rel_error.clip(lower=1e-17),
                "o-",
                color=COLORS["neumann"],
                label=f"Neumann (K={int(neu.K.iloc[0])})",
            )
            if "bound_neumann" in neu and neu.bound_neumann.notna().any():
                c.semilogy(
                    neu.P,
                    neu.bound_neumann,
                    "--",
                    color=COLORS["neumann"],
                    label="δ^{P+1}/(1−δ) bound",
                )
            _certificate(c, neu, "P", COLORS["neumann"], "Neumann")
        c.set(xlabel="P (Neumann terms)", ylabel="‖g − g_P‖ / ‖g‖", title="Neumann truncation")
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
        fig.tight_layout()
        paths += save_figure(fig, out / f"errors_{task}_{prior}")
        plt.close(fig)
        paths += _tightness_figure(sub, out, f"{task}, {prior}", f"tightness_{task}_{prior}")
    return paths


TIGHTNESS = {
    "jfb": (("lemma1", "--", "Lemma 1 (29)"), ("certificate", "-.", "certificate")),
    "retune": (
        ("theorem2_corrected", "--", "Thm 2 corrected"),
        ("theorem2", ":", "Thm 2 as printed"),
        ("certificate", "-.", "certificate"),
    ),
    "neumann": (("neumann", "--", "Neumann (22)"), ("certificate", "-.", "certificate")),
}
"""Per estimator, the ``tightness_<name>`` columns drawn, their line style and label."""


def _tightness_figure(sub: pd.DataFrame, out: Path, title: str, name: str) -> list[Path]:
    """bound / observed against K (JFB), T (ReTune, per K) and P (Neumann), log scale."""
    import matplotlib.pyplot as plt

    if not any(c.startswith("tightness_") and sub[c].notna().any() for c in sub):
        return []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (("jfb", "K", axes[0]), ("retune", "T", axes[1]), ("neumann", "P", axes[2]))
    for estimator, x, ax in panels:
        rows = sub[sub.estimator == estimator]
        groups = rows.groupby("K") if estimator == "retune" else [(None, rows)]
        for i, (K, g) in enumerate(groups):
            g = g.sort_values(x)
            color = plt.cm.viridis(i / max(1, rows.K.nunique() - 1)) if K else COLORS[estimator]
            for column, style, label in TIGHTNESS[estimator]:
                values = g.get(f"tightness_{column}")
                if values is None or not values.notna().any():
                    continue
                suffix = f", K={K}" if K else ""
                ax.plot(g[x], values, style, marker="o", ms=3, color=color, label=label + suffix)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
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
    fig.tight_layout()
    paths = save_figure(fig, out / name)
    plt.close(fig)
    return paths
