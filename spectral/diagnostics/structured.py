r"""Closed forms for the structured matrices of the attention models (MATH.md §4).

Nothing here materialises an autograd Jacobian of a :class:`models.MultiHeadAttention`:

* :func:`B0`: the ``Nn × HD`` matrix ``[S_i1 X_i … S_iH X_i]`` stacked over samples
  ([S24] Theorem 1, **reconstructed**; rows are sample-major ``(i, a)``, columns are
  head-major blocks ``h·D:(h+1)·D``);
* :func:`B0_gram`: ``B0 B0ᵀ``;
* :func:`ntk_gram`: the exact empirical NTK Gram ``J Jᵀ`` of the stacked outputs with
  respect to any trainable subset of ``(W_Q, W_K, W_V, W_O)``, from the rank-one
  structure of every output's derivative (derivation in :func:`ntk_gram`);
* :func:`attention_output_matrix`: ``Z = [Z_1; …; Z_N]`` of a [Q25]
  :class:`models.AttentionBlock` with or without the residual.

Output ordering everywhere: ``vec(model(X))`` row-major, i.e. index ``(i, a, o)`` with the
output channel ``o`` fastest, then the token ``a``, then the sample ``i`` — the order of
:class:`spectral.operators.autodiff.JacobianOperator`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from attncond.models import AttentionBlock, MultiHeadAttention, kernel_variant, key_reference
from attncond.models.checks import check_subset
from attncond.spectral.diagnostics.attention_jacobian import (
    check_mh,
    closed_form_kernel,
    logit_weights,
    temperature,
)
from attncond.spectral.operators.autodiff import JacobianOperator, jacobian_gram
from attncond.spectral.operators.gram import gram_matrix as symmetric_gram
from attncond.spectral.results import to_jsonable


def B0(model: MultiHeadAttention, X: Any) -> torch.Tensor:
    r"""``B0 ∈ R^{Nn×HD}``: row ``(i, a)`` is ``[(S_i1 X_i)_a, …, (S_iH X_i)_a]`` (MATH.md §4).

    Evaluated at the model's current weights (pass the model at initialisation for the
    [S24] ``B0``). ``rank(B0) ≤ min(Nn, HD)``; full row rank needs ``HD ≥ Nn``.
    """
    model = check_mh(model)
    Xt = model.check_inputs(X)
    N, n, _ = Xt.shape
    with torch.no_grad():
        return check_formed("B0", model.weighted_inputs(Xt).reshape(N * n, model.H * model.D))


def check_formed(name: str, M: torch.Tensor) -> torch.Tensor:
    """``M`` if finite, else ``OverflowError`` naming it: finite inputs whose products overflow the dtype."""
    if bool(torch.isfinite(M).all()):
        return M
    raise OverflowError(f"{name} overflows in {M.dtype}: {int((~torch.isfinite(M)).sum())} of {M.numel()} "
                        f"entries are inf/NaN for finite inputs (products beyond "
                        f"{torch.finfo(M.dtype).max:.3g}); scale the inputs X down")

def B0_gram(model: MultiHeadAttention, X: Any) -> torch.Tensor:
    """``B0 B0ᵀ ∈ R^{Nn×Nn}`` (symmetrised), whose ``λ_min`` is ``σ²_min(B0ᵀ)``."""
    B = B0(model, X)
    G = B @ B.T
    return 0.5 * (G + G.T)

@dataclass(frozen=True, repr=False)
class NTKGram:
    """The empirical NTK Gram ``G = J Jᵀ`` and how it was computed.

    ``gram``: ``(m, m)`` tensor, ``m = N·n·d_out``, outputs ordered ``(i, a, o)``.
    ``route``: ``"structured"`` (closed form, no Jacobian) or ``"vjp"`` (batched VJPs
    through :func:`spectral.operators.autodiff.jacobian_gram`; ``reason`` says why).
    ``parts``: per-weight-group contributions ``J_W J_Wᵀ`` when requested.
    """

    gram: torch.Tensor
    route: str
    trainable: tuple[str, ...]
    kernel: str
    n_outputs: int
    n_params: int
    seconds: float
    reason: str | None = None
    parts: dict[str, torch.Tensor] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "route": self.route, "trainable": list(self.trainable), "kernel": self.kernel,
            "n_outputs": self.n_outputs, "n_params": self.n_params, "seconds": self.seconds,
            "reason": self.reason, "parts": sorted(self.parts),
        })

    def __repr__(self) -> str:
        s = (f"NTKGram(shape={tuple(self.gram.shape)}, route={self.route!r}, kernel={self.kernel!r}, "
             f"trainable={self.trainable}, n_params={self.n_params}, seconds={self.seconds:.3g}")
        return s + (f", reason={self.reason!r})" if self.reason else ")")

#: factors at least this wide get BLAS syrk (spectral.operators.gram) in the closed-form Gram
SYRK_MIN_COLS = 2048

def _kron_last(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A ⊗ B`` with ``B``'s index fastest (``torch.kron``), skipping the copy for 1×1 ``B``."""
    if B.shape == (1, 1):
        return A * B[0, 0]
    return torch.kron(A, B)

