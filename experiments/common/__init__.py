"""What every job shares: atomic writes, the folder lock, resume checks, metrics, devices,
progress, options.

One helper each, in one place (``experiments/common``); the jobs import them from here.
"""

from .devices import resolve_device
from .io import (
    open_append,
    remove_partial_writes,
    save_figure,
    save_torch_atomic,
    write_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_npz_atomic,
    write_text_atomic,
)
from .lock import FolderInUseError, folder_lock
from .metrics import moving_average, psnr
from .options import parse_list
from .progress import progress
from .resume import (
    check_resume,
    config_changes,
    config_hash,
    interrupt_hint,
    read_csv_records,
    read_saved_config,
    run_state,
)

__all__ = [
    "FolderInUseError",
    "check_resume",
    "config_changes",
    "config_hash",
    "folder_lock",
    "interrupt_hint",
    "moving_average",
    "open_append",
    "parse_list",
    "progress",
    "psnr",
    "read_csv_records",
    "read_saved_config",
    "remove_partial_writes",
    "resolve_device",
    "run_state",
    "save_figure",
    "save_torch_atomic",
    "write_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_npz_atomic",
    "write_text_atomic",
]
