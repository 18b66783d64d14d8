"""Extremes of a symmetric positive semi-definite (Gram) matrix, with certified intervals.

One routine for every caller that holds a PSD Gram ``G = J Jᵀ`` or ``JᵀJ`` (MATH.md §4,
"Exact PL constant"): :func:`psd_extremes` returns the extreme eigenpairs and *certified*
gap bounds as a :class:`PSDExtremes` record. The Gram routes of
:func:`attncond.spectral.extreme_singular_values` certify those eigenvectors on ``J`` itself;
:func:`gram_extremes` certifies them on ``G`` (Bauer–Fike, tightened by Kato–Temple where a
gap is certified) and is what :func:`attncond.spectral.diagnostics.pl_constant` reports.
The switch from a full ``eigh`` to Lanczos + Cholesky shift-invert is
:data:`attncond.spectral.policy.AUTO.psd_eigh_max_side`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attncond.spectral import policy
from attncond.spectral.operators.explicit import DenseOp
from attncond.spectral.results import record_repr, record_to_dict
from attncond.spectral.solvers.certify import EigCertificate, certify_eigvecs
from attncond.spectral.solvers.lanczos import solve_lanczos
from attncond.spectral.solvers.validate import check_tol

__all__ = ["PSDExtremes", "GramExtremes", "psd_extremes", "gram_extremes", "one_eigenvalue_below"]

_NAN = float("nan")
GRAM_METHODS = ("auto", "dense", "cholesky-lanczos")


@dataclass(frozen=True, repr=False)
class PSDExtremes:
    """Extreme eigenpairs of a PSD matrix ``G`` (``N×N``) and certified gap bounds.

    ``gap_min`` is a certified lower bound of ``λ_2`` and ``gap_max`` a certified upper bound
    of ``λ_{N−1}`` (``None`` when not certified), both widened by the rounding margin
    ``eps_g = margin·λ_max``; they feed the Kato–Temple bounds of the callers. ``w_min`` /
    ``w_max`` are unit eigenvector estimates as ``(N, 1)`` tensors (``None`` when not asked).
    """

    lam_min: float
    w_min: torch.Tensor | None
    gap_min: float | None
    lam_max: float
    w_max: torch.Tensor | None
    gap_max: float | None
    solver: str
    gap_certified_by: str | None = None
    matvecs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self, skip=("w_min", "w_max"))

    def __repr__(self) -> str:
        return record_repr(self, ("lam_min", "lam_max", "gap_min", "gap_max", "solver"))


def one_eigenvalue_below(G: np.ndarray, w: np.ndarray, mu: float, shift: float) -> bool:
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


def psd_full_extremes(G: torch.Tensor, margin: float, solver: str = "eigh") -> PSDExtremes:
    """Extreme eigenpairs of the symmetric ``G`` by a full ``eigh``; its whole spectrum gives the
    gap bounds ``λ_2 − eps_g`` and ``λ_{N−1} + eps_g`` (``eps_g = margin·λ_max``)."""
    N = G.shape[0]
    lam, W = torch.linalg.eigh(G)
    lam_np = lam.detach().cpu().double().numpy()
    eps_g = margin * max(float(lam_np[-1]), 0.0)
    return PSDExtremes(
        lam_min=float(lam_np[0]), w_min=W[:, :1],
        gap_min=float(lam_np[1] - eps_g) if N > 1 else None,
        lam_max=float(lam_np[-1]), w_max=W[:, -1:],
        gap_max=float(lam_np[-2] + eps_g) if N > 1 else None,
        solver=solver,
    )


def psd_extremes(G: torch.Tensor, which: str = "both", *, margin: float, tol: float = 1e-10) -> PSDExtremes:
    r"""Extreme eigenpairs of the symmetric positive semi-definite ``G`` (``N×N``).

    ``N ≤ policy.AUTO.psd_eigh_max_side`` (or off the CPU): full ``eigh`` (its whole spectrum certifies
    the gaps to ``eps_g``). Larger ``N`` (a full ``eigh`` costs ``≈ 9N³`` flops):

    * largest: :func:`attncond.spectral.symmetric_lanczos` on ``G`` to ``tol/100``; no gap is
      claimed. Measured on the medium [S24] Gram (1024²): 29 products, 2–3× faster than ARPACK
      ``eigsh(k=2, tol=1e-14)``;
    * smallest: shift-and-invert Lanczos on ``G⁻¹`` through a Cholesky factor (``N³/3`` flops,
      ``k=2``); the gap ``λ_2 ≥ μ`` is *certified* by one more Cholesky factorisation
      (:func:`one_eigenvalue_below`, rank-one interlacing, ``μ = λ̂_2 − 10⁻³(λ̂_2 − λ̂_1)``) and
      widened by ``eps_g``. If ``G`` is not numerically positive definite, full ``eigh``.

    Parameters
    ----------
    G : torch.Tensor
        Symmetric PSD ``(N, N)`` matrix (validated by the caller).
    which : {"both", "largest", "smallest"}
    margin : float
        Rounding model of ``G`` relative to ``λ_max`` (``eps_g = margin·λ_max``).
    tol : float
        Relative tolerance of the Lanczos run for ``λ_max``.

    Returns
    -------
    PSDExtremes
    """
    if G.shape[0] <= policy.AUTO.psd_eigh_max_side or G.device.type != "cpu":
        return psd_full_extremes(G, margin)
    return _iterative_extremes(G, which, margin, tol)


def _iterative_extremes(G: torch.Tensor, which: str, margin: float, tol: float) -> PSDExtremes:
    """Lanczos for ``λ_max`` and Cholesky shift-invert for ``λ_min`` (see :func:`psd_extremes`)."""
    top = solve_lanczos(DenseOp(G), 1, "largest", max(tol / 100, 1e-14), None, seed=0)
    if not top.converged:
        return psd_full_extremes(G, margin, "eigh (Lanczos for lambda_max did not converge)")
    lam_top = float(top.lambda_max)
    w_max = top.largest.vectors[:, :1].to(G.dtype) if which in ("both", "largest") else None
    if which == "largest":
        return PSDExtremes(_NAN, None, None, lam_top, w_max, None, "Lanczos(lambda_max)", matvecs=top.matvecs)
    low = _shift_invert_smallest(G, lam_top, margin * max(lam_top, 0.0))
    if low is None:
        return psd_full_extremes(G, margin, "eigh (Gram not numerically positive definite, or "
                                 "shift-invert Lanczos did not converge)")
    l1, w_min, gap, how = low
    return PSDExtremes(l1, w_min, gap, lam_top, w_max, None,
                       "Lanczos(lambda_max) + Cholesky shift-invert eigsh + Cholesky gap certificate",
                       gap_certified_by=how, matvecs=top.matvecs)


def _shift_invert_smallest(
    G: torch.Tensor, lam_max: float, eps_g: float
) -> tuple[float, torch.Tensor, float | None, str | None] | None:
    """``(λ_1, w_1, certified λ_2 lower bound or None, how)`` by Cholesky shift-invert, or ``None``."""
    import scipy.linalg as sla
    import scipy.sparse.linalg as spla

    N = G.shape[0]
    Gn = G.detach().double().numpy()
    try:
        cf = sla.cho_factor(Gn, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    inv = spla.LinearOperator((N, N), matvec=lambda x: sla.cho_solve(cf, x, check_finite=False), dtype=Gn.dtype)
    v0 = np.random.default_rng(0).standard_normal(N)
    try:
        mu_t, W_s = spla.eigsh(inv, k=2, which="LA", tol=1e-14, v0=v0, ncv=min(N, 24))
    except spla.ArpackNoConvergence:
        return None
    o = np.argsort(mu_t)[::-1]  # largest of G⁻¹ = smallest of G
    l1, l2 = 1.0 / float(mu_t[o[0]]), 1.0 / float(mu_t[o[1]])
    w = torch.as_tensor(W_s[:, o[0]: o[0] + 1], dtype=G.dtype)
    mu = l2 - 1e-3 * (l2 - l1)
    if mu > l1 and one_eigenvalue_below(Gn, W_s[:, o[0]], mu, lam_max):
        return l1, w, mu - eps_g, f"Cholesky of G + lam_max w w^T - mu I: lambda_2(G) >= {mu:.6g}"
    return l1, w, None, None


@dataclass(frozen=True, repr=False)
class GramExtremes:
    """``λ_min`` and ``λ_max`` of a PSD Gram ``G`` with intervals certified on ``G`` itself.

    Each interval is Bauer–Fike ``θ ± (‖Gy − θy‖ + δ)`` (``δ = 10√m·eps·λ_max``, the rounding of
    the residual), tightened by Kato–Temple ``θ − ρ²/(gap − θ)`` where a gap is certified.
    ``converged`` when both half-widths are at most ``tol·|θ| + 2δ`` (the rounding floor).
    """

    lambda_min: float
    lambda_min_interval: tuple[float, float]
    lambda_max: float
    lambda_max_interval: tuple[float, float]
    method: str
    converged: bool
    matvecs: int
    extremes: PSDExtremes | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self, skip=("extremes",))

    def __repr__(self) -> str:
        return record_repr(self, ("lambda_min", "lambda_min_interval", "lambda_max", "lambda_max_interval",
                                  "method", "converged"))


def gram_extremes(G: torch.Tensor, method: str = "auto", *, tol: float = 1e-10, seed: int = 0) -> GramExtremes:
    r"""``λ_min`` and ``λ_max`` of a PSD Gram matrix ``G`` with certified intervals (MATH.md §4).

    Parameters
    ----------
    G : torch.Tensor
        Square symmetric positive semi-definite ``(m, m)`` tensor, e.g. ``J Jᵀ``.
    method : {"auto", "dense", "cholesky-lanczos"}
        ``"dense"``: full ``eigh``; ``"cholesky-lanczos"``: Lanczos for ``λ_max`` and Cholesky
        shift-invert Lanczos for ``λ_min`` (falls back to ``eigh`` when ``G`` is not numerically
        definite); ``"auto"``: :func:`psd_extremes`' size rule.
    tol : float
        Relative tolerance.
    seed : int
        Unused (kept for signature compatibility; the solvers are deterministic).

    Returns
    -------
    GramExtremes

    Raises
    ------
    ValueError
        Unknown ``method``; ``G`` not square 2-D or not finite.

    Examples
    --------
    >>> import torch
    >>> from attncond.spectral.solvers.psd import gram_extremes
    >>> ge = gram_extremes(torch.diag(torch.tensor([1e-3, 1.0, 4.0], dtype=torch.float64)))
    >>> round(ge.lambda_min, 12), round(ge.lambda_max, 12), ge.converged
    (0.001, 4.0, True)
    """
    if method not in GRAM_METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(map(repr, GRAM_METHODS))}")
    tol = check_tol(tol)
    if not isinstance(G, torch.Tensor) or G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square 2-D tensor, got {getattr(G, 'shape', type(G))}")
    if not bool(torch.isfinite(G).all()):
        raise ValueError("G contains NaN or inf")
    m = G.shape[0]
    eps = torch.finfo(G.dtype).eps
    margin = (10.0 * math.sqrt(m) + m) * eps
    if method == "dense":
        px = psd_full_extremes(G, margin)
    elif method == "cholesky-lanczos" and m > 2 and G.device.type == "cpu":
        px = _iterative_extremes(G, "both", margin, tol)
    else:
        px = psd_extremes(G, "both", margin=margin, tol=tol)
    Gop = DenseOp(G)
    lmax_hint = max(px.lam_max, 0.0)
    cmin = certify_eigvecs(Gop, px.w_min, end="smallest", lam_max_hint=lmax_hint)
    cmax = certify_eigvecs(Gop, px.w_max, end="largest", lam_max_hint=lmax_hint)
    lo_min, hi_min = _kato_temple(cmin, px.gap_min, "smallest")
    lo_max, hi_max = _kato_temple(cmax, px.gap_max, "largest")
    tmin, tmax = float(cmin.values[0]), float(cmax.values[0])
    delta = cmax.delta
    ok = (max(tmin - lo_min, hi_min - tmin) <= tol * abs(tmin) + 2 * delta
          and max(tmax - lo_max, hi_max - tmax) <= tol * abs(tmax) + 2 * delta)
    name = "dense" if px.solver.startswith("eigh") else "cholesky-lanczos"
    if method == "cholesky-lanczos" and name == "dense":
        name = "dense (Cholesky failed)"
    return GramExtremes(tmin, (lo_min, hi_min), tmax, (lo_max, hi_max), name, bool(ok), px.matvecs + 2, px)


def _kato_temple(c: EigCertificate, gap: float | None, end: str) -> tuple[float, float]:
    """Bauer–Fike interval of ``c``, tightened on the far side by Kato–Temple when ``gap`` is certified.

    For the smallest eigenvalue with ``λ_2 ≥ gap > θ``: ``λ_1 ≥ θ − ρ²/(gap − θ)``; for the
    largest with ``λ_{N−1} ≤ gap < θ``: ``λ_N ≤ θ + ρ²/(θ − gap)`` (Rayleigh quotient ``θ``,
    residual ``ρ``); the rounding ``δ`` is added back.
    """
    th, lo, hi = float(c.values[0]), float(c.lower[0]), float(c.upper[0])
    rho, delta = float(c.rho[0]), c.delta
    if gap is not None:
        if end == "smallest" and gap > th:
            lo = max(lo, th - rho * rho / (gap - th) - delta)
        elif end == "largest" and gap < th:
            hi = min(hi, th + rho * rho / (th - gap) + delta)
    return lo, hi
