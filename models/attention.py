"""[S24] one-layer multi-head attention (MATH.md §3, "MH").

``head_h = S_ih X_i W^V_h``, ``MH(X_i) = [head_1, …, head_H] W^O`` with
``S_ih = kernel(X_i W^Q_h, X_i W^K_h)``, ``W^Q_h, W^K_h, W^V_h ∈ R^{D×d}``,
``W^O ∈ R^{Hd×d_out}`` and loss ``f = ½ Σ_i ‖MH(X_i) − y_i‖²``.

Two value parameterisations (MATH.md §4, B0):

* ``value_param="per_head"``: ``W_V`` has shape ``(H, D, d)``, one map per head, as in [S24];
* ``value_param="joint"``: ``W_V`` has shape ``(H·D, H·d)`` acting on the row
  ``[S_i1 X_i, …, S_iH X_i]`` of ``B0``. A block-diagonal joint map reproduces
  ``per_head`` exactly; with the joint map ``λ_min(JJᵀ) = σ²_min(W^O)σ²_min(B0)`` holds.

Parameter layouts: ``W_Q``, ``W_K``: ``(H, D, d)``; ``W_O``: ``(H·d, d_out)``, its rows
``h·d:(h+1)·d`` belong to head ``h`` (``W^O_h`` in MATH.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .checks import (
    check_choice,
    check_device,
    check_dtype,
    check_positive_float,
    check_positive_int,
    check_subset,
    check_X,
)
from .init import gaussian_weight, make_generator, regime_scale
from .kernels import check_kernel_options, get_kernel, kernel_variant, key_reference

PARAM_NAMES: tuple[str, ...] = ("W_Q", "W_K", "W_V", "W_O")
VALUE_PARAMS: tuple[str, ...] = ("per_head", "joint")


class MultiHeadAttention(nn.Module):
    """[S24] multi-head attention with a selectable kernel and trainable set.

    Parameters
    ----------
    D, d, H : embedding dimension, head width, number of heads.
    kernel : a name from :data:`models.kernels.KERNELS`.
    value_param : ``"per_head"`` or ``"joint"`` (see module docstring).
    d_out : output width (1 in [S24]).
    trainable : the subset ``M`` of ``("W_Q", "W_K", "W_V", "W_O")`` that gradient
        descent moves; the rest are fixed (``requires_grad=False``). Theorem 1 trains
        ``(W_Q, W_K, W_V)``; Theorem 2 trains ``("W_Q",)``.
    tau : kernel temperature; ``None`` means √d.
    kernel_options : extra keyword arguments for the kernel, e.g. ``{"normalize": True}``.
    regime, init_scale : ``W_Q``/``W_K`` get std ``init_scale·regime_scale(regime)/√D``;
        ``W_V`` std ``1/√D``, ``W_O`` std ``1/√(Hd)``.
    dtype, device, seed : float64 and CPU by default; the seed fixes every weight.
    """

    def __init__(
        self,
        D: int,
        d: int,
        H: int,
        *,
        kernel: str = "softmax",
        value_param: str = "per_head",
        d_out: int = 1,
        trainable: Sequence[str] = ("W_Q", "W_K", "W_V"),
        tau: float | None = None,
        kernel_options: Mapping[str, Any] | None = None,
        regime: str = "default",
        init_scale: float = 1.0,
        dtype: torch.dtype | str = torch.float64,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.D = check_positive_int("D", D)
        self.d = check_positive_int("d", d)
        self.H = check_positive_int("H", H)
        self.d_out = check_positive_int("d_out", d_out)
        self.kernel_name = get_kernel(kernel).name
        self.value_param = check_choice("value_param", value_param, VALUE_PARAMS)
        self.trainable = check_subset("trainable", trainable, PARAM_NAMES)
        self.tau = None if tau is None else check_positive_float("tau", tau)
        self.kernel_options = check_kernel_options(self.kernel_name, kernel_options)
        self.regime = regime
        qk_scale = check_positive_float("init_scale", init_scale) * regime_scale(regime)
        self.dtype = check_dtype(dtype)
        self.device = check_device(device)
        self.seed = seed
        g = make_generator(seed)
        kw = {"generator": g, "dtype": self.dtype, "device": self.device}
        D_, d_, H_ = self.D, self.d, self.H
        tensors = {
            "W_Q": gaussian_weight((H_, D_, d_), scale=qk_scale, **kw),
            "W_K": gaussian_weight((H_, D_, d_), scale=qk_scale, **kw),
            "W_V": (
                gaussian_weight((H_, D_, d_), **kw)
                if self.value_param == "per_head"
                else gaussian_weight((H_ * D_, H_ * d_), fan_in=D_, **kw)
            ),
            "W_O": gaussian_weight((H_ * d_, self.d_out), **kw),
        }
        for name, t in tensors.items():
            self.register_parameter(name, nn.Parameter(t, requires_grad=name in self.trainable))

    # ------------------------------------------------------------------ forward
    def check_inputs(self, X: Any) -> torch.Tensor:
        """Validate and convert inputs ``X`` of shape (N, n, D)."""
        return check_X(X, self.D, dtype=self.dtype, device=self.device)

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """Attention matrices ``S`` of shape (N, H, n, n) at the current weights."""
        return self._attention(self.check_inputs(X))

    def weighted_inputs(self, X: torch.Tensor) -> torch.Tensor:
        """``B = [S_i1 X_i, …, S_iH X_i]`` of shape (N, n, H·D): the rows of B0 (MATH.md §4)."""
        return self._weighted_inputs(self.check_inputs(X))

    def heads(self, X: torch.Tensor) -> torch.Tensor:
        """Concatenated heads ``[head_1, …, head_H]`` of shape (N, n, H·d)."""
        return self._heads(self.check_inputs(X))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``MH(X)`` of shape (N, n, d_out)."""
        return self._heads(self.check_inputs(X)) @ self.W_O

    def _attention(self, X: torch.Tensor) -> torch.Tensor:
        Q = torch.einsum("isD,hDd->ihsd", X, self.W_Q)
        # keys from token differences where S is invariant to a common key shift (kernels.key_reference)
        Xk = key_reference(X, kernel_variant(self.kernel_name, self.kernel_options).form)
        K = torch.einsum("isD,hDd->ihsd", Xk, self.W_K)
        return get_kernel(self.kernel_name)(Q, K, self.tau, **self.kernel_options)

    def _weighted_inputs(self, X: torch.Tensor) -> torch.Tensor:
        SX = self._attention(X) @ X.unsqueeze(1)  # (N, H, n, D)
        return SX.permute(0, 2, 1, 3).reshape(X.shape[0], X.shape[1], self.H * self.D)

    def _heads(self, X: torch.Tensor) -> torch.Tensor:
        if self.value_param == "joint":
            return self._weighted_inputs(X) @ self.W_V
        V = torch.einsum("isD,hDd->ihsd", X, self.W_V)
        out = self._attention(X) @ V  # (N, H, n, d)
        return out.permute(0, 2, 1, 3).reshape(X.shape[0], X.shape[1], self.H * self.d)

    # --------------------------------------------------------------- functional
    def params(self) -> dict[str, torch.Tensor]:
        """Detached copies of the trainable parameters, in the order of ``trainable``."""
        return {k: getattr(self, k).detach().clone() for k in self.trainable}

    def all_params(self) -> dict[str, torch.Tensor]:
        """Detached copies of all four weight tensors."""
        return {k: getattr(self, k).detach().clone() for k in PARAM_NAMES}

    def functional(self, params: Mapping[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        """Outputs with the weights in ``params`` substituted (others as stored).

        A thin wrapper of ``torch.func.functional_call``, so ``jvp``, ``vjp``, ``jacrev``
        and ``vmap`` apply to ``lambda p: model.functional(p, X)``.
        """
        return torch.func.functional_call(self, dict(params), (X,))

    def loss(self, params: Mapping[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor):
        """``f = ½ Σ_i ‖MH(X_i) − y_i‖²`` ([S24])."""
        r = self.functional(params, X) - y.reshape(X.shape[0], X.shape[1], self.d_out)
        return 0.5 * (r * r).sum()

    def extra_repr(self) -> str:
        return (
            f"D={self.D}, d={self.d}, H={self.H}, kernel={self.kernel_name!r}, "
            f"value_param={self.value_param!r}, d_out={self.d_out}, trainable={self.trainable}, "
            f"regime={self.regime!r}, dtype={self.dtype}"
        )
