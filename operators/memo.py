r"""A per-block memo for the quantities of a step that depend on θ alone.

Φ_K (eqs. 9, 12) and the restarts Φ_K^T (eq. 24) apply φ(·, θ) K·T times with the *same* θ. A
step whose cost includes θ-only work (the weights of the wavelet prior, τ(θ), the constant
factor 1 − τ/θ² of the denoising step) can compute it once per block instead of once per step:
:func:`retune_suite.operators.unroll` and :func:`retune_suite.operators.restart` open a
:func:`block_scope`, and a step
asks :func:`memoize` for its θ-maps. Outside a scope (a step called on its own) nothing is
cached.

The memo lives only while its scope is open, so a value never outlives the graph it was built
in: inside a block with gradients on, the K steps share one θ-map node of the graph (the
gradient of the block is unchanged, it accumulates over the K uses); a value computed with
gradients off is never served with gradients on, and a θ tensor changed in place (its version
counter moves) or replaced by another tensor is computed afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch

__all__ = ["block_scope", "memoize"]

V = TypeVar("V")

_MEMO: ContextVar[dict[Any, Any] | None] = ContextVar("retune_block_memo", default=None)


@contextmanager
def block_scope() -> Iterator[None]:
    """Open a memo for one block (or one restart loop); a nested scope reuses the outer one."""
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter (and cannot change)
        return -1


def memoize(owner: object, name: str, theta: Sequence[torch.Tensor], compute: Callable[[], V]) -> V:
    """``compute()``, or its value from earlier in the open block for the same owner, name, θ
    tensors (identity and version) and grad mode; ``compute()`` when no block is open."""
    memo = _MEMO.get()
    if memo is None:
        return compute()
    key = (id(owner), name, torch.is_grad_enabled(), tuple(id(t) for t in theta))
    versions = tuple(_version(t) for t in theta)
    hit = memo.get(key)
    # the tensors are kept in the entry, so their ids cannot be reused while it exists
    if hit is not None and hit[0] is owner and hit[1] == versions:
        return hit[3]
    value = compute()
    memo[key] = (owner, versions, tuple(theta), value)
    return value
