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

Numerics: softmax values are ``torch.softmax``'s, which subtracts the row maximum before
exponentiating (max-shift), so logits of 1e4 give no NaN. Derivatives of every row-softmax
kernel and of the Gaussian kernel go through the custom autograd Functions of
:mod:`models.stable`, whose vjp/jvp (and higher derivatives) avoid the cancellation of torch's
softmax backward at nearly one-hot rows. The Gaussian kernel is
computed in log space and exponentiated once; entries that underflow to 0 are
counted and reported with a :class:`KernelUnderflowWarning` (or an error, or
nothing, by ``on_underflow``) instead of vanishing silently.

Registry: :data:`KERNELS` maps each name to a :class:`Kernel` carrying its capabilities
(:data:`CAPABILITIES`: ``row_stochastic``, ``closed_form_jacobian``, ``closed_form_ntk_gram``,
``symbolic``) and its :class:`KernelForm` (``logits`` × ``row_map``), which the closed forms in
:mod:`models.derivatives`, ``spectral.diagnostics.structured`` and ``proofs_check.symbolic`` dispatch
on. A consumer asks ``kernel.require(capability, consumer)`` and gets a
:class:`KernelCapabilityError` where the kernel does not declare it — never another kernel's formula.
Adding a kernel: its function, one :class:`Kernel` entry (:func:`register_kernel` from outside), and
one test (``tests/models/test_kernel_registry.py`` exercises every declared capability).

