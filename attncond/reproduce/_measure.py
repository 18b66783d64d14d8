"""Measurements for the experiments, all through the ``spectral`` library.

* :func:`cond` — ``σ_max``, ``σ_min``, ``κ`` of a matrix: :func:`spectral.extreme_singular_values`
  (``method="dense"`` by default: every matrix here is small, and the dense route is certified).
* :func:`z_matrix` — ``Z = [Z_1; …; Z_N]`` of a [Q25] block:
  :func:`spectral.diagnostics.structured.attention_output_matrix`.
* :func:`softmax_jacobian_kappa` — ``κ(J(s)) = λ_n/λ_2`` on ``1^⊥`` (MATH.md §4) by
  :func:`spectral.diagnostics.softmax_jacobian_spectrum` (secular equation, every eigenvalue to high
  relative accuracy; until issue 16 a dense ``eigh`` of ``Qᵀ J Q``, which loses ``eps·κ`` in ``λ_2``).
* :func:`hessian_extremes` — ``λ_max``, ``λ_min`` of the dense Hessian (``torch.func.hessian``)
  by :func:`spectral.eigen_extremes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

import attncond.spectral as spectral
from attncond.models import AttentionBlock
from attncond.spectral.diagnostics import softmax_jacobian_spectrum
from attncond.spectral.diagnostics.structured import attention_output_matrix


def cond(A: torch.Tensor, method: str = "dense") -> dict[str, Any]:
    """``{"sigma_max", "sigma_min", "cond", "converged", "method"}`` of ``A`` (certified)."""
    est = spectral.extreme_singular_values(A, method=method)
    return {"sigma_max": est.sigma_max, "sigma_min": est.sigma_min, "cond": est.cond,
            "converged": est.converged, "method": est.method}


def z_matrix(block: AttentionBlock, X: torch.Tensor, residual: bool) -> torch.Tensor:
    """[Q25] ``Z ∈ R^{Nn×D}`` with or without the residual (MATH.md §4)."""
    return attention_output_matrix(block, X, residual=residual)


def softmax_jacobian_kappa(s: torch.Tensor) -> dict[str, float]:
    """``J(s) = diag(s) − s sᵀ`` restricted to ``1^⊥``: ``λ_2``, ``λ_n`` and ``κ = λ_n/λ_2``.

    From :func:`attncond.spectral.diagnostics.softmax_jacobian_spectrum` (secular equation, high
    relative accuracy: a dense ``eigh`` of ``Qᵀ J Q`` loses ``eps·κ`` relative accuracy in ``λ_2``).
    """
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"s must be a probability vector with n >= 2 entries, got shape {tuple(s.shape)}")
    r = softmax_jacobian_spectrum(s)
    lam2, lamn = float(r.eigenvalues_perp[0]), float(r.eigenvalues_perp[-1])
    return {"lambda_2": lam2, "lambda_n": lamn, "kappa": float(r.kappa)}


def hessian_extremes(loss: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
                     params: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``λ_max``, ``λ_min`` and ``κ`` of the Hessian of ``loss`` at ``params`` (one tensor).

    The values are certified by :func:`spectral.eigen_extremes`; ``v_min`` (a unit eigenvector
    of ``λ_min``, shaped like the parameter) comes from ``torch.linalg.eigh`` of the same
    dense matrix, which ``eigen_extremes`` does not return.
    """
    if len(params) != 1:
        raise ValueError(f"hessian_extremes takes exactly one parameter tensor, got {list(params)}")
    (name, p), = params.items()
    Hm = torch.func.hessian(lambda v: loss({name: v.reshape(p.shape)}))(p.reshape(-1).detach())
    Hm = Hm.reshape(p.numel(), p.numel())
    est = spectral.eigen_extremes(Hm, method="dense")
    kappa = est.lambda_max / est.lambda_min if est.lambda_min > 0 else math.inf
    v_min = torch.linalg.eigh(0.5 * (Hm + Hm.T)).eigenvectors[:, 0].reshape(p.shape)
    return {"lambda_max": est.lambda_max, "lambda_min": est.lambda_min, "kappa": kappa,
            "converged": est.converged, "v_min": v_min}
