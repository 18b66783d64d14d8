"""Operators built from torch functions: Jacobian, Gram, Hessian and Gauss–Newton.

All act on the parameters flattened in dict order, ``θ = [vec(p_1); vec(p_2); …]``
(``vec`` = ``reshape(-1)``, row-major as in torch), and on ``vec(fn(params))``.

* :class:`JacobianOperator`: ``J = ∂ vec(fn(θ)) / ∂θ``; ``J x`` by ``torch.func.jvp``
  (forward mode), ``Jᵀ y`` by a ``torch.func.vjp`` function cached at construction (the
  linearisation point is fixed). Blocks use ``torch.func.vmap`` and fall back to a loop.
* :class:`GramOperator`: ``J Jᵀ`` (``side="outer"``, the empirical NTK Gram) or ``Jᵀ J``.
* :class:`HessianOperator`: ``∇²L(θ) x`` by forward-over-reverse (``jvp`` of ``grad``).
* :class:`GaussNewtonOperator`: ``Jᵀ H_L J`` with ``H_L = I`` (squared loss) by default.
* :func:`jacobian_gram`: dense ``J Jᵀ`` (or ``Jᵀ J``) by batched products.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .operators import LinearOp, as_operator, same_device

__all__ = [
    "JacobianOperator",
    "GramOperator",
    "HessianOperator",
    "GaussNewtonOperator",
    "jacobian_gram",
    "flatten_params",
]


def _check_params(params: Mapping[str, torch.Tensor]) -> tuple[list[str], list[torch.Tensor]]:
    if not isinstance(params, Mapping) or len(params) == 0:
        raise ValueError("params must be a non-empty dict of tensors")
    names = list(params)
    tensors = []
    for k in names:
        t = params[k]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"params[{k!r}] must be a floating torch tensor")
        tensors.append(t.detach())
    dt, dev = tensors[0].dtype, tensors[0].device
    for k, t in zip(names, tensors, strict=True):
        if t.dtype != dt:
            raise ValueError(f"params[{k!r}] has dtype {t.dtype}, expected {dt}")
        if not same_device(t.device, dev):
            raise ValueError(f"device mismatch: params[{k!r}] on {t.device}, others on {dev}")
    return names, tensors


def flatten_params(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``θ = [vec(p_1); vec(p_2); …]`` in dict order."""
    return torch.cat([t.detach().reshape(-1) for t in params.values()])


class _Flat:
    """Helpers to split a flat vector into the parameter shapes."""

    def __init__(self, names: list[str], tensors: list[torch.Tensor]) -> None:
        self.names = names
        self.shapes = [t.shape for t in tensors]
        self.numels = [t.numel() for t in tensors]
        self.n = sum(self.numels)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(c.reshape(s) for c, s in zip(torch.split(x, self.numels), self.shapes, strict=True))

    def cat(self, ts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in ts])


