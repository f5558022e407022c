"""What every job shares: atomic writes, resume checks, metrics, devices, progress, options.

One helper each, in one place (``experiments/common``); the jobs import them from here.
"""

from .devices import resolve_device
from .io import (
    save_figure,
    save_torch_atomic,
    write_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_npz_atomic,
    write_text_atomic,
)
from .metrics import moving_average, psnr
from .options import parse_list
from .progress import progress
from .resume import check_resume, config_changes

__all__ = [
    "check_resume",
    "config_changes",
    "moving_average",
    "parse_list",
    "progress",
    "psnr",
    "resolve_device",
    "save_figure",
    "save_torch_atomic",
    "write_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_npz_atomic",
    "write_text_atomic",
]
