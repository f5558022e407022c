"""Sweep specifications: a TOML file (or ``--set``/``--grid``) → validated grid points.

A spec names an experiment (a ``retune-suite`` command), fixed settings, a grid and an output
root::

    experiment = "reproduce"          # or "errors"
    out = "runs/sweeps/fig1-quick"    # the output root
    executor = "dask"                 # optional: local (default) or dask
    # scheduler = "tcp://HOST:8786"   # optional: a running dask scheduler
    # workers = 2                     # optional: parallel runs (0: automatic)

    [set]                             # settings shared by every point (the command's flags)
    figure = "fig1"
    preset = "quick"

    [grid]                            # one run per combination (cartesian product)
    seed = [0, 1]

Keys of ``[set]`` and ``[grid]`` are the fields of the command's configuration (its flags with
``_`` for ``-``), values are typed as those fields. Each point's configuration is built as the
command line builds one: dataclass defaults, then the preset's values, then ``[set]``, then
the point's grid values. ``reproduce`` also takes ``K`` and ``T`` (both, in ``[set]`` or
``[grid]``): one (K, T) per point, i.e. ``configs = "K,T"``. A typed list field (``configs``,
``denoiser_nc``) takes the text of its flag, e.g. ``configs = "1,1;10,10"``, checked here and
kept as written in the point's name.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from retune_suite.operators.errors import InvalidInputError

__all__ = [
    "EXECUTORS",
    "Experiment",
    "Point",
    "Spec",
    "expand",
    "experiments",
    "load_spec",
    "point_id",
]

EXECUTORS = ("local", "dask")
SPEC_KEYS = ("experiment", "out", "executor", "scheduler", "workers", "stale_after", "set", "grid")
RESERVED = {
    "out": "the sweep gives each point its own folder: set the root with out = ... at the top "
    "of the spec (or --out)",
    "resume": "the sweep always resumes: a point's run continues where it stopped",
}
DEFAULT_STALE_AFTER = 600.0


@dataclass(frozen=True)
class Experiment:
    """How the sweep drives one ``retune-suite`` command (all imports lazy)."""

    name: str
    config: type
    presets: dict[str, dict[str, Any]]
    validate: Callable[[Any], None]
    run: Callable[[Any], int]
    run_folder: Callable[[Any], Path]
    results: Callable[[Path], tuple[dict[str, Any], pd.DataFrame]]
    resumable: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


def _reproduce_results(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One column per measure and model (and (K, T) when the run has several) of
    ``summary.csv``, e.g. ``test_psnr[wavelet-BC]``; the table itself."""
    summary = pd.read_csv(folder / "summary.csv")
    several = len(summary[["K", "T"]].drop_duplicates()) > 1
    flat: dict[str, Any] = {}
    for r in summary.itertuples():
        label = f"{r.model} K={r.K} T={r.T}" if several else r.model
        for name in ("final_train_psnr", "test_psnr"):
            flat[f"{name}[{label}]"] = getattr(r, name, float("nan"))
    return flat, summary


