"""Extreme eigenvalues of a loss Hessian from Hessian-vector products (MATH.md §4, "Local curvature")."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attncond.models.checks import check_positive_float
from attncond.spectral import policy
from attncond.spectral.diagnostics.softmax_jacobian import check_nonneg_float
from attncond.spectral.estimate import misses_tol, product_error_verdict
from attncond.spectral.operators.autodiff import HessianOperator
from attncond.spectral.results import record_repr, record_to_dict
from attncond.spectral.solvers.lanczos import solve_lanczos
from attncond.spectral.solvers.scaling import solve_scaled
from attncond.spectral.solvers.validate import check_maxiter, check_seed


# --------------------------------------------------------------------------- Hessian
@dataclass(frozen=True, repr=False)
class HessianExtremes:
    """Extreme eigenvalues of ``∇²L`` (MATH.md §4, "Local curvature").

    ``smallest_nonzero``: the eigenvalue with ``|λ| > zero_tol`` nearest 0. ``method="dense"``: from
    all ``p`` eigenvalues. Lanczos: only for a PSD Hessian (``λ_min ≥ −zero_tol``), as the smallest
    converged Ritz value whose Bauer–Fike interval lies above ``zero_tol`` with every smaller Ritz
    value certified zero; an indefinite Hessian's eigenvalue nearest 0 is interior, which Lanczos at
    the ends does not compute: ``None``, ``converged=False`` and a ``reason`` (use ``method="dense"``).
    ``null_dim_seen``: eigenvalues with ``|λ| ≤ zero_tol`` — exact for dense (``null_dim_exact``);
    for Lanczos the number of orthonormal Ritz vectors certified in ``[−zero_tol, zero_tol]``
    (Kahan's residual bound), a lower bound (a Krylov space sees one copy of a repeated eigenvalue).
    ``cond_nonzero = λ_max/smallest_nonzero`` when the Hessian is PSD up to ``zero_tol``.

    ``lambda_max_interval``/``lambda_min_interval`` contain the extreme eigenvalues of the mathematical
    ``∇²L``: the solver's interval (dense: ``eigvalsh``'s backward error ``p·eps·|λ|_max``; Lanczos:
    Bauer–Fike on the Ritz residual) widened by the Hessian-vector products' estimated error
    ``product_error`` (Weyl; :meth:`HessianOperator.product_error`, at least ``‖H̃ − H̃ᵀ‖₂/2`` of the
    formed ``H̃`` on the dense route, since the true ``∇²L`` is symmetric). Where that error is beyond
    rounding and an end misses ``tol``, ``converged=False`` and the end's value is NaN (its interval stays).
    """

    lambda_max: float
    lambda_min: float
    smallest_nonzero: float | None
    null_dim_seen: int
    cond_nonzero: float | None
    indefinite: bool
    zero_tol: float
    n_params: int
    method: str
    matvecs: int
    converged: bool
    reason: str | None
    null_dim_exact: bool = True
    lambda_max_interval: tuple[float, float] | None = None
    lambda_min_interval: tuple[float, float] | None = None
    product_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    def end_note(self, note: str | None = None) -> str | None:
        """``note`` for a diagnostics row of an extreme eigenvalue, plus the reason when not certified."""
        return note if self.converged else _join(note, f"NOT certified to tol: {self.reason}")

    def __repr__(self) -> str:
        return record_repr(self, ("lambda_max", "lambda_min", "smallest_nonzero", "null_dim_seen",
                                  "cond_nonzero", "indefinite", "method", "converged"))

def _join(*parts: str | None) -> str | None:
    out = "; ".join(p for p in parts if p)
    return out or None

def _lanczos_nonzero(r: Any, thr: float) -> tuple[float | None, int, str | None]:
    """``(smallest_nonzero or None, certified zero count, reason)`` from the smallest Lanczos block."""
    b = r.smallest
    th, rho, ok = np.asarray(b.values), np.asarray(b.residual_norms), np.asarray(b.converged)
    order = np.argsort(th)
    th, rho, ok = th[order], rho[order], ok[order]
    if float(th[0] - rho[0]) < -thr:
        return None, 0, ("indefinite Hessian: its non-zero eigenvalue nearest 0 is interior and the Lanczos "
                         "route computes the ends only; smallest_nonzero not computed (use method='dense')")
    zero = np.logical_and.accumulate(ok & (np.abs(th) + np.sqrt(np.cumsum(rho**2)) <= thr))
    nz = int(zero.sum())
    i = nz
    if i >= th.size or not ok[: i + 1].all() or float(th[i] - rho[i]) <= thr:
        return None, nz, ("smallest non-zero eigenvalue not certified on the Lanczos route (Ritz values at "
                          "the small end not converged or not separated from zero_tol); use method='dense'")
    return float(th[i]), nz, ("Lanczos: smallest_nonzero is the first converged Ritz value above zero_tol; "
                              "null_dim_seen is a lower bound (one Krylov space sees one copy of a "
                              "repeated eigenvalue)")

def _end_interval(block: Any, pick: Any) -> tuple[float, float]:
    """The Bauer–Fike interval of the extreme Ritz value of a Lanczos block."""
    i = int(pick(np.asarray(block.values)))
    return float(block.lower[i]), float(block.upper[i])


def hessian_extremes(
    loss: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    *,
    k: int = 6,
    method: str = "auto",
    tol: float = 1e-8,
    maxiter: int | None = None,
    zero_tol: float | None = None,
    seed: int = 0,
) -> HessianExtremes:
    """Extreme eigenvalues of ``∇²L(θ)`` from Hessian-vector products (forward-over-reverse).

    ``method="lanczos"``: :func:`spectral.symmetric_lanczos` on :class:`HessianOperator` for the
    ``k`` largest and ``k`` smallest Ritz values; ``"dense"``: all ``p`` HVPs and ``eigvalsh``
    (exact null-space count); ``"auto"``: dense for ``p ≤ AUTO.hessian_dense_max_params`` (1500), else
    Lanczos. ``zero_tol`` (finite, ``≥ 0``) defaults to ``p·eps·|λ|_max``; ``tol`` must be finite and
    ``> 0``. See :class:`HessianExtremes` for what the Lanczos route certifies.
    """
    if not callable(loss):
        raise TypeError(f"loss must be callable(params) -> scalar, got {type(loss).__name__}")
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"unknown method {method!r}; known: 'auto', 'dense', 'lanczos'")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    tol = check_positive_float("tol", tol)
    zt = None if zero_tol is None else check_nonneg_float("zero_tol", zero_tol)
    maxiter = check_maxiter(maxiter)
    seed = check_seed(seed)
    op = HessianOperator(loss, params)
    p = op.shape[0]
    eps = torch.finfo(op.dtype).eps
    dense_max = policy.AUTO.hessian_dense_max_params
    chosen = method if method != "auto" else ("dense" if p <= dense_max else "lanczos")
    pe = op.product_error()
    if chosen == "dense":
        Hd = op.to_dense()
        # ‖H̃ − H̃ᵀ‖₂/2 ≤ ‖H̃ − H‖₂ (H is symmetric); the exact 2-norm (a second O(p³) step) only where
        # its Frobenius bound exceeds the products' estimate
        K = Hd - Hd.T
        asym = 0.5 * float(torch.linalg.matrix_norm(K))
        if pe is not None and asym > pe.bound:
            asym = 0.5 * float(torch.linalg.matrix_norm(K, ord=2))
        if pe is not None and asym > pe.bound:
            pe = dataclasses.replace(pe, bound=asym, what=pe.what + " (‖H̃ − H̃ᵀ‖₂/2 of the formed H̃)")
        lam = torch.linalg.eigvalsh(0.5 * (Hd + Hd.T)).detach().cpu().double().numpy()
        lmax_abs = float(np.abs(lam).max(initial=0.0))
        thr = p * eps * lmax_abs if zt is None else zt
        half = p * eps * lmax_abs  # eigvalsh is backward stable: |Δλ| ≤ c·p·eps·‖H‖
        ivmax = (float(lam[-1]) - half, float(lam[-1]) + half)
        ivmin = (float(lam[0]) - half, float(lam[0]) + half)
        zero = np.abs(lam) <= thr
        nonzero = lam[~zero]
        smallest_nz = float(nonzero[np.argmin(np.abs(nonzero))]) if nonzero.size else None
        conv, matvecs, nd, exact = True, op.n_products, int(zero.sum()), True
        reason = None if nonzero.size else f"all {lam.size} eigenvalues are zero (<= {thr:.3g})"
    else:
        kk = min(k, p)
        # Lanczos on the products as computed (HessianOperator is symmetric by construction); the
        # products' error widens both routes alike below
        r = solve_scaled(op, lambda s: solve_lanczos(s, kk, "both", tol, maxiter, seed=seed))
        lam = np.sort(np.concatenate([r.smallest.values, r.largest.values]))
        lmax_abs = float(np.abs(lam).max(initial=0.0))
        thr = p * eps * lmax_abs if zt is None else zt
        smallest_nz, nd, why = _lanczos_nonzero(r, thr)
        conv = bool(r.converged) and smallest_nz is not None
        matvecs, exact, reason = r.matvecs, False, _join(r.reason, why)
        ivmax, ivmin = _end_interval(r.largest, np.argmax), _end_interval(r.smallest, np.argmin)
    b = 0.0 if pe is None else float(pe.bound)
    ivmax, ivmin = (ivmax[0] - b, ivmax[1] + b), (ivmin[0] - b, ivmin[1] + b)
    lmax, lmin = float(lam[-1]), float(lam[0])
    if pe is not None:
        ends = {"λ_max": lmax, "λ_min": lmin,
                "the non-zero λ nearest 0": math.nan if smallest_nz is None else smallest_nz}
        fail, reason = product_error_verdict(pe, tol, ends, reason)
        conv = conv and not fail
        lmax = math.nan if misses_tol(pe, tol, lmax) else lmax
        lmin = math.nan if misses_tol(pe, tol, lmin) else lmin
        if smallest_nz is not None and misses_tol(pe, tol, smallest_nz):
            smallest_nz = None
    indefinite = bool(lam[0] < -thr)
    cond = None
    if smallest_nz is not None and not indefinite and smallest_nz > 0 and not math.isnan(lmax):
        cond = lmax / smallest_nz
    return HessianExtremes(
        lambda_max=lmax, lambda_min=lmin, smallest_nonzero=smallest_nz,
        null_dim_seen=nd, cond_nonzero=cond, indefinite=indefinite, zero_tol=thr, n_params=p,
        method=("auto->" + chosen) if method == "auto" else chosen, matvecs=int(matvecs), converged=conv,
        reason=reason, null_dim_exact=exact, lambda_max_interval=ivmax, lambda_min_interval=ivmin,
        product_error=None if pe is None else b,
    )
