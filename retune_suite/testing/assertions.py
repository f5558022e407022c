r"""Assertions for your own test suite: the paper's bounds on your map, hypergradients compared.

Both raise ``AssertionError`` with a message that says what failed and by how much, so that a
pytest failure reads as a finding: the statement, the observed error and the bound.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch

from retune_suite.bounds import Report, verify
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.theta import Loss, Step, Theta

__all__ = [
    "CONFIRMED_STATEMENTS",
    "STATEMENTS",
    "Statement",
    "assert_bounds_hold",
    "assert_hypergrad_close",
]


class Statement(NamedTuple):
    """One statement of the paper as :func:`assert_bounds_hold` reports it."""

    title: str
    """Its name in the paper, with the equation number (and whether it is refuted)."""
    says: str
    """The inequality, in the paper's notation."""


STATEMENTS: dict[str, Statement] = {
    "theorem1": Statement(
        "Theorem 1 (rate of the restarted iteration)",
        "‖x_{Kt} − x̂‖₂ ≤ δ_K^t ‖x₀ − x̂‖₂ for every t ≤ T",
    ),
    "lemma1": Statement(
        "Lemma 1, eq. (29) (Jacobian-free error)",
        "‖g − g^JF‖₂ ≤ δ_K/(1 − δ_K) ‖∂ₓL(x̂)‖₂ ‖∂_θΦ_K(x̂)‖₂",
    ),
    "neumann": Statement(
        "Neumann truncation of eq. (22) (beyond the paper)",
        "‖g − g_P‖₂ ≤ δ_K^{P+1}/(1 − δ_K) ‖∂ₓL(x̂)‖₂ ‖∂_θΦ_K(x̂)‖₂",
    ),
    "theorem2": Statement(
        "Theorem 2, eq. (33), as printed (refuted: finding F1 of docs/findings.md)",
        "‖g − g^R‖₂ ≤ δ_K/(1 − δ_K) ‖∂ₓL(x̂)‖ ‖∂_θΦ_K(x̂)‖ + δ_K^T L_θ ‖x̂ − x₀‖ ‖∂ₓL(x̂)‖ "
        "+ δ_K^T ‖x̂ − x₀‖ ‖∂ₓₓL(x̂)‖ ‖∂_θΦ_K(x_{K(T−1)})‖ + ‖∂_θΦ_K(x_{K(T−1)})‖ o(δ_K^T ‖x̂ − x₀‖)",
    ),
    "theorem2_corrected": Statement(
        "Theorem 2 (corrected: finding F1 of docs/findings.md)",
        "‖g − g^R‖₂ ≤ δ_K/(1 − δ_K) ‖∂ₓL(x̂)‖ ‖∂_θΦ_K(x̂)‖ + δ_K^{T−1} L_θ ‖x̂ − x₀‖ ‖∂ₓL(x̂)‖ "
        "+ δ_K^T ‖x̂ − x₀‖ H ‖∂_θΦ_K(x_{K(T−1)})‖",
    ),
    "corollary1": Statement(
        "Corollary 1, eq. (42), as printed, L = ½‖x − x̄‖² (refuted with Theorem 2)",
        "‖g − g^R‖₂ ≤ δ_K/(1 − δ_K) ‖x̂ − x̄‖ ‖∂_θΦ_K(x̂)‖ "
        "+ δ_K^T ‖x₀ − x̂‖ (‖∂_θΦ_K(x_{K(T−1)})‖ + L_θ ‖x̂ − x̄‖)",
    ),
    "corollary1_corrected": Statement(
        "Corollary 1 (corrected: finding F1), L = ½‖x − x̄‖²",
        "‖g − g^R‖₂ ≤ δ_K/(1 − δ_K) ‖x̂ − x̄‖ ‖∂_θΦ_K(x̂)‖ "
        "+ ‖x₀ − x̂‖ (δ_K^T ‖∂_θΦ_K(x_{K(T−1)})‖ + δ_K^{T−1} L_θ ‖x̂ − x̄‖)",
    ),
}
"""What each statement of :func:`retune_suite.bounds.verify` says, by its name in
``report.bounds`` (``neumann`` stands for ``neumann_P{P}``); the functions of
:mod:`retune_suite.bounds.statements` quote them in full."""

