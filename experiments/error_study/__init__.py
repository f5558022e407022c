"""``retune-suite errors``: the gradient-error study at image scale (section 4 models).

For each (task, prior): the DEQ reference hypergradient and every estimator (JFB, ReTune over
K and T, unrolled, Neumann-P) against it, with the Lemma 1, Neumann and Theorem 2 bounds on
the same rows; ``metrics.csv`` (one row per estimator setting, written as it is computed),
``config.json`` and one figure per (task, prior).

Modules: :mod:`.config` (the configuration, presets, validation), :mod:`.study` (one
(task, prior) unit and the rows it writes), :mod:`.figures` (the figures from the CSV),
:mod:`.command` (the command).
"""

from .command import run_errors
from .config import (
    KEY,
    PRESETS,
    RESUMABLE,
    TOLERANCES,
    ErrorStudyConfig,
    plan,
    validate,
    with_tolerances,
)
from .figures import error_study_figures
from .study import Metrics, Study

__all__ = [
    "KEY",
    "PRESETS",
    "RESUMABLE",
    "TOLERANCES",
    "ErrorStudyConfig",
    "Metrics",
    "Study",
    "error_study_figures",
    "plan",
    "run_errors",
    "validate",
    "with_tolerances",
]
