r"""Memory guards: dense matrices and unrolled graphs are sized before they are built.

A dense ∂ₓΦ_K (n × n), ∂_θΦ_K (n × d), a dense Hessian or SVD, and the graph that
:func:`~retune_suite.operators.hypergrad.unrolled` records through K·T steps can need more
memory than the machine has: without a guard, the allocator fails after the work has started
(``torch.eye(d)`` for d = 10⁵ asks for 80 GB; 10⁷ unrolled steps of a 3-vector reach 5 GiB
before ``std::bad_alloc``). Each of those places calls :func:`check_memory` first, with what it
is about to allocate; beyond the limit it raises :class:`~.errors.MemoryGuardError`, whose
message names the size, the limit and the matrix-free alternative, before any of that work.

The limit, on the device of the tensors (the first that applies):

1. inside ``with limit_memory(...)``: the value given there;
2. the environment variable ``RETUNE_MEMORY_LIMIT``: a size in bytes, with an optional unit
   (``"8GiB"``, ``"500MB"``, ``"2.5e9"``), or ``none`` / ``off`` / ``inf`` for no guard;
3. the memory available now (:func:`available_memory`): on the CPU the smallest of
   ``MemAvailable`` (``/proc/meminfo``), the cgroup's remaining allowance and the address-space
   rlimit; on CUDA the free device memory plus the blocks torch's allocator holds unused.
   On other devices (or where none of these can be read) nothing is checked.

The sizes checked are **lower** estimates of what the work needs (the matrices themselves and
the copies that certainly exist beside them, never the allocator's slack), so a refusal means
the work cannot fit, not that it might not.

>>> with limit_memory("1MiB"):
...     try:
...         check_dense("a dense example", 1000, 1000, torch.float64, "cpu",
...                     alternative="use products instead")
...     except MemoryGuardError as error:
...         print(error.nbytes, error.limit)
8000000 1048576
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from .errors import InvalidInputError, MemoryGuardError

__all__ = [
    "BLOCK_BYTES",
    "ENV",
    "NODE_BYTES",
    "TENSOR_BYTES",
    "GraphGuard",
    "MemoryGuardError",
    "available_memory",
    "check_dense",
    "check_memory",
    "format_bytes",
    "limit_memory",
    "memory_limit",
    "parse_size",
]

ENV = "RETUNE_MEMORY_LIMIT"
_AVAILABLE = "of the memory available"
_NO_LIMIT = ("none", "off", "inf", "unlimited")
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}  # fmt: skip

NODE_BYTES = 512
"""Host memory held by one node of an autograd graph, besides the tensors it saves.

:data:`NODE_BYTES`, :data:`TENSOR_BYTES` and :data:`BLOCK_BYTES` were fitted (torch 2.x, CPU,
float64) to the RSS growth of 2·10⁵ recorded blocks of 3-vectors for seven steps: θ·x,
θ·x + 1, x − τ(θ·x − b), x − θ(Wx − b), tanh(θx) + b, x − τ(e^θ·x − b) and soft
thresholding (1 to 11 nodes and 1 to 5 saved tensors a step): about 540 bytes a node, 740 a
saved tensor (its TensorImpl, storage and saved-variable record, beyond its data) and 950 a
block. Each constant is below its fit, so the estimates stay lower estimates: 78 to 91 % of
the measured growth for those steps with K = 1 and 10 (30 to 99 % at n = 10⁵, where the
data dominate and the temporaries that steps free fragment the heap)."""

TENSOR_BYTES = 512
"""Host memory of one saved tensor beyond its data (see :data:`NODE_BYTES`)."""

BLOCK_BYTES = 768
"""Host memory of the per-block bookkeeping of an unrolled loop (the residual each block
records, a 0-d tensor; see :data:`NODE_BYTES`)."""

logger = logging.getLogger(__name__)

_OVERRIDE: ContextVar[float | None] = ContextVar("memory_limit", default=None)


def parse_size(text: str | int | float) -> float:
    """Bytes from ``"8GiB"``, ``"500MB"``, ``"2.5e9"``, ``4096`` (``math.inf`` for ``"none"``).

    >>> parse_size("8GiB"), parse_size("1.5k"), parse_size("none")
    (8589934592, 1500, inf)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value: float = text
    else:
        s = str(text).strip().lower()
        if s in _NO_LIMIT:
            return math.inf
        match = re.fullmatch(r"([0-9.]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)", s)
        if match is None or match.group(2) not in _UNITS:
            raise InvalidInputError(
                f"memory limit {text!r} is not a size: write bytes with an optional unit "
                "('8GiB', '500MB', '2.5e9') or 'none' for no guard."
            )
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if not value > 0:
        raise InvalidInputError(f"memory limit {text!r} must be positive (or 'none').")
    return value if math.isinf(value) else int(value)


