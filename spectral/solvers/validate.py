"""Argument validation shared by the solvers (one place, scipy style; private)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from attncond.spectral.operators.base import LinearOp, same_device
from attncond.spectral.operators.explicit import as_operator


def check_tol(tol: Any) -> float:
    """``tol`` must be a finite float ``> 0``."""
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
    if maxiter is None:
        return None
    if isinstance(maxiter, bool) or int(maxiter) != maxiter or int(maxiter) < 1:
        raise ValueError(f"maxiter must be a positive integer or None, got {maxiter!r}")
    return int(maxiter)

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
) -> tuple[LinearOp, int, float, int | None]:
    """Validate every argument, cheapest first, then wrap ``A``.

    Returns ``(op, k, tol, maxiter)``. Raises ``ValueError`` for ``tol <= 0``, an unknown
    ``method`` or ``which`` (listing the known ones), ``k`` outside ``[1, min(m, n)]``,
    NaN/inf in an explicit ``A``, and device mismatches (``A`` vs ``device``, ``v0`` vs
    ``A``).
    """
    tol = check_tol(tol)
    if method is not None:
        check_choice("method", method, methods)
    if which is not None:
        check_choice("which", which, which_choices)
    maxiter = check_maxiter(maxiter)
    op = as_operator(A, device=device, dtype=dtype)
    k = check_k(k, op.shape)
    if v0 is not None:
        if not isinstance(v0, torch.Tensor):
            raise TypeError("v0 must be a torch tensor")
        if not same_device(v0.device, op.device):
            raise ValueError(f"device mismatch: v0 is on {v0.device}, A on {op.device}")
        if not bool(torch.isfinite(v0).all()):
            raise ValueError("v0 contains NaN or inf")
    return op, k, tol, maxiter
