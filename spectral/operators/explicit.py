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

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from attncond.spectral.operators.base import (
    FLOAT_DTYPES,
    AdjointOp,
    LinearOp,
    OperatorOutputError,
    ScaleState,
    check_device,
    ldexp,
    resolve_dtype,
    same_device,
    scale_exponent,
)


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
        """The callable's output as a tensor of ``shape``; refuses complex output, lower precision
        than the operator's dtype (a float32 product cannot be certified at float64 accuracy) and a
        length that disagrees with the declared shape."""
        where = f"operator {self.name} (shape {self.shape}), product #{self.n_products}"
        if isinstance(y, torch.Tensor):
            t = y
        else:
            a = np.asarray(y)
            if a.dtype == object:
                raise OperatorOutputError(f"{where}: the callable returned {type(y).__name__}, not numbers")
            t = torch.from_numpy(np.ascontiguousarray(a))
        if t.is_complex():
            raise OperatorOutputError(
                f"{where}: the callable returned complex values ({t.dtype}); complex operators are not "
                "supported (use the real form [[Re, -Im], [Im, Re]])")
        if t.is_floating_point() and torch.finfo(t.dtype).eps > torch.finfo(self.dtype).eps:
            raise OperatorOutputError(
                f"{where}: the callable returned {t.dtype} inside a {self.dtype} operator; its products "
                f"cannot be certified at {self.dtype} accuracy (return {self.dtype}, or build the "
                f"operator with dtype={t.dtype})")
        n = math.prod(shape)
        if t.numel() != n:
            raise OperatorOutputError(
                f"{where}: the callable returned {t.numel()} entries (shape {tuple(t.shape)}); the declared "
                f"shape {self.shape} needs {tuple(shape)} ({n} entries)")
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
    req_dtype = resolve_dtype(dtype)
    device = check_device(device)
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
        if np.dtype(A.dtype).kind == "c":
            raise ValueError(
                f"A is a complex scipy LinearOperator (dtype {np.dtype(A.dtype)}); complex operators are "
                "not supported: pass the real form [[Re, -Im], [Im, Re]] (its singular values are those of A, "
                "each twice)")
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
            raise ValueError("A must be real: complex matrices are not supported (use [[Re, -Im], [Im, Re]])")
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
    if t.device.type == "meta":
        raise ValueError("A is a meta tensor (shape only, no data): materialise it on 'cpu' or 'cuda' first")
    if t.is_complex():
        raise ValueError("A must be real: complex matrices are not supported (use [[Re, -Im], [Im, Re]])")
    if req_dtype is None:
        req_dtype = t.dtype if t.dtype in FLOAT_DTYPES else torch.float64
        if t.is_floating_point() and t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"A: dtype must be float32 or float64, got {t.dtype}")
    t = t.to(dtype=req_dtype, device=device if device is not None else t.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("A contains NaN or inf entries")
    return DenseOp(t)


def max_abs_entry(op: LinearOp) -> float:
    """``max |a_ij|`` of an explicit operator (no products)."""
    if isinstance(op, AdjointOp):
        return max_abs_entry(op.base)
    if isinstance(op, DenseOp):
        return float(op.A.abs().max()) if op.A.numel() else 0.0
    if isinstance(op, SparseOp):
        v = op._A.values()
        return float(v.abs().max()) if v.numel() else 0.0
    raise TypeError(f"max_abs_entry needs an explicit DenseOp/SparseOp, got {type(op).__name__}")

def _scaled_explicit(op: LinearOp, e: int) -> LinearOp:
    if isinstance(op, AdjointOp):
        return _scaled_explicit(op.base, e).adjoint()
    if isinstance(op, DenseOp):
        out = DenseOp(ldexp(op.A, e), name=op.name)
    else:
        out = copy.copy(op)
        out._A, out._AT = (torch.sparse_csr_tensor(M.crow_indices(), M.col_indices(), ldexp(M.values(), e),
                                                   size=M.shape) for M in (op._A, op._AT))
    out._counter = op._counter
    out._scaling = ScaleState()
    return out

def autoscaled(op: LinearOp) -> tuple[LinearOp, ScaleState]:
    """A copy of ``op`` scaled by a power of two ``2^e`` so that its products stay far from under- and
    overflow (issue 16); returns ``(copy, state)`` with ``state.exp = e`` once decided.

    Explicit operators: ``e`` from ``max|a_ij|`` (:func:`scale_exponent`), the entries are scaled
    (exact for normal entries; entries below ``2^-1022`` after scaling down lose bits, far below
    ``eps·max|a_ij|``). Matrix-free operators: ``e`` is decided by the first product with a
    non-zero output and applied to every output (exact while the outputs are normal numbers; the
    returned state is the copy's own and holds ``e`` after the first such product);
    products that overflow inside the user's operator cannot be rescued and raise
    :class:`OperatorOutputError`. The copy shares ``op``'s product counter. Singular values of the
    copy are ``2^e`` times those of ``op``; divide exactly by ``2^e`` (``np.ldexp``).
    """
    stored = (DenseOp, SparseOp)
    if isinstance(op, stored) or (isinstance(op, AdjointOp) and isinstance(op.base, stored)):
        e = scale_exponent(max_abs_entry(op))
        if e == 0:
            return op, ScaleState()
        return _scaled_explicit(op, e), ScaleState(e)
    if op.is_explicit and not isinstance(op, AdjointOp):
        return op, ScaleState()  # a custom explicit operator: its to_dense() may bypass the products
    if isinstance(op, AdjointOp):  # scale the base, so that .adjoint() of the copy is scaled as well
        base, state = autoscaled(op.base)
        return base.adjoint(), state
    out = copy.copy(op)
    out._scaling = ScaleState(pending=True)
    return out, out._scaling
