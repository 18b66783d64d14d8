"""Certified error bounds for approximate singular triplets (private helper).

Theorems used
-------------
Let ``A ∈ R^{m×n}`` and let ``M = [[0, A], [Aᵀ, 0]]`` be its Jordan–Wielandt matrix,
whose eigenvalues are ``±σ_i(A)`` and ``|m − n|`` zeros. For unit ``u ∈ R^m``,
``v ∈ R^n`` and ``σ = uᵀ A v`` put ``z = [u; v]/√2`` (a unit vector with ``zᵀ M z = σ``)
and ``r = A v − σ u``, ``s = Aᵀ u − σ v``, so that
``‖M z − σ z‖ = η := sqrt(‖r‖² + ‖s‖²)/√2``.

* **Bauer–Fike / Weyl for symmetric matrices** (Kahan's residual bound): ``M`` has an
  eigenvalue in ``[σ − η, σ + η]``; when ``σ − η > 0`` it is a singular value of ``A``
  (Wedin's residual bound for the SVD).
* **Courant–Fischer**: for a unit ``v``, ``‖A v‖ ≤ σ_max(A)``; and on the *small* side
  (``A`` tall, ``m ≥ n``) ``σ_min(A) ≤ ‖A v‖``. We always certify in the tall orientation
  and take ``σ = ‖A v‖``, ``u = A v/σ`` (then ``uᵀ A v = σ`` and ``r = 0`` up to
  rounding); this is Rayleigh–Ritz on ``A`` itself, never the square root of a Gram
  eigenvalue.
* **Courant–Fischer min–max for every index**: for ``V_i = [v_1 … v_i]`` of full rank,
  ``σ_i^↑(A) ≤ σ_max(A Q_i)`` and ``σ_i^↓(A) ≥ σ_min(A Q_i)`` with ``Q_i`` an orthonormal basis
  of ``span V_i`` (the Ritz values of that subspace; ``A Q_i = A V_i R_i⁻¹`` from ``V = QR``).
  So the ``i``-th value at an end is bounded on its outer side without any residual, which a
  left vector of a (near-)zero singular value cannot give (its ``u`` is arbitrary); the
  symmetric analogue uses the eigenvalues of ``Q_iᵀ S Q_i``. Computed for the first
  :data:`MINMAX_MAX_K` vectors.
* **Kato–Temple**: if ``(α, β)`` contains ``σ`` and exactly one eigenvalue ``λ`` of ``M``
  then ``σ − η²/(β − σ) ≤ λ ≤ σ + η²/(σ − α)``. For ``σ_min`` we use ``α = 0`` and
  ``β`` a certified lower bound of the second-smallest singular value (valid because
  ``η² < σ(β − σ)`` forces an eigenvalue into ``(0, β)``); for ``σ_max`` ``α`` is a
  certified upper bound of ``σ_2`` and ``β = ∞``. The quadratic bound enters the
  intervals only when the gap is certified (a full dense spectrum is known).

Caveat (stated in every solver): a residual bound proves that the interval holds *a*
singular value. That it is the *extreme* one is proved by Courant–Fischer for the
one-sided bound (``σ_max ≥ ‖Av‖``, ``σ_min ≤ ‖Av‖``) and, for the other side, only when
the whole spectrum is known (``gap_certified``); a Krylov method can in principle miss
a singular value whose direction is absent from its start vector.

Rounding: the products are evaluated in floating point, so every bound is widened by the
allowance ``δ = 10·sqrt(max(m, n))·eps·σ̂_max`` (the size of the rounding error of a
product ``A v``; not a rigorous interval-arithmetic bound).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attncond.spectral.operators.base import LinearOp, safe_norm
from attncond.spectral.results import SingularBlock, SVDResult

#: the per-index Courant–Fischer bounds are computed for at most this many leading vectors
MINMAX_MAX_K = 64


def _leading_rank(R: torch.Tensor) -> int:
    """How many leading columns of the triangular factor ``R`` of unit-norm vectors span a
    well-conditioned block (``σ_min(R_i) ≥ 1/2``); the min–max bounds stop there."""
    for i in range(R.shape[1]):
        if float(torch.linalg.svdvals(R[: i + 1, : i + 1])[-1]) < 0.5:
            return i
    return R.shape[1]


def minmax_singular(W: torch.Tensor, V: torch.Tensor, end: str, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Courant–Fischer bound on the ``i``-th singular value at ``end`` from the leading ``i``
    unit vectors ``V`` and their products ``W = A V`` (computed, each column within ``delta``).

    ``X = W R⁻¹ = A Q`` (``V = Q R``); the singular values of ``X``'s leading block are the Ritz
    values of ``span V_i``, so ``σ_i^↑ ≤ σ_max(X_i)`` (``"smallest"``) and ``σ_i^↓ ≥ σ_min(X_i)``
    (``"largest"``), widened by ``slack_i = √i·delta/σ_min(R_i)`` for the rounding of ``W``.
    Returns ``(bound, slack)``; entries past :data:`MINMAX_MAX_K` or a rank-deficient leading
    block are ``nan`` (no bound).
    """
    k = V.shape[1]
    out, slacks = np.full(k, np.nan), np.full(k, np.nan)
    kk = _leading_rank(torch.linalg.qr(V[:, :MINMAX_MAX_K], mode="r")[1]) if k else 0
    if kk == 0:
        return out, slacks
    Rv = torch.linalg.qr(V[:, :kk], mode="r")[1]
    X = torch.linalg.solve_triangular(Rv, W[:, :kk], upper=True, left=False)
    Rx = torch.linalg.qr(X, mode="r")[1]
    for i in range(kk):
        sx = torch.linalg.svdvals(Rx[: i + 1, : i + 1])
        slacks[i] = math.sqrt(i + 1) * delta / float(torch.linalg.svdvals(Rv[: i + 1, : i + 1])[-1])
        out[i] = float(sx[0]) + slacks[i] if end == "smallest" else max(float(sx[-1]) - slacks[i], 0.0)
    return out, slacks


