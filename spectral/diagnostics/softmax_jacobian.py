"""The softmax Jacobian ``J(s) = diag(s) − s sᵀ`` and its spectrum on ``1^⊥`` ([I25], [H24]; MATH.md §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attncond.models.checks import check_positive_float
from attncond.spectral.results import record_repr, to_jsonable

try:  # the shared implementation, if present
    from attncond.models.derivatives import softmax_jacobian as _softmax_jacobian_models
except ImportError:  # pragma: no cover - older trees
    _softmax_jacobian_models = None

# --------------------------------------------------------------------------- softmax Jacobian
def _check_probs(s: Any, name: str = "s") -> torch.Tensor:
    if isinstance(s, np.ndarray):
        s = torch.from_numpy(np.asarray(s, dtype=np.float64))
    if not isinstance(s, torch.Tensor) or not s.is_floating_point():
        raise TypeError(f"{name} must be a floating torch tensor or numpy array, got {type(s).__name__}")
    if s.ndim < 1 or s.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (..., n) with n >= 1, got {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return s

def softmax_jacobian(s: Any) -> torch.Tensor:
    """``J(s) = ∂softmax(z)/∂z = diag(s) − s sᵀ``, batched ``(..., n) -> (..., n, n)`` ([I25], [H24])."""
    s = _check_probs(s)
    if _softmax_jacobian_models is not None:
        return _softmax_jacobian_models(s)
    eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)  # pragma: no cover
    return s.unsqueeze(-1) * (eye - s.unsqueeze(-2))  # pragma: no cover

def _perp_basis(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal basis of ``1^⊥`` in ``R^n`` (``n × (n−1)``), from a QR of ``[1, I]``."""
    A = torch.cat([torch.ones(n, 1, dtype=dtype, device=device), torch.eye(n, dtype=dtype, device=device)], 1)
    Qm, _ = torch.linalg.qr(A)
    return Qm[:, 1:n]

@dataclass(frozen=True, repr=False)
class SoftmaxJacobianSpectrum:
    """Eigenvalues of ``J(s)`` per row ``s`` and the condition number on ``1^⊥`` (MATH.md §4).

    ``eigenvalues``: ``(..., n)`` ascending (the first is the exact-zero direction ``1`` up to
    rounding); ``eigenvalues_perp``: ``(..., n−1)`` of ``J`` restricted to ``1^⊥``;
    ``kappa = λ_n/λ_2`` on ``1^⊥`` (``inf`` where ``λ_2 ≤ zero_tol``, i.e. singular to working
    precision: at least two coefficients of ``s`` below it).
    """

    eigenvalues: np.ndarray
    eigenvalues_perp: np.ndarray
    kappa: np.ndarray
    kappa_median: float
    kappa_max: float
    n_singular: int
    zero_tol: float

    def to_dict(self) -> dict[str, Any]:
        out = {"kappa_median": self.kappa_median, "kappa_max": self.kappa_max,
               "n_singular": self.n_singular, "zero_tol": self.zero_tol, "shape": list(self.eigenvalues.shape)}
        if self.eigenvalues.size <= 20_000:
            out["eigenvalues"] = self.eigenvalues
            out["kappa"] = self.kappa
        return to_jsonable(out)

    def __repr__(self) -> str:
        return record_repr(self, ("kappa_median", "kappa_max", "n_singular", "zero_tol")) [:-1] + \
            f", rows={int(self.kappa.size)}, n={self.eigenvalues.shape[-1]})"

def softmax_jacobian_spectrum(s: Any, *, zero_tol: float | None = None,
                              atol_rows: float = 1e-8) -> SoftmaxJacobianSpectrum:
    """Spectrum of ``J(s) = diag(s) − s sᵀ`` for probability rows ``s`` of shape ``(..., n)``.

    Eigenvalues interlace the sorted ``s`` (``0 = λ_1 ≤ s_(1) ≤ λ_2 ≤ … ≤ λ_n ≤ s_(n)``);
    the condition number on ``1^⊥`` is ``κ = λ_n/λ_2``, computed from the eigenvalues of
    ``Pᵀ J P`` with ``P`` an orthonormal basis of ``1^⊥`` (``J`` leaves ``1^⊥`` invariant), so
    the zero eigenvalue on ``1`` is removed exactly rather than by sorting. ``zero_tol``
    (default ``n·eps·max λ``) decides when ``λ_2`` is numerically zero. Rows must be
    non-negative and sum to 1 within ``atol_rows·n``.
    """
    s = _check_probs(s)
    n = s.shape[-1]
    if n < 2:
        raise ValueError(f"s must have n >= 2 entries per row for a condition number on 1^⊥, got n={n}")
    tol_rows = check_positive_float("atol_rows", atol_rows) * n
    if bool((s < -tol_rows).any()) or bool(((s.sum(-1) - 1).abs() > tol_rows).any()):
        raise ValueError("s must hold probability rows (non-negative, summing to 1); "
                         f"worst row-sum error {float((s.sum(-1) - 1).abs().max()):.3g}")
    J = softmax_jacobian(s)
    lam = torch.linalg.eigvalsh(J)
    P = _perp_basis(n, s.dtype, s.device)
    lp = torch.linalg.eigvalsh(P.T @ J @ P)
    eps = torch.finfo(s.dtype).eps
    top = lp[..., -1]
    thr = (n * eps * top.clamp_min(0)) if zero_tol is None else torch.full_like(top, float(zero_tol))
    small = lp[..., 0]
    kappa = torch.where(small > thr, top / small.clamp_min(torch.finfo(s.dtype).tiny),
                        torch.full_like(top, math.inf))
    k = kappa.detach().cpu().numpy()
    return SoftmaxJacobianSpectrum(
        eigenvalues=lam.detach().cpu().numpy(), eigenvalues_perp=lp.detach().cpu().numpy(), kappa=k,
        kappa_median=float(np.median(k)), kappa_max=float(np.max(k)), n_singular=int(np.isinf(k).sum()),
        zero_tol=float(thr.max()),
    )
