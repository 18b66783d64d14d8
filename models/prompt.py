"""[I25] prompt-token model (MATH.md §3; **reconstructed**).

One tunable token ``p ∈ R^D``; fixed keys ``K_i = X_i W`` and values ``u_i = X_i v``;
``s_i(p) = softmax(K_i p / τ)``, ``ŷ_i = u_iᵀ s_i(p)`` and
``L(p) = (1/2N) Σ_i (ŷ_i − y_i)²``.

The temperature ``τ`` (default 1, i.e. exactly the reconstructed model) is the knob
that controls attention sparsity in the [I25] experiments: small τ, sparse ``s_i``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .checks import (
    as_float_tensor,
    check_device,
    check_dtype,
    check_positive_float,
    check_positive_int,
    check_X,
)
from .init import gaussian_weight, make_generator
from .stable import stable_softmax


class PromptTokenModel(nn.Module):
    """[I25] prompt tuning of one token against fixed keys and values.

    ``W`` (D×D) and ``v`` (D) are fixed, ``p`` (D) is trained. ``p_scale`` sets the std
    of the initial ``p`` (times 1/√D); larger means sparser attention from the start.
    """

    def __init__(
        self,
        D: int,
        *,
        tau: float = 1.0,
        p_scale: float = 1.0,
        dtype: torch.dtype | str = torch.float64,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.D = check_positive_int("D", D)
        self.tau = check_positive_float("tau", tau)
        self.dtype = check_dtype(dtype)
        self.device = check_device(device)
        self.seed = seed
        g = make_generator(seed)
        kw = {"generator": g, "dtype": self.dtype, "device": self.device}
        self.register_buffer("W", gaussian_weight((self.D, self.D), **kw))
        self.register_buffer("v", gaussian_weight((self.D,), fan_in=self.D, **kw))
        p0 = gaussian_weight((self.D,), scale=check_positive_float("p_scale", p_scale),
                             fan_in=self.D, **kw)
        self.p = nn.Parameter(p0)
        self.trainable = ("p",)

    def check_inputs(self, X: Any) -> torch.Tensor:
        return check_X(X, self.D, dtype=self.dtype, device=self.device)

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """``s_i = softmax(K_i p / τ)``, shape (N, n)."""
        return self._attention(self.check_inputs(X))

    def _attention(self, X: torch.Tensor) -> torch.Tensor:
        return stable_softmax((X @ self.W) @ self.p / self.tau, -1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``ŷ_i = u_iᵀ s_i(p)``, shape (N,)."""
        X = self.check_inputs(X)
        u = X @ self.v
        return (u * self._attention(X)).sum(-1)

    def params(self) -> dict[str, torch.Tensor]:
        return {"p": self.p.detach().clone()}

    def functional(self, params: Mapping[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self, dict(params), (X,))

    def loss(self, params: Mapping[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor):
        """``L(p) = (1/2N) Σ_i (ŷ_i − y_i)²``."""
        y = as_float_tensor("y", y, dtype=self.dtype, device=self.device, ndim=1)
        r = self.functional(params, X) - y
        return 0.5 * (r * r).mean()
