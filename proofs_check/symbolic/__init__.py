"""Symbolic Jacobians of softmax and attention, derived with sympy and checked against autograd.

Each public derivation returns a frozen :class:`Derivation` holding

* ``expression``: the Jacobian obtained by differentiating the model entrywise with
  ``sympy.diff`` (then simplified, see ``simplification``);
* ``closed_form``: the same Jacobian built from the matrix formula of MATH.md
  (e.g. ``diag(s) − s sᵀ``), i.e. what :mod:`models.derivatives` computes in torch;
* ``proved``: whether sympy reduced ``expression − closed_form`` to exactly 0, and how
  (``proof_method``): ``sympy.simplify`` for the softmax Jacobian (as the issue asks); a
  rational normal form ``expand(numer(together(·)))``, with every ``exp(Σ c_i b_i)`` written as
  ``Π E_i^{c_i}`` in fresh symbols, for the temperature derivative and the attention
  derivations, where full ``simplify`` takes minutes (``simplify`` is the fall-back); for
  NormSoftmax w.r.t. W_Q/W_K the normal form on both branches of ``Min(τ, v)``, attempted
  for n = 2, D = d = 1 only (larger sizes take 5 s to minutes: then "not attempted").

Derivations (MATH.md sections in brackets):

=============================  ====================================================  ==========
function                       what is differentiated                                 source
=============================  ====================================================  ==========
:func:`softmax_jacobian`       ``s = softmax(z)`` w.r.t. ``z``                          §4 [I25]
:func:`temperature_derivative` ``J_τ = ∂softmax(z/τ)/∂z`` (or ``s``) w.r.t. ``τ``       §2 [H24]
:func:`gaussian_kernel_jacobian` ``S_kj = exp(−‖x_kW_Q − x_jW_K‖²/(2τ))`` w.r.t. W_Q/W_K  §2 [S24]
:func:`attention_output_jacobian` ``MH(X) = Σ_h S_h X W^V_h W^O_h`` w.r.t. a weight       §3 [S24]
=============================  ====================================================  ==========

Layout (by kernel family): :mod:`.core` (limits, :class:`Derivation`, lambdify, proofs),
:mod:`.softmax` (softmax, temperature, NormSoftmax pieces), :mod:`.gaussian`, :mod:`.attention`
(the [S24] output Jacobian, dispatched on the kernel's form from ``models.KERNELS``; a kernel
without the ``symbolic`` capability is refused), :mod:`.derive`, :mod:`.compare`.

Symbolic work grows fast with the sizes, so they are capped (:data:`SYMBOLIC_LIMITS`);
bigger sizes raise ``ValueError`` pointing at the closed forms in :mod:`models.derivatives`.
Derivations are cached (``functools.lru_cache``) on their size tuple.

:func:`compare_with_autograd` evaluates the closed-form torch code *and* the lambdified sympy
code (numpy and torch back ends) against ``torch.func.jacrev`` on the :mod:`models`
implementation. Relative error is normwise: ``max|J − J_ref| / max|J_ref|`` (∞-norm over all
entries), which stays meaningful where individual entries are 0 or tiny.
"""

from .attention import attention_output_jacobian
from .compare import DEFAULT_TOL, Comparison, ComparisonRow, compare_with_autograd
from .core import (
    DERIVATIONS,
    SYMBOLIC_KERNELS,
    SYMBOLIC_LIMITS,
    SYMBOLIC_WRT,
    Derivation,
    SymbolicFunction,
    prove_identity,
)
from .derive import derive
from .gaussian import gaussian_kernel_jacobian
from .softmax import softmax_jacobian, temperature_derivative

__all__ = [
    "DEFAULT_TOL",
    "DERIVATIONS",
    "SYMBOLIC_KERNELS",
    "SYMBOLIC_LIMITS",
    "SYMBOLIC_WRT",
    "Comparison",
    "ComparisonRow",
    "Derivation",
    "SymbolicFunction",
    "attention_output_jacobian",
    "compare_with_autograd",
    "derive",
    "gaussian_kernel_jacobian",
    "prove_identity",
    "softmax_jacobian",
    "temperature_derivative",
]
