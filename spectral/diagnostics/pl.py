"""The exact PL constant ``μ = λ_min(J Jᵀ)`` next to the papers' bounds (MATH.md §4; [S24] Thm. 1)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from attncond.models import MultiHeadAttention, jacobian_rank_bound
from attncond.spectral import policy
from attncond.spectral.diagnostics.attention_jacobian import AttentionJacobian, closed_form_kernel
from attncond.spectral.diagnostics.b0 import BetaPaper, beta_paper, check_b0_shape, sigma_dout
from attncond.spectral.diagnostics.gram_preconditioner import AttentionGramPreconditioner
from attncond.spectral.diagnostics.structured import NTKGram, ntk_gram
from attncond.spectral.operators import GramOperator
from attncond.spectral.results import SingularBlock, record_repr, record_to_dict
from attncond.spectral.solvers.gkd import golub_kahan_davidson
from attncond.spectral.solvers.gkl import golub_kahan_lanczos
from attncond.spectral.solvers.gram_lanczos import gram_basis
from attncond.spectral.solvers.lanczos import symmetric_lanczos
from attncond.spectral.solvers.psd import GRAM_METHODS, GramExtremes, gram_extremes
from attncond.spectral.solvers.validate import check_maxiter

#: ``eig_method`` choices: the Gram methods of :func:`gram_extremes` and the three matrix-free routes
#: (``"matrix-free"``: Lanczos on the implicit Gram; ``"matrix-free-svd"``: GKD on ``J``;
#: ``"matrix-free-preconditioned"``: GKD on ``J`` preconditioned by :class:`AttentionGramPreconditioner`)
MATRIX_FREE = ("matrix-free", "matrix-free-svd", "matrix-free-preconditioned")
EIG_METHODS = (*GRAM_METHODS, *MATRIX_FREE)
#: the matrix-free route ``"auto"`` takes above the Gram limit: measured (benchmarks/ntk_matrix_free.py)
#: 0.78 s / 234 products against Lanczos's 1.4 s / 534 at medium, and 20.0 s / 290 against 42.7 s / 924
#: at large; it is also certified on ``J`` (accurate to ``eps·σ_max·σ_min``, not ``eps·λ_max``)
AUTO_MATRIX_FREE = "matrix-free-preconditioned"
#: a rank bound (models.jacobian_rank_bound) below this multiple of m is reported as "nearly square"
NEAR_SQUARE = 1.1


@dataclass(frozen=True, repr=False)
class PLConstant:
    """Exact PL constant ``μ = λ_min(J Jᵀ)`` with the bounds of MATH.md §4 side by side.

    ``mu_interval`` is a Bauer–Fike interval on the computed Gram; ``numerically_zero`` when
    ``μ ≤ zero_threshold``. ``corrected_bound = min_h σ²_min(W^O_h) σ²_min(B0ᵀ)`` (per-head
    value maps) or ``σ²_min(W^O) σ²_min(B0ᵀ)`` (joint), defined when ``W_V`` is trained;
    ``beta_paper`` is the paper's ``β``. ``holds`` maps each bound to ``bound ≤ μ`` (up to
    ``zero_threshold``) or ``None`` when undefined. ``value_block_mu = λ_min(J_V J_Vᵀ)`` is
    computed for the joint value map (where it equals ``σ²_min(W^O) σ²_min(B0ᵀ)`` exactly).
    ``products`` counts the products with ``J`` or ``Jᵀ`` of a matrix-free route (``None`` when a
    Gram was formed). ``rank_bound``: the exact bound ``rank J ≤ rank_bound`` of
    :func:`models.jacobian_rank_bound` (``p`` for other models); ``rank_limited`` when it is below
    ``m``, and then ``μ = 0`` exactly, interval ``[0, 0]``, whatever the route.
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
    products: int | None = None
    rank_bound: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = record_to_dict(self, skip=("gram",))
        out["gram"] = None if self.gram is None else self.gram.to_dict()
        return out

    def __repr__(self) -> str:
        return record_repr(self, ("mu", "mu_interval", "lambda_max", "numerically_zero", "corrected_bound",
                            "beta_paper", "holds", "route", "eig_method", "n_outputs", "n_params",
                            "rank_bound"))

