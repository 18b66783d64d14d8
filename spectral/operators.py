"""One linear-operator type for every input the solvers accept.

A :class:`LinearOp` represents ``A ∈ R^{m×n}`` through the products ``x ↦ A x`` and
``y ↦ Aᵀ y`` on torch tensors. Blocked products (``matmat``/``rmatmat``) act on
``(n, k)``/``(m, k)`` tensors. ``n_products`` counts single-vector products with ``A``
*or* ``Aᵀ`` (a block of ``k`` vectors counts ``k``); an operator and its adjoint share
the counter.

:func:`as_operator` wraps numpy arrays, scipy sparse matrices, torch tensors,
``scipy.sparse.linalg.LinearOperator`` objects, existing :class:`LinearOp` objects and
``(matvec, rmatvec, shape)`` tuples of callables.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

__all__ = ["LinearOp", "DenseOp", "SparseOp", "CallableOp", "as_operator", "same_device"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """``True`` when two devices are the same (``cuda`` and ``cuda:0`` compare equal)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


def _resolve_dtype(dtype: Any, default: torch.dtype | None = None) -> torch.dtype | None:
    if dtype is None:
        return default
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), None)
    elif not isinstance(dtype, torch.dtype):
        try:
            dtype = torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype
        except TypeError:
            dtype = None
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dtype


class _Counter:
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
        counter: _Counter | None = None,
        name: str | None = None,
    ) -> None:
        m, n = (int(s) for s in shape)
        if m < 0 or n < 0:
            raise ValueError(f"shape must be non-negative, got {shape}")
        self.shape: tuple[int, int] = (m, n)
        self.dtype: torch.dtype = _resolve_dtype(dtype)  # type: ignore[assignment]
        self.device: torch.device = torch.device(device)
        self._counter = counter if counter is not None else _Counter()
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
        return _AdjointOp(self)

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


class _AdjointOp(LinearOp):
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


class DenseOp(LinearOp):
    """An explicit dense matrix stored as a torch tensor."""

    is_explicit = True

    def __init__(self, A: torch.Tensor, *, name: str | None = None) -> None:
        super().__init__(tuple(A.shape), A.dtype, A.device, name=name or "DenseOp")
        self.A = A

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.A @ x

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self.A.T @ y

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self.A @ X

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self.A.T @ Y

    def to_dense(self, max_entries: int = 50_000_000) -> torch.Tensor:
        return self.A.clone()


def _csr(M: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(np.int64)),
            torch.from_numpy(M.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(M.data)).to(dtype),
            size=M.shape,
        ).to(device)


class SparseOp(LinearOp):
    """A scipy sparse matrix held as torch CSR tensors for ``A`` and ``Aᵀ``."""

    is_explicit = True

    def __init__(self, A: sp.spmatrix | sp.sparray, dtype: torch.dtype, device: Any) -> None:
        super().__init__(A.shape, dtype, device, name="SparseOp")
        csr = sp.csr_matrix(A)
        self._A = _csr(csr, self.dtype, self.device)
        self._AT = _csr(sp.csr_matrix(csr.T), self.dtype, self.device)
        self.nnz = int(csr.nnz)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._A @ x

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._AT @ y

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self._A @ X

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self._AT @ Y

    def to_dense(self, max_entries: int = 50_000_000) -> torch.Tensor:
        m, n = self.shape
        if m * n > max_entries:
            raise ValueError(f"to_dense: {m}x{n} exceeds max_entries={max_entries}")
        return self._A.to_dense()


class CallableOp(LinearOp):
    """An operator from ``matvec``/``rmatvec`` callables on torch tensors.

    With ``host=True`` the callables work on numpy arrays (as for a scipy
    ``LinearOperator``); vectors are copied to the CPU and back.
    """

    def __init__(
        self,
        matvec: Callable[[Any], Any],
        rmatvec: Callable[[Any], Any],
        shape: tuple[int, int],
        dtype: torch.dtype = torch.float64,
        device: Any = "cpu",
        *,
        matmat: Callable[[Any], Any] | None = None,
        rmatmat: Callable[[Any], Any] | None = None,
        host: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(shape, dtype, device, name=name or "CallableOp")
        self._mv, self._rmv, self._mm, self._rmm = matvec, rmatvec, matmat, rmatmat
        self._host = host
        self._np_dtype = np.float64 if self.dtype == torch.float64 else np.float32

    def _in(self, x: torch.Tensor) -> Any:
        return x.detach().cpu().numpy() if self._host else x

    def _out(self, y: Any, shape: tuple[int, ...]) -> torch.Tensor:
        if isinstance(y, torch.Tensor):
            t = y
        else:
            t = torch.from_numpy(np.ascontiguousarray(np.asarray(y, dtype=self._np_dtype)))
        return t.to(device=self.device, dtype=self.dtype).reshape(shape)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self._mv(self._in(x)), (self.shape[0],))

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._out(self._rmv(self._in(y)), (self.shape[1],))

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        if self._mm is None:
            return super()._matmat(X)
        return self._out(self._mm(self._in(X)), (self.shape[0], X.shape[1]))

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        if self._rmm is None:
            return super()._rmatmat(Y)
        return self._out(self._rmm(self._in(Y)), (self.shape[1], Y.shape[1]))


