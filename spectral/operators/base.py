"""The linear-operator base class: products, adjoint, product counting, scipy export.

A :class:`LinearOp` represents ``A ∈ R^{m×n}`` through the products ``x ↦ A x`` and
``y ↦ Aᵀ y`` on torch tensors. Blocked products (``matmat``/``rmatmat``) act on
``(n, k)``/``(m, k)`` tensors. ``n_products`` counts single-vector products with ``A``
*or* ``Aᵀ`` (a block of ``k`` vectors counts ``k``); an operator and its adjoint share
the counter. Concrete operators implement ``_matmat`` and ``_rmatmat`` only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla
import torch

from attncond.spectral.operators.product_error import estimate_point_error

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

#: float64's safe exponent (:func:`safe_exponent`): products are scaled (see :class:`ScaleState`) when
#: ``max|Ax|/max|x|`` leaves ``[2^-SAFE_EXP, 2^SAFE_EXP]``; kept for callers that read the constant
SAFE_EXP = 256


def safe_exponent(dtype: torch.dtype) -> int:
    """The exponent ``E`` of the safe range ``[2^-E, 2^E]`` of ``dtype``: ``E = max_exp // 4``.

    ``max_exp`` is the exponent of ``torch.finfo(dtype).max`` (1024 for float64, 128 for float32), so
    ``E = 256`` for float64 and ``E = 32`` for float32. Inside ``[2^-E, 2^E]`` an operator's norm,
    its squares (``2^±2E``), its rounding allowance ``eps·σ_max`` and the squares of residuals of
    that size stay normal numbers (float32's normal range is only ``2^±126``: squares of ``1e-20``
    underflow).

    >>> safe_exponent(torch.float64), safe_exponent(torch.float32)
    (256, 32)
    """
    return math.frexp(torch.finfo(dtype).max)[1] // 4


def norm_floor(count: int, dtype: torch.dtype) -> float:
    """``sqrt(count·tiny/eps)``: a plain ``‖x‖₂`` of ``count`` entries at least this is accurate to ``eps``.

    Squares below ``tiny`` (gradual underflow, or flushed to zero) lose at most ``tiny`` each, so the sum
    of squares loses at most ``count·tiny``, which is ``≤ eps·‖x‖²`` exactly when ``‖x‖ ≥`` this floor.
    A finite plain norm never overflowed (every partial sum is at most the total).
    """
    fi = torch.finfo(dtype)
    return math.sqrt(max(int(count), 1) * fi.tiny / fi.eps)


def norm_trusted(value: float, count: int, dtype: torch.dtype) -> bool:
    """``True`` when a plain ``vector_norm`` value (read on the host) needs no recomputation: finite and
    ``≥`` :func:`norm_floor`. The solvers' inner loops test the norms they read anyway with it, so the
    robust :func:`safe_norm` runs only where squares could have under- or overflowed."""
    return norm_floor(count, dtype) <= value < math.inf


def robust_norm(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``‖x‖₂`` (along ``dim``) computed without under- or overflow of the squares.

    float32 (and narrower): the squares are summed in float64, where every float32 square is a normal
    number. float64: ``s·‖x/s‖`` with ``s = max|x|`` (``1`` for a zero vector), whose squares lie in
    ``(0, 1]``. NaN/inf entries give NaN/inf, as a plain norm does; a norm above the dtype's range is
    ``inf``.
    """
    if torch.finfo(x.dtype).bits < 64:
        return torch.linalg.vector_norm(x, dim=dim, dtype=torch.float64).to(x.dtype)
    if x.numel() == 0:
        return torch.linalg.vector_norm(x, dim=dim)
    s = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    s = torch.where((s > 0) & torch.isfinite(s), s, torch.ones_like(s))
    n = torch.linalg.vector_norm(x / s, dim=dim)
    return n * (s if dim is None else s.squeeze(dim))