def pl_constant(
    model: Any,
    X: Any,
    trainable: Sequence[str] | None = None,
    *,
    eig_method: str = "auto",
    value_block: bool | None = None,
    tol: float = 1e-10,
    beta: BetaPaper | None = None,
    maxiter: int | None = None,
) -> PLConstant:
    r"""``μ = λ_min(J Jᵀ)``, ``J = ∂ vec(model(X))/∂θ_M`` (MATH.md §4, "Exact PL constant").

    The Gram is the closed form of :func:`spectral.diagnostics.structured.ntk_gram` (batched VJPs when no
    closed form exists; the route is recorded). Its eigenvalue *is* ``μ`` (a squared quantity,
    so nothing is lost by squaring); the accuracy attainable is ``‖G‖·eps``.
    ``μ > 0`` needs ``rank J = m = N·n·d_out``: below ``p ≥ m``, and for a :class:`models.MultiHeadAttention`
    below the bound of :func:`models.jacobian_rank_bound` (the output depends on ``W_Q, W_K`` only
    through ``W_Q^h W_K^hᵀ`` for product-logit kernels); ``rank_limited`` otherwise, when ``μ = 0``
    exactly and the Gram's bottom is not computed on the matrix-free routes. For a
    :class:`models.MultiHeadAttention` the corrected bound
    ``J Jᵀ ⪰ J_V J_Vᵀ = Σ_h (B_hB_hᵀ)⊗(W^{O}_hᵀW^O_h) ⪰ min_h σ²_min(W^O_h) B0B0ᵀ`` and the
    paper's ``β`` are reported with whether each holds.
    ``maxiter``: the step budget of each iterative solve on the matrix-free routes (GKD/GKL steps of
    two products, or Lanczos steps on ``G``); ``None``: each solver's own default (GKD's is
    ``max(4000, 2m)`` steps, hours at m = 32,768). A run that spends it reports ``μ = nan`` with its
    certified interval and a "not converged" note. The formed-Gram routes are direct and ignore it.

    ``eig_method``: a method of :func:`~attncond.spectral.solvers.psd.gram_extremes` on the formed Gram;
    ``"matrix-free"`` (never forms ``G``; closed-form kernels only): Lanczos on ``G v = J(Jᵀv)`` with
    the products of :class:`~attncond.spectral.diagnostics.attention_jacobian.AttentionJacobian`,
    certified on ``G`` like the Gram routes; ``"matrix-free-svd"``: GKD on ``J``, ``μ = σ_min(J)²``,
    accurate to ``eps·σ_max·σ_min`` (for ``μ`` near ``eps·λ_max``); ``"matrix-free-preconditioned"``:
    the same GKD on ``J`` for ``μ``, preconditioned by
    :class:`~attncond.spectral.diagnostics.gram_preconditioner.AttentionGramPreconditioner` (GD+k), and
    GKL for ``λ_max``; ``"auto"``: the formed Gram up to ``AUTO.pl_gram_max_bytes``,
    ``AUTO_MATRIX_FREE`` (``"matrix-free-preconditioned"``, measured fastest) above.

    ``value_block``: also compute ``λ_min(J_V J_Vᵀ)`` (default: for the joint value map only,
    where ``λ_min(J_VJ_Vᵀ) = σ²_min(W^O)σ²_min(B0ᵀ)`` is exact). ``beta``: a
    :func:`~attncond.spectral.diagnostics.beta_paper` of the same ``(model, X)`` to reuse.
    """
    if value_block is not None and not isinstance(value_block, bool):
        raise TypeError(f"value_block must be a bool or None, got {value_block!r}")
    if eig_method not in EIG_METHODS:
        raise ValueError(f"unknown eig_method {eig_method!r}; known: {', '.join(map(repr, EIG_METHODS))}")
    maxiter = check_maxiter(maxiter)
    t0 = time.perf_counter()
    notes: list[str] = []
    ng: NTKGram | None = None
    rb = jacobian_rank_bound(model, trainable) if isinstance(model, MultiHeadAttention) else None
    if _use_matrix_free(model, X, trainable, eig_method):
        J = AttentionJacobian(model, X, trainable)  # a MultiHeadAttention, so rb is not None
        mf = eig_method if eig_method in MATRIX_FREE else AUTO_MATRIX_FREE
        ex = _matrix_free_extremes(J, tol, mf, singular=rb.bound < J.shape[0], maxiter=maxiter)
        m, n_params, train, route, dtype = J.shape[0], J.shape[1], J.trainable, "matrix-free", J.dtype
        where = ("on J (sigma_min^2)" if ex.method.startswith("matrix-free:gkd") else
                 "on the implicit Gram G = J(J^T v) (Bauer-Fike, as the dense-Gram route)")
        notes.append(f"matrix-free: {ex.method.split(':')[1]} on the closed-form AttentionJacobian "
                     f"({ex.matvecs} products of J or J^T, factors {J.factor_bytes / 2**20:.0f} MiB); the NTK "
                     f"Gram ({m}x{m}) is never formed and the interval is certified {where}, with the "
                     "products taken as exact to rounding")
    else:
        ng = ntk_gram(model, X, trainable)
        ex = gram_extremes(ng.gram, eig_method, tol=tol)
        m, n_params, train, route, dtype = ng.n_outputs, ng.n_params, ng.trainable, ng.route, ng.gram.dtype
        if ng.reason:
            notes.append(ng.reason)
    eps = torch.finfo(dtype).eps
    gnorm = max(abs(ex.lambda_max), 0.0)
    attainable = gnorm * eps
    zero_thr = m * eps * gnorm
    rank_bound = n_params if rb is None else rb.bound
    rank_limited = rank_bound < m
    if n_params < m:
        notes.append(f"p={n_params} < m={m} outputs: J Jᵀ is singular by rank, μ = 0")
    elif rank_limited:
        notes.append(f"{rb.describe()} < m={m} outputs "
                     f"although p={n_params} >= m: J Jᵀ is singular exactly, μ = 0, null space of "
                     f"dimension >= {m - rank_bound} (models.rank)")
    elif rank_bound < NEAR_SQUARE * m and rank_bound < n_params:
        notes.append(f"rank J <= {rank_bound}, only {100 * (rank_bound / m - 1):.1f}% above m={m} "
                     f"(p={n_params}): J is nearly square in its effective parameters (models.rank), so "
                     "expect a tiny μ and slow iterative convergence (the XL proxy, 3% above m: κ(G) = 9e6)")
    if rank_limited:  # exact, not a numerical zero: the interval is [0, 0] on every route
        ex = dataclasses.replace(ex, lambda_min=0.0, lambda_min_interval=(0.0, 0.0))
    mu = ex.lambda_min
    if not ex.converged:
        notes.append(f"not converged: the certified interval {ex.lambda_min_interval} holds, but μ is not "
                     f"resolved to tol={tol:g}")
    corrected = beta_value = vb_mu = None
    holds: dict[str, bool | None] = {"corrected_bound": None, "beta_paper": None}
    vp = getattr(model, "value_param", None)
    if isinstance(model, MultiHeadAttention):
        if beta is not None:
            if not isinstance(beta, BetaPaper):
                raise TypeError(f"beta must be a BetaPaper (beta_paper(model, X)) or None, got "
                                f"{type(beta).__name__}")
            check_b0_shape("beta", beta.B0_shape, model, X)
        bp = beta if beta is not None else beta_paper(model, X, tol=tol)
        beta_value = bp.value
        if bp.reason:
            notes.append(bp.reason)
        if "W_V" in train:
            if vp == "per_head":
                d = model.d
                so = min(_sigma_dout(model.W_O[h * d:(h + 1) * d], tol) for h in range(model.H))
            else:
                so = bp.sigma_min_WO
            corrected = so**2 * bp.sigma_min_B0T**2
            holds["corrected_bound"] = _holds(corrected, ex, zero_thr)
        else:
            notes.append("W_V is not trained: the corrected bound (from J_V J_Vᵀ) does not apply")
        holds["beta_paper"] = _holds(beta_value, ex, zero_thr)
        if value_block or (value_block is None and vp == "joint" and "W_V" in train):
            if jacobian_rank_bound(model, ("W_V",)).bound < m:
                vb_mu = 0.0  # rank J_V <= H·D·d_out (models.rank) < m: exactly singular
            elif route == "matrix-free":
                vb_mu = _matrix_free_extremes(AttentionJacobian(model, X, ("W_V",)), tol, mf,
                                               maxiter=maxiter).lambda_min
            else:
                vb_mu = gram_extremes(ntk_gram(model, X, ("W_V",)).gram, eig_method, tol=tol).lambda_min
    else:
        notes.append(f"B0, β and the corrected bound are defined for the [S24] MultiHeadAttention, "
                     f"not {type(model).__name__}")
    return PLConstant(
        mu=mu, mu_interval=tuple(ex.lambda_min_interval), lambda_max=ex.lambda_max,
        numerically_zero=bool(mu <= zero_thr), attainable_accuracy=attainable, zero_threshold=zero_thr,
        n_outputs=m, n_params=n_params, rank_limited=rank_limited, route=route,
        eig_method=ex.method, corrected_bound=corrected, beta_paper=beta_value, holds=holds,
        value_param=vp, value_block_mu=vb_mu, seconds=time.perf_counter() - t0, notes=tuple(notes),
        gram=ng, products=ex.matvecs if route == "matrix-free" else None, rank_bound=rank_bound,
    )


