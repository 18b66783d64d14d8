r"""Diagnostics of the user's own attention models (:class:`attncond.models.AdaptedModel`).

Called by :func:`spectral.diagnose` for an adapted model (MATH.md §4). Rows:

=============================  =====================================================================
``jac.sigma_max/min, kappa``   extreme singular values of ``J = ∂ vec(f)/∂θ_M`` (selected
                               parameters), certified (:func:`spectral.extreme_singular_values`)
``jac.null_dim``,              when ``J`` is rank-deficient (LayerNorm: 2 per token): the number
``jac.sigma_min_nonzero``,     of singular values ``≤ zero_tol = max(m, p)·eps·σ_max`` on the small
``jac.kappa_nonzero``          side and the smallest non-zero one, ``κ = σ_max/σ_min,nz``
``pl.mu``                      exact ``μ = λ_min(J Jᵀ)`` (0 by rank when ``p < m``)
``layer.<L>.jac.*``            the same for the selected parameters of each layer (≥ 2 layers)
``softmaxJ.*``, ``attn.*``     per layer and head: ``κ(J(s))`` on ``1^⊥`` of each row's *support*
                               (unmasked entries; masked zeros never give ``κ = inf``), entropy
                               ``/ log k`` and sparsity over the support (``k`` = support size)
``hessian.*``                  extremes of the Hessian of ``½‖f − y‖²`` (with targets ``y``)
``b0.kappa``, ``beta_paper``   not applicable (the [S24] model only), with the reason
=============================  =====================================================================

Routes for ``J``. The per-sample structure (``JacobianOperator(..., sample_dim=0)``) is used
when the model treats samples independently (checked on sample 0); otherwise batched VJPs.
``"dense"`` (``m·p ≤ AUTO.dense_max_entries``): :func:`extreme_singular_values` on the operator
(dense SVD of the per-sample ``J``, certified), whose full spectrum gives ``μ``, the null
space and the smallest non-zero σ. ``"gram"`` (larger): the small-side Gram ``G`` built
from per-sample Jacobian blocks of at most ``J_BLOCK_BYTES`` (the whole ``J`` is never
held beyond that) and one ``eigvalsh``; every eigenvalue then carries the Weyl interval
``± eps_g``, ``eps_g = (10·sqrt(M) + N)·eps·λ_max`` (rounding of ``G`` and of the
eigensolver, the margin of :mod:`spectral.estimate`), ``σ = sqrt(λ)`` with the interval mapped
through ``sqrt``; ``σ_min`` is flagged (``converged=False``) when that interval is wider than
``tol`` (squaring costs ``eps·κ²``). ``method="certified"`` always runs
:func:`extreme_singular_values` as well.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attncond.models import AdaptedModel, ForwardADUnsupported
from attncond.models.checks import as_float_tensor, check_choice, check_flag, check_positive_float
from attncond.spectral.diagnostics.hessian import hessian_extremes
from attncond.spectral.diagnostics.records import DiagnosticRow, Diagnostics, compute_or_undefined
from attncond.spectral.diagnostics.softmax_jacobian import softmax_jacobian_spectrum
from attncond.spectral.estimate import (
    extreme_singular_values,
    misses_tol,
    product_error_verdict,
    with_product_error,
)
from attncond.spectral.operators import JacobianOperator
from attncond.spectral.policy import AUTO
from attncond.spectral.results import to_jsonable
from attncond.spectral.solvers.gkd import gkd_run
from attncond.spectral.solvers.scaling import solve_scaled

__all__ = [
    "JacobianConditioning", "SupportAttention", "jacobian_conditioning", "support_attention",
    "diagnose_adapted", "J_BLOCK_BYTES",
]

#: per-sample Jacobian rows held at once by the Gram route (bytes)
J_BLOCK_BYTES = 512 * 1024**2
NOT_S24 = ("not applicable: {fam} model {name} is not the [S24] MultiHeadAttention (B0 = [S_i1 X_i, …, "
           "S_iH X_i] and β need per-head value maps on the raw inputs and a linear read-out W_O)")


def _fmt(x: Any) -> str:
    return "None" if x is None else (f"{x:.6g}" if isinstance(x, float) else repr(x))


# --------------------------------------------------------------------------- J and mu
@dataclass(frozen=True, repr=False)
class JacobianConditioning:
    """Conditioning of ``J = ∂ vec(f)/∂θ_M`` (``m×p``) and ``μ = λ_min(J Jᵀ)`` (module docstring).

    ``singular_values``: the ``min(m, p)`` singular values, descending (``None`` if not kept).
    ``null_dim``: how many are ``≤ zero_tol``; ``sigma_min_nonzero`` the smallest above it. ``zero_tol``
    is ``max(m, p)·eps·σ_max`` on the SVD and GKD routes, and the Gram's resolution ``sqrt(eps_g)`` on
    the Gram route, where ``null_dim`` is then an upper bound and ``sigma_min_nonzero`` is ``nan``
    with only its upper bound certified (``sigma_min_nonzero_interval = (0, upper)``).
    ``per_sample``: the per-sample route was used (else ``per_sample_reason`` says why not).
    ``converged``: every interval meets ``tol`` relative (rank-deficient ends excepted).
    ``product_error``: the autograd products' estimated error (``JacobianOperator.product_error()``), by
    which every interval is widened and below which a σ counts as zero; beyond rounding level it can make
    the result ``converged=False`` (the reason says so).
    """

    shape: tuple[int, int]
    sigma_max: float
    sigma_max_interval: tuple[float, float]
    sigma_min: float
    sigma_min_interval: tuple[float, float]
    kappa: float
    kappa_interval: tuple[float, float]
    mu: float
    mu_interval: tuple[float, float]
    null_dim: int
    sigma_min_nonzero: float | None
    sigma_min_nonzero_interval: tuple[float, float] | None
    kappa_nonzero: float | None
    zero_tol: float
    eps: float
    rank_limited: bool
    per_sample: bool
    per_sample_reason: str | None
    route: str
    converged: bool
    reason: str | None
    seconds: float
    singular_values: np.ndarray | None = field(default=None, compare=False)
    product_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "singular_values"})

    def __repr__(self) -> str:
        keys = ("shape", "sigma_max", "sigma_min", "kappa", "mu", "null_dim", "sigma_min_nonzero", "route",
                "converged")
        return "JacobianConditioning(" + ", ".join(f"{k}={_fmt(getattr(self, k))}" for k in keys) + ")"


def _operator(model: AdaptedModel, params: Mapping[str, torch.Tensor], inputs: tuple,
              per_sample: bool | None) -> tuple[JacobianOperator, str | None]:
    if per_sample is False:
        return JacobianOperator(model.functional, params, inputs), "per_sample=False"
    try:
        return JacobianOperator(model.functional, params, inputs, sample_dim=0), None
    except ValueError as exc:
        if per_sample:
            raise
        return JacobianOperator(model.functional, params, inputs), f"per-sample structure not used: {exc}"


def _from_spectrum(s: np.ndarray, eps: float, m: int, p: int, product_error: float = 0.0) -> dict[str, Any]:
    """Null-space count and smallest non-zero σ from a full descending σ spectrum; a σ within the
    rounding level or the products' estimated error of 0 counts as zero."""
    smax = float(s[0]) if s.size else 0.0
    zt = max(max(m, p) * eps * smax, product_error)
    nz = s[s > zt]
    return {"zero_tol": zt, "null_dim": int((s <= zt).sum()),
            "smin_nz": float(nz[-1]) if nz.size and nz.size < s.size else None}


