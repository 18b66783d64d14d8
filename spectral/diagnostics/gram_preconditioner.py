r"""A preconditioner ``P⁻¹ ≈ G⁻¹`` for the [S24] NTK Gram ``G = J Jᵀ`` (MATH.md §4), never forming ``G``.

``G`` splits by weight group into a *value side* and a *logit side*:

* value side (``W_V``, ``W_O``): an explicit low-rank ``F Fᵀ`` with ``F`` of ``r`` columns,
  ``r = H·D·d_out`` for ``W_V`` (``Σ_h (B_h B_hᵀ) ⊗ (W^O_hᵀ W^O_h)``, per head; ``(B0 B0ᵀ) ⊗ (W^{Oᵀ}W^O)``,
  joint) plus ``H·d·d_out`` for ``W_O`` (``(H_c H_cᵀ) ⊗ I``), the terms of
  :func:`attncond.spectral.diagnostics.structured.ntk_gram`. Every sample shares these weights,
  so ``F Fᵀ`` couples all samples: that is why a block-Jacobi preconditioner on ``G`` alone
  barely helps (κ 477 → 179 on the medium size);
* logit side (``W_Q``, ``W_K``): ``R = G − F_V F_Vᵀ``. Its rows are Kronecker products
  (``x_t ⊗ g^h_r`` for ``W^Q_h``, ``u^h_r ⊗ q^h_t`` for ``W^K_h``), so ``J`` restricted to the weights
  ``dW = w eᵀ`` (``w ∈ R^D`` free, ``e`` the top principal direction of the ``d``-side rows
  ``g^h_r`` or ``q^h_t``) is an explicit ``m × D`` factor ``diag(G_h e) X`` or ``diag(Q_h e) U_h``.
  Stacked over heads and the two weights, ``L`` (``2·H·D`` columns, :data:`LOGIT_DIRECTIONS` = 1
  direction each) has ``L Lᵀ = J Π Jᵀ ⪯ R`` for the projector ``Π`` on those weights: it carries
  the part of ``R`` that every sample shares. The rest, ``R − L Lᵀ ⪰ 0``, is kept only through
  its per-sample diagonal blocks (``n·d_out`` square, from the closed-form Gram of one sample's
  rows minus the blocks of ``L Lᵀ``).

With ``F = [F_V, L]`` (``r`` columns), ``P = blockdiag_i((R − LLᵀ)_ii + s I) + F Fᵀ`` and, by Woodbury,

.. math:: P^{-1} y = R_d^{-1} y − R_d^{-1} F (I + Fᵀ R_d^{-1} F)^{-1} Fᵀ R_d^{-1} y,

one batched block solve, two ``m×r`` GEMVs and an ``r×r`` Cholesky solve per application
(``s = SHIFT·tr(G)/m`` keeps every block positive definite when a block is singular, e.g. no
logit weight is trainable). ``r ≤ min(MAX_RANK, MAX_RANK_FRACTION·m)``: ``L`` is left out where it
does not fit, and ``F_V`` too where even it does not (block-Jacobi on the whole ``G``). Measured on
the dense Gram (float64, seed 0, per-head values, ``d_out = 1``; ``benchmarks/ntk_matrix_free.py``
route ``spectrum``): κ(P⁻¹G) at ``N, n, D, d, H = 64, 16, 32, 32, 4`` is 13.4 with ``L`` against 43
without it and κ(G) = 477; at ``256, 32, 64, 64, 8`` 14.3 against 86 and 983. Two principal
directions give 11.3 and four 8.2 at the first size, for twice and four times the columns.

A preconditioner only steers which directions a solver tries: every value attncond reports is
still certified on ``J`` itself, so a poor ``P`` costs time, never correctness.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attncond.spectral.diagnostics.attention_jacobian import AttentionJacobian
from attncond.spectral.diagnostics.structured import ntk_gram
from attncond.spectral.operators.base import SymmetricOp
from attncond.spectral.operators.gram import gram_matrix

__all__ = ["AttentionGramPreconditioner"]

#: relative diagonal shift of every block, times ``tr(G)/m``
SHIFT = 1e-10
#: the low-rank side is used only while ``r`` is at most this fraction of ``m`` (and ``MAX_RANK``)
MAX_RANK_FRACTION = 0.5
MAX_RANK = 4096
#: principal directions per head and logit weight in the logit-side low-rank factor ``L`` (0: none)
LOGIT_DIRECTIONS = 1
#: rows per closed-form Gram call when the diagonal blocks are built (a ``BLOCK_ROWS²`` matrix of
#: which only the diagonal blocks are kept); measured at the large size (m = 8,192, n = 32):
#: 0.35 s at 256 against 0.67 s at 1,024 and 0.85 s per sample (32)
BLOCK_ROWS = 256

VALUE_SIDE = ("W_V", "W_O")


def _square_root_factor(W: torch.Tensor) -> torch.Tensor:
    """``L`` (``d_out × d_out``) with ``L Lᵀ = Wᵀ W`` (``W`` ``d × d_out``), by QR (``Wᵀ W = RᵀR``)."""
    if W.shape[0] >= W.shape[1]:
        return torch.linalg.qr(W, mode="r").R.T
    return W.T  # more columns than rows: Wᵀ W = (Wᵀ)(Wᵀ)ᵀ directly


class AttentionGramPreconditioner(SymmetricOp):
    r"""``P⁻¹`` (symmetric positive definite, ``m×m``) for ``G = J Jᵀ`` of an :class:`AttentionJacobian`.

    Parameters
    ----------
    J : the closed-form Jacobian whose Gram is to be preconditioned (its model, inputs and
        ``trainable`` define ``F`` and the blocks).

    Attributes
    ----------
    rank : ``r``, the columns of the low-rank factor ``F = [F_V, L]`` (0 when none is used).
    block : ``n·d_out``, the size of each diagonal block.
    shift : ``s``, added to every diagonal block.
    logit_directions : principal directions per head and logit weight in ``L`` (0: no ``L``).
    logit_basis : ``(weight, head, e)`` for each ``D``-column group of ``L``: those columns are ``J``
        applied to ``dW = w eᵀ`` in that weight and head, ``w`` over the unit vectors of ``R^D``.

    Examples
    --------
    >>> import torch
    >>> from attncond.models import MultiHeadAttention
    >>> from attncond.spectral.diagnostics import AttentionJacobian
    >>> mh = MultiHeadAttention(4, 3, 2, seed=1)
    >>> X = torch.randn(6, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> P = AttentionGramPreconditioner(AttentionJacobian(mh, X))
    >>> P.shape, P.rank, P.block
    ((18, 18), 8, 3)
    """

    def __init__(self, J: Any) -> None:
        if not isinstance(J, AttentionJacobian):
            raise TypeError(f"J must be an AttentionJacobian, got {type(J).__name__}")
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            if not bool(torch.isfinite(getattr(J.model, name)).all()):
                raise ValueError(f"J: the model's weight {name} has NaN or inf entries")
        m = J.shape[0]
        super().__init__((m, m), J.dtype, J.device, name="AttentionGramPreconditioner")
        mdl = J.model
        self.block = J.n * mdl.d_out
        with torch.no_grad():
            F = self._value_factor(J)
            budget = int(min(MAX_RANK, MAX_RANK_FRACTION * m))
            if F is not None and F.shape[1] > budget:
                F = None  # not low rank: block-Jacobi on the whole Gram instead
            value_ok = F is not None or not (set(J.trainable) & set(VALUE_SIDE))
            logit_side = tuple(k for k in J.trainable if F is None or k not in VALUE_SIDE)
            blocks = self._diagonal_blocks(J, logit_side)
            trace = float(blocks.diagonal(dim1=1, dim2=2).sum())
            if F is not None:
                trace += float((F * F).sum())
            s = SHIFT * max(trace, 0.0) / max(m, 1)
            if not s > 0.0 or not math.isfinite(s):
                s = 1.0  # G = 0 (or non-finite): any SPD P is as good as another
            self.shift = s
            eye = torch.eye(self.block, dtype=J.dtype, device=J.device)
            L, self.logit_directions, self.logit_basis = None, 0, []
            if value_ok:
                L, self.logit_directions = self._logit_factor(J, budget - (0 if F is None else F.shape[1]))
            chol, info = torch.linalg.cholesky_ex(blocks + s * eye if L is None else
                                                  blocks - self._block_gram(L) + s * eye)
            if L is not None and bool((info != 0).any()):  # R − LLᵀ ⪰ 0 lost to rounding: blocks of R alone
                L, self.logit_directions, self.logit_basis = None, 0, []
                chol, info = torch.linalg.cholesky_ex(blocks + s * eye)
            if bool((info != 0).any()):
                raise torch.linalg.LinAlgError("AttentionGramPreconditioner: a diagonal block is not positive "
                                               "definite after the shift (non-finite Jacobian factors?)")
            self.chol = chol
            parts = [X for X in (F, L) if X is not None]
            self.F = torch.cat(parts, dim=1) if parts else None
            self.rank = 0 if self.F is None else int(self.F.shape[1])
            if self.F is not None:
                # Fᵀ R_d⁻¹ F = WᵀW with W = L_d⁻¹ F (R_d = L_d L_dᵀ): one syrk, half the flops of Fᵀ(R_d⁻¹F)
                Nb, b, r = self.chol.shape[0], self.block, self.rank
                W = torch.linalg.solve_triangular(self.chol, self.F.reshape(Nb, b, r), upper=False)
                eye_r = torch.eye(r, dtype=J.dtype, device=J.device)
                self.cap = torch.linalg.cholesky(eye_r + gram_matrix(W.reshape(Nb * b, r), side="inner"))
                RF = torch.linalg.solve_triangular(self.chol.transpose(1, 2), W, upper=True)
                self.RF = RF.reshape(Nb * b, r)
                del W

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _value_factor(J: AttentionJacobian) -> torch.Tensor | None:
        """``F`` with ``F Fᵀ`` the value-side Gram (rows ``(t, o)``, ``o`` fastest), or ``None``."""
        mdl, cols = J.model, []
        if "W_V" in J.trainable:
            if mdl.value_param == "per_head":
                Wo = J.Wo  # (H, d, d_out)
                D = mdl.D
                for h in range(mdl.H):
                    cols.append(torch.kron(J.Bh[:, h * D:(h + 1) * D], _square_root_factor(Wo[h])))
            else:
                cols.append(torch.kron(J.B0, _square_root_factor(J.WO)))
        if "W_O" in J.trainable:
            cols.append(torch.kron(J.Hc, torch.eye(mdl.d_out, dtype=J.dtype, device=J.device)))
        return torch.cat(cols, dim=1) if cols else None

    def _logit_factor(self, J: AttentionJacobian, budget: int) -> tuple[torch.Tensor | None, int]:
        """``L`` with ``L Lᵀ = J_Q Π_Q J_Qᵀ + J_K Π_K J_Kᵀ ⪯ R`` (``Π`` the projector on ``R^D ⊗ E_h``,
        ``E_h`` the top :data:`LOGIT_DIRECTIONS` principal directions of head ``h``'s ``d``-side factor),
        within ``budget`` columns, and the number of directions used (0: none). Its columns, ``D`` at a
        time, are ``J`` applied to ``dW = w eᵀ`` (``w`` the unit vectors of ``R^D``) in the weight and
        head that :attr:`logit_basis` lists with each ``e``."""
        self.logit_basis: list[tuple[str, int, torch.Tensor]] = []
        mdl = J.model
        H, D, d = mdl.H, mdl.D, mdl.d
        use_q = "W_Q" in J.trainable
        use_k = "W_K" in J.trainable and J.logits != "dist"  # the dist W_K rows are not one Kronecker term
        groups = int(use_q) + int(use_k)
        if not groups:
            return None, 0
        q = min(LOGIT_DIRECTIONS, d, budget // (groups * H * D))
        if q < 1:
            return None, 0
        cols = []
        Xr = torch.repeat_interleave(J.Xt, mdl.d_out, dim=0)  # x_t on every row (t, o)
        for h in range(H):
            sides = []
            if use_q:  # rows x_t ⊗ g^h_r: dW = w eᵀ gives (x_t·w)(g^h_r·e), columns diag(G_h e) X
                sides.append(("W_Q", J.Gq[:, h * d:(h + 1) * d], Xr))
            if use_k:  # rows u^h_r ⊗ q^h_t: columns diag(Q_h e) U_h
                sides.append(("W_K", torch.repeat_interleave(J.Q[h], mdl.d_out, dim=0), J.U[h]))
            for name, Sd, Sx in sides:
                E = torch.linalg.eigh(Sd.T @ Sd).eigenvectors[:, -q:]  # top-q principal directions
                for j in range(q):
                    cols.append((Sd @ E[:, j])[:, None] * Sx)
                    self.logit_basis.append((name, h, E[:, j]))
        return torch.cat(cols, dim=1), q

    def _block_gram(self, L: torch.Tensor) -> torch.Tensor:
        """The per-sample diagonal blocks of ``L Lᵀ``, ``(N, b, b)``."""
        Lb = L.reshape(-1, self.block, L.shape[1])
        return Lb @ Lb.transpose(1, 2)

    def _diagonal_blocks(self, J: AttentionJacobian, trainable: tuple[str, ...]) -> torch.Tensor:
        """``(N, b, b)``: the closed-form Gram of each sample's rows over ``trainable`` (zeros if empty)."""
        N, b = J.N, self.block
        out = torch.zeros(N, b, b, dtype=J.dtype, device=J.device)
        if not trainable:
            return out
        X = J.Xt.reshape(N, J.n, -1)
        per = max(1, BLOCK_ROWS // b)
        for a in range(0, N, per):
            c = min(N, a + per)
            G = ntk_gram(J.model, X[a:c], trainable=trainable, route="structured").gram
            Gb = G.reshape(c - a, b, c - a, b)
            idx = torch.arange(c - a, device=G.device)
            out[a:c] = Gb[idx, :, idx, :]
        return out

    # ------------------------------------------------------------------ products
    def _block_solve(self, Y: torch.Tensor) -> torch.Tensor:
        N, b = self.chol.shape[0], self.block
        Y3 = Y.reshape(N, b, -1)
        return torch.cholesky_solve(Y3, self.chol).reshape(N * b, -1)

    def _matmat(self, Y: torch.Tensor) -> torch.Tensor:
        Z = self._block_solve(Y)
        if self.F is None:
            return Z
        t = torch.cholesky_solve(self.F.T @ Z, self.cap)
        return Z - self.RF @ t
