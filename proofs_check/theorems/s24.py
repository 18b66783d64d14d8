"""[S24] Theorem 1 claims (MATH.md §4 "B0", "Exact PL constant"; §5.2–5.4). Theorem 2: :mod:`.s24_thm2`.

Every ``S24.thm1.*`` id checks Theorem 1 **in its setting**: ``(W_Q, W_K, W_V)`` trained, ``W_O``
fixed. Other trainable sets are separate, named variants (``….V``: only ``W_V`` trained).

* ``S24.thm1.rank`` — generic ``B0 ∈ R^{Nn×HD}`` has full row rank when ``HD ≥ Nn``. The rank is
  judged against the attainable accuracy: ``σ_Nn(B0) ≤ max(Nn, HD)·eps·σ_max(B0)`` is *numerically*
  rank-deficient, undecidable in float64, not a failure. Such draws are re-evaluated with mpmath
  (``mp_digits``, default 400) on the same float64 weights and data: full rank there holds; a
  ``σ_Nn`` still below ``max(Nn, HD)·10^(10 − mp_digits)·σ_max`` is a failure (rank-deficient to
  390 digits). Instances too large for mpmath (``Nn·HD > mp_max_entries``) are excluded as undecidable.
* ``S24.thm1.pl_bound`` — ``μ = λ_min(JJᵀ) ≥ c_O σ²_Nn(B0)`` (exact algebra), ``c_O =
  min_h λ_min(W^O_hᵀ W^O_h)`` (per-head values) or ``λ_min(W^Oᵀ W^O)`` (joint values).
* ``S24.thm1.pl_bound_paper`` — the paper's ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` as stated (**reconstructed**).
* ``S24.thm1.rate`` — under ``HD ≥ Nn``, ``η ≤ 1/L`` and the iterates staying in the region
  ``‖θ_t − θ_0‖ ≤ R`` (checked, :mod:`proofs_check.dynamics`): ``f_t ≤ (1 − ηβ(M_0))^t f_0`` with
  ``β(M_0)`` the corrected constant **at initialisation** (``beta_form="paper"`` switches to the
  paper's β). ``η ≤ 1/L`` is the theorem's hypothesis on the region, not only at ``θ_0``: with
  ``smoothness="path"`` (default) it is checked after the run by the descent certificate
  ``f_{t+1} ≤ f_t − (η/2)‖∇f_t‖²`` at every step (a step breaking it proves ``L > 1/η`` on its
  segment, :meth:`~proofs_check.dynamics.GDTrace.descent_violations`), so a run whose curvature grew
  past ``1/η`` is outside the theorem, not a counterexample. ``S24.thm1.rate.path_min`` is the weaker
  named variant with ``β' = min_t μ_t`` along the run (the descent lemma plus PL); it keeps
  ``smoothness="theta0"`` (``L`` at ``θ_0`` only), since with the certificate assumed it would follow
  from ``‖∇f‖² ≥ 2μf`` by algebra and could not fail.

Tolerances are relative to the compared quantities' own scale and rounding: ``μ`` carries the
certified interval of ``σ_min(J)`` (at least ``8·max(m, p)·eps·σ_max(J)``), ``σ_Nn(B0)`` the
backward error ``8·max(Nn, HD)·eps·σ_max(B0)``; the margin is ``(μ − k·bound + tol) / max(μ, k·bound)``.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

from attncond.models import KernelUnderflowWarning, MultiHeadAttention

from ..configs import AttentionConfig
from ..dynamics import gradient_descent
from ..strategies import attention_configs, hd_equals_nn
from .base import EPS64, Assumption, Conclusion, Theorem, relu_margin
from .registry import register

__all__ = [
    "RankTheorem",
    "PLBoundTheorem",
    "PLBoundPaperTheorem",
    "RateTheorem",
    "RateInstance",
    "b0_matrix",
    "b0_sigma_nn_mp",
    "output_weight_constant",
    "pl_tolerance",
    "quiet_build",
    "run_rate_instance",
    "THEOREMS",
    "THM1_SETTING",
]

THM1_SETTING = ("W_Q", "W_K", "W_V")
_HD = "HD >= Nn"
_KERNEL = "kernel is softmax or gaussian ([S24])"
_DOUT = "d_out = 1 ([S24] MH, MATH.md §3)"
_DESCENT = (
    "eta <= 1/L along the path: f_{t+1} <= f_t - (eta/2)||grad f_t||^2 at every step "
    "(descent certificate; a step breaking it proves L > 1/eta on its segment)"
)


def _setting_name(trainable: tuple[str, ...]) -> str:
    tag = " (Theorem 1's setting)" if trainable == THM1_SETTING else ""
    return f"trainable = {', '.join(trainable)}{tag}"


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
    return min(_lam_min_gram(WO[h * d : (h + 1) * d]) for h in range(model.H))


def _sigma_nn(B0: torch.Tensor) -> tuple[float, float]:
    """``(σ_max(B0), σ_{Nn}(B0))`` with ``σ_{Nn} = 0`` when ``HD < Nn``."""
    sv = torch.linalg.svdvals(B0)
    Nn, HD = B0.shape
    smin = float(sv[Nn - 1]) if HD >= Nn else 0.0
    return float(sv[0]), smin


def quiet_build(cfg: AttentionConfig):
    """``cfg.build()`` with :class:`KernelUnderflowWarning` silenced (the claims judge underflow themselves)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelUnderflowWarning)
        return cfg.build()