def minmax_eig(SY: torch.Tensor, Y: torch.Tensor, end: str, delta: float) -> np.ndarray:
    """The symmetric analogue of :func:`minmax_singular`: with ``Y = Q R`` and
    ``H = Qᵀ S Q = R⁻ᵀ (Yᵀ S Y) R⁻¹``, ``λ_i^↓ ≥ λ_min(H_i)`` and ``λ_i^↑ ≤ λ_max(H_i)``
    (leading blocks), widened by ``√i·delta/σ_min(R_i)²``."""
    k = Y.shape[1]
    out = np.full(k, np.nan)
    kk = _leading_rank(torch.linalg.qr(Y[:, :MINMAX_MAX_K], mode="r")[1]) if k else 0
    if kk == 0:
        return out
    R = torch.linalg.qr(Y[:, :kk], mode="r")[1]
    G = Y[:, :kk].T @ SY[:, :kk]
    Ri = torch.linalg.solve_triangular(R, torch.eye(kk, dtype=R.dtype, device=R.device), upper=True)
    H = Ri.T @ ((G + G.T) / 2) @ Ri
    for i in range(kk):
        ev = torch.linalg.eigvalsh(H[: i + 1, : i + 1])
        slack = math.sqrt(i + 1) * delta / float(torch.linalg.svdvals(R[: i + 1, : i + 1])[-1]) ** 2
        out[i] = float(ev[0]) - slack if end == "largest" else float(ev[-1]) + slack
    return out


def rounding_allowance(shape: tuple[int, int], dtype: torch.dtype, sigma_max: float) -> float:
    """``δ = 10·sqrt(max(m, n))·eps·σ_max``: rounding allowance added to all bounds."""
    eps = torch.finfo(dtype).eps
    return 10.0 * math.sqrt(max(shape)) * eps * float(sigma_max)

