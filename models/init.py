"""Seeded initialisations, with the attention regimes the theory turns on.

Every weight is drawn from ``N(0, (scale/√fan_in)²)`` on the CPU in float64 from one
``torch.Generator`` seeded by ``seed``, then cast to the requested dtype and device,
so a seed gives the same weights on every device and in both precisions.

Regimes multiply the scale of ``W_Q`` and ``W_K`` only (MATH.md §4, [Q25], [I25]):

* ``"near_uniform"`` (×0.01): logits near 0, attention ≈ (1/n) 1 1ᵀ, rank-one;
* ``"default"`` (×1);
* ``"sharp"`` (×10): large logits, attention close to one-hot (sparse).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .checks import check_choice, check_nonneg_int, check_positive_float

REGIMES: dict[str, float] = {"near_uniform": 1e-2, "default": 1.0, "sharp": 10.0}


def regime_scale(regime: str) -> float:
    """Multiplier for ``W_Q``/``W_K`` in ``regime`` (see :data:`REGIMES`)."""
    check_choice("regime", regime, REGIMES)
    return REGIMES[regime]


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (a non-negative integer)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(check_nonneg_int("seed", seed))
    return g


def gaussian_weight(
    shape: Sequence[int],
    *,
    scale: float = 1.0,
    fan_in: int | None = None,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``N(0, (scale/√fan_in)²)`` entries; ``fan_in`` defaults to ``shape[-2]``."""
    scale = check_positive_float("scale", scale) if scale != 0 else 0.0
    fan = fan_in if fan_in is not None else (shape[-2] if len(shape) >= 2 else 1)
    w = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    return (w * (scale / math.sqrt(fan))).to(dtype=dtype, device=device)
