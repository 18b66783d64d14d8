"""The Gram routes: materialise the small-side Gram, ``eigh`` it, certify on ``A`` itself.

``method="gram"`` of :func:`attncond.spectral.extreme_singular_values` (and the ``auto`` routes
``"auto->gram"``, ``"auto->dense[per-sample]"``, ``"auto->gram[per-sample]"``). The extreme
eigenvectors of ``G = TᵀT`` (``T`` the tall orientation of ``A``) are Ritz vectors of ``A``:
``σ = ‖T v‖`` (never ``sqrt(λ)``), certified by residuals on ``A`` with the Kato–Temple gap
from the Gram spectrum widened by its rounding margin. When ``σ_min`` cannot be certified
(squaring loses ``eps·κ²``) the route refines by a dense SVD of the materialised factor, or by
Golub–Kahan–Lanczos when it does not fit. Gram extremes come from
:func:`attncond.spectral.solvers.psd.psd_extremes`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch

from attncond.spectral import policy
from attncond.spectral.operators.autodiff import JacobianOperator
from attncond.spectral.operators.base import LinearOp
from attncond.spectral.operators.explicit import DenseOp
from attncond.spectral.operators.gram import gram_matrix
from attncond.spectral.results import SVDResult
from attncond.spectral.solvers.certify import (
    CertifiedEnds,
    SolveRun,
    assemble_result,
    certify_small_side,
    meets_tol,
)
from attncond.spectral.solvers.dense import dense_tall_factor, svd_of_tall
from attncond.spectral.solvers.gkl import solve_gkl
from attncond.spectral.solvers.psd import PSDExtremes, psd_extremes, psd_full_extremes

__all__ = ["gram_route", "dense_per_sample", "is_per_sample"]

_NAN = float("nan")


def gram_route(op: LinearOp, ends: str, tol: float, maxiter: int | None, seed: int, *,
               label: str = "gram") -> SVDResult:
    """The Gram route for ``op`` (per-sample structure when ``op`` has a ``sample_dim``)."""
    t0 = time.perf_counter()
    if is_per_sample(op):
        return _gram_route_samples(op, ends, tol, t0, label + "[per-sample]", maxiter, seed)
    return _gram_route(op, ends, tol, t0, label)


def dense_per_sample(op: JacobianOperator, ends: str, tol: float, *, label: str) -> SVDResult:
    """Dense SVD of a per-sample Jacobian materialised by ``jacrev`` under ``vmap``."""
    return _dense_samples(op, ends, tol, time.perf_counter(), label)


def _certify_gram_ends(
    T: Any, xt: PSDExtremes, which: str, tol: float, eps: float
) -> tuple[CertifiedEnds, bool, float]:
    """Certify the Gram eigenvectors of :func:`psd_extremes` as Ritz vectors of the tall ``T``.

    ``σ = ‖T v‖`` (never ``sqrt(λ)``), with the Kato–Temple gap taken from the Gram spectrum
    (``xt.gap_max``, ``xt.gap_min``, already widened by the rounding margin ``eps_g``).
    Returns ``(certified ends, need_refine, eps_g)``; ``need_refine`` is set when a value
    misses ``tol`` or ``λ_min`` is below the rounding margin without a certified rank deficiency
    (``eps·κ²`` lost by squaring).
    """
    M, N = T.shape
    lmax = max(xt.lam_max, 0.0)
    eps_g = (10.0 * math.sqrt(M) + N) * eps * lmax  # rounding model of G and of its eigensolver
    smax = math.sqrt(lmax)
    largest = smallest = None
    need_refine = False
    if which in ("both", "largest"):
        gap = math.sqrt(max(xt.gap_max, 0.0)) if xt.gap_max is not None else None
        largest = certify_small_side(T, xt.w_max, end="largest", sigma_max_hint=smax, gap_bound=gap)
        need_refine |= not bool(meets_tol(largest, tol).all())
    if which in ("both", "smallest"):
        lo2 = xt.gap_min if xt.gap_min is not None else -1.0
        gap = math.sqrt(lo2) if lo2 > 0 else None
        c = certify_small_side(T, xt.w_min, end="smallest", sigma_max_hint=smax, gap_bound=gap)
        smallest = c
        rank_level = c.values[0] <= max(M, N) * eps * smax
        need_refine |= (not bool(meets_tol(c, tol).all())) or (
            xt.lam_min <= eps_g and not (rank_level and c.lower[0] <= 0)
        )
    return CertifiedEnds(largest, smallest, smax, subspace=N), need_refine, eps_g

def _gram_route(op: Any, which: str, tol: float, t0: float, label: str) -> SVDResult:
    """Materialise the tall factor, ``eigh`` of its Gram, certify on ``A`` itself."""
    start = op.n_products
    T, swap = dense_tall_factor(op)
    M, N = T.shape
    eps = torch.finfo(T.dtype).eps
    G = gram_matrix(T, "inner")
    xt = psd_full_extremes(G, (10.0 * math.sqrt(M) + N) * eps)
    out, need_dense, eps_g = _certify_gram_ends(DenseOp(T), xt, which, tol, eps)
    method = label
    info: dict[str, Any] = {
        "gram_eig_min": xt.lam_min,
        "gram_eig_max": max(xt.lam_max, 0.0),
        "gram_rounding_margin": eps_g,
    }
    if need_dense:
        out = svd_of_tall(T, 1, which, tol)
        method = label + "+dense"
        info["refined"] = "dense SVD of the materialised factor (Gram route not certified)"
    res = assemble_result(op, out, SolveRun(method, tol, swap, start, t0), info)
    return res

def is_per_sample(op: Any) -> bool:
    """``True`` for a :class:`JacobianOperator` constructed with ``sample_dim``."""
    return isinstance(op, JacobianOperator) and op.sample_dim is not None

def _gram_route_samples(
    op: JacobianOperator,
    which: str,
    tol: float,
    t0: float,
    label: str,
    maxiter: int | None,
    seed: int,
) -> SVDResult:
    """Gram route for a per-sample structured Jacobian (``sample_dim`` set).

    ``G = J Jᵀ`` (or ``Jᵀ J`` when ``m > p``) is built from per-sample ``jacrev`` blocks
    under ``vmap`` (:meth:`JacobianOperator.gram`); its extreme eigenpairs come from
    :func:`psd_extremes` (``eigh``, or Lanczos/shift-invert with a Cholesky-certified
    gap above ``policy.AUTO.psd_eigh_max_side``); the extreme
    eigenvectors are Ritz vectors on the small side of the tall orientation ``T`` and are
    certified *on the operator itself* (``σ = ‖T v‖``, 2 products each; never
    ``sqrt(λ)``), with the Kato–Temple gap from the Gram spectrum widened by its rounding
    margin ``(10·sqrt(M) + N)·eps·λ_max`` (when the gap is certified). When ``σ_min``
    cannot be certified to ``tol``
    (``eps·κ²`` lost by squaring) the dense SVD of the per-sample Jacobian is used if it
    fits in ``policy.AUTO.gram_max_bytes`` (``"+dense"``), else Golub–Kahan–Lanczos (``"+gkl"``).
    """
    start = op.n_products
    m, p = op.shape
    swap = m < p
    T = op.adjoint() if swap else op
    M, N = T.shape
    eps = torch.finfo(op.dtype).eps
    tg = time.perf_counter()
    item = torch.finfo(op.dtype).bits // 8
    Jd: torch.Tensor | None = None
    if m * p * item <= policy.AUTO.gram_max_bytes:
        # J fits: keep it, form G by one GEMM and certify on the stored J (GEMVs instead of
        # jvp/vjp products; the per-sample J equals the operator's to ~1e-13, tested)
        Jd = op.jacobian_matrix()
        G = gram_matrix(Jd, "outer" if swap else "inner")  # BLAS syrk on CPU: half a GEMM's flops
        T = DenseOp(Jd).adjoint() if swap else DenseOp(Jd)
    else:
        G = op.gram("outer" if swap else "inner", max_bytes=policy.AUTO.gram_max_bytes)
    t_gram = time.perf_counter() - tg
    te = time.perf_counter()
    xt = psd_extremes(G, which, margin=(10.0 * math.sqrt(M) + N) * eps, tol=tol)
    del G
    t_eig = time.perf_counter() - te
    out, need_refine, eps_g = _certify_gram_ends(T, xt, which, tol, eps)
    lmax = max(xt.lam_max, 0.0)
    info: dict[str, Any] = {
        "gram_eig_min": xt.lam_min,
        "gram_eig_max": lmax,
        "gram_rounding_margin": eps_g,
        "gram_eigen_solver": xt.solver,
        "materialisation": "per-sample jacrev under vmap",
        "gram_seconds": t_gram,
        "eigen_seconds": t_eig,
    }
    if xt.gap_certified_by:
        info["gap_certified_by"] = xt.gap_certified_by
    method = label
    if Jd is not None:
        info["certified_on"] = "the materialised per-sample J (dense products, not counted in matvecs)"
    if need_refine:
        if Jd is not None:
            out = svd_of_tall(Jd.T.contiguous() if swap else Jd, 1, which, tol)
            method = label + "+dense"
            info["refined"] = "dense SVD of the per-sample Jacobian (Gram route not certified)"
        else:
            res = solve_gkl(op, 1, which, tol, maxiter, seed=seed)
            info.update(res.info)
            info["refined"] = "Golub-Kahan-Lanczos (Gram route not certified, J too large to store)"
            return dataclasses.replace(
                res,
                method=label + "+gkl",
                matvecs=int(op.n_products - start),
                seconds=time.perf_counter() - t0,
                info=info,
            )
    return assemble_result(op, out, SolveRun(method, tol, swap, start, t0), info)

def _dense_samples(op: JacobianOperator, which: str, tol: float, t0: float, label: str) -> SVDResult:
    """Dense SVD of the Jacobian materialised by per-sample ``jacrev`` under ``vmap``."""
    start = op.n_products
    m, p = op.shape
    swap = m < p
    Jd = op.jacobian_matrix()
    out = svd_of_tall(Jd.T.contiguous() if swap else Jd, 1, which, tol)
    res = assemble_result(op, out, SolveRun(label, tol, swap, start, t0),
                          {"materialisation": "per-sample jacrev under vmap"})
    return dataclasses.replace(res, spectrum=out.spectrum)

