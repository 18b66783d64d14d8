"""Attention kernels (MATH.md §2), as pure functions registered by name.

Every kernel maps projected queries ``Q`` and keys ``K`` of shape ``(..., n, d)`` to an
attention matrix ``S`` of shape ``(..., n, n)``. Rows index queries (tokens are rows).

==================  ==========================================================  ==========
name                formula, per head and sample                                 source
==================  ==========================================================  ==========
``softmax``         ``S = softmax_row(Q Kᵀ / τ)``, τ = √d by default              [S24] (1)-(2)
``temperature``     the same with an explicit τ > 0 (τ→0 sharp, τ→∞ uniform)      [H24]
``gaussian``        ``S_kj = exp(-‖q_k - k_j‖² / (2τ))``, τ = √d, not normalised  [S24] (3)-(4)
``linear``          ``S = Q Kᵀ / τ`` (identity feature map, a control)            [I25]
``normsoftmax``     ``softmax_row(z / min(τ, var_row(z)))``, ``z = Q Kᵀ`` unscaled [H24] code
``normsoftmax_std`` ``softmax_row(z / min(τ, std_row(z)))``                       [H24] code
==================  ==========================================================  ==========

Numerics: softmax is ``torch.softmax``, which subtracts the row maximum before
exponentiating (max-shift), so logits of 1e4 give no NaN. The Gaussian kernel is
computed in log space and exponentiated once; entries that underflow to 0 are
counted and reported with a :class:`KernelUnderflowWarning` (or an error, or
nothing, by ``on_underflow``) instead of vanishing silently.

Reconstructed choices (switchable): the NormSoftmax row statistic is unbiased by
default (``unbiased=True``) and differentiated through (``detach_scale=False``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .checks import check_choice, check_tau, is_transformed

KernelFn = Callable[..., torch.Tensor]


class KernelUnderflowWarning(RuntimeWarning):
    """Entries of an unnormalised Gaussian kernel underflowed to exactly zero."""


def _default_tau(Q: torch.Tensor, tau: float | None) -> float:
    return math.sqrt(Q.shape[-1]) if tau is None else check_tau(tau)


def _check_qk(Q: torch.Tensor, K: torch.Tensor) -> None:
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"Q and K must share the head width d, got {Q.shape[-1]} and {K.shape[-1]}")
    if Q.ndim < 2 or K.ndim < 2:
        raise ValueError(f"Q and K must have shape (..., n, d), got {tuple(Q.shape)}, {tuple(K.shape)}")


def logits(Q: torch.Tensor, K: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """``C = Q Kᵀ / τ`` with τ = √d by default (MATH.md §2)."""
    _check_qk(Q, K)
    return Q @ K.transpose(-1, -2) / _default_tau(Q, tau)


def softmax(Q: torch.Tensor, K: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """``S = softmax_row(Q Kᵀ / τ)``, max-shifted ([S24] eq. (1)-(2))."""
    return torch.softmax(logits(Q, K, tau), dim=-1)


def temperature(Q: torch.Tensor, K: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """Softmax at temperature τ ([H24]); identical to :func:`softmax`, τ named explicitly."""
    return softmax(Q, K, tau)


def linear(Q: torch.Tensor, K: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """``S = Q Kᵀ / τ``: no feature map and no normalisation ([I25] control)."""
    return logits(Q, K, tau)


def gaussian_log_kernel(Q: torch.Tensor, K: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """``log S_kj = -‖q_k - k_j‖² / (2τ)``, τ = √d by default ([S24] eq. (3)).

    The squared distance is summed from explicit differences rather than expanded as
    ``‖q‖² + ‖k‖² - 2 q·k``, which cancels catastrophically for nearby points and can
    go negative. Memory is O(n² d) per head and sample.
    """
    _check_qk(Q, K)
    t = _default_tau(Q, tau)
    diff = Q.unsqueeze(-2) - K.unsqueeze(-3)
    return -(diff * diff).sum(-1) / (2.0 * t)


def gaussian(
    Q: torch.Tensor,
    K: torch.Tensor,
    tau: float | None = None,
    *,
    normalize: bool = False,
    on_underflow: str = "warn",
) -> torch.Tensor:
    """Gaussian attention ``S_kj = exp(-‖q_k - k_j‖² / (2τ))`` ([S24] eq. (3)-(4)).

    ``normalize=True`` divides each row by its sum, computed stably as a softmax of
    the log kernel. For the unnormalised kernel, ``on_underflow`` decides what happens
    when an entry's log value lies below ``log(tiny)`` of the dtype and is flushed to 0:
    ``"warn"`` (default) issues :class:`KernelUnderflowWarning` with the count,
    ``"raise"`` raises ``FloatingPointError``, ``"ignore"`` does nothing.
    The check is skipped inside ``torch.func.vmap``, which forbids value-dependent code.
    """
    check_choice("on_underflow", on_underflow, ("warn", "raise", "ignore"))
    logS = gaussian_log_kernel(Q, K, tau)
    if normalize:
        return torch.softmax(logS, dim=-1)
    if on_underflow != "ignore" and not is_transformed(logS):
        floor = math.log(torch.finfo(logS.dtype).tiny)
        n_under = int((logS.detach() < floor).sum())
        if n_under:
            msg = (
                f"gaussian kernel: {n_under} of {logS.numel()} entries underflow to 0 in "
                f"{logS.dtype} (log value below {floor:.1f}); their gradients vanish. "
                "Use normalize=True, a larger tau, float64, or a smaller init scale."
            )
            if on_underflow == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg, KernelUnderflowWarning, stacklevel=2)
    return torch.exp(logS)


def _row_scale(z: torch.Tensor, stat: str, unbiased: bool) -> torch.Tensor:
    if z.shape[-1] < 2 and unbiased:
        raise ValueError("normsoftmax needs n >= 2 keys per row for an unbiased row statistic")
    if stat == "var":
        return z.var(dim=-1, keepdim=True, unbiased=unbiased)
    return z.std(dim=-1, keepdim=True, unbiased=unbiased)


def _normsoftmax(
    Q: torch.Tensor,
    K: torch.Tensor,
    tau: float | None,
    stat: str,
    unbiased: bool,
    detach_scale: bool,
) -> torch.Tensor:
    _check_qk(Q, K)
    t = _default_tau(Q, tau)
    z = Q @ K.transpose(-1, -2)
    s = _row_scale(z, stat, unbiased)
    if detach_scale:
        s = s.detach()
    return torch.softmax(z / torch.clamp(s, max=t), dim=-1)


def normsoftmax(
    Q: torch.Tensor,
    K: torch.Tensor,
    tau: float | None = None,
    *,
    unbiased: bool = True,
    detach_scale: bool = False,
) -> torch.Tensor:
    """NormSoftmax ``softmax_row(z / min(τ, var_row(z)))`` with ``z = Q Kᵀ`` unscaled ([H24]).

    Dividing by ``min(τ, ·) ≤ τ`` means it is never smoother than ``softmax(z/τ)``:
    it only ever sharpens attention. A row of exactly equal logits has variance 0 and
    yields NaN, as in the reference code; such rows do not occur in general position.
    """
    return _normsoftmax(Q, K, tau, "var", unbiased, detach_scale)


def normsoftmax_std(
    Q: torch.Tensor,
    K: torch.Tensor,
    tau: float | None = None,
    *,
    unbiased: bool = True,
    detach_scale: bool = False,
) -> torch.Tensor:
    """NormSoftmax with the row standard deviation: ``softmax_row(z / min(τ, std_row(z)))``."""
    return _normsoftmax(Q, K, tau, "std", unbiased, detach_scale)


@dataclass(frozen=True)
class Kernel:
    """A registered attention kernel: its function, formula and source in MATH.md."""

    name: str
    fn: KernelFn
    formula: str
    source: str
    row_stochastic: bool

    def __call__(self, Q: torch.Tensor, K: torch.Tensor, tau: float | None = None, **opts):
        return self.fn(Q, K, tau, **opts)


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("softmax", softmax, "softmax_row(Q K^T / tau)", "[S24] eq. (1)-(2)", True),
        Kernel("temperature", temperature, "softmax_row(Q K^T / tau), any tau > 0", "[H24]", True),
        Kernel("gaussian", gaussian, "exp(-||q_k - k_j||^2 / (2 tau))", "[S24] eq. (3)-(4)", False),
        Kernel("linear", linear, "Q K^T / tau", "[I25] control", False),
        Kernel("normsoftmax", normsoftmax, "softmax_row(z / min(tau, var_row z)), z = Q K^T",
               "[H24] code", True),
        Kernel("normsoftmax_std", normsoftmax_std,
               "softmax_row(z / min(tau, std_row z)), z = Q K^T", "[H24] code", True),
    )
}


def get_kernel(name: str) -> Kernel:
    """Look a kernel up by name; an unknown name lists the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"kernel must be a kernel name (str), got {type(name).__name__}")
    check_choice("kernel", name, KERNELS)
    return KERNELS[name]


def heat_treatment(frac: float, start: float = 3.0, end: float = 0.125) -> float:
    """[H24] heat-treatment logit multiplier ``1/τ`` at training fraction ``frac`` ∈ [0, 1].

    Half-cosine from ``start`` down to ``end`` over the first half of training, then
    constant: ``m(f) = end + (start - end)(1 + cos(2πf))/2`` for ``f < 1/2``, else ``end``.
    With d = 64, ``end = 0.125`` is τ = 8 = √d.
    """
    if isinstance(frac, bool) or not isinstance(frac, (int, float)):
        raise TypeError(f"frac must be a number in [0, 1], got {frac!r}")
    if not 0.0 <= float(frac) <= 1.0:
        raise ValueError(f"frac must lie in [0, 1], got {frac}")
    check_tau(start, "start")
    check_tau(end, "end")
    if frac >= 0.5:
        return float(end)
    return float(end + (start - end) * 0.5 * (1.0 + math.cos(2.0 * math.pi * frac)))
