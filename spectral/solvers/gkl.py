"""Golub–Kahan–Lanczos bidiagonalisation with full reorthogonalisation and thick restarts.

Reference: Baglama & Reichel, *Augmented implicitly restarted Lanczos bidiagonalization
methods*, SIAM J. Sci. Comput. 27 (2005) — restarting with Ritz vectors ("thick" or
"augmented" restart, mathematically the same thing for Ritz augmentation).

The solver always works in the *tall* orientation ``T`` (``T = A`` if ``m ≥ n`` else
``T = Aᵀ``), starting on the small side. Then ``T P = Q B`` with ``B = Qᵀ T P`` and
``σ_i(B)`` never drops below ``σ_min(A)``: the smallest Ritz value approaches ``σ_min``
from above, and a wide matrix's null space is never mistaken for a zero singular value.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from attncond.spectral.operators.base import LinearOp
from attncond.spectral.results import SVDResult
from attncond.spectral.solvers.certify import (
    Certified,
    CertifiedEnds,
    SolveRun,
    assemble_result,
    certify_small_side,
    meets_tol,
    rounding_allowance,
)
from attncond.spectral.solvers.orth import orthogonalize, random_orthonormal
from attncond.spectral.solvers.validate import check_choice, make_generator, prepare

WHICH = ("both", "largest", "smallest")

#: in-cycle convergence tests: every ``CHECK_EVERY`` steps once the basis holds
#: ``n_wanted + CHECK_MIN_EXTRA`` vectors (an SVD of the small ``B``; products dominate)
CHECK_EVERY = 4

CHECK_MIN_EXTRA = 8

#: σ_min-only thick restarts keep largest Ritz vectors too only with a basis this large
TOP_KEEP_MIN_ELL = 48

@dataclass(frozen=True)
class _Ritz:
    """SVD ``B = U_b diag(S_b) V_bᵀ`` of one projected matrix and the cheap stopping test."""

    Ub: torch.Tensor
    Sb: torch.Tensor
    Vb: torch.Tensor
    smax: float
    idx_l: list[int]
    idx_s: list[int]
    ok: bool


@dataclass(frozen=True)
class _CoreRun:
    """One :func:`_gkl_core` run: its certified ends and whether it met ``tol``."""

    certs: CertifiedEnds
    converged: bool
    harmonic_restarts: int = 0


def _ritz(
    B: torch.Tensor, fnorm: float, k: int, want_l: bool, want_s: bool, tol: float,
    shape: tuple[int, int], smax: float,
) -> _Ritz:
    """SVD of the projected ``B`` and the cheap test ``‖r‖·|e_jᵀ u_i|/√2 ≤ max(tol·σ_i, δ)`` for
    every wanted Ritz value (``δ`` from ``smax`` raised to ``σ_1(B)``). The same test serves
    the in-cycle checks and the end of a cycle."""
    Ub, Sb, Vbh = torch.linalg.svd(B)
    j = B.shape[0]
    smax = max(smax, float(Sb[0]))
    idx_l = list(range(k)) if want_l else []
    idx_s = list(range(j - 1, j - 1 - k, -1)) if want_s else []
    wanted = idx_l + idx_s
    est = fnorm * Ub[-1, wanted].abs() / math.sqrt(2.0)
    delta = rounding_allowance(shape, B.dtype, smax)
    ok = bool((est <= torch.clamp(tol * Sb[wanted], min=delta)).all())
    return _Ritz(Ub, Sb, Vbh.T, smax, idx_l, idx_s, ok)

def _gkl_core(
    T: LinearOp,
    k: int,
    which: str,
    tol: float,
    max_steps: int,
    p0: torch.Tensor,
    gen: torch.Generator,
    ncv: int | None,
    full: bool,
    harmonic: bool = False,
) -> _CoreRun:
    """One GKL run on the tall ``T``; ``harmonic=True`` (only with ``which="smallest"``)
    restarts with harmonic Ritz vectors (see :func:`_harmonic_restart`)."""
    if harmonic and which != "smallest":
        raise ValueError("harmonic restart is for which='smallest' only")
    M, N = T.shape
    harmonic_cycles = 0
    dt, dev = T.dtype, T.device
    eps = torch.finfo(dt).eps
    want_l = which in ("both", "largest")
    want_s = which in ("both", "smallest")
    nwant = k * (int(want_l) + int(want_s))
    if ncv is not None:
        ell = ncv
    elif want_s:
        ell = max(96, 2 * nwant + 32)
    else:
        ell = max(24, 2 * nwant + 16)
    ell = int(min(max(ell, nwant + 2), N))
    P = torch.zeros(N, ell, dtype=dt, device=dev)
    Q = torch.zeros(M, ell, dtype=dt, device=dev)
    B = torch.zeros(ell, ell, dtype=dt, device=dev)
    p = p0 / torch.linalg.vector_norm(p0)
    j0 = 0
    steps = 0
    cycles = 0
    smax = 0.0
    fnorm = 0.0
    r = torch.zeros(N, dtype=dt, device=dev)
    explicit: dict[str, Certified] = {}
    converged = False
    min_check = min(ell, nwant + CHECK_MIN_EXTRA)
    while True:
        cur = ell  # columns in use this cycle (< ell after an early in-cycle stop)
        ritz: _Ritz | None = None
        for j in range(j0, ell):
            P[:, j] = p
            q_raw = T.matvec(p)
            q, c = orthogonalize(Q[:, :j], q_raw, full)
            B[:j, j] = c
            alpha = torch.linalg.vector_norm(q)
            raw = float(torch.linalg.vector_norm(q_raw))
            if float(alpha) <= 100 * eps * max(raw, smax):
                q = random_orthonormal(Q[:, :j], gen)
            else:
                q = q / alpha
            B[j, j] = alpha
            Q[:, j] = q
            r_raw = T.rmatvec(q)
            r, _ = orthogonalize(P[:, : j + 1], r_raw, full)
            beta = torch.linalg.vector_norm(r)
            fnorm = float(beta)
            steps += 1
            smax = max(smax, float(alpha), fnorm)
            if j + 1 < ell:
                if fnorm <= 100 * eps * max(float(torch.linalg.vector_norm(r_raw)), smax):
                    p = random_orthonormal(P[:, : j + 1], gen)
                    B[j, j + 1] = 0.0
                    fnorm = 0.0
                else:
                    p = r / beta
                    B[j, j + 1] = beta
                if j + 1 >= min_check and (j + 1 - j0) % CHECK_EVERY == 0:
                    rz = _ritz(B[: j + 1, : j + 1], fnorm, k, want_l, want_s, tol, (M, N), smax)
                    if rz.ok:
                        cur, ritz = j + 1, rz
                        break
        cycles += 1
        if ritz is None:
            ritz = _ritz(B[:cur, :cur], fnorm, k, want_l, want_s, tol, (M, N), smax)
        Ub, Sb, Vb, smax = ritz.Ub, ritz.Sb, ritz.Vb, ritz.smax
        idx_l, idx_s, ok = ritz.idx_l, ritz.idx_s, ritz.ok
        out_of_steps = steps >= max_steps
        if ok or out_of_steps or cur == N:
            Pc, Qc = P[:, :cur], Q[:, :cur]
            explicit = {}
            if want_l:
                explicit["largest"] = certify_small_side(
                    T,
                    Pc @ Vb[:, idx_l],
                    end="largest",
                    sigma_max_hint=smax,
                    U=Qc @ Ub[:, idx_l],
                )
            if want_s:
                explicit["smallest"] = certify_small_side(
                    T,
                    Pc @ Vb[:, idx_s],
                    end="smallest",
                    sigma_max_hint=smax,
                    U=Qc @ Ub[:, idx_s],
                )
            converged = all(bool(meets_tol(c, tol).all()) for c in explicit.values())
            if converged or out_of_steps or cur == N:
                break
        if harmonic and fnorm > 0 and cur == ell:
            kk = _harmonic_restart(P, Q, B, r / fnorm, fnorm, k + max(ell - k - 2, 0) // 2, gen)
            if kk > 0:
                p = P[:, kk].clone()
                P[:, kk:] = 0
                j0 = kk
                harmonic_cycles += 1
                continue
        # ---- thick restart: keep wanted Ritz vectors plus a buffer at each wanted end
        free = cur - nwant - 2
        extra = max(free // 2, 0)
        keep: list[int] = []
        if want_l and want_s:
            el, es = extra // 2, extra - extra // 2
            keep = list(range(k + el)) + list(range(cur - k - es, cur))
        elif want_l:
            keep = list(range(k + extra))
        else:
            # σ_min only: half the buffer still goes to the *largest* Ritz vectors. Kept in
            # the basis they deflate the top of the spectrum, so the restarted Krylov
            # polynomial need not damp it: medium [S24] Jacobian (12,288×1,024, ℓ=64),
            # 1,054 products instead of 1,252 with the smallest end alone.
            el = extra // 2 if cur >= TOP_KEEP_MIN_ELL else 0
            keep = list(range(el)) + list(range(cur - k - (extra - el), cur))
        keep = sorted(set(keep))
        kk = len(keep)
        P[:, :kk] = P[:, :cur] @ Vb[:, keep]
        Q[:, :kk] = Q[:, :cur] @ Ub[:, keep]
        P[:, kk:] = 0
        Q[:, kk:] = 0
        B.zero_()
        B[range(kk), range(kk)] = Sb[keep]
        if fnorm > 0:
            p = r / fnorm
            p, _ = orthogonalize(P[:, :kk], p, True)
            p = p / torch.linalg.vector_norm(p)
        else:
            p = random_orthonormal(P[:, :kk], gen)
        j0 = kk
    certs = CertifiedEnds(explicit.get("largest"), explicit.get("smallest"), smax, steps=steps, cycles=cycles,
                          subspace=ell)
    return _CoreRun(certs, converged, harmonic_cycles)

def _harmonic_restart(
    P: torch.Tensor,
    Q: torch.Tensor,
    B: torch.Tensor,
    p_next: torch.Tensor,
    beta: float,
    kk: int,
    gen: torch.Generator,
) -> int:
    """Restart with the ``kk`` smallest harmonic Ritz vectors (Baglama & Reichel 2005, §3.3).

    With ``T P = Q B`` and ``Tᵀ Q = P Bᵀ + β p_next e_ℓᵀ`` (``B`` upper triangular,
    ``ℓ×ℓ``), the harmonic Ritz pairs of ``TᵀT`` for the target 0 on ``span(P)`` (Galerkin
    condition against ``TᵀT P``) are ``θ_j = σ'_j²`` and ``v_j = P B⁻¹ u'_j`` with
    ``[B, β e_ℓ] = U' Σ' V'ᵀ``. Their residuals all point along one vector
    ``g = β p_next − β² P B⁻¹ e_ℓ``, so with ``P̃ = P Ỹ`` (``Ỹ`` an orthonormal basis of
    ``B⁻¹ U'_kk``), ``B Ỹ = Q_R R`` (QR) and ``Q̃ = Q Q_R``, the relation
    ``T P̃ = Q̃ R``, ``Tᵀ Q̃ = P̃ Rᵀ + g̃ cᵀ`` holds and the continuation vector is
    ``g̃/‖g̃‖`` (``g̃ = g`` orthogonalised against ``P̃``). ``g̃`` is taken as the dominant
    left singular vector of the residual coefficients (rank one in exact arithmetic), so
    ``B⁻¹ e_ℓ`` is never formed. Rounding only affects which subspace is kept: Ritz values
    are always the Rayleigh–Ritz values of ``B = QᵀTP``, certified explicitly.

    The second singular value of the residual coefficients is the defect this drops from
    the Lanczos relation; when it exceeds ``HARMONIC_DEFECT·eps·max(σ'_1, β)`` (i.e.
    ``B⁻¹`` amplified rounding, ``κ(B)·eps``), the step is refused and the caller restarts
    thick: without that guard the relation error accumulates over restarts (measured
    ``1e-13`` after 5 restarts on an isolated ``σ_min = 1e-8``) and the explicit
    certificate stalls above the rounding allowance.

    Overwrites ``P[:, :kk+1]`` (``P[:, kk]`` = continuation), ``Q[:, :kk]``, ``B``; returns
    ``kk``, or ``0`` when the step is not numerically possible (the caller then does a thick
    restart).
    """
    ell = B.shape[0]
    kk = int(min(max(kk, 1), ell - 1))
    Bext = torch.cat([B, B.new_zeros(ell, 1)], dim=1)
    Bext[-1, -1] = beta
    Uh, Sh, _ = torch.linalg.svd(Bext, full_matrices=False)
    Uk = Uh[:, ell - kk :]  # the kk smallest harmonic Ritz values
    Y = torch.linalg.solve_triangular(B, Uk, upper=True)
    if not bool(torch.isfinite(Y).all()):
        return 0
    Y = Y / torch.linalg.vector_norm(Y, dim=0).clamp_min(torch.finfo(Y.dtype).tiny)
    Yt, Ry = torch.linalg.qr(Y)
    if float(Ry.diagonal().abs().min()) <= 1e3 * torch.finfo(Y.dtype).eps:
        return 0  # harmonic vectors numerically dependent
    QR_, R = torch.linalg.qr(B @ Yt)
    sg = torch.sign(R.diagonal())
    sg = torch.where(sg == 0, torch.ones_like(sg), sg)
    QR_, R = QR_ * sg, R * sg[:, None]
    E = torch.cat([B.T @ QR_ - Yt @ R.T, beta * QR_[-1:, :]], dim=0)
    Ug, Sg, _ = torch.linalg.svd(E, full_matrices=False)
    if Sg.numel() > 1 and float(Sg[1]) > HARMONIC_DEFECT * torch.finfo(B.dtype).eps * max(float(Sh[0]), beta):
        # the residual is not rank one to rounding level (B⁻¹ amplified rounding by κ(B)):
        # dropping the rest would break T P = Q B, Tᵀ Q = P Bᵀ + f eᵀ beyond the rounding
        # allowance and the explicit certificate would stall above it — thick restart instead
        return 0
    Pn = P @ Yt
    if float(Sg[0]) > torch.finfo(B.dtype).eps * max(float(Sh[0]), beta):
        g = P @ Ug[:-1, 0] + Ug[-1, 0] * p_next
    else:  # invariant subspace: any new direction
        g = p_next
    g, _ = orthogonalize(Pn, g, True)
    ng = torch.linalg.vector_norm(g)
    if float(ng) <= 1e3 * torch.finfo(B.dtype).eps:
        g = random_orthonormal(Pn, gen)
    else:
        g = g / ng
    Q[:, :kk] = Q @ QR_
    Q[:, kk:] = 0
    P[:, :kk] = Pn
    P[:, kk] = g
    B.zero_()
    B[:kk, :kk] = R
    return kk

def golub_kahan_lanczos(
    A: Any,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-10,
    maxiter: int | None = None,
    reorth: str = "full",
    restart: str = "thick",
    v0: torch.Tensor | None = None,
    seed: int = 0,
    *,
    ncv: int | None = None,
    device: Any = None,
    dtype: Any = None,
) -> SVDResult:
    """Extreme singular triplets of ``A`` by Golub–Kahan–Lanczos bidiagonalisation.

    Builds ``T P_ℓ = Q_ℓ B_ℓ``, ``Tᵀ Q_ℓ = P_ℓ B_ℓᵀ + f e_ℓᵀ`` (``T`` the tall orientation
    of ``A``) with full reorthogonalisation of both bases (two-pass classical Gram–Schmidt),
    takes Ritz triplets from the SVD of the small matrix ``B_ℓ`` and restarts with the
    wanted Ritz vectors plus a buffer (thick restart, Baglama–Reichel).

    Stopping rule
    -------------
    Cheap estimate first: ``‖f‖·|e_ℓᵀ u_i|/√2 ≤ max(tol·σ_i, δ)`` for every wanted Ritz
    value (``δ`` the rounding allowance ``10·sqrt(max(m,n))·eps·σ̂_max``). The wanted
    vectors are then certified explicitly (``2k`` extra products each): ``σ = ‖A v‖``,
    ``u = A v/σ``, ``η = sqrt(‖Av − σu‖² + ‖Aᵀu − σv‖²)/√2``. The run stops when every
    certified error is ``≤ max(tol·σ_i, δ)`` or after ``maxiter`` Lanczos steps (one
    product with ``A`` and one with ``Aᵀ`` each; default 2000).

    Certified bounds
    ----------------
    Residual bound (Bauer–Fike/Kahan for the symmetric Jordan–Wielandt matrix
    ``[[0, A], [Aᵀ, 0]]``, i.e. Wedin's bound for the SVD): some singular value lies in
    ``[σ − η, σ + η]``. Courant–Fischer adds ``σ_max ≥ ‖A v‖`` and, in the tall
    orientation, ``σ_min ≤ ‖A v‖``. A Kato–Temple estimate ``η²/gap`` is reported with gaps
    taken from the other Ritz values; those gaps are not certified, so it is not used in the
    intervals. Caveat: like every Krylov method, GKL cannot prove that no singular value
    was missed (a direction absent from ``v0``); the residual intervals remain true.

    Rank deficiency: when the certified interval of ``σ_min`` contains 0 and
    ``σ_min ≤ max(m, n)·eps·σ_max``, ``σ_min`` is reported as ``0.0`` with
    ``rank_deficient=True``.

    Parameters
    ----------
    A : anything :func:`spectral.operators.as_operator` accepts.
    k : number of triplets at each requested end (``1 ≤ k ≤ min(m, n)``).
    which : ``"both"``, ``"largest"`` or ``"smallest"``.
    tol : relative tolerance (> 0).
    maxiter : maximum number of Lanczos steps.
    reorth : ``"full"`` (always two Gram–Schmidt passes) or ``"selective"`` (second pass
        only when the first lost a factor √2 of the norm).
    restart : ``"thick"`` (alias ``"augmented"``): restart with Ritz vectors;
        ``"harmonic"``: for the smallest end, restart with harmonic Ritz vectors
        (Baglama–Reichel 2005 §3.3, see :func:`_harmonic_restart`; ``which="both"`` then runs
        the largest end thick and the smallest end harmonic, from the same start vector,
        and adds their products); a harmonic step whose residual is not rank one to
        rounding level falls back to a thick one (``info["harmonic_restarts"]`` counts the
        harmonic ones). ``"auto"``: the choice in ``AUTO_RESTART`` (thick for every
        ``which``; measured in ``benchmarks/gkl_restart.py``: harmonic never needed fewer
        products there). Ritz values, not harmonic ones, are reported and certified in
        every mode.
    v0 : start vector on the small side (length ``min(m, n)``), or on the large side (it is
        then mapped through one product). Default: seeded Gaussian.
    seed : seed of the start vector and of breakdown replacements.
    ncv : Krylov subspace size ``ℓ`` (default ``max(24, 2·n_wanted + 16)``, or
        ``max(96, 2·n_wanted + 32)`` when the smallest are wanted; capped at ``min(m, n)``,
        where one cycle is exact). Ritz (not harmonic Ritz) values are used, so ``σ_min`` of
        an ill-conditioned matrix with ``min(m, n) ≫ ℓ`` converges slowly; the result then
        says ``converged=False``.
    """
    t0 = time.perf_counter()
    op, k, tol, maxiter = prepare(
        A,
        k=k,
        which=which,
        which_choices=WHICH,
        tol=tol,
        maxiter=maxiter,
        device=device,
        dtype=dtype,
        v0=v0,
    )
    check_choice("reorth", reorth, ("full", "selective"))
    check_choice("restart", restart, RESTARTS)
    return solve_gkl(op, k, which, tol, maxiter, reorth=reorth, restart=restart, v0=v0, seed=seed, ncv=ncv,
                     t0=t0)


def solve_gkl(op: LinearOp, k: int, which: str, tol: float, maxiter: int | None, *, reorth: str = "full",
              restart: str = "thick", v0: torch.Tensor | None = None, seed: int = 0, ncv: int | None = None,
              t0: float | None = None) -> SVDResult:
    """:func:`golub_kahan_lanczos` on an operator already validated by :func:`prepare` (no checks)."""
    t0 = time.perf_counter() if t0 is None else t0
    m, n = op.shape
    swap = m < n
    T = op.adjoint() if swap else op
    M, N = T.shape
    start = op.n_products
    gen = make_generator(seed)
    if v0 is None:
        p0 = torch.randn(N, generator=gen, dtype=torch.float64).to(op.dtype).to(op.device)
    else:
        v0 = v0.to(op.dtype).reshape(-1)
        if v0.numel() == N:
            p0 = v0
        elif v0.numel() == M:
            p0 = T.rmatvec(v0)
        else:
            raise ValueError(f"v0 must have length {N} or {M}, got {v0.numel()}")
        if float(torch.linalg.vector_norm(p0)) == 0.0:
            raise ValueError("v0 must be non-zero")
    max_steps = maxiter if maxiter is not None else 2000
    full = reorth == "full"
    mode = _resolve_restart(restart, which)
    split: dict[str, int] | None = None
    if mode == "harmonic" and which == "smallest":
        out = _gkl_core(T, k, which, tol, max_steps, p0, gen, ncv, full, harmonic=True)
    elif mode == "harmonic" and which == "both":
        # harmonic restarts target one end: run the largest end (thick) and the smallest
        # end (harmonic) separately from the same start vector and merge
        o_l = _gkl_core(T, k, "largest", tol, max_steps, p0, gen, ncv, full)
        o_s = _gkl_core(
            T, k, "smallest", tol, max(max_steps - o_l.certs.steps, 1), p0, gen, ncv, full, harmonic=True
        )
        cl, cs = o_l.certs, o_s.certs
        merged = CertifiedEnds(cl.largest, cs.smallest, max(cl.sigma_max_hint, cs.sigma_max_hint),
                               steps=cl.steps + cs.steps, cycles=cl.cycles + cs.cycles,
                               subspace=max(cl.subspace or 0, cs.subspace or 0))
        out = _CoreRun(merged, o_l.converged and o_s.converged, o_s.harmonic_restarts)
        split = {"largest_steps": cl.steps, "smallest_steps": cs.steps}
    else:
        out = _gkl_core(T, k, which, tol, max_steps, p0, gen, ncv, full)
    info: dict[str, Any] = {"restart": mode, "harmonic_restarts": out.harmonic_restarts}
    if split is not None:
        info["split"] = split
    return assemble_result(op, out.certs, SolveRun("gkl", tol, swap, start, t0, max_steps), info)

RESTARTS = ("auto", "thick", "augmented", "harmonic")

def _resolve_restart(restart: str, which: str) -> str:
    """``"auto"`` → the restart measured best for ``which`` (see :func:`golub_kahan_lanczos`)."""
    if restart == "augmented":
        return "thick"
    if restart == "auto":
        return AUTO_RESTART[which]
    return restart

# largest tolerated rank-one defect of the harmonic residual, in units of eps·max(σ'_1, β)
HARMONIC_DEFECT = 10.0

# measured choice per ``which`` (benchmarks/gkl_restart.py measures it): on known spectra
# (400×300, ncv=40) harmonic restarts never converged where thick did not, saved no products
# on κ=1e4/1e12 log-spaced spectra (neither converged in 3000 steps) and, before the
# HARMONIC_DEFECT guard, lost convergence on an isolated σ_min=1e-8 and on exact rank
# deficiency (502 and 334 products thick); at 90×60, ncv=16 they saved 3–5 % (1150 vs 1186,
# 340 vs 358 products). Below the 10 % bar, so "auto" is thick everywhere
AUTO_RESTART = {"largest": "thick", "smallest": "thick", "both": "thick"}