def _rep(A: torch.Tensor, d_out: int) -> torch.Tensor:
    """Repeat the rows of a token-indexed ``(T, k)`` matrix ``d_out`` times (``o`` fastest)."""
    return A if d_out == 1 else A.repeat_interleave(d_out, dim=0)

class _GramSum:
    """``G = Σ`` of the per-parameter Gram terms, with the parts kept when asked and reused GEMM buffers."""

    def __init__(self, R: int, dt: torch.dtype, dev: torch.device, want_parts: bool) -> None:
        self.R, self.dt, self.dev, self.want_parts = R, dt, dev, want_parts
        self.G = torch.zeros(R, R, dtype=dt, device=dev)
        self.parts: dict[str, torch.Tensor] = {}
        self.bufs: dict[int, torch.Tensor] = {}  # R×R GEMM outputs, reused (fresh ones page-fault)

    def add(self, name: str, M: torch.Tensor) -> None:
        self.G.add_(M)
        if self.want_parts:
            self.parts[name] = self.parts[name] + M if name in self.parts else M.clone()

    def add_hadamard(self, name: str, A: torch.Tensor, B: torch.Tensor) -> None:
        if self.want_parts:
            self.add(name, A * B)
        else:  # one fused pass over G instead of a product pass and an add pass
            self.G.addcmul_(A, B)

    def gram(self, A: torch.Tensor, slot: int | None = None) -> torch.Tensor:
        """``A Aᵀ``. BLAS syrk (half the flops) only for very wide factors; for these (≤ H·D
        columns) a GEMM, because mirroring syrk's triangle costs about what it saves (1024×128:
        11.5 ms vs 14.7 ms; 8192×64: slower), see spectral.operators.gram. ``slot`` writes the GEMM
        into buffer ``slot``, allocated on first use."""
        if A.shape[1] >= SYRK_MIN_COLS:
            return symmetric_gram(A)
        if slot is None:
            return A @ A.T
        if slot not in self.bufs:
            self.bufs[slot] = torch.empty(self.R, self.R, dtype=self.dt, device=self.dev)
        return torch.mm(A, A.T, out=self.bufs[slot])


