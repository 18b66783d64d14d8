"""Orthogonalisation kernels shared by the Krylov solvers (Golub–Kahan and Lanczos).

Classical Gram–Schmidt with DGKS re-orthogonalisation ("twice is enough"), as GEMVs, so the
Krylov bases stay orthonormal to working precision (full reorthogonalisation).
"""

from __future__ import annotations

import math

import torch


def orthogonalize(X: torch.Tensor, w: torch.Tensor, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram–Schmidt of ``w`` against the orthonormal columns of ``X``.

    ``full=True``: always two passes (CGS2, "twice is enough"); otherwise the second pass
    runs only when the first removed more than a factor √2 of the norm (DGKS/Kahan–Parlett
    criterion). Returns the orthogonalised vector and the summed coefficients ``Xᵀw``.
    """
    if X.shape[1] == 0:
        return w, w.new_zeros(0)
    n0 = torch.linalg.vector_norm(w)
    c = X.T @ w
    w = w - X @ c
    if full or torch.linalg.vector_norm(w) < n0 / math.sqrt(2.0):
        c2 = X.T @ w
        w = w - X @ c2
        c = c + c2
    return w, c

def random_orthonormal(X: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    w = torch.randn(X.shape[0], generator=gen, dtype=torch.float64).to(X.dtype).to(X.device)
    for _ in range(3):
        if X.shape[1]:
            w = w - X @ (X.T @ w)
    return w / torch.linalg.vector_norm(w)
