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
from hypothesis import strategies as st

from ..strategies import probability_vectors
from .base import EPS64, Assumption, Conclusion, Theorem, relu_margin
from .registry import register

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
    """``I25.interlacing``: eigenvalues of ``J(s)`` interlace the sorted ``s``; ``J1 = 0``; rank ≤ n − 1.

    ``strength = k`` (false variant): ``k λ_i ≤ s_(i)`` and ``λ_{i+1} ≥ k s_(i)``.
    """

    def assumptions(self, inst: ProbabilityInstance) -> list[Assumption]:
        return _prob_assumptions(inst)

    def measure(self, inst: ProbabilityInstance) -> dict:
        s = inst.tensor()
        J = softmax_jacobian(s)
        lam = torch.linalg.eigvalsh(J)
        tol = _tol(s)
        return {"eigenvalues": lam.tolist(), "sorted_s": torch.sort(s).values.tolist(), "tol": tol,
                "J1": float((J @ torch.ones_like(s)).abs().max()),
                "rank": int(torch.linalg.matrix_rank(J, atol=tol))}

    def judge(self, q: dict, strength: float = 1.0) -> Conclusion:
        lam, ss, tol, k = q["eigenvalues"], q["sorted_s"], q["tol"], float(strength)
        n = len(ss)
        slacks = {"lambda_1 = 0": tol - abs(lam[0])}
        chain = [ss[i] - k * lam[i] for i in range(1, n)] + [lam[i + 1] - k * ss[i] for i in range(n - 1)]
        slacks["interlacing"] = min(chain) + tol
        slacks["J 1 = 0"] = tol - q["J1"]
        slacks["rank <= n-1"] = tol if q["rank"] <= n - 1 else -tol
        worst = min(slacks, key=slacks.get)
        margin = relu_margin(slacks[worst] / max(abs(ss[-1]), 1e-300))
        return Conclusion(margin >= 0, margin, {**q, "tightest": worst, "slacks": slacks})

    def violating_instance(self) -> ProbabilityInstance:
        return ProbabilityInstance(s=(0.5, 0.3, 0.4))  # sums to 1.2: J 1 != 0, lambda_1 < 0


@dataclass(frozen=True, repr=False)
class SparsityTheorem(Theorem):
    """``I25.sparsity``: ``k`` coefficients ``≤ ε`` force ``≥ k − 1`` non-zero eigenvalues ``≤ ε``.

    ``strength = c`` (false variant): ``≥ k − 1`` non-zero eigenvalues ``≤ ε/c``.
    """

    def assumptions(self, inst: ProbabilityInstance) -> list[Assumption]:
        s = np.asarray(inst.s)
        small = int((s <= inst.eps).sum())
        return _prob_assumptions(inst) + [
            Assumption("k >= 2", inst.k >= 2, inst.k),
            Assumption("at least k coefficients <= eps", small >= inst.k, small),
        ]

    def measure(self, inst: ProbabilityInstance) -> dict:
        s = inst.tensor()
        lam = torch.linalg.eigvalsh(softmax_jacobian(s))
        return {"eigenvalues": lam.tolist(), "tol": _tol(s), "eps": inst.eps, "k": inst.k}

    def judge(self, q: dict, strength: float = 1.0) -> Conclusion:
        lam, tol = q["eigenvalues"], q["tol"]
        small_nonzero = [v for v in lam if tol < v <= q["eps"] / strength + tol]
        need = max(q["k"] - 1, 0)
        margin = float(len(small_nonzero) - need)
        return Conclusion(margin >= 0, margin, {
            **q, "small_nonzero_eigenvalues": small_nonzero, "needed": need,
            "kappa_on_1perp": float(lam[-1] / lam[1]) if lam[1] > tol else math.inf,
        }, vacuous="k - 1 <= 0: nothing is claimed" if need == 0 else None)

    def violating_instance(self) -> ProbabilityInstance:
        return ProbabilityInstance(s=(0.25, 0.25, 0.25, 0.25), eps=0.01, k=3)  # no coefficient <= eps


# ----------------------------------------------------------------------------- strategies
def _unnormalised() -> st.SearchStrategy[tuple[float, ...]]:
    """Positive vectors summing to ``c ∈ [1.1, 3]`` (assumption ``sum(s) = 1`` violated)."""
    return st.tuples(probability_vectors(), st.floats(1.1, 3.0)).map(lambda t: tuple(v * t[1] for v in t[0]))


