"""Extreme eigenvalues of a loss Hessian from Hessian-vector products (MATH.md §4, "Local curvature")."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attncond.spectral import policy
from attncond.spectral.operators.autodiff import HessianOperator
from attncond.spectral.results import record_repr, record_to_dict
from attncond.spectral.solvers.lanczos import symmetric_lanczos


# --------------------------------------------------------------------------- Hessian
@dataclass(frozen=True, repr=False)
class HessianExtremes:
    """Extreme eigenvalues of ``∇²L`` (MATH.md §4, "Local curvature").

    ``smallest_nonzero``: the eigenvalue (Ritz value) with ``|λ| > zero_tol`` nearest 0 among
    those seen — all of them for ``method="dense"``; for Lanczos the ``k`` at each end, which
    is the smallest non-zero eigenvalue of a PSD Hessian. ``null_dim_seen``: how many
    eigenvalues (Ritz values) with ``|λ| ≤ zero_tol`` the solver saw — exact for
    ``method="dense"``, a lower bound for Lanczos (a single Krylov space sees one copy of a
    repeated eigenvalue). ``cond_nonzero =
    λ_max/smallest_nonzero`` when the Hessian is PSD up to ``zero_tol``.
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

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    def __repr__(self) -> str:
        return record_repr(self, ("lambda_max", "lambda_min", "smallest_nonzero", "null_dim_seen",
                                  "cond_nonzero",
                            "indefinite", "method", "converged"))

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
    (exact null-space count); ``"auto"``: dense for ``p ≤ AUTO.hessian_dense_max_params`` (1500), else Lanczos.
    ``zero_tol`` defaults to ``p·eps·|λ|_max``.
    """
    if not callable(loss):
        raise TypeError(f"loss must be callable(params) -> scalar, got {type(loss).__name__}")
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"unknown method {method!r}; known: 'auto', 'dense', 'lanczos'")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    op = HessianOperator(loss, params)
    p = op.shape[0]
    eps = torch.finfo(op.dtype).eps
    dense_max = policy.AUTO.hessian_dense_max_params
    chosen = method if method != "auto" else ("dense" if p <= dense_max else "lanczos")
    reason = None
    if chosen == "dense":
        Hd = op.to_dense()
        lam = torch.linalg.eigvalsh(0.5 * (Hd + Hd.T)).detach().cpu().double().numpy()
        conv, matvecs = True, op.n_products
    else:
        kk = min(k, max(1, p // 2))
        r = symmetric_lanczos(op, kk, "both", tol=tol, maxiter=maxiter, seed=seed)
        lam = np.sort(np.concatenate([r.smallest.values, r.largest.values]))
        conv, matvecs, reason = bool(r.converged), r.matvecs, r.reason
    lmax_abs = float(np.abs(lam).max(initial=0.0))
    thr = p * eps * lmax_abs if zero_tol is None else float(zero_tol)
    zero = np.abs(lam) <= thr
    nonzero = lam[~zero]
    indefinite = bool(lam[0] < -thr)
    smallest_nz = float(nonzero[np.argmin(np.abs(nonzero))]) if nonzero.size else None
    if smallest_nz is None:
        reason = (reason + "; " if reason else "") + f"all {lam.size} eigenvalues seen are zero (≤ {thr:.3g})"
    cond = None
    if smallest_nz is not None and not indefinite and smallest_nz > 0:
        cond = float(lam[-1]) / smallest_nz
    return HessianExtremes(
        lambda_max=float(lam[-1]), lambda_min=float(lam[0]), smallest_nonzero=smallest_nz,
        null_dim_seen=int(zero.sum()), cond_nonzero=cond, indefinite=indefinite, zero_tol=thr, n_params=p,
        method=("auto->" + chosen) if method == "auto" else chosen, matvecs=int(matvecs), converged=conv,
        reason=reason,
    )
