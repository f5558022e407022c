"""Figs. 1–3 of section 4 redrawn from ``metrics.csv`` and ``reconstructions.npz``.

Top row, one panel per model: train PSNR per gradient step ℓ for each (K, T), the exact
values as dots and a trailing 25-step moving average as a line (the paper's "local averages
over 25 steps"). A step whose PSNR is below 0 dB (the iteration diverged: an error larger than
the data range) would squash the panel: the axis stops at 0 dB, such steps are drawn as
triangles on that edge and counted in the legend, and the moving average keeps their values.
Bottom row: ground truth, observation and each model's estimate at
K = T = 10 on a test image, with their PSNR: the unclipped PSNR that ``summary.csv`` reports
too (:func:`retune_suite.experiments.common.metrics.psnr`), stored in ``reconstructions.npz`` beside
the
images, which are clipped to [0, 1] for display.

>>> import numpy as np
>>> truth = np.zeros((2, 2, 3))
>>> [title for title, _ in panels({"ground_truth": truth, "observation": truth + 0.1}, [])]
['ground truth', 'observation\\n20.00 dB']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..common.io import save_figure
from ..common.metrics import moving_average, psnr

__all__ = ["COLORS", "panels", "redraw", "reproduce_figure"]

COLORS = {
    (10, 10): "tab:blue",
    (10, 1): "tab:orange",
    (1, 10): "tab:green",
    (1, 1): "tab:red",
}
"""The paper's colours: blue for K = T = 10; orange and green for the two configurations
with 10 steps of φ (green: with restarts)."""

LETTERS = "abcdefgh"
OFF_SCALE_DB = 0.0
"""The lower edge of a PSNR panel when a step falls below it (a diverged iteration)."""


def _label_psnr(recon: Mapping[str, Any], key: str, truth: np.ndarray) -> float:
    """The PSNR of image ``key``: as the run stored it (``psnr_<key>``, computed unclipped like
    ``summary.csv``), else, for files written before it was stored, from the displayed image."""
    stored = recon.get(f"psnr_{key}")
    if stored is not None:
        return float(np.asarray(stored))
    x, reference = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (recon[key], truth))
    return float(psnr(x[None], reference[None])[0])


def panels(
    reconstructions: Mapping[str, Any] | None, models: Sequence[str]
) -> list[tuple[str, np.ndarray]]:
    """The bottom row: (title, image) for the ground truth, the observation and the estimate
    of each of ``models`` found in ``reconstructions``, titles with their PSNR in dB."""
    recon = dict(reconstructions or {})
    images: list[tuple[str, np.ndarray]] = []
    if "ground_truth" not in recon:
        return images
    truth = np.asarray(recon["ground_truth"])
    images.append(("ground truth", truth))
    if "observation" in recon:
        value = _label_psnr(recon, "observation", truth)
        images.append((f"observation\n{value:.2f} dB", np.asarray(recon["observation"])))
    shown = f"K={int(recon.get('K', 10))}, T={int(recon.get('T', 10))}"
    for i, model in enumerate(models):
        key = f"estimate_{model}"
        if key in recon:
            value = _label_psnr(recon, key, truth)
            title = f"({LETTERS[i]}) {model}, {shown}\n{value:.2f} dB"
            images.append((title, np.asarray(recon[key])))
    return images


def reproduce_figure(
    metrics: pd.DataFrame,
    reconstructions: Mapping[str, Any] | None,
    base: Path,
    *,
    title: str = "",
    labels: Mapping[str, str] | None = None,
    window: int = 25,
) -> list[Path]:
    """Draw the figure to ``base``.pdf and ``base``.png; return the two paths.

    Parameters
    ----------
    metrics
        One row per gradient step and configuration, with columns model, K, T, step, psnr.
    reconstructions
        ``ground_truth``, ``observation`` and ``estimate_<model>`` images (H, W, 3) in [0, 1],
        ``psnr_<name>`` their PSNRs (unclipped; computed from the images when absent), plus
        ``K`` and ``T`` of the estimates; None or empty: no bottom row.
    labels
        A description per model (panel titles), in panel order; default: the models of
        ``metrics`` in order of appearance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(labels) if labels else list(dict.fromkeys(metrics.model))
    images = panels(reconstructions, models)
    n_top, n_bottom = len(models), len(images)
    width = max(4.6 * n_top, 2.6 * n_bottom, 6.0)
    fig = plt.figure(figsize=(width, 4.2 + (2.9 if images else 0)))
    grid = fig.add_gridspec(
        2 if images else 1, 1, height_ratios=[4.2, 2.9] if images else [1], hspace=0.45
    )
    top = grid[0].subgridspec(1, n_top, wspace=0.25)
    for i, model in enumerate(models):
        ax = fig.add_subplot(top[0, i])
        sub = metrics[metrics.model == model]
        off_scale = bool((sub.psnr < OFF_SCALE_DB).any())
        for (K, T), g in sorted(sub.groupby(["K", "T"]), key=lambda kv: kv[0]):
            g = g.sort_values("step")
            color = COLORS.get((int(K), int(T)))
            label = f"K={int(K)}, T={int(T)}"
            below = g.psnr < OFF_SCALE_DB
            if below.any():
                label += f" ({int(below.sum())} steps < {OFF_SCALE_DB:g} dB: ▼)"
                ax.plot(
                    g.step[below],
                    np.full(int(below.sum()), OFF_SCALE_DB),
                    "v",
                    ms=6,
                    color=color,
                    clip_on=False,
                )
            ax.plot(g.step[~below], g.psnr[~below], ".", ms=3, alpha=0.35, color=color)
            ax.plot(
                g.step,
                moving_average(g.psnr.reset_index(drop=True), window),  # partial windows first
                "-",
                lw=1.8,
                color=color,
                label=label,
            )
        if off_scale:
            ax.set_ylim(bottom=OFF_SCALE_DB)
        description = labels.get(model, model) if labels else model
        ax.set_title(f"({LETTERS[i]}) {model}\n{description}", fontsize=10)
        ax.set_xlabel("gradient step ℓ")
        ax.set_ylabel("train PSNR (dB)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    if images:
        bottom = grid[1].subgridspec(1, n_bottom, wspace=0.05)
        for j, (name, image) in enumerate(images):
            ax = fig.add_subplot(bottom[0, j])
            ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    paths = save_figure(fig, Path(base))
    plt.close(fig)
    return paths


def redraw(folder: str | Path, figure: str | None = None) -> list[Path]:
    """Redraw a run's figure from its ``metrics.csv`` and ``reconstructions.npz``."""
    from .train import FIGURES, MODELS

    folder = Path(folder)
    figure = figure or folder.parent.name
    metrics = pd.read_csv(folder / "metrics.csv")
    recon_path = folder / "reconstructions.npz"
    recon = dict(np.load(recon_path)) if recon_path.exists() else None
    present = set(metrics.model)
    rows = FIGURES[figure].models if figure in FIGURES else tuple(dict.fromkeys(metrics.model))
    models = tuple(m for m in rows if m in present)  # a run of some rows (--models)
    title = FIGURES[figure].title if figure in FIGURES else ""
    config = folder / "config.json"
    if title and config.exists():  # the title the run gave it
        estimator = json.loads(config.read_text()).get("estimator", "retune")
        title += f" — {figure}/{folder.name}, {estimator}"
    return reproduce_figure(
        metrics,
        recon,
        folder / figure,
        title=title,
        labels={m: MODELS.get(m, m) for m in models},
    )
