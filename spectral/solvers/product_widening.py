"""The products' estimated error on a solver's result (the public solver functions' last step).

A solver certifies the operator *as its products compute it*. For an autograd operator (a
``JacobianOperator``, ``HessianOperator``, and Grams of them) those products carry an estimated error
``‖Ã − A‖₂ ≤ b`` (:meth:`attncond.spectral.operators.base.LinearOp.product_error`), and by Weyl every
singular value or eigenvalue of ``Ã`` lies within ``b`` of the mathematical one. So every interval is
widened by ``b``; where ``b`` is beyond rounding and a value no longer meets ``tol``
(:func:`attncond.spectral.operators.product_error.misses_tol`) the value is ``nan`` and not converged.
Stored matrices and user callables carry no estimate and are returned unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np

from attncond.spectral.operators.base import LinearOp
from attncond.spectral.operators.product_error import misses_tol
from attncond.spectral.results import EigResult, SingularBlock, SVDResult

__all__ = ["widen_by_product_error"]

R = TypeVar("R", SVDResult, EigResult)


def _widen_info(info: dict[str, Any], b: float) -> dict[str, Any]:
    """GKD's certified ``smallest_nonzero`` interval and null-space residual, widened by ``b``."""
    out = dict(info)
    nz = out.get("smallest_nonzero")
    if isinstance(nz, dict) and "lower" in nz and "upper" in nz:
        out["smallest_nonzero"] = {**nz, "lower": max(float(nz["lower"]) - b, 0.0),
                                   "upper": float(nz["upper"]) + b}
    ns = out.get("null_space")
    if isinstance(ns, dict) and "max_residual" in ns:
        out["null_space"] = {**ns, "max_residual": float(ns["max_residual"]) + b}
    return out


def widen_by_product_error(op: LinearOp, res: R, tol: float) -> R:
    """``res`` with every interval widened by ``op``'s products' estimated error (see the module
    docstring); ``res`` unchanged where ``op`` has no estimate. ``info["product_error"]`` holds it."""
    pe = op.product_error()
    if pe is None or pe.bound == 0.0:
        return res
    b = float(pe.bound)
    clip = isinstance(res, SVDResult)
    missed: list[str] = []

    def widen(blk: Any) -> Any:
        if blk is None:
            return None
        miss = np.array([misses_tol(pe, tol, float(v)) for v in blk.values], dtype=bool)
        lower = np.asarray(blk.lower, dtype=float) - b
        lower = np.maximum(lower, 0.0) if clip else lower
        if miss.any():
            missed.append(f"{'σ' if isinstance(blk, SingularBlock) else 'λ'} ({blk.end})")
        return dataclasses.replace(blk, lower=lower, upper=np.asarray(blk.upper, dtype=float) + b,
                                   values=np.where(miss, np.nan, blk.values),
                                   converged=np.asarray(blk.converged, dtype=bool) & ~miss)

    largest, smallest = widen(res.largest), widen(res.smallest)
    why = f"{pe.describe()}; every interval is widened by it"
    if missed:
        why += f": {', '.join(missed)} no longer met tol={tol:g}"
    info = {**_widen_info(dict(res.info), b), "product_error": b}
    return dataclasses.replace(res, largest=largest, smallest=smallest, converged=res.converged and not missed,
                               reason=f"{res.reason}; {why}" if res.reason else why, info=info)
