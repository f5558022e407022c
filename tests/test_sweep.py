"""``retune-suite sweep``: spec validation, grid expansion, the lock, the local executor, and a
dask LocalCluster on the loopback (2 workers) with a worker killed mid-run and a sweep process
killed and restarted: every point done once, no step lost or repeated. About 40 s in all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from retune_suite.experiments import reproduce as rp
from retune_suite.experiments.cli import main
from retune_suite.experiments.sweep import run as sweep
from retune_suite.experiments.sweep.point import DONE, FAILURE, LOCK, acquire, release, stale_reason
from retune_suite.experiments.sweep.spec import expand, load_spec
from retune_suite.operators.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
# fig1 on one batch of 4 pairs of 32×32, float64 on one CPU thread: about 0.05 s a step at
# K = T = 10, a checkpoint (and metrics.csv) after every step
TINY = dict(
    figure="fig1",
    size=32,
    train_pairs=4,
    batch=4,
    test_images=1,
    test_crops=1,
    dtype="float64",
    device="cpu",
    threads=1,
    checkpoint_every=1,
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def write_spec(path: Path, fixed: dict, grid: dict, **top) -> Path:
    """A spec file: top-level keys, then [set] and [grid]."""
    lines = [f"{k} = {_toml(v)}" for k, v in {"experiment": "reproduce", **top}.items()]
    lines += ["[set]", *(f"{k} = {_toml(v)}" for k, v in fixed.items())]
    lines += ["[grid]", *(f"{k} = {_toml(v)}" for k, v in grid.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def check_complete(root: Path, points: int, steps: int) -> pd.DataFrame:
    """Every point done once, each (model, K, T) with steps 1..steps exactly once, no lock,
    failure or temporary file left; returns the summary."""
    summary = pd.read_csv(root / "sweep-summary.csv")
    assert len(summary) == points and summary.point.is_unique
    assert (summary.status == "done").all(), summary[["point", "status", "detail"]]
    for folder in summary.folder:
        metrics = pd.read_csv(Path(folder) / "metrics.csv")
        for key, g in metrics.groupby(["model", "K", "T"]):
            assert sorted(g.step) == list(range(1, steps + 1)), (folder, key)
    assert not list(root.rglob(LOCK)) and not list(root.rglob(".*.tmp"))
    assert not list(root.rglob(FAILURE)) and not list(root.rglob(f"{LOCK}.takeover-*"))
    return summary


# ---------------------------------------------------------------- spec and grid


def test_example_spec_expands_to_one_quick_run_per_seed():
    spec = load_spec(str(ROOT / "examples" / "sweeps" / "fig1-quick.toml"))
    points = expand(spec)
    assert [p.id for p in points] == ["seed=0", "seed=1"]
    assert spec.executor == "dask" and spec.workers == 2
    for point, seed in zip(points, (0, 1), strict=True):
        cfg = point.config
        assert (cfg.figure, cfg.preset, cfg.seed, cfg.size, cfg.epochs) == (
            "fig1",
            "quick",
            seed,
            32,
            3,
        )
        assert cfg.out == str(spec.out / point.id) and cfg.resume
        assert rp.run_folder(cfg) == spec.out / point.id / "fig1" / "quick"


def test_paper_example_spec_is_one_configuration_per_point():
    spec = load_spec(str(ROOT / "examples" / "sweeps" / "fig1-paper.toml"))
    points = expand(spec)
    assert len(points) == 12 and len({p.id for p in points}) == 12
    assert {p.config.configs for p in points} == {((1, 1),), ((1, 10),), ((10, 1),), ((10, 10),)}
    for point in points:
        cfg = point.config
        assert (cfg.preset, cfg.size, cfg.train_pairs, cfg.epochs, cfg.device) == (
            "paper",
            256,
            600,
            4,
            "cuda",
        )


def test_grid_order_precedence_and_aliases(tmp_path):
    path = write_spec(
        tmp_path / "s.toml",
        {"preset": "quick", "size": 48, "figure": "fig1"},
        {"seed": [0, 1], "K": [1, 10], "T": 10},
        out=str(tmp_path / "out"),
    )
    points = expand(load_spec(str(path)))
    assert [p.id for p in points] == [
        "seed=0,K=1,T=10",
        "seed=0,K=10,T=10",
        "seed=1,K=1,T=10",
        "seed=1,K=10,T=10",
    ]
    cfg = points[1].config
    assert cfg.configs == ((10, 10),) and cfg.seed == 0
    assert cfg.size == 48 and cfg.train_pairs == 100  # [set] over the preset over the defaults
    assert cfg.quiet  # the sweep's default: no progress bars in the workers
    # the same from the command line, with text converted to the fields' types
    cli = load_spec(
        "reproduce",
        out=str(tmp_path / "out"),
        set_text="preset=quick size=48 figure=fig1",
        grid_text="seed=0,1 K=1,10 T=10",
    )
    assert [p.config for p in expand(cli)] == [p.config for p in points]


@pytest.mark.parametrize(
    ("top", "fixed", "grid", "message"),
    [
        ({"experiment": "train"}, {}, {}, "is not one the sweep runs"),
        ({"grids": 1}, {}, {}, "did you mean 'grid'"),
        ({}, {}, {"seeds": [0, 1]}, "unknown key 'seeds' for reproduce \\(did you mean 'seed'"),
        ({}, {}, {"seed": ["zero"]}, "seed takes an int"),
        ({}, {}, {"seed": [0, 0]}, "a value is repeated"),
        ({}, {}, {"seed": []}, "has no values"),
        ({}, {"out": "x"}, {}, "'out' cannot be set in a sweep"),
        ({}, {"seed": 1}, {"seed": [0]}, "both in \\[set\\] and \\[grid\\]"),
        ({}, {}, {"K": [1, 10]}, "give both K and T"),
        ({}, {"configs": "1,1"}, {"K": [1], "T": [1]}, "K, T and configs together"),
        ({}, {}, {"estimator": ["retune", "bogus"]}, "point estimator=bogus: unknown estimator"),
        ({}, {"preset": "huge"}, {}, "preset = 'huge'"),
        ({}, {"device": "tpu"}, {}, "give cpu, cuda"),
        ({"executor": "slurm"}, {}, {}, "choose from local, dask"),
        ({"executor": "local", "scheduler": "tcp://h:1"}, {}, {}, "use executor dask"),
        ({"workers": -1}, {}, {}, "workers = -1"),
    ],
)
def test_spec_is_validated_before_any_work(tmp_path, top, fixed, grid, message):
    top = {"out": str(tmp_path / "out"), **top}
    path = write_spec(tmp_path / "s.toml", fixed, grid, **top)
    with pytest.raises(InvalidInputError, match=message):
        expand(load_spec(str(path)))
    assert not (tmp_path / "out").exists()


def test_list_fields_take_their_flag_text_kept_in_the_point_name(tmp_path):
    path = write_spec(
        tmp_path / "s.toml",
        {"figure": "fig2", "denoiser_nc": "8,16,32,64"},
        {"configs": ["1,1;10,10", "2,2"]},
        out=str(tmp_path / "out"),
    )
    points = expand(load_spec(str(path)))
    assert [p.id for p in points] == ["configs=1-1-10-10-9991c183", "configs=2-2-20587f14"]
    assert [p.config.configs for p in points] == [((1, 1), (10, 10)), ((2, 2),)]
    assert points[0].config.denoiser_nc == (8, 16, 32, 64)
    bad = write_spec(tmp_path / "b.toml", {"configs": [[1, 1]]}, {}, out=str(tmp_path / "out"))
    with pytest.raises(InvalidInputError, match=r"takes its flag's text, e\.g\. configs = '1,1;1"):
        load_spec(str(bad))
    bad = write_spec(tmp_path / "c.toml", {}, {"configs": ["1,1;0,1"]}, out=str(tmp_path / "out"))
    with pytest.raises(InvalidInputError, match=r"\[grid\] configs: --configs '1,1;0,1'"):
        load_spec(str(bad))


def test_every_flag_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(sweep.SweepConfig):
        assert f.metadata.get("help"), f.name
        flag = f.name if f.metadata.get("positional") else f"--{f.name.replace('_', '-')}"
        assert flag in text and " ".join(f.metadata["help"].split()) in text, f.name


def test_spec_file_errors_name_the_fix(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.toml")]) == 2
    assert "(no such file)" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("experiment = reproduce\n")
    with pytest.raises(InvalidInputError, match="not valid TOML"):
        load_spec(str(bad))
    with pytest.raises(InvalidInputError, match="no output root"):
        load_spec("reproduce")
    with pytest.raises(InvalidInputError, match="key=value"):
        load_spec("reproduce", out="x", grid_text="seed")


def test_changed_settings_are_refused_before_any_work(tmp_path, capsys):
    args = ["sweep", "reproduce", "--out", str(tmp_path / "out"), "--grid", "seed=0"]
    (point,) = expand(load_spec("reproduce", out=str(tmp_path / "out"), grid_text="seed=0"))
    point.folder.mkdir(parents=True)
    saved = {**dataclasses.asdict(point.config), "lr": 0.1, "threads": 3}  # threads may change
    (point.folder / "sweep-point.json").write_text(json.dumps({"config": saved}))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        "point seed=0" in err and "the settings differ from the saved ones (lr: 0.1 -> 0.05)" in err
    )
    assert not (tmp_path / "out" / "sweep.json").exists()


# ---------------------------------------------------------------- the lock


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_is_exclusive_and_stale_locks_are_taken_over_once(tmp_path):
    path = tmp_path / LOCK
    lock = acquire(path, stale_after=60)
    assert lock is not None and acquire(path, stale_after=60) is None  # we are alive
    release(lock)
    assert not path.exists()

    here = socket.gethostname()
    path.write_text(json.dumps({"host": here, "pid": _dead_pid(), "token": "dead"}))
    assert "has ended" in stale_reason(path, 60)
    # eight contenders for one stale lock: exactly one takes it over
    barrier = threading.Barrier(8)

    def contend(_):
        barrier.wait()
        return acquire(path, stale_after=60)

    with ThreadPoolExecutor(8) as pool:
        winners = [lock for lock in pool.map(contend, range(8)) if lock is not None]
    assert len(winners) == 1 and json.loads(path.read_text())["token"] == winners[0].token
    release(winners[0])

    # another host's lock: live while its heartbeat is fresh, stale after stale_after seconds
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "far"}))
    assert stale_reason(path, 60) is None and acquire(path, stale_after=60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    assert "no heartbeat" in stale_reason(path, 60)
    assert acquire(path, stale_after=60) is not None


def test_gpu_pinning_per_worker(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    sweep._worker_gpu_plugin(["2", "3"]).setup(SimpleNamespace(name=1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    queue = SimpleNamespace(get=lambda: "5")
    sweep._init_local_worker(queue)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


# ---------------------------------------------------------------- the local executor


def test_local_executor_records_failures_without_stopping(tmp_path, capsys):
    garbage = tmp_path / "drunet.pth"
    garbage.write_text("not a state dict")  # fig1 ignores it; fig2 fails to load it
    spec = write_spec(
        tmp_path / "s.toml",
        {
            **{k: v for k, v in TINY.items() if k != "figure"},
            "configs": "1,1",
            "denoiser": str(garbage),
        },
        {"figure": ["fig1", "fig2"], "epochs": [2]},
        out=str(tmp_path / "out"),
        workers=2,
    )
    assert main(["sweep", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "[2/2]" in out and "1 done, 1 failed" in out
    summary = pd.read_csv(tmp_path / "out" / "sweep-summary.csv").set_index("point")
    assert summary.loc["figure=fig1,epochs=2", "status"] == "done"
    assert summary.loc["figure=fig2,epochs=2", "status"] == "failed"
    assert summary.loc["figure=fig1,epochs=2", "test_psnr[wavelet-BC]"] > 10
    failure = (tmp_path / "out" / "figure=fig2,epochs=2" / FAILURE).read_text()
    assert "Traceback" in failure and "drunet.pth" in failure
    results = pd.read_csv(tmp_path / "out" / "sweep-results.csv")
    assert set(results.point) == {"figure=fig1,epochs=2"} and len(results) == 2
    single = pd.read_csv(Path(summary.loc["figure=fig1,epochs=2", "folder"]) / "summary.csv")
    assert list(results.test_psnr) == list(single.test_psnr)

    assert main(["sweep", str(spec), "--status"]) == 0
    status = capsys.readouterr().out
    assert "1 done, 0 running, 1 failed, 0 pending" in status and "Error" in status


# ---------------------------------------------------------------- dask on the loopback


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        yield local


def _kill_when_mid_run(root: Path, kill, deadline: float) -> dict:
    """Poll until a locked, unfinished point has written metrics, then ``kill(pid)``."""
    while time.monotonic() < deadline:
        for lock in root.glob(f"*/{LOCK}"):
            metrics = list(lock.parent.glob("fig1/*/metrics.csv"))
            if metrics and not (lock.parent / DONE).exists():
                try:
                    pid = json.loads(lock.read_text())["pid"]
                    rows = len(pd.read_csv(metrics[0]))
                except (OSError, ValueError, KeyError):
                    continue
                kill(pid)
                return {"point": lock.parent.name, "rows": rows}
        time.sleep(0.02)
    return {}


def test_dask_worker_killed_mid_run_resumes_nothing_lost_or_repeated(cluster, tmp_path):
    # two runs that differ only in their checkpoint period (which changes no iterate): one is
    # killed mid-run, the other one is not; both must end bit for bit alike
    root = tmp_path / "out"
    spec = write_spec(
        tmp_path / "s.toml",
        {**{k: v for k, v in TINY.items() if k != "checkpoint_every"}, "configs": "10,10"},
        {"epochs": [10], "checkpoint_every": [1, 2]},
        out=str(root),
        scheduler=cluster.scheduler_address,
    )
    killed: dict = {}

    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(
        target=lambda: killed.update(_kill_when_mid_run(root, kill, time.monotonic() + 60))
    )
    killer.start()
    assert main(["sweep", str(spec)]) == 0
    killer.join()
    assert killed and killed["rows"] < 20, killed  # killed mid-run: 2 models × 10 steps
    summary = check_complete(root, points=2, steps=10).set_index("point")
    log = (root / killed["point"] / "sweep.log").read_text()
    assert log.count("=== sweep point") == 2 and "resuming at step" in log
    (other,) = set(summary.index) - {killed["point"]}
    assert (root / other / "sweep.log").read_text().count("=== sweep point") == 1
    for name in ("metrics.csv", "summary.csv"):
        a, b = (
            pd.read_csv(Path(summary.folder[p]) / name).drop(
                columns=["seconds", "train_seconds"], errors="ignore"
            )
            for p in (killed["point"], other)
        )
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def _wait_group_gone(pgid: int, deadline: float) -> None:
    """SIGKILL to a process group is delivered asynchronously and ``wait`` reaps only the
    leader: wait until no process of the group is left (the sweep is restarted after the
    kill, not while the pool's workers are still dying and holding their locks)."""
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {pgid} still alive after SIGKILL")


def test_sweep_process_killed_then_restarted_completes(cluster, tmp_path):
    root = tmp_path / "out"
    spec = write_spec(
        tmp_path / "s.toml",
        {**TINY, "epochs": 10, "configs": "10,10"},
        {"seed": [0, 1, 2]},
        out=str(root),
        executor="local",
        workers=2,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "retune_suite.experiments.cli", "sweep", str(spec)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the pool's processes die with it
    )
    try:
        killed = _kill_when_mid_run(
            root, lambda _: os.killpg(process.pid, signal.SIGKILL), time.monotonic() + 60
        )
    finally:
        process.kill()
        process.wait()
        _wait_group_gone(process.pid, time.monotonic() + 30)
    assert killed and killed["rows"] < 20, killed
    # the locks of the dead processes are taken over; finished points are not run again
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in root.glob(f"*/{DONE}")}
    assert main(["sweep", str(spec), "--scheduler", cluster.scheduler_address]) == 0
    check_complete(root, points=3, steps=10)
    for name, mtime in done_before.items():
        assert (root / name / DONE).stat().st_mtime_ns == mtime
    assert "resuming at step" in (root / killed["point"] / "sweep.log").read_text()