@dataclass(frozen=True)
class Certified:
    """Certified Ritz triplets at one end of a tall operator (inputs to :class:`SingularBlock`).

    ``values`` are ``σ_i = ‖A v_i‖``; ``[lower_i, upper_i]`` contains a singular value (residual
    bound ``eta_i`` plus the rounding allowance ``delta``, Courant–Fischer and Kato–Temple where
    ``gap_certified``); ``U``/``V`` are the left/right vectors of the tall orientation.
    """

    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    eta: np.ndarray
    kato_temple: np.ndarray
    gap_certified: bool
    U: torch.Tensor  # (M, k) left vectors of the tall operator
    V: torch.Tensor  # (N, k) right vectors of the tall operator
    delta: float = 0.0  # rounding allowance of one product, included in lower/upper
    #: per value, the rounding allowance of the bound that binds (``delta``, or the ``√i·delta`` of a
    #: min–max bound over ``i`` products); ``None`` means ``delta`` for every value
    allowance: np.ndarray | None = None

    @property
    def rounding(self) -> np.ndarray | float:
        """The rounding allowance per value (the attainable accuracy of the stopping rule)."""
        return self.delta if self.allowance is None else self.allowance

def certify_small_side(
    op_tall: LinearOp,
    V: torch.Tensor,
    *,
    end: str,
    sigma_max_hint: float,
    gap_bound: float | None = None,
    U: torch.Tensor | None = None,
) -> Certified:
    """Rayleigh–Ritz on ``A`` for small-side vectors ``V`` of a tall operator.

    ``σ_i = ‖A v_i‖``; ``u_i`` is the given left Ritz vector (normalised) or, when ``U`` is
    ``None``, ``A v_i/σ_i``; ``η_i = sqrt(‖A v_i − σ_i u_i‖² + ‖Aᵀu_i − σ_i v_i‖²)/√2``.
    (With ``u = Av/σ`` the residual is ``‖AᵀAv − σ²v‖/σ ≈ eps·κ·σ_max``: pass the left
    vectors of a stable method to reach ``eps·σ_max``.) Costs ``2k`` products. ``end``
    (``"largest"`` or ``"smallest"``) decides which Courant–Fischer one-sided bound applies
    to ``V[:, 0]``. ``gap_bound`` is a *certified* bound on the neighbouring singular value
    (upper bound of ``σ_2`` for ``"largest"``, lower bound of ``σ_{n−1}`` for
    ``"smallest"``); when given, Kato–Temple (around the Rayleigh quotient ``uᵀAv``)
    tightens the extreme interval.
    """
    M, N = op_tall.shape
    if M < N:
        raise ValueError("certify_small_side needs a tall operator")
    V = V.to(op_tall.dtype)
    # issue 16: a zero or non-finite Ritz vector certifies nothing (PROPACK returned v = 0 for σ_min)
    invalid = invalid_ritz_columns(V) if U is None else invalid_ritz_columns(V) | invalid_ritz_columns(U)
    V = torch.where(torch.isfinite(V), V, torch.zeros_like(V))
    nrm = safe_norm(V, dim=0)
    nrm = torch.where(nrm > 0, nrm, torch.ones_like(nrm))
    V = V / nrm
    if U is not None:
        U = torch.where(torch.isfinite(U), U, torch.zeros_like(U))
    W = op_tall.matmat(V)
    # every norm of the certificate by safe_norm: a plain vector_norm sums unscaled squares, which
    # underflow (float32 below ~1e-19, float64 below ~1e-154) or overflow, and sigma = ||Av|| itself was wrong
    sig = safe_norm(W, dim=0)
    if U is None:
        safe = torch.where(sig > 0, sig, torch.ones_like(sig))
        U = W / safe
        U = torch.where(sig > 0, U, torch.zeros_like(U))
    else:
        U = U.to(op_tall.dtype)
        U = U / safe_norm(U, dim=0).clamp_min(torch.finfo(U.dtype).tiny)
        # orient u so that uᵀAv ≥ 0
        sgn = torch.sign((U * W).sum(0))
        U = U * torch.where(sgn == 0, torch.ones_like(sgn), sgn)
    rq = (U * W).sum(0)
    S = op_tall.rmatmat(U) - V * sig
    R = W - U * sig
    eta_t = torch.hypot(safe_norm(R, dim=0), safe_norm(S, dim=0)) / math.sqrt(2.0)  # hypot: no squares
    theta = rq.detach().cpu().double().numpy()
    values = sig.detach().cpu().double().numpy()
    eta = eta_t.detach().cpu().double().numpy()
    smax = max(float(sigma_max_hint), float(values.max(initial=0.0)))
    delta = rounding_allowance(op_tall.shape, op_tall.dtype, smax)
    lower = np.maximum(values - eta - delta, 0.0)
    upper = values + eta + delta
    kt = np.full_like(values, np.nan)
    allowance = np.full_like(values, delta)
    gap_cert = gap_bound is not None
    if values.size:
        s0, e0 = values[0], eta[0]
        t0 = theta[0]  # Rayleigh quotient uᵀAv, the centre of the Kato–Temple bound
        if end == "largest":
            lower[0] = max(lower[0], s0 - delta)
            if gap_bound is not None and t0 > gap_bound:
                kt[0] = e0**2 / (t0 - gap_bound)
                upper[0] = min(upper[0], max(t0 + kt[0], s0) + delta)
        elif end == "smallest":
            upper[0] = min(upper[0], s0 + delta)
            if s0 == 0.0:
                lower[0] = 0.0
            elif gap_bound is not None and gap_bound > t0 > 0 and e0**2 < t0 * (gap_bound - t0):
                kt[0] = e0**2 / (gap_bound - t0)
                lower[0] = max(lower[0], min(t0 - kt[0], s0) - delta)
        else:
            raise ValueError(f"end must be 'largest' or 'smallest', got {end!r}")
        cf, slack = minmax_singular(W, V, end, delta)
        cf = np.fmin(cf, values) if end == "largest" else np.fmax(cf, values)
        binding = (cf > lower) if end == "largest" else (cf < upper)
        allowance = np.where(binding, np.fmax(slack, delta), delta)
        lower, upper = (np.fmax(lower, cf), upper) if end == "largest" else (lower, np.fmin(upper, cf))
    if not gap_cert and values.size > 1:
        # uncertified Kato–Temple estimates from the other computed values (report only)
        for i in range(values.size):
            others = np.delete(values, i)
            g = np.min(np.abs(others - values[i]))
            if end == "smallest" and M > N:
                g = min(g, values[i])
            if g > 0 and math.isnan(kt[i]):
                kt[i] = eta[i] ** 2 / g
    # a non-finite value or residual (an overflowing product) certifies nothing either
    invalid = invalid | ~np.isfinite(values) | ~np.isfinite(eta)
    if invalid.any():  # never certified: value nan, interval [0, inf], not converged (meets_tol is False)
        values[invalid], lower[invalid], upper[invalid], eta[invalid] = np.nan, 0.0, np.inf, np.inf
    return Certified(values, lower, upper, eta, kt, gap_cert, U, V, delta, allowance)

