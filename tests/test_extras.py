"""The core installs and runs without the optional extras; a job that needs one names it.

pyproject's core dependencies are torch, numpy, scipy, pandas and matplotlib (with tqdm and
pillow); deepinv, torchvision, dask/distributed, PyWavelets, ptwt, torchdeq and scikit-image
are extras. Here they are blocked (``sys.modules[name] = None`` makes ``import name`` raise
ImportError) in a fresh interpreter that then calls the CLI's ``main``, as ``retune-suite``
does: ``verify`` and a small wavelet error study must succeed, and a job needing an extra must
stop with exit status 2 and the one-line message ``pip install 'retune-suite[extra]'``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from retune_suite.operators.errors import MissingExtraError, RetuneError, require

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("deepinv", "torchvision", "dask", "distributed", "pywt", "ptwt", "torchdeq")
"""Every optional module but scikit-image, whose wheel holds the embedded photographs."""
OPTIONAL = (*BLOCKED, "skimage")

CLI = """
import sys
blocked, argv = sys.argv[1].split(","), sys.argv[2:]
for name in blocked:
    sys.modules[name] = None  # `import name` raises ImportError
from retune_suite.experiments.cli import main
sys.exit(main(argv))
"""

# The quick error study (CPU, float64, 32×32 crops of the embedded photographs) cut to one K and
# one T, on the deblurring task: the wavelet prior, the FFT blur and the photographs, ~15 s.
SMALL_ERRORS = (
    "errors --preset quick --task deblur --ks 1 --t-ref 1 --ts 1 --ks-for-t 1 --ps 0 --quiet"
).split()


def cli(args: list[str], blocked: tuple[str, ...] = BLOCKED) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_stops_naming(done: subprocess.CompletedProcess, extra: str) -> str:
    """Exit status 2, no traceback, and one error line naming ``pip install '...[extra]'``."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("retune-suite: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert f"pip install 'retune-suite[{extra}]'" in errors[0]
    return errors[0]


def test_verify_and_the_wavelet_error_study_need_no_extra(tmp_path):
    done = cli(["verify", "--out", str(tmp_path / "verify")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "verify" / "verify.csv").is_file()

    done = cli([*SMALL_ERRORS, "--out", str(tmp_path / "errors")])
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "errors" / "metrics.csv")
    assert set(frame.task) == {"deblur"} and set(frame.prior) == {"wavelet-BC"}
    assert {"jfb", "retune", "unrolled", "neumann"} <= set(frame.estimator)
    assert (tmp_path / "errors" / "errors_deblur_wavelet-BC.png").is_file()


def test_jobs_needing_an_extra_stop_and_name_it(tmp_path):
    # FB-PnP needs the DRUNet (deepinv): the extra pnp
    out = tmp_path / "fig2"
    args = ["reproduce", "fig2", "--preset", "quick", "--models", "pnp-sigma-tau", "--out"]
    line = assert_stops_naming(cli([*args, str(out)]), "pnp")
    assert "needs deepinv" in line
    assert not list(out.rglob("*.*"))  # nothing written but empty folders

    # the dask executor of a sweep: the extra sweep, before any folder is written
    out = tmp_path / "sweep"
    args = ["sweep", "errors", "--out", str(out), "--grid", "seed=0,1", "--executor", "dask"]
    line = assert_stops_naming(cli(args), "sweep")
    assert "needs distributed" in line and not out.exists()

    # no scikit-image: the embedded photographs name the extra data, and --images
    args = [*SMALL_ERRORS, "--out", str(tmp_path / "errors")]
    line = assert_stops_naming(cli(args, blocked=(*BLOCKED, "skimage")), "data")
    assert "--images FOLDER" in line


def test_importing_the_suite_loads_no_optional_module():
    code = f"""
import json, sys
import retune_suite
import retune_suite.operators.maps.section4
import retune_suite.experiments.cli as cli
cli.build_parser()  # imports every command's configuration
print(json.dumps([name for name in {OPTIONAL!r} if name in sys.modules]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepinv", None)
    with pytest.raises(MissingExtraError) as caught:
        require("deepinv", "pnp", "the DRUNet")
    error = caught.value
    assert isinstance(error, RetuneError) and isinstance(error, ImportError)
    assert str(error) == "the DRUNet needs deepinv: pip install 'retune-suite[pnp]'"
    assert (error.module, error.extra, error.name) == ("deepinv", "pnp", "deepinv")
    assert require("json", "none", "json") is json


def test_a_missing_dependency_of_an_extra_is_named_too(monkeypatch, tmp_path):
    """The module is there but its own import fails (a half-installed extra): the message
    still names the extra, and says which import failed."""
    (tmp_path / "half_installed_peer.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError, match=r"\[peers\]'.*not_installed_dependency_xyz"):
        require("half_installed_peer", "peers", "the peers")


def test_the_drunet_and_the_bench_peers_name_their_extra(monkeypatch):
    from retune_suite.experiments.bench import missing
    from retune_suite.operators.maps.pnp import load_drunet

    monkeypatch.setitem(sys.modules, "deepinv", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'retune-suite\[pnp\]'"):
        load_drunet()
    monkeypatch.setitem(sys.modules, "torchdeq", None)
    status = missing(("torchdeq",))
    assert status.startswith("not installed: torchdeq (")
    assert "pip install 'retune-suite[peers]'" in status


def _requirement_name(text: str) -> str:
    name = text.split(";")[0].split("[")[0]
    for stop in "<>=!~ ":
        name = name.split(stop)[0]
    return name.strip().lower().replace("_", "-")


def test_pyproject_has_lower_bounds_and_constraints_pin_every_extra():
    """Core and extras carry lower bounds (no ==); ``all`` is every extra; constraints.txt (what
    CI installs against) pins every distribution they name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"pnp", "data", "sweep", "peers", "testing", "docs", "dev", "all"}
    assert extras["all"] == [f"retune-suite[{','.join(e for e in extras if e != 'all')}]"]
    named = {}
    for requirement in [*project["dependencies"], *(r for e in extras.values() for r in e)]:
        assert "==" not in requirement, requirement
        if not requirement.startswith("retune-suite["):
            assert ">=" in requirement, f"{requirement}: give a lower bound"
            named[_requirement_name(requirement)] = requirement
    core = {_requirement_name(r) for r in project["dependencies"]}
    assert {"torch", "numpy", "scipy", "pandas", "matplotlib"} <= core
    assert not core & {"deepinv", "torchvision", "dask", "distributed", "pywavelets"}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a pin"
            pins[_requirement_name(name)] = version
    unpinned = sorted(set(named) - set(pins) - {"tomli"})  # tomli: Python < 3.11 only
    assert not unpinned, f"constraints.txt pins none of {unpinned}"
