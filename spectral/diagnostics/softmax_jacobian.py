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
        if np.iscomplexobj(s):
            raise TypeError(f"{name} must be real probabilities, got a complex array of dtype {s.dtype}")
        if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
            raise TypeError(f"{name} must be a floating array of probabilities, got dtype {s.dtype}")
        s = torch.from_numpy(np.asarray(s, dtype=np.float64))
    if isinstance(s, torch.Tensor) and s.is_complex():
        raise TypeError(f"{name} must be real probabilities, got a complex tensor of dtype {s.dtype}")
    if not isinstance(s, torch.Tensor) or not s.is_floating_point():
        raise TypeError(f"{name} must be a floating torch tensor or numpy array, got "
                        f"{getattr(s, 'dtype', type(s).__name__)}")
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

def check_nonneg_float(name: str, value: Any) -> float:
    """``value`` as a finite float ``≥ 0`` (tolerances such as ``zero_tol``), else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a finite number >= 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v

def _perp_basis(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal basis of ``1^⊥`` in ``R^n`` (``n × (n−1)``), from a QR of ``[1, I]``."""
    A = torch.cat([torch.ones(n, 1, dtype=dtype, device=device), torch.eye(n, dtype=dtype, device=device)], 1)
    Qm, _ = torch.linalg.qr(A)
    return Qm[:, 1:n]

@dataclass(frozen=True, repr=False)
class SoftmaxJacobianSpectrum:
    """Eigenvalues of ``J(s)`` per row ``s`` and the condition number on ``1^⊥`` (MATH.md §4).

    ``eigenvalues``: ``(..., n)`` ascending, the first the exact zero of the direction ``1``;
    ``eigenvalues_perp``: ``(..., n−1)`` of ``J`` restricted to ``1^⊥``, each with relative error at
    most ``rel_error_bound`` (secular equation, see :func:`softmax_jacobian_spectrum`);
    ``kappa = λ_n/λ_2`` on ``1^⊥`` (``inf`` where ``λ_2 ≤ zero_tol``; with the default
    ``zero_tol=0`` only exactly singular rows: a zero entry ``s_k = 0`` gives ``J e_k = 0`` and, with
    ``J 1 = 0``, a null vector ``1 − n e_k`` in ``1^⊥``) and ``kappa_interval`` its
    bounds ``(..., 2)`` from the relative error bound (``[0, inf]`` on rows with subnormal entries,
    where relative accuracy is not claimed).
    """

    eigenvalues: np.ndarray
    eigenvalues_perp: np.ndarray
    kappa: np.ndarray
    kappa_median: float
    kappa_max: float
    n_singular: int
    zero_tol: float
    kappa_interval: np.ndarray | None = None
    rel_error_bound: float = 0.0
    method: str = "secular"

    def to_dict(self) -> dict[str, Any]:
        out = {"kappa_median": self.kappa_median, "kappa_max": self.kappa_max, "n_singular": self.n_singular,
               "zero_tol": self.zero_tol, "shape": list(self.eigenvalues.shape),
               "rel_error_bound": self.rel_error_bound, "method": self.method}
        if self.eigenvalues.size <= 20_000:
            out["eigenvalues"] = self.eigenvalues
            out["kappa"] = self.kappa
            out["kappa_interval"] = self.kappa_interval
        return to_jsonable(out)

    def __repr__(self) -> str:
        return record_repr(self, ("kappa_median", "kappa_max", "n_singular", "zero_tol")) [:-1] + \
            f", rows={int(self.kappa.size)}, n={self.eigenvalues.shape[-1]})"

#: Newton steps (safeguarded by bisection) per secular root; 64-bit bisection alone needs < 1100
SECULAR_MAXIT = 200

