r"""The C++ kernel of the denoising block (``denoise_cpu.cpp``), built once and cached.

:func:`load` compiles ``denoise_cpu.cpp`` with :func:`torch.utils.cpp_extension.load`
(``-O3 -march=native -ffp-contract=off -fno-math-errno -fopenmp``; ninja drives the build) into
torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``),
under a name that carries a hash of the source, the flags, the CPU's instruction-set flags,
the torch and Python versions and the ninja that builds (always the ``ninja`` wheel's where it
is installed, :func:`_ninja_on_path`), so a changed source, another CPU or another torch builds
afresh and a built module is reused by every later process, from any checkout of the same
source (the source is copied into the build folder). A build that fails (no compiler, no ninja,
no headers) is logged once, on the ``retune_suite.operators.maps.fused`` logger, and
:func:`load` returns None: the callers then run the eager step.

``-fno-math-errno`` lets the compiler vectorise the square root (without it every √ keeps a
scalar call that may set ``errno``); ``-ffp-contract=off`` keeps ``a + b·c`` as two roundings,
as ATen's vectorised kernels compute it, so the iterates equal the eager step's bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

__all__ = ["FLAGS", "SOURCE", "build_seconds", "load"]

logger = logging.getLogger("retune_suite.operators.maps.fused")

SOURCE = Path(__file__).with_name("denoise_cpu.cpp")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fopenmp")

_MODULE: ModuleType | None = None
_FAILED: str | None = None
_BUILD_SECONDS: float | None = None


def _cpu_flags() -> str:
    """The instruction-set flags of this CPU (``-march=native`` depends on them)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return os.uname().machine


def _name() -> str:
    import torch

    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(" ".join(FLAGS).encode())
    digest.update(_cpu_flags().encode())
    digest.update(f"{torch.__version__} {sys.version_info[:2]} {_ninja_version()}".encode())
    return f"retune_fused_denoise_{digest.hexdigest()[:12]}"


def _build_directory(name: str) -> Path:
    """Where torch would build ``name`` ($TORCH_EXTENSIONS_DIR, else its default root with a
    Python-version folder), holding a copy of the source: ninja's build file then names the
    same source path from every checkout, so two checkouts (or an editable install and a
    wheel) of the same source share one build instead of rebuilding each other's (measured:
    a 35 s rebuild when the same source was loaded from a second checkout)."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        folder = f"py{sys.version_info.major}{sys.version_info.minor}_cpu"
        root = os.path.join(cpp_extension.get_default_build_root(), folder)
    directory = Path(root) / name
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / SOURCE.name
    text = SOURCE.read_bytes()
    if not copy.is_file() or copy.read_bytes() != text:  # the name hashes the text: same file
        staged = directory / f".{SOURCE.name}.{os.getpid()}"
        staged.write_bytes(text)
        os.replace(staged, copy)  # atomic: a concurrent build reads the old or the new copy
    return directory


def _ninja_wheel() -> tuple[str, str] | None:
    """(bin folder, version) of the ``ninja`` wheel (a core dependency), or None without it."""
    try:
        import ninja
    except ImportError:
        return None
    return ninja.BIN_DIR, getattr(ninja, "__version__", "unknown")


def _ninja_version() -> str:
    """The ninja that builds: the wheel's version, else whatever ``ninja`` PATH finds."""
    wheel = _ninja_wheel()
    return f"wheel {wheel[1]}" if wheel is not None else f"path {shutil.which('ninja')}"


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """The ninja of the ``ninja`` wheel first on PATH while the build runs, whatever else PATH
    holds; PATH is restored afterwards. Always the same ninja, because two versions keep
    different logs of one build folder: a system ninja (Debian's 1.11.1) and the wheel's
    (1.13.2) hash the build command differently, so a virtual environment's python run with
    and without activating it (the wheel's ninja on PATH, or only the system's) rebuilt the
    kernel at every switch, 37–40 s each (measured, 2026-12-06). Without the wheel, the ninja
    on PATH builds."""
    wheel = _ninja_wheel()
    if wheel is None:
        yield
        return
    previous = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join(p for p in (wheel[0], previous) if p)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = previous


def load() -> ModuleType | None:
    """The compiled module (built on the first call of the process, from the cache after the
    first build on a machine), or None when it cannot be built (logged once)."""
    global _MODULE, _FAILED, _BUILD_SECONDS
    if _MODULE is not None or _FAILED is not None:
        return _MODULE
    start = time.perf_counter()
    try:
        from torch.utils import cpp_extension

        name = _name()
        directory = _build_directory(name)
        with _ninja_on_path():
            module = cpp_extension.load(
                name=name,
                sources=[str(directory / SOURCE.name)],
                build_directory=str(directory),
                extra_cflags=list(FLAGS),
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
    except Exception as error:
        _FAILED = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}"
        logger.warning(
            "the C++ kernel of the wavelet denoising step could not be built (%s); the eager "
            "PyTorch step runs instead (same results, slower)",
            _FAILED,
        )
        return None
    _BUILD_SECONDS = time.perf_counter() - start
    _MODULE = module
    return module


def build_seconds() -> float | None:
    """Seconds the first :func:`load` of this process took (a cold build or a cache hit)."""
    return _BUILD_SECONDS
