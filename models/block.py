"""[Q25] one-layer single-head attention block with optional residual and FFN (MATH.md §3).

``A_i = kernel(X_i W_Q, X_i W_K)`` (softmax with τ = √d by default),
``Z_i = A_i X_i W_V (+ X_i if residual)``,
``F_i = φ(Z_i W_1) W_2 (+ Z_i if ffn_residual)``, loss ``½ Σ_i ‖F_i − Y_i‖²_F``.

``W_V ∈ R^{D×D}`` so that the residual is defined; ``W_1 ∈ R^{D×m}``, ``W_2 ∈ R^{m×D}``.
``ffn=False`` makes the block output ``Z``. :class:`Stack` composes blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
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

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "identity": lambda z: z,
}
BLOCK_PARAMS: tuple[str, ...] = ("W_Q", "W_K", "W_V", "W_1", "W_2")


class AttentionBlock(nn.Module):
    """[Q25] attention block.

    Parameters
    ----------
    D, d : embedding dimension and query/key width; ``d_ff`` the FFN width m (default D).
    residual : add ``X`` to the attention output (``Z = A X W_V + X``).
    ffn : append the feed-forward layer; ``ffn_residual`` (default: ``residual``) adds ``Z``.
    activation : ``"relu"``, ``"gelu"``, ``"tanh"`` or ``"identity"``.
    kernel, tau, kernel_options : as in :class:`models.attention.MultiHeadAttention`.
    trainable : subset of ``("W_Q", "W_K", "W_V", "W_1", "W_2")``; default all present.
    regime, init_scale, dtype, device, seed : as in ``MultiHeadAttention``.
    """

    def __init__(
        self,
        D: int,
        d: int,
        *,
        residual: bool = True,
        ffn: bool = True,
        ffn_residual: bool | None = None,
        d_ff: int | None = None,
        activation: str = "relu",
        kernel: str = "softmax",
        tau: float | None = None,
        kernel_options: Mapping[str, Any] | None = None,
        trainable: Sequence[str] | None = None,
        regime: str = "default",
        init_scale: float = 1.0,
        dtype: torch.dtype | str = torch.float64,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.D = check_positive_int("D", D)
        self.d = check_positive_int("d", d)
        self.d_ff = self.D if d_ff is None else check_positive_int("d_ff", d_ff)
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool, got {residual!r}")
        if not isinstance(ffn, bool):
            raise TypeError(f"ffn must be a bool, got {ffn!r}")
        self.residual = residual
        self.ffn = ffn
        self.ffn_residual = residual if ffn_residual is None else bool(ffn_residual)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.kernel_name = get_kernel(kernel).name
        self.tau = None if tau is None else check_positive_float("tau", tau)
        self.kernel_options = check_kernel_options(self.kernel_name, kernel_options)
        present = BLOCK_PARAMS if ffn else BLOCK_PARAMS[:3]
        self.trainable = check_subset("trainable", present if trainable is None else trainable,
                                      present)
        self.regime = regime
        qk_scale = check_positive_float("init_scale", init_scale) * regime_scale(regime)
        self.dtype = check_dtype(dtype)
        self.device = check_device(device)
        self.seed = seed
        g = make_generator(seed)
        kw = {"generator": g, "dtype": self.dtype, "device": self.device}
        tensors = {
            "W_Q": gaussian_weight((self.D, self.d), scale=qk_scale, **kw),
            "W_K": gaussian_weight((self.D, self.d), scale=qk_scale, **kw),
            "W_V": gaussian_weight((self.D, self.D), **kw),
        }
        if ffn:
            tensors["W_1"] = gaussian_weight((self.D, self.d_ff), **kw)
            tensors["W_2"] = gaussian_weight((self.d_ff, self.D), **kw)
        for name, t in tensors.items():
            self.register_parameter(name, nn.Parameter(t, requires_grad=name in self.trainable))

    def check_inputs(self, X: Any) -> torch.Tensor:
        """Validate and convert inputs ``X`` of shape (N, n, D)."""
        return check_X(X, self.D, dtype=self.dtype, device=self.device)

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """``A`` of shape (N, n, n)."""
        return self._attention(self.check_inputs(X))

    def attention_output(self, X: torch.Tensor, residual: bool | None = None) -> torch.Tensor:
        """``Z_i = A_i X_i W_V (+ X_i)``, shape (N, n, D); ``residual`` overrides the block's."""
        X = self.check_inputs(X)
        return self._z(X, self.residual if residual is None else residual)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Block output ``F`` (or ``Z`` when ``ffn=False``), shape (N, n, D)."""
        return self._forward(self.check_inputs(X))

    def _attention(self, X: torch.Tensor) -> torch.Tensor:
        Xk = key_reference(X, kernel_variant(self.kernel_name, self.kernel_options).form)  # see attention.py
        return get_kernel(self.kernel_name)(X @ self.W_Q, Xk @ self.W_K, self.tau,
                                            **self.kernel_options)

    def _z(self, X: torch.Tensor, residual: bool) -> torch.Tensor:
        Z = self._attention(X) @ X @ self.W_V
        return Z + X if residual else Z

    def _forward(self, X: torch.Tensor) -> torch.Tensor:
        Z = self._z(X, self.residual)
        if not self.ffn:
            return Z
        out = ACTIVATIONS[self.activation](Z @ self.W_1) @ self.W_2
        return out + Z if self.ffn_residual else out

    def params(self) -> dict[str, torch.Tensor]:
        """Detached copies of the trainable parameters."""
        return {k: getattr(self, k).detach().clone() for k in self.trainable}

    def functional(self, params: Mapping[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        """Block output with ``params`` substituted (``torch.func.functional_call``)."""
        return torch.func.functional_call(self, dict(params), (X,))

    def loss(self, params: Mapping[str, torch.Tensor], X: torch.Tensor, Y: torch.Tensor):
        """``½ Σ_i ‖F_i − Y_i‖²_F`` ([Q25])."""
        r = self.functional(params, X) - Y
        return 0.5 * (r * r).sum()

    def extra_repr(self) -> str:
        return (
            f"D={self.D}, d={self.d}, residual={self.residual}, ffn={self.ffn}, "
            f"activation={self.activation!r}, kernel={self.kernel_name!r}, regime={self.regime!r}"
        )


class Stack(nn.Module):
    """A multi-layer stack of :class:`AttentionBlock` s, applied in order ([Q25]).

    ``Stack(L, D, d, **block_kwargs)`` builds ``L`` blocks with seeds ``seed, seed+1, …``.
    Parameter names are ``"blocks.<l>.<W>"`` so ``functional_call`` addresses each layer.
    """

    def __init__(self, L: int, D: int, d: int, *, seed: int = 0, **block_kwargs: Any) -> None:
        super().__init__()
        self.L = check_positive_int("L", L)
        self.blocks = nn.ModuleList(
            AttentionBlock(D, d, seed=seed + ell, **block_kwargs) for ell in range(self.L)
        )
        self.D = self.blocks[0].D
        self.dtype = self.blocks[0].dtype
        self.device = self.blocks[0].device

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = self.blocks[0].check_inputs(X)
        for b in self.blocks:
            X = b._forward(X)
        return X

    def params(self) -> dict[str, torch.Tensor]:
        """Trainable parameters of every layer, named ``blocks.<l>.<W>``."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def functional(self, params: Mapping[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self, dict(params), (X,))

    def loss(self, params: Mapping[str, torch.Tensor], X: torch.Tensor, Y: torch.Tensor):
        r = self.functional(params, X) - Y
        return 0.5 * (r * r).sum()
