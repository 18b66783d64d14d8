"""Every threshold that ``method="auto"`` uses, in one frozen record.

:func:`attncond.spectral.extreme_singular_values` with ``method="auto"`` picks, in order:

1. ``dense`` (full SVD of the materialised operator) when
   ``min(m,n)·max(m,n) ≤ dense_max_entries``;
2. ``gram`` (``eigh`` of the small-side Gram, eigenvectors certified on ``A`` itself) when
   ``min(m,n) ≤ gram_max_side`` (``gram_max_side_samples`` for a per-sample Jacobian) and the
   tall factor fits in ``gram_max_bytes``;
3. ``gkl`` (matrix-free Golub–Kahan–Lanczos) otherwise.

Before 1–2, a scipy-sparse input with ``min(m,n) ≥ sparse_matrix_free_min_side`` is tried with
``gkl`` on its sparse products and densified only if that does not certify. Measured on 2-D
Laplacians (``benchmarks/results/sparse_auto_crossover.json``, one thread): ``n = 900``
dense 0.24 s vs GKL 0.19 s, ``n = 1600`` dense 0.64 s vs GKL 0.68 s (a tie), ``n = 2500``
Gram route 3.8 s vs GKL 1.9 s; at ``n = 4096`` the Gram route takes 32 s and GKL does not
certify within its 2,000 steps (2.1 s, then the fallback). ``gkd_max_basis``/``gkd_basis_bytes``
bound the basis of ``method="gkd"``. :func:`attncond.spectral.diagnostics.pl_constant` forms the
closed-form NTK Gram while it takes at most ``pl_gram_max_bytes`` and otherwise runs GKD on the
matrix-free :class:`~attncond.spectral.diagnostics.attention_jacobian.AttentionJacobian`,
preconditioned by ``AttentionGramPreconditioner`` (``pl.AUTO_MATRIX_FREE``; the Lanczos route on the
implicit Gram ``J(Jᵀv)``, ``eig_method="matrix-free"``, has its basis at most
``pl_lanczos_basis_bytes`` and at most ``pl_lanczos_max_steps`` steps). Measured on the [S24]
model (``benchmarks/results/ntk_matrix_free.json``, two threads, same run): m = 4,096 (Gram 128 MiB)
dense 10.2 s vs preconditioned matrix-free 10.1 s (a tie; Lanczos 18.0 s); m = 8,192 (512 MiB) dense
46.9 s and 3.4 GiB vs preconditioned matrix-free 32.2 s and 0.57 GiB (Lanczos 42.7 s); so the threshold
is 128 MiB (m ≤ 4,096 stays dense, which needs no iteration). The crossover moves with the spectrum
(GKD steps), the dense side does not.

Inside the Gram routes, :func:`attncond.spectral.solvers.psd.psd_extremes` takes a full
``eigh`` up to ``psd_eigh_max_side`` and Lanczos + Cholesky shift-invert above (measured on
the medium [S24] Gram, 1024²: 2–3× faster than ``eigh`` with vectors). The measurements behind
each value are in ``benchmarks/`` and the README.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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
    sparse_matrix_free_min_side: int = 2500
    gkd_max_basis: int = 1024
    gkd_basis_bytes: int = 1024**3
    pl_gram_max_bytes: int = 128 * 1024**2
    pl_lanczos_basis_bytes: int = 1024**3
    pl_lanczos_max_steps: int = 20_000

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"AutoPolicy.{f.name} must be a non-negative integer, got {v!r}")


#: The policy in force.
AUTO = AutoPolicy()
