"""Symmetric Lanczos with full reorthogonalisation and thick restarts (Wu–Simon).

For a symmetric operator ``S`` (Hessian, Gauss–Newton, Gram) it builds
``S Q_ℓ = Q_ℓ T_ℓ + f e_ℓᵀ`` with orthonormal ``Q_ℓ`` (two-pass classical Gram–Schmidt)
and takes Ritz pairs ``(θ_i, y_i = Q_ℓ w_i)`` from ``T_ℓ = W Θ Wᵀ``; it restarts with the
wanted Ritz vectors plus a buffer (thick restart).

Certified bounds: for a unit ``y`` and ``θ = yᵀ S y``, **Bauer–Fike for symmetric
matrices** gives an eigenvalue in ``[θ − ‖S y − θ y‖, θ + ‖S y − θ y‖]``; Courant–Fischer
gives ``λ_max ≥ θ`` and ``λ_min ≤ θ`` for the extreme ones. Residuals are recomputed
explicitly with ``S`` at the end. Bounds are widened by the rounding allowance
``δ = 10·sqrt(n)·eps·max|θ|``. As for every Krylov method, a missed eigenvalue (direction
absent from ``v0``) cannot be excluded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attncond.spectral.operators.base import LinearOp, SymmetricOp, norm_trusted, safe_norm
from attncond.spectral.results import EigenBlock, EigResult
from attncond.spectral.solvers.certify import EigCertificate, certify_eigvecs
from attncond.spectral.solvers.orth import (
    basis_buffer,
    combine,
    host_scalars,
    orthogonalize,
    project_out,
    random_orthonormal,
)
from attncond.spectral.solvers.scaling import solve_scaled
from attncond.spectral.solvers.validate import (
    check_choice,
    check_symmetric,
    make_generator,
    needs_symmetry_probe,
    prepare,
)

WHICH = ("both", "largest", "smallest", "both_magnitude")

def _block(c: EigCertificate, end: str, tol: float) -> EigenBlock:
    """The certified end as an :class:`EigenBlock`; a value that misses the stopping rule is ``nan``:
    an unconverged Ritz value is never the headline. Its interval keeps the Courant–Fischer side only
    (``λ_min ≤ upper``, ``λ_max ≥ lower``; the other end is ``∓inf``): a Bauer–Fike interval holds
    *an* eigenvalue, not necessarily the extreme one."""
    conv = c.rho <= np.maximum(tol * np.abs(c.values), c.delta)
    lower, upper = np.array(c.lower, dtype=float), np.array(c.upper, dtype=float)
    if end == "smallest":
        lower[~conv] = -np.inf
    else:
        upper[~conv] = np.inf
    return EigenBlock(end, np.where(conv, c.values, np.nan), lower, upper, c.rho, conv, c.Y)


@dataclass(frozen=True)
class _Ritz:
    """Ritz pairs of one projected matrix and whether the cheap stopping test passed."""

    theta: torch.Tensor
    W: torch.Tensor
    lmax: float
    groups: dict[str, list[int]]
    order: list[int]
    wanted: list[int]
    ok: bool

#: in-cycle convergence checks start once the basis holds ``nwant + MIN_CHECK_EXTRA`` vectors
MIN_CHECK_EXTRA = 8

#: ... and then run after every ``max(1, j // CHECK_SPACING)``-th step of a ``j``-vector basis: the
#: test is an ``eigh`` of the ``j×j`` projection (``O(j³)``), so checking every step of a basis of
#: thousands costs more than the steps (measured: [S24] xl, 32,768², 0.3 s per ``eigh`` at
#: ``j = 1500`` against 0.8 s per product); at most ``1/CHECK_SPACING`` extra steps are taken
CHECK_SPACING = 50

def _ritz(T: torch.Tensor, fnorm: float, which: str, k: int, tol: float, lmax: float, n: int,
          eps: float) -> _Ritz:
    """Ritz pairs of the projected ``T`` and the cheap test ``‖f‖·|e_jᵀ w_i| ≤ max(tol·|θ_i|, δ)``
    for every wanted one, ``δ = 10·√n·eps·lmax`` with ``lmax`` raised to ``max|θ|``.

    The same test serves the in-cycle checks and the end of a cycle; the wanted indices are
    returned by end in ``groups`` (and ``order``, by magnitude, for ``both_magnitude``).
    """
    theta, W = torch.linalg.eigh(0.5 * (T + T.T))
    j = T.shape[0]
    lmax = max(lmax, float(theta.abs().max()))
    delta = 10.0 * math.sqrt(n) * eps * lmax
    est = fnorm * W[-1, :].abs()
    order: list[int] = []
    if which == "both_magnitude":
        order = torch.argsort(theta.abs(), descending=True).tolist()
        groups = {"largest": order[:k]}
    else:
        groups = {}
        if which in ("both", "largest"):
            groups["largest"] = list(range(j - 1, j - 1 - k, -1))
        if which in ("both", "smallest"):
            groups["smallest"] = list(range(k))
    wanted = [i for g in groups.values() for i in g]
    ok = bool((est[wanted] <= torch.clamp(tol * theta[wanted].abs(), min=delta)).all())
    return _Ritz(theta, W, lmax, groups, order, wanted, ok)

def symmetric_lanczos(
    S: Any,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-10,
    maxiter: int | None = None,
    reorth: str = "full",
    seed: int = 0,
    *,
    v0: torch.Tensor | None = None,
    ncv: int | None = None,
    device: Any = None,
    dtype: Any = None,
) -> EigResult:
    """Extreme eigenpairs of a symmetric operator ``S`` by thick-restarted Lanczos.

    Stopping rule: every wanted Ritz pair has ``‖S y − θ y‖ ≤ max(tol·|θ|, δ)`` — first by
    the cheap estimate ``‖f‖·|e_jᵀ w_i|`` (tested after every step once the basis holds
    ``nwant + 8`` vectors, and at every restart), then confirmed by explicit products — or
    ``maxiter`` Lanczos steps (one product each; default 2000) were taken.

    ``which``: ``"both"`` (algebraically largest and smallest), ``"largest"``,
    ``"smallest"``, or ``"both_magnitude"`` (the ``k`` of largest ``|λ|``, returned as
    the ``largest`` block ordered by magnitude). A stored ``S`` or one made of user callables is
    refused (``ValueError``) when the symmetry probe of
    :func:`attncond.spectral.solvers.validate.check_symmetric` fails (two products, not counted in
    ``matvecs``); the model operators (``HessianOperator``, ``GramOperator``, …) are symmetric by
    construction and are not probed. ``S`` is solved as ``2^e·S`` and the result divided back exactly
    (:func:`attncond.spectral.solvers.scaling.solve_scaled`).
    """
    t0 = time.perf_counter()
    op, k, tol, maxiter = prepare(
        S,
        k=k,
        which=which,
        which_choices=WHICH,
        tol=tol,
        maxiter=maxiter,
        device=device,
        dtype=dtype,
        v0=v0,
        seed=seed,
        name="S",
    )
    check_choice("reorth", reorth, ("full", "selective"))
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"S must be square, got shape {op.shape}")
    if ncv is not None and (isinstance(ncv, bool) or not isinstance(ncv, (int, np.integer)) or ncv < 2):
        raise ValueError(f"ncv must be an integer >= 2 or None, got {ncv!r}")

    def run(s: LinearOp) -> EigResult:
        if needs_symmetry_probe(op):
            check_symmetric(s, seed)
        return solve_lanczos(s, k, which, tol, maxiter, full=reorth == "full", seed=seed, v0=v0, ncv=ncv, t0=t0)

    return solve_scaled(op, run, tol=tol)


class _Krylov:
    """Working state of one Lanczos run: the basis ``Qb``, the projection ``Tm`` and counters."""

    def __init__(self, op: LinearOp, ell: int, q: torch.Tensor, full: bool, gen: torch.Generator) -> None:
        n = op.shape[0]
        self.op, self.ell, self.full, self.gen = op, ell, full, gen
        # column-contiguous basis (orth.basis_buffer): the reorthogonalisation GEMVs read one block
        self.Qb = basis_buffer(n, ell, dtype=op.dtype, device=op.device)
        self.Tm = torch.zeros(ell, ell, dtype=op.dtype, device=op.device)
        self.q = q / safe_norm(q)
        self.f = torch.zeros(n, dtype=op.dtype, device=op.device)
        self.j0, self.steps, self.cycles, self.lmax, self.fnorm = 0, 0, 0, 0.0, 0.0
        self.eps = torch.finfo(op.dtype).eps

    def extend(self, check: Any, min_check: int, max_steps: int) -> tuple[int, _Ritz | None]:
        """Lanczos steps ``j0 … ell−1`` with full reorthogonalisation; stops early when ``check``
        (the cheap Ritz test on the current projection) passes or ``max_steps`` steps have been taken
        in all. Returns ``(columns used, ritz)``."""
        Qb, Tm = self.Qb, self.Tm
        n, dt = self.op.shape[0], self.op.dtype
        for j in range(self.j0, self.ell):
            if self.steps >= max_steps:
                return j, None
            Qb[:, j] = self.q
            w_raw = self.op.krylov_matvec(self.q)
            w, c = orthogonalize(Qb[:, : j + 1], w_raw, self.full)
            Tm[: j + 1, j] = c
            Tm[j, : j + 1] = c
            beta, wn, cmax = host_scalars(torch.linalg.vector_norm(w), torch.linalg.vector_norm(w_raw),
                                          c.abs().max())
            if not (norm_trusted(beta, n, dt) and norm_trusted(wn, n, dt)):  # squares under/overflowed
                beta, wn = float(safe_norm(w)), float(safe_norm(w_raw))
            self.op.refuse_nonfinite(wn, "matvec")
            self.fnorm = beta
            self.steps += 1
            self.lmax = max(self.lmax, cmax)
            self.f = w
            if j + 1 < self.ell:
                if self.fnorm <= 100 * self.eps * max(wn, self.lmax):
                    self.q = random_orthonormal(Qb[:, : j + 1], self.gen)  # invariant subspace found
                    self.fnorm = 0.0
                else:
                    self.q = w / beta
                if j + 1 >= min_check and (j + 1 - min_check) % max(1, (j + 1) // CHECK_SPACING) == 0:
                    r = check(Tm[: j + 1, : j + 1], self.fnorm, self.lmax)
                    if r.ok:
                        return j + 1, r
        return self.ell, None

    def restart(self, ritz: _Ritz, keep: list[int]) -> None:
        """Thick restart on the Ritz vectors ``keep`` (Wu–Simon), continuing with the residual."""
        kk = len(keep)
        cur = ritz.W.shape[0]
        self.Qb[:, :kk] = combine(self.Qb[:, :cur], ritz.W[:, keep])
        self.Qb[:, kk:] = 0
        self.Tm.zero_()
        self.Tm[range(kk), range(kk)] = ritz.theta[keep]
        if self.fnorm > 0:
            q, _ = orthogonalize(self.Qb[:, :kk], self.f / self.fnorm, True)
            self.q = q / safe_norm(q)
        else:
            self.q = random_orthonormal(self.Qb[:, :kk], self.gen)
        self.j0 = kk


def _keep(ritz: _Ritz, which: str, k: int, nwant: int) -> list[int]:
    """Indices kept at a thick restart: the wanted Ritz pairs plus half the free space as a buffer."""
    cur = ritz.W.shape[0]
    free = max(cur - nwant - 2, 0) // 2
    keep: set[int] = set(ritz.wanted)
    if which == "both_magnitude":
        keep |= set(ritz.order[: k + free])
    else:
        if "largest" in ritz.groups:
            keep |= set(range(cur - k - (free // 2 if "smallest" in ritz.groups else free), cur))
        if "smallest" in ritz.groups:
            keep |= set(range(k + (free - free // 2 if "largest" in ritz.groups else free)))
    return sorted(keep)


def solve_lanczos(op: LinearOp, k: int, which: str, tol: float, maxiter: int | None, *, full: bool = True,
                  seed: int = 0, v0: torch.Tensor | None = None, ncv: int | None = None,
                  t0: float | None = None) -> EigResult:
    """:func:`symmetric_lanczos` on a validated square operator (no argument checks)."""
    t0 = time.perf_counter() if t0 is None else t0
    n = op.shape[0]
    start = op.n_products
    gen = make_generator(seed)
    eps = torch.finfo(op.dtype).eps
    max_steps = maxiter or 2000
    nwant = 2 * k if which == "both" else k
    ell = int(min(max(ncv or max(32, 2 * nwant + 20), nwant + 2), n))
    q0 = v0.to(op.dtype).reshape(-1) if v0 is not None else \
        torch.randn(n, generator=gen, dtype=torch.float64).to(op.dtype).to(op.device)
    kr = _Krylov(op, ell, q0, full, gen)
    certs: dict[str, EigCertificate] = {}
    converged = False

    def check(T: torch.Tensor, fnorm: float, lmax: float) -> _Ritz:
        return _ritz(T, fnorm, which, k, tol, lmax, n, eps)

    while True:
        cur, ritz = kr.extend(check, min(ell, nwant + MIN_CHECK_EXTRA), max_steps)
        kr.cycles += 1
        if ritz is None:
            ritz = check(kr.Tm[:cur, :cur], kr.fnorm, kr.lmax)
        kr.lmax = ritz.lmax
        done = kr.steps >= max_steps or cur == n
        if ritz.ok or done:
            certs = {
                end: certify_eigvecs(op, combine(kr.Qb[:, :cur], ritz.W[:, idx]),
                                     end=end if which != "both_magnitude" else "none", lam_max_hint=ritz.lmax)
                for end, idx in ritz.groups.items()
            }
            converged = all(c.meets(tol) for c in certs.values())
            if converged or done:
                break
        kr.restart(ritz, _keep(ritz, which, k, nwant))
    probe: dict[str, Any] = {}
    if converged and k >= 2 and which != "both_magnitude":
        for i, end in enumerate(list(certs)):
            certs[end], probe[end] = _complete_end(op, certs[end], end, k, tol, max_steps - kr.steps,
                                                   seed + 1 + i, kr.lmax)
        converged = all(c.meets(tol) for c in certs.values())
    blocks = {end: _block(c, end, tol) for end, c in certs.items()}
    reason = None
    if not converged:
        worst = max(float(np.max(c.rho)) for c in certs.values())
        reason = f"not converged after {kr.steps} steps: residual {worst:.3g} > tol*|theta| (tol={tol:g})"
    return EigResult(
        method="lanczos",
        shape=op.shape,
        largest=blocks.get("largest"),
        smallest=blocks.get("smallest"),
        converged=converged,
        iterations=kr.steps,
        matvecs=op.n_products - start,
        seconds=time.perf_counter() - t0,
        reason=reason,
        info={"subspace": ell, "restarts": kr.cycles - 1, **({"multiplicity_probe": probe} if probe else {})},
    )


#: a converged end with ``k ≥ 2`` is probed for a missed eigenvalue at most this often
MAX_PROBES = 8


class _Deflated(SymmetricOp):
    """``P S P + c·V Vᵀ`` with ``P = I − V Vᵀ``: ``S`` on the complement of the orthonormal ``V``, whose span
    is moved to ``c`` (beyond the end being probed), the probe operator of :func:`_complete_end`."""

    def __init__(self, S: LinearOp, V: torch.Tensor, c: float) -> None:
        super().__init__(S.shape, S.dtype, S.device, name="Deflated")
        self.base, self.V, self.c = S, V, c

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        V = self.V
        return project_out(V, self.base.matmat(project_out(V, X))) + self.c * (V @ (V.T @ X))


def _complete_end(op: LinearOp, c: EigCertificate, end: str, k: int, tol: float, budget: int, seed: int,
                  lmax: float) -> tuple[EigCertificate, dict[str, Any]]:
    """Probe a converged end of ``k ≥ 2`` Ritz pairs for an eigenvalue the Krylov space missed.

    One start vector cannot see a repeated eigenvalue in exact arithmetic: on the 2-D Laplacian the
    five largest were certified with the double λ₂ reported once (error 0.067). The probe runs
    Lanczos for ``k = 1`` at the same end on ``P S P ± c·VVᵀ`` (``V`` the certified vectors, ``c``
    beyond the spectrum); a value beyond the ``k``-th, past both error bounds, was missed:
    Rayleigh–Ritz of ``S`` on ``[V, y]`` keeps the ``k`` extreme ones, certifies them again and the
    probe repeats (at most :data:`MAX_PROBES` times within ``budget`` steps; products counted with
    the run's). A missed value is found with probability one per probe, not proved absent.
    """
    n = op.shape[0]
    start, probes, missed, status = op.n_products, 0, 0, "complete"
    sign = 1.0 if end == "largest" else -1.0
    while c.Y.shape[1] < n:  # k = n: the whole spectrum is in, nothing can be missed
        if probes == MAX_PROBES:
            status = f"stopped after {MAX_PROBES} probes"
            break
        if budget <= 0:
            status = "not run (maxiter spent)"
            break
        V, _ = torch.linalg.qr(c.Y)
        D = _Deflated(op, V, -sign * (2.0 * max(lmax, float(np.abs(c.values).max())) + 1.0))
        run = solve_lanczos(D, 1, end, tol, budget, seed=seed + probes)
        probes, budget = probes + 1, budget - run.iterations
        blk = run.largest if end == "largest" else run.smallest
        theta = float(blk.values[0])
        if not math.isfinite(theta):
            status = "inconclusive (probe not converged)"
            break
        margin = float(c.rho[k - 1] + c.delta + abs(float(blk.upper[0]) - float(blk.lower[0])))
        if sign * (theta - float(c.values[k - 1])) <= margin:
            if not run.converged:
                status = "inconclusive (probe not converged)"
            break
        missed += 1
        W, _ = torch.linalg.qr(torch.cat([V, blk.vectors[:, :1].to(V.dtype)], dim=1))
        _, E = torch.linalg.eigh(W.T @ op.matmat(W))
        idx = list(range(k, 0, -1)) if end == "largest" else list(range(k))  # eigh is ascending
        c = certify_eigvecs(op, W @ E[:, idx], end=end, lam_max_hint=max(lmax, abs(theta)))
    return c, {"probes": probes, "missed": missed, "products": op.n_products - start, "status": status}
