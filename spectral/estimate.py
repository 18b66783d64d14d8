"""One entry point: extreme singular values and condition numbers with certified intervals.

:func:`extreme_singular_values` dispatches to a solver (``method``) and returns a frozen
:class:`SpectralEstimate`. Every interval is a certified residual bound (see
:mod:`spectral._certify`: Bauer–Fike/Kahan on the Jordan–Wielandt matrix, i.e. Wedin's
residual bound, plus Courant–Fischer and Kato–Temple where a gap is certified).

``method="auto"`` picks the cheapest exact route and records it in ``method``:

* ``"auto->dense"`` when ``m·n ≤ 4·10⁶``: materialise ``A`` (``min(m, n)`` batched
  products for an implicit operator) and take a dense SVD;
* ``"auto->gram"`` when ``min(m, n) ≤ 4096``: materialise the tall factor ``T`` (``Aᵀ``
  for a wide Jacobian: ``m`` batched VJPs), form ``G = Tᵀ T`` and ``eigvalsh``; the extreme
  eigenvectors are then used as Ritz vectors *on A itself* (``σ = ‖T v‖``, never
  ``sqrt(λ)``) and certified, with the Kato–Temple gap taken from the Gram spectrum
  widened by its rounding margin. If ``σ_min`` cannot be certified to ``tol`` (squaring
  costs ``eps·κ²``), it is recomputed from a dense SVD of the already materialised ``T``
  (``"auto->gram+dense"``; Householder QR based, accurate to ``κ·eps``);
* ``"auto->gkl"`` otherwise (:func:`spectral.gkl.golub_kahan_lanczos`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._certify import certify_small_side, meets_tol, rounding_allowance
from ._validate import check_choice, prepare
from .dense import dense_svd, dense_tall_factor, svd_of_tall
from .gkl import _assemble, golub_kahan_lanczos
from .lanczos import certify_eigvecs, symmetric_lanczos
from .operators import DenseOp
from .randomized import randomized_svd
from .results import EigResult, SVDResult, to_jsonable
from .scipy_backends import arpack_svds, lobpcg_svds, propack_svds

__all__ = [
    "SpectralEstimate",
    "EigenEstimate",
    "extreme_singular_values",
    "condition_number",
    "eigen_extremes",
    "METHODS",
    "EIGEN_METHODS",
]

METHODS = ("auto", "dense", "gram", "gkl", "randomized", "arpack", "propack", "lobpcg")
EIGEN_METHODS = ("auto", "dense", "lanczos")
DENSE_MAX_ENTRIES = 4_000_000
GRAM_MAX_SIDE = 4096
GRAM_MAX_BYTES = 4 * 1024**3

_NAN = float("nan")


@dataclass(frozen=True, repr=False)
class SpectralEstimate:
    """Extreme singular values of ``A`` with certified intervals.

    ``sigma_max_interval``/``sigma_min_interval`` contain a singular value of ``A``
    (residual bounds, see :mod:`spectral._certify`); ``cond_interval`` is
    ``[lo_max/hi_min, hi_max/lo_min]`` (``inf`` where ``lo_min ≤ 0``).
    ``attainable_accuracy`` holds ``norm_eps = σ_max·eps`` (absolute accuracy of any
    floating-point singular value) and ``cond_eps = κ·eps`` (relative accuracy attainable
    for ``σ_min``); ``below_attainable`` flags a ``tol`` or a ``σ_min`` below them.
    Quantities not requested are ``nan``.
    """

    sigma_max: float
    sigma_max_interval: tuple[float, float]
    sigma_min: float
    sigma_min_interval: tuple[float, float]
    cond: float
    cond_interval: tuple[float, float]
    converged: bool
    matvecs: int
    method: str
    seconds: float
    shape: tuple[int, int]
    attainable_accuracy: dict[str, float]
    below_attainable: bool
    rank_deficient: bool
    reason: str | None
    residuals: dict[str, float]
    details: SVDResult | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "details"}
        return to_jsonable(out)

    def __repr__(self) -> str:
        def iv(t: tuple[float, float]) -> str:
            return f"[{t[0]:.6g}, {t[1]:.6g}]"

        s = (
            f"SpectralEstimate(sigma_max={self.sigma_max:.10g} in {iv(self.sigma_max_interval)}, "
            f"sigma_min={self.sigma_min:.10g} in {iv(self.sigma_min_interval)}, "
            f"cond={self.cond:.6g} in {iv(self.cond_interval)}, converged={self.converged}, "
            f"method={self.method!r}, matvecs={self.matvecs}, seconds={self.seconds:.3g}"
        )
        if self.rank_deficient:
            s += ", rank_deficient=True"
        if self.below_attainable:
            s += ", below_attainable=True"
        if self.reason:
            s += f", reason={self.reason!r}"
        return s + ")"


@dataclass(frozen=True, repr=False)
class EigenEstimate:
    """Extreme eigenvalues of a symmetric operator with Bauer–Fike intervals."""

    lambda_max: float
    lambda_max_interval: tuple[float, float]
    lambda_min: float
    lambda_min_interval: tuple[float, float]
    converged: bool
    matvecs: int
    method: str
    seconds: float
    shape: tuple[int, int]
    reason: str | None
    residuals: dict[str, float]
    details: EigResult | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "details"})

    def __repr__(self) -> str:
        s = (
            f"EigenEstimate(lambda_max={self.lambda_max:.10g} in "
            f"[{self.lambda_max_interval[0]:.6g}, {self.lambda_max_interval[1]:.6g}], "
            f"lambda_min={self.lambda_min:.10g} in "
            f"[{self.lambda_min_interval[0]:.6g}, {self.lambda_min_interval[1]:.6g}], "
            f"converged={self.converged}, method={self.method!r}, matvecs={self.matvecs}"
        )
        if self.reason:
            s += f", reason={self.reason!r}"
        return s + ")"


def _which_to_ends(which: Any) -> str:
    if isinstance(which, str):
        which = (which,)
    try:
        w = set(which)
    except TypeError:
        raise ValueError(f"which must be 'max', 'min' or a tuple of them, got {which!r}") from None
    if w in ({"max", "min"}, {"both"}):
        return "both"
    if w == {"max"}:
        return "largest"
    if w == {"min"}:
        return "smallest"
    raise ValueError(f"which must be 'max', 'min' or a tuple of them, got {which!r}")


def _gram_route(op: Any, which: str, tol: float, t0: float, label: str) -> SVDResult:
    """Materialise the tall factor, ``eigvalsh`` of its Gram, certify on ``A`` itself."""
    start = op.n_products
    T, swap = dense_tall_factor(op)
    M, N = T.shape
    eps = torch.finfo(T.dtype).eps
    G = T.T @ T
    lam, W = torch.linalg.eigh(0.5 * (G + G.T))
    lam_np = lam.detach().cpu().double().numpy()
    lmax = max(float(lam_np[-1]), 0.0)
    eps_g = (10.0 * math.sqrt(M) + N) * eps * lmax  # rounding model of G and of eigvalsh
    smax = math.sqrt(lmax)
    top = DenseOp(T)
    ex = {}
    need_dense = False
    if which in ("both", "largest"):
        gap = math.sqrt(lam_np[-2] + eps_g) if N > 1 else None
        ex["largest"] = certify_small_side(top, W[:, -1:], end="largest", sigma_max_hint=smax, gap_bound=gap)
        need_dense |= not bool(meets_tol(ex["largest"], tol).all())
    if which in ("both", "smallest"):
        lo2 = lam_np[1] - eps_g if N > 1 else -1.0
        gap = math.sqrt(lo2) if lo2 > 0 else None
        c = certify_small_side(top, W[:, :1], end="smallest", sigma_max_hint=smax, gap_bound=gap)
        ex["smallest"] = c
        rank_level = c.values[0] <= max(M, N) * eps * smax
        need_dense |= (
            (not bool(meets_tol(c, tol).all())) or lam_np[0] <= eps_g and not (rank_level and c.lower[0] <= 0)
        )
    out = {"explicit": ex, "smax": smax, "steps": 0, "cycles": 1, "ell": N}
    method = label
    info: dict[str, Any] = {
        "gram_eig_min": float(lam_np[0]),
        "gram_eig_max": lmax,
        "gram_rounding_margin": eps_g,
    }
    if need_dense:
        out = svd_of_tall(T, 1, which, tol)
        method = label + "+dense"
        info["refined"] = "dense SVD of the materialised factor (Gram route not certified)"
    res = _assemble(
        op,
        out,
        which=which,
        tol=tol,
        swap=swap,
        start=start,
        t0=t0,
        method=method,
        iterations=1,
        max_steps=None,
        info=info,
    )
    return res


def _solve(op: Any, ends: str, method: str, tol: float, maxiter: int | None, seed: int) -> SVDResult:
    t0 = time.perf_counter()
    m, n = op.shape
    if method == "auto":
        s, L = min(m, n), max(m, n)
        item = torch.finfo(op.dtype).bits // 8
        if s * L <= DENSE_MAX_ENTRIES:
            res = dense_svd(op, 1, ends, tol)
            return _relabel(res, "auto->dense")
        if s <= GRAM_MAX_SIDE and s * L * item <= GRAM_MAX_BYTES:
            return _gram_route(op, ends, tol, t0, "auto->gram")
        res = golub_kahan_lanczos(op, 1, ends, tol, maxiter, seed=seed)
        return _relabel(res, "auto->gkl")
    if method == "dense":
        return dense_svd(op, 1, ends, tol)
    if method == "gram":
        return _gram_route(op, ends, tol, t0, "gram")
    if method == "gkl":
        return golub_kahan_lanczos(op, 1, ends, tol, maxiter, seed=seed)
    if method == "randomized":
        if ends != "largest":
            return randomized_svd(op, 1, seed=seed, tol=tol, which=ends)  # raises
        return randomized_svd(op, 1, seed=seed, tol=tol)
    fn = {"arpack": arpack_svds, "propack": propack_svds, "lobpcg": lobpcg_svds}[method]
    return fn(op, 1, ends, tol, maxiter, seed)


def _relabel(res: SVDResult, method: str) -> SVDResult:
    import dataclasses

    return dataclasses.replace(res, method=method)


def _interval(block: Any) -> tuple[float, float]:
    return (float(block.lower[0]), float(block.upper[0]))


def extreme_singular_values(
    A: Any,
    which: Any = ("max", "min"),
    method: str = "auto",
    tol: float = 1e-10,
    maxiter: int | None = None,
    device: Any = None,
    dtype: Any = None,
    seed: int = 0,
) -> SpectralEstimate:
    """``σ_max(A)``, ``σ_min(A)`` and ``κ = σ_max/σ_min`` with certified intervals.

    ``σ_min`` is the smallest of the ``min(m, n)`` singular values (a wide matrix's null
    space does not count). Each interval contains a singular value of ``A`` by the residual
    bound for the Jordan–Wielandt matrix (Bauer–Fike/Kahan; Wedin for the SVD), tightened by
    Courant–Fischer (``σ_max ≥ ‖Av‖``, ``σ_min ≤ ‖Av‖`` on the small side) and by Kato–Temple
    when a gap is certified. An exactly rank-deficient ``A`` gives ``sigma_min=0.0``,
    ``cond=inf``, ``rank_deficient=True`` and a ``reason``. A solver that misses ``tol``
    returns ``converged=False`` and a ``reason``.

    Parameters
    ----------
    A : anything :func:`spectral.operators.as_operator` accepts (including
        :class:`spectral.jacobian.JacobianOperator`).
    which : ``("max", "min")`` (default), ``"max"`` or ``"min"``.
    method : one of :data:`METHODS`; see the module docstring for ``"auto"``.
    tol : relative tolerance of the certified error (> 0).
    maxiter : passed to iterative solvers.
    device, dtype : conversions of ``A`` (float64 default for non-float input).
    seed : seed of random start vectors.
    """
    t0 = time.perf_counter()
    ends = _which_to_ends(which)
    check_choice("method", method, METHODS)
    op, _, tol, maxiter = prepare(
        A,
        k=1,
        tol=tol,
        maxiter=maxiter,
        method=method,
        methods=METHODS,
        device=device,
        dtype=dtype,
    )
    if method == "randomized" and ends != "largest":
        raise ValueError(
            "method='randomized' estimates sigma_max only (randomized range finders capture "
            "the dominant subspace); use which='max', or method='gkl'/'dense'/'auto' for "
            "sigma_min"
        )
    res = _solve(op, ends, method, tol, maxiter, seed)
    return _to_estimate(res, op.dtype, tol, time.perf_counter() - t0)


def _to_estimate(res: SVDResult, dtype: torch.dtype, tol: float, seconds: float) -> SpectralEstimate:
    eps = torch.finfo(dtype).eps
    smax, imax, smin, imin = _NAN, (_NAN, _NAN), _NAN, (_NAN, _NAN)
    resid: dict[str, float] = {}
    if res.largest is not None:
        smax, imax = float(res.largest.values[0]), _interval(res.largest)
        resid["sigma_max"] = float(res.largest.residual_norms[0])
    if res.smallest is not None:
        smin, imin = float(res.smallest.values[0]), _interval(res.smallest)
        resid["sigma_min"] = float(res.smallest.residual_norms[0])
    if res.largest is not None and res.smallest is not None:
        cond = math.inf if smin == 0.0 else smax / smin
        lo = imax[0] / imin[1] if imin[1] > 0 else math.inf
        hi = imax[1] / imin[0] if imin[0] > 0 else math.inf
        cond_iv = (lo, hi)
    else:
        cond, cond_iv = _NAN, (_NAN, _NAN)
    norm_eps = (smax if not math.isnan(smax) else 0.0) * eps
    cond_eps = cond * eps if not math.isnan(cond) else _NAN
    below = False
    if not math.isnan(cond_eps):
        below = bool(cond_eps > tol or (not math.isnan(smin) and smin <= norm_eps))
    return SpectralEstimate(
        sigma_max=smax,
        sigma_max_interval=imax,
        sigma_min=smin,
        sigma_min_interval=imin,
        cond=cond,
        cond_interval=cond_iv,
        converged=bool(res.converged),
        matvecs=int(res.matvecs),
        method=res.method,
        seconds=seconds,
        shape=res.shape,
        attainable_accuracy={"norm_eps": norm_eps, "cond_eps": cond_eps},
        below_attainable=below,
        rank_deficient=bool(res.rank_deficient),
        reason=res.reason,
        residuals=resid,
        details=res,
    )


def condition_number(A: Any, **kw: Any) -> SpectralEstimate:
    """``κ(A) = σ_max/σ_min`` with a certified interval (both ends of
    :func:`extreme_singular_values`; keyword arguments are passed on)."""
    kw.pop("which", None)
    return extreme_singular_values(A, which=("max", "min"), **kw)


def eigen_extremes(
    S: Any,
    which: Any = ("max", "min"),
    method: str = "auto",
    tol: float = 1e-10,
    maxiter: int | None = None,
    device: Any = None,
    dtype: Any = None,
    seed: int = 0,
) -> EigenEstimate:
    """``λ_max`` and ``λ_min`` of a symmetric ``S`` with Bauer–Fike intervals.

    For a unit Ritz vector ``y`` with ``θ = yᵀSy``, an eigenvalue lies within
    ``‖Sy − θy‖`` of ``θ`` (Bauer–Fike for symmetric matrices); Courant–Fischer gives
    ``λ_max ≥ θ_max`` and ``λ_min ≤ θ_min``. ``method``: ``"auto"`` (dense ``eigh`` when
    ``n ≤ 2000``, else Lanczos), ``"dense"`` or ``"lanczos"``.
    """
    t0 = time.perf_counter()
    ends = _which_to_ends(which)
    check_choice("method", method, EIGEN_METHODS)
    op, _, tol, maxiter = prepare(
        S,
        k=1,
        tol=tol,
        maxiter=maxiter,
        method=method,
        methods=EIGEN_METHODS,
        device=device,
        dtype=dtype,
    )
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"S must be square, got shape {op.shape}")
    n = op.shape[0]
    start = op.n_products
    chosen = method
    if method == "auto":
        chosen = "dense" if n <= 2000 else "lanczos"
    if chosen == "dense":
        Sd = op.to_dense()
        Sd = 0.5 * (Sd + Sd.T)
        lam, W = torch.linalg.eigh(Sd)
        lmax = float(lam.abs().max())
        dop = DenseOp(Sd)
        blocks = {}
        if ends in ("both", "largest"):
            blocks["largest"] = certify_eigvecs(dop, W[:, -1:], end="largest", lam_max_hint=lmax)
        if ends in ("both", "smallest"):
            blocks["smallest"] = certify_eigvecs(dop, W[:, :1], end="smallest", lam_max_hint=lmax)
        conv = all(
            bool((c["rho"] <= np.maximum(tol * np.abs(c["values"]), c["delta"])).all()) for c in blocks.values()
        )
        vals = {
            e: (float(c["values"][0]), (float(c["lower"][0]), float(c["upper"][0])), float(c["rho"][0]))
            for e, c in blocks.items()
        }
        details = None
        reason = None if conv else f"dense eigh residual above tol={tol:g}"
    else:
        r = symmetric_lanczos(op, 1, ends, tol, maxiter, seed=seed)
        vals = {}
        for e in ("largest", "smallest"):
            b = getattr(r, e)
            if b is not None:
                vals[e] = (
                    float(b.values[0]),
                    (float(b.lower[0]), float(b.upper[0])),
                    float(b.residual_norms[0]),
                )
        conv, details, reason = r.converged, r, r.reason
    lmx = vals.get("largest", (_NAN, (_NAN, _NAN), _NAN))
    lmn = vals.get("smallest", (_NAN, (_NAN, _NAN), _NAN))
    return EigenEstimate(
        lambda_max=lmx[0],
        lambda_max_interval=lmx[1],
        lambda_min=lmn[0],
        lambda_min_interval=lmn[1],
        converged=bool(conv),
        matvecs=op.n_products - start,
        method=("auto->" + chosen) if method == "auto" else chosen,
        seconds=time.perf_counter() - t0,
        shape=op.shape,
        reason=reason,
        residuals={k: v[2] for k, v in {"lambda_max": lmx, "lambda_min": lmn}.items() if not math.isnan(v[0])},
        details=details,
    )


_ = rounding_allowance  # re-exported helper kept importable from here
