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
import re
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
    check_shape,
    ldexp,
    resolve_dtype,
    safe_norm,
    same_device,
    scale_exponent,
    to_common_scale,
)

#: stored half-precision input is widened to float32, which holds each of its values exactly
HALF_DTYPES = (torch.float16, torch.bfloat16)


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

    def asymmetry(self, exact: bool = False) -> tuple[float, float]:
        """``(b, ‖A‖_F)`` for a square ``A``: ``b = ‖A − Aᵀ‖_F ≥ ‖A − Aᵀ‖₂``, or with ``exact`` the
        2-norm itself (an SVD of ``A − Aᵀ``, ``O(n³)``)."""
        K = self.A - self.A.T
        b = torch.linalg.matrix_norm(K, 2) if exact else safe_norm(K.reshape(-1))
        return float(b), float(safe_norm(self.A.reshape(-1)))

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

    def asymmetry(self, exact: bool = False) -> tuple[float, float]:
        """``(‖A − Aᵀ‖_F, ‖A‖_F)`` for a square ``A`` (the Frobenius norm bounds ``‖A − Aᵀ‖₂``; ``exact``
        is accepted and gives the same bound for a sparse matrix)."""
        K = (self._A.to_sparse_coo() - self._AT.to_sparse_coo()).coalesce().values()
        kf = float(safe_norm(K)) if K.numel() else 0.0
        return kf, float(safe_norm(self._A.values())) if self.nnz else 0.0

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
        #: ``True`` once :func:`check_adjoint` passed (or for the toolkit's own wrappers); :func:`as_operator`
        #: runs the dot test on a user's ``CallableOp`` that has not had it
        self.adjoint_checked = False
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


def _refuse_wide_float(dt: Any, what: str) -> None:
    """A floating dtype wider than float64 (``np.longdouble``) is refused: converting it would certify the
    rounded float64 matrix, not the one given."""
    dt = np.dtype(dt)
    if dt.kind == "f" and dt.itemsize > 8:
        raise ValueError(
            f"A: {what} has dtype {dt} (extended precision); only float32 and float64 are supported, and "
            "rounding it here would certify a different matrix: convert it yourself (A.astype(np.float64))")


#: the dot test of :func:`check_adjoint` refuses a difference above this multiple of
#: ``eps·sqrt(max(m, n))·(‖y‖‖Ax‖ + ‖Aᵀy‖‖x‖)``
ADJOINT_TEST_FACTOR = 16.0


def check_adjoint(op: LinearOp, name: str = "A") -> None:
    """Refuse an operator whose ``rmatvec`` is not the adjoint of its ``matvec`` (the dot test; two products).

    For seeded random unit ``x ∈ R^n`` and ``y ∈ R^m`` the test is

    ``|yᵀ(Ax) − (Aᵀy)ᵀx| ≤ 16·eps·sqrt(max(m, n))·(‖y‖‖Ax‖ + ‖Aᵀy‖‖x‖)``

    (``eps`` of the operator's dtype). The inner products are taken in float64 on the two outputs scaled
    by one common power of two, so they neither under- nor overflow. For ``rmatvec = Bᵀ`` the left side is
    ``|yᵀ(A − B)x| ≈ ‖A − B‖_F/sqrt(mn)``, and ``‖Ax‖ ≈ ‖A‖_F/sqrt(n)``; rounding of the products is of
    order ``eps·sqrt(n)·‖Ax‖`` (``eps·‖A‖`` for a product that is not a dot product), far below the bound.
    Without the test a dense or Gram route would certify the singular values of whichever side it
    materialises (``matvec`` of a tall, ``rmatvec`` of a wide operator). The two products are not counted
    (:meth:`LinearOp.uncounted`).

    Raises
    ------
    ValueError
        naming ``name``, when the difference exceeds the bound.
    OperatorOutputError
        when a probe product returns NaN/inf, the wrong length or dtype.
    """
    m, n = op.shape
    if m == 0 or n == 0:
        return
    g = torch.Generator().manual_seed(0x5EED)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.randn(m, generator=g, dtype=torch.float64)
    x, y = (v / torch.linalg.vector_norm(v) for v in (x, y))
    with op.uncounted():
        ax = _first_product(op.matvec, x.to(dtype=op.dtype, device=op.device), "matvec", name, op.shape)
        aty = _first_product(op.rmatvec, y.to(dtype=op.dtype, device=op.device), "rmatvec", name, op.shape)
    xd, yd = x.to(op.dtype).double(), y.to(op.dtype).double()  # the vectors the products saw
    scaled = to_common_scale(ax, aty)
    if scaled is None:
        return
    (ax, aty), e = scaled
    diff = abs(float(torch.dot(yd, ax)) - float(torch.dot(aty, xd)))
    scale = float(safe_norm(yd) * safe_norm(ax) + safe_norm(aty) * safe_norm(xd))
    bound = ADJOINT_TEST_FACTOR * torch.finfo(op.dtype).eps * math.sqrt(max(m, n)) * scale
    if not diff <= bound:
        raise ValueError(
            f"{name}: rmatvec is not the adjoint of matvec: the dot test |<y, A x> - <A^T y, x>| = "
            f"{math.ldexp(diff, e):.3g} exceeds the rounding level {math.ldexp(bound, e):.3g} (random unit "
            f"x, y; {diff / scale:.3g} relative to ||y|| ||Ax|| + ||A^T y|| ||x||); the singular values of "
            "such an operator are those of neither product. rmatvec(y) must compute A^T y for the matrix A "
            "of matvec")