CONFIRMED_STATEMENTS = (
    "theorem1",
    "lemma1",
    "neumann",
    "theorem2_corrected",
    "corollary1_corrected",
)
"""The statements :func:`assert_bounds_hold` checks by default: those the suite confirms
(``docs/findings.md``). Theorem 2 and Corollary 1 as printed are refuted (finding F1); ask for
``"theorem2"`` or ``"corollary1"`` explicitly to check them."""

_OBSERVED = {
    "dist_T": "‖x_{KT} − x̂‖₂",
    "jfb": "‖g − g^JF‖₂",
    "neumann": "‖g − g_P‖₂",
    "retune": "‖g − g^R‖₂",
}


def _family(name: str) -> str:
    return "neumann" if re.fullmatch(r"neumann(_P\d+)?", name) else name


def _requested(statements: str | Iterable[str] | None) -> list[str]:
    if statements is None:
        return list(CONFIRMED_STATEMENTS)
    names = [statements] if isinstance(statements, str) else list(statements)
    unknown = [n for n in names if _family(n) not in STATEMENTS]
    if unknown or not names:
        raise InvalidInputError(
            f"unknown statement(s) {unknown or names!r}: choose among "
            f"{', '.join(STATEMENTS)} (or neumann_P<P>), or pass statements=None for "
            f"{', '.join(CONFIRMED_STATEMENTS)}."
        )
    return names


def _resolve(name: str, report: Report) -> str | None:
    """The key of ``report.bounds`` for a requested name, or None if it was not computed."""
    if _family(name) == "neumann":
        key = f"neumann_P{report.P}"
        if name not in ("neumann", key):
            raise InvalidInputError(
                f"{name!r} asks for a Neumann truncation other than verify's P = {report.P}: "
                f"pass P={name.removeprefix('neumann_P')} to assert_bounds_hold."
            )
        return key
    return name if name in report.bounds else None


def _line(report: Report, key: str) -> str:
    quantity = report.compared[key]
    observed = report.constants["dist_T"] if quantity == "dist_T" else report.errors[quantity]
    bound = report.bounds[key]
    where = " at t = T" if quantity == "dist_T" else ""
    ratio = observed / bound if bound > 0 else math.inf if observed > 0 else 1.0
    statement = STATEMENTS[_family(key)]
    return (
        f"  {key}: {statement.title}\n"
        f"      says      {statement.says}\n"
        f"      observed  {_OBSERVED[quantity]} = {observed:.6e}\n"
        f"      bound     {bound:.6e}{where} (observed/bound = {ratio:.4g})"
    )


