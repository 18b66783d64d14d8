"""[Q25] claims (MATH.md §4 "Z", §5.6).

* ``Q25.residual`` (**reconstructed**) — in the near-uniform regime ``κ(Z^res) < κ(Z^plain)``, and
  Weyl's bound ``σ_min(Z^res) ≥ σ_min(X) − ‖AXW_V‖`` holds (the latter is exact).
  ``Z = [Z_1; …; Z_N] ∈ R^{Nn×D}`` stacks the attention outputs; ``κ`` is taken over its ``D``
  singular values (assumption ``Nn ≥ D``). Mechanism: ``A_i ≈ (1/n)11ᵀ`` makes ``A X W_V`` of rank
  ``≤ N``, so ``κ(Z^plain)`` explodes when ``N < D``; for ``N ≥ D`` the mechanism is absent and the
  inequality is not guaranteed (the variant that holds adds ``N < D``).
* ``Q25.rate`` (**reconstructed**) — the FFN's GD rate is governed by ``σ²_min(Z)/σ²_max(Z)``.
  Reconstruction: identity activation, ``W_1 = I``, only ``W_2`` trained, no FFN residual, so the
  loss ``½‖Z W_2 − Y‖²`` is least squares with design ``Z`` and, for ``η ≤ 1/σ²_max(Z)``, the excess
  loss obeys ``e_t ≤ (1 − ησ²_min(Z))^{2t} e_0`` (exact for least squares).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from attncond.models import KernelUnderflowWarning
from attncond.spectral import extreme_singular_values

from ..dynamics import gradient_descent
from .base import EPS64, Assumption, BlockConfig, Conclusion, Theorem, relu_margin

__all__ = ["ResidualTheorem", "FFNRateTheorem", "FFNRateInstance", "near_uniform_deviation", "THEOREMS"]

NEAR_UNIFORM = 0.1  # max_i,j,k |n A_ijk − 1| at most this: "near-uniform attention"


def near_uniform_deviation(A: torch.Tensor) -> float:
    """``max |n·A − 1|`` over all entries of row-stochastic ``A`` of shape (…, n, n)."""
    n = A.shape[-1]
    return float((A * n - 1.0).abs().max())


def _svals(Z: torch.Tensor) -> tuple[float, float]:
    """``(σ_max, σ_min)`` of a tall ``Z`` (certified, :func:`spectral.extreme_singular_values`)."""
    est = extreme_singular_values(Z, which=("max", "min"))
    return float(est.sigma_max), (0.0 if est.rank_deficient else float(est.sigma_min))


@dataclass(frozen=True, repr=False)
class ResidualTheorem(Theorem):
    """``Q25.residual``: ``κ(Z^res) < κ(Z^plain)`` near uniform attention, and Weyl's bound."""

    def assumptions(self, inst: BlockConfig) -> list[Assumption]:
        block, X, _ = inst.build(ffn=False)
        with torch.no_grad():
            A = block.attention(X)
        dev = near_uniform_deviation(A)
        return [
            Assumption(f"near-uniform attention: max|nA - 1| <= {NEAR_UNIFORM}", dev <= NEAR_UNIFORM, dev),
            Assumption("Nn >= D (kappa over D singular values)", inst.N * inst.n >= inst.D,
                       {"Nn": inst.N * inst.n, "D": inst.D}),
        ]

    def conclusion(self, inst: BlockConfig) -> Conclusion:
        block, X, _ = inst.build(ffn=False)
        N, n, D = X.shape
        with torch.no_grad():
            Zp = block.attention_output(X, residual=False).reshape(N * n, D)
            Xs = X.reshape(N * n, D)
            Zr = Zp + Xs
        pmax, pmin = _svals(Zp)
        rmax, rmin = _svals(Zr)
        xmax, xmin = _svals(Xs)
        kp = math.inf if pmin == 0 else pmax / pmin
        kr = math.inf if rmin == 0 else rmax / rmin
        weyl_rhs = xmin - pmax
        tol = 64 * EPS64 * (xmax + pmax)
        weyl_slack = (rmin - weyl_rhs + tol) / max(xmax, 1e-300)
        if kr == math.inf:
            kappa_margin = -math.inf
        elif kp == math.inf:
            kappa_margin = math.inf
        else:
            kappa_margin = math.log10(kp / kr)
        margin = relu_margin(min(kappa_margin, weyl_slack))
        return Conclusion(margin > 0, margin, {
            "kappa(Z_res)": kr, "kappa(Z_plain)": kp, "sigma_min(Z_res)": rmin, "sigma_min(X)": xmin,
            "norm(AXW_V)": pmax, "weyl_rhs": weyl_rhs, "weyl_holds": weyl_slack >= 0,
            "kappa_margin_decades": kappa_margin, "N<D": N < D,
        })

    def violating_instance(self) -> BlockConfig:
        # near-uniform and N >= D: a genuine counterexample (assumptions hold), found by a scan
        return BlockConfig(N=4, n=2, D=2, d=1, init_scale=0.01, v_scale=1.0, seed=12)


