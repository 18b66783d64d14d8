"""Gaussian-kernel derivations: ``∂S/∂W_Q``, ``∂S/∂W_K`` of ``S_kj = exp(−‖x_kW_Q − x_jW_K‖²/(2τ))``,
and the distance logits of the Gaussian attention for :mod:`.attention`."""

from __future__ import annotations

import functools
import time
from typing import Any

import sympy as sp

from .core import Derivation, check_name, check_size, finish, jacobian_entries, symbols


def gaussian_kernel_jacobian(n: int, D: int, d: int, *, wrt: str = "W_Q", prove: bool = True) -> Derivation:
    """``∂S/∂W_Q`` or ``∂S/∂W_K`` of the unnormalised Gaussian kernel ([S24] eq. (3)-(4), MATH.md §2).

    ``S_kj = exp(−‖x_k W_Q − x_j W_K‖²/(2τ))`` (τ = √d in the models); closed forms
    ``∂S_kj/∂W_Q = −(1/τ) S_kj x_kᵀ (x_k W_Q − x_j W_K)`` and
    ``∂S_kj/∂W_K = +(1/τ) S_kj x_jᵀ (x_k W_Q − x_j W_K)``.
    Arguments ``X (n, D)``, ``W_Q (D, d)``, ``W_K (D, d)``, ``tau``; result ``(n, n, D, d)``.
    """
    n, D, d = check_size("n", n), check_size("D", D), check_size("d", d)
    return _gaussian_kernel_jacobian(n, D, d, check_name("wrt", wrt, ("W_Q", "W_K")), bool(prove))


@functools.lru_cache(maxsize=32)
def _gaussian_kernel_jacobian(n: int, D: int, d: int, wrt: str, prove: bool) -> Derivation:
    t0 = time.perf_counter()
    X, WQ, WK = symbols("x", (n, D)), symbols("q", (D, d)), symbols("k", (D, d))
    tau = sp.Symbol("tau", positive=True)
    Xm, Q, K = sp.Matrix(X), sp.Matrix(X) * sp.Matrix(WQ), sp.Matrix(X) * sp.Matrix(WK)
    S = sp.Matrix(n, n, lambda k, j: sp.exp(-sum((Q[k, b] - K[j, b]) ** 2 for b in range(d)) / (2 * tau)))
    var = WQ if wrt == "W_Q" else WK
    expr = jacobian_entries(S, var, (n, n), (D, d))
    cf = []
    for k in range(n):
        for j in range(n):
            for a in range(D):
                for b in range(d):
                    r = Q[k, b] - K[j, b]
                    cf.append(-S[k, j] * Xm[k, a] * r / tau if wrt == "W_Q" else S[k, j] * Xm[j, a] * r / tau)
    formula = ("dS_kj/dW_Q = -(1/tau) S_kj x_k^T (x_k W_Q - x_j W_K)" if wrt == "W_Q"
               else "dS_kj/dW_K = (1/tau) S_kj x_j^T (x_k W_Q - x_j W_K)")
    return finish("gaussian_kernel_jacobian", {"n": n, "D": D, "d": d, "wrt": wrt}, expr, cf, (n, n, D, d),
                   [("X", X), ("W_Q", WQ), ("W_K", WK), ("tau", tau)], [(n, D), (D, d), (D, d), ()],
                   formula + ", tau = sqrt(d) by default", "MATH.md §2; [S24] eq. (3)-(4)", "none",
                   "normal form", prove, t0)



def dist_logits(Q: sp.Matrix, K: sp.Matrix, tau: sp.Symbol) -> dict[str, Any]:
    """``L_kj = −‖q_k − k_j‖²/(2τ)`` (form ``"dist"``), with the differences ``q_k − k_j``."""
    n, d = Q.rows, Q.cols
    diff = [[[Q[k, b] - K[j, b] for b in range(d)] for j in range(n)] for k in range(n)]
    return {"L": sp.Matrix(n, n, lambda k, j: -sum(x**2 for x in diff[k][j]) / (2 * tau)), "diff": diff}
