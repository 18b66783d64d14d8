"""The records of a diagnostics report: :class:`DiagnosticRow` and :class:`Diagnostics`.

Shared by :mod:`attncond.spectral.diagnostics.report` (attncond's own models) and
:mod:`attncond.spectral.diagnostics.foreign` (the user's own, adapted models); both import
them from here, so neither imports the other at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attncond.spectral.diagnostics.attention_stats import AttentionStats
from attncond.spectral.diagnostics.b0 import BetaPaper
from attncond.spectral.diagnostics.hessian import HessianExtremes
from attncond.spectral.diagnostics.pl import PLConstant
from attncond.spectral.diagnostics.softmax_jacobian import SoftmaxJacobianSpectrum
from attncond.spectral.diagnostics.z import ZConditioning
from attncond.spectral.results import SpectralEstimate, format_value, record_to_dict, to_jsonable

__all__ = ["DiagnosticRow", "Diagnostics", "compute_or_undefined"]


@dataclass(frozen=True, repr=False)
class DiagnosticRow:
    """One line of a :class:`Diagnostics` report; ``defined=False`` rows carry the reason."""

    key: str
    label: str
    value: float | int | bool | None
    interval: tuple[float, float] | None = None
    defined: bool = True
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    def __repr__(self) -> str:
        v = format_value(self.value) if self.defined else "undefined"
        return f"DiagnosticRow({self.key}: {v}" + (f", note={self.note!r})" if self.note else ")")


@dataclass(frozen=True, repr=False)
class Diagnostics:
    """Everything :func:`diagnose` computed for one model, plus the typed sub-results."""

    model: str
    config: dict[str, Any]
    rows: tuple[DiagnosticRow, ...]
    b0: SpectralEstimate | None = None
    beta: BetaPaper | None = None
    pl: PLConstant | None = None
    z: dict[str, ZConditioning] = field(default_factory=dict)
    softmax: SoftmaxJacobianSpectrum | None = None
    attention: AttentionStats | None = None
    hessian: HessianExtremes | None = None
    spectra: dict[str, np.ndarray] = field(default_factory=dict, compare=False)
    seconds: float = 0.0
    foreign: Any = None  # diagnostics.foreign.ForeignDetails for an adapted model (models.adapt)

    def row(self, key: str) -> DiagnosticRow:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(f"no diagnostic {key!r}; known: {[r.key for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "config": to_jsonable(self.config),
                               "rows": [r.to_dict() for r in self.rows], "seconds": self.seconds}
        for k in ("b0", "beta", "pl", "softmax", "attention", "hessian"):
            v = getattr(self, k)
            out[k] = None if v is None else v.to_dict()
        out["z"] = {k: v.to_dict() for k, v in self.z.items()}
        out["spectra"] = {k: to_jsonable(v) for k, v in self.spectra.items()}
        out["foreign"] = None if self.foreign is None else self.foreign.to_dict()
        return out

    def table(self) -> str:
        """Plain-text table: diagnostic, value, certified interval, note."""
        head = ("diagnostic", "value", "interval", "note")
        cells = []
        for r in self.rows:
            val = "undefined" if not r.defined else (
                ("yes" if r.value else "no") if isinstance(r.value, bool) else format_value(r.value))
            iv = "" if r.interval is None else f"[{format_value(r.interval[0])}, {format_value(r.interval[1])}]"
            cells.append((r.label, val, iv, r.note or ""))
        w = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(head)]
        lines = [f"{self.model} {self.config}", "  ".join(h.ljust(x) for h, x in zip(head, w, strict=True)),
                 "  ".join("-" * x for x in w)]
        lines += ["  ".join(c.ljust(x) for c, x in zip(row, w, strict=True)).rstrip() for row in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Diagnostics(model={self.model!r}, rows={len(self.rows)}, seconds={self.seconds:.3g})"

    def __str__(self) -> str:
        return self.table()


def compute_or_undefined(rows: list[DiagnosticRow], undefined: Sequence[tuple[str, str]],
                         fn: Callable[[], Any]) -> Any:
    """Run ``fn``; if it raises ``ValueError``, ``RuntimeError`` (torch's ``LinAlgError`` and
    ``NotImplementedError`` included) or ``ArithmeticError``, append an undefined row with the
    reason for each ``(key, label)`` in ``undefined`` and return ``None``: a failed diagnostic
    never aborts the report."""
    try:
        return fn()
    except (ValueError, RuntimeError, ArithmeticError) as exc:
        rows.extend(DiagnosticRow(k, label, None, defined=False, note=f"{type(exc).__name__}: {exc}")
                    for k, label in undefined)
        return None
