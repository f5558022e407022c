"""The one device resolver: ``auto``, ``cpu``, ``cuda``, ``cuda:N``; never a silent fallback."""

from __future__ import annotations

import torch
from retune_suite.operators.errors import InvalidInputError


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when visible, else the CPU; an unavailable device is an error.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InvalidInputError(
            f"unknown device {name!r}: use auto, cpu, cuda or cuda:N."
        ) from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"device {name!r} asked for, but no CUDA device is visible: use --device cpu "
                "(or auto)."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible: pick an index below that."
            )
    elif device.type != "cpu":
        raise InvalidInputError(f"device type {device.type!r} is not supported: use cpu or cuda.")
    return device
