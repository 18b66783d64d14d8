"""Closed-form Jacobians of the attention kernels and of the [S24] model (MATH.md §2-§4).

Everything here is plain, vectorised torch (``einsum`` over samples and heads, no Python
loop over either); it imports torch only, so ``spectral`` diagnostics can use it. Every
formula is checked against ``torch.func.jacrev`` and against a sympy derivation in
``proofs_check.symbolic`` (see ``tests/models/test_derivatives.py``).

Formulas (tokens are rows; ``s = softmax(z)``; τ = √d by default):

* softmax Jacobian ([I25], [H24]; MATH.md §4): ``J(s) = ∂s/∂z = diag(s) − s sᵀ``.
* temperature ([H24]; MATH.md §2): with ``s = softmax(z/τ)`` and ``J_τ = ∂s/∂z = J(s)/τ``,
  ``∂s/∂τ = −J(s) z / τ²`` and
  ``∂J_τ/∂τ = −J(s)/τ² + (diag(ṡ) − ṡ sᵀ − s ṡᵀ)/τ`` with ``ṡ = ∂s/∂τ``.
* Gaussian kernel ([S24] eq. (3)-(4); MATH.md §2): ``S_kj = exp(−‖x_k W_Q − x_j W_K‖²/(2τ))``,
  ``∂S_kj/∂W_Q = −(1/τ) S_kj x_kᵀ (x_k W_Q − x_j W_K)`` and
  ``∂S_kj/∂W_K = +(1/τ) S_kj x_jᵀ (x_k W_Q − x_j W_K)``; with τ = √d the factor is 1/√d.
* [S24] output ``MH(X_i) = Σ_h S_ih U_ih`` with ``U_ih = X_i W^V_h W^O_h`` (per-head values) or
  ``U_ih = X_i W_V[hD:(h+1)D, :] W^O`` (joint values): see :func:`mh_output_jacobian`.

Numerics: wherever a softmax row is nearly one-hot, ``1 − s_i`` and ``U_l − (SU)_k`` cancel. The
code uses the equal forms ``Σ_{j≠i} s_j`` and ``Σ_j S_kj (U_l − U_j)`` (and ``Σ_j s_j (z_i − z_j)``
for ``J z``), which do not. torch's own softmax backward uses the short forms (against 30-digit mpmath
values float64 jacrev through it was off by up to 1e-10 at NormSoftmax points and by 80 % at sharp
softmax rows; float32 lost every digit); the models now differentiate through :mod:`models.stable`,
whose vjp/jvp avoid them as well, so ``jacrev`` and the closed forms agree to rounding
(``tests/models/test_derivatives.py``, ``tests/models/test_stable.py``). Which kernel gets which
formula is read from the kernel registry (``KERNELS[name].form``); a kernel without the
``closed_form_jacobian`` capability is refused with :class:`models.KernelCapabilityError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from .checks import check_choice, check_finite, check_positive_float
from .kernels import KernelCapabilityError, KernelForm, get_kernel

__all__ = [
    "GaussianKernelJacobian",
    "MH_WRT",
    "SOFTMAX_ADJOINTS",
    "gaussian_kernel_jacobian",
    "mh_output_jacobian",
    "softmax_jacobian",
    "softmax_jacobian_tau",
    "softmax_tau_derivative",
]

MH_WRT: tuple[str, ...] = ("W_Q", "W_K", "W_V", "W_O")


def _check_tensor(name: str, t: Any, min_ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(t.shape)}")
    if t.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last dimension, got shape {tuple(t.shape)}")
    check_finite(name, t)
    return t


def softmax_jacobian(s: torch.Tensor) -> torch.Tensor:
    """``J(s) = diag(s) − s sᵀ`` batched over leading dims: ``(..., n) -> (..., n, n)``.

    ``s`` are softmax probabilities (rows of an attention matrix); ``J = ∂softmax(z)/∂z``
    evaluated at ``s = softmax(z)`` (MATH.md §4, [I25], [H24]). Rows of ``s`` are taken to sum
    to 1: the diagonal ``s_i(1 − s_i)`` is evaluated as ``s_i Σ_{j≠i} s_j``, so ``J 1 = 0`` to rounding.
    """
    s = _check_tensor("s", s, 1)
    # Off the diagonal −s_i s_j; on it s_i (1 − s_i) evaluated as s_i Σ_{j≠i} s_j (equal since Σ_j s_j = 1).
    # When s_i ≈ 1 (sharp attention) 1 − s_i cancels: in float32 at logits ~30 it kept no digit of the
    # diagonal (normwise error 0.72 against float64; torch's softmax backward, i.e. jacrev, does the same),
    # while the sum of the other probabilities is exact to rounding.
    eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
    others = s @ (1.0 - eye)  # Σ_{j≠i} s_j, the weight of s_i exactly 0
    return torch.diag_embed(s * others) - (s.unsqueeze(-1) * s.unsqueeze(-2)) * (1.0 - eye)


def _tau_parts(z: torch.Tensor, tau: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    z = _check_tensor("z", z, 1)
    t = check_positive_float("tau", tau)
    s = torch.softmax(z / t, dim=-1)
    J = softmax_jacobian(s)
    # (J z)_i = s_i Σ_j s_j (z_i − z_j): pairwise differences, no cancellation when s is nearly one-hot
    # (the short s ⊙ (z − ⟨s, z⟩) loses every digit there; the j = i term is exactly 0 here).
    Jz = s * (s.unsqueeze(-2) * (z.unsqueeze(-1) - z.unsqueeze(-2))).sum(-1)
    s_dot = -Jz / (t * t)
    return s, J, s_dot, t


def softmax_tau_derivative(z: torch.Tensor, tau: float) -> torch.Tensor:
    """``∂ softmax(z/τ)/∂τ = −J(s) z / τ²`` with ``s = softmax(z/τ)``: ``(..., n) -> (..., n)`` ([H24])."""
    return _tau_parts(z, tau)[2]


def softmax_jacobian_tau(z: torch.Tensor, tau: float) -> torch.Tensor:
    """``∂J_τ/∂τ`` where ``J_τ = ∂ softmax(z/τ)/∂z = J(s)/τ``: ``(..., n) -> (..., n, n)`` ([H24]).

    ``∂J_τ/∂τ = −J(s)/τ² + (diag(ṡ) − ṡ sᵀ − s ṡᵀ)/τ`` with ``ṡ = ∂s/∂τ = −J(s) z/τ²``.
    It makes the temperature dependence of the softmax preconditioner explicit (MATH.md §2).
    """
    s, J, s_dot, t = _tau_parts(z, tau)
    dJ = torch.diag_embed(s_dot) - s_dot.unsqueeze(-1) * s.unsqueeze(-2) - s.unsqueeze(-1) * s_dot.unsqueeze(-2)
    return -J / (t * t) + dJ / t


class GaussianKernelJacobian(NamedTuple):
    """``∂S/∂W_Q`` and ``∂S/∂W_K`` of the Gaussian kernel, each of shape ``(..., n, n, D, d)``."""

    dS_dWQ: torch.Tensor
    dS_dWK: torch.Tensor


def gaussian_kernel_jacobian(
    Q: torch.Tensor, K: torch.Tensor, X: torch.Tensor, tau: float | None = None
) -> GaussianKernelJacobian:
    """Closed-form Jacobian of the unnormalised Gaussian kernel ([S24] eq. (3)-(4), MATH.md §2).

    ``Q = X W_Q`` and ``K = X W_K`` have shape ``(..., n, d)``, ``X`` has shape ``(..., n, D)``
    and broadcasts against them (e.g. ``X[:, None]`` against per-head ``Q`` of shape
    ``(N, H, n, d)``). With ``S_kj = exp(−‖q_k − k_j‖²/(2τ))`` and τ = √d by default:

    ``∂S_kj/∂(W_Q)_ab = −(1/τ) S_kj X_ka (q_k − k_j)_b``,
    ``∂S_kj/∂(W_K)_ab = +(1/τ) S_kj X_ja (q_k − k_j)_b``.

    Returns both as ``(..., n, n, D, d)`` tensors, the layout ``torch.func.jacrev`` gives for
    ``W ↦ S`` with ``W`` of shape ``(D, d)``.
    """
    Q = _check_tensor("Q", Q, 2)
    K = _check_tensor("K", K, 2)
    X = _check_tensor("X", X, 2)
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"Q and K must share the head width d, got {Q.shape[-1]} and {K.shape[-1]}")
    if not (Q.shape[-2] == K.shape[-2] == X.shape[-2]):
        raise ValueError(f"Q, K and X must have the same number of tokens n, got shapes "
                         f"{tuple(Q.shape)}, {tuple(K.shape)}, {tuple(X.shape)}")
    if not (Q.dtype == K.dtype == X.dtype):
        raise TypeError(f"Q, K and X must share a dtype, got {Q.dtype}, {K.dtype}, {X.dtype}")
    t = math.sqrt(Q.shape[-1]) if tau is None else check_positive_float("tau", tau)
    diff = Q.unsqueeze(-2) - K.unsqueeze(-3)  # (..., n, n, d): q_k - k_j
    S = torch.exp(-(diff * diff).sum(-1) / (2.0 * t))  # (..., n, n)
    Sd = (S.unsqueeze(-1) * diff) / t  # (..., k, j, d)
    dQ = -Sd.unsqueeze(-2) * X.unsqueeze(-2).unsqueeze(-1)  # X_ka
    dK = Sd.unsqueeze(-2) * X.unsqueeze(-3).unsqueeze(-1)  # X_ja
    return GaussianKernelJacobian(dQ, dK)


# ------------------------------------------------------------------ [S24] output Jacobian
def _weights(model: Any, params: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    W = {k: getattr(model, k).detach() for k in MH_WRT}
    if params is not None:
        if not isinstance(params, Mapping):
            raise TypeError("params must be a mapping from weight names to tensors, "
                            f"got {type(params).__name__}")
        for k, v in params.items():
            check_choice("params key", k, MH_WRT)
            if not isinstance(v, torch.Tensor) or v.shape != W[k].shape:
                raise ValueError(f"params[{k!r}] must be a tensor of shape {tuple(W[k].shape)}, "
                                 f"got {getattr(v, 'shape', type(v).__name__)}")
            W[k] = v.detach()
    return W


def _kernel_form(model: Any) -> tuple[KernelForm, dict[str, Any]]:
    """The registry's form of the model's kernel, with its options; refuses kernels without a closed form."""
    kern = get_kernel(model.kernel_name)
    form = kern.require("closed_form_jacobian", "mh_output_jacobian")
    opts = dict(model.kernel_options)
    bad = kern.unknown_options(opts)
    if bad:
        raise ValueError(f"mh_output_jacobian: kernel option {bad[0]!r} is not supported for kernel "
                         f"{model.kernel_name!r}; supported: {list(kern.options)}")
    form = kern.variant(opts).form
    assert form is not None  # guaranteed by Kernel.__post_init__ for closed_form_jacobian
    return form, opts


SOFTMAX_ADJOINTS: tuple[str, ...] = ("pairwise", "short")


def _row_softmax_adjoint(S: torch.Tensor, U: torch.Tensor, form: str = "pairwise") -> torch.Tensor:
    """``G_klo = Σ_j U_jo ∂S_kj/∂L_kl = S_kl (U_lo − (S U)_ko)`` for a row softmax ``S = softmax(L)``.

    Evaluated as ``S_kl Σ_j S_kj (U_lo − U_jo)`` (equal because ``Σ_j S_kj = 1``). The short form
    ``U_lo − (S U)_ko`` cancels catastrophically when row ``k`` is nearly one-hot (``S_kk ≈ 1``):
    its rounding error is ``ε‖U‖`` against a true value of order ``(1 − S_kk)‖U‖``. In float32 at
    a sharp NormSoftmax point (``tests/models/test_derivatives.py``, seed 147) that cost 26 % of
    normwise accuracy, in ``torch.func.jacrev`` as well, which uses the short form; the pairwise
    differences have no such cancellation (the ``j = l`` term is exactly 0). ``form="short"``
    keeps the short form, i.e. autograd's rounding, for checks at the level of rounding.
    """
    if form == "short":
        return S.unsqueeze(-1) * (U.unsqueeze(-3) - (S @ U).unsqueeze(-2))
    dU = U.unsqueeze(-2) - U.unsqueeze(-3)  # (..., l, j, o): U_lo − U_jo
    return S.unsqueeze(-1) * torch.einsum("...kj,...ljo->...klo", S, dU)


def mh_output_jacobian(
    model: Any,
    X: Any,
    wrt: str,
    params: Mapping[str, torch.Tensor] | None = None,
    *,
    softmax_adjoint: str = "pairwise",
) -> torch.Tensor:
    """Dense Jacobian of ``MH(X)`` (shape ``(N, n, d_out)``) w.r.t. one weight of a ``MultiHeadAttention``.

    The layout is that of ``torch.func.jacrev(lambda W: model.functional({wrt: W}, X))(W)``:
    ``(N, n, d_out, *W.shape)``, e.g. ``(N, n, d_out, H, D, d)`` for ``W_Q``. ``params`` may
    substitute any of the four weights (others as stored). All four kernels families of
    MATH.md §2 are supported: softmax/temperature, gaussian (``normalize`` on or off), linear,
    normsoftmax/normsoftmax_std (``unbiased``, ``detach_scale``).

    Derivation ([S24], MATH.md §3): ``MH(X_i) = Σ_h S_ih U_ih``. With ``L_ih`` the
    pre-activation of the kernel (logits ``QKᵀ/τ``, or the Gaussian log kernel) and the
    adjoint ``G_klo = Σ_j U_jo ∂S_kj/∂L_kl`` (``S_kl(U_lo − (SU)_ko)`` for a row softmax,
    ``S_kl U_lo`` for the unnormalised Gaussian, ``U_lo`` for linear),

    * bilinear logits: ``∂MH_ko/∂(W_Q)_hab = X_ka Σ_l G_klo K_lb / τ``,
      ``∂MH_ko/∂(W_K)_hab = Q_kb Σ_l G_klo X_la / τ``;
    * Gaussian: ``∂MH_ko/∂(W_Q)_hab = −X_ka Σ_l G_klo (q_k − k_l)_b / τ``,
      ``∂MH_ko/∂(W_K)_hab = Σ_l G_klo X_la (q_k − k_l)_b / τ``;
    * NormSoftmax ``softmax(z/m_k)``, ``m_k = min(τ, v_k(z))``: ``G`` is replaced by
      ``G_klo/m_k − [v_k<τ] (∂v_k/∂z_kl) Σ_j G_kjo z_kj / m_k²`` and τ by 1 (clamp gradient
      taken as 0 at ``v_k ≥ τ``, the measure-zero tie ``v_k = τ`` included);
    * per-head values: ``∂MH_ko/∂(W_V)_hab = (S_h X)_ka (W^O_h)_bo``; joint values:
      ``∂MH_ko/∂(W_V)_pq = B_kp W^O_qo``; output: ``∂MH_ko/∂(W_O)_pr = heads_kp δ_or``.

    ``softmax_adjoint`` chooses how the row-softmax adjoint is evaluated: ``"pairwise"``
    (default) as ``S_kl Σ_j S_kj (U_lo − U_jo)``, free of cancellation when attention is sharp;
    ``"short"`` as ``S_kl (U_lo − (SU)_ko)``, the order of torch's softmax backward, so that it
    agrees with ``torch.func.jacrev`` to rounding even where both lose digits. Measured
    (``tests/models/test_derivatives.py``): in float32 at sharp NormSoftmax points ``"pairwise"``
    stays within 1e-5 of a float64 reference where ``"short"`` and ``jacrev`` are off by up to 26 %.
    """
    for attr in ("kernel_name", "value_param", "D", "d", "H", "d_out", "check_inputs", "kernel_options"):
        if not hasattr(model, attr):
            raise TypeError(f"model must be a models.MultiHeadAttention, got {type(model).__name__}")
    wrt = check_choice("wrt", wrt, MH_WRT)
    softmax_adjoint = check_choice("softmax_adjoint", softmax_adjoint, SOFTMAX_ADJOINTS)
    form, opts = _kernel_form(model)
    X = model.check_inputs(X)
    W = _weights(model, params)
    tau = math.sqrt(model.d) if model.tau is None else float(model.tau)
    Q = torch.einsum("isD,hDd->ihsd", X, W["W_Q"])
    K = torch.einsum("isD,hDd->ihsd", X, W["W_K"])
    att = _attention(form, Q, K, tau, opts)
    if wrt in ("W_O", "W_V"):
        return _value_jacobian(model, X, W, att.S, wrt)
    return _query_key_jacobian(model, X, W, form, att, Q, K, tau, wrt, opts, softmax_adjoint)


class _Attention(NamedTuple):
    """The attention matrix and what the NormSoftmax correction needs (``z``, ``v``, ``m``)."""

    S: torch.Tensor
    diff: torch.Tensor | None = None
    z: torch.Tensor | None = None
    v: torch.Tensor | None = None
    m: torch.Tensor | None = None


def _attention(form: KernelForm, Q: torch.Tensor, K: torch.Tensor, tau: float,
               opts: dict[str, Any]) -> _Attention:
    if form.logits == "dist":
        diff = Q.unsqueeze(-2) - K.unsqueeze(-3)  # (N, H, k, l, d)
        L = -(diff * diff).sum(-1) / (2.0 * tau)
        return _Attention(_row_map(form, L), diff=diff)
    if form.logits == "dot":
        return _Attention(_row_map(form, Q @ K.transpose(-1, -2) / tau))
    if form.logits in ("dot_var", "dot_std"):
        z = Q @ K.transpose(-1, -2)
        unbiased = bool(opts.get("unbiased", True))
        if z.shape[-1] < 2 and unbiased:
            raise ValueError("normsoftmax needs n >= 2 keys per row for an unbiased row statistic")
        v = z.var(dim=-1, keepdim=True, unbiased=unbiased) if form.logits == "dot_var" else \
            z.std(dim=-1, keepdim=True, unbiased=unbiased)
        m = torch.clamp(v, max=tau)
        return _Attention(_row_map(form, z / m), z=z, v=v, m=m)
    raise KernelCapabilityError(f"mh_output_jacobian: no closed form for logits {form.logits!r}")


def _row_map(form: KernelForm, L: torch.Tensor) -> torch.Tensor:
    if form.row_map == "softmax":
        return torch.softmax(L, dim=-1)
    if form.row_map == "exp":
        return torch.exp(L)
    if form.row_map == "identity":
        return L
    raise KernelCapabilityError(f"mh_output_jacobian: no closed form for row map {form.row_map!r}")


def _value_jacobian(model: Any, X: torch.Tensor, W: dict[str, torch.Tensor], S: torch.Tensor,
                    wrt: str) -> torch.Tensor:
    """``∂MH/∂W_O`` (heads ⊗ I) or ``∂MH/∂W_V`` ((S X) ⊗ W_O), per-head or joint values."""
    N, n, _ = X.shape
    H, D, d, d_out = model.H, model.D, model.d, model.d_out
    if wrt == "W_O":
        if model.value_param == "joint":
            heads = (S @ X.unsqueeze(1)).permute(0, 2, 1, 3).reshape(N, n, H * D) @ W["W_V"]
        else:
            V = torch.einsum("isD,hDd->ihsd", X, W["W_V"])
            heads = (S @ V).permute(0, 2, 1, 3).reshape(N, n, H * d)
        eye = torch.eye(d_out, dtype=X.dtype, device=X.device)
        return torch.einsum("ikp,or->ikopr", heads, eye)
    WO = W["W_O"]
    B = S @ X.unsqueeze(1)  # (N, H, n, D)
    if model.value_param == "joint":
        Bf = B.permute(0, 2, 1, 3).reshape(N, n, H * D)
        return torch.einsum("ikp,qo->ikopq", Bf, WO)
    return torch.einsum("ihka,hbo->ikohab", B, WO.reshape(H, d, d_out))


def _query_key_jacobian(model: Any, X: torch.Tensor, W: dict[str, torch.Tensor], form: KernelForm,
                        att: _Attention, Q: torch.Tensor, K: torch.Tensor, tau: float, wrt: str,
                        opts: dict[str, Any], softmax_adjoint: str) -> torch.Tensor:
    """``∂MH/∂W_Q`` or ``∂MH/∂W_K`` from the adjoint ``G`` of the kernel (see mh_output_jacobian)."""
    N, n, _ = X.shape
    H, D, d, d_out = model.H, model.D, model.d, model.d_out
    S = att.S
    WO = W["W_O"]
    if model.value_param == "joint":  # U_ih = X_i (value map of head h) W_O
        VO = (W["W_V"] @ WO).reshape(H, D, d_out)
    else:
        VO = torch.einsum("hDd,hdo->hDo", W["W_V"], WO.reshape(H, d, d_out))
    U = torch.einsum("isD,hDo->ihso", X, VO)  # (N, H, n, d_out)
    if form.row_map == "identity":
        G = U.unsqueeze(-3).expand(N, H, n, n, d_out)
    elif form.row_map == "exp":
        G = S.unsqueeze(-1) * U.unsqueeze(-3)
    else:
        G = _row_softmax_adjoint(S, U, softmax_adjoint)
    scale = 1.0 / tau
    if form.logits in ("dot_var", "dot_std"):
        G, scale = _normsoftmax_adjoint(form, att, G, tau, opts), 1.0
    if form.logits == "dist":
        if wrt == "W_Q":
            M = torch.einsum("ihklo,ihklb->ihkob", G, att.diff)
            return -torch.einsum("ika,ihkob->ikohab", X, M) / tau
        GD = G.unsqueeze(-1) * att.diff.unsqueeze(-2)  # (N, H, k, l, o, b)
        return torch.einsum("ihklob,ila->ikohab", GD, X) / tau
    if wrt == "W_Q":
        M = torch.einsum("ihklo,ihlb->ihkob", G, K)
        return torch.einsum("ika,ihkob->ikohab", X, M) * scale
    P = torch.einsum("ihklo,ila->ihkoa", G, X)
    return torch.einsum("ihkoa,ihkb->ikohab", P, Q) * scale


def _normsoftmax_adjoint(form: KernelForm, att: _Attention, G: torch.Tensor, tau: float,
                         opts: dict[str, Any]) -> torch.Tensor:
    """``G/m_k − [v_k<τ] (∂v_k/∂z_kl) Σ_j G_kjo z_kj / m_k²`` for ``softmax(z/m)``, ``m = min(τ, v(z))``."""
    z, v, m = att.z, att.v, att.m
    if opts.get("detach_scale", False):
        return G / m.unsqueeze(-1)
    n = z.shape[-1]
    dof = n - 1 if bool(opts.get("unbiased", True)) else n
    zc = z - z.mean(dim=-1, keepdim=True)
    dv = 2.0 * zc / dof if form.logits == "dot_var" else zc / (dof * v)  # ∂v_k/∂z_kl
    active = (v < tau).to(z.dtype)  # (N, H, k, 1)
    Gz = torch.einsum("ihklo,ihkl->ihko", G, z)
    corr = (active / (m * m)).unsqueeze(-1) * dv.unsqueeze(-1) * Gz.unsqueeze(-2)
    return G / m.unsqueeze(-1) - corr
