r"""An exact upper bound on ``rank J``, ``J = ∂ vec MH(X)/∂θ_M``, from how [S24]'s model is parametrised.

``MH(X_i) = Σ_h S_ih X_i U_h`` (MATH.md §3) depends on the trainable weights only through

* per head, the logit map: for a kernel whose logits are functions of ``Q Kᵀ = X A_h Xᵀ``
  (``KernelForm.logits`` in :data:`PRODUCT_LOGITS`: softmax, temperature, linear, NormSoftmax),
  only through ``A_h = W^Q_h W^{K}_hᵀ ∈ R^{D×D}``; otherwise (the Gaussian ``−‖q − k‖²``) through
  ``(W^Q_h, W^K_h)`` themselves;
* the value map: ``U_h = W^V_h W^O_h ∈ R^{D×d_out}`` per head, or ``U = W^V W^O ∈ R^{HD×d_out}`` for
  the joint map.

So ``θ ↦ MH`` factors as ``θ ↦ φ(θ) = (A_1, …, A_H, U) ↦ MH`` and, by the chain rule,
``J = (∂MH/∂φ)·Dφ``: ``rank J ≤ rank Dφ``. ``Dφ`` is block-diagonal (each piece of ``φ`` is fed by
its own weights), so ``rank Dφ ≤ Σ_pieces min(dim piece, weights feeding it)``. When the bound is
below ``m = N·n·d_out``, ``J Jᵀ`` is singular *exactly* — ``μ = λ_min(J Jᵀ) = 0`` with a null space
of dimension at least ``m − bound`` — although ``p ≥ m`` may hold.

For the product logits, ``(W^Q_h, W^K_h) ↦ A_h`` maps onto the ``D×D`` matrices of rank ``≤ d``,
a variety of dimension ``2Dd − d²`` (``d ≤ D``; the ``GL(d)`` gauge ``(W_Q G, W_K G^{-T})``
removes ``d²`` of the ``2Dd`` weights) or ``D²`` (``d ≥ D``). The rank of a polynomial map's
differential never exceeds the dimension of its image, so the bound holds at *every* weight, not
only at generic ones: ``rank J < m`` everywhere means the reachable outputs form a null set of
``R^m``.

The bound is an inequality, not the rank: it is attained at generic weights for the product logits
(e.g. ``D = d = 8, H = 2``: bound 144 = the numerical rank of ``J`` at ``m = 256``, ``p = 384``), and
it ignores further symmetries (the ``O(d)`` gauge of the Gaussian kernel, the scale gauge of the
linear kernel), which only lower the rank.

>>> from attncond.models import MultiHeadAttention
>>> rb = jacobian_rank_bound(MultiHeadAttention(8, 8, 2, seed=0))
>>> rb.bound, rb.n_params
(144, 384)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .attention import PARAM_NAMES, MultiHeadAttention
from .checks import check_subset
from .kernels import get_kernel

__all__ = ["PRODUCT_LOGITS", "JacobianRankBound", "RankPiece", "jacobian_rank_bound"]

#: logit forms (:data:`models.kernels.LOGIT_FORMS`) that are functions of ``Q Kᵀ`` alone
PRODUCT_LOGITS: tuple[str, ...] = ("dot", "dot_var", "dot_std")


@dataclass(frozen=True)
class RankPiece:
    """One piece of ``φ``: ``count`` copies (heads) of a ``dim``-dimensional map, each fed by
    ``n_params`` weights of which ``gauge`` directions leave it unchanged (``rank ≤ n_params − gauge``)."""

    name: str
    count: int
    dim: int
    n_params: int
    gauge: int = 0

    @property
    def bound(self) -> int:
        """``count · min(dim, n_params − gauge)``, this piece's share of ``rank Dφ``."""
        return self.count * min(self.dim, self.n_params - self.gauge)


@dataclass(frozen=True)
class JacobianRankBound:
    """``rank J ≤ bound = min(n_params, Σ pieces)`` (module docstring); ``pieces`` name the factorisation."""

    bound: int
    n_params: int
    pieces: tuple[RankPiece, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: the pieces and their sum, e.g.
        ``rank J ≤ 2×min(64, 128 − 64) [A_h …] + 2×min(8, 64) [U_h …] = 144``."""
        terms = " + ".join(f"{p.count}×min({p.dim}, {p.n_params}{f' − {p.gauge}' if p.gauge else ''})"
                           f" [{p.name}]" for p in self.pieces if p.count)
        return f"rank J ≤ {terms or '0'} = {self.bound}" + (
            f" (capped at p = {self.n_params})" if self.bound == self.n_params < sum(
                p.bound for p in self.pieces) else "")


def jacobian_rank_bound(model: MultiHeadAttention, trainable: Sequence[str] | None = None) -> JacobianRankBound:
    """The bound of the module docstring for ``model``'s kernel and value map and the weights
    ``trainable`` (default ``model.trainable``)."""
    if not isinstance(model, MultiHeadAttention):
        raise TypeError(f"model must be a MultiHeadAttention, got {type(model).__name__}")
    names = check_subset("trainable", model.trainable if trainable is None else trainable, PARAM_NAMES)
    D, d, H, d_out, tr = model.D, model.d, model.H, model.d_out, set(names)
    form = get_kernel(model.kernel_name).variant(model.kernel_options).form
    pieces = []
    qk = D * d * len(tr & {"W_Q", "W_K"})
    if qk:
        if form is not None and form.logits in PRODUCT_LOGITS:
            # (W_Q, W_K) ↦ A_h maps onto the D×D matrices of rank ≤ d, of dimension 2Dd − d² (d ≤ D)
            # or D²: the differential's rank never exceeds it, at any weight (its generic, maximal rank)
            gauge = d * d - max(d - D, 0) ** 2 if {"W_Q", "W_K"} <= tr else 0
            pieces.append(RankPiece("A_h = W_Q^h W_K^h^T", H, D * D, qk, gauge))
        else:
            pieces.append(RankPiece("(W_Q^h, W_K^h)", H, qk, qk))
    if model.value_param == "per_head":
        fed = D * d * ("W_V" in tr) + d * d_out * ("W_O" in tr)
        if fed:
            pieces.append(RankPiece("U_h = W_V^h W_O^h", H, D * d_out, fed))
    else:
        fed = H * D * H * d * ("W_V" in tr) + H * d * d_out * ("W_O" in tr)
        if fed:
            pieces.append(RankPiece("U = W_V W_O", 1, H * D * d_out, fed))
    p = sum(getattr(model, k).numel() for k in names)
    return JacobianRankBound(min(p, sum(pc.bound for pc in pieces)), p, tuple(pieces))