Reconstructed choices (switchable): the NormSoftmax row statistic is unbiased by
default (``unbiased=True``) and differentiated through (``detach_scale=False``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .checks import check_choice, check_tau, is_transformed
from .stable import stable_gaussian_kernel, stable_softmax

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


def check_logits_finite(kind: str, C: torch.Tensor) -> torch.Tensor:
    """``C`` if every entry is finite, else ``FloatingPointError`` (skipped inside torch.func transforms).

    Finite inputs and weights can still give logits beyond the dtype's range (``|X W_Q||X W_K| > 1.8e308``
    in float64); the kernel would then return NaN rows (softmax of ``inf``) or silent zeros (``exp(−inf)``).
    """
    if is_transformed(C) or bool(torch.isfinite(C).all()):
        return C
    raise FloatingPointError(
        f"{kind} overflow in {C.dtype}: {int((~torch.isfinite(C)).sum())} of {C.numel()} entries are inf/NaN "
        f"although the inputs are finite (their product exceeds {torch.finfo(C.dtype).max:.3g}); scale the "
        "inputs X or the weights W_Q, W_K down, or use a larger tau")


def logits(Q: torch.Tensor, K: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """``C = Q Kᵀ / τ`` with τ = √d by default (MATH.md §2); an overflow raises ``FloatingPointError``."""
    _check_qk(Q, K)
    return check_logits_finite("attention logits Q K^T / tau", Q @ K.transpose(-1, -2) / _default_tau(Q, tau))


def softmax(Q: torch.Tensor, K: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """``S = softmax_row(Q Kᵀ / τ)``, max-shifted ([S24] eq. (1)-(2)), stable derivatives."""
    return stable_softmax(logits(Q, K, tau), -1)


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
    _check_qk(Q, K)
    t = _default_tau(Q, tau)
    big = torch.finfo(Q.dtype).max
    # value-dependent, so skipped under torch.func transforms (vmap forbids reading values)
    transformed = is_transformed(Q) or is_transformed(K)
    reach = (float(Q.detach().abs().amax()) + float(K.detach().abs().amax())
             if Q.numel() and K.numel() and not transformed else 0.0)
    if not transformed and reach >= math.sqrt(big / Q.shape[-1]):
        # ‖q − k‖² may overflow (cheap test first): check the log kernel itself
        check_logits_finite("gaussian log kernel -||q - k||^2 / (2 tau)",
                            gaussian_log_kernel(Q.detach(), K.detach(), t))
    if normalize:
        return stable_gaussian_kernel(Q, K, t, normalize=True)
    S = stable_gaussian_kernel(Q, K, t, normalize=False)
    if on_underflow != "ignore" and not is_transformed(S):
        # exp is monotone: S < tiny exactly where the log kernel lies below log(tiny) (subnormal or 0)
        tiny = torch.finfo(S.dtype).tiny
        floor = math.log(tiny)
        n_under = int((S.detach() < tiny).sum())
        if n_under:
            msg = (
                f"gaussian kernel: {n_under} of {S.numel()} entries underflow to 0 in "
                f"{S.dtype} (log value below {floor:.1f}); their gradients vanish. "
                "Use normalize=True, a larger tau, float64, or a smaller init scale."
            )
            if on_underflow == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg, KernelUnderflowWarning, stacklevel=2)
    return S


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
    z = check_logits_finite("normsoftmax logits Q K^T", Q @ K.transpose(-1, -2))
    s = _row_scale(z, stat, unbiased)
    if detach_scale:
        s = s.detach()
    return stable_softmax(z, -1, tau=torch.clamp(s, max=t))


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


#: Capabilities a registered kernel may declare; consumers ask for them by these names.
CAPABILITIES: dict[str, str] = {
    "row_stochastic": "row-stochastic attention (rows summing to 1: softmax Jacobian, entropy)",
    "closed_form_jacobian": "closed-form Jacobian (models.derivatives.mh_output_jacobian)",
    "closed_form_ntk_gram": "closed-form NTK Gram (spectral.structured.ntk_gram route='structured')",
    "symbolic": "sympy derivation (proofs_check.symbolic.attention_output_jacobian)",
}
#: Pre-activations a :class:`KernelForm` may name: ``dot`` ``QKᵀ/τ``; ``dist`` ``−‖q_k − k_j‖²/(2τ)``;
#: ``dot_var`` / ``dot_std`` ``QKᵀ / min(τ, var_row)`` / ``QKᵀ / min(τ, std_row)`` (NormSoftmax).
LOGIT_FORMS: tuple[str, ...] = ("dot", "dist", "dot_var", "dot_std")
#: Row maps a :class:`KernelForm` may name: ``softmax`` (row softmax), ``exp``, ``identity``.
ROW_MAPS: tuple[str, ...] = ("softmax", "exp", "identity")


class KernelCapabilityError(ValueError):
    """A consumer needs a capability the kernel does not declare in :data:`KERNELS`."""


@dataclass(frozen=True)
class KernelForm:
    """The structure the closed forms dispatch on: ``S = row_map(logits(Q, K))`` (MATH.md §2)."""

    logits: str
    row_map: str

    def __post_init__(self) -> None:
        check_choice("KernelForm.logits", self.logits, LOGIT_FORMS)
        check_choice("KernelForm.row_map", self.row_map, ROW_MAPS)

    @property
    def key_shift_invariant(self) -> bool:
        """``S(Q, K + 1 vᵀ) = S(Q, K)`` for every ``v``: a row softmax of (standardised) dot logits,
        where ``q_a·v`` is a constant per row. The keys may then be formed from token differences,
        ``K = (X − 1 x_rᵀ) W_K``, without a common component: its logits ``≈ |q||k|`` would carry an
        absolute error ``≈ eps·|q||k|`` although they differ by ``O(1)`` (tokens sharing one large
        coordinate), and ``S`` would be wrong far beyond rounding. The logit weights ``∂f/∂ℓ_aj`` then
        sum to 0 over ``j`` as well, so the closed forms' ``Σ_j w_aj k_j`` and ``Σ_j w_aj x_j`` take
        the differences too.

        >>> KernelForm("dot", "softmax").key_shift_invariant, KernelForm("dist", "softmax").key_shift_invariant
        (True, False)
        """
        return self.row_map == "softmax" and self.logits in ("dot", "dot_var", "dot_std")


@dataclass(frozen=True)
class KernelVariant:
    """A kernel with its options applied: what the options change (form, row-stochastic)."""

    name: str
    form: KernelForm | None
    row_stochastic: bool
    options: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Kernel:
    """A registered attention kernel: its function, formula, source and capabilities.

    ``form`` is the structure the closed forms use (``None``: opaque, only autograd applies);
    ``closed_form_jacobian``, ``closed_form_ntk_gram`` and ``symbolic`` declare which closed forms
    exist for it (each needs ``form``); ``options`` are the keyword options ``fn`` accepts;
    ``option_variants`` lists ``(option, value, form, row_stochastic)`` for options that change the
    kernel (the Gaussian kernel's ``normalize=True`` is a row softmax of the log kernel).
    """

    name: str
    fn: KernelFn
    formula: str
    source: str
    row_stochastic: bool
    form: KernelForm | None = None
    closed_form_jacobian: bool = False
    closed_form_ntk_gram: bool = False
    symbolic: bool = False
    options: tuple[str, ...] = ()
    option_variants: tuple[tuple[str, Any, KernelForm, bool], ...] = ()

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"Kernel {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        closed = ("closed_form_jacobian", "closed_form_ntk_gram", "symbolic")
        needs_form = [c for c in closed if getattr(self, c)]
        if needs_form and self.form is None:
            raise ValueError(f"Kernel {self.name!r} declares {needs_form} but no form (KernelForm) to "
                             "dispatch the closed forms on")

    def __call__(self, Q: torch.Tensor, K: torch.Tensor, tau: float | None = None, **opts):
        return self.fn(Q, K, tau, **opts)

    def has(self, capability: str) -> bool:
        """Whether this kernel declares ``capability`` (a key of :data:`CAPABILITIES`)."""
        if capability not in CAPABILITIES:
            raise KernelCapabilityError(f"unknown kernel capability {capability!r}; known: "
                                        f"{', '.join(map(repr, CAPABILITIES))}")
        return bool(getattr(self, capability))

    def require(self, capability: str, consumer: str) -> KernelForm | None:
        """Return :attr:`form` if the kernel has ``capability``, else raise :class:`KernelCapabilityError`."""
        if not self.has(capability):
            raise KernelCapabilityError(
                f"{consumer}: kernel {self.name!r} has no {CAPABILITIES[capability]}; it does not declare "
                f"{capability!r} in models.kernels.KERNELS. Use the autograd route (torch.func.jacrev on "
                "model.functional) or register the closed form for this kernel")
        return self.form

    def unknown_options(self, options: Mapping[str, Any]) -> list[str]:
        """Option names in ``options`` that this kernel does not accept."""
        return [k for k in options if k not in self.options]

    def variant(self, options: Mapping[str, Any] | None = None) -> KernelVariant:
        """The kernel with ``options`` applied; an option it does not accept is a ``ValueError``."""
        opts = dict(options or {})
        bad = self.unknown_options(opts)
        if bad:
            raise ValueError(f"kernel {self.name!r} does not take option(s) {bad}; "
                             f"it takes {list(self.options)}")
        form, rs = self.form, self.row_stochastic
        for opt, value, vform, vrs in self.option_variants:
            if opts.get(opt) == value:
                form, rs = vform, vrs
        return KernelVariant(self.name, form, rs, tuple(sorted(opts.items())))


_DOT_SOFTMAX = KernelForm("dot", "softmax")
_CLOSED = {"closed_form_jacobian": True, "symbolic": True}
_NORM_OPTS = ("unbiased", "detach_scale")

KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("softmax", softmax, "softmax_row(Q K^T / tau)", "[S24] eq. (1)-(2)", True, _DOT_SOFTMAX,
               closed_form_ntk_gram=True, **_CLOSED),
        Kernel("temperature", temperature, "softmax_row(Q K^T / tau), any tau > 0", "[H24]", True, _DOT_SOFTMAX,
               closed_form_ntk_gram=True, **_CLOSED),
        Kernel("gaussian", gaussian, "exp(-||q_k - k_j||^2 / (2 tau))", "[S24] eq. (3)-(4)", False,
               KernelForm("dist", "exp"), closed_form_ntk_gram=True, **_CLOSED,
               options=("normalize", "on_underflow"),
               option_variants=(("normalize", True, KernelForm("dist", "softmax"), True),)),
        Kernel("linear", linear, "Q K^T / tau", "[I25] control", False, KernelForm("dot", "identity"),
               closed_form_ntk_gram=True, **_CLOSED),
        Kernel("normsoftmax", normsoftmax, "softmax_row(z / min(tau, var_row z)), z = Q K^T", "[H24] code",
               True, KernelForm("dot_var", "softmax"), options=_NORM_OPTS, **_CLOSED),
        Kernel("normsoftmax_std", normsoftmax_std, "softmax_row(z / min(tau, std_row z)), z = Q K^T",
               "[H24] code", True, KernelForm("dot_std", "softmax"), options=_NORM_OPTS, **_CLOSED),
    )
}