def _check_finite_np(a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError("A contains NaN or inf entries")


def as_operator(A: Any, *, device: torch.device | str | None = None, dtype: Any = None) -> LinearOp:
    """Wrap ``A`` as a :class:`LinearOp`.

    Parameters
    ----------
    A : numpy array, scipy sparse matrix, torch tensor (any device),
        ``scipy.sparse.linalg.LinearOperator``, :class:`LinearOp`, or a tuple
        ``(matvec, rmatvec, shape)`` of callables taking and returning torch tensors.
    device : target device. Explicit matrices are moved there; implicit operators
        (callables, LinearOp) cannot be moved and a different device raises ``ValueError``.
    dtype : ``float32`` or ``float64``. Default: the input's floating dtype, float64 for
        integer/boolean input and for callables.

    Raises
    ------
    ValueError : ``A`` not 2-D, NaN/inf entries in an explicit ``A``, unsupported dtype,
        or device mismatch.
    TypeError : unsupported type.
    """
    req_dtype = _resolve_dtype(dtype)
    if isinstance(A, LinearOp):
        if device is not None and not same_device(device, A.device):
            raise ValueError(f"device mismatch: A lives on {A.device}, requested device={device}")
        if req_dtype is not None and req_dtype != A.dtype:
            if isinstance(A, DenseOp):
                return DenseOp(A.A.to(req_dtype))
            base = A
            return CallableOp(
                lambda x: base.matvec(x.to(base.dtype)),
                lambda y: base.rmatvec(y.to(base.dtype)),
                base.shape,
                req_dtype,
                base.device,
                matmat=lambda X: base.matmat(X.to(base.dtype)),
                rmatmat=lambda Y: base.rmatmat(Y.to(base.dtype)),
                name=f"{base.name}[{req_dtype}]",
            )
        return A
    if isinstance(A, tuple) and len(A) == 3 and callable(A[0]) and callable(A[1]):
        mv, rmv, shape = A
        if len(tuple(shape)) != 2:
            raise ValueError(f"A: shape must have 2 entries, got {shape}")
        return CallableOp(mv, rmv, tuple(shape), req_dtype or torch.float64, device or "cpu", name="CallableOp")
    if isinstance(A, spla.LinearOperator):
        if len(A.shape) != 2:
            raise ValueError("A must be 2-D")
        dt = req_dtype
        if dt is None:
            dt = torch.float32 if np.dtype(A.dtype) == np.float32 else torch.float64
        return CallableOp(
            A.matvec,
            A.rmatvec,
            A.shape,
            dt,
            device or "cpu",
            matmat=A.matmat,
            rmatmat=A.rmatmat,
            host=True,
            name="ScipyLinearOperator",
        )
    if sp.issparse(A):
        if A.ndim != 2:
            raise ValueError("A must be 2-D")
        data = np.asarray(sp.csr_matrix(A).data)
        if np.iscomplexobj(data):
            raise ValueError("A must be real")
        _check_finite_np(data)
        dt = req_dtype or (torch.float32 if data.dtype == np.float32 else torch.float64)
        return SparseOp(A, dt, device or "cpu")
    if isinstance(A, torch.Tensor):
        t = A.detach()
    elif isinstance(A, (np.ndarray, list)) or np.isscalar(A):
        arr = np.asarray(A)
        if arr.dtype == object:
            raise TypeError("A: object arrays are not supported")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise TypeError(
            "A must be a numpy array, scipy sparse matrix, torch tensor, scipy LinearOperator, "
            f"LinearOp or (matvec, rmatvec, shape) tuple; got {type(A).__name__}"
        )
    if t.ndim != 2:
        raise ValueError(f"A must be 2-D, got shape {tuple(t.shape)}")
    if t.is_complex():
        raise ValueError("A must be real")
    if req_dtype is None:
        req_dtype = t.dtype if t.dtype in _FLOAT_DTYPES else torch.float64
        if t.is_floating_point() and t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"A: dtype must be float32 or float64, got {t.dtype}")
    t = t.to(dtype=req_dtype, device=device if device is not None else t.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("A contains NaN or inf entries")
    return DenseOp(t)
