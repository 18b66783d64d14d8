"""Measurements for the experiments, all through the ``spectral`` library.

* :func:`cond` — ``σ_max``, ``σ_min``, ``κ`` of a matrix: :func:`spectral.extreme_singular_values`
  (``method="dense"`` by default: every matrix here is small, and the dense route is certified).
* :func:`z_matrix` — ``Z = [Z_1; …; Z_N]`` of a [Q25] block:
  :func:`spectral.diagnostics.structured.attention_output_matrix`.
* :func:`softmax_jacobian_kappa` — ``κ(J(s)) = λ_n/λ_2`` on ``1^⊥`` (MATH.md §4): the Jacobian
  is restricted to ``1^⊥`` by an orthonormal basis ``Q`` (``Qᵀ J Q``, whose eigenvalues are
  exactly those of ``J`` on ``1^⊥``) and its extremes taken with :func:`spectral.eigen_extremes`.
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
from attncond.spectral.diagnostics.structured import attention_output_matrix


def cond(A: torch.Tensor, method: str = "dense") -> dict[str, Any]:
    """``{"sigma_max", "sigma_min", "cond", "converged", "method"}`` of ``A`` (certified)."""
    est = spectral.extreme_singular_values(A, method=method)
    return {"sigma_max": est.sigma_max, "sigma_min": est.sigma_min, "cond": est.cond,
            "converged": est.converged, "method": est.method}


def z_matrix(block: AttentionBlock, X: torch.Tensor, residual: bool) -> torch.Tensor:
    """[Q25] ``Z ∈ R^{Nn×D}`` with or without the residual (MATH.md §4)."""
    return attention_output_matrix(block, X, residual=residual)


def _complement_basis(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal basis (n × n−1) of ``1^⊥``: the last n−1 columns of a QR of ``[1, I]``."""
    M = torch.cat([torch.ones(n, 1, dtype=dtype, device=device),
                   torch.eye(n, dtype=dtype, device=device)[:, : n - 1]], dim=1)
    Q, _ = torch.linalg.qr(M)
    return Q[:, 1:]


def softmax_jacobian_kappa(s: torch.Tensor) -> dict[str, float]:
    """``J(s) = diag(s) − s sᵀ`` restricted to ``1^⊥``: ``λ_2``, ``λ_n`` and ``κ = λ_n/λ_2``."""
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"s must be a probability vector with n >= 2 entries, got shape {tuple(s.shape)}")
    J = torch.diag(s) - torch.outer(s, s)
    Q = _complement_basis(s.numel(), s.dtype, s.device)
    est = spectral.eigen_extremes(Q.T @ J @ Q, method="dense")
    lam2 = max(est.lambda_min, 0.0)
    return {"lambda_2": lam2, "lambda_n": est.lambda_max,
            "kappa": est.lambda_max / lam2 if lam2 > 0 else math.inf}


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
