"""The two modes of the GPU script: ``gpu`` (one H100/H200, the figures of the speed issue) and
``cpu-tiny`` (the same parts at toy sizes on the CPU, run by the default tests so the script
cannot rot). Every size, count and time share of a run is here."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MODES", "Mode"]


@dataclass(frozen=True)
class Mode:
    """Sizes and CLI arguments of one mode; ``shares`` are the parts' planned fractions of the
    budget (the training gets what the others leave)."""

    name: str
    device: str
    size: int
    batch: int
    big_batch: int  # the bandwidth part also runs a batch too large for the caches
    K: int
    Ts: tuple[int, ...]
    repeats: int
    tasks: tuple[str, ...]
    bench_args: tuple[str, ...]
    errors_args: tuple[str, ...]
    reproduce_args: tuple[str, ...]
    shares: dict[str, float] = field(default_factory=dict)


_SHARES = {
    "environment": 0.02,
    "cuda_tests": 0.15,
    "bandwidth": 0.08,
    "estimators": 0.12,
    "peers": 0.2,
    "errors": 0.2,
}

MODES = {
    "gpu": Mode(
        name="gpu",
        device="cuda",
        size=256,
        batch=4,
        big_batch=128,
        K=10,
        Ts=(2, 10, 40),
        repeats=10,
        tasks=("denoise", "inpaint"),
        bench_args=("--peers", "--repeats", "5", "--warmup", "2"),
        errors_args=("--task", "denoise", "--prior", "wavelet-BC", "--size", "256"),
        reproduce_args=(
            "fig2",
            "--preset",
            "paper",
            "--models",
            "pnp-sigma-tau",
            "--denoiser-steps",
            "500",
            "--checkpoint-every",
            "5",
        ),
        shares=_SHARES,
    ),
    "cpu-tiny": Mode(
        name="cpu-tiny",
        device="cpu",
        size=32,
        batch=1,
        big_batch=2,
        K=2,
        Ts=(2,),
        repeats=1,
        tasks=("denoise",),
        bench_args=(
            "--peers",
            "--size",
            "32",
            "--batch",
            "1",
            "--K",
            "2",
            "--T",
            "2",
            "--steps",
            "4",
            "--backward-iters",
            "3",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
        ),
        errors_args=(
            "--task",
            "denoise",
            "--prior",
            "wavelet-BC",
            "--size",
            "32",
            "--batch",
            "1",
            "--dtype",
            "float64",
            "--ks",
            "1,2",
            "--t-ref",
            "2",
            "--ts",
            "2",
            "--ks-for-t",
            "2",
            "--ps",
            "0",
            "--solve-tol",
            "1e-10",
            "--fixed-point-rtol",
            "1e-11",
            "--threads",
            "1",
            "--timing-repeats",
            "1",
        ),
        reproduce_args=(
            "fig2",
            "--preset",
            "quick",
            "--models",
            "pnp-sigma-tau",
            "--configs",
            "1,1",
            "--train-pairs",
            "4",
            "--batch",
            "2",
            "--epochs",
            "1",
            "--test-images",
            "1",
            "--test-crops",
            "1",
            "--denoiser-steps",
            "2",
            "--checkpoint-every",
            "1",
        ),
        shares=_SHARES,
    ),
}
