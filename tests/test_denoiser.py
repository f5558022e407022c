"""Training the suite's DRUNet: the loss decreases, checkpoints are atomic and loadable, and a
resumed run ends bit for bit where an uninterrupted one does."""

from __future__ import annotations

import os

import pytest
import torch
from retune_suite.experiments.common.io import save_torch_atomic
from retune_suite.experiments.reproduce import denoiser as dn
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.maps import pnp

NC, NB = (8, 16, 32, 64), 1


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks gain nothing from intra-op threads; on a loaded machine they spin."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def crops(n: int = 8, size: int = 16) -> torch.Tensor:
    """Smooth random colour images in [0, 1] (bilinear upsampling of a coarse grid)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand((n, 3, 4, 4), generator=g, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def config(**changes) -> dn.DenoiserConfig:
    base = {
        "steps": 6,
        "batch": 4,
        "lr": 1e-3,
        "sigma_min": 0.05,
        "sigma_max": 0.2,
        "nc": NC,
        "nb": NB,
        "seed": 1,
        "checkpoint_every": 2,
    }
    return dn.DenoiserConfig(**{**base, **changes})


class InterruptedRunError(Exception):
    pass


def test_loss_decreases(tmp_path):
    losses: list[float] = []
    dn.train_denoiser(
        crops(),
        config(steps=40, checkpoint_every=40),
        tmp_path,
        progress=False,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert len(losses) == 40
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_checkpoint_contents_load_with_load_drunet(tmp_path):
    path = dn.train_denoiser(crops(), config(steps=3), tmp_path, progress=False)
    assert path == tmp_path / dn.CHECKPOINT_NAME
    assert [p.name for p in tmp_path.iterdir()] == [dn.CHECKPOINT_NAME]  # no temp file left
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 3
    assert ckpt["architecture"] == {"channels": 3, "nc": NC, "nb": NB}
    assert {"optimizer", "rng_state", "state_dict", "config"} <= set(ckpt)
    net = pnp.load_drunet(path, dtype=torch.float64)  # architecture read from the checkpoint
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(net.state_dict()[key], value)


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    path = dn.train_denoiser(crops(), config(steps=2), tmp_path, progress=False)
    before = path.read_bytes()
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst))
    )
    save_torch_atomic({"a": torch.ones(2)}, tmp_path / "other.pt")
    ((src, dst),) = replaced
    assert os.path.dirname(src) == str(tmp_path) and dst == tmp_path / "other.pt"

    def crash(obj, handle):
        handle.write(b"half a checkpoint")
        raise InterruptedRunError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(InterruptedRunError):
        save_torch_atomic({"a": torch.ones(2)}, path)
    assert path.read_bytes() == before  # the old checkpoint survives a crash mid-write
    assert sorted(p.name for p in tmp_path.iterdir()) == [dn.CHECKPOINT_NAME, "other.pt"]


def test_checkpoint_gets_the_permissions_of_a_plain_file(tmp_path):
    """The checkpoint used to keep mkstemp's private 0o600; it now gets what open(path, "w")
    gives, 0o666 less the umask (retune_suite.experiments.common.io)."""
    previous = os.umask(0o022)
    try:
        path = dn.train_denoiser(crops(), config(steps=2), tmp_path, progress=False)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_resume_after_interruption_is_exact(tmp_path):
    clean, cfg = crops(), config(steps=7, checkpoint_every=3)
    reference = torch.load(
        dn.train_denoiser(clean, cfg, tmp_path / "a", progress=False), weights_only=True
    )

    def interrupt(step: int, loss: float) -> None:
        if step == 5:  # after the checkpoint at step 3, two steps are lost and redone
            raise InterruptedRunError

    with pytest.raises(InterruptedRunError):
        dn.train_denoiser(clean, cfg, tmp_path / "b", progress=False, on_step=interrupt)
    assert torch.load(tmp_path / "b" / dn.CHECKPOINT_NAME, weights_only=True)["step"] == 3
    seen: list[int] = []
    path = dn.train_denoiser(
        clean,
        cfg,
        tmp_path / "b",
        resume=True,
        progress=False,
        on_step=lambda step, loss: seen.append(step),
    )
    assert seen == [4, 5, 6, 7]  # no lost or duplicated step
    resumed = torch.load(path, weights_only=True)
    assert resumed["step"] == reference["step"] == 7
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert torch.equal(resumed["rng_state"], reference["rng_state"])


def test_resume_to_more_steps_matches_one_longer_run(tmp_path):
    clean = crops()
    long = dn.train_denoiser(clean, config(steps=5), tmp_path / "a", progress=False)
    dn.train_denoiser(clean, config(steps=2), tmp_path / "b", progress=False)
    short = dn.train_denoiser(clean, config(steps=5), tmp_path / "b", resume=True, progress=True)
    a, b = torch.load(long, weights_only=True), torch.load(short, weights_only=True)
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())
    # resuming a finished run does nothing
    assert dn.train_denoiser(clean, config(steps=5), tmp_path / "b", resume=True) == short


def test_refuses_to_overwrite_or_resume_a_different_run(tmp_path):
    clean = crops()
    dn.train_denoiser(clean, config(steps=2), tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        dn.train_denoiser(clean, config(steps=4), tmp_path, progress=False)
    with pytest.raises(InvalidInputError, match="lr"):
        dn.train_denoiser(clean, config(steps=4, lr=1e-2), tmp_path, resume=True, progress=False)
    with pytest.raises(InvalidInputError, match="data shape"):
        dn.train_denoiser(clean[:4], config(steps=4), tmp_path, resume=True, progress=False)
    with pytest.raises(InvalidInputError, match=r"dtype: 'torch\.float64' -> 'torch\.float32'"):
        dn.train_denoiser(clean.float(), config(steps=4), tmp_path, resume=True, progress=False)


def test_plain_progress_without_tqdm(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dn, "progress_bar", lambda *args, **kwargs: None)
    dn.train_denoiser(crops(), config(steps=2, log_every=1), tmp_path)
    assert "step 2/2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "changes", [{"steps": 0}, {"nc": (8, 16, 32)}, {"lr": 0.0}, {"sigma_min": 0.3}]
)
def test_config_validation(changes):
    with pytest.raises(InvalidInputError):
        config(**changes)