def _with_negative() -> st.SearchStrategy[tuple[float, ...]]:
    """Vectors summing to 1 with one entry ``< 0`` (assumption ``s > 0`` violated)."""
    def neg(t: tuple[tuple[float, ...], float]) -> tuple[float, ...]:
        v, u = t
        w = (-u * v[0],) + v[1:]
        total = sum(w)
        return tuple(x / total for x in w)

    return st.tuples(probability_vectors((3, 8)), st.floats(0.05, 0.5)).map(neg)


@st.composite
def _sparsity(draw, vectors: st.SearchStrategy | None = None, fewer_small: bool = False,
              k_range: tuple[int, int] = (2, 8)) -> ProbabilityInstance:
    s = draw(vectors if vectors is not None else probability_vectors((3, 8), sparse=True))
    order = sorted(s)
    k = draw(st.integers(max(k_range[0], 2 if fewer_small else 0), min(k_range[1], len(s))))
    ref = order[max(k - 1, 0)]
    # fewer_small: eps just below the k-th smallest coefficient, so only k - 1 are <= eps
    eps = abs(ref) * draw(st.floats(0.5, 0.99) if fewer_small else st.floats(1.0, 2.0))
    return ProbabilityInstance(s=s, eps=float(eps), k=k)


def _probability(vectors: st.SearchStrategy) -> st.SearchStrategy[ProbabilityInstance]:
    return vectors.map(lambda s: ProbabilityInstance(s=s))


THEOREMS: tuple[Theorem, ...] = (
    InterlacingTheorem(
        id="I25.interlacing", citation="[I25] softmax Jacobian spectrum; MATH.md §4 'Softmax Jacobian', §5.1",
        statement="For a probability vector s > 0: 0 = lambda_1 <= s_(1) <= lambda_2 <= ... <= lambda_n <= "
                  "s_(n), "
                  "J(s) 1 = 0 and rank J(s) <= n - 1.",
        reconstructed=False, exact=True, instance_type=ProbabilityInstance,
        paper_statement="Interlacing / sparsity (exact): 0 = lambda_1 <= s_(1) <= lambda_2 <= ... "
                        "<= lambda_n <= s_(n) for J(s) = diag(s) - s s^T "
                        "(MATH.md §5.1, §4 'Softmax Jacobian').",
        margin_scale="tightest slack of the chain / J1 / lambda_1 / rank conditions, plus tol = 8 n eps s_(n), "
                     "in units of s_(n)",
    ),
    SparsityTheorem(
        id="I25.sparsity", citation="[I25] sparse attention, ill-conditioned J; MATH.md §4, §5.1",
        statement="If k >= 2 coefficients of s are <= eps, at least k - 1 non-zero eigenvalues of J(s) are <= "
                  "eps.",
        reconstructed=False, exact=True, instance_type=ProbabilityInstance,
        paper_statement="k coefficients <= eps force at least k - 1 non-zero eigenvalues <= eps: sparse "
                        "attention gives an ill-conditioned J (MATH.md §5.1, §4).",
        margin_scale="(number of eigenvalues in (tol, eps + tol]) - (k - 1): a count",
    ),
)

_SUM, _POS = "sum(s) = 1 (within tol)", "s > 0 (min s > tol)"
register(THEOREMS[0], lambda: st.one_of(_probability(probability_vectors()),
                                        _probability(probability_vectors(sparse=True))),
         violations={_SUM: lambda: _probability(_unnormalised()), _POS: lambda: _probability(_with_negative())},
         bias="half the draws are sparse (entries down to 1e-12), where the chain is tight")
register(THEOREMS[1], lambda: _sparsity(),
         # sum(s) = 1 is not needed: for any s > 0, diag(s) - s s^T interlaces diag(s) from below, so the
         # claim holds for unnormalised s as well (a dropped-assumption variant would never be caught)
         violations={_POS: lambda: _sparsity(_with_negative()),
                     "k >= 2": lambda: _sparsity(k_range=(0, 1)),
                     "at least k coefficients <= eps": lambda: _sparsity(fewer_small=True)},
         bias="eps is drawn within a factor 2 above the k-th smallest coefficient (the claim's edge)")
