"""[S24] claims (MATH.md §4 "B0", "Exact PL constant"; §5.2–5.5).

* ``S24.thm1.rank`` — generic ``B0 ∈ R^{Nn×HD}`` has rank ``min(Nn, HD)``: full row rank iff ``HD ≥ Nn``.
* ``S24.thm1.pl_bound`` — ``μ = λ_min(JJᵀ) ≥ c_O σ²_min(B0)`` always (exact algebra), with
  ``c_O = min_h λ_min(W^O_hᵀ W^O_h)`` (per-head values) or ``λ_min(W^Oᵀ W^O)`` (joint values).
* ``S24.thm1.pl_bound_paper`` — the paper's ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` as stated
  (**reconstructed**; may fail for per-head values, the variant that holds is ``S24.thm1.pl_bound``).
* ``S24.thm1.rate`` — under ``HD ≥ Nn`` and ``η ≤ 1/L``: ``f_t ≤ (1 − ηβ')^t f_0``, ``β' = min_t μ_t``.
* ``S24.thm2.gaussian_vs_softmax`` — with only ``W^Q`` trained, Gaussian-kernel GD reaches the
  global optimum more often than softmax (statistical: one-sided exact sign test over seeds).

``σ_min(B0)`` always means ``σ_{Nn}(B0)`` — the ``Nn``-th singular value, ``0`` when ``HD < Nn``,
so that ``σ²_min(B0) = λ_min(B0 B0ᵀ)``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attncond.models import KernelUnderflowWarning, MultiHeadAttention
from attncond.models.init import make_generator

from ..dynamics import gradient_descent, pl_constant_generic
from .base import EPS64, Assumption, AttentionConfig, Conclusion, Theorem, relu_margin

__all__ = [
    "RankTheorem",
    "PLBoundTheorem",
    "PLBoundPaperTheorem",
    "RateTheorem",
    "RateInstance",
    "Thm2Instance",
    "GaussianVsSoftmaxTheorem",
    "b0_matrix",
    "output_weight_constant",
    "THEOREMS",
]

PL_RTOL = 1e-10  # rounding tolerance of the PL inequalities, relative to λ_max(JJᵀ)


def b0_matrix(model: MultiHeadAttention, X: torch.Tensor) -> torch.Tensor:
    """``B0 = [S_i1 X_i, …, S_iH X_i]`` stacked over samples: shape ``(Nn, HD)`` (MATH.md §4)."""
    B = model.weighted_inputs(X)
    return B.reshape(B.shape[0] * B.shape[1], B.shape[2]).detach()


def _lam_min_gram(W: torch.Tensor) -> float:
    """``λ_min(Wᵀ W)`` for ``W`` of shape (r, c): ``σ²_c(W)``, 0 when ``r < c``."""
    r, c = W.shape
    if r < c:
        return 0.0
    return float(torch.linalg.svdvals(W)[-1]) ** 2


def output_weight_constant(model: MultiHeadAttention, variant: str) -> float:
    """``min_h λ_min(W^O_hᵀW^O_h)`` (``"per_head"``) or ``λ_min(W^OᵀW^O)`` (``"joint"``, the paper's
    ``σ²_min(W^O)``); ``W^O_h`` = rows ``h·d:(h+1)·d`` of ``W^O``."""
    WO = model.W_O.detach()
    if variant == "joint":
        return _lam_min_gram(WO)
    if variant != "per_head":
        raise ValueError(f"unknown variant {variant!r}; known: 'per_head', 'joint'")
    d = model.d
    return min(_lam_min_gram(WO[h * d:(h + 1) * d]) for h in range(model.H))


def _sigma_nn(B0: torch.Tensor) -> tuple[float, float]:
    """``(σ_max(B0), σ_{Nn}(B0))`` with ``σ_{Nn} = 0`` when ``HD < Nn``."""
    sv = torch.linalg.svdvals(B0)
    Nn, HD = B0.shape
    smin = float(sv[Nn - 1]) if HD >= Nn else 0.0
    return float(sv[0]), smin


def _quiet_build(cfg: AttentionConfig):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelUnderflowWarning)
        return cfg.build()


# ------------------------------------------------------------------------------------ rank
@dataclass(frozen=True, repr=False)
class RankTheorem(Theorem):
    """``S24.thm1.rank``: ``rank(B0) = Nn`` (full row rank) for generic weights when ``HD ≥ Nn``."""

    def assumptions(self, inst: AttentionConfig) -> list[Assumption]:
        return [
            Assumption("HD >= Nn", inst.HD >= inst.Nn, {"HD": inst.HD, "Nn": inst.Nn}),
            Assumption("kernel is softmax or gaussian ([S24])", inst.kernel in ("softmax", "gaussian"),
                       inst.kernel),
        ]

    def conclusion(self, inst: AttentionConfig) -> Conclusion:
        model, X, _ = _quiet_build(inst)
        B0 = b0_matrix(model, X)
        Nn, HD = B0.shape
        smax, smin = _sigma_nn(B0)
        tol = max(Nn, HD) * EPS64 * smax
        rank = int(torch.linalg.matrix_rank(B0, atol=tol))
        margin = relu_margin(math.log10(smin / tol) if smin > 0 and tol > 0 else -math.inf)
        return Conclusion(margin > 0, margin, {
            "rank": rank, "min(Nn,HD)": min(Nn, HD), "generic_rank": rank == min(Nn, HD),
            "sigma_max(B0)": smax, "sigma_Nn(B0)": smin, "rank_tol": tol,
        })

    def violating_instance(self) -> AttentionConfig:
        return AttentionConfig(N=3, n=2, D=2, d=1, H=2)  # HD = 4 < Nn = 6


# -------------------------------------------------------------------------------- PL bounds
def _pl_quantities(inst: AttentionConfig) -> dict[str, Any]:
    model, X, _ = _quiet_build(inst)
    mu, lam = pl_constant_generic(lambda p: model.functional(p, X), model.params(), with_max=True)
    B0 = b0_matrix(model, X)
    _, smin = _sigma_nn(B0)
    c_corr = output_weight_constant(model, inst.value_param)
    c_paper = output_weight_constant(model, "joint")
    return {"mu": mu, "lambda_max(JJt)": lam, "sigma_min(B0)": smin,
            "corrected_bound": c_corr * smin**2, "beta_paper": c_paper * smin**2,
            "c_O_corrected": c_corr, "sigma_min(W_O)^2": c_paper}


@dataclass(frozen=True, repr=False)
class PLBoundTheorem(Theorem):
    """``S24.thm1.pl_bound``: ``μ ≥ c_O σ²_min(B0)`` (exact; MATH.md §4 and §5.3).

    ``J_V J_Vᵀ = Σ_h (W^O_hᵀW^O_h) ⊗ B_hB_hᵀ ⪰ min_h λ_min(W^O_hᵀW^O_h) B0B0ᵀ`` and ``JJᵀ ⪰ J_VJ_Vᵀ``.
    """

    def assumptions(self, inst: AttentionConfig) -> list[Assumption]:
        return [Assumption("W_V is trained", "W_V" in inst.trainable, inst.trainable)]

    def conclusion(self, inst: AttentionConfig) -> Conclusion:
        q = _pl_quantities(inst)
        scale = max(q["lambda_max(JJt)"], np.finfo(float).tiny)
        margin = relu_margin((q["mu"] - q["corrected_bound"]) / scale + PL_RTOL)
        return Conclusion(margin >= 0, margin, {**q, "paper_beta_holds": q["mu"] >= q["beta_paper"]
                                                 - PL_RTOL * scale})

    def violating_instance(self) -> AttentionConfig:
        # only W_O trained: p = Hd = 2 < Nn = 4, so mu = 0 while the bound (W_V's) is > 0
        return AttentionConfig(N=2, n=2, D=2, d=1, H=2, trainable=("W_O",))


@dataclass(frozen=True, repr=False)
class PLBoundPaperTheorem(Theorem):
    """``S24.thm1.pl_bound_paper``: ``μ ≥ σ²_min(W^O) σ²_min(B0ᵀ)`` as stated (reconstructed)."""

    def assumptions(self, inst: AttentionConfig) -> list[Assumption]:
        return [
            Assumption("W_V is trained", "W_V" in inst.trainable, inst.trainable),
            Assumption("HD >= Nn", inst.HD >= inst.Nn, {"HD": inst.HD, "Nn": inst.Nn}),
        ]

    def conclusion(self, inst: AttentionConfig) -> Conclusion:
        q = _pl_quantities(inst)
        scale = max(q["lambda_max(JJt)"], np.finfo(float).tiny)
        margin = relu_margin((q["mu"] - q["beta_paper"]) / scale + PL_RTOL)
        return Conclusion(margin >= 0, margin, q)

    def violating_instance(self) -> AttentionConfig:
        # per-head values, only W_V trained: found by `attncond check` (seed 0)
        return AttentionConfig(N=2, n=3, D=4, d=2, H=2, trainable=("W_V",), seed=0)


# -------------------------------------------------------------------------------------- rate
@dataclass(frozen=True)
class RateInstance:
    """A GD run on an [S24] instance: ``η = lr_factor / L`` with ``L`` the local smoothness at ``θ_0``;
    ``μ_t`` recorded every step (``mu_every=1``) for ``steps`` steps."""

    config: AttentionConfig = field(default_factory=AttentionConfig)
    lr_factor: float = 1.0
    steps: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.config, AttentionConfig):
            raise TypeError(f"config must be an AttentionConfig, got {type(self.config).__name__}")
        if not (isinstance(self.lr_factor, (int, float)) and math.isfinite(self.lr_factor)
                and self.lr_factor > 0):
            raise ValueError(f"lr_factor must be a finite number > 0, got {self.lr_factor!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")


def run_rate_instance(inst: RateInstance, mu_every: int = 1):
    """Run the GD of a :class:`RateInstance`; returns ``(trace, rate_check)``."""
    model, X, y = _quiet_build(inst.config)
    _, trace = gradient_descent(lambda p: model.loss(p, X, y), model.params(), steps=inst.steps, lr="auto",
                                safety=float(inst.lr_factor), output_fn=lambda p: model.functional(p, X),
                                mu_every=mu_every)
    return trace, trace.rate_check()


@dataclass(frozen=True, repr=False)
class RateTheorem(Theorem):
    """``S24.thm1.rate``: ``f_t ≤ (1 − ηβ')^t f_0`` and ``f_{t+1} ≤ (1 − ημ_t) f_t`` for ``η ≤ 1/L``."""

    def assumptions(self, inst: RateInstance) -> list[Assumption]:
        c = inst.config
        return [
            Assumption("HD >= Nn", c.HD >= c.Nn, {"HD": c.HD, "Nn": c.Nn}),
            Assumption("eta <= 1/L (L = local smoothness at theta_0)", inst.lr_factor <= 1.0, inst.lr_factor),
        ]

    def conclusion(self, inst: RateInstance) -> Conclusion:
        trace, rc = run_rate_instance(inst)
        f = trace.losses
        eta = trace.lr

        def nats(bound: float, value: float) -> float:
            if not math.isfinite(value) or (bound <= 0 < value):
                return -math.inf
            return math.inf if value <= 0 else math.log(bound) - math.log(value)

        global_m = min((nats(rc.bound[t], f[t]) / t for t in range(1, len(f))), default=math.inf)
        contraction = trace.contraction
        step_m = min((nats(max(0.0, 1.0 - eta * mu), contraction[t])
                      for t, mu in zip(trace.mu_steps, trace.mu, strict=True)
                      if t < len(contraction) and not math.isnan(contraction[t])), default=math.inf)
        margin = relu_margin(min(global_m, step_m) + 1e-9)
        holds = margin >= 0
        return Conclusion(holds, margin, {
            "eta": trace.lr, "L": trace.smoothness.L if trace.smoothness else None,
            "beta_prime": rc.beta_prime, "mu_0": trace.mu[0] if trace.mu else None,
            "mu_min_ratio": trace.mu_min_ratio, "predicted_contraction": rc.predicted_contraction,
            "observed_mean_contraction": rc.observed_mean_contraction,
            "step_violations": rc.step_violations, "f_0": f[0], "f_T": f[-1],
            "radius": trace.radius, "max_distance": max(trace.distances) if trace.distances else None,
            "in_region": trace.in_region, "diverged": trace.diverged,
        })

    def violating_instance(self) -> RateInstance:
        return RateInstance(AttentionConfig(N=2, n=2, D=4, d=2, H=2), lr_factor=5.0, steps=20)  # eta > 2/L


# ------------------------------------------------------------------------------ theorem 2
@dataclass(frozen=True)
class Thm2Instance:
    """[S24] Theorem 2 experiment: only ``W^Q`` trained, realisable targets.

    For each seed ``s`` in ``seed0 … seed0 + n_seeds − 1``: data and weights from
    ``config.replace(seed=s)``; a teacher ``W^Q_* ~ N(0, teacher_scale²/D)`` (its own generator)
    with the student's ``W^K, W^V, W^O`` gives ``y = MH_{W^Q_*}(X)`` per kernel (global optimum
    ``f* = 0``). GD with ``η = 1/L`` (local smoothness at ``θ_0``) for ``steps`` steps; the final
    relative loss ``f_T/f_0`` of the two kernels is compared per seed.
    """

    config: AttentionConfig = field(default_factory=lambda: AttentionConfig(N=2, n=2, D=4, d=2, H=1,
                                                                            trainable=("W_Q",)))
    n_seeds: int = 10
    steps: int = 40
    teacher_scale: float = 1.0
    seed0: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.config, AttentionConfig):
            raise TypeError(f"config must be an AttentionConfig, got {type(self.config).__name__}")
        for k in ("n_seeds",):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        if not (isinstance(self.teacher_scale, (int, float)) and self.teacher_scale > 0):
            raise ValueError(f"teacher_scale must be > 0, got {self.teacher_scale!r}")


