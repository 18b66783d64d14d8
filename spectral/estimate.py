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

For a :class:`spectral.jacobian.JacobianOperator` built with ``sample_dim`` (per-sample
block structure) the materialisation uses per-sample ``jacrev`` under ``vmap`` instead of
batched products: ``"auto->dense[per-sample]"`` when ``m·n ≤ 4·10⁶``, else
``"auto->gram[per-sample]"`` when ``min(m, n) ≤ 8192`` (extreme eigenpairs of ``J Jᵀ``
built in sample blocks of at most ``GRAM_MAX_BYTES``: ``eigh`` up to ``GRAM_EIGH_MAX_SIDE``,
above it Lanczos for ``λ_max`` and Cholesky shift-and-invert Lanczos for ``λ_min`` with the
gap certified by a Cholesky factorisation, see :func:`_gram_extremes`; the Ritz vectors are
certified with products on ``J``; refined by a dense SVD, or by Golub–Kahan when ``J`` does
not fit, if it cannot certify).
"""

from __future__ import annotations

import dataclasses
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
from .gram import gram_matrix
from .jacobian import JacobianOperator
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
GRAM_MAX_SIDE_SAMPLES = 8192

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


def _certify_gram_ends(
    T: Any, xt: dict[str, Any], which: str, tol: float, eps: float
) -> tuple[dict[str, Any], bool, float, float]:
    """Certify the Gram eigenvectors of :func:`_gram_extremes` as Ritz vectors of the tall ``T``.

    ``σ = ‖T v‖`` (never ``sqrt(λ)``), with the Kato–Temple gap taken from the Gram spectrum
    (``xt["gap_max"]``, ``xt["gap_min"]``, already widened by the rounding margin ``eps_g``).
    Returns ``(explicit, need_refine, σ_max hint, eps_g)``; ``need_refine`` is set when a value
    misses ``tol`` or ``λ_min`` is below the rounding margin without a certified rank deficiency
    (``eps·κ²`` lost by squaring).
    """
    M, N = T.shape
    lmax = max(xt["lam_max"], 0.0)
    eps_g = (10.0 * math.sqrt(M) + N) * eps * lmax  # rounding model of G and of its eigensolver
    smax = math.sqrt(lmax)
    ex: dict[str, Any] = {}
    need_refine = False
    if which in ("both", "largest"):
        gap = math.sqrt(max(xt["gap_max"], 0.0)) if xt["gap_max"] is not None else None
        ex["largest"] = certify_small_side(T, xt["w_max"], end="largest", sigma_max_hint=smax, gap_bound=gap)
        need_refine |= not bool(meets_tol(ex["largest"], tol).all())
    if which in ("both", "smallest"):
        lo2 = xt["gap_min"] if xt["gap_min"] is not None else -1.0
        gap = math.sqrt(lo2) if lo2 > 0 else None
        c = certify_small_side(T, xt["w_min"], end="smallest", sigma_max_hint=smax, gap_bound=gap)
        ex["smallest"] = c
        rank_level = c.values[0] <= max(M, N) * eps * smax
        need_refine |= (not bool(meets_tol(c, tol).all())) or (
            xt["lam_min"] <= eps_g and not (rank_level and c.lower[0] <= 0)
        )
    return ex, need_refine, smax, eps_g


def _gram_route(op: Any, which: str, tol: float, t0: float, label: str) -> SVDResult:
    """Materialise the tall factor, ``eigh`` of its Gram, certify on ``A`` itself."""
    start = op.n_products
    T, swap = dense_tall_factor(op)
    M, N = T.shape
    eps = torch.finfo(T.dtype).eps
    G = gram_matrix(T, "inner")
    xt = _gram_full_extremes(G, (10.0 * math.sqrt(M) + N) * eps)
    ex, need_dense, smax, eps_g = _certify_gram_ends(DenseOp(T), xt, which, tol, eps)
    out = {"explicit": ex, "smax": smax, "steps": 0, "cycles": 1, "ell": N}
    method = label
    info: dict[str, Any] = {
        "gram_eig_min": xt["lam_min"],
        "gram_eig_max": max(xt["lam_max"], 0.0),
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


GRAM_EIGH_MAX_SIDE = 512


def _one_eigenvalue_below(G: np.ndarray, w: np.ndarray, mu: float, shift: float) -> bool:
    """``True`` when ``G`` provably has at most one eigenvalue below ``mu`` (so ``λ_2 ≥ mu``).

    Rank-one interlacing: for ``c ≥ 0`` and unit ``w``, ``λ_1(G + c w wᵀ) ≤ λ_2(G)``. If the
    Cholesky factorisation of ``G + c w wᵀ − μI`` succeeds, that matrix is positive
    definite, hence ``λ_2(G) ≥ λ_1(G + c w wᵀ) > μ`` — for *any* ``w`` (an inaccurate
    eigenvector only makes the test fail, never lie). Cholesky is backward stable (exact for
    a perturbation of norm ``≈ N·eps·‖G‖``, covered by the caller's margin ``eps_g``).
    ``N³/3`` flops.
    """
    import scipy.linalg as sla

    w = w / np.linalg.norm(w)
    A = G + shift * np.outer(w, w)
    A[np.diag_indices_from(A)] -= mu
    try:
        sla.cholesky(A, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return False
    return True


def _gram_full_extremes(G: torch.Tensor, margin: float) -> dict[str, Any]:
    """Extreme eigenpairs of the symmetric ``G`` by a full ``eigh``; its whole spectrum gives the
    gap bounds ``λ_2 − eps_g`` and ``λ_{N−1} + eps_g`` (``eps_g = margin·λ_max``). Keys as in
    :func:`_gram_extremes`."""
    N = G.shape[0]
    lam, W = torch.linalg.eigh(G)
    lam_np = lam.detach().cpu().double().numpy()
    eps_g = margin * max(float(lam_np[-1]), 0.0)
    return {
        "lam_min": float(lam_np[0]),
        "w_min": W[:, :1],
        "gap_min": float(lam_np[1] - eps_g) if N > 1 else None,
        "lam_max": float(lam_np[-1]),
        "w_max": W[:, -1:],
        "gap_max": float(lam_np[-2] + eps_g) if N > 1 else None,
        "solver": "eigh",
    }


def _gram_extremes(G: torch.Tensor, which: str, margin: float, tol: float = 1e-10) -> dict[str, Any]:
    """Extreme eigenpairs of the symmetric positive semi-definite Gram ``G`` (``N×N``).

    ``N ≤ GRAM_EIGH_MAX_SIDE``: full ``eigh`` (its whole spectrum certifies the gaps to
    ``eps_g``). Larger ``N`` (a full ``eigh`` costs ``≈ 9N³`` flops, ``≈ 3×`` ``eigvalsh``):

    * largest: :func:`spectral.lanczos.symmetric_lanczos` on ``G`` to ``tol/100`` (so that
      the ``σ_max`` residual on ``J``, about ``tol/100`` relative, meets ``tol``); no gap is
      claimed (the residual bound on ``J`` certifies ``σ_max``). Measured on the medium
      [S24] Gram (1024²): 29 products, 2–3× faster than ARPACK ``eigsh(k=2, tol=1e-14)``;
    * smallest: shift-and-invert Lanczos on ``G⁻¹`` through a Cholesky factor (``N³/3``
      flops; ``k=2``); the gap ``λ_2 ≥ μ`` used by Kato–Temple is *certified* by one more
      Cholesky factorisation (:func:`_one_eigenvalue_below`, rank-one interlacing, with
      ``μ = λ̂_2 − 10⁻³(λ̂_2 − λ̂_1)``), and widened by ``eps_g``. If ``G`` is not
      numerically positive definite, full ``eigh`` is used.

    Returns ``lam_min``, ``w_min``, ``gap_min`` (certified lower bound of ``λ_2`` or
    ``None``), ``lam_max``, ``w_max``, ``gap_max`` (certified upper bound of ``λ_{N−1}`` or
    ``None``) and ``solver``. Gap bounds are widened by the rounding margin
    ``eps_g = margin·λ_max``.
    """
    N = G.shape[0]
    want_l, want_s = which in ("both", "largest"), which in ("both", "smallest")
    out: dict[str, Any] = {"gap_min": None, "gap_max": None}

    if N <= GRAM_EIGH_MAX_SIDE or G.device.type != "cpu":
        return _gram_full_extremes(G, margin)
    import scipy.linalg as sla
    import scipy.sparse.linalg as spla

    top = symmetric_lanczos(DenseOp(G), 1, "largest", tol=max(tol / 100, 1e-14), seed=0)
    if not top.converged:
        f = _gram_full_extremes(G, margin)
        f["solver"] = "eigh (Lanczos for lambda_max did not converge)"
        return f
    lam_top = float(top.lambda_max)
    eps_g = margin * max(lam_top, 0.0)
    out.update(lam_max=lam_top, w_max=top.largest.vectors[:, :1].to(G.dtype))
    out["solver"] = "Lanczos(lambda_max)"
    if want_s:
        Gn = G.detach().double().numpy()
        v0 = np.random.default_rng(0).standard_normal(N)
        try:
            cf = sla.cho_factor(Gn, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            f = _gram_full_extremes(G, margin)
            f["solver"] = "eigh (Gram not numerically positive definite)"
            return f
        inv = spla.LinearOperator(
            (N, N), matvec=lambda x: sla.cho_solve(cf, x, check_finite=False), dtype=Gn.dtype
        )
        try:
            mu_t, W_s = spla.eigsh(inv, k=2, which="LA", tol=1e-14, v0=v0, ncv=min(N, 24))
        except spla.ArpackNoConvergence:
            f = _gram_full_extremes(G, margin)
            f["solver"] = "eigh (shift-invert Lanczos did not converge)"
            return f
        o = np.argsort(mu_t)[::-1]  # largest of G⁻¹ = smallest of G
        l1, l2 = 1.0 / float(mu_t[o[0]]), 1.0 / float(mu_t[o[1]])
        del cf
        out.update(lam_min=l1, w_min=torch.as_tensor(W_s[:, o[0] : o[0] + 1], dtype=G.dtype))
        mu = l2 - 1e-3 * (l2 - l1)
        if mu > l1 and _one_eigenvalue_below(Gn, W_s[:, o[0]], mu, out["lam_max"]):
            out["gap_min"] = mu - eps_g
            out["gap_certified_by"] = f"Cholesky of G + lam_max w w^T - mu I: lambda_2(G) >= {mu:.6g}"
        out["solver"] = "Lanczos(lambda_max) + Cholesky shift-invert eigsh + Cholesky gap certificate"
    if not want_l:
        out.pop("w_max", None)
    return out


def _per_sample(op: Any) -> bool:
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
    :func:`_gram_extremes` (``eigh``, or Lanczos/shift-invert with a Cholesky-certified
    gap above ``GRAM_EIGH_MAX_SIDE``); the extreme
    eigenvectors are Ritz vectors on the small side of the tall orientation ``T`` and are
    certified *on the operator itself* (``σ = ‖T v‖``, 2 products each; never
    ``sqrt(λ)``), with the Kato–Temple gap from the Gram spectrum widened by its rounding
    margin ``(10·sqrt(M) + N)·eps·λ_max`` (when the gap is certified). When ``σ_min``
    cannot be certified to ``tol``
    (``eps·κ²`` lost by squaring) the dense SVD of the per-sample Jacobian is used if it
    fits in ``GRAM_MAX_BYTES`` (``"+dense"``), else Golub–Kahan–Lanczos (``"+gkl"``).
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
    if m * p * item <= GRAM_MAX_BYTES:
        # J fits: keep it, form G by one GEMM and certify on the stored J (GEMVs instead of
        # jvp/vjp products; the per-sample J equals the operator's to ~1e-13, tested)
        Jd = op.jacobian_matrix()
        G = gram_matrix(Jd, "outer" if swap else "inner")  # BLAS syrk on CPU: half a GEMM's flops
        T = DenseOp(Jd).adjoint() if swap else DenseOp(Jd)
    else:
        G = op.gram("outer" if swap else "inner", max_bytes=GRAM_MAX_BYTES)
    t_gram = time.perf_counter() - tg
    te = time.perf_counter()
    xt = _gram_extremes(G, which, (10.0 * math.sqrt(M) + N) * eps, tol)
    del G
    t_eig = time.perf_counter() - te
    ex, need_refine, smax, eps_g = _certify_gram_ends(T, xt, which, tol, eps)
    lmax = max(xt["lam_max"], 0.0)
    info: dict[str, Any] = {
        "gram_eig_min": xt.get("lam_min", _NAN),
        "gram_eig_max": lmax,
        "gram_rounding_margin": eps_g,
        "gram_eigen_solver": xt["solver"],
        "materialisation": "per-sample jacrev under vmap",
        "gram_seconds": t_gram,
        "eigen_seconds": t_eig,
    }
    if "gap_certified_by" in xt:
        info["gap_certified_by"] = xt["gap_certified_by"]
    out: dict[str, Any] = {"explicit": ex, "smax": smax, "steps": 0, "cycles": 1, "ell": N}
    method = label
    if Jd is not None:
        info["certified_on"] = "the materialised per-sample J (dense products, not counted in matvecs)"
    if need_refine:
        if Jd is not None:
            out = svd_of_tall(Jd.T.contiguous() if swap else Jd, 1, which, tol)
            method = label + "+dense"
            info["refined"] = "dense SVD of the per-sample Jacobian (Gram route not certified)"
        else:
            res = golub_kahan_lanczos(op, 1, which, tol, maxiter, seed=seed)
            info.update(res.info)
            info["refined"] = "Golub-Kahan-Lanczos (Gram route not certified, J too large to store)"
            return dataclasses.replace(
                res,
                method=label + "+gkl",
                matvecs=int(op.n_products - start),
                seconds=time.perf_counter() - t0,
                info=info,
            )
    return _assemble(
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


def _dense_samples(op: JacobianOperator, which: str, tol: float, t0: float, label: str) -> SVDResult:
    """Dense SVD of the Jacobian materialised by per-sample ``jacrev`` under ``vmap``."""
    start = op.n_products
    m, p = op.shape
    swap = m < p
    Jd = op.jacobian_matrix()
    out = svd_of_tall(Jd.T.contiguous() if swap else Jd, 1, which, tol)
    res = _assemble(
        op,
        out,
        which=which,
        tol=tol,
        swap=swap,
        start=start,
        t0=t0,
        method=label,
        iterations=1,
        max_steps=None,
        info={"materialisation": "per-sample jacrev under vmap"},
    )
    return dataclasses.replace(res, spectrum=out["spectrum"])


def _solve(op: Any, ends: str, method: str, tol: float, maxiter: int | None, seed: int) -> SVDResult:
    t0 = time.perf_counter()
    m, n = op.shape
    if method == "auto" and _per_sample(op):
        s, L = min(m, n), max(m, n)
        if s * L <= DENSE_MAX_ENTRIES:
            return _dense_samples(op, ends, tol, t0, "auto->dense[per-sample]")
        if s <= GRAM_MAX_SIDE_SAMPLES:
            return _gram_route_samples(op, ends, tol, t0, "auto->gram[per-sample]", maxiter, seed)
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
        if _per_sample(op):
            return _gram_route_samples(op, ends, tol, t0, "gram[per-sample]", maxiter, seed)
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
