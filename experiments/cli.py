"""``retune-suite``: command line derived from dataclass configurations (single source of truth)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .common.resume import INTERRUPTED, exit_with


@dataclass
class VerifyConfig:
    """Check the paper's statements on the built-in exact problems (float64, CPU)."""

    K: int = field(default=2, metadata={"help": "steps per block Φ_K"})
    T: int = field(default=3, metadata={"help": "restarts"})
    P: int = field(default=3, metadata={"help": "Neumann truncation"})
    n: int = field(default=16, metadata={"help": "dimension of the random problems"})
    d: int = field(default=4, metadata={"help": "number of hyperparameters (groups)"})
    seed: int = field(default=0, metadata={"help": "seed of the random problems"})
    out: str | None = field(
        default=None, metadata={"help": "folder for verify.csv and config.json (none: print only)"}
    )


def _commands() -> dict[str, tuple[type, Callable[[Any], int], dict]]:
    from retune_suite.experiments.bench import BenchConfig, run_bench
    from retune_suite.experiments.error_study import PRESETS, ErrorStudyConfig, run_errors
    from retune_suite.experiments.error_study.verdicts import VerdictConfig, run_verdicts
    from retune_suite.experiments.reproduce import PRESETS as REPRODUCE_PRESETS
    from retune_suite.experiments.reproduce import (
        PRETRAIN_PRESETS,
        PretrainConfig,
        ReproduceConfig,
        reproduce_command,
        run_pretrain,
    )
    from retune_suite.experiments.reproduce.foe import FOE_PRESETS, FoeConfig, foe_command
    from retune_suite.experiments.sweep import SweepConfig, run_sweep

    return {
        "verify": (VerifyConfig, run_verify, {}),
        "errors": (ErrorStudyConfig, run_errors, PRESETS),
        "verdicts": (VerdictConfig, run_verdicts, {}),
        "reproduce": (ReproduceConfig, reproduce_command, REPRODUCE_PRESETS),
        "pretrain-denoiser": (PretrainConfig, run_pretrain, PRETRAIN_PRESETS),
        "reproduce-foe": (FoeConfig, foe_command, FOE_PRESETS),
        "bench": (BenchConfig, run_bench, {}),
        "sweep": (SweepConfig, run_sweep, {}),
    }


def _shown(value: Any) -> str:
    """A default as it is written on the command line: ``1,2,5``; ``1,1;10,10``."""
    if isinstance(value, tuple | list):
        return (";" if any(isinstance(v, tuple | list) for v in value) else ",").join(
            _shown(v) for v in value
        )
    return str(value)


def _help(f: dataclasses.Field) -> str:
    """The field's help with its default said once: the help's own ``(default: ...)`` where it
    has one, else the value (none for a flag, nor for None or empty: the help says what
    happens then)."""
    text = f.metadata.get("help", "")
    plain = f.default is None or f.default is dataclasses.MISSING or f.default in ((), "")
    if f.type in ("bool", bool) or plain or re.search(r"\bdefault\b", text):
        return text
    return f"{text} (default: {_shown(f.default)})".strip()


def _add_dataclass_arguments(parser: argparse.ArgumentParser, config: type) -> None:
    """One flag per field; only flags given on the command line override preset and defaults.

    A field with ``metadata={"positional": True}`` is a required positional argument instead.
    """
    for f in dataclasses.fields(config):
        flag = f"--{f.name.replace('_', '-')}"
        help_text = _help(f)
        if f.metadata.get("positional"):
            parser.add_argument(f.name, help=f.metadata.get("help"))
            continue
        if f.type in ("bool", bool):
            parser.add_argument(
                flag, dest=f.name, action="store_true", default=argparse.SUPPRESS, help=help_text
            )
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        parser.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retune-suite",
        description="Theory checks and benchmarks for learning hyperparameters at equilibrium.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (config, _, _) in _commands().items():
        _add_dataclass_arguments(sub.add_parser(name, help=config.__doc__), config)
    return parser


def _validate_verify(cfg: VerifyConfig) -> None:
    from retune_suite.operators.errors import InvalidInputError

    for name, low in (("K", 1), ("T", 1), ("P", 0), ("n", 1), ("d", 1)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"--{name} must be an integer >= {low}, got {value!r}.")


def run_verify(cfg: VerifyConfig) -> int:
    """Print one table per built-in problem; write them all to ``out/verify.csv``.

    With ``--out`` the folder follows the rule of every job: a folder that holds this check
    with the same settings is complete (exit 0, nothing recomputed), one with other settings is
    refused (nothing is overwritten).
    """
    from retune_suite.experiments.common.io import remove_partial_writes
    from retune_suite.experiments.common.lock import folder_lock
    from retune_suite.experiments.common.resume import interrupt_hint

    _validate_verify(cfg)
    if not cfg.out:
        with interrupt_hint("nothing was written; run the same command again."):
            return _verify(cfg, None)
    out = Path(cfg.out)
    with (
        folder_lock(out),
        interrupt_hint(f"nothing was written to {out}; run the same command again."),
    ):
        remove_partial_writes(out)
        if _verify_complete(cfg, out):
            return 0
        return _verify(cfg, out)


