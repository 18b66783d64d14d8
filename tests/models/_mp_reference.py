"""High-precision (mpmath) reference for the [S24] model: outputs, Jacobians and loss Hessians.

Independent of torch and of the closed forms: the model is re-implemented on ``mpmath.mpf`` numbers
(per-head values, ``d_out`` outputs) and differentiated exactly in forward mode with dual numbers
(nested duals for second derivatives), at :data:`DPS` digits. The float64 weights and inputs are
exact in mpmath, and mpf exponents do not underflow, so every entry, however tiny, has ~DPS correct
digits (no finite-difference step, no cancellation limit).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import mpmath
import torch

from models import MultiHeadAttention

DPS = 80  # working digits


class Dual:
    """``a + b ε`` with ``ε² = 0``; ``a``, ``b`` are mpf or (nested) Dual numbers."""

    __slots__ = ("a", "b")

    def __init__(self, a, b=0):
        self.a, self.b = a, b

    @staticmethod
    def _lift(x):
        return x if isinstance(x, Dual) else Dual(x, 0)

    def __add__(self, o):
        o = Dual._lift(o)
        return Dual(self.a + o.a, self.b + o.b)

    __radd__ = __add__

    def __neg__(self):
        return Dual(-self.a, -self.b)

    def __sub__(self, o):
        return self + (-Dual._lift(o))

    def __rsub__(self, o):
        return Dual._lift(o) - self

    def __mul__(self, o):
        o = Dual._lift(o)
        return Dual(self.a * o.a, self.a * o.b + self.b * o.a)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = Dual._lift(o)
        q = self.a / o.a
        return Dual(q, (self.b - q * o.b) / o.a)

    def __rtruediv__(self, o):
        return Dual._lift(o) / self

    def __pow__(self, k: int):
        assert k == 2
        return self * self

    def _val(self):
        return self.a._val() if isinstance(self.a, Dual) else self.a

    def __lt__(self, o):
        return self._val() < (o._val() if isinstance(o, Dual) else o)

    def __gt__(self, o):
        return self._val() > (o._val() if isinstance(o, Dual) else o)


def _exp(x):
    if isinstance(x, Dual):
        e = _exp(x.a)
        return Dual(e, e * x.b)
    return mpmath.exp(x)


def _sqrt(x):
    if isinstance(x, Dual):
        r = _sqrt(x.a)
        return Dual(r, x.b / (2 * r))
    return mpmath.sqrt(x)


def _sum(xs):
    out = mpmath.mpf(0)
    for x in xs:
        out = x + out
    return out


def _min(t, v):
    return t if not (v < t) else v  # clamp(v, max=t): the branch v < t takes v


def _mat(t: torch.Tensor) -> list:
    return [[mpmath.mpf(float(v)) for v in row] for row in t.double().tolist()]


def _softmax_row(row: Sequence) -> list:
    top = max(row)
    e = [_exp(v - top) for v in row]
    tot = _sum(e)
    return [x / tot for x in e]


def _kernel(name: str, Q: list, K: list, tau, opts: dict) -> list:
    n, d = len(Q), len(Q[0])
    if name == "gaussian":
        L = [[-_sum((Q[k][b] - K[j][b]) ** 2 for b in range(d)) / (2 * tau) for j in range(n)]
             for k in range(n)]
        if opts.get("normalize", False):
            return [_softmax_row(r) for r in L]
        return [[_exp(v) for v in r] for r in L]
    z = [[_sum(Q[k][b] * K[j][b] for b in range(d)) for j in range(n)] for k in range(n)]
    if name in ("softmax", "temperature"):
        return [_softmax_row([v / tau for v in r]) for r in z]
    if name == "linear":
        return [[v / tau for v in r] for r in z]
    out = []
    unbiased = opts.get("unbiased", True)
    for r in z:
        mean = _sum(r) / n
        var = _sum((v - mean) ** 2 for v in r) / (n - 1 if unbiased else n)
        stat = var if name == "normsoftmax" else _sqrt(var)
        m = _min(tau, stat)
        out.append(_softmax_row([v / m for v in r]))
    return out


def _matmul(A: list, B: list) -> list:
    return [[_sum(A[s][a] * B[a][b] for a in range(len(B))) for b in range(len(B[0]))] for s in range(len(A))]


def mh_forward(model: MultiHeadAttention, X: torch.Tensor, W: dict[str, list]) -> list:
    """``MH(X)`` flattened (sample, token, output), weights ``W`` as nested mpf lists."""
    assert model.value_param == "per_head"
    H, d = model.H, model.d
    tau = mpmath.sqrt(d) if model.tau is None else mpmath.mpf(model.tau)
    out = []
    for Xi in X.double():
        x = _mat(Xi)
        n = len(x)
        y = [[mpmath.mpf(0)] * model.d_out for _ in range(n)]
        for h in range(H):
            Q, K, V = (_matmul(x, W[k][h]) for k in ("W_Q", "W_K", "W_V"))
            S = _kernel(model.kernel_name, Q, K, tau, model.kernel_options)
            for k in range(n):
                head = [_sum(S[k][j] * V[j][b] for j in range(n)) for b in range(d)]
                for o in range(model.d_out):
                    y[k][o] += _sum(head[b] * W["W_O"][h * d + b][o] for b in range(d))
        out.extend(v for row in y for v in row)
    return out


def _weights(model: MultiHeadAttention) -> dict[str, list]:
    def nested(t: torch.Tensor):
        return [nested(r) for r in t] if t.ndim else mpmath.mpf(float(t))

    return {k: nested(getattr(model, k).detach().double()) for k in ("W_Q", "W_K", "W_V", "W_O")}


def _entries(W: dict[str, list], names: Sequence[str], model: MultiHeadAttention):
    """Index paths of every entry of the named weights, in ``flatten_params`` order."""
    for k in names:
        for idx in itertools.product(*[range(s) for s in getattr(model, k).shape]):
            yield k, idx


def _bump(W: dict[str, list], k: str, idx: tuple[int, ...], make) -> None:
    ref = W[k]
    for i in idx[:-1]:
        ref = ref[i]
    ref[idx[-1]] = make(ref[idx[-1]])


def _part(v, *path: str):
    for p in path:
        v = getattr(v, p) if isinstance(v, Dual) else mpmath.mpf(0)
    return v


def mh_jacobian(model: MultiHeadAttention, X: torch.Tensor, names: Sequence[str]) -> mpmath.matrix:
    """``∂ vec MH(X) / ∂θ`` for the weights ``names`` (columns in ``flatten_params`` order)."""
    with mpmath.workdps(DPS):
        cols = []
        for k, idx in _entries(_weights(model), names, model):
            W = _weights(model)
            _bump(W, k, idx, lambda w: Dual(w, 1))
            cols.append([_part(v, "b") for v in mh_forward(model, X, W)])
        return mpmath.matrix(cols).T


def loss_hessian(model: MultiHeadAttention, X: torch.Tensor, y: torch.Tensor,
                 names: Sequence[str]) -> mpmath.matrix:
    """Hessian of ``½‖MH(X) − y‖²`` w.r.t. the weights ``names`` (nested duals, exact)."""
    with mpmath.workdps(DPS):
        yy = [mpmath.mpf(float(v)) for v in y.double().reshape(-1).tolist()]
        ent = list(_entries(_weights(model), names, model))
        p = len(ent)
        Hm = mpmath.matrix(p, p)
        for i in range(p):
            for j in range(i, p):
                W = _weights(model)
                _bump(W, *ent[i], lambda w: Dual(Dual(w, 0), Dual(1, 0)))
                _bump(W, *ent[j], lambda w: w + Dual(Dual(0, 1), 0))
                f = _sum((a - b) ** 2 for a, b in zip(mh_forward(model, X, W), yy, strict=True)) / 2
                Hm[i, j] = Hm[j, i] = _part(f, "b", "b")
        return Hm


def to_torch(M: mpmath.matrix) -> torch.Tensor:
    return torch.tensor([[float(M[i, j]) for j in range(M.cols)] for i in range(M.rows)], dtype=torch.float64)


def singular_values(M: mpmath.matrix, digits: int = 50) -> list[float]:
    """Singular values of ``M`` computed in ``digits``-digit arithmetic, descending."""
    with mpmath.workdps(digits):
        return sorted((float(v) for v in mpmath.svd_r(M, compute_uv=False)), reverse=True)
