"""Conditioning diagnostics of attention models: the only part of spectral that imports models.

``b0`` ([S24] ``B0`` and ``β``), ``pl`` (exact PL constant), ``z`` ([Q25] ``Z``),
``softmax_jacobian`` ([I25]/[H24]), ``hessian`` (curvature), ``attention_stats`` (entropy,
sparsity), ``structured`` (closed-form ``B0``, NTK Gram and ``Z`` matrices) and ``report``
(:func:`diagnose`, :class:`Diagnostics` and the :data:`ROWS` table).
"""

from attncond.spectral.diagnostics.attention_jacobian import AttentionJacobian
from attncond.spectral.diagnostics.attention_stats import (
    AttentionStats,
    attention_entropy,
    attention_sparsity,
    attention_stats,
)
from attncond.spectral.diagnostics.b0 import BetaPaper, beta_paper
from attncond.spectral.diagnostics.gram_preconditioner import AttentionGramPreconditioner
from attncond.spectral.diagnostics.hessian import HessianExtremes, hessian_extremes
from attncond.spectral.diagnostics.pl import PLConstant, pl_constant
from attncond.spectral.diagnostics.report import DiagnosticRow, Diagnostics, diagnose
from attncond.spectral.diagnostics.rows import ROWS, RowSpec
from attncond.spectral.diagnostics.softmax_jacobian import (
    SoftmaxJacobianSpectrum,
    softmax_jacobian,
    softmax_jacobian_spectrum,
)
from attncond.spectral.diagnostics.structured import B0, B0_gram, NTKGram, closed_form_kernel, ntk_gram
from attncond.spectral.diagnostics.z import ZConditioning, attention_output_matrix
from attncond.spectral.solvers.psd import gram_extremes

__all__ = [
    "BetaPaper", "PLConstant", "ZConditioning", "SoftmaxJacobianSpectrum", "HessianExtremes",
    "AttentionStats", "DiagnosticRow", "Diagnostics", "NTKGram",
    "beta_paper", "pl_constant", "attention_output_matrix", "softmax_jacobian",
    "softmax_jacobian_spectrum", "hessian_extremes", "attention_entropy", "attention_sparsity",
    "attention_stats", "diagnose", "ROWS", "RowSpec", "gram_extremes", "B0", "B0_gram", "ntk_gram",
    "closed_form_kernel", "AttentionJacobian", "AttentionGramPreconditioner",
]
