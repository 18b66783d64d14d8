r"""Conditioning diagnostics of the attention models (MATH.md §4, §5 claims 1, 3, 6).

=====================================  ==========================================================
function                               quantity
=====================================  ==========================================================
:func:`beta_paper`                     ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Thm. 1, reconstructed)
:func:`pl_constant`                    ``μ = λ_min(J Jᵀ)`` exactly (structured NTK Gram), the
                                       corrected bound ``min_h σ²_min(W^O_h) σ²_min(B0ᵀ)``, ``β``,
                                       and which of the two bounds holds on the instance
:func:`attention_output_matrix`        ``κ(Z)``, ``σ_min``, ``σ_max`` of ``Z`` ([Q25]) with certified
                                       intervals, and Weyl's ``σ_min(Z^res) ≥ σ_min(X) − ‖AXW_V‖``
:func:`softmax_jacobian`               ``J(s) = diag(s) − s sᵀ`` (batched)
:func:`softmax_jacobian_spectrum`      eigenvalues of ``J(s)`` and ``κ = λ_n/λ_2`` on ``1^⊥``
:func:`hessian_extremes`               extreme Hessian eigenvalues by Lanczos on HVPs; smallest
                                       non-zero eigenvalue and the null-space dimension seen
:func:`attention_entropy`,             mean row entropy and fraction of coefficients ``≤ ε`` per head
:func:`attention_sparsity`
:func:`diagnose`                       all that apply to a model, as a :class:`Diagnostics`
=====================================  ==========================================================

Reconstructed/explicit choices (all switchable by argument):

* ``σ²_min(B0ᵀ)`` is ``λ_min(B0 B0ᵀ)``, i.e. the ``Nn``-th singular value squared: it is 0
  whenever ``HD < Nn`` (``B0`` cannot have full row rank).
* For ``d_out > 1`` the corrected bound uses ``σ_min(W^O_h)`` (the ``d_out``-th singular value
  of the ``d × d_out`` block); for ``d_out = 1`` that is ``‖W^O_h‖`` as in MATH.md.
* ``μ`` is "numerically zero" when ``μ ≤ zero_threshold = m·eps·‖G‖`` (``m`` the Gram size):
  the backward-error level of a symmetric eigensolver. ``attainable_accuracy = ‖G‖·eps``.
* A bound "holds" when ``bound ≤ μ + zero_threshold``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from attncond.models import AttentionBlock, MultiHeadAttention, kernel_variant
from attncond.models._checks import check_positive_float

from .estimate import SpectralEstimate, eigen_extremes, extreme_singular_values
from .jacobian import HessianOperator
from .lanczos import certify_eigvecs, symmetric_lanczos
from .operators import as_operator
from .results import to_jsonable
from .structured import B0, NTKGram, ntk_gram
from .structured import attention_output_matrix as _z_matrix

try:  # the shared implementation, if present
    from attncond.models.derivatives import softmax_jacobian as _softmax_jacobian_models
except ImportError:  # pragma: no cover - older trees
    _softmax_jacobian_models = None

__all__ = [
    "BetaPaper", "PLConstant", "ZConditioning", "SoftmaxJacobianSpectrum", "HessianExtremes",
    "AttentionStats", "DiagnosticRow", "Diagnostics",
    "beta_paper", "pl_constant", "attention_output_matrix", "softmax_jacobian",
    "softmax_jacobian_spectrum", "hessian_extremes", "attention_entropy", "attention_sparsity",
    "attention_stats", "diagnose", "gram_extremes",
]

_NAN = float("nan")
#: ``gram_extremes(method="auto")`` takes a full ``eigh`` up to this size, Cholesky + Lanczos above.
DENSE_GRAM_MAX = 256


def _f(x: Any) -> str:
    if x is None:
        return "None"
    if isinstance(x, (float, np.floating)):
        return "nan" if math.isnan(x) else f"{x:.6g}"
    return repr(x)


def _repr(obj: Any, keys: Sequence[str]) -> str:
    return f"{type(obj).__name__}(" + ", ".join(f"{k}={_f(getattr(obj, k))}" for k in keys) + ")"


def _to_dict(obj: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    return to_jsonable({k: getattr(obj, k) for k in obj.__dataclass_fields__ if k not in skip})


# --------------------------------------------------------------------------- B0 and beta
@dataclass(frozen=True, repr=False)
class BetaPaper:
    """``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Theorem 1 as stated; MATH.md §4).

    ``sigma_min_B0T = sqrt(λ_min(B0 B0ᵀ))`` (0 when ``HD < Nn``); ``sigma_min_WO`` is the
    ``d_out``-th singular value of ``W^O`` (``‖W^O‖`` for ``d_out = 1``).
    """

    value: float
    sigma_min_WO: float
    sigma_min_B0T: float
    B0_shape: tuple[int, int]
    full_row_rank_possible: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def __repr__(self) -> str:
        return _repr(self, ("value", "sigma_min_WO", "sigma_min_B0T", "B0_shape", "reason"))


def _check_mh(model: Any) -> MultiHeadAttention:
    if not isinstance(model, MultiHeadAttention):
        raise TypeError(f"model must be a models.MultiHeadAttention, got {type(model).__name__}")
    return model


def _sigma_min_B0T(B: torch.Tensor) -> float:
    m, p = B.shape
    if p < m:
        return 0.0
    return float(torch.linalg.svdvals(B)[m - 1])


def _sigma_dout(W: torch.Tensor) -> float:
    """``d_out``-th singular value of a ``(k, d_out)`` block (0 if ``k < d_out``)."""
    k, dout = W.shape
    if k < dout:
        return 0.0
    return float(torch.linalg.svdvals(W.detach())[dout - 1])


def beta_paper(model: MultiHeadAttention, X: Any) -> BetaPaper:
    """The paper's constant ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Thm. 1, MATH.md §4)."""
    model = _check_mh(model)
    B = B0(model, X)
    s_b = _sigma_min_B0T(B)
    s_o = _sigma_dout(model.W_O)
    m, p = B.shape
    reason = None if p >= m else (f"HD={p} < Nn={m}: B0 cannot have full row rank, "
                                  "σ_min(B0ᵀ)=0 and β=0")
    return BetaPaper(s_o**2 * s_b**2, s_o, s_b, (m, p), p >= m, reason)