def _value_terms(acc: _GramSum, model: MultiHeadAttention, X: torch.Tensor, S: torch.Tensor,
                 trainable: tuple[str, ...]) -> None:
    """The W_V (joint, per-head with d_out = 1) and W_O terms: ``(B Bᵀ) ⊗ (W_Oᵀ W_O)`` and ``(HHᵀ) ⊗ I``."""
    N, n, D = X.shape
    H, d, dout = model.H, model.d, model.d_out
    T = N * n
    if "W_V" in trainable and model.value_param == "joint":
        B = model.weighted_inputs(X).reshape(T, H * D)
        acc.add("W_V", _kron_last(acc.gram(B), model.W_O.T @ model.W_O))
    if "W_O" in trainable:
        Hc = model.heads(X).reshape(T, H * d)
        acc.add("W_O", _kron_last(Hc @ Hc.T, torch.eye(dout, dtype=X.dtype, device=X.device)))
    if "W_V" in trainable and model.value_param == "per_head" and dout == 1:
        # Σ_h ‖W^O_h‖² B_h B_hᵀ = B̃ B̃ᵀ with B̃ = [‖W^O_1‖ B_1, …, ‖W^O_H‖ B_H]: one GEMM
        wn = model.W_O.reshape(H, d).norm(dim=1)  # (H,)
        Bt = (S @ X.unsqueeze(1)) * wn.reshape(1, H, 1, 1)  # (N, H, n, D)
        acc.add("W_V", acc.gram(Bt.permute(0, 2, 1, 3).reshape(T, H * D), 0))


def _key_term_distance(acc: _GramSum, U: torch.Tensor, Qr: torch.Tensor, K: torch.Tensor, W: torch.Tensor,
                       Xt: torch.Tensor) -> torch.Tensor:
    """The W_K Gram term for distance logits: ``∂f/∂k_j = W (q_a − k_j)`` (cross and quadratic terms)."""
    N, n = W.shape[0], W.shape[1]
    R, T = U.shape[0], Xt.shape[0]
    KK = acc.gram(U).mul_(acc.gram(Qr))
    Kt = K.reshape(T, -1)
    M = ((U @ Xt.T) * (Qr @ Kt.T)).reshape(R, N, n)
    cross = torch.einsum("rij,iajo->riao", M, W).reshape(R, R)
    del M
    KK.sub_(cross).sub_(cross.T)
    del cross
    P = ((Xt @ Xt.T) * (Kt @ Kt.T)).reshape(T, N, n).permute(1, 2, 0)  # (N, n, T)
    Y = torch.einsum("iajo,ijt->iaot", W, P).reshape(R, N, n)
    del P
    KK.add_(torch.einsum("rij,iajo->riao", Y, W).reshape(R, R))
    return KK


