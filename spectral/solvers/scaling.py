"""Exact power-of-two scaling around every solver entry (issue 16; the audit's findings 1–2).

Every public solver (``dense_svd``, ``golub_kahan_lanczos``, ``golub_kahan_davidson``,
``symmetric_lanczos``, ``randomized_svd``, the scipy peers) and the two estimators solve
``2^e·A`` instead of ``A`` and map the result back: :func:`solve_scaled` wraps the operator with
:func:`attncond.spectral.operators.explicit.autoscaled` (``e`` from ``max|a_ij|`` of a stored matrix,
from the first non-zero product of a matrix-free one; ``e = 0`` while the scale is inside the dtype's
safe range ``2^±safe_exponent(dtype)``: ``2^±256`` for float64, ``2^±32`` for float32) and
:func:`unscale_result` divides every value, bound and residual by ``2^e`` (``np.ldexp``: exact for
normal numbers; a bound the division rounds, subnormal or underflowed to 0, is moved outwards).
So ``A·2^k`` gives exactly ``2^k`` times the result for ``A`` on every route while the numbers stay
normal, and the solvers' squares, sums of squares and ``eps``-multiples never leave the floating-point range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from attncond.spectral.operators.base import AdjointOp, LinearOp, ScaleState
from attncond.spectral.operators.explicit import CallableOp, autoscaled, check_adjoint_at
from attncond.spectral.results import EigResult, SingularBlock, SVDResult
from attncond.spectral.solvers.product_widening import widen_by_product_error

__all__ = ["check_result_adjoint", "solve_scaled", "unscale_result"]

R = TypeVar("R", SVDResult, EigResult)

#: ``info`` entries that hold squares of singular values (left as they are, with a note)
_GRAM_INFO = ("gram_eig_min", "gram_eig_max", "gram_rounding_margin")


def _inexact(x: Any, e: int) -> np.ndarray:
    """Where ``x·2^-e`` was rounded: a subnormal result lost bits, or underflowed to 0."""
    xf = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.isfinite(xf) & (np.ldexp(np.ldexp(xf, -e), e) != xf)


def _unscale(x: Any, e: int, direction: float = 0.0) -> np.ndarray:
    """``x·2^-e`` (exact for normal results); a bound the division rounded (a subnormal that lost bits,
    or one that underflowed to 0) is moved one ulp outwards (``direction``), so it still holds."""
    xf = np.asarray(x, dtype=np.float64)
    a = np.ldexp(xf, -e)
    if direction:
        a = np.where(_inexact(xf, e), np.nextafter(a, direction * np.inf), a)
        if direction < 0:
            a = np.where((xf >= 0) & (a < 0), 0.0, a)
    fin = np.isfinite(np.asarray(x, dtype=np.float64))
    if bool((fin & ~np.isfinite(a)).any()):
        big = float(np.max(np.abs(np.asarray(x, dtype=np.float64)[fin])))
        raise OverflowError(
            f"a computed value {big:.6g}·2^{-e} exceeds the float64 range; the operator's singular values "
            "or eigenvalues cannot be represented")
    return a


def _unscale_block(b: Any, e: int) -> Any:
    if b is None:
        return None
    kw = {"values": _unscale(b.values, e), "lower": _unscale(b.lower, e, -1.0),
          "upper": _unscale(b.upper, e, 1.0), "residual_norms": _unscale(b.residual_norms, e, 1.0)}
    if isinstance(b, SingularBlock):
        kw["kato_temple"] = _unscale(b.kato_temple, e, 1.0)
    return dataclasses.replace(b, **kw)


def _unscale_info(info: dict[str, Any], e: int) -> dict[str, Any]:
    """GKD's singular-value entries of ``info`` divided back (the rest is unit-free)."""
    out = dict(info)
    nz = out.get("smallest_nonzero")
    if isinstance(nz, dict):
        out["smallest_nonzero"] = {**nz, **{k: float(_unscale(nz[k], e, d)) for k, d in
                                            (("value", 0.0), ("lower", -1.0), ("upper", 1.0)) if k in nz}}
    ns = out.get("null_space")
    if isinstance(ns, dict):
        out["null_space"] = {**ns, **{k: float(_unscale(ns[k], e, 1.0)) for k in ("threshold", "max_residual")
                                      if k in ns}}
    if isinstance(out.get("basis_floor"), float):
        out["basis_floor"] = float(_unscale(out["basis_floor"], e, 1.0))
    return out


