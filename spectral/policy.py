"""Every threshold that ``method="auto"`` uses, in one frozen record.

:func:`attncond.spectral.extreme_singular_values` with ``method="auto"`` picks, in order:

1. ``dense`` (full SVD of the materialised operator) when
   ``min(m,n)·max(m,n) ≤ dense_max_entries``;
2. ``gram`` (``eigh`` of the small-side Gram, eigenvectors certified on ``A`` itself) when
   ``min(m,n) ≤ gram_max_side`` (``gram_max_side_samples`` for a per-sample Jacobian) and the
   tall factor fits in ``gram_max_bytes``;
3. ``gkl`` (matrix-free Golub–Kahan–Lanczos) otherwise.

Inside the Gram routes, :func:`attncond.spectral.solvers.psd.psd_extremes` takes a full
``eigh`` up to ``psd_eigh_max_side`` and Lanczos + Cholesky shift-invert above (measured on
the medium [S24] Gram, 1024²: 2–3× faster than ``eigh`` with vectors). The measurements behind
each value are in ``benchmarks/`` and the README.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AutoPolicy", "AUTO"]


@dataclass(frozen=True)
class AutoPolicy:
    """The size thresholds of ``method="auto"`` (see the module docstring)."""

    dense_max_entries: int = 4_000_000
    gram_max_side: int = 4096
    gram_max_side_samples: int = 8192
    gram_max_bytes: int = 4 * 1024**3
    psd_eigh_max_side: int = 512
    hessian_dense_max_params: int = 1500
    eigen_dense_max_side: int = 2000


#: The policy in force.
AUTO = AutoPolicy()