def test_paper_scale_specs_cover_figs_1_to_3_and_the_256_error_study():
    """examples/sweeps/paper-scale*.toml: the three figures at the paper preset on this
    machine, and the four (task, prior) pairs of the error study at 256×256."""
    points = expand(load_spec(str(ROOT / "examples" / "sweeps" / "paper-scale.toml")))
    assert sorted(p.config.figure for p in points) == ["fig1", "fig2", "fig3"]
    for p in points:
        assert (p.config.preset, p.config.size, p.config.train_pairs, p.config.epochs) == (
            "paper",
            256,
            600,
            4,
        )
        assert p.config.models == ()  # every row of the figure
    (errors,) = expand(load_spec(str(ROOT / "examples" / "sweeps" / "paper-scale-errors.toml")))
    assert (errors.config.task, errors.config.size, errors.config.batch) == ("all", 256, 4)
    assert errors.config.dtype == "float64"  # a float32 deblurring reference stops at 1.7e-6


def test_pnp_cpu_spec_runs_figs_2_and_3_at_the_cpu_preset():
    """examples/sweeps/paper-scale-pnp-cpu.toml: Figs. 2–3, every row, at the cpu preset."""
    points = expand(load_spec(str(ROOT / "examples" / "sweeps" / "paper-scale-pnp-cpu.toml")))
    assert sorted(p.config.figure for p in points) == ["fig2", "fig3"]
    for p in points:
        assert (p.config.preset, p.config.size, p.config.train_pairs, p.config.threads) == (
            "cpu",
            64,
            200,
            1,
        )
        assert p.config.denoiser_nc == (16, 32, 64, 128) and p.config.models == ()