def _secular_F(tau: np.ndarray, dl: np.ndarray, w: np.ndarray, other: np.ndarray,
               w_o: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F(τ) = W_o − τ Σ_{i≠o} w_i/(δ_i − τ)``, ``F'(τ) = −Σ_{i≠o} (w_i/(δ_i−τ))(δ_i/(δ_i−τ))`` and the
    rounding scale ``W_o + |τ| Σ |w_i/(δ_i − τ)|`` of ``F``."""
    den = np.where(other, dl - tau[..., None], 1.0)
    q = np.where(other, w / den, 0.0)
    F = w_o - tau * q.sum(-1)
    dF = -(q * np.where(other, dl / den, 0.0)).sum(-1)
    return F, dF, w_o + np.abs(tau) * np.abs(q).sum(-1)

def _secular_roots(d: np.ndarray) -> np.ndarray:
    """Eigenvalues on ``1^⊥`` of ``diag(d) − d dᵀ`` for sorted rows ``d`` (``(R, n)``, float64, sum 1).

    With ``Σ d = 1``, ``det(J − λI) = −λ·Π(d_i − λ)·g(λ)``, ``g(λ) = Σ_i d_i/(d_i − λ)`` (the ``1 −``
    of the rank-one secular equation cancels exactly). ``g`` increases from ``−∞`` to ``+∞`` on each
    interval ``(d_k, d_{k+1})`` of distinct positive poles: one root each (interlacing). Tied poles
    give the eigenvalue ``d_k`` itself, zero entries the eigenvalue 0. Each root is found in the
    shifted variable ``τ = λ − d_o`` about the nearer pole ``d_o`` (chosen by the sign of ``g`` at the
    midpoint), with the gaps ``δ_i − τ = (d_i − d_o) − τ`` formed directly (as LAPACK ``dlaed4``), as the
    zero of ``F(τ) = −τ·g = W_o − τ Σ_{i≠o} w_i/(δ_i − τ)`` by Newton's method safeguarded by a
    sign-bracket and bisection. ``λ = d_o + τ`` has no cancellation (``|τ| ≤ gap/2``).
    """
    R, n = d.shape
    lo, hi = d[:, :-1], d[:, 1:]
    lam = lo.copy()  # ties (lo == hi) -> lo; zero poles -> 0
    act = (lo < hi) & (lo > 0)
    if not act.any():
        return lam
    ri, ki = np.nonzero(act)
    D = d[ri]  # (K, n)
    a_, b_ = lo[ri, ki], hi[ri, ki]
    half = 0.5 * (b_ - a_)
    gmid = (D / ((D - a_[:, None]) - half[:, None])).sum(-1)
    use_lo = gmid >= 0
    o = np.where(use_lo, a_, b_)
    dl = D - o[:, None]
    same = D == o[:, None]
    other = ~same
    w_o = np.where(same, D, 0.0).sum(-1)
    a = np.where(use_lo, 0.0, -half)  # bracket [a, b] in τ with F(a)·F(b) ≤ 0
    b = np.where(use_lo, half, 0.0)
    sa = np.where(use_lo, 1.0, -1.0)  # sign of F at a
    tau = np.where(use_lo, a + 0.5 * half, b - 0.5 * half)
    F0, dF0, _ = _secular_F(np.zeros_like(tau), dl, D, other, w_o)
    t0 = -F0 / np.where(dF0 != 0, dF0, np.inf)
    tau = np.where((t0 > a) & (t0 < b), t0, tau)
    eps = np.finfo(np.float64).eps
    idx = np.arange(tau.size)  # roots still iterating (converged ones drop out)
    for _ in range(SECULAR_MAXIT):
        if idx.size == 0:
            break
        t = tau[idx]
        F, dF, Fs = _secular_F(t, dl[idx], D[idx], other[idx], w_o[idx])
        left = np.sign(F) == sa[idx]
        ai = np.where(left, t, a[idx])
        bi = np.where(left, b[idx], t)
        a[idx], b[idx] = ai, bi
        with np.errstate(divide="ignore", invalid="ignore"):
            tn = t - F / dF
        ok = np.isfinite(tn) & (tn > ai) & (tn < bi)
        aa, ab = np.abs(ai), np.abs(bi)
        geo = (np.sign(ai) == np.sign(bi)) & (ai != 0) & (np.maximum(aa, ab) > 4 * np.minimum(aa, ab))
        bis = np.where(geo, np.sign(ai) * np.sqrt(aa) * np.sqrt(ab), 0.5 * (ai + bi))
        tn = np.where(ok, tn, bis)
        at_root = np.abs(F) <= 4 * n * eps * Fs  # F is rounding noise: t is a root
        tn = np.where(at_root, t, tn)
        conv = (np.abs(tn - t) <= 2 * eps * np.abs(tn)) | at_root | (np.nextafter(ai, bi) >= bi)
        tau[idx] = tn
        idx = idx[~conv]
    lam[ri, ki] = o + tau
    return lam

def softmax_jacobian_spectrum(s: Any, *, zero_tol: float | None = None,
                              atol_rows: float = 1e-8) -> SoftmaxJacobianSpectrum:
    """Spectrum of ``J(s) = diag(s) − s sᵀ`` for probability rows ``s`` of shape ``(..., n)``.

    Eigenvalues interlace the sorted ``s`` (``0 = λ_1 ≤ s_(1) ≤ λ_2 ≤ … ≤ λ_n ≤ s_(n)``); the
    eigenvalue 0 belongs to the direction ``1`` (exactly, since ``Σ s = 1``) and ``J`` leaves
    ``1^⊥`` invariant. The ``n − 1`` eigenvalues on ``1^⊥`` are the roots of the secular equation
    ``Σ_i s_i/(s_i − λ) = 0`` (one per interval of the sorted ``s``, see :func:`_secular_roots`),
    computed in float64 with high *relative* accuracy — every eigenvalue, also ``λ_2 ≈ s_(1)``
    of a sharp row, to a few ``eps`` relative (``rel_error_bound = 8·n·eps``, a rounding model
    validated against a 60-digit mpmath reference for ``κ`` up to ``1e30`` and entries down to
    the smallest normal number). Rows are normalised by their sum first (``s/Σs``; the rows
    must be non-negative and sum to 1 within ``atol_rows·n``). ``κ = λ_n/λ_2`` on ``1^⊥``;
    ``zero_tol`` (default ``0``: only exact zeros, i.e. two zero entries) decides when ``λ_2``
    counts as zero (``κ = inf``).
    """
    s = _check_probs(s)
    n = s.shape[-1]
    if n < 2:
        raise ValueError(f"s must have n >= 2 entries per row for a condition number on 1^⊥, got n={n}")
    tol_rows = check_positive_float("atol_rows", atol_rows) * n
    zt = 0.0 if zero_tol is None else check_nonneg_float("zero_tol", zero_tol)
    if bool((s < -tol_rows).any()) or bool(((s.sum(-1) - 1).abs() > tol_rows).any()):
        raise ValueError("s must hold probability rows (non-negative, summing to 1); "
                         f"worst row-sum error {float((s.sum(-1) - 1).abs().max()):.3g}")
    x = np.clip(s.detach().cpu().double().numpy().reshape(-1, n), 0.0, None)
    x = np.sort(x / x.sum(-1, keepdims=True), axis=-1)
    chunk = max(1, 2_000_000 // (n * n))
    lp = np.concatenate([_secular_roots(x[a:a + chunk]) for a in range(0, x.shape[0], chunk)])
    eps = np.finfo(np.float64).eps
    rel = 8.0 * n * eps
    top, small = lp[:, -1], lp[:, 0]
    kappa = np.where(small > zt, top / np.where(small > 0, small, 1.0), np.inf)
    sub = ((x > 0) & (x < np.finfo(np.float64).tiny)).any(-1)
    k_lo = np.where(np.isinf(kappa) | sub, np.where(sub, 0.0, np.inf), kappa * (1 - rel) / (1 + rel))
    k_hi = np.where(np.isinf(kappa) | sub, np.inf, kappa * (1 + rel) / (1 - rel))
    shape = tuple(s.shape[:-1])
    lam = np.concatenate([np.zeros((lp.shape[0], 1)), lp], axis=-1)
    return SoftmaxJacobianSpectrum(
        eigenvalues=lam.reshape(*shape, n), eigenvalues_perp=lp.reshape(*shape, n - 1),
        kappa=kappa.reshape(shape), kappa_median=float(np.median(kappa)), kappa_max=float(np.max(kappa)),
        n_singular=int(np.isinf(kappa).sum()), zero_tol=zt,
        kappa_interval=np.stack([k_lo, k_hi], -1).reshape(*shape, 2), rel_error_bound=rel,
    )
