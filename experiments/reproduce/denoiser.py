r"""Train the suite's own small DRUNet (deepinv architecture) for the FB-PnP step (53).

Gaussian denoising on given clean crops (data loading lives elsewhere): per sample
σ ~ U[σ_min, σ_max], x̃ = x + σε with ε ~ N(0, I), L2 loss ‖D_{Λ,σ}(x̃) − x‖² (mean), Adam.

The checkpoint (``out / CHECKPOINT_NAME``) is written atomically
(:func:`retune_suite.experiments.common.io.save_torch_atomic`) every ``checkpoint_every`` steps and
at the
end; it holds the state dict, the architecture (channels, nc, nb), the step
count, the optimizer state and the state of the one ``torch.Generator`` that draws every
batch, σ and ε, so ``resume=True`` continues with no lost or duplicated step. On CPU a resumed
run ends with the same weights as an uninterrupted one, bit for bit; on CUDA that also needs
deterministic kernels (``torch.use_deterministic_algorithms(True)``), which this module does
not switch on for you. :func:`retune_suite.operators.maps.pnp.load_drunet` loads the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.maps.pnp import load_drunet

from ..common.io import save_torch_atomic
from ..common.progress import progress as progress_bar
from ..common.resume import check_resume, first_line

__all__ = ["CHECKPOINT_NAME", "DenoiserConfig", "train_denoiser"]

CHECKPOINT_NAME = "drunet.pt"
FORMAT = "retune-suite/drunet-checkpoint-v1"
# Fields that may change between a run and its resumption (they do not change the iterates).
RESUMABLE = ("steps", "checkpoint_every", "log_every")


@dataclass
class DenoiserConfig:
    """Training settings; ``steps`` is the total count, resumed runs included."""

    steps: int = 2000
    batch: int = 16
    lr: float = 1e-4
    sigma_min: float = 0.0
    sigma_max: float = 0.2
    nc: tuple[int, int, int, int] = (32, 64, 128, 256)
    nb: int = 2
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50

    def __post_init__(self) -> None:
        self.nc = tuple(int(c) for c in self.nc)  # type: ignore[assignment]
        for name in ("steps", "batch", "nb", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}.")
        if len(self.nc) != 4 or min(self.nc) < 1:
            raise InvalidInputError(f"nc must be 4 positive channel counts, got {self.nc}.")
        if not self.lr > 0:
            raise InvalidInputError(f"lr must be positive, got {self.lr}.")
        if not 0 <= self.sigma_min <= self.sigma_max:
            raise InvalidInputError(
                f"need 0 <= sigma_min <= sigma_max, got [{self.sigma_min}, {self.sigma_max}]."
            )


def _check_clean(clean: torch.Tensor) -> None:
    if not isinstance(clean, torch.Tensor) or clean.ndim != 4 or not clean.is_floating_point():
        raise InvalidInputError("clean must be a floating tensor of crops, shape (N, C, h, w).")
    if clean.shape[0] < 1:
        raise InvalidInputError("clean holds no crops.")
    if not torch.isfinite(clean).all():
        raise InvalidInputError("clean contains NaN or inf: check the data loading.")


def _run_settings(config: dict[str, Any], shape: Any, dtype: Any) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint: the configuration and the data's
    shape and dtype (compared by :func:`retune_suite.experiments.common.resume.check_resume`)."""
    return {**config, "data shape": tuple(shape), "dtype": str(dtype)}