def safe_norm(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``‖x‖₂`` (along ``dim``) accurate to rounding whatever the scale of ``x``.

    The plain ``torch.linalg.vector_norm`` sums squares unscaled: below :func:`norm_floor` (about
    ``1e-146`` in float64, ``3e-16`` in float32, times ``sqrt(len)``) gradual underflow corrupts it and
    above ``sqrt(max)`` it overflows to ``inf`` for finite entries. Those norms (and only those) are
    recomputed by :func:`robust_norm`; the plain norm is kept elsewhere (one extra comparison).

    >>> x = torch.full((4,), 1e-30, dtype=torch.float32)
    >>> float(torch.linalg.vector_norm(x)), float(safe_norm(x)) == float(torch.tensor(2e-30))
    (0.0, True)
    """
    n = torch.linalg.vector_norm(x, dim=dim)
    count = x.numel() if dim is None else x.shape[dim]
    bad = ~((n >= norm_floor(count, x.dtype)) & torch.isfinite(n))
    if not bool(bad.any()):
        return n
    return torch.where(bad, robust_norm(x, dim), n)

class OperatorOutputError(ValueError):
    """A product of an operator returned something it may not (NaN/inf, wrong shape or dtype)."""

class ScaleState:
    """Power-of-two scaling shared by an operator and its adjoint (issue 16, scale-safe solvers).

    ``exp`` is the exponent ``e`` of the scaling ``A ↦ 2^e A`` applied to every product output
    (exact in floating point while the outputs are normal numbers). ``pending=True`` means ``e``
    is decided by the first product with a non-zero output: ``e = 0`` when
    ``2^-E ≤ max|Ax|/max|x| ≤ 2^E`` (``E = safe_exponent(dtype)``: 256 for float64, 32 for float32),
    else ``e = −exponent(max|Ax|/max|x|)``
    (the scaled operator then has norm of order 1). Ordinary operators have ``pending=False``
    and ``exp=0``; :func:`attncond.spectral.operators.explicit.autoscaled` makes scaled copies.
    """

    __slots__ = ("exp", "pending")

    def __init__(self, exp: int = 0, pending: bool = False) -> None:
        self.exp = int(exp)
        self.pending = bool(pending)

def scale_exponent(ratio: float, dtype: torch.dtype = torch.float64) -> int:
    """``0`` inside the safe range ``[2^-E, 2^E]`` of ``dtype`` (``E =`` :func:`safe_exponent`), else
    ``−exponent(ratio)`` (``frexp``), which maps ``ratio`` into ``[1/2, 1)``.

    >>> scale_exponent(1e-21, torch.float64), scale_exponent(1e-21, torch.float32)
    (0, 69)
    """
    if not math.isfinite(ratio) or ratio <= 0.0:
        return 0
    e = math.frexp(ratio)[1]
    lim = safe_exponent(dtype)
    return 0 if -lim <= e <= lim else -e

def ldexp(y: torch.Tensor, e: int) -> torch.Tensor:
    """``y·2^e``, exact unless the result leaves the normal range (multiplications by ``2^±≤1000``)."""
    while e:
        step = max(-1000, min(1000, e))
        y = y * (2.0 ** step)
        e -= step
    return y

def to_common_scale(*ys: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], int] | None:
    """Probe outputs as float64 on the CPU, all divided by one power of two ``2^e`` (``e`` the exponent of
    their largest entry), so that inner products and norms of them neither under- nor overflow; ``e`` is
    returned to map results back (``math.ldexp``). ``None`` when every entry is 0. Shared by the dot
    tests (:func:`~attncond.spectral.operators.explicit.check_adjoint`, the symmetry probe)."""
    ys = tuple(y.detach().to("cpu", torch.float64) for y in ys)
    big = max(float(y.abs().max()) if y.numel() else 0.0 for y in ys)
    if big == 0.0:
        return None
    e = math.frexp(big)[1]
    return tuple(ldexp(y, -e) for y in ys), e


def is_integer(x: Any) -> bool:
    """``x`` is an integer value (``3``, ``np.int64(3)``, ``3.0``), not a bool, a string or ``3.5``."""
    if isinstance(x, (bool, np.bool_, str, bytes)):
        return False
    try:
        return int(x) == x
    except (TypeError, ValueError, OverflowError):
        return False


def check_shape(shape: Any, name: str = "shape") -> tuple[int, int]:
    """``shape`` as ``(m, n)``: two non-negative integers (``3.0`` is ``3``; ``3.5``, ``True`` and strings
    are refused with a ``ValueError`` naming ``name``, never truncated)."""
    try:
        dims = tuple(shape)
        ok = len(dims) == 2 and all(is_integer(d) and int(d) >= 0 for d in dims)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be two non-negative integers (m, n), got {shape!r}")
    return int(dims[0]), int(dims[1])


def check_device(device: Any, name: str = "device") -> torch.device | None:
    """``None`` or a usable :class:`torch.device`; a CUDA/MPS device on a build without it is a clear error."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{name}={device!r} is not a torch device: {exc}") from None
    if dev.type == "meta":
        raise ValueError(f"{name}='meta' holds no data; use 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"{name}={device!r} requested but {why}; use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}={device!r} requested but MPS is not available; use device='cpu'")
    return dev

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
        m, n = check_shape(shape)
        self.shape: tuple[int, int] = (m, n)
        self.dtype: torch.dtype = resolve_dtype(dtype)  # type: ignore[assignment]
        self.device: torch.device = torch.device(device)
        self._counter = counter if counter is not None else ProductCounter()
        self._scaling = ScaleState()
        self._product_error: Any = None
        self.name = name or type(self).__name__

    # ------------------------------------------------------------------ counting
    @property
    def n_products(self) -> int:
        """Single-vector products with ``A`` or ``Aᵀ`` since the last reset."""
        return self._counter.n

    def reset_count(self) -> None:
        """Set :attr:`n_products` to zero (shared with the adjoint)."""
        self._counter.n = 0

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """A block whose products are not counted in :attr:`n_products` (the construction-time dot test
        of :func:`attncond.spectral.operators.explicit.check_adjoint`); the count is restored on exit."""
        n = self._counter.n
        try:
            yield
        finally:
            self._counter.n = n

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
        return self._post(self._matvec(x), (self.shape[0],), "matvec", x)

    def rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y`` for ``y`` of shape ``(m,)`` (or ``(m, k)``, then as :meth:`rmatmat`)."""
        y = self._check(y, self.shape[0], "y")
        if y.ndim == 2:
            return self.rmatmat(y)
        self._counter.n += 1
        return self._post(self._rmatvec(y), (self.shape[1],), "rmatvec", y)

    def krylov_matvec(self, x: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        """``A x`` (``Aᵀ x`` with ``adjoint``) for a solver's own ``(n,)`` vector of the operator's
        dtype and device: no input checks, and the output is **not** tested for NaN/inf.

        The caller takes the product's norm anyway and must pass it to :meth:`refuse_nonfinite`
        (``‖y‖`` is finite exactly when every entry is, up to overflow of the norm itself). On the
        1-D Laplacian the two guards were about 16 % of a GKL run of microsecond products.
        """
        self._counter.n += 1
        if adjoint:
            return self._post(self._rmatvec(x), (self.shape[1],), "rmatvec", x, finite_known=False)
        return self._post(self._matvec(x), (self.shape[0],), "matvec", x, finite_known=False)

    def refuse_nonfinite(self, norm: float, kind: str) -> None:
        """The error of the output guard, for a product whose norm ``norm`` is not finite."""
        if not math.isfinite(norm):
            raise OperatorOutputError(
                f"{self._where(kind)} returned NaN/inf value(s) (norm {norm}) for a finite input; the "
                "operator is broken or its products overflow the floating-point range (scale it down)")

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        """``A X`` for ``X`` of shape ``(n, k)``; counts ``k`` products."""
        X = self._check(X, self.shape[1], "X")
        if X.ndim == 1:
            X = X[:, None]
        self._counter.n += X.shape[1]
        if X.shape[1] == 0:
            return X.new_zeros((self.shape[0], 0))
        return self._post(self._matmat(X), (self.shape[0], X.shape[1]), "matmat", X)

    def rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ Y`` for ``Y`` of shape ``(m, k)``; counts ``k`` products."""
        Y = self._check(Y, self.shape[0], "Y")
        if Y.ndim == 1:
            Y = Y[:, None]
        self._counter.n += Y.shape[1]
        if Y.shape[1] == 0:
            return Y.new_zeros((self.shape[1], 0))
        return self._post(self._rmatmat(Y), (self.shape[1], Y.shape[1]), "rmatmat", Y)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.matvec(x)

    # ------------------------------------------------------------------ output guard
    def _post(self, y: Any, shape: tuple[int, ...], kind: str, x: torch.Tensor, *,
              finite_known: bool = True) -> torch.Tensor:
        """Check one product's output (tensor, shape, dtype, finite) and apply the power-of-two scale.

        The output is detached: a product is a number, not a node of the caller's autograd graph (a
        ``JacobianOperator`` over parameters that require grad returned tensors that did, and
        ``.numpy()`` on them failed in a scipy/PRIMME callback). ``finite_known=False``
        (:meth:`krylov_matvec`) skips the NaN/inf test; the caller makes it on the norm."""
        if not isinstance(y, torch.Tensor):
            raise OperatorOutputError(
                f"{self._where(kind)} returned {type(y).__name__}, expected a torch tensor")
        y = y.detach()
        if tuple(y.shape) != tuple(shape):
            raise OperatorOutputError(
                f"{self._where(kind)} returned shape {tuple(y.shape)} ({y.numel()} entries); the declared "
                f"shape {self.shape} needs {tuple(shape)}")
        if y.dtype != self.dtype:
            raise OperatorOutputError(
                f"{self._where(kind)} returned dtype {y.dtype}; the operator declares {self.dtype}")
        xmax = float(x.abs().max()) if self._scaling.pending and x.numel() else 1.0
        return self.scale_output(y, xmax, kind=kind, check_finite=finite_known or self._scaling.pending)

    def _where(self, kind: str | None = None) -> str:
        """The operator and product an error message names (built only when one is raised)."""
        return (f"operator {self.name} (shape {self.shape}), product #{self.n_products}"
                + (f" ({kind})" if kind else ""))

    def scale_output(self, y: torch.Tensor, xmax: float, where: str | None = None, *,
                     kind: str | None = None, check_finite: bool = True) -> torch.Tensor:
        """Refuse non-finite ``y`` (a clear error naming the operator) and multiply by ``2^exp``.

        ``xmax`` is ``max|x|`` of the product's input (1 for a materialised block of ``A``): a
        pending :class:`ScaleState` decides its exponent from ``max|y|/xmax`` here.
        """
        if check_finite and not bool(torch.isfinite(y).all()):
            bad = int((~torch.isfinite(y)).sum())
            raise OperatorOutputError(
                f"{where or self._where(kind)} returned {bad} NaN/inf value(s) for a finite input; the "
                "operator is broken or its products overflow the floating-point range (scale it down)")
        st = self._scaling
        if st.pending and y.numel():
            ymax = float(y.abs().max())
            if ymax > 0.0 and xmax > 0.0:
                st.exp, st.pending = scale_exponent(ymax / xmax, self.dtype), False
        return ldexp(y, st.exp) if st.exp else y

    # --------------------------------------------------------- to be overridden
    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._matvec(X[:, j]) for j in range(X.shape[1])], dim=1)

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._rmatvec(Y[:, j]) for j in range(Y.shape[1])], dim=1)

    # ------------------------------------------------------------------ accuracy of the products
    def point_products(self) -> Any:
        """This operator's products as functions of the point they are taken at, a
        :class:`attncond.spectral.operators.product_error.PointProducts`, or ``None`` for an operator
        with no point (stored entries, a user's matvec, a closed form). Autograd operators have one."""
        return None

    def product_error(self) -> Any:
        """The estimated error of this operator's products against the mathematical operator's, a
        :class:`attncond.spectral.operators.product_error.ProductError`, or ``None`` where nothing is
        estimated (stored entries: the rounding allowance covers them; a user's matvec: taken as exact).
        Measured once from :meth:`point_products` (``2·PROBES`` uncounted products) where there are any:
        ``JacobianOperator``, ``HessianOperator``, and ``GramOperator``/``GaussNewtonOperator`` of them."""
        if self._product_error is None:
            pp = self.point_products()
            if pp is None:
                return None
            self._product_error = estimate_point_error(pp, self.shape)
        return self._product_error

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

class SymmetricOp(LinearOp):
    """A square operator with ``Aᵀ = A``: subclasses implement the blocked ``_matmat`` only; the
    single-vector and adjoint products are that one (``Aᵀ y = A y``)."""

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._matmat(x[:, None])[:, 0]

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._matvec(y)

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self._matmat(Y)


class AdjointOp(LinearOp):
    def __init__(self, base: LinearOp) -> None:
        super().__init__(
            (base.shape[1], base.shape[0]),
            base.dtype,
            base.device,
            counter=base._counter,
            name=f"{base.name}.T",
        )
        self._scaling = base._scaling
        self.base = base
        self.is_explicit = base.is_explicit

    def point_products(self) -> Any:
        pp = self.base.point_products()
        return None if pp is None else pp.transposed()

    def product_error(self) -> Any:
        return self.base.product_error()  # ‖Eᵀ‖ = ‖E‖

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