def _sigma_dout(W: torch.Tensor, tol: float) -> float:
    est = sigma_dout(W, tol=tol)
    return 0.0 if est is None else est.sigma_min


def _use_matrix_free(model: Any, X: Any, trainable: Sequence[str] | None, eig_method: str) -> bool:
    """``eig_method`` one of :data:`MATRIX_FREE`, or ``"auto"`` with a closed form whose Gram exceeds
    ``AUTO.pl_gram_max_bytes``."""
    if eig_method in MATRIX_FREE:
        return True
    if eig_method != "auto" or not isinstance(model, MultiHeadAttention) or closed_form_kernel(model) is None:
        return False
    Xt = model.check_inputs(X)
    m = Xt.shape[0] * Xt.shape[1] * model.d_out
    return m * m * Xt.element_size() > policy.AUTO.pl_gram_max_bytes


def _matrix_free_extremes(J: AttentionJacobian, tol: float, how: str = "matrix-free", *,
                          singular: bool | None = None, maxiter: int | None = None) -> GramExtremes:
    """``λ_min``/``λ_max`` of ``G = J Jᵀ`` without forming it; ``singular`` (default ``p < m``): ``λ_min = 0``
    exactly (by rank), and only ``λ_max`` is computed. ``maxiter``: each solve's step budget (``None``:
    the solver's default; Lanczos: ``AUTO.pl_lanczos_max_steps``).

    ``how="matrix-free"``: thick-restart Lanczos (full reorthogonalisation) on the implicit ``G``
    (each product ``J(Jᵀv)``), both ends in one run; intervals are Bauer–Fike on ``G`` — the
    semantics, and the attainable accuracy ``≈ 10√m·eps·λ_max``, of the dense-Gram route — with the
    lower end of ``λ_min`` clipped at ``0`` (``G ⪰ 0``). Its basis is :func:`gram_basis` within
    ``AUTO.pl_lanczos_basis_bytes`` and it stops after ``AUTO.pl_lanczos_max_steps`` steps.
    ``how="matrix-free-svd"``: GKD on ``J``, intervals the squared certified σ intervals (accurate to
    ``eps·σ_max·σ_min``, for a ``μ`` near ``eps·λ_max``; slower, its basis lives in ``R^p``).
    An unconverged end reports ``nan`` with its certified interval.
    """
    m, p = J.shape
    singular = p < m if singular is None else singular
    if how == "matrix-free-svd":
        return _gkd_extremes(J, tol, singular, maxiter)
    if how == "matrix-free-preconditioned":
        return _preconditioned_extremes(J, tol, singular, maxiter)
    ncv = gram_basis(m, J.dtype, policy.AUTO.pl_lanczos_basis_bytes)
    res = symmetric_lanczos(GramOperator(J), k=1, which="largest" if singular else "both", tol=tol,
                            maxiter=policy.AUTO.pl_lanczos_max_steps if maxiter is None else maxiter, ncv=ncv)
    big = res.largest
    lam_max = float(big.values[0]) if bool(big.converged[0]) else math.nan
    lam_max_iv = (max(float(big.lower[0]), 0.0), float(big.upper[0]))
    if singular:
        lam_min, lam_min_iv = 0.0, (0.0, 0.0)
    else:
        sm = res.smallest
        lam_min = float(sm.values[0]) if bool(sm.converged[0]) else math.nan
        lam_min_iv = (max(float(sm.lower[0]), 0.0), max(float(sm.upper[0]), 0.0))
    return GramExtremes(lambda_min=lam_min, lambda_min_interval=lam_min_iv, lambda_max=lam_max,
                        lambda_max_interval=lam_max_iv, method="matrix-free:lanczos",
                        converged=bool(res.converged), matvecs=int(J.n_products))


