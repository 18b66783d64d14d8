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
from hypothesis import strategies as st

from attncond.models import KernelUnderflowWarning
from attncond.spectral import extreme_singular_values

from ..dynamics import gradient_descent
from ..strategies import block_configs, tiny_sigma_min_X
from .base import EPS64, Assumption, BlockConfig, Conclusion, Theorem, relu_margin
from .registry import register

__all__ = ["ResidualTheorem", "FFNRateTheorem", "FFNRateInstance", "near_uniform_deviation", "THEOREMS"]

NEAR_UNIFORM = 0.1  # max_i,j,k |n A_ijk − 1| at most this: "near-uniform attention"
_TALL = "Nn >= D (kappa over D singular values)"
_TALL_PER_SAMPLE = "n >= D (kappa over the D singular values of every Z_i)"


def near_uniform_deviation(A: torch.Tensor) -> float:
    """``max |n·A − 1|`` over all entries of row-stochastic ``A`` of shape (…, n, n)."""
    n = A.shape[-1]
    return float((A * n - 1.0).abs().max())


def _svals(Z: torch.Tensor) -> tuple[float, float]:
    """``(σ_max, σ_D)`` of ``Z ∈ R^{m×D}`` (certified, :func:`spectral.extreme_singular_values`).

    ``κ`` is taken over the ``D`` singular values of ``Z`` (MATH.md §4 "Z"), so a wide ``Z`` (``m < D``)
    has ``σ_D = 0``, and so has a ``Z`` singular to working precision.
    """
    est = extreme_singular_values(Z, which=("max", "min"))
    wide = Z.shape[0] < Z.shape[1]
    return float(est.sigma_max), (0.0 if est.rank_deficient or wide else float(est.sigma_min))


def _residual_quantities(Zp: torch.Tensor, Xs: torch.Tensor, N: int, D: int) -> dict:
    """σ's and κ's of ``Z^plain = A X W_V``, ``Z^res = Z^plain + X`` and ``X`` (rows stacked as given)."""
    pmax, pmin = _svals(Zp)
    rmax, rmin = _svals(Zp + Xs)
    xmax, xmin = _svals(Xs)
    return {"kappa(Z_res)": math.inf if rmin == 0 else rmax / rmin,
            "kappa(Z_plain)": math.inf if pmin == 0 else pmax / pmin,
            "sigma_min(Z_res)": rmin, "sigma_max(X)": xmax, "sigma_min(X)": xmin, "norm(AXW_V)": pmax,
            "weyl_rhs": xmin - pmax, "N": N, "D": D, "N<D": N < D, "wide": Zp.shape[0] < Zp.shape[1]}


