"""Exact (dense) singular values for small matrices.

``torch.linalg.svd`` (LAPACK ``gesdd``) is backward stable: the computed values are the
exact singular values of ``A + E`` with ``‖E‖ ≤ c·eps·‖A‖``, so by Weyl's inequality every
``σ_i`` is accurate to ``c·eps·σ_max`` absolutely (``c·κ·eps`` relatively for ``σ_min``).
The extreme triplets are then certified by Rayleigh–Ritz on ``A`` (see
:mod:`spectral.solvers.certify`), with Kato–Temple gaps taken from the full computed spectrum
widened by the rounding allowance, so ``gap_certified=True``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from attncond.spectral.operators.base import LinearOp
from attncond.spectral.operators.explicit import DenseOp
from attncond.spectral.results import SVDResult
from attncond.spectral.solvers.certify import (
    CertifiedEnds,
    SolveRun,
    assemble_result,
    certify_small_side,
    rounding_allowance,
)
from attncond.spectral.solvers.scaling import solve_scaled
from attncond.spectral.solvers.validate import prepare

WHICH = ("both", "largest", "smallest")

def dense_tall_factor(op: LinearOp, *, chunk: int | None = None) -> tuple[torch.Tensor, bool]:
    """Materialise ``A`` in its tall orientation with ``min(m, n)`` products.

    Returns ``(T, swap)`` with ``T = A`` (``swap=False``) if ``m ≥ n`` else ``T = Aᵀ``.
    Implicit operators are applied to identity blocks of ``chunk`` columns (all at once by
    default), so batched (``vmap``) products are used where the operator has them.
    """
    m, n = op.shape
    swap = m < n
    if op.is_explicit:
        D = op.to_dense()
        return (D.T.contiguous() if swap else D), swap
    s = min(m, n)
    chunk = chunk or s
    apply = op.rmatmat if swap else op.matmat
    cols = []
    for a in range(0, s, chunk):
        b = min(a + chunk, s)
        E = torch.zeros(s, b - a, dtype=op.dtype, device=op.device)
        E[torch.arange(a, b), torch.arange(b - a)] = 1.0
        cols.append(apply(E))
    return torch.cat(cols, dim=1), swap

def svd_of_tall(
    T: torch.Tensor,
    k: int,
    which: str,
    tol: float,
    sigma: torch.Tensor | None = None,
    V: torch.Tensor | None = None,
) -> CertifiedEnds:
    """Dense SVD of a tall matrix and certification of the ``k`` extreme triplets."""
    M, N = T.shape
    Uf = None
    if sigma is None or V is None:
        Uf, sigma, Vh = torch.linalg.svd(T, full_matrices=False)
        V = Vh.T
    spec = sigma.detach().cpu().double().numpy()
    smax = float(spec[0]) if spec.size else 0.0
    delta = rounding_allowance((M, N), T.dtype, smax)
    top = DenseOp(T)
    largest = smallest = None
    if which in ("both", "largest"):
        # Kato–Temple needs a certified bound on the neighbour of the extreme value only
        gap = float(spec[1]) + delta if N > 1 else None
        largest = certify_small_side(
            top,
            V[:, :k],
            end="largest",
            sigma_max_hint=smax,
            gap_bound=gap,
            U=None if Uf is None else Uf[:, :k],
        )
    if which in ("both", "smallest"):
        idx = list(range(N - 1, N - 1 - k, -1))
        gap = max(float(spec[N - 2]) - delta, 0.0) if N > 1 else None
        smallest = certify_small_side(
            top,
            V[:, idx],
            end="smallest",
            sigma_max_hint=smax,
            gap_bound=gap,
            U=None if Uf is None else Uf[:, idx],
        )
    return CertifiedEnds(largest, smallest, smax, subspace=N, spectrum=spec, dense_products=top.n_products)

def dense_svd(
    A: Any,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-10,
    *,
    device: Any = None,
    dtype: Any = None,
) -> SVDResult:
    """All singular values of a small ``A`` by a dense SVD; certified extreme triplets.

    Formula: ``A = U diag(σ) Vᵀ`` (``torch.linalg.svd``), then ``σ_i = ‖A v_i‖`` for the
    reported triplets with the residual/Kato–Temple intervals of :mod:`spectral.solvers.certify`.
    ``result.spectrum`` holds all ``min(m, n)`` values. Implicit operators are materialised
    with ``min(m, n)`` products (counted in ``matvecs``). Stopping rule: none (direct
    method); ``converged`` is ``True`` when the certified error is ``≤ max(tol·σ, δ)``.
    ``A`` is solved as ``2^e·A`` and the result divided back exactly
    (:func:`attncond.spectral.solvers.scaling.solve_scaled`), so it holds at any scale.
    """
    t0 = time.perf_counter()
    op, k, tol, _ = prepare(A, k=k, which=which, which_choices=WHICH, tol=tol, device=device, dtype=dtype)
    return solve_scaled(op, lambda s: solve_dense(s, k, which, tol, t0=t0), tol=tol)


def solve_dense(op: LinearOp, k: int, which: str, tol: float, *, t0: float | None = None) -> SVDResult:
    """:func:`dense_svd` on an operator already validated by :func:`prepare` (no checks)."""
    t0 = time.perf_counter() if t0 is None else t0
    start = op.n_products
    T, swap = dense_tall_factor(op)
    out = svd_of_tall(T, k, which, tol)
    res = assemble_result(op, out, SolveRun("dense", tol, swap, start, t0),
                          info={"dense_products": out.dense_products})
    return _with_spectrum(res, out.spectrum)

def _with_spectrum(res: SVDResult, spec: np.ndarray) -> SVDResult:
    import dataclasses

    if res.rank_deficient:
        spec = spec.copy()
        spec[-1] = 0.0
    return dataclasses.replace(res, spectrum=spec)