def _check_resumable(ckpt: dict[str, Any], config: DenoiserConfig, clean: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InvalidInputError(
            f"{path} was not written by train_denoiser: remove it or pick another `out`."
        )
    check_resume(
        _run_settings(ckpt["config"], ckpt["data_shape"], ckpt["dtype"]),
        _run_settings(asdict(config), clean.shape, clean.dtype),
        where=f"the DRUNet checkpoint {path}",
        resumable=RESUMABLE,
        fix="train on the same data with the same settings, or use another `out` (or delete "
        "the checkpoint to start afresh)",
    )


@dataclass
class _Data:
    """The shape and dtype of the training crops, for :func:`_check_resumable`."""

    shape: tuple[int, ...]
    dtype: Any


def _load(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``; a damaged file is one error that names it and the fix."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InvalidInputError(
            f"cannot read the DRUNet checkpoint {path} ({first_line(error)}): the file is "
            "damaged; delete it and run again with --resume to train from the start, or choose "
            "another `out` / --name."
        ) from None
    return ckpt


def finished_steps(path: str | Path, config: DenoiserConfig, shape: Any, dtype: Any) -> int:
    """The steps done by the checkpoint at ``path``, once checked to be a run of ``config`` on
    data of ``shape`` and ``dtype`` (the checks of a resumption)."""
    path = Path(path)
    ckpt = _load(path)
    _check_resumable(ckpt, config, _Data(tuple(shape), dtype), path)
    return int(ckpt["step"])


def train_denoiser(
    clean: torch.Tensor,
    config: DenoiserConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    r"""Train a DRUNet denoiser on ``clean`` crops; return the checkpoint path.

    Parameters
    ----------
    clean
        Clean crops (N, C, h, w); they stay where they are, each batch is moved to
        ``device``. Their dtype is the network's. h, w: any size (DRUNet pads in training
        mode), multiples of 8 and at least 32 avoid the padding.
    config
        :class:`DenoiserConfig`; ``config.steps`` counts every step, resumed ones included.
    out
        Folder of the checkpoint ``out / CHECKPOINT_NAME`` (created if needed).
    resume
        Continue from the checkpoint in ``out`` (start afresh if there is none). Without it an
        existing checkpoint is an error, never silently overwritten.
    progress
        Show a progress bar (:func:`retune_suite.experiments.common.progress.progress`); should that
        give
        none, print the mean loss every ``config.log_every`` steps instead.
    on_step
        Called as ``on_step(step, loss)`` after each step (and after its checkpoint, if any).

    Each step draws, from one ``torch.Generator`` seeded by ``config.seed``, a batch of indices
    (with replacement), σ_i ~ U[σ_min, σ_max] and ε ~ N(0, I), and minimises the mean of
    ‖D_{Λ,σ_i}(x_i + σ_i ε_i) − x_i‖² by one Adam step.
    """
    _check_clean(clean)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT_NAME
    dtype, (N, C) = clean.dtype, clean.shape[:2]

    ckpt = None
    if path.exists():  # checked before the network is built
        if not resume:
            raise FileExistsError(
                f"{path} exists: pass resume=True to continue it, or delete it / choose another "
                "`out` to start afresh."
            )
        ckpt = _load(path)
        _check_resumable(ckpt, config, clean, path)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # deepinv initialises from the global RNG
        torch.manual_seed(config.seed)
        net = load_drunet(channels=C, nc=config.nc, nb=config.nb, device=device, dtype=dtype)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    start = 0
    if ckpt is not None:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["rng_state"])
        start = int(ckpt["step"])

    def checkpoint(step: int) -> None:
        save_torch_atomic(
            {
                "format": FORMAT,
                "state_dict": net.state_dict(),
                "architecture": {"channels": int(C), "nc": tuple(config.nc), "nb": config.nb},
                "step": step,
                "optimizer": optimizer.state_dict(),
                "rng_state": generator.get_state(),
                "config": asdict(config),
                "data_shape": tuple(clean.shape),
                "dtype": str(dtype),
            },
            path,
        )

    bar = progress_bar(config.steps, initial=start, desc="DRUNet", enabled=progress)
    running = torch.zeros((), dtype=dtype, device=device)
    count = 0
    try:
        for step in range(start + 1, config.steps + 1):
            idx = torch.randint(N, (config.batch,), generator=generator)
            sigma = torch.rand(config.batch, generator=generator, dtype=dtype)
            sigma = config.sigma_min + (config.sigma_max - config.sigma_min) * sigma
            eps = torch.randn((config.batch, *clean.shape[1:]), generator=generator, dtype=dtype)
            x = clean[idx.to(clean.device)].to(device)
            sigma, eps = sigma.to(device), eps.to(device)
            noisy = x + sigma.view(-1, 1, 1, 1) * eps
            loss = torch.mean((net(noisy, sigma) - x) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running, count = running + loss.detach(), count + 1

            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint(step)
            if step % config.log_every == 0 or step == config.steps:
                mean = (running / count).item()
                running, count = torch.zeros_like(running), 0
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.3e}")
                elif progress:
                    print(f"DRUNet step {step}/{config.steps}  loss {mean:.4e}", flush=True)
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step, loss.item())
    finally:
        if bar is not None:
            bar.close()
    return path
