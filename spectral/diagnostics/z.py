"""Conditioning of the attention output matrix ``Z`` with and without residual ([Q25]; MATH.md §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from attncond.models import AttentionBlock
from attncond.spectral.diagnostics.formation import Z_MATRIX, formation_bound, widen
from attncond.spectral.diagnostics.structured import attention_output_matrix as z_matrix
from attncond.spectral.estimate import extreme_singular_values
from attncond.spectral.results import SpectralEstimate, record_repr, record_to_dict


# --------------------------------------------------------------------------- Z of [Q25]
@dataclass(frozen=True, repr=False)
class ZConditioning:
    """``κ(Z)``, ``σ_min(Z)``, ``σ_max(Z)`` with certified intervals ([Q25], MATH.md §4).

    ``weyl_bound = σ_min(X) − ‖A X W_V‖₂`` (stacked over samples) is a lower bound for
    ``σ_min(Z^res)`` (Weyl); it is reported for the residual ``Z`` only. Singular values are
    over ``min(Nn, D)`` (``Z ∈ R^{Nn×D}``).
    """

    residual: bool
    sigma_min: float
    sigma_min_interval: tuple[float, float]
    sigma_max: float
    sigma_max_interval: tuple[float, float]
    cond: float
    cond_interval: tuple[float, float]
    rank_deficient: bool
    weyl_bound: float | None
    weyl_holds: bool | None
    sigma_min_X: float
    norm_AXWV: float
    shape: tuple[int, int]
    reason: str | None
    estimate: SpectralEstimate | None = field(default=None, compare=False)
    Z: torch.Tensor | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self, skip=("estimate", "Z"))

    def __repr__(self) -> str:
        return record_repr(self, ("residual", "cond", "sigma_min", "sigma_max", "weyl_bound", "weyl_holds",
                            "shape", "reason"))

def attention_output_matrix(block: AttentionBlock, X: Any, residual: bool = True, *,
                            tol: float = 1e-10) -> ZConditioning:
    """Conditioning of ``Z = [Z_1; …; Z_N]``, ``Z_i = A_i X_i W_V (+ X_i)`` ([Q25]).

    Certified intervals from :func:`spectral.extreme_singular_values` on the formed ``Z``, widened by the
    bound on ``‖Ẑ − Z‖₂`` of :func:`~attncond.spectral.diagnostics.formation.formation_bound` (rounding and
    under/overflow in forming ``Z``), so they hold for the mathematical ``Z``; the Weyl bound
    ``σ_min(Z^res) ≥ σ_min(X) − ‖AXW_V‖`` (MATH.md §4) is computed from the same solver.
    """
    Z = z_matrix(block, X, residual)
    Xt = block.check_inputs(X)
    Xs = Xt.reshape(-1, block.D)
    est = widen(extreme_singular_values(Z, tol=tol), formation_bound(block, Xt, Z_MATRIX, residual=residual),
                tol=tol)
    sx = extreme_singular_values(Xs, which="min", tol=tol).sigma_min
    nax = extreme_singular_values(z_matrix(block, Xt, False), which="max", tol=tol).sigma_max
    weyl = sx - nax if residual else None
    reason = est.reason
    if est.rank_deficient:
        reason = (reason + "; " if reason else "") + "Z is singular to working precision: κ = inf"
    if not bool(Z.any()):
        reason = (reason + "; " if reason else "") + (
            f"Z is identically zero in {Z.dtype}: its entries underflowed (see KernelUnderflowWarning); the "
            "values are those of the computed Z, not of the exact one")
    # rounding of sx and nax, relative to their own scale (an absolute floor of 1 made the check unable
    # to fail for matrices below that scale)
    slack = 10 * Z.shape[0] * torch.finfo(Z.dtype).eps * max(est.sigma_max, sx, nax)
    holds = None if weyl is None else bool(est.sigma_min_interval[1] >= weyl - slack)
    return ZConditioning(
        residual=residual, sigma_min=est.sigma_min, sigma_min_interval=est.sigma_min_interval,
        sigma_max=est.sigma_max, sigma_max_interval=est.sigma_max_interval, cond=est.cond,
        cond_interval=est.cond_interval, rank_deficient=est.rank_deficient, weyl_bound=weyl,
        weyl_holds=holds, sigma_min_X=sx, norm_AXWV=nax, shape=tuple(Z.shape), reason=reason,
        estimate=est, Z=Z,
    )