def _structured_gram(
    model: MultiHeadAttention, X: torch.Tensor, trainable: tuple[str, ...], want_parts: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logit, rowmap = closed_form_kernel(model)  # type: ignore[misc]
    N, n, D = X.shape
    H, d, dout = model.H, model.d, model.d_out
    T, R = N * n, N * n * dout
    tau = temperature(model)
    Xt = X.reshape(T, D)
    acc = _GramSum(R, X.dtype, X.device, want_parts)
    S = model.attention(X)  # (N, H, n, n)
    Xk = key_reference(X, kernel_variant(model.kernel_name, model.kernel_options).form)
    XX = None
    if "W_Q" in trainable:
        XX = _kron_last(acc.gram(Xt), torch.ones(dout, dout, dtype=X.dtype, device=X.device))
    _value_terms(acc, model, X, S, trainable)
    gq: list[torch.Tensor] = []  # per-head g (R, d): Σ_h (XXᵀ)∘(g_h g_hᵀ) = (XXᵀ)∘(Ĝ Ĝᵀ), Ĝ = [g_1 … g_H]
    for h in range(H):
        Sh = S[:, h]  # (N, n, n)
        if "W_V" in trainable and model.value_param == "per_head" and dout > 1:
            Wo = model.W_O[h * d:(h + 1) * d]
            acc.add("W_V", torch.kron(acc.gram((Sh @ X).reshape(T, D)), Wo.T @ Wo))
        if "W_Q" not in trainable and "W_K" not in trainable:
            continue
        W = logit_weights(model, X, Sh, h, rowmap, tau)  # (N, a, j, o)
        Q = X @ model.W_Q[h]
        K = X @ model.W_K[h]
        # Σ_j W_aj = 0 where S is key-shift invariant: the sums over j take token differences (Xk)
        Kk = Xk @ model.W_K[h] if Xk is not X else K
        Qr = _rep(Q.reshape(T, d), dout)
        if "W_Q" in trainable:
            if logit == "dist":  # ∂f/∂q_a = Σ_j W_aj (k_j − q_a), from explicit differences: the expanded
                # W K − (Σ_j W_aj) q_a cancels where S_aj is large, i.e. k_j ≈ q_a (sharp Gaussian rows)
                g = torch.einsum("iajo,iajd->iaod", W, K.unsqueeze(1) - Q.unsqueeze(2))
            else:
                g = torch.einsum("iajo,ijd->iaod", W, Kk)
            gq.append(g.reshape(R, d))
        if "W_K" in trainable:
            U = torch.einsum("iajo,ijD->iaoD", W, Xk).reshape(R, D)
            if logit != "dist":
                acc.add_hadamard("W_K", acc.gram(U, 0), acc.gram(Qr, 1))
            else:
                acc.add("W_K", _key_term_distance(acc, U, Qr, K, W, Xt))
    if gq:
        acc.add_hadamard("W_Q", acc.gram(torch.cat(gq, dim=1), 0), XX)
    del gq
    G = acc.G
    G.add_(G.T.clone()).mul_(0.5)
    return G, acc.parts


def ntk_gram(
    model: Any,
    X: Any,
    trainable: Sequence[str] | None = None,
    *,
    route: str = "auto",
    return_parts: bool = False,
) -> NTKGram:
    r"""Exact empirical NTK Gram ``G = J Jᵀ``, ``J = ∂ vec(model(X))/∂θ_M`` (MATH.md §4).

    Derivation (one head ``h``, one sample; write ``c_j = x_j W^V_h W^O_h ∈ R^{d_out}`` for
    token ``j``'s value after ``W^O`` — ``x_j W^V[hD:(h+1)D] W^O`` for the joint value map —
    so that ``f_{a,o} = Σ_h Σ_j S_{aj} c_{j,o}``). Every supported kernel is a row map ``ψ`` of
    logits ``ℓ_aj``; write ``E_{ajo} = ∂f_{a,o}/∂ℓ_{aj}``:

    * softmax rows (``softmax``, ``temperature``, normalised ``gaussian``):
      ``E_{ajo} = S_aj (c_{j,o} − ō_{a,o})``, ``ō_a = Σ_l S_al c_l`` (the head's output);
    * ``exp`` rows (unnormalised ``gaussian``): ``E_{ajo} = S_aj c_{j,o}``;
    * ``linear``: ``E_{ajo} = c_{j,o}``.

    With ``W = E/τ``:

    * dot logits ``ℓ_aj = q_a·k_j/τ``: ``∂f_{a,o}/∂W^Q_h = x_aᵀ g_{a,o}`` with
      ``g_{a,o} = Σ_j W_{ajo} k_j`` and ``∂f_{a,o}/∂W^K_h = u_{a,o}ᵀ q_a`` with
      ``u_{a,o} = Σ_j W_{ajo} x_j`` — both **rank one** ``D×d``. Since
      ``⟨xᵀg, x'ᵀg'⟩_F = ⟨x,x'⟩⟨g,g'⟩``, their Gram blocks are Hadamard products
      ``(X Xᵀ) ∘ (G Gᵀ)`` and ``(U Uᵀ) ∘ (Q Qᵀ)`` over all outputs (all samples);
    * distance logits ``ℓ_aj = −‖q_a − k_j‖²/(2τ)``: ``g_{a,o} = Σ_j W_{ajo}(k_j − q_a)``
      (still rank one for ``W^Q``) and ``∂f_{a,o}/∂W^K_h = Σ_j W_{ajo} x_jᵀ (q_a − k_j)``,
      whose Gram is ``(UUᵀ)∘(QQᵀ) − C − Cᵀ + Γ((X Xᵀ)∘(K Kᵀ))Γᵀ`` with
      ``C = ((U Xᵀ)∘(Q Kᵀ))Γᵀ`` and ``Γ`` the sample-block-diagonal matrix of ``W``.

    Value and output maps: ``∂f_{a,o}/∂W^V_h = b^h_aᵀ W^O_h[:, o]ᵀ`` with ``B_h = S_h X``, so
    ``J_V J_Vᵀ = Σ_h (B_h B_hᵀ) ⊗ (W^{O}_hᵀ W^O_h)`` (per head) or ``(B0 B0ᵀ) ⊗ (W^{Oᵀ} W^O)``
    (joint), and ``J_O J_Oᵀ = ([heads][heads]ᵀ) ⊗ I``. Different weights are different
    parameters, so ``J Jᵀ`` is the sum of these blocks over heads and weight groups.
    Cost ``O(H (Nn d_out)² (D + d))`` (``+ n`` for the Gaussian ``W^K`` term), memory a few
    ``(Nn d_out)²`` matrices; never ``O((Nn)² · p)``.

    Parameters
    ----------
    model : a :class:`models.MultiHeadAttention` (closed form), or any model with
        ``functional(params, X)`` and ``trainable`` (batched-VJP route).
    X : inputs ``(N, n, D)``.
    trainable : subset of ``("W_Q", "W_K", "W_V", "W_O")``; default the model's own.
    route : ``"auto"`` (closed form when the kernel has one, else VJPs), ``"structured"``
        (error if unavailable) or ``"vjp"``.
    return_parts : also return the per-weight-group blocks (more memory).
    """
    if route not in ("auto", "structured", "vjp"):
        raise ValueError(f"unknown route {route!r}; known: 'auto', 'structured', 'vjp'")
    if not isinstance(return_parts, bool):
        raise TypeError(f"return_parts must be a bool, got {return_parts!r}")
    if not hasattr(model, "functional") or not hasattr(model, "check_inputs"):
        raise TypeError(f"model must be an attncond model with functional(), got {type(model).__name__}")
    named = dict(model.named_parameters())
    train = check_subset("trainable", model.trainable if trainable is None else trainable, tuple(named))
    Xt = model.check_inputs(X)
    t0 = time.perf_counter()
    n_params = sum(named[k].numel() for k in train)
    kernel = getattr(model, "kernel_name", "?")
    reason = None
    structured_ok = isinstance(model, MultiHeadAttention) and closed_form_kernel(model) is not None
    if route == "structured" and not structured_ok:
        raise ValueError(
            f"route='structured': no closed form for kernel {kernel!r} with options "
            f"{getattr(model, 'kernel_options', {})} on {type(model).__name__}; use route='auto'"
        )
    if structured_ok and route != "vjp":
        with torch.no_grad():
            G, parts = _structured_gram(model, Xt, train, return_parts)
        used = "structured"
    else:
        if route == "vjp":
            reason = "route='vjp' requested"
        elif not isinstance(model, MultiHeadAttention):
            reason = f"no closed form for {type(model).__name__}: batched VJPs (jacobian_gram)"
        else:
            reason = f"no closed form for kernel {kernel!r}: batched VJPs (jacobian_gram)"
        params = {k: named[k].detach() for k in train}
        J = JacobianOperator(lambda p: model.functional(p, Xt), params)
        G = jacobian_gram(J, "outer")
        parts = {}
        if return_parts:
            for k in train:
                Jk = JacobianOperator(
                    lambda p, k=k: model.functional({**params, **p}, Xt), {k: params[k]})
                parts[k] = jacobian_gram(Jk, "outer")
        used = "vjp"
    return NTKGram(G, used, train, kernel, int(G.shape[0]), int(n_params),
                   time.perf_counter() - t0, reason, parts)

def attention_output_matrix(block: AttentionBlock, X: Any, residual: bool = True) -> torch.Tensor:
    """``Z = [Z_1; …; Z_N] ∈ R^{Nn×D}``, ``Z_i = A_i X_i W_V (+ X_i)`` ([Q25], MATH.md §4)."""
    if not isinstance(block, AttentionBlock):
        raise TypeError(f"block must be a models.AttentionBlock ([Q25]), got {type(block).__name__}")
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {residual!r}")
    Xt = block.check_inputs(X)
    with torch.no_grad():
        Z = block.attention_output(Xt, residual)
    return check_formed("Z", Z.reshape(-1, block.D))
