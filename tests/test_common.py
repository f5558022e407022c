"""experiments.common: the one writer, resume check, metrics, device resolver and parser."""

from __future__ import annotations

import json
import os
import stat
import time

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


# ---------------------------------------------------------------- one writer per folder


def test_folder_lock_is_reentrant_in_its_thread_and_released_on_exit(tmp_path):
    from retune_suite.experiments.common.lock import LOCK, folder_lock

    with folder_lock(tmp_path) as outer:
        with folder_lock(tmp_path) as inner:  # a sweep point running its job in the folder
            assert inner == outer
        assert (tmp_path / LOCK).exists()  # the inner block does not release the outer lock
    assert not (tmp_path / LOCK).exists()
    with pytest.raises(KeyboardInterrupt), folder_lock(tmp_path):
        raise KeyboardInterrupt
    assert not (tmp_path / LOCK).exists()


@pytest.mark.parametrize("content", [b"", b"\x00garbage{", b'{"host": 3}'])
def test_an_empty_or_garbage_lock_is_taken_over_once_a_few_seconds_old(tmp_path, capsys, content):
    """An empty lock file (a process killed between creating and writing it) used to read as
    'running on ? pid ?' and block its folder for stale_after (600 s)."""
    from retune_suite.experiments.common.lock import (
        LOCK,
        UNREADABLE_AFTER,
        acquire,
        folder_lock,
        stale_reason,
    )

    path = tmp_path / LOCK
    path.write_bytes(content)
    assert stale_reason(path, 600) is None  # young: its writer may be at work
    assert acquire(path, 600) is None
    old = time.time() - UNREADABLE_AFTER - 1
    os.utime(path, (old, old))
    assert "empty or unreadable" in stale_reason(path, 600)
    with folder_lock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "taking over the lock" in capsys.readouterr().err


# ---------------------------------------------------------------- complete records


def test_csv_records_drop_a_torn_last_record_and_refuse_random_bytes(tmp_path):
    from retune_suite.experiments.common.resume import read_csv_records

    frame = pd.DataFrame({"K": [1, 2], "reason": ['a "quoted"\nline end', "estimated"]})
    path = write_csv_atomic(frame, tmp_path / "m.csv")
    data = path.read_bytes()
    last = data.rindex(b"2,estimated")
    for cut in range(last, len(data)):  # every byte offset of the last record
        path.write_bytes(data[:cut])
        got, torn = read_csv_records(path, required=("K",))
        pd.testing.assert_frame_equal(got, frame.iloc[:1])
        assert torn == (cut > last)
    for cut in range(len("K,reason\n"), last):  # inside a quoted field with a line end
        path.write_bytes(data[:cut])
        got, _ = read_csv_records(path)
        assert got.empty and list(got.columns) == ["K", "reason"]
    path.write_bytes(data[:4])  # no complete header: no record
    assert read_csv_records(path, required=("K",))[0].empty
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InvalidInputError, match=r"m\.csv is damaged.*delete it.*--resume"):
        read_csv_records(path)
    path.write_text("K,reason\n1,a,b\n2,c\n")
    with pytest.raises(InvalidInputError, match="record 2 has 3 fields"):
        read_csv_records(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match="no column K"):
        read_csv_records(path, required=("K",))


def test_partial_writes_are_removed_but_not_in_a_locked_subfolder(tmp_path):
    from retune_suite.experiments.common.io import remove_partial_writes
    from retune_suite.experiments.common.lock import LOCK

    killed = [tmp_path / ".metrics.csv.k1ll3d00.tmp", tmp_path / "ck" / ".a.pt.zz9y8x7w.tmp"]
    other = tmp_path / "point" / ".metrics.csv.0therrun.tmp"  # its folder has its own lock
    mine = tmp_path / "notes.tmp"
    for path in (*killed, other, mine):
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    (tmp_path / "point" / LOCK).write_text("{}")
    assert sorted(remove_partial_writes(tmp_path)) == sorted(killed)
    assert other.exists() and mine.exists()


def test_append_never_follows_a_planted_link(tmp_path):
    from retune_suite.experiments.common.io import open_append

    target = tmp_path / "precious.txt"
    target.write_text("keep\n")
    (tmp_path / "run.log").symlink_to(target)
    with pytest.raises(InvalidInputError, match="symbolic link"):
        open_append(tmp_path / "run.log")
    assert target.read_text() == "keep\n"
    with open_append(tmp_path / "other.log") as log:
        log.write("line\n")
    assert (tmp_path / "other.log").read_text() == "line\n"


def test_a_config_json_that_is_not_json_is_one_clear_error(tmp_path):
    from dataclasses import dataclass

    from retune_suite.experiments.common.resume import config_hash, read_saved_config

    @dataclass
    class Config:
        K: int = 1
        out: str = "runs"

    path = tmp_path / "config.json"
    assert read_saved_config(path, Config) is None
    path.write_text('{"K": 3, "torch": "2.5"}')
    assert read_saved_config(path, Config) == {"K": 3}
    assert read_saved_config(path, Config, defaults=True) == {"K": 3, "out": "runs"}
    path.write_text('{"K": 3,')
    with pytest.raises(InvalidInputError, match=r"config\.json is damaged.*delete it.*--resume"):
        read_saved_config(path, Config)
    # the identity of a configuration: the settings that differ from the defaults
    assert config_hash(Config(K=1, out="a"), ["out"]) == config_hash(Config(), ["out"])
    assert config_hash(Config(K=2)) != config_hash(Config())
