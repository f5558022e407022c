"""``retune-suite errors``: run the study unit by unit, resumably, then draw the figures."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..common.devices import resolve_device
from ..common.io import remove_partial_writes, write_json_atomic
from ..common.lock import folder_lock
from ..common.resume import interrupt_hint, read_csv_records, read_saved_config, run_state
from .config import KEY, RESUMABLE, ErrorStudyConfig, plan, validate, with_tolerances
from .study import Metrics, Study

__all__ = ["run_errors"]


def _previous_rows(metrics: Path, cfg: ErrorStudyConfig) -> list[dict[str, Any]]:
    """The complete rows of an earlier run of this configuration (a last row cut short is
    dropped: it is computed again); key columns that an older version did not write (size,
    batch, dtype, seed) are those of the configuration, checked equal."""
    frame, torn = read_csv_records(metrics, required=("task", "prior", "estimator", "K", "T", "P"))
    if torn:
        print(f"{metrics}: its last row was cut short: dropped, it is computed again")
    for name in KEY[2:6]:
        value = getattr(cfg, name)
        frame[name] = frame[name].fillna(value) if name in frame else value
    frame = frame.astype({"size": int, "batch": int, "seed": int, "dtype": str})
    return frame.to_dict("records")


def _units(cfg: ErrorStudyConfig) -> list[tuple]:
    return [(task, prior, cfg.size, cfg.batch, cfg.dtype, cfg.seed) for task, prior in plan(cfg)]


def run_errors(cfg: ErrorStudyConfig) -> int:
    """Run the study; every row is written to ``metrics.csv`` as soon as it is computed.

    The run folder is locked for the run (one writer). With ``--resume`` the saved
    configuration must be the one asked for (only the fields of
    :data:`~retune_suite.experiments.error_study.config.RESUMABLE` may change), and rows already
    written are skipped; without it an existing ``metrics.csv`` is never overwritten: a finished
    run of the same settings is reported complete (exit 0), an unfinished one needs
    ``--resume``.
    """
    validate(cfg)
    cfg = with_tolerances(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    hint = (
        f"every row computed is kept in {out / 'metrics.csv'}; continue with the same command "
        "and --resume."
    )
    with folder_lock(out), interrupt_hint(hint):
        return _run(cfg, out)


def _run(cfg: ErrorStudyConfig, out: Path) -> int:
    from .figures import error_study_figures

    remove_partial_writes(out)
    path = out / "metrics.csv"
    saved = read_saved_config(out / "config.json", ErrorStudyConfig)
    previous = functools.cache(lambda: _previous_rows(path, cfg) if path.exists() else [])

    def complete() -> bool:
        metrics = Metrics(path, previous())
        return all(metrics.complete(unit) for unit in _units(cfg))

    state = run_state(
        out,
        exists=path.exists(),
        saved=saved,
        current=cfg,
        resume=cfg.resume,
        complete=complete,
        resumable=RESUMABLE,
    )
    rows = previous()
    if state == "resume" and path.exists():
        print(f"resuming: {len(rows)} rows already in {path}")
    if state == "new" or not (out / "config.json").exists():
        write_json_atomic(
            {
                **dataclasses.asdict(cfg),
                "device_resolved": str(resolve_device(cfg.device)),
                "torch": torch.__version__,
            },
            out / "config.json",
        )
    metrics = Metrics(path, rows)
    for task, prior in plan(cfg):
        unit = (task, prior, cfg.size, cfg.batch, cfg.dtype, cfg.seed)
        if metrics.complete(unit):
            if state != "complete":
                print(f"== {task} / {prior}: already complete, skipped")
            continue
        Study(cfg, task, prior, metrics).run()
    if state == "complete":
        figures = [out / f"errors_{task}_{prior}.png" for task, prior in plan(cfg)]
        if all(f.exists() for f in figures):
            print(
                f"complete: {out} holds this run with the same settings ({len(rows)} rows in "
                f"{path}); nothing recomputed (pass --resume to redraw its figures, or choose "
                "another --out to run it again)."
            )
            return 0
    paths = error_study_figures(pd.DataFrame(metrics.rows), out)
    print(f"wrote {path}, {out / 'config.json'} and {len(paths)} figures")
    return 0
