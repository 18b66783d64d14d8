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
Registry: :data:`SOLVERS` (``method=`` names), :func:`register_solver`; thresholds of
``method="auto"``: :data:`AUTO` (:class:`AutoPolicy`).

Layout: ``operators/`` (products only), ``solvers/`` (algorithms and certificates),
``policy.py``, ``estimate.py`` (validate -> route -> solver -> estimate), ``results.py``
(frozen records) and ``diagnostics/`` (the only part that imports ``attncond.models``).
"""

if __name__ == "spectral":  # imported by its short name from a checkout: alias attncond.spectral
    from attncond.aliasing import alias_package

    alias_package(__name__)

from attncond.spectral.estimate import (
    EIGEN_METHODS,
    METHODS,
    condition_number,
    eigen_extremes,
    extreme_singular_values,
)
from attncond.spectral.operators import (
    GaussNewtonOperator,
    GramOperator,
    HessianOperator,
    JacobianOperator,
    LinearOp,
    as_operator,
    flatten_params,
    gram_matrix,
    jacobian_gram,
)
from attncond.spectral.policy import AUTO, AutoPolicy
from attncond.spectral.results import (
    EigenBlock,
    EigenEstimate,
    EigResult,
    SingularBlock,
    SpectralEstimate,
    SVDResult,
)
from attncond.spectral.solvers import (
    SOLVERS,
    Solver,
    arpack_svds,
    dense_svd,
    golub_kahan_lanczos,
    lobpcg_svds,
    propack_svds,
    randomized_svd,
    register_solver,
    symmetric_lanczos,
)

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
    "SOLVERS",
    "Solver",
    "register_solver",
    "AUTO",
    "AutoPolicy",
]
