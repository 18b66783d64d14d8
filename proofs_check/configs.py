"""Instance records of the theory checks (MATH.md §3): small frozen dataclasses of sizes, scales and
seeds from which a model and its data are built deterministically, so that Hypothesis can shrink them
and a counterexample prints (and saves, :mod:`proofs_check.theorems.replay`) as a readable configuration.

This module imports only ``attncond.models``: both :mod:`proofs_check.strategies` and
:mod:`proofs_check.theorems` build on it, and neither imports the other's registry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attncond.models import AttentionBlock, MultiHeadAttention, synthetic_regression

__all__ = ["AttentionConfig", "BlockConfig", "positive_int", "positive_float"]


def positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {v!r}")
    if v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v}")
    return int(v)


def positive_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {v!r}")
    if not math.isfinite(float(v)) or float(v) <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class AttentionConfig:
    """An [S24] multi-head attention instance (MATH.md §3 "MH") with synthetic data.

    ``X`` has i.i.d. ``N(0, x_scale²)`` entries and ``y`` i.i.d. ``N(0, 1)``
    (:func:`models.synthetic_regression` with ``seed``); the weights come from
    :class:`models.MultiHeadAttention` with the same ``seed`` and ``init_scale`` (the
    ``W_Q``/``W_K`` multiplier: ≪ 1 near-uniform attention, ≫ 1 sharp attention).
    """

    N: int = 2
    n: int = 2
    D: int = 2
    d: int = 1
    H: int = 2
    kernel: str = "softmax"
    value_param: str = "per_head"
    d_out: int = 1
    trainable: tuple[str, ...] = ("W_Q", "W_K", "W_V")
    init_scale: float = 1.0
    x_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("N", "n", "D", "d", "H", "d_out"):
            positive_int(k, getattr(self, k))
        positive_float("init_scale", self.init_scale)
        positive_float("x_scale", self.x_scale)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.trainable, tuple):
            raise TypeError(f"trainable must be a tuple of parameter names, got {self.trainable!r}")

    @property
    def HD(self) -> int:
        return self.H * self.D

    @property
    def Nn(self) -> int:
        return self.N * self.n

    def replace(self, **kw: Any) -> AttentionConfig:
        return dataclasses.replace(self, **kw)

    def build(
        self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
        """``(model, X, y)`` for this configuration (float64 on the CPU by default)."""
        data = synthetic_regression(self.N, self.n, self.D, self.d_out, self.seed, x_scale=self.x_scale,
                                    dtype=dtype, device=device)
        model = MultiHeadAttention(
            self.D, self.d, self.H, kernel=self.kernel, value_param=self.value_param, d_out=self.d_out,
            trainable=self.trainable, init_scale=self.init_scale, dtype=dtype, device=device, seed=self.seed,
        )
        return model, data.X, data.y


@dataclass(frozen=True)
class BlockConfig:
    """A [Q25] single-head block instance (MATH.md §3 "Block") with synthetic data.

    ``init_scale`` multiplies ``W_Q``/``W_K`` (≪ 1: near-uniform attention);
    ``v_scale`` multiplies ``W_V`` (std ``v_scale/√D``).
    """

    N: int = 2
    n: int = 2
    D: int = 2
    d: int = 1
    init_scale: float = 0.01
    v_scale: float = 1.0
    x_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("N", "n", "D", "d"):
            positive_int(k, getattr(self, k))
        for k in ("init_scale", "v_scale", "x_scale"):
            positive_float(k, getattr(self, k))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def replace(self, **kw: Any) -> BlockConfig:
        return dataclasses.replace(self, **kw)

    def build(self, *, residual: bool = True, ffn: bool = False, trainable: Sequence[str] | None = None,
              dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
              **block_kw: Any) -> tuple[AttentionBlock, torch.Tensor, torch.Tensor]:
        """``(block, X, Y)`` with ``Y`` of shape (N, n, D), i.i.d. ``N(0, 1)``."""
        data = synthetic_regression(self.N, self.n, self.D, self.D, self.seed, x_scale=self.x_scale,
                                    dtype=dtype, device=device)
        block = AttentionBlock(self.D, self.d, residual=residual, ffn=ffn, trainable=trainable,
                               init_scale=self.init_scale, dtype=dtype, device=device, seed=self.seed,
                               **block_kw)
        if self.v_scale != 1.0:
            with torch.no_grad():
                block.W_V.mul_(self.v_scale)
        return block, data.X, data.y