@dataclass(frozen=True, repr=False)
class ResidualTheorem(Theorem):
    """``Q25.residual``: ``κ(Z^res) < κ(Z^plain)`` near uniform attention, and Weyl's bound.

    ``z_stacking`` (reconstruction switch): ``"stacked"`` — ``Z = [Z_1; …; Z_N] ∈ R^{Nn×D}`` (default);
    ``"per_sample"`` — the claim for every ``Z_i ∈ R^{n×D}`` (the worst sample decides; the assumption
    ``Nn ≥ D`` becomes ``n ≥ D``). Both ``κ`` infinite because both matrices are singular to working
    precision is excluded as undecidable, not counted as a failure (a wide ``Z`` is singular exactly).
    """

    z_stacking: str = "stacked"

    def __post_init__(self) -> None:
        if self.z_stacking not in ("stacked", "per_sample"):
            raise ValueError(f"z_stacking must be 'stacked' or 'per_sample', got {self.z_stacking!r}")

    def assumptions(self, inst: BlockConfig) -> list[Assumption]:
        block, X, _ = inst.build(ffn=False)
        with torch.no_grad():
            A = block.attention(X)
        dev = near_uniform_deviation(A)
        uniform = Assumption(f"near-uniform attention: max|nA - 1| <= {NEAR_UNIFORM}", dev <= NEAR_UNIFORM, dev)
        if self.z_stacking == "per_sample":  # each Z_i in R^{n x D} must have D singular values
            return [uniform, Assumption(_TALL_PER_SAMPLE, inst.n >= inst.D, {"n": inst.n, "D": inst.D})]
        return [uniform, Assumption(_TALL, inst.N * inst.n >= inst.D, {"Nn": inst.N * inst.n, "D": inst.D})]

    def measure(self, inst: BlockConfig) -> dict:
        block, X, _ = inst.build(ffn=False)
        N, n, D = X.shape
        with torch.no_grad():
            Zp = block.attention_output(X, residual=False)
        if self.z_stacking == "per_sample":
            blocks = [_residual_quantities(Zp[i], X[i], N, D) for i in range(N)]
            return {**min(blocks, key=lambda b: self.judge(b).margin), "blocks": blocks}
        return _residual_quantities(Zp.reshape(N * n, D), X.reshape(N * n, D), N, D)

    def judge(self, q: dict, strength: float = 1.0) -> Conclusion:
        if "blocks" not in q:
            return self._judge(q, strength)
        cs = [self._judge(b, strength) for b in q["blocks"]]
        decided = [c for c in cs if c.excluded is None]
        worst = min(decided, key=lambda c: c.margin) if decided else cs[0]
        details = {**worst.details, "per_sample_margins": [c.margin for c in cs]}
        return Conclusion(worst.holds, worst.margin, details,
                          vacuous=worst.vacuous, excluded=worst.excluded)

    def _judge(self, q: dict, strength: float = 1.0) -> Conclusion:
        kr, kp, D = q["kappa(Z_res)"], q["kappa(Z_plain)"], q["D"]
        tol = 64 * EPS64 * (q["sigma_max(X)"] + q["norm(AXW_V)"])
        rhs = q["weyl_rhs"] * (strength if q["weyl_rhs"] > 0 else 1.0)
        weyl_slack = (q["sigma_min(Z_res)"] - rhs + tol) / max(q["sigma_max(X)"], 1e-300)
        # kappa is computed with relative error ~ D eps kappa: closer than that is a tie, not a verdict
        tie = D == 1 or (math.isfinite(kp) and math.isfinite(kr) and kp > 0 and kr > 0
                         and abs(math.log(kp / (strength * kr))) <= 16 * D * EPS64 * (kp + kr))
        if kr == math.inf and kp == math.inf and not q.get("wide"):
            # both singular to working precision (a wide Z is singular exactly: inf < inf fails, a failure)
            return Conclusion(False, 0.0, {**q, "kappa_margin_decades": math.nan}, excluded=(
                "both Z_res and Z_plain singular to working precision: kappa undecidable in float64"))
        if kr == math.inf:
            kappa_margin = -math.inf
        elif kp == math.inf:
            kappa_margin = math.inf
        else:
            kappa_margin = math.log10(kp / (strength * kr))
        details = {**q, "weyl_holds": weyl_slack >= 0, "kappa_margin_decades": kappa_margin}
        vac = "Weyl part: sigma_min(X) - ||A X W_V|| <= 0" if q["weyl_rhs"] <= 0 else None
        if tie and weyl_slack >= 0:
            why = ("D = 1: kappa == 1 for both matrices" if D == 1
                   else "kappa(Z_plain) = kappa(Z_res) within rounding")
            return Conclusion(False, 0.0, details, vacuous=vac, excluded=f"tie ({why})")
        margin = relu_margin(min(kappa_margin, weyl_slack))
        return Conclusion(margin > 0, margin, details, vacuous=vac)

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

    def measure(self, inst: FFNRateInstance) -> dict:
        b = inst.block
        block, X, Y = b.build(residual=inst.residual, ffn=True, ffn_residual=False, activation="identity",
                              trainable=("W_2",))
        with torch.no_grad():
            block.W_1.copy_(torch.eye(b.D, dtype=X.dtype, device=X.device))
            Z = block.attention_output(X).reshape(-1, b.D)
        Yf = Y.reshape(-1, b.D)
        smax, smin = _svals(Z)
        if Z.shape[0] < Z.shape[1]:
            smin = 0.0  # sigma_D(Z) of a wide Z: the claim is about the D singular values of Z
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
        return {"excesses": excesses, "eta": eta, "sigma_max(Z)": smax, "sigma_min(Z)": smin,
                "floor": 64 * EPS64 * (excesses[0] + 0.5 * float((Yf * Yf).sum())), "residual": inst.residual,
                "diverged": tr.diverged}

    def judge(self, q: dict, strength: float = 1.0) -> Conclusion:
        excesses, eta, floor = q["excesses"], q["eta"], q["floor"]
        smin, smax = q["sigma_min(Z)"], q["sigma_max(Z)"]
        rate = max(0.0, 1.0 - strength * eta * smin**2) ** 2
        e0 = excesses[0]
        worst = math.inf
        for t in range(1, len(excesses)):
            e, bnd = excesses[t], e0 * rate**t
            if not math.isfinite(e):
                worst = -math.inf
                break
            if e <= floor:
                continue
            worst = min(worst, (math.log(max(bnd, 1e-300) + floor) - math.log(e)) / t)
        T = len(excesses) - 1
        observed = (excesses[-1] / e0) ** (1.0 / T) if e0 > 0 and math.isfinite(excesses[-1]) else math.nan
        margin = relu_margin(worst + 1e-9)
        vac = None if eta * smin**2 > EPS64 else "eta sigma_min(Z)^2 <= eps: the bound e_t <= e_0 is trivial"
        return Conclusion(margin >= 0, margin, {
            **{k: v for k, v in q.items() if k != "excesses"},
            "kappa(Z)": smax / smin if smin else math.inf, "predicted_rate": rate, "observed_rate": observed,
            "e_0": e0, "e_T": excesses[-1]}, vacuous=vac)

    def violating_instance(self) -> FFNRateInstance:
        return FFNRateInstance(BlockConfig(N=3, n=2, D=2, d=1), residual=True, lr_factor=2.5, steps=10)