def assert_bounds_hold(
    step: Step,
    theta: Theta,
    x0: torch.Tensor,
    loss: Loss,
    *,
    K: int,
    T: int,
    delta: float | None = None,
    statements: str | Iterable[str] | None = None,
    allow_unverified: bool = False,
    **verify_kwargs: Any,
) -> Report:
    r"""Check the paper's error bounds on your map; fail with the statement, error and bound.

    Runs :func:`retune_suite.bounds.verify` (float64; every estimator against the DEQ
    gradient g at the fixed point x̂ of Φ_K) and asserts ``report.holds[name] is True`` for
    each requested statement:

    - Theorem 1: ‖x_{Kt} − x̂‖₂ ≤ δ_K^t ‖x₀ − x̂‖₂, t ≤ T;
    - Lemma 1, eq. (29): ‖g − g^JF‖₂ ≤ δ_K/(1 − δ_K) ‖∂ₓL(x̂)‖₂ ‖∂_θΦ_K(x̂)‖₂;
    - the Neumann truncation of eq. (22): the same with δ_K^{P+1};
    - Theorem 2, eq. (33), on ReTune's error ‖g − g^R‖₂, corrected (finding F1,
      δ_K^{T−1} on the L_θ term) or as printed;
    - Corollary 1, eq. (42) (L = ½‖x − x̄‖² only), corrected or as printed.

    A verdict is True or False only when every constant the bound uses is exact or given
    (see :class:`~retune_suite.bounds.Report`); a ``None`` verdict (a constant that was only
    estimated, such as a measured δ_K when ``delta`` is not given) fails too, showing
    ``report.reasons[name]``, unless ``allow_unverified=True``.

    Parameters
    ----------
    step, theta, x0, loss
        φ(x, θ) -> x, θ (a tensor or a tuple of tensors), x₀ and L(x) -> scalar, in float64.
    K, T
        Block length of Φ_K (9) and number of restarts (24).
    delta
        A Lipschitz constant of Φ_K, δ_K in [0, 1) (for forward-backward ω(τ)^K, ω(τ) =
        max(|1 − τμ|, |1 − τL|)). Without it Theorem 1 and Theorem 2 get no verdict.
    statements
        Names in ``report.bounds`` (``"theorem1"``, ``"lemma1"``, ``"neumann"`` or
        ``"neumann_P5"``, ``"theorem2"``, ``"theorem2_corrected"``, ``"corollary1"``,
        ``"corollary1_corrected"``); default :data:`CONFIRMED_STATEMENTS`, the statements the
        suite confirms. ``corollary1*`` apply to an MSE loss only; by default they are
        skipped for other losses, and asking for them with another loss fails.
    allow_unverified
        Accept ``None`` verdicts (the test then checks only the statements with a verdict).
    **verify_kwargs
        Passed to :func:`~retune_suite.bounds.verify` (``P``, ``x_star``, ``solve_tol``,
        ``generator``, ``lipschitz_theta``, ``hessian_bound``, ``lipschitz_x``).

    Returns
    -------
    Report
        The report of :func:`~retune_suite.bounds.verify`, for further checks.

    Raises
    ------
    AssertionError
        A requested statement is violated (``holds`` False), or has no verdict (``None``)
        and ``allow_unverified`` is False. The message gives, per statement, its name, what
        it says, the observed error, the bound and their ratio (and the reason for ``None``).

    Examples
    --------
    The README's map φ(x, θ) = θx + 1 with θ = ½, so δ_1 = ½ exactly:

    >>> import torch
    >>> step = lambda x, th: th * x + 1.0
    >>> loss = lambda x: 0.5 * ((x - 2.0) ** 2).sum()
    >>> th, x0 = torch.tensor([0.5], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    >>> report = assert_bounds_hold(step, th, x0, loss, K=1, T=3, delta=0.5)
    >>> report.holds["theorem2_corrected"]
    True

    Finding F1's counterexample to Theorem 2 as printed: φ = θx, θ = ½, x₀ = −1, x̄ = 1:

    >>> step = lambda x, th: th * x
    >>> loss = lambda x: 0.5 * ((x - 1.0) ** 2).sum()
    >>> assert_bounds_hold(step, th, -torch.ones(1, dtype=torch.float64), loss, K=1, T=1,
    ...                    delta=0.5, statements=["theorem2"])
    Traceback (most recent call last):
    ...
    AssertionError: 1 of 1 statements do not hold (retune_suite.bounds.verify with K=1, T=1, P=5, delta=0.5):
      theorem2: Theorem 2, eq. (33), as printed (refuted: finding F1 of docs/findings.md)
          says      ‖g − g^R‖₂ ≤ δ_K/(1 − δ_K) ‖∂ₓL(x̂)‖ ‖∂_θΦ_K(x̂)‖ + δ_K^T L_θ ‖x̂ − x₀‖ ...
          observed  ‖g − g^R‖₂ = 1.500000e+00
          bound     1.000000e+00 (observed/bound = 1.5)
    """  # noqa: E501
    requested = _requested(statements)
    report = verify(step, theta, x0, loss, K=K, T=T, delta=delta, **verify_kwargs)
    keys: list[str] = []
    for name in requested:
        key = _resolve(name, report)
        if key is None:
            if statements is None:
                continue  # Corollary 1 by default: only when the loss is an MSE
            raise InvalidInputError(
                f"{name} was not computed: Corollary 1 is the case L(x) = ½‖x − x̄‖², and "
                "verify found that the loss is not of that form; ask for theorem2_corrected."
            )
        keys.append(key)
    failed = [k for k in keys if report.holds[k] is False]
    unverified = [k for k in keys if report.holds[k] is None and not allow_unverified]
    if not failed and not unverified:
        return report
    context = f"retune_suite.bounds.verify with K={K}, T={T}, P={report.P}, delta={delta}"
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {len(keys)} statements do not hold ({context}):")
        parts += [_line(report, k) for k in failed]
    if unverified:
        hint = "" if delta is not None else " (pass delta=, a Lipschitz constant of Φ_K)"
        parts.append(
            f"{len(unverified)} of {len(keys)} statements have no verdict, a constant being "
            f"only estimated{hint}; allow_unverified=True accepts this ({context}):"
        )
        parts += [
            f"{_line(report, k)}\n      no verdict: {report.reasons.get(k) or 'no reason given'}"
            for k in unverified
        ]
    raise AssertionError("\n".join(parts))