class _VmapMixin:
    _use_vmap: bool = True
    chunk: int = 128

    def _batched(self, f: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        if self._use_vmap:
            try:
                outs = [
                    torch.func.vmap(f, in_dims=1, out_dims=1)(X[:, a : a + self.chunk])
                    for a in range(0, X.shape[1], self.chunk)
                ]
                return torch.cat(outs, dim=1)
            except Exception:  # noqa: BLE001 - some functions do not support vmap
                self._use_vmap = False
        return torch.stack([f(X[:, j]) for j in range(X.shape[1])], dim=1)


class JacobianOperator(_VmapMixin, LinearOp):
    """``J = ∂ vec(fn(params)) / ∂θ ∈ R^{m×p}`` at the given parameters.

    Parameters
    ----------
    fn : ``fn(params_dict, *inputs) -> Tensor`` of any shape (flattened to length ``m``),
        e.g. ``lambda p: model.functional(p, X)``.
    params : dict of tensors (the linearisation point); ``p = Σ numel``.
    inputs : optional tuple of extra positional arguments of ``fn``.
    vmap : batch block products with ``torch.func.vmap`` (falls back to a loop when
        ``fn`` does not support it).
    chunk : columns per vmapped batch.
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        params: Mapping[str, torch.Tensor],
        inputs: tuple[Any, ...] | None = None,
        *,
        vmap: bool = True,
        chunk: int = 128,
    ) -> None:
        names, tensors = _check_params(params)
        self._flat = _Flat(names, tensors)
        self._primals = tuple(tensors)
        inputs = tuple(inputs) if inputs is not None else ()

        def f(*ts: torch.Tensor) -> torch.Tensor:
            return fn(dict(zip(names, ts, strict=True)), *inputs).reshape(-1)

        self._f = f
        out, self._vjp = torch.func.vjp(f, *self._primals)
        self.output = out.detach()
        super().__init__(
            (out.numel(), self._flat.n), tensors[0].dtype, tensors[0].device, name="JacobianOperator"
        )
        self._use_vmap = bool(vmap)
        self.chunk = int(chunk)

    @property
    def param_names(self) -> list[str]:
        return list(self._flat.names)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(self._f, self._primals, self._flat.split(x))[1]

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._flat.cat(self._vjp(y))

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self._batched(self._matvec, X)

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self._batched(self._rmatvec, Y)


class GramOperator(LinearOp):
    """``J Jᵀ`` (``side="outer"``, ``m×m``) or ``Jᵀ J`` (``side="inner"``, ``p×p``).

    Symmetric positive semidefinite; each product costs one ``J`` and one ``Jᵀ`` product
    (counted on ``J`` as well). Its eigenvalues are ``σ_i(J)²``: use it for PL constants
    ``μ = λ_min(J Jᵀ)`` but compute ``σ_min(J)`` on ``J`` itself (squaring loses
    ``eps·κ²`` relative accuracy).
    """

    def __init__(self, J: Any, side: str = "outer") -> None:
        if side not in ("outer", "inner"):
            raise ValueError(f"unknown side {side!r}; known: 'outer', 'inner'")
        self.J = as_operator(J)
        self.side = side
        d = self.J.shape[0] if side == "outer" else self.J.shape[1]
        super().__init__((d, d), self.J.dtype, self.J.device, name=f"GramOperator[{side}]")

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        if self.side == "outer":
            return self.J.matvec(self.J.rmatvec(x))
        return self.J.rmatvec(self.J.matvec(x))

    _rmatvec = _matvec

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        if self.side == "outer":
            return self.J.matmat(self.J.rmatmat(X))
        return self.J.rmatmat(self.J.matmat(X))

    _rmatmat = _matmat


class HessianOperator(_VmapMixin, LinearOp):
    """``H = ∇²_θ L(θ)`` by forward-over-reverse: ``H x = jvp(grad L, (θ,), (x,))``.

    ``loss_fn(params_dict, *inputs) -> scalar``. Symmetric, so ``rmatvec = matvec``.
    """

    def __init__(
        self,
        loss_fn: Callable[..., torch.Tensor],
        params: Mapping[str, torch.Tensor],
        inputs: tuple[Any, ...] | None = None,
        *,
        vmap: bool = True,
        chunk: int = 64,
    ) -> None:
        names, tensors = _check_params(params)
        self._flat = _Flat(names, tensors)
        self._primals = tuple(tensors)
        inputs = tuple(inputs) if inputs is not None else ()

        def L(ts: tuple[torch.Tensor, ...]) -> torch.Tensor:
            out = loss_fn(dict(zip(names, ts, strict=True)), *inputs)
            if out.numel() != 1:
                raise ValueError("loss_fn must return a scalar")
            return out.reshape(())

        grad = torch.func.grad(L)
        self._g = lambda *ts: grad(ts)
        super().__init__(
            (self._flat.n, self._flat.n), tensors[0].dtype, tensors[0].device, name="HessianOperator"
        )
        self._use_vmap = bool(vmap)
        self.chunk = int(chunk)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._flat.cat(torch.func.jvp(self._g, self._primals, self._flat.split(x))[1])

    _rmatvec = _matvec

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self._batched(self._matvec, X)

    _rmatmat = _matmat


class GaussNewtonOperator(LinearOp):
    """``G = Jᵀ H_L J`` (generalised Gauss–Newton), ``J`` the Jacobian of ``fn``.

    ``loss_hessian``: ``None`` means ``H_L = I`` (loss ``½‖f − y‖²``); otherwise anything
    :func:`as_operator` accepts of shape ``(m, m)`` (a symmetric PSD matrix or operator).
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        params: Mapping[str, torch.Tensor],
        loss_hessian: Any = None,
        inputs: tuple[Any, ...] | None = None,
    ) -> None:
        self.J = JacobianOperator(fn, params, inputs)
        m, p = self.J.shape
        self.H = None
        if loss_hessian is not None:
            self.H = as_operator(loss_hessian, dtype=self.J.dtype, device=self.J.device)
            if self.H.shape != (m, m):
                raise ValueError(f"loss_hessian must have shape {(m, m)}, got {self.H.shape}")
        super().__init__((p, p), self.J.dtype, self.J.device, name="GaussNewtonOperator")

    def _mid(self, Y: torch.Tensor) -> torch.Tensor:
        return Y if self.H is None else self.H.matvec(Y)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.J.rmatvec(self._mid(self.J.matvec(x)))

    _rmatvec = _matvec

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self.J.rmatmat(self._mid(self.J.matmat(X)))

    _rmatmat = _matmat


def jacobian_gram(
    J: Any, side: str = "outer", *, chunk: int = 256, max_bytes: int = 2 * 1024**3
) -> torch.Tensor:
    """Dense ``G = J Jᵀ`` (``side="outer"``) or ``Jᵀ J`` (``"inner"``) by batched products.

    Outer: rows of ``J`` are obtained as ``Jᵀ E_c`` for identity blocks ``E_c`` of
    ``chunk`` columns (vmapped VJPs). If all of ``Jᵀ`` fits in ``max_bytes`` it is stored and
    ``G = (Jᵀ)ᵀ Jᵀ`` is one GEMM (``m`` products); otherwise ``G[:, c] = J (Jᵀ E_c)`` is
    streamed (``2m`` products, ``O(p·chunk)`` memory). Inner is the same with ``J E_c``.
    The result is symmetrised, ``(G + Gᵀ)/2``.
    """
    op = as_operator(J)
    if side not in ("outer", "inner"):
        raise ValueError(f"unknown side {side!r}; known: 'outer', 'inner'")
    m, p = op.shape
    d, other = (m, p) if side == "outer" else (p, m)
    first = op.rmatmat if side == "outer" else op.matmat
    second = op.matmat if side == "outer" else op.rmatmat
    item = torch.finfo(op.dtype).bits // 8
    store = d * other * item <= max_bytes
    blocks = []
    G = torch.empty(d, d, dtype=op.dtype, device=op.device)
    for a in range(0, d, chunk):
        b = min(a + chunk, d)
        E = torch.zeros(d, b - a, dtype=op.dtype, device=op.device)
        E[torch.arange(a, b), torch.arange(b - a)] = 1.0
        F = first(E)
        if store:
            blocks.append(F)
        else:
            G[:, a:b] = second(F)
    if store:
        F = torch.cat(blocks, dim=1)
        G = F.T @ F
    return 0.5 * (G + G.T)
