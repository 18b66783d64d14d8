"""Argument validation shared by the solvers (one place, scipy style; private)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from attncond.spectral.operators.base import LinearOp, is_integer, safe_norm, same_device, to_common_scale
from attncond.spectral.operators.explicit import CallableOp, DenseOp, SparseOp, as_operator


def check_tol(tol: Any) -> float:
    """``tol`` must be a real number (not a string or a bool), finite and ``> 0``."""
    if isinstance(tol, (str, bytes, bool, np.bool_)):
        raise TypeError(f"tol must be a positive float, got {type(tol).__name__} {tol!r}")
    try:
        t = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a positive float, got {tol!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"tol must be a finite float > 0, got {tol!r}")
    return t

def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(map(repr, choices))}")
    return value

def check_maxiter(maxiter: Any) -> int | None:
    """``None`` or a positive integer (``2.5``, ``"x"``, ``inf`` and bools are refused, naming ``maxiter``)."""
    if maxiter is None:
        return None
    if not is_integer(maxiter) or int(maxiter) < 1:
        raise ValueError(f"maxiter must be a positive integer or None, got {maxiter!r}")
    return int(maxiter)


#: seeds are offset internally (``seed + 7919``, ``seed + 1 + probe``): they stay below this
MAX_SEED = 2**62


def check_seed(seed: Any) -> int:
    """``seed`` must be an integer in ``[0, 2^62)``; ``1.5``, ``True``, ``"a"`` and ``2**70`` are refused with
    an error naming ``seed`` (before, ``1.5`` was truncated and ``"a"`` failed inside ``int()``)."""
    if not is_integer(seed) or not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**62), got {seed!r}")
    return int(seed)

def check_k(k: Any, shape: tuple[int, int]) -> int:
    """``1 ≤ k ≤ min(m, n)``."""
    try:
        ok = not isinstance(k, bool) and int(k) == k
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(f"k must be an integer, got {k!r}")
    k = int(k)
    lim = min(shape)
    if k < 1 or k > lim:
        raise ValueError(f"k must satisfy 1 <= k <= min(m, n) = {lim} for shape {shape}, got {k}")
    return k

def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (``0`` for ``None``)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(0 if seed is None else int(seed))
    return g

def prepare(
    A: Any,
    *,
    k: int = 1,
    which: str | None = None,
    which_choices: Iterable[str] = (),
    tol: float = 1e-10,
    maxiter: Any = None,
    method: str | None = None,
    methods: Iterable[str] = (),
    device: Any = None,
    dtype: Any = None,
    v0: Any = None,
    seed: Any = 0,
    name: str = "A",
) -> tuple[LinearOp, int, float, int | None]:
    """Validate every argument, cheapest first, then wrap ``A``.

    Returns ``(op, k, tol, maxiter)``. Raises ``ValueError`` for ``tol <= 0``, an unknown
    ``method`` or ``which`` (listing the known ones), ``k`` outside ``[1, min(m, n)]``, a ``seed``
    or ``maxiter`` that is not an integer in range, NaN/inf in an explicit ``A``, an ``rmatvec``
    that is not the adjoint of ``matvec`` (:func:`attncond.spectral.operators.explicit.check_adjoint`),
    and device mismatches (``A`` vs ``device``, ``v0`` vs ``A``); ``TypeError`` for a ``tol`` that is
    not a number. ``name``: what the errors call ``A``.
    """
    tol = check_tol(tol)
    check_seed(seed)
    if method is not None:
        check_choice("method", method, methods)
    if which is not None:
        check_choice("which", which, which_choices)
    maxiter = check_maxiter(maxiter)
    op = as_operator(A, device=device, dtype=dtype, name=name)
    k = check_k(k, op.shape)
    if v0 is not None:
        if not isinstance(v0, torch.Tensor):
            raise TypeError("v0 must be a torch tensor")
        if not same_device(v0.device, op.device):
            raise ValueError(f"device mismatch: v0 is on {v0.device}, A on {op.device}")
        if not bool(torch.isfinite(v0).all()):
            raise ValueError("v0 contains NaN or inf")
    return op, k, tol, maxiter


#: :func:`check_symmetric` refuses a probe difference above this multiple of ``n·eps·(‖Sx‖ + ‖Sy‖)``
SYMMETRY_TEST_FACTOR = 64.0


def check_symmetric(op: LinearOp, seed: int = 0, name: str = "S", allowance: float = 0.0) -> float | None:
    """Refuse a non-symmetric ``S``: exactly for a stored matrix, by a probe for an implicit one.

    A stored ``S`` (:class:`DenseOp`, :class:`SparseOp`) is tested on ``K = S − Sᵀ`` itself: refused
    when ``‖K‖₂ > 64·n·eps·‖S‖_F + allowance`` (``‖K‖_F`` first; a dense ``K``'s exact 2-norm only when
    that bound is not enough). Returns the bound on ``‖K‖₂`` it accepted (the solvers certify the
    symmetric part ``(S + Sᵀ)/2``; each eigenvalue of ``S`` lies within ``‖K‖₂/2`` of one of it, Bauer–
    Fike), or ``None`` for the probe, which bounds nothing.

    An implicit ``S`` is probed by ``|⟨Sx, y⟩ − ⟨x, Sy⟩|`` (two products).

    For random unit ``x, y`` a symmetric ``S`` gives a difference of rounding size only; the test
    refuses when it exceeds ``64·n·eps·(‖Sx‖ + ‖Sy‖)`` (rounding of the two products and the two inner
    products; the norms by :func:`attncond.spectral.operators.base.safe_norm`, the inner products in
    float64 on the outputs scaled by a common power of two, so neither under- nor overflows at any
    scale). A non-symmetric part ``K = (S − Sᵀ)/2`` shows up as ``2⟨Kx, y⟩``, of size ``‖K‖_F/n``.

    ``allowance``: an absolute amount added to the threshold, in ``S``'s units: ``2·‖E‖`` for an operator
    whose products carry an estimated error ``‖E‖`` (a symmetric ``S`` computed as ``S + E`` gives
    ``|⟨Ex, y⟩ − ⟨x, Ey⟩| ≤ 2‖E‖``; autograd Grams ``J(Jᵀ·)`` round ``J v`` and ``Jᵀ u`` differently).

    Raises
    ------
    ValueError
        naming ``name``, when the probe exceeds the rounding level.
    """
    n = op.shape[0]
    if n < 2:
        return 0.0 if op.is_explicit else None
    if isinstance(op, (DenseOp, SparseOp)):
        return _check_stored_symmetric(op, name, allowance)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    X = (X / torch.linalg.vector_norm(X, dim=0)).to(op.dtype)
    scaled = to_common_scale(op.matmat(X.to(op.device)))
    X = X.double()
    if scaled is None:
        return None
    (SX,), e = scaled
    x, y, sx, sy = X[:, 0], X[:, 1], SX[:, 0], SX[:, 1]
    diff = float(torch.dot(sx, y) - torch.dot(x, sy))
    scale = float(safe_norm(sx) + safe_norm(sy))
    tol = SYMMETRY_TEST_FACTOR * n * torch.finfo(op.dtype).eps * scale + math.ldexp(float(allowance), -e)
    if not abs(diff) <= tol:
        level = "the rounding level" if allowance == 0 else "the rounding level plus twice the products' error"
        raise ValueError(
            f"{name} is not symmetric: the probe |<Sx, y> - <x, Sy>| = {math.ldexp(abs(diff), e):.3g} exceeds "
            f"{level} {math.ldexp(tol, e):.3g} (random unit x, y); a symmetric operator is needed "
            "(use extreme_singular_values for a general one)")
    return None


def _check_stored_symmetric(op: DenseOp | SparseOp, name: str, allowance: float) -> float:
    n = op.shape[0]
    kf, sf = op.asymmetry()
    if not (math.isfinite(kf) and math.isfinite(sf)):
        raise ValueError(f"{name}: the norm of S - S^T or of S is not finite (entries near the float range)")
    level = SYMMETRY_TEST_FACTOR * n * torch.finfo(op.dtype).eps * sf + float(allowance)
    if kf <= level:
        return kf
    k2 = op.asymmetry(exact=True)[0]
    if not k2 <= level:
        raise ValueError(
            f"{name} is not symmetric: ||S - S^T||_2 = {k2:.3g} ({k2 / sf if sf else math.inf:.3g} relative to "
            f"||S||_F) exceeds the rounding level {level:.3g} = 64*n*eps*||S||_F"
            + (" plus twice the products' error" if allowance else "")
            + "; a symmetric matrix is needed (use extreme_singular_values for a general one)")
    return k2


def needs_symmetry_probe(op: LinearOp) -> bool:
    """``True`` for operators whose symmetry is not guaranteed by construction: stored matrices and user
    callables (the model operators ``HessianOperator``, ``GramOperator``, … are symmetric by construction
    and their products are not cheap, so they are not probed)."""
    return op.is_explicit or isinstance(op, CallableOp)