# --------------------------------------------------------------------------- PL constant
def gram_extremes(G: torch.Tensor, method: str = "auto", *, tol: float = 1e-10,
                  seed: int = 0) -> dict[str, Any]:
    """``λ_min`` and ``λ_max`` of a PSD Gram matrix ``G`` with Bauer–Fike intervals.

    ``method``: ``"dense"`` (``eigh`` via :func:`spectral.eigen_extremes`), ``"cholesky-lanczos"``
    (Lanczos on ``G⁻¹`` through a Cholesky factor for ``λ_min``, Lanczos on ``G`` for
    ``λ_max``; the Ritz vectors are certified on ``G`` itself: ``θ = yᵀGy``,
    ``|λ − θ| ≤ ‖Gy − θy‖ + δ``) or ``"auto"`` (dense up to ``DENSE_GRAM_MAX = 256``, else
    cholesky-lanczos, whose ``m³/3`` flops beat the ``≈ 9m³`` of ``eigh`` with vectors; a
    failed Cholesky — ``G`` not numerically definite — falls back to dense).
    """
    if method not in ("auto", "dense", "cholesky-lanczos"):
        raise ValueError(f"unknown method {method!r}; known: 'auto', 'dense', 'cholesky-lanczos'")
    if not isinstance(G, torch.Tensor) or G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square 2-D tensor, got {getattr(G, 'shape', type(G))}")
    m = G.shape[0]
    chosen = method if method != "auto" else ("dense" if m <= DENSE_GRAM_MAX else "cholesky-lanczos")
    if chosen == "cholesky-lanczos":
        L, info = torch.linalg.cholesky_ex(G)
        if int(info) == 0:
            LT = L.mT.contiguous()

            def inv(v: torch.Tensor) -> torch.Tensor:  # G⁻¹v = L⁻ᵀ L⁻¹ v (two triangular solves;
                # several times faster than torch.cholesky_solve for a few right-hand sides)
                w = torch.linalg.solve_triangular(L, v.reshape(m, -1), upper=False)
                return torch.linalg.solve_triangular(LT, w, upper=True).reshape(v.shape)

            Gop = as_operator(G)
            inv_op = as_operator((inv, inv, (m, m)), dtype=G.dtype)
            r_max = symmetric_lanczos(Gop, 1, "largest", tol=tol, seed=seed)
            lmax_hint = float(r_max.lambda_max)
            r_inv = symmetric_lanczos(inv_op, 1, "largest", tol=tol, seed=seed)
            cmin = certify_eigvecs(Gop, r_inv.largest.vectors[:, :1], end="smallest", lam_max_hint=lmax_hint)
            theta = float(cmin["values"][0])
            n_inv = r_inv.matvecs
            if float(cmin["rho"][0]) > max(tol * abs(theta), float(cmin["delta"])) and lmax_hint > 0:
                # Lanczos on G⁻¹ stops at ‖G⁻¹y − νy‖ ≤ tol·ν, which only gives
                # ‖Gy − θy‖ ≲ λ_max·tol; one warm-started refinement to tol·θ/λ_max makes the
                # Bauer–Fike interval on G itself tol-relative
                r_inv2 = symmetric_lanczos(inv_op, 1, "largest", tol=max(tol * abs(theta) / lmax_hint, 1e-15),
                                           seed=seed, v0=r_inv.largest.vectors[:, 0])
                n_inv += r_inv2.matvecs
                c2 = certify_eigvecs(Gop, r_inv2.largest.vectors[:, :1], end="smallest", lam_max_hint=lmax_hint)
                if float(c2["rho"][0]) < float(cmin["rho"][0]):
                    cmin, r_inv = c2, r_inv2
            cmax = certify_eigvecs(Gop, r_max.largest.vectors[:, :1], end="largest", lam_max_hint=lmax_hint)
            return {
                "lambda_min": float(cmin["values"][0]),
                "lambda_min_interval": (float(cmin["lower"][0]), float(cmin["upper"][0])),
                "lambda_max": float(cmax["values"][0]),
                "lambda_max_interval": (float(cmax["lower"][0]), float(cmax["upper"][0])),
                "method": "cholesky-lanczos",
                "converged": bool(r_inv.converged and r_max.converged),
                "matvecs": int(n_inv + r_max.matvecs + 2),
            }
        chosen = "dense"
    est = eigen_extremes(G, method="dense", tol=tol)
    return {
        "lambda_min": est.lambda_min, "lambda_min_interval": est.lambda_min_interval,
        "lambda_max": est.lambda_max, "lambda_max_interval": est.lambda_max_interval,
        "method": "dense" if method != "cholesky-lanczos" else "dense (Cholesky failed)",
        "converged": est.converged, "matvecs": est.matvecs,
    }