def get_kernel(name: str) -> Kernel:
    """Look a kernel up by name; an unknown name lists the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"kernel must be a kernel name (str), got {type(name).__name__}")
    check_choice("kernel", name, KERNELS)
    return KERNELS[name]


def register_kernel(kernel: Kernel, *, replace: bool = False) -> Kernel:
    """Add ``kernel`` to :data:`KERNELS` (every model and consumer then finds it by name).

    An existing name is refused unless ``replace=True``. Returns the kernel.
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a models.kernels.Kernel, got {type(kernel).__name__}")
    if kernel.name in KERNELS and not replace:
        raise ValueError(f"kernel {kernel.name!r} is already registered; pass replace=True to replace it")
    KERNELS[kernel.name] = kernel
    return kernel


def unregister_kernel(name: str) -> Kernel:
    """Remove a kernel from :data:`KERNELS` and return it."""
    return KERNELS.pop(get_kernel(name).name)


def kernel_variant(name: str, options: Mapping[str, Any] | None = None) -> KernelVariant:
    """``get_kernel(name).variant(options)``: the registry's view of a kernel with its options."""
    return get_kernel(name).variant(options)


def key_reference(X: torch.Tensor, form: KernelForm | None) -> torch.Tensor:
    """``X − 1 x_rᵀ`` per sample (``x_r`` the first token) for a :attr:`KernelForm.key_shift_invariant`
    form, else ``X`` itself: the tokens the keys ``K = X W_K`` are formed from (``X``: ``(…, n, D)``)."""
    if form is not None and form.key_shift_invariant:
        return X - X[..., :1, :]
    return X


def check_kernel_options(kernel: str, options: Any, name: str = "kernel_options") -> dict[str, Any]:
    """``options`` as a dict of keyword options that kernel ``kernel`` accepts, checked before any work.

    ``None`` means none. A non-mapping is a ``TypeError``; a key the kernel does not take (``"normalise"``
    for ``"normalize"``, or any option on ``"softmax"``) is a ``ValueError`` naming ``name``, the key and
    the options the kernel takes — not a ``TypeError`` from deep inside the first forward pass.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"{name} must be a mapping of option -> value, got {type(options).__name__}")
    opts = dict(options)
    bad = get_kernel(kernel).unknown_options(opts)
    if bad:
        raise ValueError(f"{name}: kernel {kernel!r} does not take option(s) {bad}; "
                         f"it takes {list(get_kernel(kernel).options) or 'none'}")
    return opts


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