@contextmanager
def limit_memory(limit: str | int | float) -> Iterator[None]:
    """Within the block, the guards use ``limit`` (bytes, a size string, or ``"none"``).

    It takes precedence over ``$RETUNE_MEMORY_LIMIT`` and over the memory available; nested
    blocks use the innermost value.
    """
    token = _OVERRIDE.set(parse_size(limit))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo(field: str, path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cpu_available() -> int | None:
    candidates = [_meminfo("MemAvailable")]
    if candidates[0] is None:
        try:
            candidates = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            candidates = []
    # a cgroup's allowance (containers), v2 then v1; a huge v1 value means "no limit"
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (v1 + "limit_in_bytes", v1 + "usage_in_bytes"),
    ):
        cap, used = _read_int(limit_file), _read_int(usage_file)
        if cap is not None and used is not None and cap < 2**60:
            candidates.append(max(cap - used, 0))
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        size = _meminfo("VmSize", "/proc/self/status")
        if size is not None:
            candidates.append(max(soft - size, 0))
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def available_memory(device: torch.device | str) -> int | None:
    """Bytes that an allocation on ``device`` can get now, or None where it cannot be read.

    CPU: the smallest of ``MemAvailable`` (``/proc/meminfo``; elsewhere the available physical
    pages), a cgroup's remaining allowance and the ``RLIMIT_AS`` headroom. CUDA: the free
    device memory (``torch.cuda.mem_get_info``) plus what torch's caching allocator holds
    unused. Other devices: None.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_available()
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    return None


def memory_limit(device: torch.device | str) -> tuple[float | None, str]:
    """The limit the guards apply on ``device`` and where it comes from.

    Returns (bytes or ``math.inf`` or None, source): :func:`limit_memory`, then
    ``$RETUNE_MEMORY_LIMIT``, then :func:`available_memory` (None: unknown, nothing checked).
    """
    override = _OVERRIDE.get()
    if override is not None:
        return override, "set by limit_memory()"
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            return parse_size(env), f"set by ${ENV}"
        except InvalidInputError as error:
            raise InvalidInputError(f"${ENV}: {error}") from None
    device = torch.device(device)
    return available_memory(device), f"{_AVAILABLE} on {device.type}"


def format_bytes(nbytes: float) -> str:
    """``8.0 GiB``-style size (binary units).

    >>> format_bytes(80e9), format_bytes(512)
    ('74.5 GiB', '512 B')
    """
    if math.isinf(nbytes):
        return "no limit"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_memory(
    what: str,
    nbytes: float,
    device: torch.device | str,
    *,
    alternative: str,
    detail: str = "",
    held: float = 0,
) -> None:
    """Raise :class:`MemoryGuardError` when ``nbytes`` on ``device`` exceed :func:`memory_limit`.

    ``what`` names the work (``"deq_exact's dense ∂ₓΦ_K(x̂)"``), ``detail`` its size in the
    problem's terms (``"n × n = 100000 × 100000 float64"``), ``alternative`` what to do
    instead (the matrix-free method). The message adds how to raise the limit. ``held``: the
    part of ``nbytes`` already allocated, so no longer in the memory available (a limit that
    is set applies to the whole ``nbytes``).
    """
    limit, source = memory_limit(device)
    if limit is None:
        return
    from_available = source.startswith(_AVAILABLE)
    if (nbytes - held if from_available else nbytes) <= limit:
        return
    size = f"{format_bytes(nbytes)} ({detail})" if detail else format_bytes(nbytes)
    raise MemoryGuardError(
        f"{what} needs {size}, over the limit of {format_bytes(limit)} {source}: "
        f"{alternative}.\n  To run it anyway, raise the limit: ${ENV}=<bytes, e.g. 64GiB, or "
        "'none'>, or `with retune_suite.operators.memory.limit_memory(...)`.",
        nbytes=int(nbytes),
        limit=limit,
        alternative=alternative,
    )


def check_dense(
    what: str,
    rows: int,
    cols: int,
    dtype: torch.dtype,
    device: torch.device | str,
    *,
    alternative: str,
    copies: float = 1,
    extra: int = 0,
) -> None:
    """:func:`check_memory` for ``copies`` dense rows × cols matrices of ``dtype`` plus
    ``extra`` entries (a basis, a workspace) on ``device``."""
    itemsize = dtype.itemsize
    nbytes = (copies * rows * cols + extra) * itemsize
    dtype_name = str(dtype).removeprefix("torch.")
    detail = f"{rows} × {cols} {dtype_name}"
    if copies != 1:
        detail += f", {copies:g} copies"
    check_memory(what, nbytes, device, alternative=alternative, detail=detail)


def _storage_bytes(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # tensors without storage (functorch, sparse)
        return None


def _saved_tensors(node: Any) -> Iterator[torch.Tensor]:
    names = [a for a in dir(node) if a.startswith("_saved_")]
    for name in names:
        try:
            value = getattr(node, name)
        except (RuntimeError, AttributeError):  # freed, or not a tensor attribute
            continue
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, torch.Tensor):
                yield item
    if not names and hasattr(node, "saved_tensors"):  # custom autograd.Function
        try:
            yield from node.saved_tensors
        except RuntimeError:
            return


def graph_block(out: torch.Tensor, start: torch.Tensor) -> tuple[int, dict[int, int], set[int]]:
    """The part of ``out``'s autograd graph recorded after ``start``: (nodes, saved storages
    {data pointer: bytes}, storages of the leaves it reaches)."""
    stop = start.grad_fn
    seen: set[int] = set()
    stack = [out.grad_fn]
    nodes, saved, leaves = 0, {}, set()
    while stack:
        node = stack.pop()
        if node is None or node is stop or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):  # AccumulateGrad: a leaf, not recorded here
            key = _storage_bytes(variable)
            if key is not None:
                leaves.add(key[0])
            continue
        nodes += 1
        for t in _saved_tensors(node):
            key = _storage_bytes(t)
            if key is not None:
                saved[key[0]] = key[1]
        stack.extend(nxt for nxt, _ in node.next_functions)
    return nodes, saved, leaves


class GraphGuard:
    r"""Φ_K for a loop that records all T blocks (K steps each) in one autograd graph.

    Before the loop, the lower estimate K·T·:data:`NODE_BYTES` + T·:data:`BLOCK_BYTES` (every
    recorded step holds at least one graph node) is checked. When T > 3, the graph of the
    third block is measured (its nodes, and the tensors it saves that the second block does
    not: what each block adds, without θ and the step's constants) and T times that is
    checked: for steps that save large activations (a DRUNet) this is the estimate that
    refuses. The saved tensors are read from the graph's nodes (``_saved_*``), not through
    saved-tensor hooks, which ``torch.func`` inside a step would refuse. Both checks run before
    the memory they protect is taken, the second after three blocks. A loop estimated to take
    more than :attr:`PROGRESS_SECONDS` logs its progress (``logging``, level INFO, logger
    ``retune_suite.operators.memory``) at most every :attr:`PROGRESS_SECONDS`: silent unless the
    caller turns logging on, as library calls should be. Progress is counted in blocks: a
    loop of few long blocks (T ≤ 3) is sized by the first check only and logs nothing.
    """

    PROGRESS_SECONDS = 10.0

    def __init__(
        self,
        Phi: Callable[[torch.Tensor, Any], torch.Tensor],
        x: torch.Tensor,
        K: int,
        T: int,
        *,
        what: str,
        alternative: str,
    ):
        self.Phi, self.K, self.T = Phi, K, T
        self.what, self.alternative = what, alternative
        self.device = x.device
        self.calls = 0
        self.per_block: tuple[int, int] | None = None  # (device bytes, host bytes)
        self._previous: dict[int, int] = {}
        self._started = self._logged = time.monotonic()
        self._log = False
        check_memory(
            f"{what} (K·T = {K * T} recorded steps)",
            K * T * NODE_BYTES + T * BLOCK_BYTES,
            "cpu",
            alternative=alternative,
            detail=f"at least {NODE_BYTES} bytes of graph a step, {BLOCK_BYTES} a block",
        )

    def __call__(self, x: torch.Tensor, theta: Any) -> torch.Tensor:
        out = self.Phi(x, theta)
        self.calls += 1
        if self.T > 3 and self.calls in (2, 3) and out.grad_fn is not None:
            self._measure(out, x)
        now = time.monotonic()
        if self._log and now - self._logged >= self.PROGRESS_SECONDS:
            self._logged = now
            logger.info(
                "%s: block %d of %d (%.0f%%), %.0f s elapsed",
                self.what, self.calls, self.T, 100 * self.calls / self.T, now - self._started,
            )  # fmt: skip
        return out

    def _measure(self, out: torch.Tensor, x: torch.Tensor) -> None:
        nodes, saved, leaves = graph_block(out, x)
        if self.calls == 2:
            self._previous = saved
            return
        new = {p: b for p, b in saved.items() if p not in self._previous and p not in leaves}
        if self.device.type == "cuda":  # the caching allocator rounds blocks up to 512 bytes
            device_bytes = sum(-(-b // 512) * 512 for b in new.values())
        else:
            device_bytes = sum(new.values())
        host_bytes = nodes * NODE_BYTES + len(new) * TENSOR_BYTES + BLOCK_BYTES
        self.per_block = (device_bytes, host_bytes)
        detail = (
            f"T = {self.T} blocks × {format_bytes(device_bytes + host_bytes)} measured on the "
            f"third: graph nodes {nodes}, saved tensors {len(new)}"
        )
        what = f"{self.what} (K·T = {self.K * self.T} recorded steps)"
        # three blocks are held already: the memory available no longer counts them
        checks = [(device_bytes + host_bytes, "cpu")]
        if self.device.type != "cpu":
            checks = [(device_bytes, self.device), (host_bytes, "cpu")]
        for per_block, where in checks:
            check_memory(what, self.T * per_block, where, alternative=self.alternative,
                         detail=detail, held=3 * per_block)  # fmt: skip
        expected = (time.monotonic() - self._started) / 3 * self.T
        if expected > self.PROGRESS_SECONDS:
            self._log = True
            logger.info(
                "%s: %d blocks of K = %d steps, about %.0f s and %s of graph",
                self.what, self.T, self.K, expected,
                format_bytes(self.T * (device_bytes + host_bytes)),
            )  # fmt: skip