def invalid_ritz_columns(V: torch.Tensor) -> np.ndarray:
    """Columns of ``V`` that are zero or hold NaN/inf (issue 16: such Ritz vectors are never certified)."""
    # max|v_i| > 0, not ||v|| > 0: the squares of a tiny (1e-200) vector underflow to a zero norm
    bad = ~torch.isfinite(V).all(0) | ~(torch.nan_to_num(V).abs().amax(0) > 0) if V.shape[0] else \
        torch.ones(V.shape[1], dtype=torch.bool)
    return bad.detach().cpu().numpy()

def block_from(
    c: Certified,
    *,
    end: str,
    converged: np.ndarray,
    swap: bool,
) -> SingularBlock:
    """Package a :class:`Certified` into a :class:`SingularBlock`; ``swap`` maps the tall
    orientation back (``A = op_tallᵀ``: left and right vectors exchange)."""
    left, right = (c.V, c.U) if swap else (c.U, c.V)
    return SingularBlock(
        end=end,
        values=c.values.copy(),
        lower=c.lower,
        upper=c.upper,
        residual_norms=c.eta,
        kato_temple=c.kato_temple,
        gap_certified=c.gap_certified,
        converged=np.asarray(converged, dtype=bool),
        left=left,
        right=right,
    )

def certified_error(c: Certified) -> np.ndarray:
    """Largest distance from ``σ_i`` to an end of its interval, less the rounding allowance."""
    return np.maximum(c.upper - c.values, c.values - c.lower) - c.rounding

