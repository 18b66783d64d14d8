"""Randomised SVD (Halko, Martinsson & Tropp, SIAM Review 53, 2011), for σ_max and low rank.

Range finder ``Y = (A Aᵀ)^q A Ω`` with a Gaussian ``Ω ∈ R^{n×(k+p)}``, re-orthonormalised
by QR after every product (Algorithm 4.4, "subspace iteration"); then ``B = Qᵀ A`` and
``B = Ũ Σ Vᵀ``. The top ``k`` right vectors are certified by Rayleigh–Ritz on ``A``
(:mod:`spectral.solvers.certify`): ``σ = ‖A v‖`` is a Courant–Fischer *lower* bound of σ_max
and the residual bound gives the upper end.

Randomised range finders capture the dominant subspace; they say nothing reliable about
σ_min (the error of the range finder is of the size of σ_{k+p+1}, which dwarfs σ_min).
Asking for σ_min raises ``ValueError`` unless ``smallest_upper_bound=True``, which returns
``‖A v‖`` for the smallest Ritz vector, a rigorous Courant–Fischer *upper bound* of σ_min
and nothing more (interval ``[0, ‖A v‖]``, ``converged=False``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from attncond.spectral.operators.base import LinearOp
from attncond.spectral.results import SingularBlock, SVDResult
from attncond.spectral.solvers.certify import block_from, certify_small_side, meets_tol, nan_unconverged
from attncond.spectral.solvers.scaling import solve_scaled
from attncond.spectral.solvers.validate import make_generator, prepare


def randomized_svd(
    A: Any,
    k: int = 1,
    oversample: int = 10,
    n_power: int = 2,
    seed: int = 0,
    *,
    tol: float = 1e-10,
    which: str = "largest",
    smallest_upper_bound: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> SVDResult:
    """Top-``k`` singular triplets by the randomised range finder with power iterations.

    Products: ``(k+p)(2q+2)`` for the range finder and ``B`` plus ``2k`` for certification
    (``p = oversample``, ``q = n_power``). Stopping rule: none (fixed work); a triplet is
    ``converged`` when its certified error is ``≤ max(tol·σ, δ)``. Use it for σ_max and for
    low-rank approximation, not for σ_min (see the module docstring).
    """
    t0 = time.perf_counter()
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"unknown which {which!r}; known: 'largest', 'smallest', 'both'")
    if which != "largest" and not smallest_upper_bound:
        raise ValueError(
            "randomized_svd does not estimate sigma_min: randomized range finders capture the "
            "dominant singular subspace (sigma_max, low rank). Use golub_kahan_lanczos or "
            "dense_svd, or pass smallest_upper_bound=True to get a Courant-Fischer upper "
            "bound labelled as such."
        )
    for name, v in (("oversample", oversample), ("n_power", n_power)):
        if isinstance(v, (bool, str)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    op, k, tol, _ = prepare(A, k=k, tol=tol, device=device, dtype=dtype, seed=seed)
    return solve_scaled(op, lambda s: solve_randomized(s, k, tol, oversample=oversample, n_power=n_power,
                                                       seed=seed, which=which, t0=t0), tol=tol)


def solve_randomized(op: LinearOp, k: int, tol: float, *, oversample: int = 10, n_power: int = 2, seed: int = 0,
                     which: str = "largest", t0: float | None = None) -> SVDResult:
    """:func:`randomized_svd` on a validated operator (no checks)."""
    t0 = time.perf_counter() if t0 is None else t0
    m, n = op.shape
    swap = m < n
    T = op.adjoint() if swap else op
    M, N = T.shape
    start = op.n_products
    gen = make_generator(seed)
    ell = min(k + int(oversample), N)
    Om = torch.randn(N, ell, generator=gen, dtype=torch.float64).to(op.dtype).to(op.device)
    Qm, _ = torch.linalg.qr(T.matmat(Om))
    for _ in range(int(n_power)):
        Z, _ = torch.linalg.qr(T.rmatmat(Qm))
        Qm, _ = torch.linalg.qr(T.matmat(Z))
    Bt = T.rmatmat(Qm)  # = (Qᵀ T)ᵀ, N × ell
    Ub, S, Wh = torch.linalg.svd(Bt.T, full_matrices=False)
    Vr = Wh.T  # N × ell right vectors of T
    Ur = Qm @ Ub  # M × ell left vectors of T
    smax = float(S[0])
    largest = smallest = None
    reasons: list[str] = []
    if which in ("largest", "both"):
        c = certify_small_side(T, Vr[:, :k], end="largest", sigma_max_hint=smax, U=Ur[:, :k])
        largest = nan_unconverged(block_from(c, end="largest", converged=meets_tol(c, tol), swap=swap))
    if which in ("smallest", "both"):
        c = certify_small_side(T, Vr[:, -1:], end="smallest", sigma_max_hint=smax)
        lower = np.zeros(1)
        smallest = SingularBlock(
            end="smallest",
            values=c.values,
            lower=lower,
            upper=c.upper[:1],
            residual_norms=c.eta,
            kato_temple=np.full(1, np.nan),
            gap_certified=False,
            converged=np.zeros(1, dtype=bool),
            left=(c.V if swap else c.U),
            right=(c.U if swap else c.V),
        )
        reasons.append("sigma_min from a randomized range finder is an upper bound only")
    conv = largest is not None and bool(largest.converged.all()) and smallest is None
    if largest is not None and not bool(largest.converged.all()):
        reasons.append(f"sigma_max not certified to tol={tol:g} (add power iterations or oversampling); "
                       "unconverged values are nan, the certified intervals hold")
    return SVDResult(
        method="randomized",
        shape=(m, n),
        largest=largest,
        smallest=smallest,
        converged=conv,
        iterations=int(n_power),
        matvecs=op.n_products - start,
        seconds=time.perf_counter() - t0,
        reason="; ".join(reasons) or None,
        info={"oversample": int(oversample), "n_power": int(n_power)},
    )