def _verify_complete(cfg: VerifyConfig, out: Path) -> bool:
    """Whether ``out`` holds this check already (True: said so); refuses other settings."""
    from retune_suite.experiments.common.resume import config_changes, read_saved_config
    from retune_suite.operators.errors import InvalidInputError

    path = out / "verify.csv"
    if not path.exists():
        return False
    saved = read_saved_config(out / "config.json", VerifyConfig)
    if saved is None:
        raise InvalidInputError(
            f"{out} holds a verify.csv without the config.json of its settings (an older "
            "version wrote it): choose another --out, or delete it (nothing is overwritten)."
        )
    changed = config_changes(saved, cfg, ("out",))
    if changed:
        raise InvalidInputError(
            f"{out} holds the results of verify with other settings ({'; '.join(changed)}): "
            "choose another --out (nothing is overwritten)."
        )
    print(
        f"complete: {path} holds this check with the same settings; nothing recomputed (run "
        "verify without --out to print the tables, or choose another --out)."
    )
    return True


def _verify(cfg: VerifyConfig, out: Path | None) -> int:
    import pandas as pd
    from retune_suite.experiments.builtin import cases
    from retune_suite.experiments.common.io import write_csv_atomic, write_json_atomic

    from retune_suite import bounds

    torch.set_default_dtype(torch.float64)
    frames = []
    start = time.perf_counter()
    for case in cases(cfg.n, cfg.d, cfg.seed):
        K, T = case.K or cfg.K, case.T or cfg.T
        L_theta = case.lipschitz_theta(K) if case.lipschitz_theta is not None else None
        report = bounds.verify(
            case.step,
            case.theta,
            case.x0,
            case.loss,
            K=K,
            T=T,
            P=cfg.P,
            delta=case.delta(K),
            lipschitz_theta=L_theta,
            hessian_bound=case.hessian_bound,
            lipschitz_x=0.0 if L_theta is not None else None,  # the scalar maps are affine in x
        )
        frame = report.to_frame()
        frame.insert(0, "problem", case.name)
        frame.insert(1, "K", K)
        frame.insert(2, "T", T)
        frames.append(frame)
        table = frame[frame.kind == "bound"][["name", "quantity", "observed", "bound", "holds"]]
        table = table.astype({"holds": object}).fillna({"holds": "no verdict"})
        c = report.constants
        print(f"\n== {case.name} (K={K}, T={T}): {case.description}")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4e}"))
        print(
            f"   δ_K={c['delta']:.4g} (measured ‖∂xΦ_K(x̂)‖={c['delta_measured']:.4g}), "
            f"‖∂θΦ_K(x̂)‖={c['dtheta_star']:.4g}, L_θ={c['L_theta']:.4g}, "
            f"‖x₀−x̂‖={c['dist0']:.4g}, ‖∂xL(x̂)‖={c['grad_loss']:.4g}"
        )
    result = pd.concat(frames, ignore_index=True)
    rows = result[result.kind == "bound"]
    # holds is True, False (numpy or Python bools) or None/NaN (no verdict)
    failed = rows[rows.holds.map(lambda v: v is not None and not pd.isna(v) and not v)]
    open_ = rows[rows.holds.map(lambda v: v is None or pd.isna(v))]
    print(
        f"\n{len(frames)} problems in {time.perf_counter() - start:.1f} s; "
        f"statements violated: {sorted(set(failed.name)) or 'none'} "
        "(see docs/findings.md)"
    )
    for _, row in open_.iterrows():
        print(f"   no verdict on {row['name']} ({row['problem']}): {row['reason']}")
    if out is not None:  # verify.csv last: it marks the check complete
        write_json_atomic(
            {**dataclasses.asdict(cfg), "torch": torch.__version__}, out / "config.json"
        )
        path = write_csv_atomic(result, out / "verify.csv")
        print(f"wrote {path} and {out / 'config.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from retune_suite.operators.errors import RetuneError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == [
        "reproduce",
        "foe",
    ]:  # the fields-of-experts job (retune_suite.experiments.reproduce.foe)
        argv = ["reproduce-foe", *argv[2:]]
    try:
        args = vars(build_parser().parse_args(argv))
        config_type, runner, presets = _commands()[args.pop("command")]
        preset = args.get("preset")
        if preset is not None and preset not in presets:
            print(
                f"retune-suite: unknown preset {preset!r}; choose from {', '.join(presets)}",
                file=sys.stderr,
            )
            return 2
        config = dataclasses.replace(config_type(), **{**presets.get(preset, {}), **args})
        return runner(config)
    except RetuneError as error:
        # one message, no traceback: a bad argument, a run that cannot go on, or a missing
        # optional dependency (MissingExtraError names the extra: pip install 'retune-suite[X]')
        print(f"retune-suite: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the job printed what is kept and how to go on
        return INTERRUPTED


if __name__ == "__main__":
    exit_with(main())