def b0_sigma_nn_mp(cfg: AttentionConfig, digits: int = 400) -> tuple[float, float, float]:
    """``(σ_max(B0), σ_Nn(B0), log10(σ_Nn/σ_max))`` with ``B0`` formed and decomposed in mpmath at
    ``digits`` digits.

    The float64 weights and data of ``cfg`` are exact binary numbers, so this is ``B0`` of the stored
    model to ``digits`` digits (softmax with max-shift, or the unnormalised Gaussian kernel; the
    exponentials cannot underflow in mpmath). Returns Python floats (``σ_Nn`` may be below float64's
    range, then it is returned as the float nearest, possibly ``0.0``; the ``log10`` ratio is exact).
    """
    import mpmath

    if cfg.kernel not in ("softmax", "gaussian", "linear"):
        raise ValueError(
            f"b0_sigma_nn_mp supports the softmax, gaussian and linear kernels, got {cfg.kernel!r}"
        )
    model, X, _ = quiet_build(cfg)
    with mpmath.workdps(digits):
        tau = mpmath.sqrt(model.d) if model.tau is None else mpmath.mpf(model.tau)
        rows = []
        for i in range(cfg.N):
            Xi = mpmath.matrix(X[i].tolist())
            blocks = []
            for h in range(cfg.H):
                Q = Xi * mpmath.matrix(model.W_Q[h].tolist())
                K = Xi * mpmath.matrix(model.W_K[h].tolist())
                S = mpmath.matrix(cfg.n, cfg.n)
                for a in range(cfg.n):
                    if cfg.kernel == "linear":
                        for b in range(cfg.n):
                            S[a, b] = sum(Q[a, c] * K[b, c] for c in range(cfg.d)) / tau
                    elif cfg.kernel == "softmax":
                        z = [sum(Q[a, c] * K[b, c] for c in range(cfg.d)) / tau for b in range(cfg.n)]
                        m = max(z)
                        e = [mpmath.exp(v - m) for v in z]
                        tot = sum(e)
                        for b in range(cfg.n):
                            S[a, b] = e[b] / tot
                    else:
                        for b in range(cfg.n):
                            S[a, b] = mpmath.exp(
                                -sum((Q[a, c] - K[b, c]) ** 2 for c in range(cfg.d)) / (2 * tau)
                            )
                blocks.append(S * Xi)
            for a in range(cfg.n):
                rows.append([blocks[h][a, c] for h in range(cfg.H) for c in range(cfg.D)])
        B = mpmath.matrix(rows)
        sv = sorted(mpmath.svd_r(B, compute_uv=False), reverse=True)
        smax = sv[0]
        snn = sv[cfg.Nn - 1] if cfg.HD >= cfg.Nn else mpmath.mpf(0)
        log10_ratio = float(mpmath.log10(snn / smax)) if snn > 0 else -math.inf
        return float(smax), float(snn), log10_ratio


