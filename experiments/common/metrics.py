"""Image-quality metrics and curve smoothing, shared by training, summaries and figures."""

from __future__ import annotations

from typing import Any

import torch


def psnr(x: torch.Tensor, reference: torch.Tensor, *, clip: bool = False) -> torch.Tensor:
    r"""PSNR per image for intensities in [0, 1], shape (B,) for inputs of shape (B, ...).

    .. math:: \mathrm{PSNR}(x, \bar x) = -10 \log_{10} \tfrac1n ‖x − \bar x‖_2^2

    ``x`` is not clipped unless ``clip=True`` (then to [0, 1], as when an image is saved).
    Every table and figure of the suite uses this one function, unclipped, so that a figure's
    labels and ``summary.csv`` agree.

    Examples
    --------
    >>> import torch
    >>> round(psnr(torch.full((1, 4), 0.1, dtype=torch.float64), torch.zeros(1, 4)).item(), 6)
    20.0
    """
    if x.shape != reference.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(x.shape)} and {tuple(reference.shape)}.")
    if clip:
        x = x.clamp(0.0, 1.0)
    diff = (x - reference).reshape(x.shape[0], -1)
    mse = (diff * diff).mean(1)
    return -10 * torch.log10(mse.clamp_min(torch.finfo(mse.dtype).tiny))


def moving_average(values: Any, window: int, *, full: bool = False) -> Any:
    """Trailing mean of a pandas Series over the last ``window`` values.

    With ``full=False`` the first values average what exists so far (curves in figures);
    with ``full=True`` they are NaN until a whole window exists (claims that compare levels).

    Examples
    --------
    >>> import pandas as pd
    >>> moving_average(pd.Series([1.0, 2.0, 3.0, 4.0]), 2).tolist()
    [1.0, 1.5, 2.5, 3.5]
    >>> moving_average(pd.Series([1.0, 2.0, 3.0]), 2, full=True).tolist()
    [nan, 1.5, 2.5]
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    w = min(window, len(values)) if full else window
    return values.rolling(max(w, 1), min_periods=max(w, 1) if full else 1).mean()