@dataclass(frozen=True)
class FFNRateInstance:
    """A GD run on the FFN of a [Q25] block (reconstruction in the module docstring):
    ``η = lr_factor / σ²_max(Z)``, ``steps`` steps, with or without the attention residual."""

    block: BlockConfig = field(default_factory=BlockConfig)
    residual: bool = True
    lr_factor: float = 1.0
    steps: int = 30

    def __post_init__(self) -> None:
        if not isinstance(self.block, BlockConfig):
            raise TypeError(f"block must be a BlockConfig, got {type(self.block).__name__}")
        if not isinstance(self.residual, bool):
            raise TypeError(f"residual must be a bool, got {self.residual!r}")
        if not (isinstance(self.lr_factor, (int, float)) and math.isfinite(self.lr_factor)
                and self.lr_factor > 0):
            raise ValueError(f"lr_factor must be a finite number > 0, got {self.lr_factor!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")


@dataclass(frozen=True, repr=False)
class FFNRateTheorem(Theorem):
    """``Q25.rate``: excess loss ``e_t ≤ (1 − ησ²_min(Z))^{2t} e_0`` for ``η ≤ 1/σ²_max(Z)``."""

    def assumptions(self, inst: FFNRateInstance) -> list[Assumption]:
        b = inst.block
        return [
            Assumption("Nn >= D (Z has full column rank generically)", b.N * b.n >= b.D,
                       {"Nn": b.N * b.n, "D": b.D}),
            Assumption("eta <= 1/sigma_max(Z)^2", inst.lr_factor <= 1.0, inst.lr_factor),
        ]

    def conclusion(self, inst: FFNRateInstance) -> Conclusion:
        b = inst.block
        block, X, Y = b.build(residual=inst.residual, ffn=True, ffn_residual=False, activation="identity",
                              trainable=("W_2",))
        with torch.no_grad():
            block.W_1.copy_(torch.eye(b.D, dtype=X.dtype, device=X.device))
            Z = block.attention_output(X).reshape(-1, b.D)
        Yf = Y.reshape(-1, b.D)
        smax, smin = _svals(Z)
        eta = inst.lr_factor / smax**2
        W_star = torch.linalg.lstsq(Z, Yf).solution

        def excess(W: torch.Tensor) -> float:
            E = Z @ (W - W_star)
            return 0.5 * float((E * E).sum())

        excesses: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KernelUnderflowWarning)
            _, tr = gradient_descent(lambda p: block.loss(p, X, Y), block.params(), steps=inst.steps, lr=eta,
                                     callback=lambda t, th, f: excesses.append(excess(th["W_2"])))
        q = max(0.0, 1.0 - eta * smin**2) ** 2
        e0 = excesses[0]
        floor = 64 * EPS64 * (e0 + 0.5 * float((Yf * Yf).sum()))
        worst = math.inf
        for t in range(1, len(excesses)):
            e, bnd = excesses[t], e0 * q**t
            if not math.isfinite(e):
                worst = -math.inf
                break
            if e <= floor:
                continue
            worst = min(worst, (math.log(max(bnd, 1e-300) + floor) - math.log(e)) / t)
        T = len(excesses) - 1
        observed = (excesses[-1] / e0) ** (1.0 / T) if e0 > 0 and math.isfinite(excesses[-1]) else math.nan
        margin = relu_margin(worst + 1e-9)
        return Conclusion(margin >= 0, margin, {
            "eta": eta, "sigma_max(Z)": smax, "sigma_min(Z)": smin,
            "kappa(Z)": smax / smin if smin else math.inf,
            "predicted_rate": q, "observed_rate": observed, "residual": inst.residual,
            "e_0": e0, "e_T": excesses[-1], "diverged": tr.diverged,
        })

    def violating_instance(self) -> FFNRateInstance:
        return FFNRateInstance(BlockConfig(N=3, n=2, D=2, d=1), residual=True, lr_factor=2.5, steps=10)


THEOREMS: tuple[Theorem, ...] = (
    ResidualTheorem(
        id="Q25.residual", citation="[Q25] residual connections repair kappa(Z); MATH.md §4 'Z', §5.6",
        statement="Near-uniform attention (max|nA-1| <= 0.1), Nn >= D: kappa(Z_res) < kappa(Z_plain), and "
                  "sigma_min(Z_res) >= sigma_min(X) - ||A X W_V|| (Weyl).",
        reconstructed=True, exact=False, instance_type=BlockConfig,
        variant_that_holds="add N < D (A X W_V then has rank <= N < D, so kappa(Z_plain) is unbounded); "
                           "the Weyl part is exact",
        margin_scale="min(log10(kappa_plain/kappa_res), Weyl slack / sigma_max(X)): decades / relative units",
    ),
    FFNRateTheorem(
        id="Q25.rate", citation="[Q25] linear rate governed by sigma(Z); MATH.md §4 'Z', §5.6",
        statement="FFN with identity activation, W_1 = I, only W_2 trained, eta <= 1/sigma_max(Z)^2: the "
                  "excess "
                  "loss satisfies e_t <= (1 - eta sigma_min(Z)^2)^(2t) e_0 (rate tracks "
                  "sigma_min^2/sigma_max^2).",
        reconstructed=True, exact=True, instance_type=FFNRateInstance, max_examples=60,
        margin_scale="min_t [log(bound_t + floor) - log e_t] / t: nats per step below the bound (+1e-9)",
    ),
)
