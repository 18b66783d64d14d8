r"""The [S24] attention Jacobian as a matrix-free operator in closed form (MATH.md §4).

:class:`AttentionJacobian` is ``J = ∂ vec(MH(X))/∂θ_M ∈ R^{m×p}`` of a
:class:`models.MultiHeadAttention` whose kernel declares ``closed_form_ntk_gram`` (dot or
distance logits; softmax, ``exp`` or identity row maps). Its products ``J x`` (a JVP) and
``Jᵀ y`` (a VJP) use the *rank-one* structure of every output's derivative, precomputed once
as low-rank factors per head ``h`` (derivation in
:func:`attncond.spectral.diagnostics.structured.ntk_gram`):

* ``W_Q``: ``∂f_r/∂W^Q_h = x_aᵀ g^h_r`` with ``g^h_r = Σ_j W^h_{rj} k_j`` (dot logits) or
  ``Σ_j W^h_{rj}(k_j − q_a)`` (distance logits, explicit differences, no cancellation);
* ``W_K``: ``u^h_rᵀ q_a`` with ``u^h_r = Σ_j W^h_{rj} x_j`` (dot), and for distance logits
  ``u^h_rᵀ q_a − Σ_j W^h_{rj} x_jᵀ k_j``;
* ``W_V`` (per head): ``b^h_aᵀ (W^O_h)_{:,o}ᵀ`` with ``B_h = S_h X``; joint: ``B0 · W^O``;
* ``W_O``: ``[heads]_a ⊗ e_o``;

where ``r = (i, a, o)`` and ``W^h = E^h/τ`` are the logit weights of :func:`logit_weights`. So the
NTK Gram is never formed: ``G v = J (Jᵀ v)`` costs ``O(H·m·(D + d)·d)`` per product (plus
``O(H·N·n²·d_out)`` for distance logits) instead of ``O(m²)``, and memory is ``O(H·m·(D + d))``
for the factors. With it, ``μ = λ_min(J Jᵀ) = σ_min(J)²`` (``m ≤ p``) is a matrix-free σ_min of
``J`` — certified on ``J`` itself, so the interval is accurate to ``eps·σ_max`` and not
``eps·σ_max²`` (see :func:`attncond.spectral.diagnostics.pl.pl_constant`).

Columns are ordered as ``trainable`` lists the weights, each flattened row-major — the order of
:class:`attncond.spectral.operators.JacobianOperator` over ``model.functional``; rows ``(i, a, o)``
with ``o`` fastest.

Products are evaluated in floating point from exact closed forms: their error is that of a few
sums of ``O(n + D + d)`` terms, the level the solvers' rounding allowance covers; they are not
interval arithmetic (``product_source`` says so in every result).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attncond.models import (
    KernelCapabilityError,
    MultiHeadAttention,
    get_kernel,
    kernel_variant,
    key_reference,
    softmax_centred,
)
from attncond.models.checks import check_subset
from attncond.spectral.operators.base import LinearOp

__all__ = ["AttentionJacobian", "closed_form_kernel", "logit_weights", "value_out", "temperature"]

#: the (logits, row map) forms the closed forms implement
GRAM_LOGITS: tuple[str, ...] = ("dot", "dist")
GRAM_ROW_MAPS: tuple[str, ...] = ("softmax", "exp", "identity")

#: intermediate tensors of a blocked product stay below this many entries (the block is split)
BLOCK_ENTRIES = 32 * 1024**2


def check_mh(model: Any, name: str = "model") -> MultiHeadAttention:
    """``model`` if it is a :class:`models.MultiHeadAttention` with finite weights, else a ``TypeError``
    (or ``ValueError`` naming the weight) before any work."""
    if not isinstance(model, MultiHeadAttention):
        raise TypeError(
            f"{name} must be a models.MultiHeadAttention ([S24] multi-head model), got "
            f"{type(model).__name__}"
        )
    for w in ("W_Q", "W_K", "W_V", "W_O"):
        if not bool(torch.isfinite(getattr(model, w)).all()):
            raise ValueError(f"{name}: the weight {w} has NaN or inf entries")
    return model


def closed_form_kernel(model: MultiHeadAttention) -> tuple[str, str] | None:
    """``(logit type, row map)`` of the model's kernel if a closed-form NTK Gram exists, else ``None``.

    Asks the kernel registry (``models.KERNELS``, capability ``closed_form_ntk_gram``). ``"dot"``:
    ``ℓ_aj = q_a·k_j/τ``; ``"dist"``: ``ℓ_aj = −‖q_a − k_j‖²/(2τ)``. Row maps: ``"softmax"``
    (``S_a = softmax(ℓ_a)``), ``"exp"`` (``S = exp(ℓ)``), ``"identity"`` (``S = ℓ``).
    """
    model = check_mh(model)
    kern = get_kernel(model.kernel_name)
    if not kern.has("closed_form_ntk_gram") or kern.unknown_options(model.kernel_options):
        return None  # unknown options change the kernel: no closed form claimed
    form = kern.variant(model.kernel_options).form
    if form is None or form.logits not in GRAM_LOGITS or form.row_map not in GRAM_ROW_MAPS:
        raise KernelCapabilityError(
            f"kernel {kern.name!r} declares closed_form_ntk_gram but its form {form} is not one the "
            f"structured Gram implements (logits {GRAM_LOGITS}, row maps {GRAM_ROW_MAPS})")
    return form.logits, form.row_map


def temperature(model: MultiHeadAttention) -> float:
    """The kernel temperature ``τ`` (``√d`` when the model leaves it ``None``)."""
    return math.sqrt(model.d) if model.tau is None else float(model.tau)


def value_out(model: MultiHeadAttention, h: int) -> torch.Tensor:
    """``(D, d_out)`` map from a token to head ``h``'s contribution after ``W_O``."""
    d, D = model.d, model.D
    if model.value_param == "per_head":
        return model.W_V[h] @ model.W_O[h * d:(h + 1) * d]
    return model.W_V[h * D:(h + 1) * D] @ model.W_O