def _thm2_run(cfg: AttentionConfig, kernel: str, steps: int, teacher_scale: float) -> dict[str, float]:
    c = cfg.replace(kernel=kernel, trainable=("W_Q",))
    model, X, _ = _quiet_build(c)
    g = make_generator(c.seed + 7_777)
    WQ_star = torch.randn(model.W_Q.shape, generator=g, dtype=torch.float64).to(model.W_Q)
    WQ_star = WQ_star * (teacher_scale / math.sqrt(c.D))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelUnderflowWarning)
        with torch.no_grad():
            y = model.functional({"W_Q": WQ_star}, X)
        p0 = model.params()
        gnorm = float(torch.func.grad(lambda p: model.loss(p, X, y))(p0)["W_Q"].norm())
        try:
            _, tr = gradient_descent(lambda p: model.loss(p, X, y), p0, steps=steps, lr="auto")
            rel = tr.final_loss / tr.losses[0] if tr.losses[0] > 0 else 0.0
            rel = rel if math.isfinite(rel) else math.inf
        except ValueError:  # zero curvature: no step possible
            rel = 1.0
    return {"rel_loss": float(rel), "grad_norm_0": gnorm}


@dataclass(frozen=True, repr=False)
class GaussianVsSoftmaxTheorem(Theorem):
    """``S24.thm2.gaussian_vs_softmax``: Gaussian-kernel GD (``W^Q`` only) ends lower than softmax.

    Test: paired one-sided exact sign test over seeds (ties dropped), ``H0: P(gauss < soft) ≤ 1/2``;
    the claim holds on an instance when ``H0`` is rejected at level ``alpha`` (confidence ``1 − alpha``).
    """

    alpha: float = 0.05
    success_tol: float = 1e-3

    def assumptions(self, inst: Thm2Instance) -> list[Assumption]:
        c = inst.config
        return [
            Assumption("only W_Q trained", True, ("W_Q",)),
            Assumption("HD >= Nn", c.HD >= c.Nn, {"HD": c.HD, "Nn": c.Nn}),
            Assumption("steps >= 1", inst.steps >= 1, inst.steps),
        ]

    def conclusion(self, inst: Thm2Instance) -> Conclusion:
        from scipy.stats import binomtest

        wins = losses = ties = 0
        g_succ = s_succ = 0
        rows = []
        for s in range(inst.seed0, inst.seed0 + inst.n_seeds):
            cfg = inst.config.replace(seed=s)
            rg = _thm2_run(cfg, "gaussian", inst.steps, inst.teacher_scale)
            rs = _thm2_run(cfg, "softmax", inst.steps, inst.teacher_scale)
            a, b = rg["rel_loss"], rs["rel_loss"]
            if a < b:
                wins += 1
            elif a > b:
                losses += 1
            else:
                ties += 1
            g_succ += a <= self.success_tol
            s_succ += b <= self.success_tol
            rows.append({"seed": s, "gaussian": a, "softmax": b})
        n = wins + losses
        p = float(binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else 1.0
        margin = relu_margin(math.log10(self.alpha / p))
        return Conclusion(margin >= 0, margin, {
            "wins_gaussian": wins, "wins_softmax": losses, "ties": ties, "p_value": p, "alpha": self.alpha,
            "success_rate_gaussian": g_succ / inst.n_seeds, "success_rate_softmax": s_succ / inst.n_seeds,
            "median_rel_loss_gaussian": float(np.median([r["gaussian"] for r in rows])),
            "median_rel_loss_softmax": float(np.median([r["softmax"] for r in rows])),
            "per_seed": rows,
        })

    def violating_instance(self) -> Thm2Instance:
        return dataclasses.replace(Thm2Instance(), steps=0)  # no step: all ties, H0 never rejected


THEOREMS: tuple[Theorem, ...] = (
    RankTheorem(
        id="S24.thm1.rank", citation="[S24] Theorem 1 (rank of B0); MATH.md §4 'B0', §5.2",
        statement="Generic B0 in R^{Nn x HD} has rank min(Nn, HD); it has full row rank (sigma_Nn(B0) > 0) "
                  "iff HD >= Nn.",
        reconstructed=True, exact=False, instance_type=AttentionConfig,
        variant_that_holds="genericity is a statement in exact arithmetic: it needs a kernel that does not "
                           "underflow (the unnormalised gaussian kernel at init_scale ~10 flushes S to 0); "
                           "softmax, or gaussian at moderate scale, held on every draw",
        margin_scale="log10(sigma_Nn(B0) / (max(Nn,HD) eps sigma_max(B0))): decades above the numerical-rank "
                     "tolerance (-inf when HD < Nn)",
    ),
    PLBoundTheorem(
        id="S24.thm1.pl_bound", citation="[S24] Theorem 1 (corrected constant); MATH.md §4 'B0', §5.3",
        statement="mu = lambda_min(J J^T) >= c_O sigma_min(B0)^2 with c_O = min_h lambda_min(W^O_h^T W^O_h) "
                  "(per-head values) or lambda_min(W^O^T W^O) (joint values); exact algebra.",
        reconstructed=False, exact=True, instance_type=AttentionConfig,
        margin_scale="(mu - bound) / lambda_max(J J^T) + 1e-10 (rounding tolerance)",
    ),
    PLBoundPaperTheorem(
        id="S24.thm1.pl_bound_paper", citation="[S24] Theorem 1, beta as stated; MATH.md §4 'B0', §5.3",
        statement="mu = lambda_min(J J^T) >= beta = sigma_min(W^O)^2 sigma_min(B0^T)^2.",
        reconstructed=True, exact=False, instance_type=AttentionConfig,
        variant_that_holds="S24.thm1.pl_bound: replace sigma_min(W^O)^2 by min_h ||W^O_h||^2 (per-head "
                           "values); "
                           "beta as stated is exact for joint values",
        margin_scale="(mu - beta) / lambda_max(J J^T) + 1e-10 (rounding tolerance)",
    ),
    RateTheorem(
        id="S24.thm1.rate", citation="[S24] Theorem 1 (linear rate); MATH.md §4 'Exact PL constant', §5.4",
        statement="With HD >= Nn and eta <= 1/L: f_t <= (1 - eta beta')^t f_0 with beta' = min_t mu_t, and "
                  "f_{t+1} <= (1 - eta mu_t) f_t at every step.",
        reconstructed=True, exact=False, instance_type=RateInstance, max_examples=25,
        variant_that_holds="L must bound the Hessian along the path, not only at theta_0",
        margin_scale="nats per step: min over t of [log(f_0 (1-eta beta')^t) - log f_t] / t and of "
                     "log(1 - eta mu_t) - log(f_{t+1}/f_t), plus 1e-9 rounding",
    ),
    GaussianVsSoftmaxTheorem(
        id="S24.thm2.gaussian_vs_softmax",
        citation="[S24] Theorem 2 (Gaussian vs softmax kernel, W^Q only); MATH.md §5.5",
        statement="With only W^Q trained on realisable targets, GD on the Gaussian kernel ends with a lower "
                  "relative loss than softmax on more seeds than chance.",
        reconstructed=True, exact=False, instance_type=Thm2Instance, max_examples=4,
        statistical_test="paired one-sided exact sign test (binomial, p = 1/2) over n_seeds seeds, ties "
                         "dropped; holds when p <= alpha = 0.05 (95% confidence)",
        margin_scale="log10(alpha / p-value): decades of significance beyond alpha",
    ),
)