def _gkd_extremes(J: AttentionJacobian, tol: float, singular: bool, maxiter: int | None) -> GramExtremes:
    """``λ_min``/``λ_max`` of ``J Jᵀ`` as ``σ²`` of ``J`` by GKD; intervals are the squared certified
    σ intervals (certified on ``J``). ``singular``: ``λ_min = 0`` exactly (rank), only σ_max is computed."""
    res = golub_kahan_davidson(J, which="largest" if singular else "both", tol=tol / 2, maxiter=maxiter)
    return _squared_extremes(res.largest, None if singular else res.smallest, "matrix-free:gkd",
                             bool(res.converged), int(res.matvecs))


def _preconditioned_extremes(J: AttentionJacobian, tol: float, singular: bool,
                             maxiter: int | None) -> GramExtremes:
    """``λ_min = σ_min(J)²`` by GKD preconditioned with :class:`AttentionGramPreconditioner` (GD+k),
    ``λ_max = σ_max(J)²`` by GKL; both certified on ``J`` (squared intervals). ``singular``: ``λ_min = 0``
    exactly (rank), and no preconditioner is built."""
    top = golub_kahan_lanczos(J, which="largest", tol=tol / 2, maxiter=maxiter)
    if singular:
        return _squared_extremes(top.largest, None, "matrix-free:gkd-preconditioned", bool(top.converged),
                                 int(top.matvecs))
    res = golub_kahan_davidson(J, which="smallest", tol=tol / 2, maxiter=maxiter,
                               preconditioner=AttentionGramPreconditioner(J))
    return _squared_extremes(top.largest, res.smallest, "matrix-free:gkd-preconditioned",
                             bool(top.converged) and bool(res.converged), int(top.matvecs) + int(res.matvecs))