def logit_weights(model: MultiHeadAttention, X: torch.Tensor, Sh: torch.Tensor, h: int, rowmap: str,
                  tau: float) -> torch.Tensor:
    """``W[i,a,j,o] = ∂f_{i,a,o}/∂ℓ_{i,a,j} / τ`` for head ``h``, shape ``(N, n, n, d_out)``.

    Softmax rows: ``S_aj (c_j − Σ_l S_al c_l)``, centred without cancellation at one-hot rows
    (:func:`models.softmax_centred`) and invariant to a common shift of the ``c_j``, so formed from
    token differences ``x_j − x_1`` (no cancellation of a large common component); ``exp`` rows:
    ``S_aj c_j``; identity: ``c_j``, where ``c_j = x_j ·`` :func:`value_out`.
    """
    N, n, _ = X.shape
    dout = model.d_out
    if rowmap == "softmax":
        C = (X - X[:, :1]) @ value_out(model, h)  # (N, n, d_out)
        E = Sh.unsqueeze(-1) * softmax_centred(Sh.unsqueeze(-1), C.unsqueeze(1), dim=2)
    elif rowmap == "exp":
        E = Sh.unsqueeze(-1) * (X @ value_out(model, h)).unsqueeze(1)
    else:  # identity
        E = (X @ value_out(model, h)).unsqueeze(1).expand(N, n, n, dout)
    return E / tau


