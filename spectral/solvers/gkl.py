"""Golub–Kahan–Lanczos bidiagonalisation with full reorthogonalisation and thick restarts.

Reference: Baglama & Reichel, *Augmented implicitly restarted Lanczos bidiagonalization
methods*, SIAM J. Sci. Comput. 27 (2005) — restarting with Ritz vectors ("thick" or
"augmented" restart, mathematically the same thing for Ritz augmentation).

The solver always works in the *tall* orientation ``T`` (``T = A`` if ``m ≥ n`` else
``T = Aᵀ``), starting on the small side. Then ``T P = Q B`` with ``B = Qᵀ T P`` and
``σ_i(B)`` never drops below ``σ_min(A)``: the smallest Ritz value approaches ``σ_min``
from above, and a wide matrix's null space is never mistaken for a zero singular value.

Cost per step (cProfile, 1-D Laplacian 1000², ``ℓ = 96``, one thread, shared 2-core machine): about
30 % in the dense SVD of ``B`` at the in-cycle checks (every ``CHECK_EVERY`` steps), 17 % in the
reorthogonalisation GEMVs (column-contiguous bases, :func:`~attncond.spectral.solvers.orth.basis_buffer`),
20 % in the products and their output guard, 13 % in per-step Python. The check needs only the
wanted ``σ_i`` and the last row of ``U``; a structured SVD (bidiagonal plus the restart's arrowhead,
LAPACK ``bdsqr`` with one row of ``U``) would remove most of the first share, but neither torch
nor ``scipy.linalg.lapack`` exposes it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attncond.spectral.operators.base import LinearOp, norm_trusted, safe_norm
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
from attncond.spectral.solvers.orth import (
    basis_buffer,
    combine,
    host_scalars,
    orthogonalize,
    project_out,
    random_orthonormal,
)
from attncond.spectral.solvers.scaling import solve_scaled
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


def _ritz(
    B: torch.Tensor, fnorm: float, k: int, want_l: bool, want_s: bool, tol: float,
    shape: tuple[int, int], smax: float, settle: float | None = None,
) -> _Ritz:
    """SVD of the projected ``B`` and the cheap test ``‖r‖·|e_jᵀ u_i|/√2 ≤ max(tol·σ_i, δ)`` for
    every wanted Ritz value (``δ`` from ``smax`` raised to ``σ_1(B)``). The same test serves
    the in-cycle checks and the end of a cycle. ``settle`` (one value at one end, a probe of
    :func:`probe_end`): the test also passes once the estimated interval ``σ ± (res + δ)`` lies
    wholly below ``settle`` (largest) or above it (smallest)."""
    Ub, Sb, Vbh = torch.linalg.svd(B)
    j = B.shape[0]
    idx_l = list(range(k)) if want_l else []
    idx_s = list(range(j - 1, j - 1 - k, -1)) if want_s else []
    wanted = idx_l + idx_s
    # one host read of the few scalars the test needs (the same float64 arithmetic as on tensors)
    sw, uw = torch.stack((Sb[[0] + wanted], Ub[-1, [0] + wanted])).tolist()
    smax = max(smax, sw[0])
    delta = rounding_allowance(shape, B.dtype, smax)
    ok = all(fnorm * abs(u) / math.sqrt(2.0) <= max(tol * s, delta)
             for s, u in zip(sw[1:], uw[1:], strict=True))
    if not ok and settle is not None:
        res = fnorm * abs(uw[1]) / math.sqrt(2.0) + delta
        ok = sw[1] + res < settle if want_l else sw[1] - res > settle
    return _Ritz(Ub, Sb, Vbh.T, smax, idx_l, idx_s, ok)

class _Bidiag:
    """Working state of one GKL run on the tall ``T``: ``T P = Q B``, ``Tᵀ Q = P Bᵀ + r e_ℓᵀ``."""

    def __init__(self, T: LinearOp, ell: int, p0: torch.Tensor, full: bool, gen: torch.Generator) -> None:
        M, N = T.shape
        dt, dev = T.dtype, T.device
        self.T, self.ell, self.full, self.gen = T, ell, full, gen
        # column-contiguous bases (orth.basis_buffer): the reorthogonalisation GEMVs read one block
        self.P = basis_buffer(N, ell, dtype=dt, device=dev)
        self.Q = basis_buffer(M, ell, dtype=dt, device=dev)
        self.B = torch.zeros(ell, ell, dtype=dt, device=dev)
        self.p = p0 / safe_norm(p0)
        self.r = torch.zeros(N, dtype=dt, device=dev)
        self.j0, self.steps, self.cycles, self.smax, self.fnorm = 0, 0, 0, 0.0, 0.0
        self.eps = torch.finfo(dt).eps

    def extend(self, check: Any, min_check: int, max_steps: int) -> tuple[int, _Ritz | None]:
        """Bidiagonalisation steps ``j0 … ℓ−1`` with reorthogonalisation of both bases; stops
        early when ``check`` (the cheap Ritz test, every ``CHECK_EVERY`` steps) passes or when
        ``max_steps`` steps have been taken in all (``maxiter``, also inside a cycle).

        The norms are plain ``vector_norm``s, recomputed by :func:`safe_norm` only when
        :func:`norm_trusted` says their squares could have under- or overflowed (two host
        comparisons per step), so a finite product is never called broken for an overflowing
        sum of squares."""
        P, Q, B, T, eps = self.P, self.Q, self.B, self.T, self.eps
        M, N = T.shape
        dt = T.dtype
        for j in range(self.j0, self.ell):
            if self.steps >= max_steps:
                return j, None
            P[:, j] = self.p
            q_raw = T.krylov_matvec(self.p)
            q, c = orthogonalize(Q[:, :j], q_raw, self.full)
            B[:j, j] = c
            alpha, qn = host_scalars(torch.linalg.vector_norm(q), torch.linalg.vector_norm(q_raw))
            if not (norm_trusted(alpha, M, dt) and norm_trusted(qn, M, dt)):
                alpha, qn = float(safe_norm(q)), float(safe_norm(q_raw))
            T.refuse_nonfinite(qn, "matvec")
            if alpha <= 100 * eps * max(qn, self.smax):
                q = random_orthonormal(Q[:, :j], self.gen)  # breakdown: continue in a fresh direction
            else:
                q = q / alpha
            B[j, j] = alpha
            Q[:, j] = q
            r_raw = T.krylov_matvec(q, adjoint=True)
            self.r, _ = orthogonalize(P[:, : j + 1], r_raw, self.full)
            beta, rn = host_scalars(torch.linalg.vector_norm(self.r), torch.linalg.vector_norm(r_raw))
            if not (norm_trusted(beta, N, dt) and norm_trusted(rn, N, dt)):
                beta, rn = float(safe_norm(self.r)), float(safe_norm(r_raw))
            T.refuse_nonfinite(rn, "rmatvec")
            self.fnorm = beta
            self.steps += 1
            self.smax = max(self.smax, alpha, beta)
            if j + 1 < self.ell:
                if beta <= 100 * eps * max(rn, self.smax):
                    self.p = random_orthonormal(P[:, : j + 1], self.gen)
                    B[j, j + 1] = 0.0
                    self.fnorm = 0.0
                else:
                    self.p = self.r / beta
                    B[j, j + 1] = beta
                if j + 1 >= min_check and (j + 1 - self.j0) % CHECK_EVERY == 0:
                    rz = check(B[: j + 1, : j + 1], self.fnorm, self.smax)
                    if rz.ok:
                        return j + 1, rz
        return self.ell, None

    def certify(self, ritz: _Ritz, cur: int, want_l: bool, want_s: bool) -> dict[str, Certified]:
        """Explicit certification of the wanted Ritz triplets on ``T`` itself (2 products each)."""
        Pc, Qc = self.P[:, :cur], self.Q[:, :cur]
        out: dict[str, Certified] = {}
        for end, want, idx in (("largest", want_l, ritz.idx_l), ("smallest", want_s, ritz.idx_s)):
            if want:
                out[end] = certify_small_side(self.T, combine(Pc, ritz.Vb[:, idx]), end=end,
                                              sigma_max_hint=ritz.smax, U=combine(Qc, ritz.Ub[:, idx]))
        return out

    def restart(self, ritz: _Ritz, keep: list[int]) -> None:
        """Thick restart (Baglama–Reichel) on the Ritz triplets ``keep``, continuing with ``r``."""
        cur = ritz.Sb.shape[0]
        kk = len(keep)
        self.P[:, :kk] = combine(self.P[:, :cur], ritz.Vb[:, keep])
        self.Q[:, :kk] = combine(self.Q[:, :cur], ritz.Ub[:, keep])
        self.P[:, kk:] = 0
        self.Q[:, kk:] = 0
        self.B.zero_()
        self.B[range(kk), range(kk)] = ritz.Sb[keep]
        if self.fnorm > 0:
            p, _ = orthogonalize(self.P[:, :kk], self.r / self.fnorm, True)
            self.p = p / safe_norm(p)
        else:
            self.p = random_orthonormal(self.P[:, :kk], self.gen)
        self.j0 = kk


def _gkl_keep(cur: int, k: int, nwant: int, want_l: bool, want_s: bool) -> list[int]:
    """Ritz indices kept at a thick restart: the wanted ones plus a buffer at each wanted end."""
    extra = max((cur - nwant - 2) // 2, 0)
    if want_l and want_s:
        el, es = extra // 2, extra - extra // 2
        keep = list(range(k + el)) + list(range(cur - k - es, cur))
    elif want_l:
        keep = list(range(k + extra))
    else:
        # σ_min only: half the buffer still goes to the *largest* Ritz vectors. Kept in the basis
        # they deflate the top of the spectrum, so the restarted Krylov polynomial need not damp
        # it: medium [S24] Jacobian (12,288×1,024, ℓ=64), 1,054 products instead of 1,252.
        el = extra // 2 if cur >= TOP_KEEP_MIN_ELL else 0
        keep = list(range(el)) + list(range(cur - k - (extra - el), cur))
    return sorted(set(keep))


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
    settle: float | None = None,
) -> _CoreRun:
    """One thick-restarted GKL run on the tall ``T``. ``settle`` (``k = 1``, one end): also stop
    once the certified interval lies wholly below (largest) or above (smallest) it — enough for
    :func:`probe_end` to decide that nothing lies beyond, long before ``tol``."""
    M, N = T.shape
    want_l = which in ("both", "largest")
    want_s = which in ("both", "smallest")
    nwant = k * (int(want_l) + int(want_s))
    ell = ncv if ncv is not None else (max(96, 2 * nwant + 32) if want_s else max(24, 2 * nwant + 16))
    ell = int(min(max(ell, nwant + 2), N))
    bd = _Bidiag(T, ell, p0, full, gen)
    explicit: dict[str, Certified] = {}
    converged = False

    def check(Bj: torch.Tensor, fnorm: float, smax: float) -> _Ritz:
        return _ritz(Bj, fnorm, k, want_l, want_s, tol, (M, N), smax, settle)

    while True:
        cur, ritz = bd.extend(check, min(ell, nwant + CHECK_MIN_EXTRA), max_steps)
        bd.cycles += 1
        if ritz is None:
            ritz = check(bd.B[:cur, :cur], bd.fnorm, bd.smax)
        bd.smax = ritz.smax
        out_of_steps = bd.steps >= max_steps
        if ritz.ok or out_of_steps or cur == N:
            explicit = bd.certify(ritz, cur, want_l, want_s)
            converged = all(bool(meets_tol(c, tol).all()) for c in explicit.values())
            if settle is not None and not converged:
                c = explicit["largest" if want_l else "smallest"]
                converged = bool(c.upper[0] < settle) if want_l else bool(c.lower[0] > settle)
            if converged or out_of_steps or cur == N:
                break
        bd.restart(ritz, _gkl_keep(cur, k, nwant, want_l, want_s))
    certs = CertifiedEnds(explicit.get("largest"), explicit.get("smallest"), bd.smax, steps=bd.steps,
                          cycles=bd.cycles, subspace=ell)
    return _CoreRun(certs, converged)


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
        ``"auto"``: the same. (A ``"harmonic"`` restart, Baglama–Reichel 2005 §3.3, was
        removed: in ``benchmarks/gkl_restart.py`` it never converged where thick did not and
        saved at most 5 % of the products; on foreign Jacobians its rank-one guard refused
        every step. For a stalling ``σ_min`` use :func:`golub_kahan_davidson`.)
    v0 : start vector on the small side (length ``min(m, n)``), or on the large side (it is
        then mapped through one product). Default: seeded Gaussian.
    seed : seed of the start vector and of breakdown replacements.
    ncv : Krylov subspace size ``ℓ`` (default ``max(24, 2·n_wanted + 16)``, or
        ``max(96, 2·n_wanted + 32)`` when the smallest are wanted; capped at ``min(m, n)``,
        where one cycle is exact). Ritz values are used, so ``σ_min`` of an ill-conditioned
        matrix with ``min(m, n) ≫ ℓ`` converges slowly; the result then says
        ``converged=False`` and the unconverged values are ``nan`` (their certified intervals
        hold).
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
        seed=seed,
    )
    check_choice("reorth", reorth, ("full", "selective"))
    check_choice("restart", restart, RESTARTS)
    if ncv is not None and (isinstance(ncv, bool) or not isinstance(ncv, (int, np.integer)) or ncv < 2):
        raise ValueError(f"ncv must be an integer >= 2 or None, got {ncv!r}")
    return solve_scaled(op, lambda s: solve_gkl(s, k, which, tol, maxiter, reorth=reorth, restart=restart,
                                                v0=v0, seed=seed, ncv=ncv, t0=t0), tol=tol)


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
        if not bool((p0 != 0).any()):
            raise ValueError("v0 must be non-zero")
    max_steps = maxiter if maxiter is not None else 2000
    full = reorth == "full"
    mode = _resolve_restart(restart, which)
    out = _gkl_core(T, k, which, tol, max_steps, p0, gen, ncv, full)
    info: dict[str, Any] = {"restart": mode}
    certs = out.certs
    if k >= 2 and out.converged:
        probe: dict[str, Any] = {}
        budget = max_steps - certs.steps
        for end in ("largest", "smallest"):
            c = getattr(certs, end)
            if c is not None:
                c, probe[end] = probe_end(T, c, end, k, tol, budget, gen, certs.sigma_max_hint, full=full)
                certs = dataclasses.replace(certs, **{end: c})
                budget -= probe[end]["steps"]
        info["multiplicity_probe"] = probe
    return assemble_result(op, certs, SolveRun("gkl", tol, swap, start, t0, max_steps), info)


#: a converged end with ``k ≥ 2`` is probed for a missed singular value at most this often
MAX_PROBES = 8


class _Deflated(LinearOp):
    """``[T P; c Vᵀ]`` with ``P = I − V Vᵀ`` for an orthonormal small-side ``V``, the probe operator of
    :func:`probe_end`: its singular values are those of ``T`` on the complement of ``V``, and ``c``
    on ``span V`` (``c = 0`` for a probe of the largest, ``c ≈ σ_max`` for a probe of the smallest).
    Shape ``(M + k, N)``, so it stays tall and GKL's small side is ``T``'s."""

    def __init__(self, T: LinearOp, V: torch.Tensor, c: float) -> None:
        M, N = T.shape
        super().__init__((M + V.shape[1], N), T.dtype, T.device, name="Deflated")
        self.base, self.V, self.c, self.M = T, V, c, M

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.base.matmat(project_out(self.V, X)), self.c * (self.V.T @ X)])

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return project_out(self.V, self.base.rmatmat(Y[: self.M])) + self.c * (self.V @ Y[self.M:])

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._matmat(x[:, None])[:, 0]

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._rmatmat(y[:, None])[:, 0]


def probe_end(T: LinearOp, c: Certified, end: str, k: int, tol: float, budget: int, gen: torch.Generator,
              smax: float, *, full: bool = True, take_in: bool = True) -> tuple[Certified, dict[str, Any]]:
    """Probe a converged end of ``k`` certified triplets of the tall ``T`` for a singular value the
    Krylov space missed, and take it in (``take_in=False``: only report it).

    A single start vector cannot see a repeated singular value in exact arithmetic: on a 2-D
    Laplacian GKL certified five values that were each *a* singular value but not the five largest
    (a double σ₂ was reported once), and on a matrix with six copies of its σ_min the bottom five
    held four of them and the next value up. The probe runs GKL for ``k = 1`` at the same end on
    :class:`_Deflated` (``V`` the certified right vectors) from a fresh start vector in ``V``'s
    complement. If its certified interval lies beyond the ``k``-th one by more than both error bounds,
    a value was missed: Rayleigh–Ritz of ``T`` on ``[V, v]`` keeps the ``k`` extreme ones and
    certifies them again on ``T``, and the probe repeats (at most :data:`MAX_PROBES` times, within
    the remaining ``budget`` of steps). The products are counted with the run's. It stays a Krylov
    argument: a missed value is found with probability one per probe, not proved absent. A bottom
    whose ``k``-th lower bound is already 0 has nothing below it and is not probed. With
    ``take_in=False`` (the check on a peer's answer) the first finding stops the probe, ``c`` is
    returned unchanged and ``info["found"]`` holds the missed value's certified interval.
    """
    N = T.shape[1]
    largest = end == "largest"
    start, probes, missed, steps, status = T.n_products, 0, 0, 0, "complete"
    found: list[float] | None = None
    while True:
        if not largest and c.lower[k - 1] <= 0.0:
            status = "not needed (the k-th lower bound is 0)" if probes == 0 else status
            break
        if probes == MAX_PROBES:
            status = f"stopped after {MAX_PROBES} probes"
            break
        if budget <= steps:
            status = "not run (maxiter spent)"
            break
        V, _ = torch.linalg.qr(c.V)
        D = _Deflated(T, V, 0.0 if largest else smax)
        p0 = project_out(V, torch.randn(N, generator=gen, dtype=torch.float64).to(T.dtype).to(T.device))
        # settled once the probe's interval clears the k-th value's: nothing lies beyond
        settle = float(c.lower[k - 1]) if largest else float(c.upper[k - 1])
        run = _gkl_core(D, 1, end, tol, budget - steps, p0, gen, None, full, settle)
        probes, steps = probes + 1, steps + run.certs.steps
        pc = run.certs.largest if largest else run.certs.smallest
        # beyond the k-th value when the two certified intervals are disjoint
        beyond = float(pc.lower[0] - c.upper[k - 1]) if largest else float(c.lower[k - 1] - pc.upper[0])
        if beyond <= 0.0:
            if not run.converged:
                status = "inconclusive (probe not converged)"
            break
        missed += 1
        if not take_in:
            found = [float(pc.values[0]), float(pc.lower[0]), float(pc.upper[0])]
            status = "missed a value"
            break
        W, _ = torch.linalg.qr(torch.cat([V, pc.V[:, :1]], dim=1))
        Uh, _, Yh = torch.linalg.svd(T.matmat(W), full_matrices=False)
        idx = list(range(k)) if largest else list(range(k, 0, -1))  # svd is descending
        hint = max(smax, float(pc.values[0])) if largest else smax
        c = certify_small_side(T, W @ Yh[idx].T, end=end, U=Uh[:, idx], sigma_max_hint=hint)
    info = {"probes": probes, "missed": missed, "steps": steps, "products": T.n_products - start,
            "status": status}
    return c, info if found is None else {**info, "found": found}

RESTARTS = ("auto", "thick", "augmented")

def _resolve_restart(restart: str, which: str) -> str:
    """Every accepted ``restart`` is the thick (augmented) restart (see :func:`golub_kahan_lanczos`)."""
    return "thick"