def _squared_extremes(big: SingularBlock, small: SingularBlock | None, method: str, converged: bool,
                      matvecs: int) -> GramExtremes:
    """:class:`GramExtremes` of ``J Jᵀ`` from the certified σ blocks of ``J`` (values and intervals
    squared); ``small=None``: ``λ_min = 0`` exactly (by rank)."""
    lam_min, lam_min_iv = (0.0, (0.0, 0.0)) if small is None else (
        float(small.values[0]) ** 2, _squared(small.lower[0], small.upper[0]))
    lam_max, lam_max_iv = float(big.values[0]) ** 2, _squared(big.lower[0], big.upper[0])
    return GramExtremes(lambda_min=lam_min, lambda_min_interval=lam_min_iv, lambda_max=lam_max,
                        lambda_max_interval=lam_max_iv, method=method, converged=converged, matvecs=matvecs)


def _squared(lo: float, hi: float) -> tuple[float, float]:
    """``[lo², hi²]`` for ``0 ≤ lo ≤ σ ≤ hi``, rounded outwards: an upper end whose square underflows
    becomes the smallest subnormal (never 0 for a positive ``hi``); an overflowing one is ``inf``."""
    lo, hi = max(float(lo), 0.0), float(hi)
    sq = hi * hi
    if hi > 0.0 and sq == 0.0:
        sq = math.nextafter(0.0, 1.0)
    return lo * lo, sq


def _holds(bound: float, ex: GramExtremes, zero_thr: float) -> bool | None:
    """``bound ≤ μ + zero_thr`` for a resolved ``μ``; for an unresolved one (NaN) decided on the
    certified interval: ``True`` below its lower end, ``False`` above its upper end, ``None`` when it
    straddles the bound (undecided)."""
    if math.isfinite(ex.lambda_min):
        return bool(bound <= ex.lambda_min + zero_thr)
    lo, hi = ex.lambda_min_interval
    if bound <= lo + zero_thr:
        return True
    if bound > hi + zero_thr:
        return False
    return None