@dataclass(frozen=True, repr=False)
class PLConstant:
    """Exact PL constant ``μ = λ_min(J Jᵀ)`` with the bounds of MATH.md §4 side by side.

    ``mu_interval`` is a Bauer–Fike interval on the computed Gram; ``numerically_zero`` when
    ``μ ≤ zero_threshold``. ``corrected_bound = min_h σ²_min(W^O_h) σ²_min(B0ᵀ)`` (per-head
    value maps) or ``σ²_min(W^O) σ²_min(B0ᵀ)`` (joint), defined when ``W_V`` is trained;
    ``beta_paper`` is the paper's ``β``. ``holds`` maps each bound to ``bound ≤ μ`` (up to
    ``zero_threshold``) or ``None`` when undefined. ``value_block_mu = λ_min(J_V J_Vᵀ)`` is
    computed for the joint value map (where it equals ``σ²_min(W^O) σ²_min(B0ᵀ)`` exactly).
    """

    mu: float
    mu_interval: tuple[float, float]
    lambda_max: float
    numerically_zero: bool
    attainable_accuracy: float
    zero_threshold: float
    n_outputs: int
    n_params: int
    rank_limited: bool
    route: str
    eig_method: str
    corrected_bound: float | None
    beta_paper: float | None
    holds: dict[str, bool | None]
    value_param: str | None
    value_block_mu: float | None
    seconds: float
    notes: tuple[str, ...] = ()
    gram: NTKGram | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = _to_dict(self, skip=("gram",))
        out["gram"] = None if self.gram is None else self.gram.to_dict()
        return out

    def __repr__(self) -> str:
        return _repr(self, ("mu", "mu_interval", "lambda_max", "numerically_zero", "corrected_bound",
                            "beta_paper", "holds", "route", "eig_method", "n_outputs", "n_params"))


