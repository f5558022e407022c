"""``retune-suite sweep SPEC``: a grid of ``reproduce``/``errors`` runs, on local processes or a
dask.distributed cluster, resumable and safe to run again (docs/sweeps.md).

Modules: :mod:`.spec` (a TOML spec, or ``--set``/``--grid``, → validated grid points),
:mod:`.point` (one point on a worker: its lock, the run, the markers), :mod:`.run` (the
command, the local and dask executors, the summary).
"""

from .point import DONE, FAILURE, LOCK, LOG, POINT, Task, acquire, release, run_point
from .run import SweepConfig, collect, point_status, run_sweep, visible_gpus
from .spec import Experiment, Point, Spec, expand, experiments, load_spec, point_id

__all__ = [
    "DONE",
    "FAILURE",
    "LOCK",
    "LOG",
    "POINT",
    "Experiment",
    "Point",
    "Spec",
    "SweepConfig",
    "Task",
    "acquire",
    "collect",
    "expand",
    "experiments",
    "load_spec",
    "point_id",
    "point_status",
    "release",
    "run_point",
    "run_sweep",
    "visible_gpus",
]
