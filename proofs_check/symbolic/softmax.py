"""Softmax-family derivations: the softmax Jacobian, the temperature derivative, and the symbolic
pieces of row-softmax attention (plain ``softmax(QKᵀ/τ)`` and NormSoftmax) for :mod:`.attention`."""

from __future__ import annotations

import functools
import time
from typing import Any

import sympy as sp

from .core import Derivation, check_name, check_size, finish, jacobian_entries, softmax_rows, symbols

_TEMPERATURE_TARGETS = ("jacobian", "probabilities")


def softmax_jacobian(n: int, *, prove: bool = True) -> Derivation:
    """``∂ softmax(z)/∂z`` derived entrywise, proved equal to ``diag(s) − s sᵀ`` (MATH.md §4, [I25]).

    ``s_i = e^{z_i} / Σ_j e^{z_j}``; each entry ``∂s_i/∂z_j`` is simplified with
    ``sympy.simplify`` and ``sympy.simplify(entry − closed) == 0`` is the proof.
    Argument: ``z`` of shape ``(n,)``; result shape ``(n, n)``.
    """
    return _softmax_jacobian(check_size("n", n), bool(prove))


@functools.lru_cache(maxsize=32)
def _softmax_jacobian(n: int, prove: bool) -> Derivation:
    t0 = time.perf_counter()
    z = symbols("z", (n,))
    s = softmax_rows(sp.Matrix([z]))
    expr = jacobian_entries(s, z, (n,), (n,))
    sv = sp.Matrix(s).T  # column
    J = sp.diag(*sv) - sv * sv.T
    return finish("softmax_jacobian", {"n": n}, expr, list(J), (n, n), [("z", z)], [(n,)],
                   "diag(s) - s s^T, s = softmax(z)", "MATH.md §4; [I25], [H24]", "simplify", "simplify",
                   prove, t0)


def temperature_derivative(n: int, *, target: str = "jacobian", prove: bool = True) -> Derivation:
    """Derivative with respect to the temperature τ of the softmax at ``z/τ`` ([H24], MATH.md §2).

    ``target="jacobian"`` (default): ``∂J_τ/∂τ`` with ``J_τ = ∂softmax(z/τ)/∂z = J(s)/τ``, closed
    form ``−J(s)/τ² + (diag(ṡ) − ṡsᵀ − sṡᵀ)/τ``; shape ``(n, n)``.
    ``target="probabilities"``: ``ṡ = ∂softmax(z/τ)/∂τ = −J(s) z/τ²``; shape ``(n,)``.
    Arguments: ``z`` of shape ``(n,)`` and ``tau`` (scalar, > 0). Proof by ``sympy.simplify``.
    """
    return _temperature_derivative(check_size("n", n), check_name("target", target, _TEMPERATURE_TARGETS),
                                   bool(prove))


@functools.lru_cache(maxsize=32)
def _temperature_derivative(n: int, target: str, prove: bool) -> Derivation:
    t0 = time.perf_counter()
    z = symbols("z", (n,))
    tau = sp.Symbol("tau", positive=True)
    s = softmax_rows(sp.Matrix([z]) / tau)
    sv = sp.Matrix(s).T
    J = sp.diag(*sv) - sv * sv.T
    s_dot = -J * sp.Matrix(z) / tau**2
    if target == "probabilities":
        expr = [sp.diff(si, tau) for si in sv]
        cf, shape = list(s_dot), (n,)
        formula = "d softmax(z/tau)/d tau = -J(s) z / tau^2"
    else:
        Jt = sp.Matrix(n, n, lambda i, j: sp.diff(sv[i], z[j]))  # J_tau derived from scratch
        expr = [sp.diff(e, tau) for e in Jt]
        dJ = sp.diag(*s_dot) - s_dot * sv.T - sv * s_dot.T
        cf, shape = list(-J / tau**2 + dJ / tau), (n, n)
        formula = ("d J_tau / d tau = -J(s)/tau^2 + (diag(sdot) - sdot s^T - s sdot^T)/tau, "
                   "sdot = -J(s) z / tau^2, J_tau = d softmax(z/tau)/dz")
    return finish("temperature_derivative", {"n": n, "target": target}, expr, cf, shape,
                   [("z", z), ("tau", tau)], [(n,), ()], formula, "MATH.md §2; [H24]", "factor",
                   "normal form", prove, t0)



# ------------------------------------------------------------------ pieces of the attention derivation
def dot_logits(Q: sp.Matrix, K: sp.Matrix, tau: sp.Symbol) -> dict[str, Any]:
    """``L = Q Kᵀ / τ`` (form ``"dot"``)."""
    return {"L": Q * K.T / tau}


def normsoftmax_logits(Q: sp.Matrix, K: sp.Matrix, tau: sp.Symbol, stat: str) -> dict[str, Any]:
    """``L_kj = z_kj / Min(τ, v_k)``, ``z = Q Kᵀ``, ``v_k`` the unbiased row variance or std (NormSoftmax).

    Also returns ``z``, the pairs ``(Min(τ, v_k), v_k)`` and ``∂v_k/∂z_kl`` for :func:`normsoftmax_adjoint`.
    """
    z = Q * K.T
    n = z.rows
    m, dv = [], []
    for k in range(n):
        row = [z[k, j] for j in range(n)]
        mean = sum(row) / n
        var = sum((x - mean) ** 2 for x in row) / (n - 1)
        if stat == "var":
            v = var
            dv.append([2 * (x - mean) / (n - 1) for x in row])
        else:
            v = sp.sqrt(var)
            dv.append([(x - mean) / ((n - 1) * v) for x in row])
        m.append((sp.Min(tau, v), v))
    return {"L": sp.Matrix(n, n, lambda k, j: z[k, j] / m[k][0]), "z": z, "m": m, "dv": dv}


def softmax_adjoint(S: sp.Matrix, u: sp.Matrix) -> list[list[sp.Expr]]:
    """``G_kl = S_kl (u_l − (S u)_k)``: the row-softmax adjoint of ``S u`` w.r.t. the logits."""
    n = S.rows
    Su = S * u
    return [[S[k, l] * (u[l, 0] - Su[k, 0]) for l in range(n)] for k in range(n)]


def normsoftmax_adjoint(G: list[list[sp.Expr]], parts: dict[str, Any], tau: sp.Symbol) -> list[list[sp.Expr]]:
    """``G_kl / m_k − [v_k < τ] (∂v_k/∂z_kl) Σ_j G_kj z_kj / m_k²``: the adjoint w.r.t. ``z`` (τ → 1)."""
    z, m, dv = parts["z"], parts["m"], parts["dv"]
    n = z.rows
    new = []
    for k in range(n):
        mk, vk = m[k]
        Gz = sum(G[k][j] * z[k, j] for j in range(n))
        act = sp.Heaviside(tau - vk)
        new.append([G[k][l] / mk - act * dv[k][l] * Gz / mk**2 for l in range(n)])
    return new