def pl_constant(
    model: Any,
    X: Any,
    trainable: Sequence[str] | None = None,
    *,
    eig_method: str = "auto",
    value_block: bool | None = None,
    tol: float = 1e-10,
) -> PLConstant:
    r"""``μ = λ_min(J Jᵀ)``, ``J = ∂ vec(model(X))/∂θ_M`` (MATH.md §4, "Exact PL constant").

    The Gram is the closed form of :func:`spectral.structured.ntk_gram` (batched VJPs when no
    closed form exists; the route is recorded). Its eigenvalue *is* ``μ`` (a squared quantity,
    so nothing is lost by squaring); the accuracy attainable is ``‖G‖·eps``.
    ``μ > 0`` needs ``p ≥ N·n·d_out`` (``rank_limited`` otherwise). For a
    :class:`models.MultiHeadAttention` the corrected bound
    ``J Jᵀ ⪰ J_V J_Vᵀ = Σ_h (B_hB_hᵀ)⊗(W^{O}_hᵀW^O_h) ⪰ min_h σ²_min(W^O_h) B0B0ᵀ`` and the
    paper's ``β`` are reported with whether each holds.

    ``value_block``: also compute ``λ_min(J_V J_Vᵀ)`` (default: for the joint value map only,
    where ``λ_min(J_VJ_Vᵀ) = σ²_min(W^O)σ²_min(B0ᵀ)`` is exact).
    """
    if value_block is not None and not isinstance(value_block, bool):
        raise TypeError(f"value_block must be a bool or None, got {value_block!r}")
    t0 = time.perf_counter()
    ng = ntk_gram(model, X, trainable)
    G = ng.gram
    ex = gram_extremes(G, eig_method, tol=tol)
    m = G.shape[0]
    eps = torch.finfo(G.dtype).eps
    gnorm = max(abs(ex["lambda_max"]), 0.0)
    attainable = gnorm * eps
    zero_thr = m * eps * gnorm
    mu = ex["lambda_min"]
    notes: list[str] = []
    rank_limited = ng.n_params < m
    if rank_limited:
        notes.append(f"p={ng.n_params} < m={m} outputs: J Jᵀ is singular by rank, μ = 0")
    if ng.reason:
        notes.append(ng.reason)
    corrected = beta = vb_mu = None
    holds: dict[str, bool | None] = {"corrected_bound": None, "beta_paper": None}
    vp = getattr(model, "value_param", None)
    if isinstance(model, MultiHeadAttention):
        bp = beta_paper(model, X)
        beta = bp.value
        if bp.reason:
            notes.append(bp.reason)
        if "W_V" in ng.trainable:
            if vp == "per_head":
                d = model.d
                so = min(_sigma_dout(model.W_O[h * d:(h + 1) * d]) for h in range(model.H))
            else:
                so = _sigma_dout(model.W_O)
            corrected = so**2 * bp.sigma_min_B0T**2
            holds["corrected_bound"] = bool(corrected <= mu + zero_thr)
        else:
            notes.append("W_V is not trained: the corrected bound (from J_V J_Vᵀ) does not apply")
        holds["beta_paper"] = bool(beta <= mu + zero_thr)
        if value_block or (value_block is None and vp == "joint" and "W_V" in ng.trainable):
            gv = ntk_gram(model, X, ("W_V",)).gram
            vb_mu = gram_extremes(gv, eig_method, tol=tol)["lambda_min"]
    else:
        notes.append(f"B0, β and the corrected bound are defined for the [S24] MultiHeadAttention, "
                     f"not {type(model).__name__}")
    return PLConstant(
        mu=mu, mu_interval=tuple(ex["lambda_min_interval"]), lambda_max=ex["lambda_max"],
        numerically_zero=bool(mu <= zero_thr), attainable_accuracy=attainable, zero_threshold=zero_thr,
        n_outputs=m, n_params=ng.n_params, rank_limited=rank_limited, route=ng.route,
        eig_method=ex["method"], corrected_bound=corrected, beta_paper=beta, holds=holds,
        value_param=vp, value_block_mu=vb_mu, seconds=time.perf_counter() - t0, notes=tuple(notes),
        gram=ng,
    )


# --------------------------------------------------------------------------- Z of [Q25]
@dataclass(frozen=True, repr=False)
class ZConditioning:
    """``κ(Z)``, ``σ_min(Z)``, ``σ_max(Z)`` with certified intervals ([Q25], MATH.md §4).

    ``weyl_bound = σ_min(X) − ‖A X W_V‖₂`` (stacked over samples) is a lower bound for
    ``σ_min(Z^res)`` (Weyl); it is reported for the residual ``Z`` only. Singular values are
    over ``min(Nn, D)`` (``Z ∈ R^{Nn×D}``).
    """

    residual: bool
    sigma_min: float
    sigma_min_interval: tuple[float, float]
    sigma_max: float
    sigma_max_interval: tuple[float, float]
    cond: float
    cond_interval: tuple[float, float]
    rank_deficient: bool
    weyl_bound: float | None
    weyl_holds: bool | None
    sigma_min_X: float
    norm_AXWV: float
    shape: tuple[int, int]
    reason: str | None
    estimate: SpectralEstimate | None = field(default=None, compare=False)
    Z: torch.Tensor | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, skip=("estimate", "Z"))

    def __repr__(self) -> str:
        return _repr(self, ("residual", "cond", "sigma_min", "sigma_max", "weyl_bound", "weyl_holds",
                            "shape", "reason"))