def _leaves(value: Theta, side: str) -> tuple[torch.Tensor, ...]:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, tuple | list) and all(isinstance(t, torch.Tensor) for t in value):
        return tuple(value)
    raise AssertionError(
        f"{side} is a {type(value).__name__}, not a tensor or a tuple of tensors: a "
        "hypergradient has θ's structure."
    )


def _structure(value: Theta) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a tuple of {len(value)} tensors"


def _index(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def _compare(
    name: str, a: torch.Tensor, e: torch.Tensor, rtol: float, atol: float
) -> tuple[bool, str]:
    """Whether |a − e| ≤ atol + rtol |e| everywhere (no NaN), and the lines that say so."""
    head = f"  {name} shape {tuple(e.shape)}"
    if a.shape != e.shape:
        return False, f"{head}: actual has shape {tuple(a.shape)}"
    if a.dtype != e.dtype or a.device != e.device:
        return False, (
            f"{head}: actual is {a.dtype} on {a.device}, expected {e.dtype} on {e.device}; "
            "cast one of them (e.g. .double()) to compare values"
        )
    a64, e64 = a.detach().double().reshape(-1), e.detach().double().reshape(-1)
    if a64.numel() == 0:
        return True, f"{head}: empty"
    diff = (a64 - e64).abs()
    nan = a64.isnan() | e64.isnan()
    bad = nan | ~(diff <= atol + rtol * e64.abs())
    rel = torch.where(
        e64 != 0,
        diff / e64.abs(),
        torch.where(diff == 0, torch.zeros_like(diff), torch.full_like(diff, math.inf)),
    )
    finite = torch.where(nan, torch.zeros_like(diff), diff)
    rel_finite = torch.where(nan, torch.zeros_like(rel), rel)
    i, j = int(finite.argmax()), int(rel_finite.argmax())
    n_bad = int(bad.sum())
    if not n_bad:
        return True, (
            f"{head}: close (max abs diff {finite[i].item():.3e}, "
            f"max rel diff {rel_finite[j].item():.3e})"
        )
    norm_a, norm_e = torch.linalg.vector_norm(a64), torch.linalg.vector_norm(e64)
    norm_d = torch.linalg.vector_norm(a64 - e64)
    rel_norm = (norm_d / norm_e).item() if norm_e > 0 else math.inf if norm_d > 0 else 0.0
    lines = [f"{head}: {n_bad} of {a64.numel()} entries differ"]
    if nan.any():
        lines.append(
            f"      NaN at {int(nan.sum())} entries, the first at "
            f"{_index(int(nan.nonzero()[0]), e.shape)}"
        )
    lines.append(
        f"      max abs diff {finite[i].item():.3e} at {_index(i, e.shape)}: "
        f"actual {a64[i].item():.10g}, expected {e64[i].item():.10g}"
    )
    lines.append(
        f"      max rel diff {rel_finite[j].item():.3e} at {_index(j, e.shape)}: "
        f"actual {a64[j].item():.10g}, expected {e64[j].item():.10g}"
    )
    lines.append(
        f"      ‖actual‖₂ = {norm_a.item():.6e}, ‖expected‖₂ = {norm_e.item():.6e}, "
        f"‖actual − expected‖₂ = {norm_d.item():.3e} (relative {rel_norm:.3e})"
    )
    return n_bad == 0, "\n".join(lines)


def assert_hypergrad_close(
    actual: Theta,
    expected: Theta,
    *,
    rtol: float,
    atol: float = 0.0,
    names: Sequence[str] | None = None,
) -> None:
    r"""Two hypergradients agree entry by entry: \|a − e\| ≤ atol + rtol·\|e\|.

    A hypergradient has θ's structure (a tensor or a tuple of tensors, e.g. what
    :func:`~retune_suite.operators.hypergrad.retune` and the five other estimators of
    section 2 return: g (20), g^P (22), g^K (23), g^R (25), g^JF (28)); ``actual`` and
    ``expected`` must have the same structure, shapes, dtype and device. NaN never agrees.
    The test is the NumPy ``allclose`` one, relative to ``expected`` (asymmetric: pass the
    reference second). ``rtol`` has no default: choose it from how ``actual`` was computed
    (about 1e-10 for two exact float64 computations of one quantity; for an estimator against
    the DEQ gradient, use the paper's bound instead, :func:`assert_bounds_hold`).

    Parameters
    ----------
    actual, expected
        Tensors, or tuples of tensors of the same length.
    rtol, atol
        Relative and absolute tolerances.
    names
        One name per tensor for the message (default ``theta[i]``, or ``grad`` for a tensor).

    Raises
    ------
    AssertionError
        With one line per tensor that agrees, and for every tensor that does not: how many
        entries differ, the largest absolute and relative differences, the indices where
        they occur with both values, and the norms ‖actual‖₂, ‖expected‖₂ and
        ‖actual − expected‖₂.

    Examples
    --------
    >>> import torch
    >>> g = (torch.tensor(1.0, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64))
    >>> assert_hypergrad_close(g, (g[0], g[1] + 1e-14), rtol=1e-12)
    >>> assert_hypergrad_close(g, (g[0], torch.tensor([1.0, 2.5], dtype=torch.float64)),
    ...                        rtol=1e-12, names=["gain", "weights"])
    Traceback (most recent call last):
    ...
    AssertionError: hypergradients differ in 1 of 2 tensors (|actual − expected| ≤ 0 + 1e-12·|expected| fails):
      gain shape (): close (max abs diff 0.000e+00, max rel diff 0.000e+00)
      weights shape (2,): 1 of 2 entries differ
          max abs diff 5.000e-01 at (1,): actual 2, expected 2.5
          max rel diff 2.000e-01 at (1,): actual 2, expected 2.5
          ‖actual‖₂ = 2.236068e+00, ‖expected‖₂ = 2.692582e+00, ‖actual − expected‖₂ = 5.000e-01 (relative 1.857e-01)
    """  # noqa: E501
    if not (math.isfinite(rtol) and rtol >= 0 and math.isfinite(atol) and atol >= 0):
        raise InvalidInputError(f"rtol = {rtol} and atol = {atol} must be finite and ≥ 0.")
    a_leaves, e_leaves = _leaves(actual, "actual"), _leaves(expected, "expected")
    if isinstance(actual, torch.Tensor) != isinstance(expected, torch.Tensor) or len(
        a_leaves
    ) != len(e_leaves):
        raise AssertionError(
            f"hypergradients have different structures: actual is {_structure(actual)}, "
            f"expected {_structure(expected)}."
        )
    if names is None:
        names = (
            ["grad"]
            if isinstance(expected, torch.Tensor)
            else [f"theta[{i}]" for i in range(len(e_leaves))]
        )
    elif len(names) != len(e_leaves):
        raise InvalidInputError(f"names has {len(names)} entries for {len(e_leaves)} tensors.")
    results = [
        _compare(name, a, e, rtol, atol)
        for name, a, e in zip(names, a_leaves, e_leaves, strict=True)
    ]
    n_bad = sum(not ok for ok, _ in results)
    if n_bad:
        raise AssertionError(
            f"hypergradients differ in {n_bad} of {len(results)} tensors "
            f"(|actual − expected| ≤ {atol:g} + {rtol:g}·|expected| fails):\n"
            + "\n".join(text for _, text in results)
        )