THEOREMS: tuple[Theorem, ...] = (
    ResidualTheorem(
        id="Q25.residual", citation="[Q25] residual connections repair kappa(Z); MATH.md §4 'Z', §5.6",
        statement="Near-uniform attention (max|nA-1| <= 0.1), Nn >= D: kappa(Z_res) < kappa(Z_plain), and "
                  "sigma_min(Z_res) >= sigma_min(X) - ||A X W_V|| (Weyl).",
        reconstructed=True, exact=False, instance_type=BlockConfig,
        paper_statement="[Q25] residual (MATH.md §5.6): kappa(Z^res) < kappa(Z^plain) in the near-uniform "
                        "regime, and the Weyl bound holds.",
        variant_that_holds="N < D (A X W_V then has rank <= N < D, so kappa(Z_plain) is unbounded) held on "
                           "every "
                           "draw; with N >= D, D >= 2 it fails on a few draws only; the Weyl part is exact",
        margin_scale="min(log10(kappa_plain/kappa_res), Weyl slack / sigma_max(X)): decades / relative units; "
                     "D = 1 (kappa == 1) and kappas equal within rounding are ties, excluded",
    ),
    FFNRateTheorem(
        id="Q25.rate", citation="[Q25] linear rate governed by sigma(Z); MATH.md §4 'Z', §5.6",
        statement="FFN with identity activation, W_1 = I, only W_2 trained, eta <= 1/sigma_max(Z)^2: the "
                  "excess "
                  "loss satisfies e_t <= (1 - eta sigma_min(Z)^2)^(2t) e_0 (rate tracks "
                  "sigma_min^2/sigma_max^2).",
        reconstructed=True, exact=True, instance_type=FFNRateInstance, max_examples=60,
        paper_statement="[Q25] (MATH.md §5.6): the observed GD rate on the FFN tracks "
                        "sigma_min^2(Z)/sigma_max^2(Z).",
        margin_scale="min_t [log(bound_t + floor) - log e_t] / t: nats per step below the bound (+1e-9)",
    ),
)

_UNIFORM = f"near-uniform attention: max|nA - 1| <= {NEAR_UNIFORM}"
register(THEOREMS[0], lambda: st.one_of(block_configs(D=(2, 5)), block_configs(D=(2, 5), v_scale=(1e-2, 0.3)),
                                        tiny_sigma_min_X(D=(2, 5), init_scale=(1e-3, 1e-2))),
         violations={_UNIFORM: lambda: block_configs(D=(2, 5), init_scale=(1.0, 10.0)),
                     _TALL: lambda: block_configs(N=(1, 2), n=2, D=5, tall=False)},
         bias="D >= 2 (D = 1 is a tie, kappa == 1); a third of the draws with v_scale <= 0.3, where the Weyl "
              "bound is positive")
register(THEOREMS[1], lambda: st.builds(FFNRateInstance, block=block_configs(init_scale=(1e-2, 1.0)),
                                        residual=st.booleans(), lr_factor=st.floats(0.1, 1.0),
                                        steps=st.just(30)),
         violations={"Nn >= D (Z has full column rank generically)": lambda: st.builds(
             FFNRateInstance, block=block_configs(N=1, n=2, D=(3, 5), tall=False), residual=st.booleans(),
             lr_factor=st.floats(0.1, 1.0), steps=st.just(30)),
             "eta <= 1/sigma_max(Z)^2": lambda: st.builds(
             FFNRateInstance, block=block_configs(init_scale=(1e-2, 1.0)), residual=st.booleans(),
             lr_factor=st.floats(1.5, 2.5), steps=st.just(30))},
         bias="lr_factor in [0.1, 1] (the bound is tight at lr_factor = 1)")
