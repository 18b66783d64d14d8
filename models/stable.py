"""Cancellation-free autograd for softmax, scaled softmax and the Gaussian kernel (MATH.md §2, §4).

torch's softmax backward evaluates ``s ∘ (g − ⟨s, g⟩)``. On a nearly one-hot row (``s_m ≈ 1``)
the entry ``g_m − ⟨s, g⟩`` is of order ``(1 − s_m)‖g‖`` but is formed as the difference of two
numbers of order ``‖g‖``: its rounding error ``ε‖g‖`` is amplified by ``1/(1 − s_m)``, which at
sharp attention is ``1e20`` and more, so Jacobian products through a model lose every digit (an
[S24] model at ``regime="sharp"`` had ``σ_max(J)`` off by 45 %; see ``tests/models/test_stable.py``).

The functions here are ``torch.autograd.Function`` s with the same forward values as torch and
vjp/jvp evaluated in a form without that cancellation:

* **centring.** ``v − ⟨s, v⟩ = (v − v_m 1) − ⟨s, v − v_m 1⟩`` with ``m = argmax s`` (equal because
  ``Σ_j s_j = 1``). Entry ``m`` becomes ``−Σ_{j≠m} s_j (v_j − v_m)``: a sum over the small
  probabilities only, accurate to a few ε relative to ``Σ_{j≠m} s_j |v_j − v_m|`` (the pairwise
  form ``Σ_j s_j (v_i − v_j)`` has the same bound). Every other entry has error at most
  ``ε(|v_i − v_m| + Σ_j s_j |v_j − v_m|)``, within a factor ``1 + 2/s_m ≤ 1 + 2n`` of the pairwise
  bound (and ``≤ 3`` on sharp rows), at O(n) instead of O(n²) work and memory per row.
* **softmax** ``s = softmax(x)``: ``J v = Jᵀ v = s ∘ softmax_centred(s, v)``.
* **scaled softmax** ``s = softmax(x / t)`` with a tensor ``t`` (temperature, NormSoftmax's
  ``min(τ, var)``): ``∂/∂x = J/t`` and the ``t``-derivative ``−Σ_j (J g)_j (x_j − x_m) / t²``, using
  ``Σ_j (J g)_j = 0`` to shift ``x`` by its row maximum (no cancellation from a common offset of the
  logits); in the jvp the tangent ``ẋ/t − (x − x_m) ṫ/t²`` is centred, which drops the same offset.
* **Gaussian kernel** ``L_kj = −‖q_k − k_j‖²/(2τ)``, ``S = exp(L)`` or ``softmax_row(L)``: with the
  adjoint ``A = S ∘ G`` (resp. ``S ∘ softmax_centred(S, G)``), ``∂/∂q_k = −(1/τ) Σ_j A_kj (q_k − k_j)`` and
  ``∂/∂k_j = (1/τ) Σ_k A_kj (q_k − k_j)``, from the explicit differences; for the normalised kernel
  ``Σ_j A_kj = 0`` turns the first into ``−(1/τ) Σ_j A_kj (k_m − k_j)`` (``m`` the row's argmax).

Higher derivatives: each backward is written with differentiable torch operations on the saved
output (itself an output of the same Function), so double backward, ``torch.func.hessian`` and
forward-over-reverse products use the same stable forms at every order. Every Function has a
``jvp`` and ``generate_vmap_rule = True``, so ``torch.func.jvp/vjp/jacrev/jacfwd/hessian/vmap``
apply. The rewritten forms equal the textbook ones on the probability simplex, and so do their
derivatives along it: the difference is a multiple of ``1 − Σ_j s_j``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["stable_gaussian_kernel", "stable_softmax", "stable_scaled_softmax", "softmax_centred"]


def softmax_centred(s: torch.Tensor, v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``v − ⟨s, v⟩`` along ``dim``, evaluated as ``(v − v_m) − ⟨s, v − v_m⟩`` with ``m = argmax s``.

    ``s`` are probabilities along ``dim`` (summing to 1); equal to the textbook form then, and free of
    its cancellation at nearly one-hot rows (module docstring).
    """
    m = s.argmax(dim, keepdim=True)
    w = v - torch.take_along_dim(v, m, dim)
    return w - (s * w).sum(dim, keepdim=True)