def _first_product(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, kind: str, name: str,
                   shape: tuple[int, int]) -> torch.Tensor:
    """The first call of a user's product, its failure named: a missing adjoint, or a shape the callable
    does not agree with (a transposed ``(m, n)``), instead of the library's raw error."""
    try:
        return fn(x)
    except NotImplementedError as exc:
        raise TypeError(f"{name}: its {kind} is not defined ({exc}); attncond needs both A x and A^T y "
                        "(a scipy LinearOperator needs rmatvec or rmatmat)") from None
    except (RuntimeError, ValueError, IndexError) as exc:
        if isinstance(exc, OperatorOutputError):
            raise
        m, n = shape
        length = n if kind == "matvec" else m
        raise ValueError(f"{name}: {kind} failed on a vector of length {length} (shape {shape}: matvec maps "
                         f"R^{n} -> R^{m}, rmatvec R^{m} -> R^{n}); is the shape transposed? The callable "
                         f"raised {type(exc).__name__}: {exc}") from None


def check_adjoint_at(op: LinearOp, U: torch.Tensor, V: torch.Tensor, sigma_max: float = 0.0,
                     name: str = "A") -> None:
    """The dot test at the computed singular pairs ``(u_i, v_i)`` (columns of ``U``, ``V``).

    The random dot test of :func:`check_adjoint` sees a mismatch ``E = A − B`` (``rmatvec = Bᵀ``) only as
    ``‖E‖_F/sqrt(mn)``: a rank-one ``E`` on ``A``'s smallest pair, ``1e-9·‖A‖``, passed it, and a route
    that materialises one side certified that side's σ_min. At the pairs a solver returns, ``E`` shows in
    full: ``|uᵀ(Av) − (Aᵀu)ᵀv| = |uᵀEv|``. Refused above
    ``ADJOINT_TEST_FACTOR·eps·sqrt(max(m, n))·2·s`` with ``s = max(sigma_max, ‖A‖_F estimate)``
    (the products' rounding is relative to ``‖A‖``, not to the pair's σ). Two products per pair and two
    for the estimate, not counted.

    Raises
    ------
    ValueError
        naming ``name``, when a pair's difference exceeds the bound.
    """
    m, n = op.shape
    if U.numel() == 0 or m == 0 or n == 0:
        return
    g = torch.Generator().manual_seed(0xAD7)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    X = (X / torch.linalg.vector_norm(X, dim=0)).to(dtype=op.dtype, device=op.device)
    with op.uncounted():
        AV, ATU, AX = op.matmat(V), op.rmatmat(U), op.matmat(X)
    fro = math.sqrt(n / 2.0) * float(safe_norm(AX.reshape(-1).double()))  # E‖Ax‖² = ‖A‖_F²/n
    s = max(float(sigma_max) if math.isfinite(sigma_max) else 0.0, fro)
    eps = torch.finfo(op.dtype).eps
    for i in range(U.shape[1]):
        u, v = U[:, i].double(), V[:, i].double()
        diff = abs(float(torch.dot(u, AV[:, i].double())) - float(torch.dot(ATU[:, i].double(), v)))
        bound = ADJOINT_TEST_FACTOR * eps * math.sqrt(max(m, n)) * 2.0 * s * float(
            safe_norm(u) * safe_norm(v))
        if not diff <= bound:
            raise ValueError(
                f"{name}: rmatvec is not the adjoint of matvec at the computed singular pair {i}: "
                f"|<u, A v> - <A^T u, v>| = {diff:.3g} exceeds the rounding level {bound:.3g} "
                f"(2·‖A‖ ≈ {2 * s:.3g}); the random dot test at construction missed it (a low-rank "
                "mismatch). The singular values of such an operator are those of neither product. "
                "rmatvec(y) must compute A^T y for the matrix A of matvec")


