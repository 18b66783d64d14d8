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

from attncond.spectral.results import EigenBlock, EigResult
from attncond.spectral.solvers.certify import EigCertificate, certify_eigvecs
from attncond.spectral.solvers.orth import orthogonalize, random_orthonormal
from attncond.spectral.solvers.validate import check_choice, make_generator, prepare

WHICH = ("both", "largest", "smallest", "both_magnitude")

def _block(c: EigCertificate, end: str, tol: float) -> EigenBlock:
    conv = c.rho <= np.maximum(tol * np.abs(c.values), c.delta)
    return EigenBlock(end, c.values, c.lower, c.upper, c.rho, conv, c.Y)


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
    the ``largest`` block ordered by magnitude). Symmetry of ``S`` is assumed, not checked
    (use a dot test, see the tests).
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
    )
    check_choice("reorth", reorth, ("full", "selective"))
    full = reorth == "full"
    n, n2 = op.shape
    if n != n2:
        raise ValueError(f"S must be square, got shape {op.shape}")
    start = op.n_products
    gen = make_generator(seed)
    dt, dev = op.dtype, op.device
    eps = torch.finfo(dt).eps
    max_steps = maxiter or 2000
    nwant = 2 * k if which == "both" else k
    ell = ncv or max(32, 2 * nwant + 20)
    ell = int(min(max(ell, nwant + 2), n))
    min_check = min(ell, nwant + MIN_CHECK_EXTRA)
    Qb = torch.zeros(n, ell, dtype=dt, device=dev)
    Tm = torch.zeros(ell, ell, dtype=dt, device=dev)
    q = (
        v0.to(dt).reshape(-1)
        if v0 is not None
        else torch.randn(n, generator=gen, dtype=torch.float64).to(dt).to(dev)
    )
    q = q / torch.linalg.vector_norm(q)
    j0, steps, cycles, lmax = 0, 0, 0, 0.0
    f = torch.zeros(n, dtype=dt, device=dev)
    fnorm = 0.0
    certs: dict[str, EigCertificate] = {}
    converged = False
    while True:
        cur = ell  # columns of Qb in use this cycle (< ell after an early in-cycle stop)
        ritz: _Ritz | None = None
        for j in range(j0, ell):
            Qb[:, j] = q
            w_raw = op.matvec(q)
            w, c = orthogonalize(Qb[:, : j + 1], w_raw, full)
            Tm[: j + 1, j] = c
            Tm[j, : j + 1] = c
            beta = torch.linalg.vector_norm(w)
            fnorm = float(beta)
            steps += 1
            lmax = max(lmax, float(c.abs().max()))
            f = w
            if j + 1 < ell:
                if fnorm <= 100 * eps * max(float(torch.linalg.vector_norm(w_raw)), lmax):
                    q = random_orthonormal(Qb[:, : j + 1], gen)
                    fnorm = 0.0
                else:
                    q = w / beta
                if j + 1 >= min_check:
                    r = _ritz(Tm[: j + 1, : j + 1], fnorm, which, k, tol, lmax, n, eps)
                    if r.ok:
                        cur, ritz = j + 1, r
                        break
        cycles += 1
        if ritz is None:
            ritz = _ritz(Tm[:cur, :cur], fnorm, which, k, tol, lmax, n, eps)
        theta, W, lmax = ritz.theta, ritz.W, ritz.lmax
        groups, order, wanted, ok = ritz.groups, ritz.order, ritz.wanted, ritz.ok
        done = steps >= max_steps or cur == n
        if ok or done:
            certs = {
                end: certify_eigvecs(
                    op,
                    Qb[:, :cur] @ W[:, idx],
                    end=end if which != "both_magnitude" else "none",
                    lam_max_hint=lmax,
                )
                for end, idx in groups.items()
            }
            converged = all(c.meets(tol) for c in certs.values())
            if converged or done:
                break
        # thick restart
        free = max(cur - nwant - 2, 0) // 2
        keep: set[int] = set(wanted)
        if which == "both_magnitude":
            keep |= set(order[: k + free])
        else:
            if "largest" in groups:
                keep |= set(range(cur - k - (free // 2 if "smallest" in groups else free), cur))
            if "smallest" in groups:
                keep |= set(range(k + (free - free // 2 if "largest" in groups else free)))
        keep_l = sorted(keep)
        kk = len(keep_l)
        Qb[:, :kk] = Qb[:, :cur] @ W[:, keep_l]
        Qb[:, kk:] = 0
        Tm.zero_()
        Tm[range(kk), range(kk)] = theta[keep_l]
        if fnorm > 0:
            q, _ = orthogonalize(Qb[:, :kk], f / fnorm, True)
            q = q / torch.linalg.vector_norm(q)
        else:
            q = random_orthonormal(Qb[:, :kk], gen)
        j0 = kk
    blocks = {end: _block(c, end, tol) for end, c in certs.items()}
    reason = None
    if not converged:
        worst = max(float(np.max(c.rho)) for c in certs.values())
        reason = f"not converged after {steps} steps: residual {worst:.3g} > tol*|theta| (tol={tol:g})"
    return EigResult(
        method="lanczos",
        shape=op.shape,
        largest=blocks.get("largest"),
        smallest=blocks.get("smallest"),
        converged=converged,
        iterations=steps,
        matvecs=op.n_products - start,
        seconds=time.perf_counter() - t0,
        reason=reason,
        info={"subspace": ell, "restarts": cycles - 1},
    )
