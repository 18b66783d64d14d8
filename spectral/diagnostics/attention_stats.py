"""Attention entropy and sparsity per head (MATH.md §4; [I25] sparse attention)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attncond.models.checks import check_positive_float
from attncond.spectral.results import record_to_dict


# --------------------------------------------------------------------------- attention statistics
def _check_S(S: Any) -> torch.Tensor:
    if not isinstance(S, torch.Tensor) or not S.is_floating_point():
        raise TypeError(f"S must be a floating torch tensor, got {type(S).__name__}")
    if S.ndim == 3:
        S = S.unsqueeze(1)
    if S.ndim != 4 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"S must have shape (N, H, n, n) or (N, n, n), got {tuple(S.shape)}")
    if not bool(torch.isfinite(S).all()):
        raise ValueError("S contains NaN or inf")
    return S

def _rows(S: torch.Tensor, normalize: bool) -> torch.Tensor:
    if bool((S < 0).any()):
        raise ValueError("S has negative entries: its rows are not distributions (entropy undefined)")
    sums = S.sum(-1, keepdim=True)
    if normalize:
        if bool((sums <= 0).any()):
            raise ValueError("S has an all-zero row: cannot normalise it to a distribution")
        return S / sums
    if bool(((sums - 1).abs() > 1e-8 * S.shape[-1]).any()):
        raise ValueError("S rows do not sum to 1; pass normalize=True to normalise them first")
    return S

def attention_entropy(S: Any, *, normalize: bool = False) -> np.ndarray:
    """Mean row entropy ``−Σ_j S_aj log S_aj`` (nats) per head, shape ``(H,)``.

    ``log n`` for uniform attention, 0 for one-hot rows. ``normalize=True`` first divides each
    row by its sum (for non-negative kernels that are not row-stochastic, e.g. Gaussian).
    """
    P = _rows(_check_S(S), normalize)
    ent = -(torch.where(P > 0, P * torch.log(P), torch.zeros_like(P))).sum(-1)
    return ent.mean(dim=(0, 2)).detach().cpu().numpy()

def attention_sparsity(S: Any, eps: float = 1e-3, *, normalize: bool = False) -> np.ndarray:
    """Fraction of attention coefficients ``≤ eps`` per head, shape ``(H,)`` (MATH.md §4: ``k``
    coefficients ``≤ ε`` force ``k − 1`` eigenvalues of ``J(s)`` ``≤ ε``)."""
    eps = check_positive_float("eps", eps)
    P = _rows(_check_S(S), normalize)
    return (P <= eps).to(P.dtype).mean(dim=(0, 2, 3)).detach().cpu().numpy()

@dataclass(frozen=True, repr=False)
class AttentionStats:
    """Per-head attention entropy (nats), entropy / log n, and sparsity (fraction ``≤ eps``)."""

    entropy: np.ndarray
    normalized_entropy: np.ndarray
    sparsity: np.ndarray
    eps: float
    rows_normalized: bool

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    def __repr__(self) -> str:
        return (f"AttentionStats(entropy={np.round(self.entropy, 4).tolist()}, "
                f"sparsity={np.round(self.sparsity, 4).tolist()}, eps={self.eps:g})")

def attention_stats(S: Any, eps: float = 1e-3, *, normalize: bool = False) -> AttentionStats:
    """:func:`attention_entropy` and :func:`attention_sparsity` together."""
    S = _check_S(S)
    ent = attention_entropy(S, normalize=normalize)
    n = S.shape[-1]
    return AttentionStats(ent, ent / math.log(n) if n > 1 else np.zeros_like(ent),
                          attention_sparsity(S, eps, normalize=normalize), float(eps), normalize)
