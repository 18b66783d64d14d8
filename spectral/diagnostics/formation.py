r"""Formation error: how far a formed ``B0`` or ``Z`` can lie from the mathematical matrix (MATH.md §2, §4).

A certified interval of :func:`attncond.spectral.extreme_singular_values` contains a singular value of
the matrix *as stored*. ``B0`` ([S24]) and ``Z`` ([Q25]) are formed in floating point from the attention
``S = kernel(X W_Q, X W_K)``, and the stored matrix differs from the mathematical one at the same
(float) weights and inputs. The difference is not always at rounding level: tokens with a large common
component give logits ``ℓ ≈ 7·10⁹`` that differ by ``O(1)``, and ``ℓ`` is formed with an absolute error
``≈ eps·|q||k|``, so ``S`` — and ``B0`` — carry a relative error ``≈ 10⁻⁶``, 10⁹ times the solvers'
rounding allowance; entries that underflow (an unnormalised Gaussian kernel at large distances, cubic
products of tiny inputs) lose everything relative. :func:`formation_bound` bounds the difference by
standard floating-point error analysis (Higham, *Accuracy and Stability*, §3: ``|fl(AB) − AB| ≤
γ_k |A||B|``, ``γ_k = k u/(1 − k u)``, ``u = eps/2``, plus ``k·λ`` with ``λ`` the smallest subnormal
for gradual underflow), componentwise through every step the model takes:

* ``Q̂ = fl(X W_Q)``: ``|Q̂ − Q| ≤ e_Q = γ_D |X||W_Q| + Dλ`` (the same for ``K``; for key-shift
  invariant kernels the model forms ``K̂ = fl(fl(X − 1x_rᵀ) W_K)``, :func:`models.key_reference`, and
  ``e_K = γ_{D+1}|X̂ − 1x_rᵀ||W_K| + Dλ``: the logits of shifted keys give the same softmax rows);
* dot logits ``ℓ = q·k/τ``: ``|ℓ̂ − ℓ| ≤ (e_Q|K̂|ᵀ + |Q|e_Kᵀ + γ_d |Q̂||K̂|ᵀ + dλ)(1 + γ_3)/τ + γ_3|ℓ̂| + λ``;
* distance logits ``ℓ = −‖q − k‖²/(2τ)`` from explicit differences ``δ̂ = fl(q̂ − k̂)``, ``|δ̂ − δ| ≤ e =
  u|δ̂|/(1 − u) + e_Q + e_K``: ``|ℓ̂ − ℓ| ≤ (γ_{d+1} Σδ̂² + Σ(2|δ̂|e + e²) + (d+1)λ)(1 + γ_3)/(2τ) + γ_3|ℓ̂| + λ``;
* softmax rows (max-shifted, exp, sum, divide): with ``η_a = max_j (|ℓ̂_aj − ℓ_aj| + u|ℓ̂_aj − ℓ̂_am|/(1 − u))``
  (the shift's own rounding is a logit perturbation), ``S ∈ S̃·[e^{−2η}, e^{2η}]`` for the exact softmax ``S̃``
  of the computed logits and ``|Ŝ − S̃| ≤ γ' S̃ + 2λ``, ``γ' = γ_{n+4}``: ``|Ŝ − S| ≤ (Ŝ + 2λ)(γ' +
  expm1(2η))/(1 − γ') + 2λ``; ``exp`` rows: the same with ``expm1(|Δℓ|)`` entrywise and ``γ' = γ_2``;
  identity rows: ``|Ŝ − S| ≤ |ℓ̂ − ℓ|``;
* ``B̂ = fl(Ŝ X)``: ``|B̂ − S X| ≤ |Ŝ − S||X| + γ_n|Ŝ||X| + nλ``; for softmax rows ``Σ_j S_aj = 1`` exactly,
  so ``(Ŝ − S)X = (Ŝ − S)(X − 1x_rᵀ) + (Ŝ1 − 1)x_rᵀ`` (``x_r`` the first token): the error of a common
  component of the tokens is only that of the computed row sums;
* ``Ẑ = fl(B̂ W_V) (+ X)``: ``|Ẑ − Z| ≤ E_B|W_V| + γ_D|B̂||W_V| + Dλ (+ u|Ẑ|)``.

Then ``‖M̂ − M‖₂ ≤ ‖E‖_F`` for the componentwise bound ``E`` (``|A| ≤ E`` entrywise gives
``‖A‖₂ ≤ ‖E‖₂ ≤ ‖E‖_F``), and by Weyl's inequality every singular value of ``M`` lies within that of
the stored one's: :func:`widen` adds it to both ends of every interval. The bound is evaluated in
float64 (also for float32 models, whose ``u`` it uses) and rounded up. A kernel form the analysis does
not cover (NormSoftmax's data-dependent temperature) or a bound that overflows is *not bounded*: the
intervals become ``[0, inf]`` and ``converged=False``, with the reason.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from attncond.models import AttentionBlock, MultiHeadAttention, kernel_variant, key_reference
from attncond.spectral.results import SpectralEstimate, record_repr, record_to_dict

__all__ = ["FormationBound", "formation_bound", "widen", "B0_MATRIX", "Z_MATRIX"]

#: the formed matrices :func:`formation_bound` covers
B0_MATRIX, Z_MATRIX = "B0", "Z"
#: (logits, row map) forms of :class:`models.KernelForm` whose formation the analysis covers
BOUNDED_LOGITS: tuple[str, ...] = ("dot", "dist")
BOUNDED_ROW_MAPS: tuple[str, ...] = ("softmax", "exp", "identity")
#: relative safety factor on the evaluated bound (its own float64 evaluation rounds)
SAFETY = 1.0 + 1e-6


@dataclass(frozen=True, repr=False)
class FormationBound:
    """``‖M̂ − M‖₂ ≤ norm`` for the formed matrix ``M̂`` (``matrix``: ``"B0"`` or ``"Z"``) and the
    mathematical ``M`` at the same float weights and inputs (module docstring).

    ``norm`` is ``inf`` where the analysis does not apply (``reason`` says why); ``kernel`` and
    ``dtype`` name what was analysed.
    """

    matrix: str
    norm: float
    kernel: str
    dtype: str
    reason: str | None = None

    @property
    def bounded(self) -> bool:
        """Whether ``norm`` is a finite bound."""
        return math.isfinite(self.norm)

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    def __repr__(self) -> str:
        return record_repr(self, ("matrix", "norm", "kernel", "dtype", "reason"))


def _gamma(k: int, u: float) -> float:
    """``γ_k = k u/(1 − k u)`` (Higham's constant; ``inf`` when ``k u ≥ 1``)."""
    ku = k * u
    return ku / (1.0 - ku) if ku < 1.0 else math.inf


def _logit_error(Qh: torch.Tensor, Kh: torch.Tensor, P: torch.Tensor, R: torch.Tensor, logits: str,
                 tau: float, D: int, u: float, lam: float,
                 shifted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ℓ̂, bound on |ℓ̂ − ℓ|)``, both ``(..., n, n)`` float64, for dot or distance logits.

    ``Qh, Kh``: the computed projections (float64 copies); ``P = |X||W_Q|``, ``R = |X_k||W_K|`` with
    ``X_k`` the tokens the keys are formed from. ``shifted``: ``X_k = fl(X − 1x_rᵀ)``
    (:func:`models.key_reference`), one more rounding, ``|K̂ − K| ≤ γ_{D+1}|X̂_k||W_K|``; the logits are
    then those of the shifted keys, which give the same softmax rows.
    """
    d = Qh.shape[-1]
    g3 = _gamma(3, u)
    eQ = _gamma(D, u) * P + D * lam
    eK = _gamma(D + int(shifted), u) * R + D * lam
    if logits == "dot":
        Qa, Ka = Qh.abs(), Kh.abs()
        err = eQ @ Ka.transpose(-1, -2) + (Qa + eQ) @ eK.transpose(-1, -2) + _gamma(d, u) * (
            Qa @ Ka.transpose(-1, -2)) + d * lam
        ell = Qh @ Kh.transpose(-1, -2) / tau
        return ell, err * (1.0 + g3) / tau + g3 * ell.abs() + lam
    diff = Qh.unsqueeze(-2) - Kh.unsqueeze(-3)  # (..., a, j, d): δ̂ as the kernel forms it
    e = u * diff.abs() / (1.0 - u) + eQ.unsqueeze(-2) + eK.unsqueeze(-3)
    s2 = (diff * diff).sum(-1)
    err = _gamma(d + 1, u) * s2 + (2.0 * diff.abs() * e + e * e).sum(-1) + (d + 1) * lam
    ell = -s2 / (2.0 * tau)
    return ell, err * (1.0 + g3) / (2.0 * tau) + g3 * ell.abs() + lam


def _attention_error(S: torch.Tensor, ell: torch.Tensor, dell: torch.Tensor, row_map: str, u: float,
                     lam: float) -> torch.Tensor:
    """Bound on ``|Ŝ − S|`` from the computed ``Ŝ`` and the logit bound ``dell`` (module docstring).

    Two valid bounds, the smaller taken entrywise: the relative one (``S/S̃ ∈ e^{±2η}``), tight while the
    logit errors are below 1, and the gap one, tight at sharp rows whatever the logit error: for
    ``j ≠ m = argmax`` the true ``S_aj ≤ exp(ℓ_aj − ℓ_am) ≤ G_aj = exp(ℓ̂_aj − ℓ̂_am + Δ_aj + Δ_am)``, so
    ``|Ŝ_aj − S_aj| ≤ max(Ŝ_aj, G_aj)``, and ``|Ŝ_am − S_am| ≤ |Ŝ_am − 1| + Σ_{j≠m} G_aj`` (``exp`` rows:
    ``S ≤ exp(ℓ̂ + Δ)``).
    """
    n = S.shape[-1]
    if row_map == "identity":
        return dell
    if row_map == "exp":
        g = _gamma(2, u)
        rel = (S + 2 * lam) * (g + torch.expm1(dell)) / (1.0 - g) + 2 * lam
        gap = torch.maximum(S, torch.exp(ell + dell) * (1.0 + g)) + 2 * lam
        return torch.minimum(torch.nan_to_num(rel, nan=math.inf), gap)
    m = ell.argmax(-1, keepdim=True)
    shift = ell - torch.take_along_dim(ell, m, -1)
    dshift = dell + u * shift.abs() / (1.0 - u)  # logit perturbation, the shift's rounding included
    eta = dshift.amax(-1, keepdim=True)
    g = _gamma(n + 4, u)
    rel = (S + 2 * lam) * (g + torch.expm1(2.0 * eta)) / (1.0 - g) + 2 * lam
    onehot = torch.zeros_like(S).scatter_(-1, m, 1.0).bool()
    G = torch.where(onehot, 0.0, torch.exp(shift + dshift + torch.take_along_dim(dshift, m, -1)))
    gap = torch.where(onehot, (torch.take_along_dim(S, m, -1) - 1.0).abs() + G.sum(-1, keepdim=True),
                      torch.maximum(S, G)) * (1.0 + g) + 2 * lam
    return torch.minimum(torch.nan_to_num(rel, nan=math.inf), gap)


def _weighted_error(S: torch.Tensor, dS: torch.Tensor, X: torch.Tensor, row_map: str, u: float,
                    lam: float) -> torch.Tensor:
    """Bound on ``|fl(Ŝ X) − S X|`` per head, ``(N, H, n, D)``; ``X`` is ``(N, 1, n, D)`` float64."""
    n = S.shape[-1]
    Xa = X.abs()
    rounding = _gamma(n, u) * (S @ Xa) + n * lam
    if row_map != "softmax":
        return dS @ Xa + rounding
    xr = X[..., :1, :]  # the first token: (Ŝ − S)X = (Ŝ − S)(X − 1x_rᵀ) + (Ŝ1 − 1)x_rᵀ
    u64 = torch.finfo(torch.float64).eps / 2
    rs = S.sum(-1, keepdim=True)
    row_sum_err = (rs - 1.0).abs() + _gamma(n, u64) * rs + torch.finfo(torch.float64).tiny
    return dS @ (X - xr).abs() + row_sum_err * xr.abs() + rounding


def _heads(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_Q, W_K`` as ``(H, D, d)`` (a [Q25] block has one head)."""
    WQ, WK = model.W_Q.detach(), model.W_K.detach()
    return (WQ, WK) if WQ.ndim == 3 else (WQ.unsqueeze(0), WK.unsqueeze(0))


def _projections(model: Any, Xt: torch.Tensor, Xk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Q̂, K̂`` of shape ``(N, H, n, d)`` by the very operations the model uses (so the same roundings);
    ``Xk`` the tokens of the keys (:func:`models.key_reference`)."""
    if isinstance(model, MultiHeadAttention):
        return (torch.einsum("isD,hDd->ihsd", Xt, model.W_Q.detach()),
                torch.einsum("isD,hDd->ihsd", Xk, model.W_K.detach()))
    return (Xt @ model.W_Q.detach()).unsqueeze(1), (Xk @ model.W_K.detach()).unsqueeze(1)


def formation_bound(model: Any, X: Any, matrix: str = B0_MATRIX, *, residual: bool = True) -> FormationBound:
    r"""Bound ``‖M̂ − M‖₂`` for ``M = B0`` of a [S24] model or ``M = Z`` of a [Q25] block (module docstring).

    Parameters
    ----------
    model : :class:`models.MultiHeadAttention` (``matrix="B0"``) or :class:`models.AttentionBlock`
        (``matrix="Z"``).
    X : inputs ``(N, n, D)`` (validated by ``model.check_inputs``).
    matrix : ``"B0"`` or ``"Z"``.
    residual : for ``Z``: with the residual ``+ X`` or without.

    Returns
    -------
    FormationBound
        ``norm = ‖E‖_F`` rounded up, or ``inf`` with a reason where the kernel's form is not covered.
    """
    if matrix == B0_MATRIX and not isinstance(model, MultiHeadAttention):
        raise TypeError(f"matrix='B0' needs a models.MultiHeadAttention, got {type(model).__name__}")
    if matrix == Z_MATRIX and not isinstance(model, AttentionBlock):
        raise TypeError(f"matrix='Z' needs a models.AttentionBlock, got {type(model).__name__}")
    if matrix not in (B0_MATRIX, Z_MATRIX):
        raise ValueError(f"unknown matrix {matrix!r}; known: {B0_MATRIX!r}, {Z_MATRIX!r}")
    Xt = model.check_inputs(X)
    dtype = Xt.dtype
    form = kernel_variant(model.kernel_name, model.kernel_options).form
    if form is None or form.logits not in BOUNDED_LOGITS or form.row_map not in BOUNDED_ROW_MAPS:
        return FormationBound(matrix, math.inf, model.kernel_name, str(dtype), (
            f"the formation error of {matrix} is not bounded for kernel {model.kernel_name!r} (form {form}; "
            f"the analysis covers logits {BOUNDED_LOGITS} with row maps {BOUNDED_ROW_MAPS}): the intervals "
            "are those of the computed matrix only"))
    fi = torch.finfo(dtype)
    u, lam = fi.eps / 2, fi.tiny * fi.eps
    f64 = torch.float64
    D = Xt.shape[-1]
    tau = math.sqrt(model.d) if model.tau is None else float(model.tau)
    WQ, WK = _heads(model)
    with torch.no_grad():
        S = model.attention(Xt)
        S = (S if S.ndim == 4 else S.unsqueeze(1)).to(f64)  # (N, H, n, n)
        X4 = Xt.unsqueeze(1)
        Xk = key_reference(Xt, form)
        Qh, Kh = (p.to(f64) for p in _projections(model, Xt, Xk))
        Xa = X4.to(f64).abs()
        P, R = Xa @ WQ.to(f64).abs(), Xk.unsqueeze(1).to(f64).abs() @ WK.to(f64).abs()
        ell, dell = _logit_error(Qh, Kh, P, R, form.logits, tau, D, u, lam, shifted=Xk is not Xt)
        dS = _attention_error(S, ell, dell, form.row_map, u, lam)
        EB = _weighted_error(S, dS, X4.to(f64), form.row_map, u, lam)
        if matrix == Z_MATRIX:
            WV = model.W_V.detach().to(f64).abs()
            B = S @ Xa + EB  # ≥ |B̂| entrywise
            E = EB @ WV + _gamma(D, u) * (B @ WV) + D * lam
            if residual:
                Zh = model.attention_output(Xt, True).to(f64).unsqueeze(1)
                E = E + u * Zh.abs()
        else:
            E = EB
        if not bool(torch.isfinite(E).all()):  # an inf or NaN (inf − inf) step: nothing is bounded
            norm = math.inf
        else:
            top = E.amax()  # ‖E‖_F = top·‖E/top‖_F: the squares of subnormal bounds do not underflow
            norm = float(top * torch.linalg.vector_norm(E / top)) * SAFETY if top > 0 else 0.0
    if not math.isfinite(norm):
        return FormationBound(matrix, math.inf, model.kernel_name, str(dtype), (
            f"the formation error bound of {matrix} overflows in {dtype} (logit errors beyond the exponent "
            "range): the intervals are those of the computed matrix only"))
    return FormationBound(matrix, norm, model.kernel_name, str(dtype))


def widen(est: SpectralEstimate, bound: FormationBound, *, tol: float) -> SpectralEstimate:
    r"""``est`` with every interval widened by ``bound.norm`` (Weyl: ``|σ_i(M̂) − σ_i(M)| ≤ ‖M̂ − M‖₂``).

    The σ intervals become ``[max(lo − β, 0), hi + β]`` and ``κ``'s is recomputed from them;
    ``attainable_accuracy["formation"] = β``. An unbounded formation error gives ``[0, inf]``,
    ``converged=False`` and the reason; a bound that dominates ``tol·σ_min`` is named in ``reason``.
    """
    b = bound.norm

    def wide(iv: tuple[float, float]) -> tuple[float, float]:
        if math.isnan(iv[0]) or math.isnan(iv[1]):
            return iv
        if not bound.bounded:
            return (0.0, math.inf)
        return (max(iv[0] - b, 0.0), iv[1] + b)

    imax, imin = wide(est.sigma_max_interval), wide(est.sigma_min_interval)
    cond_iv = est.cond_interval
    if not (math.isnan(imax[0]) or math.isnan(imin[0])):
        cond_iv = (imax[0] / imin[1] if imin[1] > 0 else math.inf,
                   imax[1] / imin[0] if imin[0] > 0 else math.inf)
    notes = [est.reason] if est.reason else []
    if not bound.bounded:
        notes.append(bound.reason or f"formation error of {bound.matrix} not bounded")
    elif est.sigma_min > 0 and b > tol * est.sigma_min:  # (nan > 0 is False; a zero σ_min has its own reason)
        notes.append(f"the formation error of {bound.matrix} (‖{bound.matrix}̂ − {bound.matrix}‖₂ ≤ {b:.3g}, "
                     f"rounding and under/overflow in forming it from S) exceeds tol·σ_min; the intervals "
                     "include it")
    acc = {**est.attainable_accuracy, "formation": b}
    return dataclasses.replace(est, sigma_max_interval=imax, sigma_min_interval=imin, cond_interval=cond_iv,
                               converged=est.converged and bound.bounded, attainable_accuracy=acc,
                               reason="; ".join(notes) or None)