def _dense_route(op: JacobianOperator, tol: float, forward_ad: bool) -> dict[str, Any]:
    m, p = op.shape
    pe = op.product_error()
    if forward_ad:
        est = extreme_singular_values(op, tol=tol)  # widened by pe there
    else:  # reverse mode only: J from VJPs (per-sample jacrev, or Jᵀ I), then the dense certified route
        Jd = op.jacobian_matrix() if op.sample_dim is not None else \
            op.rmatmat(torch.eye(m, dtype=op.dtype, device=op.device)).T.contiguous()
        est = with_product_error(extreme_singular_values(Jd, tol=tol), pe, tol)
        est = dataclasses.replace(est, method=est.method + " (reverse-mode only: no forward AD)")
    spec = est.details.spectrum if est.details is not None else None
    if spec is None:  # pragma: no cover - the dense routes always keep it
        spec = np.array([est.sigma_max, est.sigma_min])
    s = np.sort(np.asarray(spec, dtype=np.float64))[::-1]
    eps = float(torch.finfo(op.dtype).eps)
    info = _from_spectrum(s, eps, m, p, pe.bound)
    smin_nz = info["smin_nz"]
    nz_iv = None
    if smin_nz is not None:  # dense SVD: backward stable, |Δσ| ≤ c·eps·σ_max (Weyl), plus the products' error
        d = max(max(m, p) * eps * float(s[0]), pe.bound)
        nz_iv = (max(smin_nz - d, 0.0), smin_nz + d)
    return {"est": est, "s": s, "route": est.method, "converged": est.converged, "reason": est.reason,
            "smin_nz_iv": nz_iv, **info}