# ------------------------------------------------------------------------------------ rank
@dataclass(frozen=True, repr=False)
class RankTheorem(Theorem):
    """``S24.thm1.rank``: ``rank(B0) = Nn`` (full row rank) for generic weights when ``HD ≥ Nn``.

    Judged against attainable accuracy (module docstring); ``mp_digits = 0`` switches the
    high-precision confirmation off, ``mp_max_entries`` bounds the instances it is tried on.
    """

    mp_digits: int = 400
    mp_max_entries: int = 400

    def assumptions(self, inst: AttentionConfig) -> list[Assumption]:
        return [
            Assumption(_HD, inst.HD >= inst.Nn, {"HD": inst.HD, "Nn": inst.Nn}),
            Assumption(_KERNEL, inst.kernel in ("softmax", "gaussian"), inst.kernel),
        ]

    def measure(self, inst: AttentionConfig) -> dict[str, Any]:
        model, X, _ = quiet_build(inst)
        B0 = b0_matrix(model, X)
        Nn, HD = B0.shape
        smax, smin = _sigma_nn(B0)
        tol = max(Nn, HD) * EPS64 * smax
        q: dict[str, Any] = {
            "Nn": Nn,
            "HD": HD,
            "sigma_max(B0)": smax,
            "sigma_Nn(B0)": smin,
            "rank_tol": tol,
            "rank": int(torch.linalg.matrix_rank(B0, atol=tol)) if smax > 0 else 0,
            "precision": "float64",
            "log10_sigma_ratio_mp": None,
        }
        if (
            HD >= Nn
            and smin <= tol
            and self.mp_digits > 0
            and Nn * HD <= self.mp_max_entries
            and inst.kernel in ("softmax", "gaussian", "linear")
            and not model.kernel_options
        ):
            _, _, lr = b0_sigma_nn_mp(inst, self.mp_digits)
            q["log10_sigma_ratio_mp"] = lr
            q["precision"] = f"mpmath {self.mp_digits} digits"
        return q

    def judge(self, q: dict[str, Any], strength: float = 1.0) -> Conclusion:
        Nn, HD, smin, tol = q["Nn"], q["HD"], q["sigma_Nn(B0)"], q["rank_tol"]
        details = {**q, "min(Nn,HD)": min(Nn, HD), "generic_rank": q["rank"] == min(Nn, HD)}
        if HD < Nn:  # structural: rank <= HD < Nn
            return Conclusion(False, -math.inf, details)
        margin = math.log10(smin / tol) if smin > 0 and tol > 0 else -math.inf
        if margin > 0:
            return Conclusion(True, margin, details)
        lr = q.get("log10_sigma_ratio_mp")
        if lr is None:
            return Conclusion(
                False,
                relu_margin(margin),
                details,
                excluded="numerically rank-deficient: sigma_Nn(B0) <= max(Nn,HD) eps sigma_max(B0), "
                "undecidable in float64",
            )
        mp_tol = math.log10(max(Nn, HD)) - (self.mp_digits - 10)  # log10 of the mp rank tolerance
        # at high precision: full rank resolved, or rank-deficient to (mp_digits - 10) digits (a failure)
        return Conclusion(lr > mp_tol, relu_margin(lr - mp_tol), {**details, "resolved_by": "mpmath"})

    def violating_instance(self) -> AttentionConfig:
        return AttentionConfig(N=3, n=2, D=2, d=1, H=2)  # HD = 4 < Nn = 6


# -------------------------------------------------------------------------------- PL bounds
def pl_tolerance(
    mu_interval: tuple[float, float],
    smax_J: float,
    shape_J: tuple[int, int],
    c_O: float,
    smin_B: float,
    smax_B: float,
    shape_B: tuple[int, int],
) -> tuple[float, float]:
    """Rounding tolerances ``(tol_μ, tol_bound)`` of ``μ = σ²_min(J)`` and ``c_O σ²_Nn(B0)``.

    ``δσ_J = max(certified half-width of σ_min(J), 8 max(m, p) eps σ_max(J))`` and
    ``tol_μ = 2σ_min δσ_J + δσ_J²``; ``δσ_B = 8 max(Nn, HD) eps σ_max(B0)`` and
    ``tol_bound = c_O (2σ_Nn δσ_B + δσ_B²) + 16 eps c_O σ²_Nn``. Both scale with the compared
    quantities, never with ``λ_max(JJᵀ)`` alone.
    """
    lo, hi = mu_interval
    smin_J = 0.5 * (lo + hi)
    dJ = max(0.5 * (hi - lo), 8 * max(shape_J) * EPS64 * smax_J)
    dB = 8 * max(shape_B) * EPS64 * smax_B
    return 2 * smin_J * dJ + dJ * dJ, c_O * (2 * smin_B * dB + dB * dB) + 16 * EPS64 * c_O * smin_B**2