def unscale_result(res: R, scale: ScaleState) -> R:
    """Map a result computed on ``2^e·A`` back to ``A`` (values, bounds, residuals divided by ``2^e``).

    Exact while the results are normal floating-point numbers (``≥ 2^-1022``); subnormal bounds are
    rounded outwards; a value above the float range raises ``OverflowError``. ``info["scale_exponent"]``
    records ``e``; GKD's ``smallest_nonzero``, ``null_space`` and ``basis_floor`` are divided back too
    (the Gram entries of ``info`` stay those of the scaled operator, as ``info["scale_note"]`` says).
    """
    e = int(scale.exp)
    if e == 0:
        return res
    info = _unscale_info(dict(res.info), e)
    info["scale_exponent"] = e
    if any(k in info for k in _GRAM_INFO):
        info["scale_note"] = "gram_* entries are of the scaled operator 2^scale_exponent * A"
    kw: dict[str, Any] = {"largest": _unscale_block(res.largest, e),
                          "smallest": _unscale_block(res.smallest, e), "info": info}
    if res.reason:
        kw["reason"] = f"{res.reason} (numbers above are of the operator scaled by 2^{e})"
    if any(b is not None and bool(_inexact(b.values, e).any()) for b in (res.largest, res.smallest)):
        note = (f"a value is below float64's normal range: divided by 2^{e} it was rounded (subnormal, or "
                "0 by underflow); the bounds are rounded outwards and still hold")
        kw["reason"] = f"{kw.get('reason', res.reason)}; {note}" if (kw.get("reason") or res.reason) else note
    if isinstance(res, SVDResult) and res.spectrum is not None:
        kw["spectrum"] = _unscale(res.spectrum, e)
    return dataclasses.replace(res, **kw)


def solve_scaled(op: LinearOp, solve: Callable[[LinearOp], R], tol: float | None = None) -> R:
    """``solve`` on the power-of-two scaled copy ``2^e·op`` (:func:`autoscaled`), its result mapped back
    exactly by :func:`unscale_result`. The copy shares ``op``'s product counter. With ``tol`` (the public
    solver functions), the intervals are widened by the products' estimated error
    (:func:`attncond.spectral.solvers.product_widening.widen_by_product_error`).

    >>> import torch
    >>> from attncond.spectral.operators import as_operator
    >>> from attncond.spectral.solvers.dense import solve_dense
    >>> op = as_operator(torch.diag(torch.tensor([2e-200, 1e-200], dtype=torch.float64)))
    >>> r = solve_scaled(op, lambda s: solve_dense(s, 1, "both", 1e-10))
    >>> r.sigma_max == 2e-200, r.info["scale_exponent"]
    (True, 663)
    """
    sop, scale = autoscaled(op)
    res = check_result_adjoint(op, unscale_result(solve(sop), scale))
    return res if tol is None else widen_by_product_error(op, res, tol)


def check_result_adjoint(op: LinearOp, res: R) -> R:
    """``res`` unchanged after the dot test at its singular pairs
    (:func:`attncond.spectral.operators.explicit.check_adjoint_at`) when ``op`` is made of a user's
    callables (:class:`CallableOp`); ``ValueError`` when ``rmatvec`` is not ``matvec``'s adjoint there."""
    base = op.base if isinstance(op, AdjointOp) else op
    if isinstance(res, SVDResult) and isinstance(base, CallableOp):
        smax = float(res.largest.values[0]) if res.largest is not None else 0.0
        for b in (res.largest, res.smallest):
            if b is not None and b.left is not None and b.right is not None:
                check_adjoint_at(op, b.left, b.right, smax)
    return res
