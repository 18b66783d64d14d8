"""The linear-operator base class: products, adjoint, product counting, scipy export.

A :class:`LinearOp` represents ``A ∈ R^{m×n}`` through the products ``x ↦ A x`` and
``y ↦ Aᵀ y`` on torch tensors. Blocked products (``matmat``/``rmatmat``) act on
``(n, k)``/``(m, k)`` tensors. ``n_products`` counts single-vector products with ``A``
*or* ``Aᵀ`` (a block of ``k`` vectors counts ``k``); an operator and its adjoint share
the counter. Concrete operators implement ``_matmat`` and ``_rmatmat`` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg as spla
import torch

FLOAT_DTYPES = (torch.float32, torch.float64)

def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """``True`` when two devices are the same (``cuda`` and ``cuda:0`` compare equal)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index

def resolve_dtype(dtype: Any, default: torch.dtype | None = None) -> torch.dtype | None:
    if dtype is None:
        return default
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), None)
    elif not isinstance(dtype, torch.dtype):
        try:
            dtype = torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype
        except TypeError:
            dtype = None
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dtype

class ProductCounter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

class LinearOp:
    """A real linear operator ``A: R^n → R^m`` acting on torch tensors.

    Subclasses implement ``_matvec``/``_rmatvec`` (and optionally the blocked
    ``_matmat``/``_rmatmat``); the public methods check shapes, dtype and device and
    count products.

    Attributes
    ----------
    shape : ``(m, n)``.
    dtype : ``torch.float32`` or ``torch.float64``.
    device : the torch device the vectors must live on.
    is_explicit : ``True`` when the matrix entries are stored (dense or sparse).
    """

    is_explicit: bool = False

    def __init__(
        self,
        shape: tuple[int, int],
        dtype: torch.dtype,
        device: torch.device | str,
        *,
        counter: ProductCounter | None = None,
        name: str | None = None,
    ) -> None:
        m, n = (int(s) for s in shape)
        if m < 0 or n < 0:
            raise ValueError(f"shape must be non-negative, got {shape}")
        self.shape: tuple[int, int] = (m, n)
        self.dtype: torch.dtype = resolve_dtype(dtype)  # type: ignore[assignment]
        self.device: torch.device = torch.device(device)
        self._counter = counter if counter is not None else ProductCounter()
        self.name = name or type(self).__name__

    # ------------------------------------------------------------------ counting
    @property
    def n_products(self) -> int:
        """Single-vector products with ``A`` or ``Aᵀ`` since the last reset."""
        return self._counter.n

    def reset_count(self) -> None:
        """Set :attr:`n_products` to zero (shared with the adjoint)."""
        self._counter.n = 0

    # ------------------------------------------------------------------ checks
    def _check(self, x: Any, dim: int, name: str) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
        if not same_device(x.device, self.device):
            raise ValueError(f"{name} is on device {x.device} but the operator is on {self.device}")
        if x.ndim not in (1, 2) or x.shape[0] != dim:
            raise ValueError(
                f"{name} must have shape ({dim},) or ({dim}, k) for an operator of shape "
                f"{self.shape}, got {tuple(x.shape)}"
            )
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        return x

    # ------------------------------------------------------------------ products
    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape ``(n,)`` (or ``(n, k)``, then as :meth:`matmat`)."""
        x = self._check(x, self.shape[1], "x")
        if x.ndim == 2:
            return self.matmat(x)
        self._counter.n += 1
        return self._matvec(x)

    def rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y`` for ``y`` of shape ``(m,)`` (or ``(m, k)``, then as :meth:`rmatmat`)."""
        y = self._check(y, self.shape[0], "y")
        if y.ndim == 2:
            return self.rmatmat(y)
        self._counter.n += 1
        return self._rmatvec(y)

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        """``A X`` for ``X`` of shape ``(n, k)``; counts ``k`` products."""
        X = self._check(X, self.shape[1], "X")
        if X.ndim == 1:
            X = X[:, None]
        self._counter.n += X.shape[1]
        if X.shape[1] == 0:
            return X.new_zeros((self.shape[0], 0))
        return self._matmat(X)

    def rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ Y`` for ``Y`` of shape ``(m, k)``; counts ``k`` products."""
        Y = self._check(Y, self.shape[0], "Y")
        if Y.ndim == 1:
            Y = Y[:, None]
        self._counter.n += Y.shape[1]
        if Y.shape[1] == 0:
            return Y.new_zeros((self.shape[1], 0))
        return self._rmatmat(Y)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.matvec(x)

    # --------------------------------------------------------- to be overridden
    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._matvec(X[:, j]) for j in range(X.shape[1])], dim=1)

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._rmatvec(Y[:, j]) for j in range(Y.shape[1])], dim=1)

    # ------------------------------------------------------------------ views
    def adjoint(self) -> LinearOp:
        """The operator ``Aᵀ`` (shares the product counter)."""
        return AdjointOp(self)

    @property
    def T(self) -> LinearOp:  # noqa: N802
        return self.adjoint()

    def to_dense(self, max_entries: int = 50_000_000) -> torch.Tensor:
        """The ``(m, n)`` matrix, built with ``min(m, n)`` products for implicit operators."""
        m, n = self.shape
        if m * n > max_entries:
            raise ValueError(f"to_dense: {m}x{n} = {m * n} entries exceeds max_entries={max_entries}")
        if n <= m:
            eye = torch.eye(n, dtype=self.dtype, device=self.device)
            return self.matmat(eye)
        eye = torch.eye(m, dtype=self.dtype, device=self.device)
        return self.rmatmat(eye).T.contiguous()

    def to_scipy(self) -> spla.LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` on numpy arrays (products are counted)."""
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        op = self

        def _t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np_dtype), device=op.device)

        def _n(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        def mv(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)
            return _n(op.matvec(_t(x.reshape(-1)))).reshape(-1 if x.ndim == 1 else (-1, 1))

        def rmv(y: np.ndarray) -> np.ndarray:
            y = np.asarray(y)
            return _n(op.rmatvec(_t(y.reshape(-1)))).reshape(-1 if y.ndim == 1 else (-1, 1))

        return spla.LinearOperator(
            self.shape,
            matvec=mv,
            rmatvec=rmv,
            matmat=lambda X: _n(op.matmat(_t(X))),
            rmatmat=lambda Y: _n(op.rmatmat(_t(Y))),
            dtype=np_dtype,
        )

    def __repr__(self) -> str:
        return (
            f"{self.name}(shape={self.shape}, dtype={self.dtype}, device={self.device}, "
            f"n_products={self.n_products})"
        )

class AdjointOp(LinearOp):
    def __init__(self, base: LinearOp) -> None:
        super().__init__(
            (base.shape[1], base.shape[0]),
            base.dtype,
            base.device,
            counter=base._counter,
            name=f"{base.name}.T",
        )
        self.base = base
        self.is_explicit = base.is_explicit

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.base._rmatvec(x)

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self.base._matvec(y)

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self.base._rmatmat(X)

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self.base._matmat(Y)

    def adjoint(self) -> LinearOp:
        return self.base

    def to_dense(self, max_entries: int = 50_000_000) -> torch.Tensor:
        if self.base.is_explicit:
            return self.base.to_dense(max_entries).T.contiguous()
        return super().to_dense(max_entries)