def meets_tol(c: Certified, tol: float) -> np.ndarray:
    """Stopping rule: ``certified_error_i ≤ max(tol·σ_i, δ)``.

    ``δ`` (the rounding allowance, a multiple of ``eps·σ_max``) is the attainable accuracy:
    below it the residual is rounding noise and further iterations cannot help.
    """
    return certified_error(c) <= np.maximum(tol * c.values, c.rounding)

def nan_unconverged(b: SingularBlock) -> SingularBlock:
    """The block with ``values = nan`` wherever the stopping rule was not met: a value that is
    not certified to ``tol`` is never the headline. Its interval keeps only the side that holds
    without convergence: a residual interval holds *a* singular value, not necessarily the extreme
    one, so Courant–Fischer's side alone bounds the extreme: ``σ_i^↑ ≤ upper`` at the smallest end
    (lower becomes 0), ``σ_i^↓ ≥ lower`` at the largest (upper becomes inf)."""
    if bool(b.converged.all()):
        return b
    bad = ~np.asarray(b.converged, dtype=bool)
    lower, upper = np.array(b.lower, dtype=float), np.array(b.upper, dtype=float)
    if b.end == "smallest":
        lower[bad] = 0.0
    else:
        upper[bad] = np.inf
    return dataclasses.replace(b, values=np.where(b.converged, b.values, np.nan), lower=lower, upper=upper)


@dataclass(frozen=True)
class CertifiedEnds:
    """What a solver hands to :func:`assemble_result`: the certified ends and its run counters.

    ``sigma_max_hint`` is the largest singular value seen (it scales the rank-deficiency test);
    ``steps`` the Lanczos steps (or 1 for a direct method), ``cycles`` the restart cycles,
    ``subspace`` the basis size, ``spectrum`` the full singular values when a direct method had them,
    ``dense_products`` the certification products spent on a materialised copy.
    """

    largest: Certified | None
    smallest: Certified | None
    sigma_max_hint: float
    steps: int = 1
    cycles: int = 1
    subspace: int | None = None
    spectrum: np.ndarray | None = field(default=None, compare=False)
    dense_products: int = 0  # products with a materialised copy (not counted in matvecs)

    def ends(self) -> dict[str, Certified]:
        """``{"largest": …, "smallest": …}`` for the ends that were computed."""
        return {e: c for e, c in (("largest", self.largest), ("smallest", self.smallest)) if c is not None}


@dataclass(frozen=True)
class SolveRun:
    """Bookkeeping of one solver call: its label, tolerance, orientation and counters at start."""

    method: str
    tol: float
    swap: bool
    start_products: int
    t0: float
    max_steps: int | None = None


