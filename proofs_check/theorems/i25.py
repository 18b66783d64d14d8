"""[I25] claims on the softmax Jacobian ``J(s) = diag(s) − s sᵀ`` (MATH.md §4 "Softmax Jacobian", §5.1).

* ``I25.interlacing`` (exact) — for a probability vector ``s`` with ``s > 0``:
  ``0 = λ_1 ≤ s_(1) ≤ λ_2 ≤ … ≤ λ_n ≤ s_(n)``, ``J 1 = 0`` and ``rank J ≤ n − 1``.
* ``I25.sparsity`` (exact) — if ``k ≥ 2`` coefficients are ``≤ ε``, at least ``k − 1`` non-zero
  eigenvalues of ``J`` are ``≤ ε`` (so sparse attention makes ``J`` ill-conditioned on ``1^⊥``).

Eigenvalues by ``torch.linalg.eigvalsh`` in float64 (backward stable: absolute error
``O(n·eps·‖J‖)``). Both claims use the rounding tolerance ``tol = 8·n·eps·s_(n)``; "non-zero"
means ``> tol``, and ``s > 0`` is read as ``min s > tol`` (resolvable in floating point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import EPS64, Assumption, Conclusion, Theorem, relu_margin

__all__ = ["ProbabilityInstance", "InterlacingTheorem", "SparsityTheorem", "softmax_jacobian", "THEOREMS"]


@dataclass(frozen=True)
class ProbabilityInstance:
    """A vector ``s`` (tuple of floats), and for ``I25.sparsity`` a threshold ``eps`` and a count ``k``."""

    s: tuple[float, ...]
    eps: float = 0.0
    k: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.s, tuple) or len(self.s) < 2:
            raise ValueError(f"s must be a tuple of at least 2 numbers, got {self.s!r}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.s):
            raise ValueError("s must hold finite numbers")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ValueError(f"k must be a non-negative integer, got {self.k!r}")

    @property
    def n(self) -> int:
        return len(self.s)

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.s, dtype=torch.float64)


def softmax_jacobian(s: torch.Tensor) -> torch.Tensor:
    """``J(s) = diag(s) − s sᵀ`` (MATH.md §4)."""
    return torch.diag(s) - torch.outer(s, s)


def _tol(s: torch.Tensor) -> float:
    return 8 * s.numel() * EPS64 * float(s.abs().max())


def _prob_assumptions(inst: ProbabilityInstance) -> list[Assumption]:
    s = inst.tensor()
    tol = _tol(s)
    total = float(s.sum())
    return [
        Assumption("sum(s) = 1 (within tol)", abs(total - 1.0) <= tol, total),
        Assumption("s > 0 (min s > tol)", float(s.min()) > tol, float(s.min())),
    ]


@dataclass(frozen=True, repr=False)
class InterlacingTheorem(Theorem):
    """``I25.interlacing``: eigenvalues of ``J(s)`` interlace the sorted ``s``; ``J1 = 0``; rank ≤ n − 1."""

    def assumptions(self, inst: ProbabilityInstance) -> list[Assumption]:
        return _prob_assumptions(inst)

    def conclusion(self, inst: ProbabilityInstance) -> Conclusion:
        s = inst.tensor()
        n = s.numel()
        J = softmax_jacobian(s)
        lam = torch.linalg.eigvalsh(J)
        ss = torch.sort(s).values
        tol = _tol(s)
        slacks = {"lambda_1 = 0": tol - abs(float(lam[0]))}
        chain = [float(ss[i] - lam[i]) for i in range(n)] + [float(lam[i + 1] - ss[i]) for i in range(n - 1)]
        slacks["interlacing"] = min(chain) + tol
        slacks["J 1 = 0"] = tol - float((J @ torch.ones_like(s)).abs().max())
        rank = int(torch.linalg.matrix_rank(J, atol=tol))
        slacks["rank <= n-1"] = tol if rank <= n - 1 else -tol
        worst = min(slacks, key=slacks.get)
        scale = max(float(ss[-1]), 1e-300)
        margin = relu_margin(slacks[worst] / scale)
        return Conclusion(margin >= 0, margin, {
            "eigenvalues": lam.tolist(), "sorted_s": ss.tolist(), "rank": rank, "tol": tol,
            "tightest": worst, "slacks": slacks,
        })

    def violating_instance(self) -> ProbabilityInstance:
        return ProbabilityInstance(s=(0.5, 0.3, 0.4))  # sums to 1.2: J 1 != 0, lambda_1 < 0


@dataclass(frozen=True, repr=False)
class SparsityTheorem(Theorem):
    """``I25.sparsity``: ``k`` coefficients ``≤ ε`` force ``≥ k − 1`` non-zero eigenvalues ``≤ ε``."""

    def assumptions(self, inst: ProbabilityInstance) -> list[Assumption]:
        s = np.asarray(inst.s)
        small = int((s <= inst.eps).sum())
        return _prob_assumptions(inst) + [
            Assumption("k >= 2", inst.k >= 2, inst.k),
            Assumption("at least k coefficients <= eps", small >= inst.k, small),
        ]

    def conclusion(self, inst: ProbabilityInstance) -> Conclusion:
        s = inst.tensor()
        lam = torch.linalg.eigvalsh(softmax_jacobian(s))
        tol = _tol(s)
        small_nonzero = [float(v) for v in lam if tol < float(v) <= inst.eps + tol]
        need = max(inst.k - 1, 0)
        margin = float(len(small_nonzero) - need)
        return Conclusion(margin >= 0, margin, {
            "eigenvalues": lam.tolist(), "small_nonzero_eigenvalues": small_nonzero, "needed": need,
            "eps": inst.eps, "kappa_on_1perp": float(lam[-1] / lam[1]) if float(lam[1]) > tol else math.inf,
        })

    def violating_instance(self) -> ProbabilityInstance:
        return ProbabilityInstance(s=(0.25, 0.25, 0.25, 0.25), eps=0.01, k=3)  # no coefficient <= eps




THEOREMS: tuple[Theorem, ...] = (
    InterlacingTheorem(
        id="I25.interlacing", citation="[I25] softmax Jacobian spectrum; MATH.md §4 'Softmax Jacobian', §5.1",
        statement="For a probability vector s > 0: 0 = lambda_1 <= s_(1) <= lambda_2 <= ... <= lambda_n <= "
                  "s_(n), "
                  "J(s) 1 = 0 and rank J(s) <= n - 1.",
        reconstructed=False, exact=True, instance_type=ProbabilityInstance,
        margin_scale="tightest slack of the chain / J1 / lambda_1 / rank conditions, plus tol = 8 n eps s_(n), "
                     "in units of s_(n)",
    ),
    SparsityTheorem(
        id="I25.sparsity", citation="[I25] sparse attention, ill-conditioned J; MATH.md §4, §5.1",
        statement="If k >= 2 coefficients of s are <= eps, at least k - 1 non-zero eigenvalues of J(s) are <= "
                  "eps.",
        reconstructed=False, exact=True, instance_type=ProbabilityInstance,
        margin_scale="(number of eigenvalues in (tol, eps + tol]) - (k - 1): a count",
    ),
)