def _pl_quantities(inst: AttentionConfig) -> dict[str, Any]:
    from attncond.spectral import JacobianOperator, extreme_singular_values

    model, X, _ = quiet_build(inst)
    J = JacobianOperator(lambda p: model.functional(p, X), model.params())
    m, p = J.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelUnderflowWarning)
        est = extreme_singular_values(J, which=("max", "min"), tol=1e-12)
    structural = m > p or bool(est.rank_deficient)
    smin_J = 0.0 if structural else float(est.sigma_min)
    interval = (0.0, 0.0) if m > p else tuple(float(v) for v in est.sigma_min_interval)
    B0 = b0_matrix(model, X)
    smax_B, smin_B = _sigma_nn(B0)
    c_corr = output_weight_constant(model, inst.value_param)
    c_paper = output_weight_constant(model, "joint")
    tol_mu, tol_corr = pl_tolerance(
        interval, float(est.sigma_max), (m, p), c_corr, smin_B, smax_B, tuple(B0.shape)
    )
    _, tol_paper = pl_tolerance(
        interval, float(est.sigma_max), (m, p), c_paper, smin_B, smax_B, tuple(B0.shape)
    )
    return {
        "mu": smin_J**2,
        "lambda_max(JJt)": float(est.sigma_max) ** 2,
        "sigma_min(B0)": smin_B,
        "corrected_bound": c_corr * smin_B**2,
        "beta_paper": c_paper * smin_B**2,
        "c_O_corrected": c_corr,
        "sigma_min(W_O)^2": c_paper,
        "tol_mu": tol_mu,
        "tol_corrected": tol_corr,
        "tol_paper": tol_paper,
        "J_shape": [m, p],
    }


def pl_margin(mu: float, bound: float, tol: float) -> float:
    """``(μ − bound + tol) / max(μ, bound)``: relative slack of ``μ ≥ bound`` (``+inf`` if both are 0)."""
    scale = max(mu, bound)
    if scale <= 0:
        return math.inf
    return relu_margin((mu - bound + tol) / scale)


@dataclass(frozen=True, repr=False)
class PLBoundTheorem(Theorem):
    """``S24.thm1.pl_bound``: ``μ ≥ c_O σ²_min(B0)`` (exact; MATH.md §4 and §5.3).

    ``J_V J_Vᵀ = Σ_h (W^O_hᵀW^O_h) ⊗ B_hB_hᵀ ⪰ min_h λ_min(W^O_hᵀW^O_h) B0B0ᵀ`` and ``JJᵀ ⪰ J_VJ_Vᵀ``.
    ``trainable`` is the setting (switchable: Theorem 1's ``(W_Q, W_K, W_V)`` or a named variant).
    """

    trainable: tuple[str, ...] = THM1_SETTING
    bound_key: str = "corrected_bound"
    tol_key: str = "tol_corrected"

    def assumptions(self, inst: AttentionConfig) -> list[Assumption]:
        return [
            Assumption(_setting_name(self.trainable), tuple(inst.trainable) == self.trainable, inst.trainable)
        ]

    def measure(self, inst: AttentionConfig) -> dict[str, Any]:
        return _pl_quantities(inst)

    def judge(self, q: dict[str, Any], strength: float = 1.0) -> Conclusion:
        bound = strength * q[self.bound_key]
        tol = q["tol_mu"] + strength * q[self.tol_key]
        margin = pl_margin(q["mu"], bound, tol)
        vac = (
            None
            if q[self.bound_key] > q[self.tol_key]
            else "bound <= rounding of 0 (sigma_Nn(B0) = 0 or below)"
        )
        return Conclusion(
            margin >= 0,
            margin,
            {**q, "paper_beta_holds": q["mu"] + q["tol_mu"] + q["tol_paper"] >= q["beta_paper"]},
            vacuous=vac,
        )

    def violating_instance(self) -> AttentionConfig:
        # only W_O trained: p = Hd = 2 < Nn = 4, so mu = 0 while the bound (W_V's) is > 0
        return AttentionConfig(N=2, n=2, D=2, d=1, H=2, trainable=("W_O",))


@dataclass(frozen=True, repr=False)
class PLBoundPaperTheorem(PLBoundTheorem):
    """``S24.thm1.pl_bound_paper``: ``μ ≥ σ²_min(W^O) σ²_min(B0ᵀ)`` as stated (reconstructed)."""

    bound_key: str = "beta_paper"
    tol_key: str = "tol_paper"

    def assumptions(self, inst: AttentionConfig) -> list[Assumption]:
        return super().assumptions(inst) + [
            Assumption(_HD, inst.HD >= inst.Nn, {"HD": inst.HD, "Nn": inst.Nn}),
            Assumption(_DOUT, inst.d_out == 1, inst.d_out),
        ]

    def violating_instance(self) -> AttentionConfig:
        if self.trainable != THM1_SETTING:  # per-head values, only W_V trained
            return AttentionConfig(N=2, n=3, D=4, d=2, H=2, trainable=self.trainable, seed=0)
        return _PAPER_COUNTEREXAMPLE


# in Theorem 1's setting, found by `attncond check S24.thm1.pl_bound_paper` (seed 0) and shrunk
_PAPER_COUNTEREXAMPLE = AttentionConfig(N=1, n=2, D=3, d=1, H=2, trainable=THM1_SETTING, seed=0)


