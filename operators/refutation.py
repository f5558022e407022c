r"""Given constants that a measurement refutes.

``retune_suite.bounds.verify`` and ``hypergrad.estimate`` take constants from the caller: δ, a
Lipschitz constant of x ↦ Φ_K(x, θ); H, one of ∂ₓL; L_θ, one of x ↦ ∂_θΦ_K(x) (Assumption 2).
Each is an *upper* bound of a quantity that these routines also *measure* at the points they
visit, and every such measurement is a *lower* bound of the same quantity:

==================  ===========================================================================
constant            measurements that refute it when they exceed it (each is a lower bound)
==================  ===========================================================================
δ                   ‖∂ₓΦ_K(x)‖₂ at any x (dense SVD); ‖∂ₓΦ_K(x)ᵀv‖/‖v‖ (one product); a
                    secant ‖Φ_K^k(x) − Φ_K^k(y)‖/‖x − y‖, compared with δ^k (the restarts'
                    residuals ‖x_{K(t+1)} − x_{Kt}‖, the distances ‖x_{Kt} − x̂‖ with Φ_K(x̂) = x̂)
H                   ‖∂ₓₓL(x)‖₂; a secant ‖∂ₓL(x) − ∂ₓL(y)‖/‖x − y‖
L_θ                 a secant ‖∂_θΦ_K(x) − ∂_θΦ_K(y)‖₂/‖x − y‖, or one of its directions
                    ‖(∂_θΦ_K(x) − ∂_θΦ_K(y))ᵀw‖/(‖x − y‖‖w‖) (one VJP at each point)
==================  ===========================================================================

A measurement above the given value, beyond rounding, proves the given value false, so what
rests on it (a verdict, a certificate) is not given: ``None``, with the measured value in the
reason (``docs/findings.md``, "Refuted constants"). A measurement below it proves nothing and
changes nothing.

Rounding allowance: :data:`ULPS` = 1e3 ulps of the dtype (float64: 2.2·10⁻¹³), the margin
``verify`` already allows its verdicts, of the magnitudes that enter the measured value:

- a norm m (of a Jacobian, a Hessian) refutes c when m > c + 1e3 ulps · max(1, m). The floor 1
  is the scale a contraction's Jacobian is computed at: ∂ₓΦ_K is a product of step Jacobians
  whose entries are O(1) (I − τ∇²f, 0/1 masks of a prox), so its rounding is absolute, not
  relative to δ (with τ = 2/(μ + L) and μ = L, δ = 0 and the computed ‖∂ₓΦ_K‖ is ~10⁻¹⁶);
- a secant ‖f(x) − f(y)‖/‖x − y‖ refutes c^k when ‖f(x) − f(y)‖ > c^k‖x − y‖ + 1e3 ulps · s,
  s the magnitudes the two norms are computed from (given by the caller: for the distances to
  x̂, the slack of ``verify``'s own Theorem 1 check, ‖x_{Ks} − x̂‖ + ‖x̂‖, so that Theorem 1 can
  never be "violated" with a δ the same distances do not refute).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["SYMBOLS", "ULPS", "Evidence", "Refutation"]

ULPS = 1e3
"""The rounding allowance, in ulps of the dtype (that of ``bounds.report.FP_ULPS``)."""

SYMBOLS = {"delta": "δ", "hessian_bound": "H", "lipschitz_theta": "L_θ", "lipschitz_x": "L_x"}
"""The symbol of each constant, as the reasons write it."""

_PAIRS_LIMIT = 512  # beyond this many points, secants only between neighbours and from the first


@dataclass(frozen=True)
class Refutation:
    """A given constant and the measurement above it.

    ``measured`` is compared with ``compared``: the given value itself, or its power c^k for a
    secant of Φ_K^k (k blocks); ``what`` names the measured quantity.
    """

    name: str
    given: float
    measured: float
    compared: float
    what: str
    power: int = 1
    note: str = ""

    def __str__(self) -> str:
        symbol = SYMBOLS.get(self.name, self.name)
        rhs, notes = f"{self.given:.6g}", []
        if self.power != 1:
            rhs = f"{symbol}^{self.power} = {self.compared:.6g}"
            notes.append(f"{self.measured ** (1.0 / self.power):.6g} per block")
        if self.note:
            notes.append(self.note)
        tail = f" ({'; '.join(notes)})" if notes else ""
        return (
            f"given {symbol} = {self.given:.6g} is refuted: measured {self.what} = "
            f"{self.measured:.6g} > {rhs}{tail}"
        )

    @property
    def excess(self) -> float:
        """measured / compared (inf when compared is 0): the strongest refutation is kept."""
        return self.measured / self.compared if self.compared > 0 else math.inf


class Evidence:
    """The measurements of one call, checked against the constants the caller gave.

    ``given`` maps a constant's name (``"delta"``, ``"hessian_bound"``, ``"lipschitz_theta"``)
    to its value or None (not given: nothing to refute). :meth:`norm` and :meth:`secants`
    record a measurement; :attr:`refuted` keeps, per constant, the measurement that exceeds it
    most; :meth:`reason` says why what uses some constants gets no verdict. :attr:`close` keeps
    the largest norm above its constant by more than 1e3 ulps of it but within the absolute
    floor (a tiny constant, e.g. δ = 10⁻³⁰⁰): whether that is rounding depends on what the
    constant is used for, so ``verify`` asks of each bound whether the measured value, put in
    place of the constant, moves it beyond that bound's own rounding allowance.
    """

    def __init__(self, given: dict[str, float | None], dtype: torch.dtype = torch.float64):
        self.given = {k: float(v) for k, v in given.items() if v is not None}
        self.eps = torch.finfo(dtype).eps if dtype.is_floating_point else 2.0**-52
        self.refuted: dict[str, Refutation] = {}
        self.close: dict[str, Refutation] = {}

    def _record(self, refutation: Refutation) -> None:
        old = self.refuted.get(refutation.name)
        if old is None or refutation.excess > old.excess:
            self.refuted[refutation.name] = refutation

    def norm(self, name: str, measured: float, what: str) -> bool:
        """A measured norm (a lower bound of the best constant): True if it refutes ``name``."""
        given = self.given.get(name)
        if given is None or not math.isfinite(measured):
            return False
        refutation = Refutation(name, given, measured, given, what)
        if measured > given + ULPS * self.eps * max(1.0, measured):
            self._record(refutation)
            return True
        if measured > given * (1.0 + ULPS * self.eps):  # above, but within the absolute floor
            old = self.close.get(name)
            if old is None or measured > old.measured:
                self.close[name] = refutation
        return False

    def secants(
        self,
        name: str,
        values: Sequence[float] | torch.Tensor,
        what: str,
        scale: Sequence[float] | torch.Tensor | float,
        note: str = "",
        error: float = 0.0,
    ) -> bool:
        """Secants of Φ_K^k along a sequence: True if one refutes ``name`` (δ).

        ``values[t]`` = ‖u_t‖ with u_t = Φ_K^t(a) − Φ_K^t(b) (the restarts' residuals, a = x₁,
        b = x₀; or the distances ‖x_{Kt} − x̂‖, b = x̂), so ‖u_t‖ ≤ δ^{t−s}‖u_s‖ for s < t.
        ``scale`` (one number, or one per s) is the magnitude the values are computed from: a
        pair refutes when values[t] > δ^{t−s}·values[s] + 1e3 ulps·(values[s] + scale[s]) +
        (1 + δ^{t−s})·``error``, ``error`` a bound on each value's own error beyond rounding
        (for the distances to a computed x̂: its distance to the true one, s/(1 − δ) from its
        residual s, valid whenever δ is, which is all a refutation by contradiction needs).
        ``what`` is a format string with ``{s}`` and ``{t}`` (``note`` defines its symbols).
        Every pair up to 512 values; beyond, neighbours and pairs from the first value.
        """
        given = self.given.get(name)
        v = torch.as_tensor(values, dtype=torch.float64).reshape(-1).cpu()
        m = v.numel()
        if given is None or m < 2 or not torch.isfinite(v).all():
            return False
        sc = torch.as_tensor(scale, dtype=torch.float64).reshape(-1).cpu().expand(m)
        if m <= _PAIRS_LIMIT:
            s, t = torch.triu_indices(m, m, offset=1)
        else:
            idx = torch.arange(1, m)
            s = torch.cat([idx - 1, torch.zeros(m - 2, dtype=torch.long)])
            t = torch.cat([idx, idx[1:]])
        k = (t - s).to(torch.float64)
        compared = torch.tensor(given, dtype=torch.float64) ** k
        allowance = ULPS * self.eps * (v[s] + sc[s]) + (1.0 + compared) * error
        bad = v[t] > compared * v[s] + allowance
        if not bad.any():
            return False
        # the strongest: the largest per-block rate (v_t / v_s)^(1/k) among the refuting pairs
        # whose values stand well clear of rounding (near the floor a rate is noise), if any
        rate = (v[t] / v[s]).clamp_min(0) ** (1.0 / k)
        clear = bad & (v[t] - compared * v[s] > 1e3 * allowance)
        rate = torch.where(clear if clear.any() else bad, rate, torch.full_like(rate, -1.0))
        i = int(torch.argmax(rate))
        si, ti, ki = int(s[i]), int(t[i]), int(k[i])
        self._record(
            Refutation(
                name,
                given,
                (v[ti] / v[si]).item(),
                compared[i].item(),
                what.format(s=si, t=ti),
                power=ki,
                note=note,
            )
        )
        return True

    def secant(
        self, name: str, num: float, den: float, what: str, scale: float, note: str = ""
    ) -> bool:
        """One secant ‖f(x) − f(y)‖ = ``num`` over ‖x − y‖ = ``den`` against ``name``: refuted
        when num > c·den + 1e3 ulps·scale (``scale``: the magnitudes num and den are computed
        from; ``note`` defines the symbols of ``what``). True if it refutes."""
        given = self.given.get(name)
        if given is None or not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
            return False
        if num > given * den + ULPS * self.eps * scale:
            self._record(Refutation(name, given, num / den, given, what, note=note))
            return True
        return False

    def adjoint_powers(
        self,
        name: str,
        adjoint,
        v: torch.Tensor,
        steps: int,
        what: str,
    ) -> bool:
        """Ratios ‖Aᵀv_{p+1}‖/‖v_p‖ of ``steps`` products v_{p+1} = ``adjoint``(v_p) (a power
        iteration from v without normalisation error: each ratio is ≤ ‖A‖₂), each a measured
        lower bound of ‖∂ₓΦ_K‖₂ checked with :meth:`norm`. True if one refutes ``name``."""
        refuted = False
        for p in range(steps):
            size = torch.linalg.vector_norm(v).item()
            if not (size > 0 and math.isfinite(size)):
                break
            w = adjoint(v / size)
            ratio = torch.linalg.vector_norm(w).item()
            refuted |= self.norm(name, ratio, what.format(p=p))
            v = w
        return refuted

    def reason(self, *names: str) -> str:
        """Why what uses ``names`` gets no verdict ("" when none of them is refuted)."""
        return "; ".join(str(self.refuted[n]) for n in names if n in self.refuted)

    def any(self, *names: str) -> bool:
        """Whether one of ``names`` is refuted."""
        return any(n in self.refuted for n in names)
