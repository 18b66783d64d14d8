"""Linear operators: the products ``A x`` and ``Aᵀ y`` and nothing else (never imports models).

``base``: :class:`LinearOp` (counting, adjoint, blocks, scipy export); ``explicit``: dense,
sparse and callable operators and :func:`as_operator`; ``autodiff``: Jacobian, Hessian,
Gauss–Newton and Gram operators over ``torch.func``; ``gram``: :func:`gram_matrix` (BLAS ``syrk``).
"""

from attncond.spectral.operators.autodiff import (
    GaussNewtonOperator,
    GramOperator,
    HessianOperator,
    JacobianOperator,
    flatten_params,
    jacobian_gram,
)
from attncond.spectral.operators.base import LinearOp, SymmetricOp
from attncond.spectral.operators.explicit import CallableOp, DenseOp, SparseOp, as_operator
from attncond.spectral.operators.gram import gram_matrix

__all__ = [
    "LinearOp", "SymmetricOp", "DenseOp", "SparseOp", "CallableOp", "as_operator", "JacobianOperator",
    "GramOperator", "HessianOperator", "GaussNewtonOperator", "flatten_params", "jacobian_gram", "gram_matrix",
]