# -------------------------------------------------------------------------------------- rate
@dataclass(frozen=True)
class RateInstance:
    """A GD run on an [S24] instance: ``η = lr_factor / L`` with ``L`` the local smoothness at ``θ_0``,
    ``steps`` steps (the step budget)."""

    config: AttentionConfig = field(default_factory=AttentionConfig)
    lr_factor: float = 1.0
    steps: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.config, AttentionConfig):
            raise TypeError(f"config must be an AttentionConfig, got {type(self.config).__name__}")
        if not (
            isinstance(self.lr_factor, (int, float)) and math.isfinite(self.lr_factor) and self.lr_factor > 0
        ):
            raise ValueError(f"lr_factor must be a finite number > 0, got {self.lr_factor!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")


def run_rate_instance(inst: RateInstance, mu_every: int = 1):
    """Run the GD of a :class:`RateInstance`; returns ``(trace, rate_check)`` (``β'`` = min recorded μ)."""
    trace = _rate_trace(inst, mu_every)
    return trace, trace.rate_check()


@functools.lru_cache(maxsize=128)
def _rate_trace(inst: RateInstance, mu_every: int):
    model, X, y = quiet_build(inst.config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelUnderflowWarning)
        _, trace = gradient_descent(
            lambda p: model.loss(p, X, y),
            model.params(),
            steps=inst.steps,
            lr="auto",
            safety=float(inst.lr_factor),
            output_fn=lambda p: model.functional(p, X),
            mu_every=mu_every,
        )
    return trace


@functools.lru_cache(maxsize=128)
def _beta0(cfg: AttentionConfig, form: str) -> float:
    model, X, _ = quiet_build(cfg)
    _, smin = _sigma_nn(b0_matrix(model, X))
    return output_weight_constant(model, "joint" if form == "paper" else cfg.value_param) * smin**2


@dataclass(frozen=True, repr=False)
class RateTheorem(Theorem):
    """``S24.thm1.rate``: ``f_t ≤ (1 − ηβ)^t f_0`` for ``η ≤ 1/L`` inside the region.

    Switches: ``beta_source`` — ``"init"`` (β(M_0), Theorem 1) or ``"path_min"`` (β' = min_t μ_t,
    the descent-lemma variant, which also checks ``f_{t+1} ≤ (1 − ημ_t) f_t`` per step);
    ``beta_form`` — ``"corrected"`` (per-head ``c_O``) or ``"paper"``; ``trainable`` — the setting;
    ``smoothness`` — where ``η ≤ 1/L`` is checked: ``"path"`` (``L`` at ``θ_0`` before the run, and the
    descent certificate ``f_{t+1} ≤ f_t − (η/2)‖∇f_t‖²`` at every step after it) or ``"theta0"`` (``L``
    at ``θ_0`` only).
    """

    beta_source: str = "init"
    beta_form: str = "corrected"
    trainable: tuple[str, ...] = THM1_SETTING
    smoothness: str = "path"

    def __post_init__(self) -> None:
        if self.smoothness not in ("path", "theta0"):
            raise ValueError(f"smoothness must be 'path' or 'theta0', got {self.smoothness!r}")

    def prior_assumptions(self, inst: RateInstance) -> list[Assumption]:
        c = inst.config
        return [
            Assumption(_HD, c.HD >= c.Nn, {"HD": c.HD, "Nn": c.Nn}),
            Assumption("eta <= 1/L (L = local smoothness at theta_0)", inst.lr_factor <= 1.0, inst.lr_factor),
            Assumption(_setting_name(self.trainable), tuple(c.trainable) == self.trainable, c.trainable),
        ]

    def assumptions(self, inst: RateInstance) -> list[Assumption]:
        pri = self.prior_assumptions(inst)
        if not all(a.holds for a in pri):
            return pri
        tr = _rate_trace(inst, 1 if self.beta_source == "path_min" else inst.steps)
        dist = max(tr.distances) if tr.distances else math.nan
        post = [
            Assumption(
                "iterates stay in the region ||theta_t - theta_0|| <= R",
                bool(tr.in_region),
                {"max_distance": dist, "R": tr.radius},
            )
        ]
        if self.smoothness == "path":
            bad = tr.descent_violations()
            post.append(Assumption(_DESCENT, not bad, {"violating_steps": bad[:10], "count": len(bad)}))
        return pri + post

    def measure(self, inst: RateInstance) -> dict[str, Any]:
        tr = _rate_trace(inst, 1 if self.beta_source == "path_min" else inst.steps)
        beta = tr.beta_prime if self.beta_source == "path_min" else _beta0(inst.config, self.beta_form)
        return {
            "losses": list(tr.losses),
            "eta": tr.lr,
            "beta": beta,
            "mu_steps": list(tr.mu_steps),
            "mu": list(tr.mu),
            "L": tr.smoothness.L if tr.smoothness else None,
            "radius": tr.radius,
            "max_distance": max(tr.distances) if tr.distances else None,
            "in_region": tr.in_region,
            "diverged": tr.diverged,
            "beta_source": self.beta_source,
        }

    def judge(self, q: dict[str, Any], strength: float = 1.0) -> Conclusion:
        f, eta, beta = q["losses"], q["eta"], q["beta"]
        rate = max(0.0, 1.0 - strength * eta * beta)
        worst = math.inf
        for t in range(1, len(f)):
            worst = min(worst, _nats(f[0] * rate**t, f[t]) / t)
        if self.beta_source == "path_min":
            for t, mu in zip(q["mu_steps"], q["mu"], strict=True):
                if t + 1 < len(f) and f[t] > 0:
                    worst = min(worst, _nats(max(0.0, 1.0 - strength * eta * mu), f[t + 1] / f[t]))
        margin = relu_margin(worst + 1e-12)
        T = len(f) - 1
        observed = (f[-1] / f[0]) ** (1.0 / T) if T and f[0] > 0 and math.isfinite(f[-1]) else math.nan
        vac = None if eta * beta > EPS64 else "eta beta <= eps: the bound f_t <= f_0 is trivial"
        return Conclusion(
            margin >= 0,
            margin,
            {
                **{k: v for k, v in q.items() if k != "losses"},
                "predicted_contraction": rate,
                "observed_mean_contraction": observed,
                "f_0": f[0],
                "f_T": f[-1],
            },
            vacuous=vac,
        )

    def violating_instance(self) -> RateInstance:
        return RateInstance(AttentionConfig(N=2, n=2, D=4, d=2, H=2), lr_factor=5.0, steps=20)  # eta > 2/L