def _shift(x: torch.Tensor, s: torch.Tensor, dim: int) -> torch.Tensor:
    """``x − x_m`` along ``dim`` with ``m = argmax s`` (the row maximum of the logits)."""
    return x - torch.take_along_dim(x, s.argmax(dim, keepdim=True), dim)


class _Softmax(torch.autograd.Function):
    """``softmax(x)`` along ``dim`` with cancellation-free vjp and jvp."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.softmax(x, dim)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (s,) = ctx.saved_tensors
        return s * softmax_centred(s, g, ctx.dim), None

    @staticmethod
    def jvp(ctx: Any, x_dot: torch.Tensor, _dim_dot: Any) -> torch.Tensor:
        (s,) = ctx.saved_tensors
        return s * softmax_centred(s, x_dot, ctx.dim)


class _ScaledSoftmax(torch.autograd.Function):
    """``softmax(x / t)`` along ``dim`` for a tensor ``t`` broadcastable to ``x``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, t: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.softmax(x / t, dim)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, t, dim = inputs
        ctx.dim = dim
        ctx.save_for_backward(x, t, output)
        ctx.save_for_forward(x, t, output)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, t, s = ctx.saved_tensors
        gbar = s * softmax_centred(s, g, ctx.dim)  # ∂/∂(x/t)
        grad_x = gbar / t
        # ∂/∂t = −Σ gbar ∘ x / t², with x shifted by its row maximum (Σ_j gbar_j = 0)
        grad_t = -(gbar * _shift(x, s, ctx.dim)).sum(ctx.dim, keepdim=True) / (t * t)
        return grad_x, grad_t.sum_to_size(t.shape), None

    @staticmethod
    def jvp(ctx: Any, x_dot: torch.Tensor, t_dot: torch.Tensor, _dim_dot: Any) -> torch.Tensor:
        x, t, s = ctx.saved_tensors
        u = x_dot / t
        if t_dot is not None:
            u = u - _shift(x, s, ctx.dim) * (t_dot / (t * t))
        return s * softmax_centred(s, u, ctx.dim)


def _check_dim(x: Any, dim: Any) -> int:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {dim!r}")
    if x.ndim == 0 or not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim={dim} is out of range for x of shape {tuple(x.shape)}")
    return dim % x.ndim