def test_an_empty_point_lock_is_an_interrupted_point_not_a_running_one(tmp_path):
    """A driver killed between creating and writing a point's lock left it empty: the point
    showed as 'running on ? pid ?' and was blocked for stale_after (600 s)."""
    (point,) = expand(load_spec("reproduce", out=str(tmp_path / "out"), grid_text="seed=0"))
    point.folder.mkdir(parents=True)
    (point.folder / LOCK).write_bytes(b"")
    old = time.time() - 10
    os.utime(point.folder / LOCK, (old, old))
    status, detail = sweep.point_status(point, 600)
    assert status == "pending" and "empty or unreadable" in detail, detail
    lock = acquire(point.folder / LOCK, stale_after=600)
    assert lock is not None
    release(lock)


def test_the_log_is_never_written_through_a_planted_link(tmp_path):
    """sweep.log, opened for append, followed a symbolic link planted in the point's folder."""
    from retune_suite.experiments.sweep.point import LOG, Task, run_point

    folder = tmp_path / "point"
    folder.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep\n")
    (folder / LOG).symlink_to(target)
    (point,) = expand(load_spec("reproduce", out=str(tmp_path / "out"), grid_text="seed=0"))
    task = Task("reproduce", "p", {}, dataclasses.asdict(point.config), str(folder))
    result = run_point(task)
    assert result["status"] == "failed" and "symbolic link" in result["error"]
    assert target.read_text() == "keep\n"
    assert not (folder / LOCK).exists()