def _nats(bound: float, value: float) -> float:
    """``log(bound) − log(value)`` (``−inf`` for a non-finite value or a zero bound under a positive value)."""
    if not math.isfinite(value) or (bound <= 0 < value):
        return -math.inf
    return math.inf if value <= 0 else math.log(bound) - math.log(value)


# ------------------------------------------------------------------------------ registration
_PAPER = (
    "[S24] PL bound (MATH.md §5.3): mu >= min_h ||W^O_h||^2 sigma_min^2(B_0) always (exact algebra). "
    "Check the paper's beta as stated, and report where it fails to lower-bound mu."
)
_PAPER_RANK = "[S24] rank (MATH.md §5.2): generic B_0 has rank min(Nn, HD), so full row rank iff HD >= Nn."
_PAPER_RATE = (
    "[S24] Theorem 1 rate (MATH.md §5.4): under HD >= Nn, eta <= 1/L and weights staying in the region "
    "around M_0 that the theorem assumes, the GD loss satisfies f_t <= (1 - eta beta)^t f_0 with beta "
    "computed at initialisation (beta(M_0), in the corrected per-head form where the paper's fails). "
    "The region is part of the assumptions and is checked. A weaker variant, with beta' the smallest mu "
    "seen along the trajectory, reduces to the descent lemma plus PL; keep it only as a named variant."
)
_PL_SCALE = "(mu - bound + tol) / max(mu, bound), tol from the rounding of mu and of the bound: relative units"
_RATE_SCALE = "nats per step: min over t of [log(f_0 (1 - eta beta)^t) - log f_t] / t, plus 1e-12"

