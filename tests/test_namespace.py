"""One import namespace: the install creates ``retune_suite`` and nothing else at the top level,
and a user's own ``operators.py``, ``bounds.py`` or ``experiments/`` never changes what the suite
imports (issue 24)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import retune_suite

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import operators, bounds, experiments  # the user's own
import retune_suite
from retune_suite import bounds as rb, verify
from retune_suite.operators import hypergrad, fixed_point
from retune_suite.operators.maps import problems
import retune_suite.experiments.cli as cli
print(json.dumps({
    "user": [operators.WHOSE, bounds.WHOSE, experiments.WHOSE],
    "suite": [m.__file__ for m in (retune_suite, rb, hypergrad, problems, cli)],
    "verify_is_suite": verify is rb.verify,
}))
"""


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A research project's folder with the three generic names the suite used to install."""
    (tmp_path / "operators.py").write_text('WHOSE = "user operators.py"\n')
    (tmp_path / "bounds.py").write_text('WHOSE = "user bounds.py"\n')
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text('WHOSE = "user experiments/"\n')
    return tmp_path


def test_a_user_folder_with_generic_names_changes_nothing(user_folder):
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=user_folder, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["user"] == ["user operators.py", "user bounds.py", "user experiments/"]
    package = Path(retune_suite.__file__).resolve().parents[1]  # the folder holding the suite
    for file in seen["suite"]:
        assert Path(file).resolve().is_relative_to(package), file
        assert not Path(file).resolve().is_relative_to(user_folder)
    assert seen["verify_is_suite"]


def test_the_cli_runs_from_a_user_folder(user_folder):
    """``retune-suite verify`` from a folder holding operators.py, bounds.py, experiments/."""
    script = shutil.which("retune-suite")
    command = [script] if script else [sys.executable, "-m", "retune_suite.experiments.cli"]
    done = subprocess.run(
        [*command, "verify", "--out", str(user_folder / "out")],
        cwd=user_folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (user_folder / "out" / "verify.csv").is_file()
    assert "wrote" in done.stdout


def test_the_wheel_installs_one_top_level_name(tmp_path):
    """The built distribution holds ``retune_suite`` (and its dist-info) and nothing else, with
    every mapped folder inside it."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("retune_suite-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"retune_suite"}, sorted(tops)
    for module in (
        "retune_suite/__init__.py",
        "retune_suite/operators/iteration.py",
        "retune_suite/operators/hypergrad/certificate.py",
        "retune_suite/operators/maps/section4.py",
        "retune_suite/bounds/report.py",
        "retune_suite/experiments/cli.py",
        "retune_suite/experiments/reproduce/train.py",
    ):
        assert module in names, module
    (info,) = dist_info
    top_level = f"{info}/top_level.txt"
    if top_level in names:  # setuptools writes it; other backends may not
        assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["retune_suite"]
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "retune-suite = retune_suite.experiments.cli:main" in entry_points
