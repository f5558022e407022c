"""``retune-suite errors``: run the study unit by unit, resumably, then draw the figures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from retune_suite.operators.errors import InvalidInputError

from ..common.devices import resolve_device
from ..common.io import write_json_atomic
from ..common.options import convert_fields
from ..common.resume import check_resume
from .config import KEY, RESUMABLE, ErrorStudyConfig, plan, validate
from .study import Metrics, Study

__all__ = ["run_errors"]


def _saved_config(path: Path) -> dict[str, Any] | None:
    """The configuration fields of a run's ``config.json`` (typed as the dataclass types them;
    the run's metadata, e.g. ``torch``, left out), or None when there is none."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidInputError(
            f"cannot read {path} ({error}): restore it, or choose another --out."
        ) from error
    names = {f.name for f in dataclasses.fields(ErrorStudyConfig)}
    return convert_fields(ErrorStudyConfig, {k: v for k, v in saved.items() if k in names})


def _previous_rows(metrics: Path, cfg: ErrorStudyConfig) -> list[dict[str, Any]]:
    """The rows of an earlier run of this configuration; key columns that an older version did
    not write (size, batch, dtype, seed) are those of the configuration, checked equal."""
    frame = pd.read_csv(metrics)
    for name in KEY[2:6]:
        value = getattr(cfg, name)
        frame[name] = frame[name].fillna(value) if name in frame else value
    frame = frame.astype({"size": int, "batch": int, "seed": int, "dtype": str})
    return frame.to_dict("records")


def run_errors(cfg: ErrorStudyConfig) -> int:
    """Run the study; every row is written to ``metrics.csv`` as soon as it is computed.

    With ``--resume`` the saved configuration must be the one asked for (only the fields of
    :data:`~retune_suite.experiments.error_study.config.RESUMABLE` may change), and rows already
    written
    are skipped; without it an existing ``metrics.csv`` is never overwritten.
    """
    from .figures import error_study_figures

    validate(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    path = out / "metrics.csv"
    rows: list[dict[str, Any]] = []
    if cfg.resume:
        check_resume(
            _saved_config(out / "config.json"),
            cfg,
            where=str(out),
            resumable=RESUMABLE,
            fix="give the settings of the first run, or choose another --out",
        )
        if path.exists():
            rows = _previous_rows(path, cfg)
            print(f"resuming: {len(rows)} rows already in {path}")
    elif path.exists():
        raise InvalidInputError(
            f"{path} exists: pass --resume to continue that run, or "
            "choose another --out (nothing is overwritten)."
        )
    out.mkdir(parents=True, exist_ok=True)
    if not (cfg.resume and (out / "config.json").exists()):
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
            print(f"== {task} / {prior}: already complete, skipped")
            continue
        Study(cfg, task, prior, metrics).run()
    paths = error_study_figures(pd.DataFrame(metrics.rows), out)
    print(f"wrote {path}, {out / 'config.json'} and {len(paths)} figures")
    return 0