def _errors_results(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Largest and smallest relative error per estimator of ``metrics.csv``; the table itself."""
    metrics = pd.read_csv(folder / "metrics.csv")
    flat: dict[str, Any] = {"rows": len(metrics)}
    measured = metrics[~metrics.estimator.isin(["constants", "deq_solve"])]
    if "rel_error" in measured:
        for estimator, g in measured.groupby("estimator", sort=False):
            flat[f"min_rel_error[{estimator}]"] = g.rel_error.min()
            flat[f"max_rel_error[{estimator}]"] = g.rel_error.max()
    return flat, metrics


def experiments() -> dict[str, Experiment]:
    """The commands a sweep can run, by name."""
    from .. import error_study, reproduce

    return {
        "reproduce": Experiment(
            name="reproduce",
            config=reproduce.ReproduceConfig,
            presets=reproduce.PRESETS,
            validate=reproduce.validate,
            run=reproduce.run_reproduce,
            run_folder=reproduce.run_folder,
            results=_reproduce_results,
            resumable=reproduce.RESUMABLE,
            defaults={"quiet": True},
            aliases=("K", "T"),
        ),
        "errors": Experiment(
            name="errors",
            config=error_study.ErrorStudyConfig,
            presets=error_study.PRESETS,
            validate=error_study.validate,
            run=error_study.run_errors,
            run_folder=lambda cfg: Path(cfg.out),
            results=_errors_results,
            resumable=error_study.RESUMABLE,
            defaults={"quiet": True},
        ),
    }


@dataclass
class Spec:
    """A validated sweep specification."""

    experiment: str
    out: Path
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    executor: str = "local"
    scheduler: str | None = None
    workers: int = 0
    stale_after: float = DEFAULT_STALE_AFTER
    source: str = "command line"

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "out": str(self.out),
            "executor": self.executor,
            "scheduler": self.scheduler,
            "workers": self.workers,
            "stale_after": self.stale_after,
            "set": self.fixed,
            "grid": self.grid,
            "source": self.source,
        }


@dataclass(frozen=True)
class Point:
    """One grid point: its grid values, its full configuration and its folder."""

    id: str
    params: dict[str, Any]
    config: Any
    folder: Path


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InvalidInputError(f"{path}: not valid TOML ({error}).") from None


def _parse_assignments(text: str, flag: str, many: bool) -> dict[str, Any]:
    """``"a=1 b=x,y"`` → {"a": "1", "b": ["x", "y"]} (lists only with ``many``)."""
    out: dict[str, Any] = {}
    for item in shlex.split(text):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(
                f"{flag} {text!r}: write key=value pairs separated by spaces, e.g. "
                + ("'seed=0,1 estimator=retune,jfb'." if many else "'figure=fig1 preset=quick'.")
            )
        out[key.replace("-", "_")] = value.split(",") if many else value
    return out


def load_spec(
    spec: str,
    *,
    out: str | None = None,
    executor: str | None = None,
    scheduler: str | None = None,
    workers: int = 0,
    stale_after: float = 0.0,
    set_text: str | None = None,
    grid_text: str | None = None,
) -> Spec:
    """Read ``spec`` (a TOML file, or an experiment name with ``--set``/``--grid``), apply the
    command-line overrides and check everything that can be checked before any run."""
    known = experiments()
    path = Path(spec)
    if path.is_file():
        data, source = _read_toml(path), str(path)
    elif spec in known:
        data, source = {"experiment": spec}, "command line"
    else:
        hint = " (no such file)" if path.suffix == ".toml" or "/" in spec else ""
        raise InvalidInputError(
            f"sweep spec {spec!r}{hint}: give a TOML file (see docs/sweeps.md and "
            f"examples/sweeps/) or an experiment name ({', '.join(known)}) with --set/--grid."
        )
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown key(s) {', '.join(unknown)}{_did_you_mean(unknown[0], SPEC_KEYS)}; "
            f"a spec has {', '.join(SPEC_KEYS)}."
        )
    name = data.get("experiment")
    if name not in known:
        raise InvalidInputError(
            f"{source}: experiment = {name!r} is not one the sweep runs; choose from "
            f"{', '.join(known)}."
        )
    experiment = known[name]
    for table in ("set", "grid"):
        if not isinstance(data.get(table, {}), dict):
            raise InvalidInputError(f"{source}: [{table}] must be a table of key = value.")
    fixed = dict(data.get("set", {}))
    grid = {k: v if isinstance(v, list) else [v] for k, v in data.get("grid", {}).items()}
    if set_text:
        fixed.update(_parse_assignments(set_text, "--set", many=False))
    if grid_text:
        grid.update(_parse_assignments(grid_text, "--grid", many=True))
    fixed = {k: _typed(experiment, k, v, f"[set] {k}") for k, v in fixed.items()}
    for key, values in grid.items():
        if not values:
            raise InvalidInputError(f"{source}: [grid] {key} has no values; give at least one.")
        grid[key] = [_typed(experiment, key, v, f"[grid] {key}") for v in values]
        if len({json.dumps(v) for v in grid[key]}) != len(grid[key]):
            raise InvalidInputError(f"{source}: [grid] {key} = {values}: a value is repeated.")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise InvalidInputError(
            f"{source}: {', '.join(both)} both in [set] and [grid]; keep each key in one of them."
        )
    _check_aliases(experiment, {**fixed, **grid}, source)
    if scheduler and not executor:  # --scheduler alone: dask, whatever the spec's executor
        executor = "dask"
    scheduler = scheduler or data.get("scheduler")
    executor = executor or data.get("executor") or ("dask" if scheduler else "local")
    if executor not in EXECUTORS:
        raise InvalidInputError(f"executor {executor!r}: choose from {', '.join(EXECUTORS)}.")
    if scheduler and executor != "dask":
        raise InvalidInputError(
            f"a dask scheduler ({scheduler}) with executor = {executor!r}: use executor dask, "
            "or leave the scheduler out to run on local processes."
        )
    root = out or data.get("out")
    if not root or not isinstance(root, str):
        raise InvalidInputError(
            f'{source}: no output root: set out = "runs/sweeps/NAME" in the spec or pass --out.'
        )
    workers = workers or data.get("workers", 0)
    stale_after = stale_after or data.get("stale_after", DEFAULT_STALE_AFTER)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise InvalidInputError(f"workers = {workers!r}: give an integer >= 0 (0: automatic).")
    if (
        isinstance(stale_after, bool)
        or not isinstance(stale_after, (int, float))
        or stale_after <= 0
    ):
        raise InvalidInputError(
            f"stale_after = {stale_after!r}: give a positive number of seconds."
        )
    return Spec(
        experiment=name,
        out=Path(root),
        fixed=fixed,
        grid=grid,
        executor=executor,
        scheduler=scheduler,
        workers=workers,
        stale_after=float(stale_after),
        source=source,
    )


def _did_you_mean(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _typed(experiment: Experiment, key: str, value: Any, where: str) -> Any:
    """``value`` as the type of the configuration field ``key`` (text from the command line
    is converted; TOML values must already have the right type)."""
    if key in RESERVED:
        raise InvalidInputError(f"{where}: {key!r} cannot be set in a sweep: {RESERVED[key]}.")
    if key in experiment.aliases:
        kind = "int"
    else:
        fields = {f.name: f for f in dataclasses.fields(experiment.config)}
        if key not in fields:
            names = [*fields, *experiment.aliases]
            raise InvalidInputError(
                f"{where}: unknown key {key!r} for {experiment.name}"
                f"{_did_you_mean(key, names)}; keys are the fields of "
                f"{experiment.config.__name__} (its command's flags): {', '.join(names)}."
            )
        parse = fields[key].metadata.get("parse")
        if parse is not None:  # a typed list field: its flag's text, checked, kept as written
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)  # e.g. ks = [1, 5] in [grid]: one K sweep of one value each
            if not isinstance(value, str):
                raise InvalidInputError(
                    f"{where} = {value!r}: {key} takes its flag's text, e.g. "
                    f"{key} = {_example(fields[key])!r}."
                )
            try:
                parse(value)
            except InvalidInputError as error:
                raise InvalidInputError(f"{where}: {error}") from None
            return value
        kind = str(fields[key].type).replace(" | None", "")
    try:
        return _convert(value, kind)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{where} = {value!r}: {key} takes {'an' if kind == 'int' else 'a'} {kind}."
        ) from None


def _example(f: dataclasses.Field) -> str:
    """A typed list field's default as its flag's text: (1, 5) → ``1,5``; ((1, 1),) → ``1,1``."""
    default = f.default if isinstance(f.default, tuple | list) else ()
    if default and isinstance(default[0], tuple | list):
        return ";".join(",".join(str(v) for v in group) for group in default)
    return ",".join(str(v) for v in default)


def _convert(value: Any, kind: str) -> Any:
    if isinstance(value, str) and kind != "str":  # from --set / --grid
        if kind == "bool":
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        return {"int": int, "float": float}[kind](value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(value)


def _check_aliases(experiment: Experiment, keys: dict[str, Any], source: str) -> None:
    given = [a for a in experiment.aliases if a in keys]
    if given and len(given) != len(experiment.aliases):
        missing = [a for a in experiment.aliases if a not in keys]
        raise InvalidInputError(
            f"{source}: {', '.join(given)} without {', '.join(missing)}: give both K and T "
            "(in [set] or [grid]); each point then trains the one (K, T)."
        )
    if given and "configs" in keys:
        raise InvalidInputError(
            f"{source}: K, T and configs together: use either K and T (one (K, T) per point) "
            "or configs (several per run)."
        )


def point_id(params: dict[str, Any]) -> str:
    """Folder name of a grid point: ``key=value`` joined by ``,`` (``default`` for an empty
    grid); characters outside ``[A-Za-z0-9._+-]`` in values become ``-``, and a short hash of
    the exact values is appended when that (or a length cap) loses information.

    >>> point_id({"seed": 0, "estimator": "jfb"})
    'seed=0,estimator=jfb'
    >>> point_id({"configs": "1,1;10,10"})
    'configs=1-1-10-10-9991c183'
    """
    if not params:
        return "default"
    parts, lossy = [], False
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        safe = re.sub(r"[^A-Za-z0-9._+-]", "-", text)
        lossy |= safe != text or safe in ("", ".", "..")
        parts.append(f"{key}={safe}")
    name = ",".join(parts)
    if lossy or len(name) > 120:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        name = f"{name[:110]}-{digest}"
    return name


def _resolve(experiment: Experiment, values: dict[str, Any], folder: Path) -> Any:
    """The point's configuration, built as the command line builds one; ``out`` = its folder."""
    values = dict(values)
    if "K" in values:
        values["configs"] = f"{values.pop('K')},{values.pop('T')}"
    preset = values.get("preset")
    if preset is not None and preset not in experiment.presets:
        raise InvalidInputError(
            f"preset = {preset!r}: choose from {', '.join(experiment.presets)}."
        )
    merged = {**experiment.defaults, **experiment.presets.get(preset, {}), **values}
    return dataclasses.replace(experiment.config(), **merged, out=str(folder), resume=True)


def _validate(experiment: Experiment, cfg: Any) -> None:
    """The command's own checks, except that the device must only exist on the workers."""
    import torch

    try:
        device = cfg.device if cfg.device == "auto" else str(torch.device(cfg.device))
    except RuntimeError:
        raise InvalidInputError(
            f"device = {cfg.device!r}: give cpu, cuda, cuda:N or auto."
        ) from None
    experiment.validate(dataclasses.replace(cfg, device="cpu" if device != "auto" else "auto"))


def expand(spec: Spec) -> list[Point]:
    """Every grid point in spec order (the last grid key varies fastest), validated."""
    experiment = experiments()[spec.experiment]
    keys = list(spec.grid)
    points: list[Point] = []
    seen: dict[str, str] = {}
    for combo in itertools.product(*spec.grid.values()):
        params = dict(zip(keys, combo, strict=True))
        pid = point_id(params)
        folder = spec.out / pid
        try:
            cfg = _resolve(experiment, {**spec.fixed, **params}, folder)
            _validate(experiment, cfg)
        except InvalidInputError as error:
            where = f"point {pid}" if params else spec.source
            raise InvalidInputError(f"{where}: {error}") from None
        key = json.dumps({**dataclasses.asdict(cfg), "out": None}, sort_keys=True, default=str)
        if key in seen:
            raise InvalidInputError(
                f"points {seen[key]} and {pid} are the same run (after the preset and aliases): "
                "drop one of the grid values."
            )
        seen[key] = pid
        points.append(Point(pid, params, cfg, folder))
    return points
