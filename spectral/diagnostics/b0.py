"""diagnostics.b0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from attncond.models import MultiHeadAttention
from attncond.spectral.diagnostics.structured import B0
from attncond.spectral.results import record_repr, record_to_dict


# --------------------------------------------------------------------------- B0 and beta
@dataclass(frozen=True, repr=False)
class BetaPaper:
    """``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Theorem 1 as stated; MATH.md §4).

    ``sigma_min_B0T = sqrt(λ_min(B0 B0ᵀ))`` (0 when ``HD < Nn``); ``sigma_min_WO`` is the
    ``d_out``-th singular value of ``W^O`` (``‖W^O‖`` for ``d_out = 1``).
    """

    value: float
    sigma_min_WO: float
    sigma_min_B0T: float
    B0_shape: tuple[int, int]
    full_row_rank_possible: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    def __repr__(self) -> str:
        return record_repr(self, ("value", "sigma_min_WO", "sigma_min_B0T", "B0_shape", "reason"))

def _check_mh(model: Any) -> MultiHeadAttention:
    if not isinstance(model, MultiHeadAttention):
        raise TypeError(f"model must be a models.MultiHeadAttention, got {type(model).__name__}")
    return model

def sigma_min_B0T(B: torch.Tensor) -> float:
    m, p = B.shape
    if p < m:
        return 0.0
    return float(torch.linalg.svdvals(B)[m - 1])

def sigma_dout(W: torch.Tensor) -> float:
    """``d_out``-th singular value of a ``(k, d_out)`` block (0 if ``k < d_out``)."""
    k, dout = W.shape
    if k < dout:
        return 0.0
    return float(torch.linalg.svdvals(W.detach())[dout - 1])

def beta_paper(model: MultiHeadAttention, X: Any) -> BetaPaper:
    """The paper's constant ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Thm. 1, MATH.md §4)."""
    model = _check_mh(model)
    B = B0(model, X)
    s_b = sigma_min_B0T(B)
    s_o = sigma_dout(model.W_O)
    m, p = B.shape
    reason = None if p >= m else (f"HD={p} < Nn={m}: B0 cannot have full row rank, "
                                  "σ_min(B0ᵀ)=0 and β=0")
    return BetaPaper(s_o**2 * s_b**2, s_o, s_b, (m, p), p >= m, reason)
