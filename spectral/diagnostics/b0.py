"""``B0`` of [S24] and the paper's constant ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` (MATH.md §4).

``B0`` is formed once and decomposed once (:func:`b0_conditioning`); :func:`beta_paper` reuses
that certified estimate, and every factor of ``β`` carries a certified interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from attncond.models import MultiHeadAttention
from attncond.spectral.diagnostics.formation import B0_MATRIX, formation_bound, widen
from attncond.spectral.diagnostics.structured import B0
from attncond.spectral.estimate import extreme_singular_values
from attncond.spectral.results import SpectralEstimate, record_repr, record_to_dict


# --------------------------------------------------------------------------- B0 and beta
@dataclass(frozen=True, repr=False)
class BetaPaper:
    """``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Theorem 1 as stated; MATH.md §4).

    ``sigma_min_B0T = sqrt(λ_min(B0 B0ᵀ))``: exactly 0 when ``HD < Nn`` (rank), else the
    certified ``σ_min(B0)``; ``sigma_min_WO`` is the certified ``d_out``-th singular value of
    ``W^O`` (``‖W^O‖`` for ``d_out = 1``). ``interval`` bounds ``β`` from the factors'
    certified intervals; ``certified`` is ``False`` (with ``reason``) when a factor did not converge.
    """

    value: float
    sigma_min_WO: float
    sigma_min_B0T: float
    B0_shape: tuple[int, int]
    full_row_rank_possible: bool
    reason: str | None = None
    interval: tuple[float, float] | None = None
    certified: bool = True

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    def __repr__(self) -> str:
        return record_repr(self, ("value", "interval", "sigma_min_WO", "sigma_min_B0T", "B0_shape", "reason"))


def check_multihead(model: Any) -> MultiHeadAttention:
    """``model`` if it is the [S24] :class:`~attncond.models.MultiHeadAttention`, else ``TypeError``."""
    if not isinstance(model, MultiHeadAttention):
        raise TypeError(f"model must be a models.MultiHeadAttention, got {type(model).__name__}")
    return model


def check_b0_shape(name: str, shape: tuple[int, int], model: MultiHeadAttention, X: Any) -> None:
    """A reused ``B0`` result (``name``) must be of ``(model, X)``: shape ``(N·n, H·D)``, else ``ValueError``.

    A same-shaped result of other inputs cannot be detected; the shape catches a result of another batch,
    sequence length or model.
    """
    N, n, _ = model.check_inputs(X).shape
    want = (N * n, model.H * model.D)
    if tuple(shape) != want:
        raise ValueError(f"{name} was computed for a B0 of shape {tuple(shape)}, but (model, X) has B0 of "
                         f"shape {want} (N·n, H·D): pass the result of the same (model, X), or None")


def b0_conditioning(model: MultiHeadAttention, X: Any, *, tol: float = 1e-10) -> SpectralEstimate:
    """Certified ``σ_max``, ``σ_min`` and ``κ`` of ``B0 ∈ R^{Nn×HD}`` ([S24]; MATH.md §4).

    ``B0`` is formed once; the dense route's full spectrum stays in ``details.spectrum``. The intervals
    are those of the mathematical ``B0`` at the model's weights and ``X``: the certified intervals of the
    formed matrix widened by the bound of :func:`~attncond.spectral.diagnostics.formation.formation_bound`
    on ``‖B̂0 − B0‖₂`` (``attainable_accuracy["formation"]``); where that is not bounded the intervals
    are ``[0, inf]`` and ``converged=False``.
    """
    model = check_multihead(model)
    est = extreme_singular_values(B0(model, X), tol=tol)
    return widen(est, formation_bound(model, X, B0_MATRIX), tol=tol)


def sigma_dout(W: torch.Tensor, *, tol: float = 1e-10) -> SpectralEstimate | None:
    """Certified ``d_out``-th singular value of a ``(k, d_out)`` block (``None`` if ``k < d_out``:
    the value is then exactly 0)."""
    k, dout = W.shape
    if k < dout:
        return None
    return extreme_singular_values(W.detach(), which="min", tol=tol)


def beta_paper(model: MultiHeadAttention, X: Any, *, b0: SpectralEstimate | None = None,
               tol: float = 1e-10) -> BetaPaper:
    """The paper's constant ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Thm. 1, MATH.md §4).

    Parameters
    ----------
    model : attncond.models.MultiHeadAttention
    X : inputs ``(N, n, D)``.
    b0 : SpectralEstimate, optional
        :func:`b0_conditioning` of the same ``(model, X)``, reused instead of forming ``B0`` again.
    tol : float
        Relative tolerance of the certified singular values.

    Returns
    -------
    BetaPaper
    """
    model = check_multihead(model)
    if b0 is None:
        b0 = b0_conditioning(model, X, tol=tol)
    else:
        check_b0_shape("b0", b0.shape, model, X)
    m, p = b0.shape
    wo = sigma_dout(model.W_O, tol=tol)
    s_o, iv_o = (0.0, (0.0, 0.0)) if wo is None else (wo.sigma_min, wo.sigma_min_interval)
    notes, certified = [], b0.converged and (wo is None or wo.converged)
    if p >= m:
        s_b, iv_b = b0.sigma_min, b0.sigma_min_interval
    else:
        s_b, iv_b = 0.0, (0.0, 0.0)
        notes.append(f"HD={p} < Nn={m}: B0 cannot have full row rank, σ_min(B0ᵀ)=0 and β=0")
    if not certified:
        notes.append("not certified: " + "; ".join(r for r in (b0.reason, wo and wo.reason) if r))
    interval = (iv_o[0] ** 2 * iv_b[0] ** 2, iv_o[1] ** 2 * iv_b[1] ** 2)
    return BetaPaper(s_o**2 * s_b**2, s_o, s_b, (m, p), p >= m, "; ".join(notes) or None, interval, certified)
