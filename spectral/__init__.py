"""Matrix-free extreme singular values and condition numbers with certified bounds.

Public API
----------
Operators: :class:`LinearOp`, :func:`as_operator`, :class:`JacobianOperator`,
:class:`GramOperator`, :class:`HessianOperator`, :class:`GaussNewtonOperator`,
:func:`jacobian_gram`, :func:`gram_matrix` (dense ``AAᵀ``/``AᵀA`` by BLAS ``syrk``).
Solvers: :func:`golub_kahan_lanczos`, :func:`symmetric_lanczos`, :func:`randomized_svd`,
:func:`dense_svd`, :func:`arpack_svds`, :func:`propack_svds`, :func:`lobpcg_svds`.
Entry points: :func:`extreme_singular_values`, :func:`condition_number`,
:func:`eigen_extremes` returning :class:`SpectralEstimate` / :class:`EigenEstimate`.
"""

if __name__ == "spectral":  # imported by its short name from a checkout: alias attncond.spectral
    from attncond._alias import alias_package

    alias_package(__name__)

from .dense import dense_svd
from .estimate import (
    EIGEN_METHODS,
    METHODS,
    EigenEstimate,
    SpectralEstimate,
    condition_number,
    eigen_extremes,
    extreme_singular_values,
)
from .gkl import golub_kahan_lanczos
from .gram import gram_matrix
from .jacobian import (
    GaussNewtonOperator,
    GramOperator,
    HessianOperator,
    JacobianOperator,
    flatten_params,
    jacobian_gram,
)
from .lanczos import symmetric_lanczos
from .operators import LinearOp, as_operator
from .randomized import randomized_svd
from .results import EigenBlock, EigResult, SingularBlock, SVDResult
from .scipy_backends import arpack_svds, lobpcg_svds, propack_svds

__all__ = [
    "LinearOp",
    "as_operator",
    "JacobianOperator",
    "GramOperator",
    "HessianOperator",
    "GaussNewtonOperator",
    "jacobian_gram",
    "gram_matrix",
    "flatten_params",
    "golub_kahan_lanczos",
    "symmetric_lanczos",
    "randomized_svd",
    "dense_svd",
    "arpack_svds",
    "propack_svds",
    "lobpcg_svds",
    "extreme_singular_values",
    "condition_number",
    "eigen_extremes",
    "SpectralEstimate",
    "EigenEstimate",
    "SVDResult",
    "SingularBlock",
    "EigResult",
    "EigenBlock",
    "METHODS",
    "EIGEN_METHODS",
]
