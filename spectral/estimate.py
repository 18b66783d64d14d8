"""One entry point: extreme singular values and condition numbers with certified intervals.

:func:`extreme_singular_values` dispatches to a solver (``method``) and returns a frozen
:class:`SpectralEstimate`. Every interval is a certified residual bound (see
:mod:`spectral.solvers.certify`: Bauer–Fike/Kahan on the Jordan–Wielandt matrix, i.e. Wedin's
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
* ``"auto->gkl"`` otherwise (:func:`spectral.solvers.gkl.golub_kahan_lanczos`).

For a :class:`spectral.operators.autodiff.JacobianOperator` built with ``sample_dim`` (per-sample
block structure) the materialisation uses per-sample ``jacrev`` under ``vmap`` instead of
batched products: ``"auto->dense[per-sample]"`` when ``m·n ≤ 4·10⁶``, else
``"auto->gram[per-sample]"`` when ``min(m, n) ≤ 8192`` (extreme eigenpairs of ``J Jᵀ``
built in sample blocks of at most ``AUTO.gram_max_bytes``: ``eigh`` up to ``AUTO.psd_eigh_max_side``,
above it Lanczos for ``λ_max`` and Cholesky shift-and-invert Lanczos for ``λ_min`` with the
gap certified by a Cholesky factorisation, see :func:`psd_extremes`; the Ritz vectors are
certified with products on ``J``; refined by a dense SVD, or by Golub–Kahan when ``J`` does
not fit, if it cannot certify).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from attncond.spectral import policy
from attncond.spectral.operators.base import LinearOp
from attncond.spectral.operators.explicit import DenseOp, SparseOp, autoscaled
from attncond.spectral.operators.product_error import misses_tol
from attncond.spectral.results import (
    EigenBlock,
    EigenEstimate,
    EigResult,
    SpectralEstimate,
    SVDResult,
)
from attncond.spectral.solvers import SOLVERS
from attncond.spectral.solvers.certify import certify_eigvecs
from attncond.spectral.solvers.gram_route import dense_per_sample, gram_route, is_per_sample
from attncond.spectral.solvers.lanczos import solve_lanczos
from attncond.spectral.solvers.scaling import check_result_adjoint, unscale_result
from attncond.spectral.solvers.validate import check_choice, check_symmetric, prepare

#: ``method=`` names of :func:`extreme_singular_values`: ``"auto"`` and the :data:`SOLVERS` registry.
METHODS = ("auto", *SOLVERS)

EIGEN_METHODS = ("auto", "dense", "lanczos")

_NAN = float("nan")

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

def _auto(op: LinearOp, ends: str, tol: float, maxiter: int | None, seed: int) -> SVDResult:
    """``method="auto"``: the cheapest exact route under :data:`attncond.spectral.policy.AUTO`."""
    P = policy.AUTO
    m, n = op.shape
    s, L = min(m, n), max(m, n)
    if is_per_sample(op):
        if s * L <= P.dense_max_entries:
            return dense_per_sample(op, ends, tol, label="auto->dense[per-sample]")
        if s <= P.gram_max_side_samples:
            return gram_route(op, ends, tol, maxiter, seed, label="auto->gram")
    item = torch.finfo(op.dtype).bits // 8
    if isinstance(op, SparseOp) and s >= P.sparse_matrix_free_min_side:
        # sparse input stays sparse: GKL on the sparse products first (measured cheaper than
        # densifying from this size, benchmarks/results/sparse_auto_crossover.json); if it does
        # not certify within its steps, fall through to the exact dense/Gram routes
        r = SOLVERS["gkl"].run(op, ends, tol, maxiter, seed)
        if r.converged:
            return dataclasses.replace(r, method="auto->gkl[sparse]")
    if s * L <= P.dense_max_entries:
        return dataclasses.replace(SOLVERS["dense"].run(op, ends, tol, maxiter, seed), method="auto->dense")
    if s <= P.gram_max_side and s * L * item <= P.gram_max_bytes:
        return gram_route(op, ends, tol, maxiter, seed, label="auto->gram")
    return dataclasses.replace(SOLVERS["gkl"].run(op, ends, tol, maxiter, seed), method="auto->gkl")


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

    Scale: ``A`` is solved as ``2^e A`` (:func:`attncond.spectral.operators.explicit.autoscaled`;
    ``e = 0`` while the norm stays in the dtype's safe range, ``[2^-256, 2^256]`` for float64 and
    ``[2^-32, 2^32]`` for float32, :func:`attncond.spectral.operators.base.safe_exponent`) and every
    value, bound and residual is
    divided back exactly (:func:`unscale_svd`, ``details.info["scale_exponent"]``), so ``A·2^k``
    gives exactly ``2^k`` times the result for ``A`` while the numbers stay normal. A singular value
    above the float range raises ``OverflowError``; a product that returns NaN/inf, the wrong shape
    or a lower precision raises :class:`attncond.spectral.operators.base.OperatorOutputError`.

    Parameters
    ----------
    A : anything :func:`spectral.operators.as_operator` accepts (including
        :class:`spectral.operators.autodiff.JacobianOperator`).
    which : ``("max", "min")`` (default), ``"max"`` or ``"min"``.
    method : one of :data:`METHODS`; see the module docstring for ``"auto"``.
    tol : relative tolerance of the certified error (> 0).
    maxiter : passed to iterative solvers.
    device, dtype : conversions of ``A`` (float64 default for non-float input).
    seed : seed of random start vectors.

    Returns
    -------
    SpectralEstimate
        Values, certified intervals, ``converged``, the route in ``method``, products in
        ``matvecs``, what the certificate rests on in ``products``, and the solver's record in
        ``details``.

    Raises
    ------
    ValueError
        Unknown ``method``/``which``, ``tol ≤ 0``, NaN/inf or complex input, a solver that
        cannot compute the requested end (``randomized`` for ``σ_min``).
    TypeError
        Input that no operator can be made of.

    Examples
    --------
    >>> import numpy as np
    >>> from attncond.spectral import extreme_singular_values
    >>> est = extreme_singular_values(np.diag([4.0, 2.0, 1e-3]))
    >>> round(est.sigma_max, 12), round(est.sigma_min, 15), est.converged
    (4.0, 0.001, True)
    >>> est.sigma_min_interval[0] <= 1e-3 <= est.sigma_min_interval[1]
    True
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
        seed=seed,
    )
    need = {"largest", "smallest"} if ends == "both" else {ends}
    if method != "auto" and not need <= set(SOLVERS[method].ends):
        raise ValueError(
            f"method={method!r} computes {'/'.join(SOLVERS[method].ends)} only "
            f"({SOLVERS[method].summary}); use which='max', or method='gkl'/'dense'/'auto' for sigma_min"
        )
    if method != "auto" and SOLVERS[method].check is not None:
        SOLVERS[method].check(op.shape, 1)
    sop, scale = autoscaled(op)
    res = _auto(sop, ends, tol, maxiter, seed) if method == "auto" else SOLVERS[method].run(
        sop, ends, tol, maxiter, seed)
    res = check_result_adjoint(op, unscale_svd(res, scale))
    est = _to_estimate(res, op.dtype, tol, time.perf_counter() - t0, product_source(op))
    return with_product_error(est, op.product_error(), tol)


def _widen(iv: tuple[float, float], b: float, clip: bool) -> tuple[float, float]:
    lo, hi = iv
    if math.isnan(lo) or math.isnan(hi):
        return iv
    return (max(lo - b, 0.0) if clip else lo - b, hi + b)


def product_error_verdict(pe: Any, tol: float, values: dict[str, float], reason: str | None
                          ) -> tuple[bool, str | None]:
    """Whether the products' estimated error breaks the certificate: only when it is beyond the rounding
    allowance, and then for every end whose widened interval no longer meets ``tol``. A value of 0 (rank
    deficiency) keeps its certificate as the interval ``[0, bound]``, and the reason says so."""
    zeros = [k for k, v in values.items() if v == 0.0]
    if zeros and pe.bound > 0:
        z = (f"{', '.join(zeros)} = 0 up to the products' estimated error: widened by {pe.bound:.3g}")
        reason = reason if reason and z in reason else (f"{reason}; {z}" if reason else z)
    fails = [k for k, v in values.items() if misses_tol(pe, tol, v)]
    if not fails:
        return False, reason
    why = f"{pe.describe()}: {', '.join(fails)} no longer met tol={tol:g}"
    if reason and pe.describe() in reason:  # said already (a route that widened before)
        return True, reason
    return True, (f"{reason}; {why}" if reason else why)


def with_product_error(est: Any, pe: Any, tol: float) -> Any:
    """``est`` (a :class:`SpectralEstimate` or :class:`EigenEstimate`) with every interval widened by the
    products' estimated error ``pe.bound`` (Weyl: each singular value or eigenvalue of the computed
    operator lies within ``‖J̃ − J‖₂`` of the mathematical one's), ``converged=False`` where that is beyond
    rounding and an end no longer meets ``tol``; ``est`` unchanged when ``pe`` is ``None``."""
    if pe is None:
        return est
    b = pe.bound

    def kept(v: float) -> float:  # a value whose certificate the error withdraws is nan (its interval kept)
        return _NAN if misses_tol(pe, tol, v) else v

    if isinstance(est, EigenEstimate):
        fail, reason = product_error_verdict(pe, tol, {"λ_max": est.lambda_max, "λ_min": est.lambda_min},
                                            est.reason)
        return dataclasses.replace(
            est, lambda_max=kept(est.lambda_max), lambda_min=kept(est.lambda_min),
            lambda_max_interval=_widen(est.lambda_max_interval, b, False),
            lambda_min_interval=_widen(est.lambda_min_interval, b, False), converged=est.converged and not fail,
            reason=reason, products=pe.describe(), product_error=b)
    imax, imin = _widen(est.sigma_max_interval, b, True), _widen(est.sigma_min_interval, b, True)
    cond_iv = est.cond_interval
    if not (math.isnan(imax[0]) or math.isnan(imin[0])):
        cond_iv = (imax[0] / imin[1] if imin[1] > 0 else math.inf,
                   imax[1] / imin[0] if imin[0] > 0 else math.inf)
    fail, reason = product_error_verdict(pe, tol, {"σ_max": est.sigma_max, "σ_min": est.sigma_min}, est.reason)
    smax, smin = kept(est.sigma_max), kept(est.sigma_min)
    cond = _NAN if math.isnan(smax) or math.isnan(smin) else est.cond
    return dataclasses.replace(est, sigma_max=smax, sigma_min=smin, cond=cond, sigma_max_interval=imax,
                               sigma_min_interval=imin, cond_interval=cond_iv,
                               converged=est.converged and not fail, reason=reason, products=pe.describe(),
                               product_error=b)


def product_source(op: LinearOp) -> str:
    """What a certificate on ``op`` rests on: ``"stored"`` entries, or matrix-free products taken as exact."""
    if op.is_explicit:
        return "stored"
    return (f"assumed accurate: {type(op).__name__} products (matrix-free) are taken as exact to rounding; "
            "the intervals are about the matrix they compute")

# --------------------------------------------------------------------------- power-of-two scaling
#: the exact power-of-two unscaling of every route (moved to :mod:`attncond.spectral.solvers.scaling`,
#: which the direct solver functions share; this name stays for callers of the estimator's API)
unscale_svd = unscale_result

def _to_estimate(res: SVDResult, dtype: torch.dtype, tol: float, seconds: float,
                 products: str = "stored") -> SpectralEstimate:
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
        products=products,
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
    ``n ≤ AUTO.eigen_dense_max_side`` (2000), else Lanczos), ``"dense"`` or ``"lanczos"``.

    A non-symmetric ``S`` is refused (``ValueError``) by :func:`check_symmetric`: exactly on a stored
    ``S`` (``‖S − Sᵀ‖₂`` against ``64·n·eps·‖S‖_F``; the accepted rounding-level ``‖S − Sᵀ‖₂/2`` widens
    every interval), by a probe of two products (counted in ``matvecs``) for an implicit one. ``S`` is
    scaled by a power of two first and the results scaled back exactly (see :func:`unscale_svd`).
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
        seed=seed,
        name="S",
    )
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"S must be square, got shape {op.shape}")
    n = op.shape[0]
    start = op.n_products
    chosen = method
    if method == "auto":
        chosen = "dense" if n <= policy.AUTO.eigen_dense_max_side else "lanczos"
    sop, scale = autoscaled(op)
    Sd = sop.to_dense() if chosen == "dense" else None
    pe = op.product_error()
    allow = 0.0 if pe is None else 2.0 * pe.bound  # products computed as S + E: asymmetric up to 2‖E‖
    # a stored S is tested exactly (the bound on ‖S − Sᵀ‖₂ it accepted comes back, in sop's units)
    if Sd is not None:
        skew = check_symmetric(DenseOp(Sd), seed, allowance=math.ldexp(allow, scale.exp))
    else:  # a matrix-free op's scaling only multiplies its outputs: probe it unscaled against the allowance
        skew = check_symmetric(op if allow > 0 else sop, seed, allowance=allow)
    if chosen == "dense":
        assert Sd is not None
        r = _dense_eig(Sd, ends, tol, time.perf_counter())
    else:
        r = solve_lanczos(sop, 1, ends, tol, maxiter, seed=seed)
    if skew and op.is_explicit:  # the symmetric part was solved: S's eigenvalues lie within ‖K‖₂/2 of its
        r = _widen_eig(r, skew / 2.0)
    r = unscale_svd(r, scale)
    vals = {}
    for e in ("largest", "smallest"):
        b = getattr(r, e)
        if b is not None:
            vals[e] = (float(b.values[0]), (float(b.lower[0]), float(b.upper[0])), float(b.residual_norms[0]))
    conv, details, reason = r.converged, (r if chosen == "lanczos" else None), r.reason
    lmx = vals.get("largest", (_NAN, (_NAN, _NAN), _NAN))
    lmn = vals.get("smallest", (_NAN, (_NAN, _NAN), _NAN))
    return with_product_error(EigenEstimate(
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
        products=product_source(op),
    ), pe, tol)


def _widen_eig(r: EigResult, w: float) -> EigResult:
    """Every interval of ``r`` widened by ``w`` on both sides."""
    def wide(b: Any) -> Any:
        return None if b is None else dataclasses.replace(b, lower=b.lower - w, upper=b.upper + w)

    return dataclasses.replace(r, largest=wide(r.largest), smallest=wide(r.smallest))


def _dense_eig(Sd: torch.Tensor, ends: str, tol: float, t0: float) -> EigResult:
    """Dense ``eigh`` of the (rounding-level symmetrised) ``S`` with Bauer–Fike intervals on it."""
    Sd = 0.5 * (Sd + Sd.T)
    lam, W = torch.linalg.eigh(Sd)
    lmax = float(lam.abs().max())
    dop = DenseOp(Sd)
    blocks: dict[str, EigenBlock] = {}
    conv = True
    for e, cols in (("largest", W[:, -1:]), ("smallest", W[:, :1])):
        if ends in ("both", e):
            c = certify_eigvecs(dop, cols, end=e, lam_max_hint=lmax)
            ok = c.rho <= np.maximum(tol * np.abs(c.values), c.delta)
            conv &= bool(ok.all())
            blocks[e] = EigenBlock(e, c.values, c.lower, c.upper, c.rho, ok, c.Y)
    return EigResult(method="dense", shape=tuple(Sd.shape), largest=blocks.get("largest"),
                     smallest=blocks.get("smallest"), converged=conv, iterations=1, matvecs=dop.n_products,
                     seconds=time.perf_counter() - t0,
                     reason=None if conv else f"dense eigh residual above tol={tol:g}")