class AttentionJacobian(LinearOp):
    r"""``J = ∂ vec(MH(X))/∂θ_M`` of a closed-form [S24] model, matrix-free (module docstring).

    Parameters
    ----------
    model : :class:`models.MultiHeadAttention` with a kernel declaring ``closed_form_ntk_gram``
        (``closed_form_kernel(model)`` is not ``None``); linearised at its current weights.
    X : inputs ``(N, n, D)`` (validated by ``model.check_inputs``).
    trainable : subset of ``("W_Q", "W_K", "W_V", "W_O")`` (default ``model.trainable``); the
        column order.

    Examples
    --------
    >>> import torch
    >>> from attncond.models import MultiHeadAttention
    >>> from attncond.spectral.operators import JacobianOperator
    >>> mh = MultiHeadAttention(4, 3, 2, seed=1)
    >>> X = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> J = AttentionJacobian(mh, X)
    >>> J.shape
    (6, 72)
    >>> Jref = JacobianOperator(lambda p: mh.functional(p, X), mh.params())
    >>> v = torch.randn(6, dtype=torch.float64)
    >>> bool(torch.allclose(J.rmatvec(v), Jref.rmatvec(v), rtol=1e-13, atol=1e-14))
    True
    """

    def __init__(self, model: Any, X: Any, trainable: Any = None) -> None:
        model = check_mh(model)
        form = closed_form_kernel(model)
        if form is None:
            raise ValueError(
                f"model: kernel {model.kernel_name!r} with options {model.kernel_options} has no closed-form "
                "NTK structure; use spectral.operators.JacobianOperator(lambda p: model.functional(p, X), "
                "model.params()) instead")
        names = tuple(dict(model.named_parameters()))
        train = check_subset("trainable", model.trainable if trainable is None else trainable, names)
        Xt = model.check_inputs(X)
        self.model, self.trainable = model, train
        self.logits, self.rowmap = form
        N, n, _ = Xt.shape
        dout = model.d_out
        self.N, self.n, self.n_tokens = N, n, N * n
        self.sizes = tuple(getattr(model, k).numel() for k in train)
        self.shapes = tuple(tuple(getattr(model, k).shape) for k in train)
        super().__init__((N * n * dout, sum(self.sizes)), model.dtype, Xt.device, name="AttentionJacobian")
        with torch.no_grad():
            self._factor(model, Xt)

    # ------------------------------------------------------------------ factors
    def _factor(self, model: MultiHeadAttention, X: torch.Tensor) -> None:
        N, n, D = X.shape
        H, d, dout = model.H, model.d, model.d_out
        T, tau = self.n_tokens, temperature(model)
        self.Xt = X.reshape(T, D)
        S = model.attention(X)  # (N, H, n, n)
        need_qk = "W_Q" in self.trainable or "W_K" in self.trainable
        if need_qk:
            Q = torch.einsum("isD,hDd->hisd", X, model.W_Q)  # (H, N, n, d)
            # Σ_j w_rj = 0 where S is key-shift invariant: Σ_j w_rj k_j and Σ_j w_rj x_j take token
            # differences (models.key_reference), without the cancellation of a common component
            Xk = key_reference(X, kernel_variant(model.kernel_name, model.kernel_options).form)
            K = torch.einsum("isD,hDd->hisd", Xk, model.W_K)  # Xk is X for distance logits
            Wl = torch.stack([logit_weights(model, X, S[:, h], h, self.rowmap, tau) for h in range(H)])
            self.Q = Q.reshape(H, T, d)
            if "W_Q" in self.trainable:
                if self.logits == "dist":
                    g = torch.stack([torch.einsum("iajo,iajd->iaod", Wl[h],
                                                  K[h].unsqueeze(1) - Q[h].unsqueeze(2)) for h in range(H)])
                else:
                    g = torch.einsum("hiajo,hijd->hiaod", Wl, K)
                # heads side by side, (T·d_out, H·d): the W_Q products are one GEMM over all heads
                self.Gq = g.reshape(H, T, dout, d).permute(1, 2, 0, 3).reshape(T * dout, H * d).contiguous()
            if "W_K" in self.trainable:
                self.U = torch.einsum("hiajo,ijD->hiaoD", Wl, Xk).reshape(H, T * dout, D)
                if self.logits == "dist":
                    self.Wl, self.K = Wl, K.reshape(H, T, d)
        if "W_V" in self.trainable:
            if model.value_param == "per_head":  # (T, H·D): [S_1 X, …, S_H X]
                self.Bh = (S @ X.unsqueeze(1)).permute(0, 2, 1, 3).reshape(T, H * D).contiguous()
                self.Wo = model.W_O.detach().reshape(H, d, dout)
            else:
                self.B0 = model.weighted_inputs(X).reshape(T, H * D)
                self.WO = model.W_O.detach()
        if "W_O" in self.trainable:
            self.Hc = model.heads(X).reshape(T, H * d)

    # ------------------------------------------------------------------ products
    def _split(self, Xp: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(Xp, self.sizes, dim=0)
        k = Xp.shape[1]
        return {name: p.reshape(*shape, k) for name, p, shape in zip(self.trainable, parts, self.shapes,
                                                                    strict=True)}

    def _blocked(self, product: Any, Z: torch.Tensor) -> torch.Tensor:
        """``product(Z)`` on column chunks of ``Z`` whose intermediates stay below ``BLOCK_ENTRIES``."""
        mdl = self.model
        per_col = self.n_tokens * max(mdl.D, mdl.d, mdl.H * mdl.d_out) * mdl.d_out
        if self.logits == "dist":
            per_col *= mdl.H
        step = max(1, BLOCK_ENTRIES // max(per_col, 1))
        if Z.shape[1] <= step:
            return product(Z)
        return torch.cat([product(Z[:, a:a + step]) for a in range(0, Z.shape[1], step)], dim=1)

    def _matmat(self, Xp: torch.Tensor) -> torch.Tensor:
        return self._blocked(self._jvp, Xp)

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self._blocked(self._vjp, Y)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._jvp(x[:, None])[:, 0]

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._vjp(y[:, None])[:, 0]

    def _jvp(self, Xp: torch.Tensor) -> torch.Tensor:
        """``J X`` for ``X`` ``(p, k)``: GEMMs over all heads at once, then one contraction per group
        with intermediates of ``T·d_out·max(D, d)·k`` entries (never ``H`` times that)."""
        mdl, dW = self.model, self._split(Xp)
        H, D, d, dout, k = mdl.H, mdl.D, mdl.d, mdl.d_out, Xp.shape[1]
        T = self.n_tokens
        out = Xp.new_zeros(T, dout, k)
        if "W_Q" in dW:  # Σ_h ⟨x_a dW_h, g^h_r⟩ = x_aᵀ (Σ_h dW_h g^h_r): M = [g^1 … g^H] [dW_1 … dW_H]ᵀ
            dWq = dW["W_Q"].permute(0, 2, 1, 3).reshape(H * d, D * k)
            M = torch.matmul(self.Gq, dWq).reshape(T, dout, D, k)
            out += torch.matmul(self.Xt.reshape(T, 1, 1, D), M).squeeze(2)
        if "W_K" in dW:  # Σ_h u^h_rᵀ dW_h q_a
            dWk = dW["W_K"].reshape(H, D, d * k)
            for h in range(H):
                ud = torch.matmul(self.U[h], dWk[h]).reshape(T, dout, d, k)
                out += torch.matmul(self.Q[h].reshape(T, 1, 1, d), ud).squeeze(2)
            if self.logits == "dist":  # − Σ_j W_rj x_jᵀ dW k_j
                dWt = dW["W_K"].permute(0, 2, 1, 3).reshape(H, d, D * k)
                kdw = torch.matmul(self.K, dWt).reshape(H, T, D, k)
                y = (self.Xt.reshape(1, T, D, 1) * kdw).sum(2).reshape(H, self.N, 1, self.n, k)
                wl = self.Wl.permute(0, 1, 4, 2, 3)  # (H, N, dout, a, j)
                out -= torch.matmul(wl, y).sum(0).permute(0, 2, 1, 3).reshape(T, dout, k)
        if "W_V" in dW:
            if mdl.value_param == "per_head":  # Σ_h B_h dW_h W^O_h = [B_1 … B_H] [dW_h W^O_h]_h
                M = torch.matmul(dW["W_V"].permute(0, 3, 1, 2), self.Wo.unsqueeze(1))  # (H, k, D, dout)
                bm = self.Bh @ M.permute(0, 2, 1, 3).reshape(H * D, k * dout)
                out += bm.reshape(T, k, dout).transpose(1, 2)
            else:  # B0 dW W^O
                M = torch.matmul(dW["W_V"].permute(2, 0, 1), self.WO)  # (k, HD, dout)
                bm = self.B0 @ M.permute(1, 0, 2).reshape(-1, k * dout)
                out += bm.reshape(T, k, dout).transpose(1, 2)
        if "W_O" in dW:
            out += (self.Hc @ dW["W_O"].reshape(-1, dout * k)).reshape(T, dout, k)
        return out.reshape(T * dout, k)

    def _vjp(self, Y: torch.Tensor) -> torch.Tensor:
        """``Jᵀ Y`` for ``Y`` ``(m, k)``, in the column order of ``trainable`` (GEMMs as in ``_jvp``)."""
        mdl = self.model
        H, D, d, dout, k = mdl.H, mdl.D, mdl.d, mdl.d_out, Y.shape[1]
        T = self.n_tokens
        V = Y.reshape(T, dout, k)
        grads: dict[str, torch.Tensor] = {}
        if "W_Q" in self.trainable:  # Σ_r v_r x_a g_rᵀ = (x ⊗ v)ᵀ [g^1 … g^H]
            Z = (self.Xt.reshape(T, 1, D, 1) * V.reshape(T, dout, 1, k)).reshape(T * dout, D * k)
            gq = torch.matmul(Z.T, self.Gq).reshape(D, k, H, d)
            grads["W_Q"] = gq.permute(2, 0, 3, 1)
        if "W_K" in self.trainable:  # Σ_r v_r u_r q_aᵀ (− Σ_j w_j x_j k_jᵀ)
            Vr = V.reshape(T, dout, 1, k)
            gk = torch.stack([self.U[h].T @ (self.Q[h].reshape(T, 1, d, 1) * Vr).reshape(T * dout, d * k)
                              for h in range(H)])  # (H, D, d·k)
            if self.logits == "dist":  # w_{ij} = Σ_{a,o} v_{iao} W_{iajo}
                wl = self.Wl.permute(0, 1, 3, 2, 4).reshape(H, self.N, self.n, self.n * dout)
                w = torch.matmul(wl, V.reshape(1, self.N, self.n * dout, k)).reshape(H, T, 1, k)
                xw = (self.Xt.reshape(1, T, D, 1) * w).reshape(H, T, D * k)
                gk = gk - torch.matmul(xw.transpose(1, 2), self.K).reshape(H, D, k, d).transpose(2, 3).reshape(
                    H, D, d * k)
            grads["W_K"] = gk.reshape(H, D, d, k)
        if "W_V" in self.trainable:
            if mdl.value_param == "per_head":  # B_hᵀ V W^O_hᵀ
                bv = (self.Bh.T @ V.reshape(T, dout * k)).reshape(H, D, dout, k)
                grads["W_V"] = torch.matmul(self.Wo.unsqueeze(1), bv)  # (H, D, d, k)
            else:  # B0ᵀ V W^Oᵀ
                VW = torch.matmul(self.WO.unsqueeze(0), V)  # (T, Hd, k)
                grads["W_V"] = self.B0.T @ VW.reshape(T, -1)
        if "W_O" in self.trainable:
            grads["W_O"] = self.Hc.T @ V.reshape(T, dout * k)
        return torch.cat([grads[name].reshape(-1, k) for name in self.trainable], dim=0)

    @property
    def factor_bytes(self) -> int:
        """Bytes held by the precomputed factors (the operator's memory beyond the model)."""
        names = ("Xt", "Q", "Gq", "U", "Wl", "K", "Bh", "Wo", "B0", "WO", "Hc")
        return sum(t.numel() * t.element_size() for t in (getattr(self, a, None) for a in names)
                   if isinstance(t, torch.Tensor))