def assemble_result(op: LinearOp, certs: CertifiedEnds, run: SolveRun,
                    info: dict[str, Any] | None = None) -> SVDResult:
    """Build the :class:`SVDResult` from certified ends (shared by every certified route).

    Stopping rule (:func:`meets_tol`) per value; a ``σ_min`` whose interval contains 0 and
    that is at most ``max(m,n)·eps·σ_max`` or met the stopping rule (then it is within the rounding
    allowance of 0: a rounding-level value is no σ_min) is reported as exactly ``0`` with
    ``rank_deficient=True``. ``info`` is free-form solver detail copied into the result.
    """
    m, n = op.shape
    eps = torch.finfo(op.dtype).eps
    largest = smallest = None
    reasons: list[str] = []
    rank_def = False
    smax = certs.sigma_max_hint
    ex = certs.ends()
    if certs.largest is not None:
        c = certs.largest
        smax = max(smax, float(c.values[0]))
        largest = block_from(c, end="largest", converged=meets_tol(c, run.tol), swap=run.swap)
    if certs.smallest is not None:
        c = certs.smallest
        conv = meets_tol(c, run.tol)
        level = max(m, n) * eps * smax
        if c.lower[0] <= 0.0 and (c.values[0] <= level or conv[0]):
            rank_def = True
            at = (f"<= max(m,n)*eps*sigma_max = {level:.3g}" if c.values[0] <= level else
                  f"(the computed {c.values[0]:.3g} is within the rounding allowance of 0)")
            vals = c.values.copy()
            vals[0] = 0.0
            c = dataclasses.replace(c, values=vals)
            conv[0] = True
            reasons.append(f"rank deficient: sigma_min certified in [0, {c.upper[0]:.3g}] {at}")
        smallest = block_from(c, end="smallest", converged=conv, swap=run.swap)
    blocks = [b for b in (largest, smallest) if b is not None]
    converged = all(bool(b.converged.all()) for b in blocks)
    largest, smallest = (None if b is None else nan_unconverged(b) for b in (largest, smallest))
    if not converged:
        errs = [float(np.max(certified_error(ex[b.end]))) for b in blocks]
        out_of_steps = run.max_steps is not None and certs.steps >= run.max_steps
        why = "maxiter reached" if out_of_steps else "stopping rule not met"
        reasons.append(f"not converged ({why} after {certs.steps} steps): certified error "
                       f"{max(errs):.3g} > tol*sigma (tol={run.tol:g}); unconverged values are nan, "
                       "the certified intervals hold")
    info = dict(info or {})
    info.setdefault("subspace", certs.subspace)
    info.setdefault("restarts", max(certs.cycles - 1, 0))
    return SVDResult(
        method=run.method,
        shape=(m, n),
        largest=largest,
        smallest=smallest,
        converged=converged,
        iterations=int(certs.steps),
        matvecs=int(op.n_products - run.start_products),
        seconds=time.perf_counter() - run.t0,
        rank_deficient=rank_def,
        reason="; ".join(reasons) if reasons else None,
        info=info,
    )


@dataclass(frozen=True)
class EigCertificate:
    """Rayleigh quotients ``values`` of unit vectors ``Y`` with Bauer–Fike intervals.

    ``rho`` are the residual norms ``‖S y − θ y‖``, ``delta`` the rounding allowance added to
    every bound (``10√n·eps·max(|λ|_max hint, |θ|)``).
    """

    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    rho: np.ndarray
    Y: torch.Tensor
    delta: float

    def meets(self, tol: float) -> bool:
        """Eigenvalue stopping rule: every ``ρ_i ≤ max(tol·|θ_i|, δ)``."""
        return bool((self.rho <= np.maximum(tol * np.abs(self.values), self.delta)).all())


def certify_eigvecs(S: LinearOp, Y: torch.Tensor, *, end: str, lam_max_hint: float) -> EigCertificate:
    """Rayleigh quotients ``θ_i = y_iᵀ S y_i`` and Bauer–Fike intervals (``k`` products)."""
    invalid = invalid_ritz_columns(Y)  # issue 16: zero / non-finite vectors are never certified
    Y = torch.nan_to_num(Y, nan=0.0, posinf=0.0, neginf=0.0)
    nrm = safe_norm(Y, dim=0)
    Y = Y / torch.where(nrm > 0, nrm, torch.ones_like(nrm))
    SY = S.matmat(Y)
    theta = (Y * SY).sum(0)
    R = SY - Y * theta
    rho = safe_norm(R, dim=0).detach().cpu().double().numpy()
    th = theta.detach().cpu().double().numpy()
    n = S.shape[0]
    scale = max(float(lam_max_hint), float(np.abs(th).max(initial=0.0)))
    delta = 10.0 * math.sqrt(n) * torch.finfo(S.dtype).eps * scale
    lower = th - rho - delta
    upper = th + rho + delta
    if th.size:
        if end == "largest":
            lower[0] = max(lower[0], th[0] - delta)
            lower = np.fmax(lower, np.fmin(minmax_eig(SY, Y, end, delta), th))
        elif end == "smallest":
            upper[0] = min(upper[0], th[0] + delta)
            upper = np.fmin(upper, np.fmax(minmax_eig(SY, Y, end, delta), th))
    invalid = invalid | ~np.isfinite(th) | ~np.isfinite(rho)
    if invalid.any():
        th[invalid], lower[invalid], upper[invalid], rho[invalid] = np.nan, -np.inf, np.inf, np.inf
    return EigCertificate(th, lower, upper, rho, Y, float(delta))
