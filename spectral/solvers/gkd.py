"""Golub–Kahan–Davidson (GKD): σ_min of a large operator, matrix-free, with null-space locking.

Reference: Goldenberg, Stathopoulos & Romero, *A Golub–Kahan Davidson method for accurately
computing a few singular triplets of large sparse matrices*, SIAM J. Sci. Comput. 41 (2019)
(the method behind PRIMME's ``svds``); Stathopoulos, *Nearly optimal preconditioned methods
for Hermitian eigenproblems under limited memory* (GD+k), SIAM J. Sci. Comput. 29 (2007).

The solver works on the tall orientation ``T`` (``M ≥ N``) and keeps three bases: an
orthonormal right basis ``P`` (``N×j``), ``Q = orth(T P)`` (so ``T P = Q B`` *exactly*,
``B = Qᵀ T P`` upper triangular) and ``W = Tᵀ Q``. Every residual of a Ritz triplet
``(σ, u = Q b_u, v = P b_v)`` from ``B = U_B Σ V_Bᵀ`` is then available without products:
``T v − σ u = 0`` and ``Tᵀ u − σ v = W b_u − σ P b_v`` — a residual on ``A`` itself, not on
``AᵀA``, so it is accurate to ``eps·σ_max`` (not ``eps·σ_max²/σ``).

Differences from :func:`attncond.spectral.solvers.gkl.golub_kahan_lanczos` (same two products
per step, same Krylov space until the first restart):

* **memory-bounded basis**: ``ℓ = min(N, AUTO.gkd_max_basis, AUTO.gkd_basis_bytes/(item·(M+2N)))``
  instead of ``ℓ = 96``. σ_min of an ill-conditioned operator converges superlinearly once the
  basis resolves the spectrum; restarted small bases stall (1-D Laplacian, ``n = 1000``:
  GKL needs 40,080 products with ``ℓ = 96`` and does not converge, 2,002 with ``ℓ = 1000``);
* **GD+k restarts**: the restart keeps the smallest Ritz vectors, a few largest (they deflate
  the top), *and* the previous target Ritz vector (the locally optimal "+k" direction);
  ``T P = Q B`` survives any restart (a QR of ``B Y``), no Lanczos relation is needed;
* **null-space locking**: Ritz vectors with ``σ, ‖residual‖ ≤ max(m, n)·eps·σ̂_max`` are
  locked into ``Z`` (every later basis vector is orthogonalised against it) and a fresh
  random vector is injected per locked one, since a single Krylov sequence sees each
  multiple singular value once. A rank-deficient ``A`` gives ``σ_min = 0`` (certified
  ``[0, ‖A z‖ + δ]``), ``info["null_dim"]`` and the smallest non-zero singular value
  ``info["smallest_nonzero"]`` (certified on ``A``, in the complement of ``Z``);
* **preconditioning** (``preconditioner=M ≈ (TᵀT)⁻¹``, the smallest end only): GD+k proper — the
  Ritz test runs every step and the basis grows by ``M r`` for the residual ``r = Tᵀu − σv`` of the
  smallest unconverged wanted triplet (``TᵀT v − σ²v = σ r``), basis ``PRECONDITIONED_BASIS``;
  a restart keeps no largest vectors. Null-level vectors are locked as soon as their cheap
  residual meets the stopping rule, never certified as the smallest non-zero value. The [S24]
  NTK Gram's ``AttentionGramPreconditioner`` takes the large case (m = 8,192) from 1,158 products
  (unpreconditioned, an earlier run) to 514;
* **honest headline**: an end that does not meet ``tol`` reports ``values = nan``; its
  certified interval (Courant–Fischer ``σ_min ≤ ‖A v‖`` and the residual bound) is kept.

Cost per step: two products and two CGS2 ("twice is enough") orthogonalisations, ``p`` against
``[Z, P]`` and ``T p`` against ``Q``: eight GEMVs over ``N×j`` and ``M×j`` blocks, kept contiguous
(:func:`~attncond.spectral.solvers.orth.basis_buffer`). With ``ℓ ≈ 1000`` and cheap sparse products
this memory traffic, not Python, is the cost (measured on the 2-D Laplacian 2500², one thread:
62 % of the time in those GEMVs, at about 18 GB/s, 18 % in the SVDs of ``B``), which is why GKL
with its ``ℓ = 96`` is faster in wall time there even at a similar product count.

Caveat (every Krylov method): an extreme singular value whose direction is absent from the
start vectors cannot be seen; the certified intervals stay true.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attncond.spectral import policy
from attncond.spectral.operators.base import LinearOp, norm_trusted, safe_norm, same_device
from attncond.spectral.operators.explicit import as_operator
from attncond.spectral.results import SingularBlock, SVDResult
from attncond.spectral.solvers.certify import (
    Certified,
    block_from,
    certified_error,
    certify_small_side,
    nan_unconverged,
    rounding_allowance,
)
from attncond.spectral.solvers.gkl import probe_end
from attncond.spectral.solvers.orth import (
    basis_buffer,
    combine,
    host_scalars,
    orthogonalize,
    orthogonalize_blocks,
    project_out,
    random_orthonormal,
)
from attncond.spectral.solvers.scaling import solve_scaled
from attncond.spectral.solvers.validate import check_k, make_generator, prepare

__all__ = ["golub_kahan_davidson", "NullSpaceInfo", "gkd_run"]

WHICH = ("both", "largest", "smallest")

#: GD+k: a restart also keeps the previous target Ritz vector (locally optimal direction)
PLUS_K = True

#: fractions of the basis a restart keeps at the small and the large end
KEEP_SMALL, KEEP_LARGE = 0.25, 0.25

#: first convergence check after this many basis vectors beyond the wanted ones
CHECK_MIN = 8


@dataclass(frozen=True)
class NullSpaceInfo:
    """A locked null space of the tall operator: ``dimension`` vectors ``z`` with
    ``‖T z‖ ≤ threshold`` (``threshold = max(m, n)·eps·σ̂_max``), certified by products."""

    dimension: int
    threshold: float
    max_residual: float

    def to_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "threshold": self.threshold, "max_residual": self.max_residual}


@dataclass
class _Space:
    """Working bases of one GKD run (mutable scratch, never returned)."""

    T: LinearOp
    ell: int
    gen: torch.Generator
    P: torch.Tensor = field(init=False)
    Q: torch.Tensor = field(init=False)
    W: torch.Tensor = field(init=False)
    B: torch.Tensor = field(init=False)
    Z: torch.Tensor = field(init=False)
    j: int = 0
    smax: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        M, N = self.T.shape
        kw = dict(dtype=self.T.dtype, device=self.T.device)
        # column-contiguous bases: the Gram–Schmidt GEMVs against P[:, :j], Q[:, :j] and Z read
        # one contiguous block (orth.basis_buffer; measured 1.3-2.4x faster than row-major)
        self.P = basis_buffer(N, self.ell, **kw)
        self.Q = basis_buffer(M, self.ell, **kw)
        self.W = basis_buffer(N, self.ell, **kw)
        self.B = torch.zeros(self.ell, self.ell, **kw)
        self.Z = basis_buffer(N, 0, **kw)

    @property
    def room(self) -> int:
        """Directions left in ``R^N`` outside ``span(Z, P)``."""
        return self.T.shape[1] - self.Z.shape[1] - self.j

    def expand(self, p: torch.Tensor) -> torch.Tensor:
        """Append ``p`` (orthogonalised against ``Z`` and ``P``) to ``P``; two products.

        Returns ``Tᵀ q_j``, the next Krylov direction. Both Gram–Schmidt steps are CGS2 ("twice is
        enough"): ``p`` against the orthonormal blocks ``[Z, P]`` at once
        (:func:`~attncond.spectral.solvers.orth.orthogonalize_blocks`; before, ``Z``, ``P`` and
        ``Z`` again one after the other) and ``T p`` against ``Q``. Two host reads per step, each
        of two scalars the breakdown tests need (:func:`~attncond.spectral.solvers.orth.host_scalars`).
        """
        j, dt = self.j, self.T.dtype
        eps = torch.finfo(dt).eps
        M, N = self.T.shape
        blocks = (self.Z, self.P[:, :j])
        p_in = p
        n0 = torch.linalg.vector_norm(p)
        p, _ = orthogonalize_blocks(blocks, p)
        nrm_t = torch.linalg.vector_norm(p)
        n0, nrm = host_scalars(n0, nrm_t)
        if not (norm_trusted(n0, N, dt) and norm_trusted(nrm, N, dt)):  # squares under/overflowed
            n0, nrm = float(safe_norm(p_in)), float(safe_norm(p))
        if not nrm > 1e3 * eps * n0:
            p = random_orthonormal(blocks, self.gen)
        else:
            p = p / nrm
        self.P[:, j] = p
        t = self.T.krylov_matvec(p)
        q, c = orthogonalize(self.Q[:, :j], t, True)
        alpha, tn = host_scalars(torch.linalg.vector_norm(q), torch.linalg.vector_norm(t))
        if not (norm_trusted(alpha, M, dt) and norm_trusted(tn, M, dt)):
            alpha, tn = float(safe_norm(q)), float(safe_norm(t))
        self.T.refuse_nonfinite(tn, "matvec")
        self.smax = max(self.smax, tn)
        if alpha <= 100 * eps * max(tn, self.smax):
            q = random_orthonormal(self.Q[:, :j], self.gen)
        else:
            q = q / alpha
        self.Q[:, j] = q
        self.B[:j, j], self.B[j, j] = c, alpha
        w = self.T.krylov_matvec(q, adjoint=True)
        wn = float(torch.linalg.vector_norm(w))
        if not norm_trusted(wn, N, dt):
            wn = float(safe_norm(w))
        self.T.refuse_nonfinite(wn, "rmatvec")
        self.W[:, j] = w
        self.j += 1
        self.steps += 1
        return w

    def restart(self, Y: torch.Tensor) -> None:
        """Keep ``span(P Y)`` (``Y`` ``j×kk`` orthonormal): ``B Y = Q_R R``, ``P ← P Y``,
        ``Q ← Q Q_R``, ``W ← W Q_R``, ``B ← R`` (``T P = Q B`` is preserved exactly)."""
        j, kk = self.j, Y.shape[1]
        Qr, R = torch.linalg.qr(self.B[:j, :j] @ Y)
        self.P[:, :kk] = combine(self.P[:, :j], Y)
        self.Q[:, :kk] = combine(self.Q[:, :j], Qr)
        self.W[:, :kk] = combine(self.W[:, :j], Qr)
        for X in (self.P, self.Q, self.W):
            X[:, kk:] = 0
        self.B.zero_()
        self.B[:kk, :kk] = R
        self.j = kk

    def lock(self, V: torch.Tensor) -> None:
        """Move the unit vectors ``V`` (in ``span P``) into the locked set ``Z``."""
        Zn, _ = torch.linalg.qr(V)
        Z = basis_buffer(self.Z.shape[0], self.Z.shape[1] + Zn.shape[1], dtype=Zn.dtype, device=Zn.device)
        Z[:, : self.Z.shape[1]], Z[:, self.Z.shape[1]:] = self.Z, Zn
        self.Z = Z


@dataclass(frozen=True)
class _Ritz:
    """Ritz triplets of the current ``B`` with their residual norms (no products)."""

    Ub: torch.Tensor
    Sb: torch.Tensor
    Vb: torch.Tensor
    eta: torch.Tensor  # ‖Tᵀu − σv‖/√2 for every Ritz triplet

    @property
    def j(self) -> int:
        return int(self.Sb.numel())


def _ritz(S: _Space, k: int) -> _Ritz:
    """SVD of ``B``; residual norms for the ``k`` largest and, from the bottom up, for the
    smallest in doubling chunks while they are all at the null level (the rest stay ``inf``:
    computing all ``j`` residuals would cost ``O(N·j²)`` per check)."""
    j = S.j
    Ub, Sb, Vbh = torch.linalg.svd(S.B[:j, :j])
    Vb = Vbh.T
    S.smax = max(S.smax, float(Sb[0]))
    eta = torch.full_like(Sb, math.inf)

    def fill(idx: list[int]) -> None:
        R = _residuals(S, Ub[:, idx], Vb[:, idx], Sb[idx])
        eta[idx] = safe_norm(R, dim=0) / math.sqrt(2.0)

    fill(list(range(min(k, j))))
    thr = max(S.T.shape) * torch.finfo(S.T.dtype).eps * S.smax
    lo, chunk = j, 2 * k + 6
    while lo > 0:
        idx = list(range(max(lo - chunk, 0), lo))
        fill(idx)
        if not bool(((Sb[idx] <= thr) & (eta[idx] <= thr)).all()):
            break
        lo, chunk = lo - chunk, 2 * chunk
    return _Ritz(Ub, Sb, Vb, eta)


def _ok(rz: _Ritz, idx: list[int], tol: float, delta: float, slack: float = 1.0) -> bool:
    return bool((rz.eta[idx] <= slack * torch.clamp(tol * rz.Sb[idx], min=delta)).all())


#: the stored ``W = TᵀQ`` drifts from the true one over restarts (rounding), so the free
#: residual can stall a little above ``δ``; within this factor of the rule the wanted vectors
#: are certified explicitly (2 products each) and the run stops if they pass
NEAR = 100.0


def basis_floor(ell: int, dtype: torch.dtype, smax: float) -> float:
    """``4·ℓ·eps·σ̂_max``: the attainable residual of a basis of ``ℓ`` vectors (Gram–Schmidt against
    ``ℓ`` vectors and the restart rotations lose ``O(ℓ·eps)`` relative to ``σ_max``; measured: the
    2-D Laplacian 2500², ℓ = 1024, stalls at ``1.9e-12 ≈ 1.05·ℓ·eps·σ_max``). GKD's stopping rule
    accepts a certified error ``≤ max(tol·σ, δ, 4·ℓ·eps·σ̂_max)``; the intervals are unchanged."""
    return 4 * ell * torch.finfo(dtype).eps * smax


def _meets(c: Certified, tol: float, floor: float) -> np.ndarray:
    return certified_error(c) <= np.maximum(np.maximum(tol * c.values, c.rounding), floor)


def _explicit_ok(S: _Space, rz: _Ritz, idx_l: list[int], idx_s: list[int], tol: float) -> bool:
    j = rz.j
    for end, idx in (("largest", idx_l), ("smallest", idx_s)):
        if idx:
            c = certify_small_side(S.T, combine(S.P[:, :j], rz.Vb[:, idx]), end=end, sigma_max_hint=S.smax,
                                   U=combine(S.Q[:, :j], rz.Ub[:, idx]))
            if not bool(_meets(c, tol, basis_floor(S.ell, S.T.dtype, S.smax)).all()):
                return False
    return True


def _keep(rz: _Ritz, ell: int, k: int, want_l: bool, exclude: set[int],
          preconditioned: bool = False) -> list[int]:
    """Indices of the Ritz vectors a restart keeps: ``KEEP_SMALL·ℓ`` smallest and ``KEEP_LARGE·ℓ``
    largest (kept top vectors deflate the top, so the restarted polynomial need not damp it; a
    preconditioned run keeps none: its expansions are not polynomials in ``TᵀT``)."""
    j = rz.j
    order = [i for i in range(j - 1, -1, -1) if i not in exclude]  # smallest first
    ns = max(k + 2, int(KEEP_SMALL * ell))
    nl = max(k + 2, int(KEEP_LARGE * ell)) if (want_l or ell >= 48) and not preconditioned else 0
    keep = set(order[:ns]) | {i for i in range(min(nl, j)) if i not in exclude}
    return sorted(keep)


def _null_candidates(rz: _Ritz, thr: float, exclude_top: int, eta_thr: float | None = None) -> list[int]:
    """Ritz triplets at the rounding level (``σ ≤ thr``, ``η ≤ eta_thr``; default ``thr``), smallest first."""
    out = []
    eta_thr = thr if eta_thr is None else eta_thr
    for i in range(rz.j - 1, exclude_top - 1, -1):
        if float(rz.Sb[i]) <= thr and float(rz.eta[i]) <= eta_thr:
            out.append(i)
        else:
            break
    return out


@dataclass(frozen=True)
class _Outcome:
    """What the iteration leaves for certification."""

    space: _Space
    ritz: _Ritz
    idx_s: list[int]
    idx_l: list[int]
    converged_cheap: bool
    cycles: int
    injected: int


def _iterate(S: _Space, k: int, want_l: bool, want_s: bool, tol: float, max_steps: int,
             p: torch.Tensor, prec: LinearOp | None = None) -> _Outcome:
    """Expand, check, lock and restart until the cheap residual test passes or the steps run out.

    Unpreconditioned, the basis grows by the Krylov continuation ``Tᵀ q_j`` and the Ritz test runs
    every ``j/2`` steps. With ``prec`` (``≈ (TᵀT)⁻¹``, the smallest end only) it is GD+k: the Ritz
    test runs every step and the basis grows by ``prec · r``, with ``r = Tᵀu − σv`` the residual of
    the smallest unconverged wanted triplet (``TᵀT v − σ²v = σ r``)."""
    M, N = S.T.shape
    eps = torch.finfo(S.T.dtype).eps
    nwant = k * (int(want_l) + int(want_s))
    since, cycles, injected, pending_random = 0, 0, 0, 0
    quiet_needed, last_lock = 0, 0  # after a lock, this many further steps must pass without one
    y_prev: torch.Tensor | None = None
    explicit_next = 0
    while True:
        full = S.j == S.ell or S.room == 0 or S.steps >= max_steps
        if prec is None:
            due = S.j >= min(S.ell, nwant + CHECK_MIN) and since >= max(CHECK_MIN, S.j // 2)
        else:
            due = S.j >= min(S.ell, nwant) and since >= 1 and not pending_random
        if not (full or due):
            w = S.expand(p)
            since += 1
            if pending_random:  # after a lock: fresh random directions, then Krylov again
                pending_random -= 1
                w = torch.randn(N, generator=S.gen, dtype=torch.float64).to(S.T.dtype).to(S.T.device)
            p = w
            continue
        since = 0
        rz = _ritz(S, k)
        thr = max(M, N) * eps * S.smax
        delta = max(rounding_allowance((M, N), S.T.dtype, S.smax), basis_floor(S.ell, S.T.dtype, S.smax))
        # a preconditioned run checks every step, so it sees a null vector while its cheap residual
        # is still above thr (but within the stopping rule's delta): it locks it there
        eta_thr = None if prec is None else max(thr, delta)
        locked = _null_candidates(rz, thr, k if want_l else 0, eta_thr) if want_s else []
        if locked and S.room + len(locked) > 0:
            S.lock(combine(S.P[:, : S.j], rz.Vb[:, locked]))
            pending_random += max(1, 2 * len(locked))
            injected += max(1, 2 * len(locked))
            last_lock, quiet_needed = S.steps, pending_random + max(2 * CHECK_MIN, S.j // 2)
        ju = rz.j - len(locked)  # unlocked Ritz triplets are 0..ju-1 (descending)
        idx_l = list(range(k)) if want_l else []
        idx_s = list(range(ju - 1, ju - 1 - k, -1)) if want_s and ju >= k else []
        enough = (not want_s) or len(idx_s) == k
        quiet = S.steps - last_lock >= quiet_needed or S.room == 0
        ok = enough and quiet and pending_random == 0 and _ok(rz, idx_l + idx_s, tol, delta)
        near = enough and quiet and pending_random == 0 and _ok(rz, idx_l + idx_s, tol, delta, NEAR)
        if prec is not None and idx_s and bool((rz.Sb[idx_s] <= thr).any()):
            ok = near = False  # a null-level value is locked once its cheap residual meets delta
        if not ok and near and (prec is None or S.steps >= explicit_next):
            ok = _explicit_ok(S, rz, idx_l, idx_s, tol)
            explicit_next = S.steps + EXPLICIT_EVERY
        if ok or S.steps >= max_steps or (S.room == 0 and not locked):
            return _Outcome(S, rz, idx_s, idx_l, ok, cycles, injected)
        if not locked and S.j < S.ell and S.room > 0:
            y_prev = rz.Vb[:, idx_s[0]] if idx_s else None
            p = S.W[:, S.j - 1].clone() if prec is None else _preconditioned(prec, S, rz, idx_s, tol, delta)
            continue
        # ---- restart (basis full, or null vectors locked): GD+k
        cycles += 1
        keep = _keep(rz, S.ell, k, want_l, set(locked), prec is not None)
        Y = rz.Vb[:, keep]
        target = idx_s[0] if idx_s else (idx_l[0] if idx_l else None)
        if PLUS_K and y_prev is not None and y_prev.numel() <= rz.j:
            yp = torch.zeros(rz.j, dtype=Y.dtype, device=Y.device)
            yp[: y_prev.numel()] = y_prev
            for X in (rz.Vb[:, locked], Y, rz.Vb[:, locked], Y):
                yp = yp - X @ (X.T @ yp)
            if float(torch.linalg.vector_norm(yp)) > 1e-8:
                Y = torch.cat([Y, yp[:, None]], 1)
        Y, _ = torch.linalg.qr(Y)
        if prec is not None and not locked:
            s = _preconditioned(prec, S, rz, idx_s, tol, delta)
        elif target is not None:
            s = _residual(S, rz, target)
        else:
            s = S.W[:, S.j - 1].clone()
        y_prev = rz.Vb[:, target] if target is not None else None
        S.restart(Y)
        if y_prev is not None:  # the old target in the new coefficients
            y_prev = Y.T @ y_prev
        p = s


#: a preconditioned run (its Ritz test runs every step) certifies explicitly at most this often
EXPLICIT_EVERY = 8


def _preconditioned(prec: LinearOp, S: _Space, rz: _Ritz, idx_s: list[int], tol: float,
                    delta: float) -> torch.Tensor:
    """``prec · r`` for the residual ``r = Tᵀu − σv`` of the smallest wanted triplet that fails the
    test (the first wanted one if all pass), in ``R^N`` (the next GD+k direction)."""
    pick = next((i for i in idx_s if not _ok(rz, [i], tol, delta)), idx_s[0] if idx_s else rz.j - 1)
    return prec.matvec(_residual(S, rz, pick))


def _residuals(S: _Space, Ub: torch.Tensor, Vb: torch.Tensor, Sb: torch.Tensor) -> torch.Tensor:
    """``Tᵀu_i − σ_i v_i`` for the Ritz coefficients ``Ub``, ``Vb`` (columns) and values ``Sb``, from
    the stored bases (no products): ``W Ub − P (Vb σ)``."""
    j = Ub.shape[0]
    return combine(S.W[:, :j], Ub) - combine(S.P[:, :j], Vb * Sb)


def _residual(S: _Space, rz: _Ritz, i: int) -> torch.Tensor:
    """:func:`_residuals` of Ritz triplet ``i`` alone."""
    return _residuals(S, rz.Ub[:, i:i + 1], rz.Vb[:, i:i + 1], rz.Sb[i:i + 1])[:, 0]


def _certify(out: _Outcome, k: int, want_l: bool, want_s: bool) -> tuple[dict[str, Certified], NullSpaceInfo]:
    """Explicit certificates on ``T`` (``2k`` products per end, plus 2 for a null space)."""
    S, rz = out.space, out.ritz
    M, N = S.T.shape
    eps = torch.finfo(S.T.dtype).eps
    thr = max(M, N) * eps * S.smax
    res: dict[str, Certified] = {}
    j = rz.j
    if want_l:
        res["largest"] = certify_small_side(S.T, combine(S.P[:, :j], rz.Vb[:, out.idx_l]), end="largest",
                                            sigma_max_hint=S.smax, U=combine(S.Q[:, :j], rz.Ub[:, out.idx_l]))
    null = NullSpaceInfo(int(S.Z.shape[1]), float(thr), 0.0)
    if want_s:
        V, U = combine(S.P[:, :j], rz.Vb[:, out.idx_s]), combine(S.Q[:, :j], rz.Ub[:, out.idx_s])
        res["smallest_nonzero"] = certify_small_side(S.T, V, end="smallest", sigma_max_hint=S.smax, U=U)
        if S.Z.shape[1]:
            cz = certify_small_side(S.T, S.Z, end="smallest", sigma_max_hint=S.smax)
            null = NullSpaceInfo(int(S.Z.shape[1]), float(thr), float(cz.values.max()))
            res["null"] = cz
    return res, null


def _smallest_block(
    cs: dict[str, Certified], k: int, tol: float, swap: bool, floor: float
) -> tuple[SingularBlock, bool, str | None]:
    """The smallest block: locked null vectors first (reported as 0), then non-zero Ritz values."""
    nz = cs["smallest_nonzero"]
    conv_nz = _meets(nz, tol, floor)
    if "null" not in cs:
        vals = np.where(conv_nz, nz.values, np.nan)
        why = None
        if bool(conv_nz[0]) and nz.lower[0] <= 0.0:  # converged within the attainable accuracy of 0
            vals[0] = 0.0
            why = (f"rank deficient: sigma_min certified in [0, {nz.upper[0]:.3g}] (the computed "
                   f"{nz.values[0]:.3g} is within the attainable accuracy of 0; no vector was locked, so "
                   "the null-space dimension is not resolved: info['null_dim'] = 0 is no count)")
        b = block_from(nz, end="smallest", converged=conv_nz, swap=swap)
        return nan_unconverged(_with_values(b, vals)), bool(conv_nz.all()), why
    cz = cs["null"]
    nzero = min(k, cz.values.size)
    tall = lambda a, b: np.concatenate([a[:nzero], b[: k - nzero]])  # noqa: E731
    upper = tall(cz.upper, nz.upper)
    lower = tall(np.zeros_like(cz.lower), nz.lower)
    conv = tall(np.ones(cz.values.size, bool), conv_nz)
    vals = np.where(conv, tall(np.zeros_like(cz.values), nz.values), np.nan)
    V = torch.cat([cz.V[:, :nzero], nz.V[:, : k - nzero]], 1)
    U = torch.cat([cz.U[:, :nzero], nz.U[:, : k - nzero]], 1)
    left, right = (V, U) if swap else (U, V)
    b = SingularBlock(end="smallest", values=vals, lower=lower, upper=upper,
                      residual_norms=tall(cz.eta, nz.eta), kato_temple=np.full(k, np.nan),
                      gap_certified=False, converged=conv, left=left, right=right)
    b = nan_unconverged(b)
    why = (f"rank deficient: sigma_min certified in [0, {upper[0]:.3g}]; null-space dimension "
           f"{cz.values.size} (locked, ||A z|| <= {float(cz.values.max()):.3g}); smallest non-zero "
           f"sigma {nz.values[0]:.6g} in [{nz.lower[0]:.3g}, {nz.upper[0]:.3g}]"
           + ("" if bool(conv_nz[0]) else " (not converged: the null-space dimension is a lower bound)"))
    return b, True, why


def _with_values(b: SingularBlock, values: np.ndarray) -> SingularBlock:
    return dataclasses.replace(b, values=np.asarray(values, dtype=float))


def golub_kahan_davidson(
    A: Any,
    k: int = 1,
    which: str = "smallest",
    tol: float = 1e-10,
    maxiter: int | None = None,
    seed: int = 0,
    *,
    basis: int | None = None,
    preconditioner: Any = None,
    device: Any = None,
    dtype: Any = None,
) -> SVDResult:
    """Extreme singular triplets of ``A`` by Golub–Kahan–Davidson (see the module docstring).

    Stopping rule: every wanted Ritz triplet has ``‖Tᵀu − σv‖/√2 ≤ max(tol·σ, δ)``
    (``δ = 10·sqrt(max(m, n))·eps·σ̂_max``), then each is certified explicitly on ``A``
    (``certify_small_side``: ``σ = ‖Av‖``, Wedin's residual bound, Courant–Fischer) and
    ``converged`` means the *certified* error meets the same rule.

    Parameters
    ----------
    A : anything :func:`spectral.operators.as_operator` accepts.
    k : triplets per requested end.
    which : ``"smallest"`` (default), ``"largest"`` or ``"both"``.
    tol : relative tolerance (> 0).
    maxiter : basis expansions (two products each); default ``max(4000, 2·min(m, n))``.
    seed : seed of the start vector and of injected random vectors.
    basis : maximum basis size ``ℓ`` (default from ``AUTO.gkd_max_basis`` and
        ``AUTO.gkd_basis_bytes``, capped at ``min(m, n)``; ``PRECONDITIONED_BASIS`` with a
        preconditioner).
    preconditioner : ``M ≈ (AAᵀ)⁻¹`` when ``m ≤ n``, ``(AᵀA)⁻¹`` otherwise (``min(m, n)`` square,
        symmetric positive definite; anything :func:`spectral.operators.as_operator` accepts), for
        ``which="smallest"`` only. The basis then grows by ``M r`` (GD+k), not by the Krylov
        continuation. ``M`` only steers the search: the values are certified on ``A`` as without it.
        For the [S24] NTK Gram see
        :class:`attncond.spectral.diagnostics.gram_preconditioner.AttentionGramPreconditioner`.

    Returns
    -------
    SVDResult with ``info["null_dim"]``, ``info["null_space"]`` (a :class:`NullSpaceInfo`
    dict) and, when rank deficient, ``info["smallest_nonzero"]``.
    """
    t0 = time.perf_counter()
    op, k, tol, maxiter = prepare(A, k=k, which=which, which_choices=WHICH, tol=tol, maxiter=maxiter,
                                  device=device, dtype=dtype, seed=seed)
    if basis is not None and (isinstance(basis, bool) or int(basis) != basis or int(basis) < 2):
        raise ValueError(f"basis must be an integer >= 2 or None, got {basis!r}")
    prec = check_preconditioner(preconditioner, op, which)
    # the preconditioner only steers the search (its output is normalised), so it is not rescaled
    return solve_scaled(op, lambda s: gkd_run(s, k, which, tol, maxiter, seed, basis=basis, t0=t0,
                                              preconditioner=prec), tol=tol)


def check_preconditioner(M: Any, op: LinearOp, which: str) -> LinearOp | None:
    """``M`` as a square operator on the small side of ``op`` (same dtype and device), or ``None``."""
    if M is None:
        return None
    if which != "smallest":
        raise ValueError(f"preconditioner: only which='smallest' is preconditioned, got which={which!r}")
    N = min(op.shape)
    try:
        P = as_operator(M, dtype=op.dtype, device=op.device)
    except (TypeError, ValueError) as e:
        raise type(e)(f"preconditioner: {e}") from None
    if P.shape != (N, N):
        raise ValueError(f"preconditioner must be {N}x{N} (min(m, n) square for A of shape {op.shape}), "
                         f"got shape {P.shape}")
    if P.dtype != op.dtype or not same_device(P.device, op.device):
        raise ValueError(f"preconditioner has dtype {P.dtype} on {P.device}; A has {op.dtype} on {op.device}")
    return P


def default_basis(shape: tuple[int, int], dtype: torch.dtype, nwant: int) -> int:
    """``ℓ = min(N, AUTO.gkd_max_basis, AUTO.gkd_basis_bytes/(item·(M + 2N))``, at least ``nwant + 16``."""
    M, N = max(shape), min(shape)
    item = torch.finfo(dtype).bits // 8
    by_mem = policy.AUTO.gkd_basis_bytes // (item * (M + 2 * N))
    ell = min(policy.AUTO.gkd_max_basis, max(int(by_mem), 32))
    return int(min(max(ell, nwant + 16), N))


#: default basis of a preconditioned run (GD+k needs few vectors; PRIMME's default is of this order)
PRECONDITIONED_BASIS = 48


def gkd_run(op: LinearOp, k: int, which: str, tol: float, maxiter: int | None, seed: int, *,
            basis: int | None = None, t0: float | None = None,
            preconditioner: LinearOp | None = None) -> SVDResult:
    """:func:`golub_kahan_davidson` on a validated operator (the registry entry)."""
    t0 = time.perf_counter() if t0 is None else t0
    k = check_k(k, op.shape)
    m, n = op.shape
    swap = m < n
    T = op.adjoint() if swap else op
    M, N = T.shape
    start = op.n_products
    gen = make_generator(seed)
    want_l, want_s = which in ("both", "largest"), which in ("both", "smallest")
    nwant = k * (int(want_l) + int(want_s))
    if basis is not None:
        ell = int(min(basis, N))
    elif preconditioner is not None:
        ell = int(min(max(PRECONDITIONED_BASIS, 3 * nwant + 8), N))
    else:
        ell = default_basis((M, N), op.dtype, nwant)
    max_steps = maxiter if maxiter is not None else max(4000, 2 * N)
    S = _Space(T, ell, gen)
    p0 = torch.randn(N, generator=gen, dtype=torch.float64).to(op.dtype).to(op.device)
    out = _iterate(S, k, want_l, want_s, tol, max_steps, p0, preconditioner)
    cs, null = _certify(out, k, want_l, want_s)
    probe = _probe_multiplicity(out.space, cs, k, tol, max_steps - out.space.steps, gen) if k >= 2 else None
    res = _assemble(op, cs, null, out, k=k, tol=tol, swap=swap, start=start, t0=t0, max_steps=max_steps,
                    preconditioner=None if preconditioner is None else preconditioner.name)
    return res if probe is None else dataclasses.replace(res, info={**res.info, "multiplicity_probe": probe})


def _probe_multiplicity(S: _Space, cs: dict[str, Certified], k: int, tol: float, budget: int,
                        gen: torch.Generator) -> dict[str, Any]:
    """For ``k ≥ 2``, every converged end is probed for a value the basis missed (a repeated singular
    value: one start vector sees one copy; on a five-fold σ_min GKD certified three copies and two
    larger values) by :func:`attncond.spectral.solvers.gkl.probe_end`, which takes a found one in and
    certifies the end again on ``T`` (``cs`` is updated in place). The smallest end with locked null
    vectors is not probed (the null space's dimension is the locking's count)."""
    floor = basis_floor(S.ell, S.T.dtype, S.smax)
    info: dict[str, Any] = {}
    for key, end in (("largest", "largest"), ("smallest_nonzero", "smallest")):
        c = cs.get(key)
        if c is None:
            continue
        if end == "smallest" and "null" in cs:
            info[end] = {"status": "not run (null vectors locked)"}
            continue
        if not bool(_meets(c, tol, floor).all()):
            info[end] = {"status": "not run (not converged)"}
            continue
        c, info[end] = probe_end(S.T, c, end, k, tol, max(budget, 0), gen, S.smax)
        budget -= int(info[end]["steps"])
        if info[end]["missed"]:
            c, info[end]["refinements"] = _refine(S.T, c, end, k, tol, floor, S.smax)
        cs[key] = c
    return info


#: at most this many Rayleigh–Ritz refinements after the multiplicity probe took a value in
MAX_REFINEMENTS = 4


def _refine(T: LinearOp, c: Certified, end: str, k: int, tol: float, floor: float, smax: float
            ) -> tuple[Certified, int]:
    """Rayleigh–Ritz of ``T`` on ``[V, R]``, ``R = TᵀT V − V diag(σ²)`` the residuals of the normal
    equations (a block Davidson step without preconditioner, ``4k`` products), until the ``k``
    triplets meet the stopping rule. The probe stops once a missed value is certified beyond the
    others, not at ``tol``, and the vector it takes in is that coarse (on a three-fold σ_min: residuals
    5e-13 against 5e-15 before; one refinement: 2e-13, below the floor)."""
    n = 0
    while n < MAX_REFINEMENTS and not bool(_meets(c, tol, floor).all()):
        V = c.V
        TV = T.matmat(V)
        R = T.rmatmat(TV) - V * torch.linalg.vector_norm(TV, dim=0) ** 2
        W, _ = torch.linalg.qr(torch.cat([V, project_out(V, R)], dim=1))
        Uh, _, Yh = torch.linalg.svd(T.matmat(W), full_matrices=False)
        w = W.shape[1]
        idx = list(range(k)) if end == "largest" else list(range(w - 1, w - 1 - k, -1))
        c = certify_small_side(T, W @ Yh[idx].T, end=end, U=Uh[:, idx], sigma_max_hint=smax)
        n += 1
    return c, n


def _assemble(op: LinearOp, cs: dict[str, Certified], null: NullSpaceInfo, out: _Outcome, *, k: int,
              tol: float, swap: bool, start: int, t0: float, max_steps: int,
              preconditioner: str | None = None) -> SVDResult:
    reasons: list[str] = []
    largest = smallest = None
    conv = True
    floor = basis_floor(out.space.ell, op.dtype, out.space.smax)
    if "largest" in cs:
        c = cs["largest"]
        ok = _meets(c, tol, floor)
        largest = nan_unconverged(block_from(c, end="largest", converged=ok, swap=swap))
        conv &= bool(ok.all())
    info: dict[str, Any] = {"basis": out.space.ell, "basis_floor": floor, "restarts": out.cycles,
                            "preconditioner": preconditioner,
                            "injected": out.injected, "null_dim": null.dimension, "null_space": null.to_dict()}
    if "smallest_nonzero" in cs:
        smallest, ok_s, why = _smallest_block(cs, k, tol, swap, floor)
        conv &= ok_s
        if why:
            reasons.append(why)
        if why and "null" in cs:
            nz = cs["smallest_nonzero"]
            info["smallest_nonzero"] = {"value": float(nz.values[0]), "lower": float(nz.lower[0]),
                                        "upper": float(nz.upper[0]),
                                        "converged": bool(_meets(nz, tol, floor)[0])}
    if not conv:
        errs = [float(np.max(certified_error(c))) for key, c in cs.items() if key != "null"]
        why = "maxiter reached" if out.space.steps >= max_steps else "stopping rule not met"
        reasons.append(f"not converged ({why} after {out.space.steps} steps): certified error "
                       f"{max(errs):.3g} > tol*sigma (tol={tol:g}); unconverged values are nan, "
                       "the certified intervals hold")
    return SVDResult(method="gkd", shape=op.shape, largest=largest, smallest=smallest, converged=conv,
                     iterations=out.space.steps, matvecs=int(op.n_products - start),
                     seconds=time.perf_counter() - t0,
                     rank_deficient=smallest is not None and (null.dimension > 0 or smallest.values[0] == 0.0),
                     reason="; ".join(reasons) or None, info=info)
