"""experiments.common: the one writer, resume check, metrics, device resolver and parser."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest
import torch
from retune_suite.experiments.common import (
    check_resume,
    config_changes,
    moving_average,
    parse_list,
    psnr,
    resolve_device,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from retune_suite.experiments.common.io import write_atomic
from retune_suite.operators import InvalidInputError


def test_written_files_get_umask_permissions(tmp_path):
    """mkstemp's private 0600 used to survive the rename: files must be what open() gives."""
    previous = os.umask(0o022)
    try:
        path = write_text_atomic("x", tmp_path / "a.txt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_writer_fsyncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_json_atomic({"a": 1}, tmp_path / "a.json")
    assert synced == [False, True]  # the file's data, then the folder entry of the rename


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic("old", tmp_path / "a.txt")

    def boom(handle):
        handle.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomic(path, boom)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_csv_roundtrip(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    pd.testing.assert_frame_equal(pd.read_csv(write_csv_atomic(frame, tmp_path / "f.csv")), frame)


def test_check_resume_names_every_change():
    saved = {"K": 10, "T": 5, "Ks": [1, 2], "out": "a"}
    assert config_changes(saved, {"K": 10, "T": 5, "Ks": (1, 2), "out": "b"}, ["out"]) == []
    with pytest.raises(InvalidInputError, match=r"T: 5 -> 6.*Only out may change"):
        check_resume(
            saved, {"K": 10, "T": 6, "Ks": (1, 2), "out": "a"}, where="x", resumable=["out"]
        )
    check_resume(None, {"K": 1}, where="x")  # nothing saved: nothing to compare


def test_psnr_and_moving_average():
    x = torch.full((2, 3, 4, 4), 0.1, dtype=torch.float64)
    assert psnr(x, torch.zeros_like(x)).tolist() == pytest.approx([20.0, 20.0])
    over = torch.full((1, 4), 1.5, dtype=torch.float64)
    assert (
        psnr(over, torch.ones(1, 4, dtype=torch.float64)).item()
        < psnr(over, torch.ones(1, 4, dtype=torch.float64), clip=True).item()
    )
    series = pd.Series([1.0, 3.0, 5.0])
    assert moving_average(series, 2).tolist() == [1.0, 2.0, 4.0]
    assert moving_average(series, 2, full=True).isna().tolist() == [True, False, False]


def test_parse_list():
    assert parse_list("1,5, 10") == (1, 5, 10)
    assert parse_list([1, 2]) == (1, 2)
    with pytest.raises(InvalidInputError, match="not a valid int"):
        parse_list("1,x", name="Ks")
    with pytest.raises(InvalidInputError, match="not a valid int"):
        parse_list([1.5])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InvalidInputError, match="use auto, cpu"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA device"):
            resolve_device("cuda")