def _gram_route(op: JacobianOperator, tol: float) -> dict[str, Any]:
    m, p = op.shape
    side = "outer" if m <= p else "inner"
    item = torch.finfo(op.dtype).bits // 8
    if op.sample_dim is not None:
        G = op.gram(side, max_bytes=max(J_BLOCK_BYTES, 4 * (m // max(op.n_samples or 1, 1)) * p * item))
        how = "per-sample Gram"
    else:
        from attncond.spectral.operators import jacobian_gram

        G = jacobian_gram(op, side, max_bytes=J_BLOCK_BYTES)
        how = "batched-VJP Gram"
    lam = torch.linalg.eigvalsh(G).detach().cpu().double().numpy()[::-1]
    M, Nn = (m, p) if side == "inner" else (p, m)
    eps = float(torch.finfo(op.dtype).eps)
    lmax = max(float(lam[0]), 0.0)
    eg = (10.0 * math.sqrt(M) + Nn) * eps * lmax
    s = np.sqrt(np.clip(lam, 0.0, None))
    # the products' estimated error moves every σ by up to b (Weyl): σ within b of 0 counts as zero
    b = op.product_error().bound
    info = _from_spectrum(s, eps, m, p, b)
    # on λ the rounding margin decides numerical zero: every σ ≤ sqrt(eg) (the Gram's resolution)
    # is indistinguishable from 0 here, so the count is an upper bound on the null-space dimension
    zt2 = max(info["zero_tol"] ** 2, eg)
    info["zero_tol"] = math.sqrt(zt2)
    info["null_dim"] = int((lam <= zt2).sum())
    nzl = lam[lam > zt2]

    def iv(x: float) -> tuple[float, float]:
        return (max(math.sqrt(max(x - eg, 0.0)) - b, 0.0), math.sqrt(max(x + eg, 0.0)) + b)

    smax_iv, smin_iv = iv(float(lam[0])), iv(float(lam[-1]))
    smin = float(s[-1]) if lam[-1] > zt2 else 0.0
    rel = (smin_iv[1] - smin_iv[0]) / max(smin, 1e-300) if smin > 0 else 0.0
    smin_ok = rel <= tol or smin == 0.0
    smin_reason = None if smin_ok else (f"σ_min from the Gram eigenvalue: interval width {rel:.2g} relative > "
                                        f"tol (squaring loses eps·κ²); use method='certified'")
    nz_iv, nz_reason = None, None
    info["smin_nz"] = None
    if info["null_dim"] and nzl.size:
        # the first eigenvalue above the resolution is a non-zero σ, but a smaller non-zero one may
        # hide below it among those counted as zero: only the upper bound is certified
        nz_iv = (0.0, iv(float(nzl[-1]))[1])
        info["smin_nz"] = math.nan
        nz_reason = (
            f"the Gram route resolves σ only down to sqrt(eps_g) = {info['zero_tol']:.3g}: null_dim = "
            f"{info['null_dim']} counts every σ below it (an upper bound on the null-space dimension), and "
            f"the smallest non-zero σ is only bounded above (<= {nz_iv[1]:.6g}); method='dense' (where J fits) "
            "or method='certified' (GKD with null-space locking on J) resolves both")
    nz_ok = nz_reason is None
    reason = "; ".join(x for x in (smin_reason, nz_reason) if x) or None
    return {"est": None, "s": s, "route": f"gram[{how}, {side}, eigvalsh]", "converged": smin_ok and nz_ok,
            "nz_ok": nz_ok, "reason": reason, "nz_reason": nz_reason,
            "smax": float(s[0]), "smax_iv": smax_iv, "smin": smin if smin_ok else math.nan, "smin_iv": smin_iv,
            "smin_nz_iv": nz_iv, **info}


def _resolve_null_space(op: JacobianOperator, r: dict[str, Any], tol: float) -> dict[str, Any]:
    """``method="certified"`` past the dense limit: where the Gram route counted values below its
    resolution ``sqrt(eps_g)``, GKD with null-space locking on ``J`` itself (accuracy ``eps·σ_max``, not
    ``sqrt(eps)·σ_max``) gives the null-space dimension and the smallest non-zero σ, certified."""
    if not r["null_dim"]:
        return r
    m, p = op.shape
    b = op.product_error().bound  # GKD certifies J as its products compute it: widened by their error here
    g = solve_scaled(op, lambda s: gkd_run(s, 1, "smallest", tol, None, 0))  # (null-space info included)
    info = g.info or {}
    nz = info.get("smallest_nonzero")
    out = dict(r)
    out["route"] = r["route"] + f" + gkd null space ({g.matvecs} products)"
    if g.converged and g.rank_deficient and int(info.get("null_dim", 0)) == 0:
        # σ_min within GKD's attainable accuracy of 0 but no vector locked: rank deficient to working
        # precision, the dimension (≥ 1) and the smallest non-zero σ unresolved
        lo, hi = _interval_of(g.smallest)
        out.update(null_dim=1, smin_nz=math.nan, smin_nz_iv=None, nz_ok=False, gkd_smin=(0.0, (0.0, hi + b)),
                   nz_reason=f"{g.reason}: null_dim = 1 is a lower bound; a wider dtype resolves it")
    elif g.converged and int(info.get("null_dim", 0)) == 0:  # no null space after all: σ_min > 0
        lo, hi = _interval_of(g.smallest)
        out.update(null_dim=0, smin_nz=None, smin_nz_iv=None, nz_ok=True, nz_reason=None,
                   zero_tol=max(max(m, p) * float(torch.finfo(op.dtype).eps) * float(r["s"][0]), b),
                   gkd_smin=(float(g.smallest.values[0]), (max(lo - b, 0.0), hi + b)))
    elif g.converged and nz is not None and nz["converged"]:
        out.update(null_dim=int(info["null_dim"]), smin_nz=float(nz["value"]),
                   smin_nz_iv=(max(float(nz["lower"]) - b, 0.0), float(nz["upper"]) + b), nz_ok=True,
                   nz_reason=None, zero_tol=max(float(info["null_space"]["threshold"]), b))
    else:
        out["nz_reason"] = "; ".join(x for x in (r["nz_reason"], f"GKD on J did not resolve the null space: "
                                                 f"{g.reason}") if x)
    return out


def _interval_of(block: Any) -> tuple[float, float]:
    return float(block.lower[0]), float(block.upper[0])


def _one_sigma_min(est: Any, r: dict[str, Any], smin: float, smin_iv: tuple[float, float]
                   ) -> tuple[float, tuple[float, float], bool, str | None]:
    """``σ_min`` and its interval from the two certificates of the certified route: the solver's on ``J``
    and GKD's (null-space resolution, where it ran and found no null space). Both contain the true
    ``σ_min``, so their intersection does; GKD resolves ``eps·σ_max`` where the solver's rank-deficiency
    verdict may rest on a coarser level. Returns ``(σ_min, interval, GKD's value was used, reason)``."""
    g = r.get("gkd_smin")
    if est is None or g is None:
        return smin, smin_iv, False, None
    gv, giv = g
    lo, hi = max(smin_iv[0], giv[0]), min(smin_iv[1], giv[1])
    if lo > hi:
        return math.nan, (min(smin_iv[0], giv[0]), max(smin_iv[1], giv[1])), True, (
            f"the solver's σ_min interval [{smin_iv[0]:.6g}, {smin_iv[1]:.6g}] and GKD's [{giv[0]:.6g}, "
            f"{giv[1]:.6g}] do not meet: one certificate is wrong, σ_min is not certified (their hull is kept)")
    return gv, (lo, hi), True, None


def _unused_params(model: AdaptedModel, params: Mapping[str, torch.Tensor], inputs: tuple) -> list[str]:
    """Names in ``params`` (parameters of the model: :meth:`AdaptedModel.check_params`) the output does not
    depend on (outside its autograd graph)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        out = model.functional(leaves, *inputs)
        if not out.requires_grad:
            return list(params)
        grads = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
    return [k for k, g in zip(leaves, grads, strict=True) if g is None]


def _zero_jacobian(model: AdaptedModel, params: Mapping[str, torch.Tensor], inputs: tuple,
                   t0: float) -> JacobianConditioning:
    """``J = 0``: the output does not depend on any selected parameter (every name one of the model's:
    :meth:`AdaptedModel.check_params`); ``μ = 0`` with that reason."""
    with torch.no_grad():
        m = int(model.functional(dict(params), *inputs).numel())
    p = int(sum(v.numel() for v in params.values()))
    k = min(m, p)
    return JacobianConditioning(
        shape=(m, p), sigma_max=0.0, sigma_max_interval=(0.0, 0.0), sigma_min=0.0,
        sigma_min_interval=(0.0, 0.0),
        kappa=math.inf, kappa_interval=(math.inf, math.inf), mu=0.0, mu_interval=(0.0, 0.0), null_dim=k,
        sigma_min_nonzero=None, sigma_min_nonzero_interval=None, kappa_nonzero=None, zero_tol=0.0,
        eps=float(torch.finfo(next(iter(params.values())).dtype).eps), rank_limited=p < m, per_sample=False,
        per_sample_reason="not needed: J = 0", route="none (J = 0 structurally)", converged=True,
        reason=f"J = 0: the output does not depend on the selected parameters {list(params)}",
        seconds=time.perf_counter() - t0, singular_values=np.zeros(k))


def jacobian_conditioning(
    model: AdaptedModel,
    params: Mapping[str, torch.Tensor] | None = None,
    inputs: tuple | None = None,
    *,
    method: str = "auto",
    per_sample: bool | None = None,
    tol: float = 1e-10,
    keep_spectrum: bool = True,
) -> JacobianConditioning:
    r"""κ, σ_max, σ_min of ``J = ∂ vec(f(θ_M; inputs))/∂θ_M`` and ``μ = λ_min(J Jᵀ)`` (MATH.md §4).

    ``method``: ``"auto"`` (dense SVD when ``m·p ≤ AUTO.dense_max_entries``, else the Gram route),
    ``"dense"``, ``"gram"`` or ``"certified"`` (:func:`extreme_singular_values` on the operator,
    plus the Gram spectrum for ``μ`` and the null space when the dense route does not apply).
    ``per_sample``: ``None`` tries the per-sample structure and falls back (the reason is kept).
    ``μ`` is ``σ_min²`` when ``p ≥ m`` (``J Jᵀ`` is ``m×m`` with the same non-zero spectrum),
    else 0 by rank (``rank_limited``).

    Parameters
    ----------
    model : AdaptedModel
        the user's module, wrapped by :func:`attncond.models.adapt`.
    params : mapping of str to torch.Tensor, optional
        the point and the parameters ``J`` is taken over: names of the module's parameters with
        tensors of their shape and dtype (default: ``model.params()``). A name the output does not
        depend on gives a structurally zero block of ``J`` (left out, with a reason; ``J = 0`` if all are).
    inputs : tuple, optional
        inputs as :meth:`AdaptedModel.check_inputs` takes them (default: the model's example inputs).
    method : {"auto", "dense", "gram", "certified"}
    per_sample : bool or None
    tol : float
        relative tolerance of the certified intervals, finite and > 0.
    keep_spectrum : bool
        keep the full singular-value spectrum (``singular_values``).

    Returns
    -------
    JacobianConditioning

    Raises
    ------
    TypeError
        ``model`` not an :class:`AdaptedModel`; ``per_sample``/``keep_spectrum`` not bools; a ``params``
        value that is not a tensor or of another dtype (:meth:`AdaptedModel.check_params`).
    ValueError
        unknown ``method``; ``tol`` not finite and > 0; a ``params`` name the module does not have (the
        error lists the known names), a value of another shape or with NaN/inf; bad ``inputs``.
    """
    if not isinstance(model, AdaptedModel):
        raise TypeError(f"model must be an attncond.models.AdaptedModel (models.adapt(module, inputs)), got "
                        f"{type(model).__name__}")
    check_choice("method", method, ("auto", "dense", "gram", "certified"))
    tol = check_positive_float("tol", tol)
    per_sample = check_flag("per_sample", per_sample, allow_none=True)
    keep_spectrum = check_flag("keep_spectrum", keep_spectrum)
    t0 = time.perf_counter()
    params = model.params() if params is None else model.check_params(params)
    inputs = model.inputs if inputs is None else model.check_inputs(inputs)
    unused = _unused_params(model, params, inputs)
    if len(unused) == len(params):
        return _zero_jacobian(model, params, inputs, t0)
    params = {k: v for k, v in params.items() if k not in unused}
    op, ps_reason = _operator(model, params, inputs, per_sample)
    m, p = op.shape
    dense = method == "dense" or (method in ("auto", "certified") and m * p <= AUTO.dense_max_entries)
    try:
        model.check_forward_ad()
        forward_ad = True
    except ForwardADUnsupported:
        forward_ad = False
    r = _dense_route(op, tol, forward_ad) if dense else _gram_route(op, tol)
    certify = method == "certified" and not dense
    if certify and not forward_ad:
        raise ForwardADUnsupported("method='certified' needs forward-mode AD (J·v products); "
                                   "use eager=True in models.adapt, or method='gram'")
    est = r["est"] if dense else (extreme_singular_values(op, tol=tol) if certify else None)
    if certify and est is not None:
        r = _resolve_null_space(op, r, tol)
    if est is not None:
        smax, smax_iv = est.sigma_max, est.sigma_max_interval
        smin, smin_iv = est.sigma_min, est.sigma_min_interval
        if dense:
            conv, reason = est.converged and r["converged"], est.reason or r["reason"]
        else:  # σ_min is certified by the solver: the Gram's own σ_min width no longer matters
            smin, smin_iv, by_gkd, why = _one_sigma_min(est, r, smin, smin_iv)
            # with GKD's σ_min the solver's σ_min verdict is replaced: σ_max's stands (nan if it failed)
            conv = (not math.isnan(smax) and not math.isnan(smin)) if by_gkd else est.converged
            conv = conv and r["nz_ok"]
            reason = "; ".join(x for x in ((None if by_gkd and not why else est.reason), why, r["nz_reason"])
                               if x) or None
        route = r["route"] if dense else f"{r['route']} + {est.method}"
    else:
        smax, smax_iv, smin, smin_iv = r["smax"], r["smax_iv"], r["smin"], r["smin_iv"]
        conv, reason, route = r["converged"], r["reason"], r["route"]
    r = dict(r)
    if smin_iv[0] > 0.0:  # σ_min certified > 0: J has full rank, whatever the spectrum's count said
        r.update(null_dim=0, smin_nz=None, smin_nz_iv=None)
        if smin == 0.0:
            smin = float(r["s"][-1])
    elif smin == 0.0 and not r["null_dim"]:  # σ_min = 0 to working precision, no σ counted as zero
        r.update(null_dim=1, smin_nz=math.nan, smin_nz_iv=None)
        conv = False
        reason = (reason + "; " if reason else "") + (
            "σ_min = 0 to working precision but no singular value was resolved as zero: null_dim = 1 is a "
            "lower bound and the smallest non-zero σ is not resolved")
    rank_limited = p < m
    # μ = σ_min² with the interval of σ_min squared (≥ 0 by construction); nan where σ_min is
    mu, mu_iv = smin**2, (smin_iv[0] ** 2, smin_iv[1] ** 2)
    if rank_limited:
        mu, mu_iv = 0.0, (0.0, 0.0)
        reason = (reason + "; " if reason else "") + f"p={p} < m={m}: J Jᵀ is singular by rank, μ = 0"
    kiv = (smax_iv[0] / smin_iv[1] if smin_iv[1] > 0 else math.inf,
           smax_iv[1] / smin_iv[0] if smin_iv[0] > 0 else math.inf)
    if smax == 0.0:
        reason = (reason + "; " if reason else "") + (
            "J = 0: the output does not depend on the selected parameters")
    if unused:
        reason = (reason + "; " if reason else "") + (
            f"the output does not depend on {unused}: their zero columns of J are left out (J Jᵀ and μ "
            "are unchanged)")
    snz = r["smin_nz"]
    pe = op.product_error()
    ends = {"σ_max": smax, "σ_min": smin if smin > 0 else math.nan,
            "the smallest non-zero σ": snz if snz is not None else math.nan}
    fail, reason = product_error_verdict(pe, tol, ends, reason)
    conv = conv and not fail
    # a value whose certificate the products' error withdraws is nan, its interval kept
    smax, smin = (math.nan if misses_tol(pe, tol, v) else v for v in (smax, smin))
    if snz is not None and misses_tol(pe, tol, snz):
        snz = math.nan
    if not rank_limited and math.isnan(smin):
        mu = math.nan
    return JacobianConditioning(
        shape=(m, p), sigma_max=float(smax), sigma_max_interval=tuple(smax_iv), sigma_min=float(smin),
        sigma_min_interval=tuple(smin_iv), kappa=(math.inf if smin == 0 else smax / smin), kappa_interval=kiv,
        mu=float(mu), mu_interval=tuple(float(x) for x in mu_iv), null_dim=int(r["null_dim"]),
        sigma_min_nonzero=snz, sigma_min_nonzero_interval=r["smin_nz_iv"],
        kappa_nonzero=(smax / snz if snz else None), zero_tol=float(r["zero_tol"]),
        eps=float(torch.finfo(op.dtype).eps), rank_limited=rank_limited,
        per_sample=op.sample_dim is not None, per_sample_reason=ps_reason, route=route, converged=bool(conv),
        reason=reason, seconds=time.perf_counter() - t0, singular_values=r["s"] if keep_spectrum else None,
        product_error=float(pe.bound),
    )


# --------------------------------------------------------------------------- attention on the support
@dataclass(frozen=True, repr=False)
class SupportAttention:
    """Softmax-Jacobian spectra, entropy and sparsity of one layer over each row's support.

    ``kappa``: ``(N, H, n_q)`` condition numbers ``λ_max/λ_2`` of ``J(s) = diag(s) − s sᵀ``
    restricted to ``1^⊥`` of the support (``R^k``, ``k`` unmasked entries); ``nan`` for rows
    with ``k = 1`` (no direction). Per head: ``kappa_median``, ``kappa_max``, ``n_singular``
    (rows with ``λ_2`` numerically 0 on the support: genuine underflow, never a mask),
    ``entropy`` (mean nats over rows), ``normalized_entropy`` (mean of ``H(s)/log k``, rows with
    ``k ≥ 2``) and ``sparsity`` (fraction of support entries ``≤ eps``).
    """

    layer: str
    masks: tuple[str, ...]
    kappa: np.ndarray
    kappa_median: np.ndarray
    kappa_max: np.ndarray
    n_singular: np.ndarray
    n_trivial_rows: int
    entropy: np.ndarray
    normalized_entropy: np.ndarray
    sparsity: np.ndarray
    eps: float

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "kappa"})

    def __repr__(self) -> str:
        return (f"SupportAttention({self.layer!r}, masks={self.masks}, kappa_median="
                f"{np.round(self.kappa_median, 4).tolist()}, entropy/log k="
                f"{np.round(self.normalized_entropy, 4).tolist()}, "
                f"sparsity={np.round(self.sparsity, 4).tolist()})")


def support_attention(amap: Any, eps: float = 1e-3) -> SupportAttention:
    """:class:`SupportAttention` of an :class:`attncond.models.AttentionMap` (rows grouped by support size)."""
    eps = check_positive_float("eps", eps)
    P = amap.probs.detach().to(torch.float64)
    sup = amap.support_full()
    N, H, nq, nk = P.shape
    if not bool(torch.isfinite(P).all()):
        raise ValueError(f"attention probabilities of {amap.layer} contain NaN or inf")
    k = sup.sum(-1)  # (N, H, nq)
    kappa = torch.full((N, H, nq), math.nan, dtype=torch.float64)
    sing = torch.zeros((N, H, nq), dtype=torch.bool)
    flatP, flatS, flatk = P.reshape(-1, nk), sup.reshape(-1, nk), k.reshape(-1)
    for kk in torch.unique(flatk).tolist():
        if kk < 2:
            continue
        idx = torch.nonzero(flatk == kk).squeeze(1)
        rows = flatP[idx][flatS[idx]].reshape(-1, kk)
        rows = rows / rows.sum(-1, keepdim=True)  # mass outside the support is exactly 0 (checked below)
        sj = softmax_jacobian_spectrum(rows)
        kappa.view(-1)[idx] = torch.as_tensor(sj.kappa, dtype=torch.float64)
        sing.view(-1)[idx] = torch.as_tensor(np.isinf(sj.kappa))
    outside = float((P * (~sup)).abs().max()) if nk else 0.0
    if outside > 1e-12:
        raise ValueError(f"attention of {amap.layer} puts mass {outside:.3g} outside its mask: the mask "
                         "(padding/causal) does not match the model's")
    ent = -torch.where(P > 0, P * torch.log(P), torch.zeros_like(P)).sum(-1)
    logk = torch.log(k.to(torch.float64))
    nent = torch.where(k >= 2, ent / logk.clamp_min(1e-300), torch.full_like(ent, math.nan))
    spars = ((P <= eps) & sup).sum(dim=(0, 2, 3)).double() / sup.sum(dim=(0, 2, 3)).double()
    kap = kappa.numpy()
    with np.errstate(all="ignore"):
        med = np.array([np.nanmedian(kap[:, h]) if np.isfinite(kap[:, h]).any() or np.isinf(kap[:, h]).any()
                        else math.nan for h in range(H)])
        kmax = np.array([np.nanmax(kap[:, h]) if (~np.isnan(kap[:, h])).any() else math.nan for h in range(H)])
    return SupportAttention(
        layer=amap.layer, masks=tuple(amap.masks), kappa=kap, kappa_median=med, kappa_max=kmax,
        n_singular=sing.sum(dim=(0, 2)).numpy(), n_trivial_rows=int((k < 2).sum()),
        entropy=ent.mean(dim=(0, 2)).numpy(), normalized_entropy=_nanmean_heads(nent.numpy()),
        sparsity=spars.numpy(), eps=eps,
    )


def _nanmean_heads(x: np.ndarray) -> np.ndarray:
    """Mean over axes 0 and 2 of ``(N, H, n_q)`` ignoring NaN; NaN for a head with no finite entry
    (every row a 1-entry support), without numpy's "Mean of empty slice" warning."""
    ok = ~np.isnan(x)
    cnt = ok.sum(axis=(0, 2))
    tot = np.where(ok, x, 0.0).sum(axis=(0, 2))
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), math.nan)


# --------------------------------------------------------------------------- diagnose
_LAYER = re.compile(r"^(.*?(?:layer|layers|h|blocks|block|encoder\.layer)\.\d+)\.")


def layer_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Selected parameter names grouped by layer prefix (``…layer.3.``, ``h.0.``, ``blocks.1.``)."""
    out: dict[str, list[str]] = {}
    for nm in names:
        mt = _LAYER.match(nm)
        out.setdefault(mt.group(1) if mt else "<other>", []).append(nm)
    return out


def _jac_rows(prefix: str, jc: JacobianConditioning, what: str, tol: float) -> list[DiagnosticRow]:
    rows = [
        DiagnosticRow(f"{prefix}.sigma_max", f"σ_max(J) {what}", jc.sigma_max, jc.sigma_max_interval),
        DiagnosticRow(f"{prefix}.sigma_min", f"σ_min(J) {what}", jc.sigma_min, jc.sigma_min_interval,
                      note=jc.reason),
        DiagnosticRow(f"{prefix}.kappa", f"κ(J) {what}", jc.kappa, jc.kappa_interval,
                      note=f"route={jc.route}, m={jc.shape[0]}, p={jc.shape[1]}"
                      + ("" if jc.converged else "; NOT certified to tol")),
    ]
    if jc.null_dim:
        unresolved = jc.sigma_min_nonzero is not None and math.isnan(jc.sigma_min_nonzero)
        rows.append(DiagnosticRow(f"{prefix}.null_dim", f"null-space dimension of J {what}", jc.null_dim,
                                  note=f"σ ≤ zero_tol={jc.zero_tol:.3g} on the small side"
                                  + ("; an upper bound: the Gram route cannot tell smaller non-zero σ from 0"
                                     if unresolved else "")))
        if jc.sigma_min_nonzero is not None:
            eps = jc.eps
            ce = jc.kappa_nonzero * eps if jc.kappa_nonzero else math.nan
            note = None if not ce > tol else (
                f"below the attainable relative accuracy: σ_max/σ_nz·eps = {ce:.2g} > tol={tol:g} (only "
                f"±{max(jc.shape) * eps * jc.sigma_max:.2g} absolute)")
            rows.append(DiagnosticRow(f"{prefix}.sigma_min_nonzero", f"smallest non-zero σ(J) {what}",
                                      jc.sigma_min_nonzero, jc.sigma_min_nonzero_interval, note=note))
            rows.append(DiagnosticRow(f"{prefix}.kappa_nonzero", f"σ_max/σ_min,nz(J) {what}", jc.kappa_nonzero))
    return rows


def _attention_rows(maps: Sequence[SupportAttention]) -> list[DiagnosticRow]:
    rows: list[DiagnosticRow] = []
    for a in maps:
        masks = "+".join(a.masks) or "none"
        for h in range(len(a.kappa_median)):
            key = f"attn.{a.layer}.h{h}"
            note = f"support masks: {masks}"
            if a.n_singular[h]:
                note += f"; {int(a.n_singular[h])} rows singular on their support (underflow)"
            rows.append(DiagnosticRow(f"{key}.softmaxJ.kappa_median", f"{a.layer} head {h}: κ(J(s)) median",
                                      float(a.kappa_median[h]), note=note))
            rows.append(DiagnosticRow(f"{key}.softmaxJ.kappa_max", f"{a.layer} head {h}: κ(J(s)) max",
                                      float(a.kappa_max[h])))
            rows.append(DiagnosticRow(f"{key}.entropy", f"{a.layer} head {h}: entropy / log k",
                                      float(a.normalized_entropy[h])))
            rows.append(DiagnosticRow(f"{key}.sparsity", f"{a.layer} head {h}: fraction ≤ {a.eps:g} on support",
                                      float(a.sparsity[h])))
    if maps:
        allk = np.concatenate([a.kappa.reshape(-1) for a in maps])
        allk = allk[~np.isnan(allk)]
        trivial = sum(a.n_trivial_rows for a in maps)
        note = f"over each row's support; {trivial} rows with a 1-entry support skipped" if trivial else \
            "over each row's support"
        rows.insert(0, DiagnosticRow("softmaxJ.kappa_median", "κ(J(s)) on 1⊥ of the support, median",
                                     float(np.median(allk)) if allk.size else math.nan, note=note))
        rows.insert(1, DiagnosticRow("softmaxJ.kappa_max", "κ(J(s)) on 1⊥ of the support, max",
                                     float(np.max(allk)) if allk.size else math.nan))
        rows.insert(2, DiagnosticRow("attn.entropy", "attention entropy / log k (mean over layers, heads)",
                                     float(np.mean(np.concatenate([a.normalized_entropy for a in maps])))))
        rows.insert(3, DiagnosticRow("attn.sparsity", "fraction of support coefficients ≤ eps (mean)",
                                     float(np.mean(np.concatenate([a.sparsity for a in maps])))))
    return rows


def _check_targets(model: AdaptedModel, params: dict[str, torch.Tensor], inputs: tuple, y: Any) -> torch.Tensor:
    """Targets ``y`` as a finite real tensor of the model's dtype, of the output's shape or its ``vec``
    (one forward, no grad), else an error naming ``y``, before any work."""
    yt = as_float_tensor("y", y, dtype=model.dtype, device=model.device)
    with torch.no_grad():
        shape = tuple(model.functional(params, *inputs).shape)
    n = math.prod(shape)
    if tuple(yt.shape) != shape and tuple(yt.shape) != (n,):
        raise ValueError(f"y must have the output's shape {shape} (or be its vec, {n} entries), got shape "
                         f"{tuple(yt.shape)}")
    return yt


def _hessian_rows(model: AdaptedModel, params: dict[str, torch.Tensor], inputs: tuple, yt: torch.Tensor
                  ) -> tuple[list[DiagnosticRow], Any]:
    """Hessian rows of ``½‖f − y‖²`` (``yt`` from :func:`_check_targets`)."""
    try:
        model.check_forward_ad()
    except ForwardADUnsupported as exc:
        return [DiagnosticRow("hessian.lambda_max", "Hessian λ_max", None, defined=False, note=str(exc))], None
    hes = hessian_extremes(lambda p: model.loss(p, *inputs, yt), params)
    rows = [DiagnosticRow("hessian.lambda_max", "Hessian λ_max of ½‖f − y‖²", hes.lambda_max,
                          hes.lambda_max_interval, note=hes.end_note()),
            DiagnosticRow("hessian.lambda_min", "Hessian λ_min", hes.lambda_min, hes.lambda_min_interval,
                          note=hes.end_note("indefinite" if hes.indefinite else None))]
    if hes.smallest_nonzero is None:
        rows.append(DiagnosticRow("hessian.smallest_nonzero", "Hessian non-zero λ nearest 0", None,
                                  defined=False, note=hes.reason or ""))
    else:
        rows.append(DiagnosticRow("hessian.smallest_nonzero", "Hessian non-zero λ nearest 0",
                                  hes.smallest_nonzero))
    rows.append(DiagnosticRow("hessian.null_dim", "Hessian null-space dimension seen", hes.null_dim_seen,
                              note=hes.method))
    return rows, hes


@dataclass(frozen=True, repr=False)
class ForeignDetails:
    """The typed sub-results of :func:`diagnose_adapted`: ``jacobian`` (all selected parameters),
    ``layers`` (per layer group, when there are ≥ 2), ``attention`` (per layer) and ``describe``."""

    jacobian: JacobianConditioning | None
    layers: dict[str, JacobianConditioning]
    attention: tuple[SupportAttention, ...]
    describe: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"jacobian": None if self.jacobian is None else self.jacobian.to_dict(),
                "layers": {k: v.to_dict() for k, v in self.layers.items()},
                "attention": [a.to_dict() for a in self.attention], "describe": to_jsonable(self.describe)}

    def __repr__(self) -> str:
        return (f"ForeignDetails(jacobian={self.jacobian!r}, layers={list(self.layers)}, "
                f"attention={len(self.attention)})")


def _safe_rows(rows: list[DiagnosticRow], key: str, label: str, fn: Any) -> Any:
    return compute_or_undefined(rows, [(key, label)], fn)


def diagnose_adapted(
    model: AdaptedModel,
    X: Any = None,
    y: Any = None,
    *,
    trainable: str | Sequence[str] | None = None,
    hessian: bool | None = None,
    sparsity_eps: float = 1e-3,
    tol: float = 1e-10,
    spectra: bool = True,
    method: str = "auto",
    per_layer: bool = True,
    per_sample: bool | None = None,
) -> Diagnostics:
    """Every diagnostic of MATH.md §4 that applies to an adapted foreign model (module docstring).

    ``X``: the inputs (a tensor or tuple; default the adapter's example inputs); ``y``: targets
    for the Hessian rows, of the output's shape or its ``vec``; ``trainable``: parameter pattern(s)
    overriding the adapter's selection. Every argument is checked before any work: a bad one is a
    ``TypeError``/``ValueError`` naming it, never an undefined row (rows are undefined only where a
    diagnostic does not apply or fails on valid input).
    """
    from attncond.models import select_params

    if not isinstance(model, AdaptedModel):
        raise TypeError(f"model must be an attncond.models.AdaptedModel, got {type(model).__name__}")
    hessian = check_flag("hessian", hessian, allow_none=True)
    check_positive_float("sparsity_eps", sparsity_eps)
    tol = check_positive_float("tol", tol)
    check_choice("method", method, ("auto", "dense", "gram", "certified"))
    spectra = check_flag("spectra", spectra)
    per_layer = check_flag("per_layer", per_layer)
    per_sample = check_flag("per_sample", per_sample, allow_none=True)
    do_h = (y is not None) if hessian is None else hessian
    if do_h and y is None:
        raise ValueError("hessian=True needs targets y")
    t0 = time.perf_counter()
    inputs = model.inputs if X is None else model.check_inputs(X if isinstance(X, tuple) else (X,))
    names = model.trainable if trainable is None else select_params(model.module, trainable, name="trainable")
    ps = dict(model.module.named_parameters())
    params = {k: ps[k].detach().clone() for k in names}
    yt = None if y is None else _check_targets(model, params, inputs, y)
    desc = model.describe()
    desc["params"] = list(names)
    desc["n_params"] = int(sum(v.numel() for v in params.values()))
    cfg = {k: desc[k] for k in ("family", "n_params", "inputs", "causal", "padding_mask", "dtype")}
    cfg["params"] = list(names) if len(names) <= 12 else f"{len(names)} tensors"
    rows: list[DiagnosticRow] = []
    na = NOT_S24.format(fam=model.family, name=type(model.module).__name__)
    rows += [DiagnosticRow("b0.kappa", "κ(B0)", None, defined=False, note=na),
             DiagnosticRow("beta_paper", "β_paper", None, defined=False, note=na)]
    rows.append(DiagnosticRow("adapter.eager", "eager attention / math SDPA backend", model.eager,
                              note="; ".join(desc["notes"]) or None))
    spec: dict[str, np.ndarray] = {}
    jc = _safe_rows(rows, "jac.kappa", "κ(J)", lambda: jacobian_conditioning(
        model, params, inputs, method=method, per_sample=per_sample, tol=tol))
    if jc is not None:
        rows += _jac_rows("jac", jc, "(selected parameters)", tol)
        rows.append(DiagnosticRow("pl.mu", "μ = λmin(JJᵀ)", jc.mu, jc.mu_interval,
                                  note=("p < m: zero by rank; " if jc.rank_limited else "")
                                  + ("per-sample structure" if jc.per_sample
                                     else (jc.per_sample_reason or ""))))
        if spectra and jc.singular_values is not None:
            spec["J"] = jc.singular_values
    layers: dict[str, JacobianConditioning] = {}
    groups = layer_groups(names)
    if per_layer and len(groups) > 1:
        for g, gnames in groups.items():
            def one(gnames: list[str] = gnames) -> JacobianConditioning:
                return jacobian_conditioning(model, {k: params[k] for k in gnames}, inputs, method=method,
                                             per_sample=per_sample, tol=tol, keep_spectrum=False)

            lj = _safe_rows(rows, f"layer.{g}.jac.kappa", f"κ(J) {g}", one)
            if lj is not None:
                layers[g] = lj
                rows += _jac_rows(f"layer.{g}.jac", lj, f"({g})", tol)
    # one layer whose mask does not match its attention marks these rows undefined, not the report
    got = _safe_rows(rows, "softmaxJ.kappa_median", "κ(J(s)) on the support",
                     lambda: tuple(support_attention(a, sparsity_eps) for a in model.attention()))
    att: tuple[SupportAttention, ...] = ()
    if got is not None:
        att = got
        rows += _attention_rows(att)
        if spectra:
            for a in att:
                k = a.kappa.reshape(-1)
                spec[f"softmaxJ_kappa[{a.layer}]"] = np.sort(k[~np.isnan(k)])
    rows.append(DiagnosticRow("z.kappa", "κ(Z)", None, defined=False,
                              note="not applicable: Z is the [Q25] AttentionBlock output"))
    hes = None
    if do_h:
        hr = _safe_rows(rows, "hessian.lambda_max", "Hessian λ_max",
                        lambda: _hessian_rows(model, params, inputs, yt))
        if hr is not None:
            rows += hr[0]
            hes = hr[1]
    else:
        rows.append(DiagnosticRow("hessian.lambda_max", "Hessian λ_max", None, defined=False,
                                  note="no targets y given"))
    return Diagnostics(model=f"{type(model.module).__name__} [{model.family}]", config=cfg, rows=tuple(rows),
                       hessian=hes, spectra=spec, seconds=time.perf_counter() - t0,
                       foreign=ForeignDetails(jc, layers, att, desc))