def _scipy_product(fn: Callable[[Any], Any], kind: str, shape: tuple[int, int]) -> Callable[[Any], Any]:
    """``fn`` (a scipy ``LinearOperator`` product) with scipy's reshape failure on an output of the wrong
    length turned into an :class:`OperatorOutputError` naming ``A``."""
    def call(x: Any) -> Any:
        try:
            return fn(x)
        except ValueError as exc:
            if "reshape" not in str(exc):
                raise
            raise OperatorOutputError(
                f"A (scipy LinearOperator, shape {shape}): its {kind} returned an output of the wrong length "
                f"({exc})") from exc
    return call


def _torch_sparse_to_scipy(t: torch.Tensor) -> sp.coo_matrix:
    """A 2-D torch sparse tensor (COO, CSR, CSC, BSR, BSC) as a scipy COO matrix (values copied to the CPU)."""
    if t.ndim != 2:
        raise ValueError(f"A must be 2-D, got a sparse tensor of shape {tuple(t.shape)}")
    if t.is_complex():
        raise ValueError("A must be real: complex matrices are not supported (use [[Re, -Im], [Im, Re]])")
    if t.is_floating_point() and t.dtype not in FLOAT_DTYPES + HALF_DTYPES:
        raise ValueError(f"A: dtype must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.dtype in HALF_DTYPES:  # exact widening
        t = t.to(torch.float32)
    try:
        coo = t.detach().to_sparse_coo().coalesce().cpu()
    except (RuntimeError, NotImplementedError) as exc:
        raise TypeError(f"A: torch sparse layout {t.layout} cannot be converted ({exc})") from None
    idx = coo.indices().numpy()
    vals = coo.values().numpy()
    return sp.coo_matrix((vals, (idx[0], idx[1])), shape=tuple(t.shape))


def as_operator(A: Any, *, device: torch.device | str | None = None, dtype: Any = None,
                name: str = "A") -> LinearOp:
    """Wrap ``A`` as a :class:`LinearOp`; errors name the argument as ``name`` (``"S"`` for
    :func:`attncond.spectral.eigen_extremes`).

    Parameters
    ----------
    A : numpy array, scipy sparse matrix, torch tensor (any device; a sparse COO/CSR/CSC tensor becomes a
        :class:`SparseOp`), ``scipy.sparse.linalg.LinearOperator``, :class:`LinearOp`, or a tuple
        ``(matvec, rmatvec, shape)`` of callables taking and returning torch tensors.
    device : target device. Explicit matrices are moved there; implicit operators
        (callables, LinearOp) cannot be moved and a different device raises ``ValueError``.
    dtype : ``float32`` or ``float64``. Default: the input's floating dtype, float64 for
        integer/boolean input and for callables.

    Operators made of user callables (the tuple, a scipy ``LinearOperator``, a user's
    :class:`CallableOp`) pass the dot test of :func:`check_adjoint` first (two uncounted products).

    Raises
    ------
    ValueError : ``A`` not 2-D, NaN/inf entries in an explicit ``A``, unsupported dtype (also
        ``np.longdouble``), a shape that is not two integers, an ``rmatvec`` that is not the adjoint of
        ``matvec``, or device mismatch.
    TypeError : unsupported type.
    """
    try:
        return _as_operator(A, device=device, dtype=dtype)
    except (ValueError, TypeError) as exc:
        if name == "A" or not re.match(r"A\b", str(exc)) or isinstance(exc, OperatorOutputError):
            raise
        raise type(exc)(re.sub(r"^A\b", name, str(exc))) from None


def _as_operator(A: Any, *, device: torch.device | str | None, dtype: Any) -> LinearOp:
    req_dtype = resolve_dtype(dtype)
    device = check_device(device)
    if isinstance(A, LinearOp):
        if device is not None and not same_device(device, A.device):
            raise ValueError(f"device mismatch: A lives on {A.device}, requested device={device}")
        user = A.base if isinstance(A, AdjointOp) else A
        if isinstance(user, CallableOp) and not user.adjoint_checked:
            check_adjoint(user)
            user.adjoint_checked = True
        if req_dtype is not None and req_dtype != A.dtype:
            if isinstance(A, DenseOp):
                return DenseOp(A.A.to(req_dtype))
            base = A
            wrapped = CallableOp(
                lambda x: base.matvec(x.to(base.dtype)),
                lambda y: base.rmatvec(y.to(base.dtype)),
                base.shape,
                req_dtype,
                base.device,
                matmat=lambda X: base.matmat(X.to(base.dtype)),
                rmatmat=lambda Y: base.rmatmat(Y.to(base.dtype)),
                name=f"{base.name}[{req_dtype}]",
            )
            wrapped.adjoint_checked = True  # the toolkit's own wrapper of an operator
            return wrapped
        return A
    if isinstance(A, tuple) and len(A) == 3 and callable(A[0]) and callable(A[1]):
        mv, rmv, shape = A
        op = CallableOp(mv, rmv, check_shape(shape, "A: the shape of (matvec, rmatvec, shape)"),
                        req_dtype or torch.float64, device or "cpu", name="CallableOp")
        check_adjoint(op)
        op.adjoint_checked = True
        return op
    if isinstance(A, spla.LinearOperator):
        if len(A.shape) != 2:
            raise ValueError("A must be 2-D")
        if np.dtype(A.dtype).kind == "c":
            raise ValueError(
                f"A is a complex scipy LinearOperator (dtype {np.dtype(A.dtype)}); complex operators are "
                "not supported: pass the real form [[Re, -Im], [Im, Re]] (its singular values are those of A, "
                "each twice)")
        _refuse_wide_float(A.dtype, "the scipy LinearOperator")
        dt = req_dtype
        if dt is None:
            dt = torch.float32 if np.dtype(A.dtype) == np.float32 else torch.float64
        shape = check_shape(A.shape, "A.shape")
        op = CallableOp(
            _scipy_product(A.matvec, "matvec", shape),
            _scipy_product(A.rmatvec, "rmatvec", shape),
            shape,
            dt,
            device or "cpu",
            matmat=_scipy_product(A.matmat, "matmat", shape),
            rmatmat=_scipy_product(A.rmatmat, "rmatmat", shape),
            host=True,
            name="ScipyLinearOperator",
        )
        check_adjoint(op)
        op.adjoint_checked = True
        return op
    if isinstance(A, torch.Tensor) and A.layout != torch.strided:
        if device is None:
            device = A.device
        A = _torch_sparse_to_scipy(A)
    if sp.issparse(A):
        if A.ndim != 2:
            raise ValueError("A must be 2-D")
        data = np.asarray(sp.csr_matrix(A).data)
        if np.iscomplexobj(data):
            raise ValueError("A must be real: complex matrices are not supported (use [[Re, -Im], [Im, Re]])")
        _refuse_wide_float(data.dtype, "the sparse matrix")
        _check_finite_np(data)
        dt = req_dtype or (torch.float32 if data.dtype == np.float32 else torch.float64)
        return SparseOp(A, dt, device or "cpu")
    if isinstance(A, torch.Tensor):
        t = A.detach()
    elif isinstance(A, (np.ndarray, list)) or np.isscalar(A):
        if np.ma.isMaskedArray(A) and np.ma.is_masked(A):
            raise TypeError("A: a masked array with masked entries has no single matrix; pass "
                            "A.filled(value) with the value the masked entries should take")
        arr = np.asarray(A)
        if arr.dtype == object:
            raise TypeError("A: object arrays are not supported")
        _refuse_wide_float(arr.dtype, "the array")
        if arr.dtype.kind == "c" and arr.dtype.itemsize > 16:
            raise ValueError("A must be real: complex matrices are not supported (use [[Re, -Im], [Im, Re]])")
        try:
            t = torch.from_numpy(np.ascontiguousarray(arr))
        except TypeError as exc:
            raise TypeError(f"A: numpy dtype {arr.dtype} is not supported ({exc})") from None
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
    if req_dtype is None:  # half precision widens exactly to float32, integers and booleans to float64
        req_dtype = t.dtype if t.dtype in FLOAT_DTYPES else (
            torch.float32 if t.dtype in HALF_DTYPES else torch.float64)
        if t.is_floating_point() and t.dtype not in FLOAT_DTYPES + HALF_DTYPES:
            raise ValueError(f"A: dtype must be float16, bfloat16, float32 or float64, got {t.dtype}")
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
        e = scale_exponent(max_abs_entry(op), op.dtype)
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