def stable_softmax(x: torch.Tensor, dim: int = -1, *, tau: float | torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(x / τ)`` along ``dim``: torch's values, cancellation-free derivatives (MATH.md §4).

    A drop-in for ``torch.softmax(x, dim)`` in a user's own model: the forward is torch's max-shifted
    softmax; vjp, jvp and every higher derivative use ``J v = s ∘ ((v − v_m) − ⟨s, v − v_m⟩)``,
    ``m = argmax s`` (module docstring), which stays accurate on nearly one-hot rows where torch's
    ``s ∘ (g − ⟨s, g⟩)`` loses every digit. Works under ``torch.func`` (jvp, vjp, jacrev, jacfwd,
    hessian, vmap).

    Parameters
    ----------
    x : floating-point tensor of logits.
    dim : the dimension that sums to 1.
    tau : optional temperature: a number > 0, or a tensor broadcastable to ``x`` with size 1 along
        ``dim`` (differentiable: ``∂s/∂τ = −J(s) x / τ²``, evaluated with ``x`` shifted by its row
        maximum).

    Returns
    -------
    Tensor of the shape of ``x``.

    Examples
    --------
    >>> import torch
    >>> from attncond.models import stable_softmax
    >>> z = torch.tensor([60.0, 0.0, -5.0], dtype=torch.float64, requires_grad=True)
    >>> (g,) = torch.autograd.grad(stable_softmax(z)[0], z)
    >>> float(g[0])  # s_0 (1 − s_0) ≈ e^-60 + e^-65; torch.softmax gives 0.0 here
    8.81551166811249e-27
    """
    dim = _check_dim(x, dim)
    if tau is None:
        return _Softmax.apply(x, dim)
    if isinstance(tau, torch.Tensor):
        if tau.ndim > x.ndim or (tau.ndim == x.ndim and tau.shape[dim] != 1) or not tau.is_floating_point():
            raise ValueError(f"tau must be a floating-point tensor broadcastable to x with size 1 along dim "
                             f"{dim}, got shape {tuple(tau.shape)} for x of shape {tuple(x.shape)}")
        return _ScaledSoftmax.apply(x, tau, dim)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0 or tau == float("inf"):
        raise ValueError(f"tau must be a finite number > 0 or a tensor, got {tau!r}")
    return _Softmax.apply(x / float(tau), dim)


def stable_scaled_softmax(x: torch.Tensor, t: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``softmax(x / t)`` for a tensor ``t`` (e.g. NormSoftmax's ``min(τ, var_row)``), stable in x and t."""
    return stable_softmax(x, dim, tau=t)


class _Gaussian(torch.autograd.Function):
    """``S = exp(L)`` or ``softmax_row(L)``, ``L_kj = −‖q_k − k_j‖²/(2τ)``, ``Q, K``: ``(..., n, d)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(Q: torch.Tensor, K: torch.Tensor, tau: float, normalize: bool) -> torch.Tensor:
        diff = Q.unsqueeze(-2) - K.unsqueeze(-3)
        L = -(diff * diff).sum(-1) / (2.0 * tau)
        return torch.softmax(L, -1) if normalize else torch.exp(L)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        Q, K, tau, normalize = inputs
        ctx.tau, ctx.normalize = tau, normalize
        ctx.save_for_backward(Q, K, output)
        ctx.save_for_forward(Q, K, output)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        Q, K, S = ctx.saved_tensors
        diff = Q.unsqueeze(-2) - K.unsqueeze(-3)  # (..., k, j, d): q_k − k_j
        if ctx.normalize:
            A = S * softmax_centred(S, g, -1)
            # Σ_j A_kj = 0: Σ_j A_kj (q_k − k_j) = Σ_j A_kj (k_m − k_j), m = argmax_j S_kj
            lever = _nearest(K, S).unsqueeze(-2) - K.unsqueeze(-3)
            grad_Q = -(A.unsqueeze(-1) * lever).sum(-2) / ctx.tau
        else:
            A = S * g
            grad_Q = -(A.unsqueeze(-1) * diff).sum(-2) / ctx.tau
        grad_K = (A.unsqueeze(-1) * diff).sum(-3) / ctx.tau
        return grad_Q, grad_K, None, None

    @staticmethod
    def jvp(ctx: Any, Q_dot: torch.Tensor | None, K_dot: torch.Tensor | None, _t: Any, _n: Any) -> torch.Tensor:
        Q, K, S = ctx.saved_tensors
        diff = Q.unsqueeze(-2) - K.unsqueeze(-3)
        # L̇_kj = −(1/τ) (q_k − k_j)·(q̇_k − k̇_j); for the normalised kernel (q_k − k_j)·q̇_k is replaced by
        # (k_m − k_j)·q̇_k, which differs by a constant of row k that the centring removes exactly
        Ld = torch.zeros_like(S)
        if Q_dot is not None:
            lever = _nearest(K, S).unsqueeze(-2) - K.unsqueeze(-3) if ctx.normalize else diff
            Ld = Ld - (lever * Q_dot.unsqueeze(-2)).sum(-1)
        if K_dot is not None:
            Ld = Ld + (diff * K_dot.unsqueeze(-3)).sum(-1)
        Ld = Ld / ctx.tau
        return S * softmax_centred(S, Ld, -1) if ctx.normalize else S * Ld


def _nearest(K: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """``k_m`` for each row ``k`` of ``S``, ``m = argmax_j S_kj``: shape ``(..., n, d)``."""
    return torch.take_along_dim(K, S.argmax(-1, keepdim=True), -2)


def stable_gaussian_kernel(
    Q: torch.Tensor, K: torch.Tensor, tau: float, normalize: bool = False
) -> torch.Tensor:
    """``exp(−‖q_k − k_j‖²/(2τ))`` (or its row softmax) with cancellation-free derivatives ([S24] eq. (3)-(4)).

    ``Q, K`` of shape ``(..., n, d)``, ``tau`` a number > 0; the value is that of
    :func:`models.kernels.gaussian`. Derivatives from the explicit differences ``q_k − k_j``
    (module docstring).
    """
    return _Gaussian.apply(Q, K, float(tau), bool(normalize))