def attention_output_matrix(block: AttentionBlock, X: Any, residual: bool = True, *,
                            tol: float = 1e-10) -> ZConditioning:
    """Conditioning of ``Z = [Z_1; …; Z_N]``, ``Z_i = A_i X_i W_V (+ X_i)`` ([Q25]).

    Certified intervals from :func:`spectral.extreme_singular_values`; the Weyl bound
    ``σ_min(Z^res) ≥ σ_min(X) − ‖AXW_V‖`` (MATH.md §4) is computed from the same solver.
    """
    Z = _z_matrix(block, X, residual)
    Xt = block.check_inputs(X)
    Xs = Xt.reshape(-1, block.D)
    est = extreme_singular_values(Z, tol=tol)
    sx = extreme_singular_values(Xs, which="min", tol=tol).sigma_min
    nax = extreme_singular_values(_z_matrix(block, Xt, False), which="max", tol=tol).sigma_max
    weyl = sx - nax if residual else None
    reason = est.reason
    if est.rank_deficient:
        reason = (reason + "; " if reason else "") + "Z is singular to working precision: κ = inf"
    holds = None if weyl is None else bool(est.sigma_min_interval[1] >= weyl - 10 * Z.shape[0] *
                                           torch.finfo(Z.dtype).eps * max(est.sigma_max, 1.0))
    return ZConditioning(
        residual=residual, sigma_min=est.sigma_min, sigma_min_interval=est.sigma_min_interval,
        sigma_max=est.sigma_max, sigma_max_interval=est.sigma_max_interval, cond=est.cond,
        cond_interval=est.cond_interval, rank_deficient=est.rank_deficient, weyl_bound=weyl,
        weyl_holds=holds, sigma_min_X=sx, norm_AXWV=nax, shape=tuple(Z.shape), reason=reason,
        estimate=est, Z=Z,
    )


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
        return _repr(self, ("kappa_median", "kappa_max", "n_singular", "zero_tol")) [:-1] + \
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
        return _to_dict(self)

    def __repr__(self) -> str:
        return _repr(self, ("lambda_max", "lambda_min", "smallest_nonzero", "null_dim_seen", "cond_nonzero",
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
    (exact null-space count); ``"auto"``: dense for ``p ≤ 1500``, else Lanczos.
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
    chosen = method if method != "auto" else ("dense" if p <= 1500 else "lanczos")
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


# --------------------------------------------------------------------------- attention statistics
def _check_S(S: Any) -> torch.Tensor:
    if not isinstance(S, torch.Tensor) or not S.is_floating_point():
        raise TypeError(f"S must be a floating torch tensor, got {type(S).__name__}")
    if S.ndim == 3:
        S = S.unsqueeze(1)
    if S.ndim != 4 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"S must have shape (N, H, n, n) or (N, n, n), got {tuple(S.shape)}")
    if not bool(torch.isfinite(S).all()):
        raise ValueError("S contains NaN or inf")
    return S


def _rows(S: torch.Tensor, normalize: bool) -> torch.Tensor:
    if bool((S < 0).any()):
        raise ValueError("S has negative entries: its rows are not distributions (entropy undefined)")
    sums = S.sum(-1, keepdim=True)
    if normalize:
        if bool((sums <= 0).any()):
            raise ValueError("S has an all-zero row: cannot normalise it to a distribution")
        return S / sums
    if bool(((sums - 1).abs() > 1e-8 * S.shape[-1]).any()):
        raise ValueError("S rows do not sum to 1; pass normalize=True to normalise them first")
    return S


def attention_entropy(S: Any, *, normalize: bool = False) -> np.ndarray:
    """Mean row entropy ``−Σ_j S_aj log S_aj`` (nats) per head, shape ``(H,)``.

    ``log n`` for uniform attention, 0 for one-hot rows. ``normalize=True`` first divides each
    row by its sum (for non-negative kernels that are not row-stochastic, e.g. Gaussian).
    """
    P = _rows(_check_S(S), normalize)
    ent = -(torch.where(P > 0, P * torch.log(P), torch.zeros_like(P))).sum(-1)
    return ent.mean(dim=(0, 2)).detach().cpu().numpy()


def attention_sparsity(S: Any, eps: float = 1e-3, *, normalize: bool = False) -> np.ndarray:
    """Fraction of attention coefficients ``≤ eps`` per head, shape ``(H,)`` (MATH.md §4: ``k``
    coefficients ``≤ ε`` force ``k − 1`` eigenvalues of ``J(s)`` ``≤ ε``)."""
    eps = check_positive_float("eps", eps)
    P = _rows(_check_S(S), normalize)
    return (P <= eps).to(P.dtype).mean(dim=(0, 2, 3)).detach().cpu().numpy()


@dataclass(frozen=True, repr=False)
class AttentionStats:
    """Per-head attention entropy (nats), entropy / log n, and sparsity (fraction ``≤ eps``)."""

    entropy: np.ndarray
    normalized_entropy: np.ndarray
    sparsity: np.ndarray
    eps: float
    rows_normalized: bool

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def __repr__(self) -> str:
        return (f"AttentionStats(entropy={np.round(self.entropy, 4).tolist()}, "
                f"sparsity={np.round(self.sparsity, 4).tolist()}, eps={self.eps:g})")


def attention_stats(S: Any, eps: float = 1e-3, *, normalize: bool = False) -> AttentionStats:
    """:func:`attention_entropy` and :func:`attention_sparsity` together."""
    S = _check_S(S)
    ent = attention_entropy(S, normalize=normalize)
    n = S.shape[-1]
    return AttentionStats(ent, ent / math.log(n) if n > 1 else np.zeros_like(ent),
                          attention_sparsity(S, eps, normalize=normalize), float(eps), normalize)


# --------------------------------------------------------------------------- diagnose
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
        return _to_dict(self)

    def __repr__(self) -> str:
        v = _f(self.value) if self.defined else "undefined"
        return f"DiagnosticRow({self.key}: {v}" + (f", note={self.note!r})" if self.note else ")")


def _undef(key: str, label: str, reason: str) -> DiagnosticRow:
    return DiagnosticRow(key, label, None, None, False, reason)


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
        return out

    def table(self) -> str:
        """Plain-text table: diagnostic, value, certified interval, note."""
        head = ("diagnostic", "value", "interval", "note")
        cells = []
        for r in self.rows:
            val = "undefined" if not r.defined else (
                ("yes" if r.value else "no") if isinstance(r.value, bool) else _f(r.value))
            iv = "" if r.interval is None else f"[{_f(r.interval[0])}, {_f(r.interval[1])}]"
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


def _safe(rows: list[DiagnosticRow], keys: Sequence[tuple[str, str]], fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on a ``ValueError``/``RuntimeError``/``ArithmeticError`` mark ``keys`` undefined."""
    try:
        return fn()
    except (ValueError, RuntimeError, ArithmeticError, torch.linalg.LinAlgError) as exc:
        rows.extend(_undef(k, lab, f"{type(exc).__name__}: {exc}") for k, lab in keys)
        return None


def _est_rows(prefix: str, name: str, est: SpectralEstimate) -> list[DiagnosticRow]:
    note = est.reason
    return [
        DiagnosticRow(f"{prefix}.sigma_max", f"σ_max({name})", est.sigma_max, est.sigma_max_interval),
        DiagnosticRow(f"{prefix}.sigma_min", f"σ_min({name})", est.sigma_min, est.sigma_min_interval,
                      note=note),
        DiagnosticRow(f"{prefix}.kappa", f"κ({name})", est.cond, est.cond_interval,
                      note="singular to working precision" if est.rank_deficient else None),
    ]


def diagnose(
    model: Any,
    X: Any,
    y: Any = None,
    *,
    trainable: Sequence[str] | None = None,
    residual: str = "both",
    hessian: bool | None = None,
    sparsity_eps: float = 1e-3,
    tol: float = 1e-10,
    spectra: bool = True,
) -> Diagnostics:
    """All diagnostics of MATH.md §4 that apply to ``model`` at inputs ``X`` (targets ``y``).

    [S24] :class:`models.MultiHeadAttention`: ``B0`` (certified σ's and κ), ``β``, ``μ`` with the
    corrected bound and which bound holds, softmax-Jacobian spectrum, attention statistics and
    (with ``y``) Hessian extremes. [Q25] :class:`models.AttentionBlock`: ``Z`` with and/or
    without residual (``residual``: ``"both"``, ``"on"``, ``"off"``), the Weyl bound, ``μ`` of the
    block output by batched VJPs, softmax-Jacobian spectrum and attention statistics.
    A diagnostic that is undefined for the model (``B0`` of a block, ``κ`` of a singular matrix,
    the softmax Jacobian of a Gaussian kernel) becomes a row with ``defined=False`` and the
    reason; it never aborts the report. ``hessian=None`` means "when ``y`` is given".
    ``spectra`` keeps full singular-value/eigenvalue arrays for plotting.
    """
    if not isinstance(model, (MultiHeadAttention, AttentionBlock)):
        raise TypeError(f"model must be a models.MultiHeadAttention or models.AttentionBlock, got "
                        f"{type(model).__name__}")
    if residual not in ("both", "on", "off"):
        raise ValueError(f"unknown residual {residual!r}; known: 'both', 'on', 'off'")
    if hessian is not None and not isinstance(hessian, bool):
        raise TypeError(f"hessian must be a bool or None, got {hessian!r}")
    check_positive_float("sparsity_eps", sparsity_eps)
    t0 = time.perf_counter()
    Xt = model.check_inputs(X)
    is_mh = isinstance(model, MultiHeadAttention)
    N, n, D = Xt.shape
    cfg: dict[str, Any] = {"kernel": model.kernel_name, "N": N, "n": n, "D": D, "d": model.d,
                           "regime": model.regime}
    if is_mh:
        cfg.update(H=model.H, value_param=model.value_param, d_out=model.d_out,
                   trainable=list(trainable or model.trainable))
    else:
        cfg.update(residual_model=model.residual, ffn=model.ffn)
    rows: list[DiagnosticRow] = []
    spec: dict[str, np.ndarray] = {}
    b0_est = beta = pl = sj = att = hes = None
    zs: dict[str, ZConditioning] = {}
    mh_only = "defined for the [S24] MultiHeadAttention only (the model is an AttentionBlock)"
    # ---- B0 and beta
    if is_mh:
        def _b0() -> SpectralEstimate:
            B = B0(model, Xt)
            if spectra:
                spec["B0"] = torch.linalg.svdvals(B).cpu().numpy()
            return extreme_singular_values(B, tol=tol)

        b0_est = _safe(rows, [("b0.kappa", "κ(B0)")], _b0)
        if b0_est is not None:
            rows.extend(_est_rows("b0", "B0", b0_est))
            if model.H * D < N * n:
                rows.append(DiagnosticRow("b0.full_row_rank", "B0 full row rank possible (HD ≥ Nn)", False,
                                          note=f"HD={model.H * D} < Nn={N * n}"))
        beta = _safe(rows, [("beta_paper", "β_paper = σ²min(W_O)σ²min(B0ᵀ)")], lambda: beta_paper(model, Xt))
        if beta is not None:
            rows.append(DiagnosticRow("beta_paper", "β_paper = σ²min(W_O)σ²min(B0ᵀ)", beta.value,
                                      note=beta.reason))
    else:
        rows += [_undef("b0.kappa", "κ(B0)", mh_only), _undef("beta_paper", "β_paper", mh_only)]
    # ---- PL constant
    pl = _safe(rows, [("pl.mu", "μ = λmin(JJᵀ)")], lambda: pl_constant(model, Xt, trainable, tol=tol))
    if pl is not None:
        rows.append(DiagnosticRow("pl.mu", "μ = λmin(JJᵀ)", pl.mu, pl.mu_interval,
                                  note=("numerically zero; " if pl.numerically_zero else "")
                                  + f"route={pl.route}, {pl.eig_method}, m={pl.n_outputs}, p={pl.n_params}"))
        if is_mh:
            if pl.corrected_bound is None:
                rows.append(_undef("pl.corrected_bound", "corrected bound min_h‖W_O,h‖²σ²min(B0ᵀ)",
                                   "W_V is not trained: the bound does not apply"))
            else:
                rows.append(DiagnosticRow("pl.corrected_bound", "corrected bound min_h‖W_O,h‖²σ²min(B0ᵀ)",
                                          pl.corrected_bound))
                rows.append(DiagnosticRow("pl.corrected_holds", "corrected bound ≤ μ",
                                          pl.holds["corrected_bound"]))
            rows.append(DiagnosticRow("pl.beta_holds", "β_paper ≤ μ", pl.holds["beta_paper"],
                                      note=None if pl.holds["beta_paper"] else "the paper's β fails here"))
            if pl.value_block_mu is not None:
                rows.append(DiagnosticRow("pl.value_block_mu", "λmin(J_V J_Vᵀ)", pl.value_block_mu,
                                          note="= σ²min(W_O)σ²min(B0ᵀ) exactly for the joint value map"))
    # ---- Z of [Q25]
    if is_mh:
        rows.append(_undef("z.kappa", "κ(Z)", "Z is the [Q25] AttentionBlock output; the model is the "
                           "[S24] MultiHeadAttention"))
    else:
        wanted = {"both": (True, False), "on": (True,), "off": (False,)}[residual]
        for r in wanted:
            tag = "res" if r else "plain"
            name = "Z res" if r else "Z plain"
            z = _safe(rows, [(f"z.{tag}.kappa", f"κ({name})")],
                      lambda r=r: attention_output_matrix(model, Xt, r, tol=tol))
            if z is None:
                continue
            zs[tag] = z
            if spectra and z.Z is not None:
                spec[f"Z_{tag}"] = torch.linalg.svdvals(z.Z).cpu().numpy()
            rows.extend(_est_rows(f"z.{tag}", name, z.estimate))
            if r:
                rows.append(DiagnosticRow("z.weyl_bound", "Weyl: σmin(X) − ‖AXW_V‖ ≤ σmin(Z res)", z.weyl_bound,
                                          note=("holds" if z.weyl_holds else "VIOLATED")
                                          + ("; vacuous (negative)" if z.weyl_bound < 0 else "")))
    # ---- attention: softmax Jacobian spectrum, entropy, sparsity
    S = model.attention(Xt).detach()
    kname = model.kernel_name
    row_stochastic = kernel_variant(kname, model.kernel_options).row_stochastic  # the kernel registry
    if row_stochastic:
        rows4 = S if S.ndim == 4 else S.unsqueeze(1)
        sj = _safe(rows, [("softmaxJ.kappa_median", "κ(J(s)) on 1⊥, median over rows")],
                   lambda: softmax_jacobian_spectrum(rows4))
        if sj is not None:
            rows.append(DiagnosticRow("softmaxJ.kappa_median", "κ(J(s)) on 1⊥, median over rows",
                                      sj.kappa_median))
            rows.append(DiagnosticRow("softmaxJ.kappa_max", "κ(J(s)) on 1⊥, max over rows", sj.kappa_max,
                                      note=f"{sj.n_singular} rows singular on 1⊥" if sj.n_singular else None))
            if spectra:
                spec["softmaxJ"] = np.sort(sj.eigenvalues_perp.reshape(-1))
    else:
        rows.append(_undef("softmaxJ.kappa_median", "κ(J(s)) on 1⊥",
                           f"kernel {kname!r} is not a row softmax: no softmax Jacobian"))
    normalize = not row_stochastic
    att = _safe(rows, [("attn.entropy", "attention entropy / log n (mean over heads)")],
                lambda: attention_stats(S, sparsity_eps, normalize=normalize))
    if att is not None:
        note = "rows normalised to sum 1" if normalize else None
        rows.append(DiagnosticRow("attn.entropy", "attention entropy / log n (mean over heads)",
                                  float(att.normalized_entropy.mean()), note=note))
        rows.append(DiagnosticRow("attn.sparsity", f"fraction of coefficients ≤ {sparsity_eps:g}",
                                  float(att.sparsity.mean()), note=note))
    # ---- Hessian
    do_h = (y is not None) if hessian is None else hessian
    if do_h and y is None:
        raise ValueError("hessian=True needs targets y")
    if do_h:
        yt = torch.as_tensor(y, dtype=Xt.dtype, device=Xt.device)
        params = {k: getattr(model, k).detach() for k in (trainable or model.trainable)}
        hes = _safe(rows, [("hessian.lambda_max", "Hessian λ_max")],
                    lambda: hessian_extremes(lambda p: model.loss(p, Xt, yt), params))
        if hes is not None:
            rows.append(DiagnosticRow("hessian.lambda_max", "Hessian λ_max", hes.lambda_max))
            rows.append(DiagnosticRow("hessian.lambda_min", "Hessian λ_min", hes.lambda_min,
                                      note="indefinite" if hes.indefinite else None))
            if hes.smallest_nonzero is None:
                rows.append(_undef("hessian.smallest_nonzero", "Hessian non-zero λ nearest 0",
                                   hes.reason or ""))
            else:
                rows.append(DiagnosticRow("hessian.smallest_nonzero", "Hessian non-zero λ nearest 0",
                                          hes.smallest_nonzero))
            note = hes.method
            tr = tuple(trainable or model.trainable)
            if is_mh and model.value_param == "per_head" and "W_V" in tr and "W_O" not in tr \
                    and model.d > model.d_out:
                flat = model.H * model.D * (model.d - model.d_out)
                note += f"; {flat} = H·D·(d−d_out) are flat: W_V,h acts only via W_V,h W_O,h"
            rows.append(DiagnosticRow("hessian.null_dim", "Hessian null-space dimension seen",
                                      hes.null_dim_seen, note=note))
    else:
        rows.append(_undef("hessian.lambda_max", "Hessian λ_max", "no targets y given"))
    return Diagnostics(
        model=type(model).__name__, config=cfg, rows=tuple(rows), b0=b0_est, beta=beta, pl=pl, z=zs,
        softmax=sj, attention=att, hessian=hes, spectra=spec, seconds=time.perf_counter() - t0,
    )