THEOREMS: tuple[Theorem, ...] = (
    RankTheorem(
        id="S24.thm1.rank",
        citation="[S24] Theorem 1 (rank of B0); MATH.md §4 'B0', §5.2",
        paper_statement=_PAPER_RANK,
        statement="HD >= Nn and a softmax or gaussian kernel: sigma_Nn(B0) > max(Nn,HD) eps sigma_max(B0) "
        "(full row rank, decided against attainable accuracy; below it, confirmed at 400 digits or "
        "excluded as undecidable).",
        reconstructed=True,
        exact=False,
        instance_type=AttentionConfig,
        strengths=(),
        margin_scale="log10(sigma_Nn(B0) / (max(Nn,HD) eps sigma_max(B0))): decades above the numerical-rank "
        "tolerance (at the precision used; -inf when HD < Nn)",
    ),
    PLBoundTheorem(
        id="S24.thm1.pl_bound",
        citation="[S24] Theorem 1 (corrected constant); MATH.md §4 'B0', §5.3",
        paper_statement=_PAPER,
        statement="(W_Q, W_K, W_V) trained: mu = lambda_min(J J^T) >= c_O sigma_Nn(B0)^2 with c_O = min_h "
        "lambda_min(W^O_h^T W^O_h) (per-head values) or lambda_min(W^O^T W^O) (joint values); exact.",
        reconstructed=False,
        exact=True,
        instance_type=AttentionConfig,
        margin_scale=_PL_SCALE,
    ),
    PLBoundPaperTheorem(
        id="S24.thm1.pl_bound_paper",
        citation="[S24] Theorem 1, beta as stated; MATH.md §4 'B0', §5.3",
        paper_statement=_PAPER,
        statement="(W_Q, W_K, W_V) trained, HD >= Nn, d_out = 1: mu = lambda_min(J J^T) >= beta = "
        "sigma_min(W^O)^2 "
        "sigma_min(B0^T)^2.",
        reconstructed=True,
        exact=False,
        instance_type=AttentionConfig,
        margin_scale=_PL_SCALE,
        variant_that_holds="S24.thm1.pl_bound: replace sigma_min(W^O)^2 by min_h ||W^O_h||^2 (per-head "
        "values); "
        "beta as stated is exact for joint values",
    ),
    PLBoundPaperTheorem(
        id="S24.thm1.pl_bound_paper.V",
        citation="[S24] Theorem 1, beta as stated, only W_V trained (a variant "
        "outside Theorem 1's setting); MATH.md §4 'B0', §5.3",
        paper_statement=_PAPER,
        statement="Only W_V trained, HD >= Nn, d_out = 1: mu >= beta = sigma_min(W^O)^2 sigma_min(B0^T)^2.",
        reconstructed=True,
        exact=False,
        instance_type=AttentionConfig,
        margin_scale=_PL_SCALE,
        trainable=("W_V",),
        variant_that_holds="S24.thm1.pl_bound (corrected per-head constant)",
    ),
    RateTheorem(
        id="S24.thm1.rate",
        citation="[S24] Theorem 1 (linear rate); MATH.md §4 'Exact PL constant', §5.4",
        paper_statement=_PAPER_RATE,
        statement="(W_Q, W_K, W_V) trained, HD >= Nn, eta <= 1/L (at theta_0, and along the path by the "
        "descent certificate f_{t+1} <= f_t - (eta/2)||grad f_t||^2), iterates within R = "
        "2 sqrt(2 Lambda_0 f_0)/mu_0 of theta_0: f_t <= (1 - eta beta(M_0))^t f_0, beta(M_0) = c_O "
        "sigma_Nn(B0)^2 at initialisation.",
        reconstructed=True,
        exact=False,
        instance_type=RateInstance,
        max_examples=40,
        variant_that_holds="none known; the failures seen so far (2/38, seed 0) broke the descent certificate, "
        "i.e. eta > 1/L along the path, and are now outside the hypothesis",
        margin_scale=_RATE_SCALE,
    ),
    RateTheorem(
        id="S24.thm1.rate.path_min",
        citation="[S24] Theorem 1 rate, weaker variant beta' = min_t mu_t; MATH.md §5.4",
        paper_statement=_PAPER_RATE,
        statement="As S24.thm1.rate with beta' = min_t mu_t measured along the run, and f_{t+1} <= "
        "(1 - eta mu_t) "
        "f_t at every step (descent lemma plus PL).",
        reconstructed=True,
        exact=False,
        instance_type=RateInstance,
        max_examples=25,
        beta_source="path_min",
        # L at theta_0 only: with the descent certificate assumed, f_{t+1} <= (1 - eta mu_t) f_t would follow
        # from ||grad f||^2 >= 2 mu f by algebra, and the check could not fail
        smoothness="theta0",
        variant_that_holds="L must bound the Hessian along the path, not only at theta_0",
        margin_scale=_RATE_SCALE + "; and log(1 - eta mu_t) - log(f_{t+1}/f_t)",
    ),
)

_SMALL = dict(N=(1, 3), n=(2, 3), d=(1, 2), H=(1, 3))
_SCALES = dict(init_scale=(1e-2, 10.0))


def _rank_strategy(**kw: Any):
    return st.one_of(
        attention_configs(**_SMALL, D=(1, 6), hd_at_least_nn=True, **_SCALES, **kw),
        hd_equals_nn(N=(1, 3), n=(2, 3), H=(1, 3), D_max=6, **_SCALES, **kw),
    )


def _pl(trainables: tuple[tuple[str, ...], ...], d_out: Any = (1, 2), **kw: Any):
    return attention_configs(
        **_SMALL, D=(1, 6), d_out=d_out, value_params=("per_head", "joint"), trainables=trainables, **kw
    )


def _rate(cfg: Any, lr=(0.1, 1.0), steps: int = 15):
    return st.builds(RateInstance, config=cfg, lr_factor=st.floats(*lr), steps=st.just(steps))


def _rate_main():
    # half the draws near-uniform (init_scale 0.01-0.3) for 40 steps: there W_Q, W_K add little to mu, so
    # beta(M_0) is close to the slowest rate and a too-fast rate (bound x10) can be told from the claim
    return st.one_of(
        _rate(attention_configs(**_RATE_CFG, hd_at_least_nn=True)),
        _rate(
            attention_configs(**_RATE_CFG, hd_at_least_nn=True, init_scale=(0.01, 0.3)), lr=(0.5, 1.0), steps=40
        ),
    )


_RATE_CFG = dict(N=(1, 2), n=2, D=(2, 4), d=(1, 2), H=(1, 2), kernels=("softmax", "gaussian"))
_NO_V = (("W_Q", "W_K"), ("W_O",))

register(
    THEOREMS[0],
    _rank_strategy,
    violations={
        _HD: lambda: attention_configs(**_SMALL, D=(1, 6), hd_below_nn=True, **_SCALES),
        # linear kernel: S_h = X W_Q W_K^T X^T / tau has rank <= d, so with H d < n no sample
        # block of B0 has full row rank
        _KERNEL: lambda: attention_configs(
            N=(1, 3), n=(2, 3), D=(2, 6), d=1, H=1, kernels=("linear",), hd_at_least_nn=True, **_SCALES
        ),
    },
    bias="HD >= Nn by construction, half the draws on the boundary HD = Nn",
)
register(
    THEOREMS[1],
    lambda: st.one_of(_pl((THM1_SETTING,), hd_at_least_nn=True), _pl((THM1_SETTING,))),
    violations={_setting_name(THM1_SETTING): lambda: _pl(_NO_V, hd_at_least_nn=True)},
    bias="half the draws have HD >= Nn (elsewhere sigma_Nn(B0) = 0 and the bound is vacuous)",
)
register(
    THEOREMS[2],
    lambda: _pl((THM1_SETTING,), 1, hd_at_least_nn=True),
    violations={
        _setting_name(THM1_SETTING): lambda: _pl(_NO_V, 1, hd_at_least_nn=True),
        _HD: lambda: _pl((THM1_SETTING,), 1, hd_below_nn=True),
        _DOUT: lambda: _pl((THM1_SETTING,), 2, hd_at_least_nn=True),
    },
    bias="HD >= Nn by construction (the bound is vacuous elsewhere)",
)
register(
    THEOREMS[3],
    lambda: _pl((("W_V",),), 1, hd_at_least_nn=True),
    violations={
        _setting_name(("W_V",)): lambda: _pl((("W_O",),), 1, hd_at_least_nn=True),
        _HD: lambda: _pl((("W_V",),), 1, hd_below_nn=True),
        _DOUT: lambda: _pl((("W_V",),), 2, hd_at_least_nn=True),
    },
    bias="HD >= Nn by construction (the bound is vacuous elsewhere)",
)
_ETA = "eta <= 1/L (L = local smoothness at theta_0)"
_RATE_BIAS = (
    "HD >= Nn by construction; eta = lr_factor/L; half the draws 15 steps (init_scale 0.3-3, "
    "lr_factor 0.1-1), half 40 steps near-uniform (init_scale 0.01-0.3, lr_factor 0.5-1), where "
    "beta(M_0) is closest to the observed rate"
)
register(
    THEOREMS[4],
    _rate_main,
    violations={
        _HD: lambda: _rate(attention_configs(**_RATE_CFG, hd_below_nn=True)),
        _ETA: lambda: _rate(attention_configs(**_RATE_CFG, hd_at_least_nn=True), lr=(1.5, 5.0)),
        _setting_name(THM1_SETTING): lambda: _rate(
            attention_configs(**_RATE_CFG, hd_at_least_nn=True, trainables=(("W_Q",),))
        ),
    },
    bias=_RATE_BIAS,
)
# the path-min variant is the descent lemma plus PL: it needs neither HD >= Nn nor Theorem 1's trainable set
# (dropping either was caught on 2/15 and 0/15 draws), only the step size
register(
    THEOREMS[5],
    _rate_main,
    violations={_ETA: lambda: _rate(attention_configs(**_RATE_CFG, hd_at_least_nn=True), lr=(1.5, 5.0))},
    bias=_RATE_BIAS,
)
