"""Frozen result records of the spectral solvers (reports only; no computation).

Every record has a readable ``__repr__`` and a ``to_dict()`` that returns plain JSON-able
Python objects (``float``, ``int``, ``bool``, ``str``, ``list``, ``None``; ``inf``/``nan``
stay floats). Tensors of singular vectors are kept on the record but left out of
``to_dict()``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def to_jsonable(x: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and dicts into JSON-able objects."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, torch.Tensor):
        return to_jsonable(x.detach().cpu().numpy())
    if isinstance(x, np.ndarray):
        return [to_jsonable(v) for v in x.tolist()] if x.ndim else to_jsonable(x.item())
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return str(x)

def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.6g}"

@dataclass(frozen=True, repr=False)
class SingularBlock:
    """Singular triplets at one end of the spectrum.

    ``values[0]`` is the extreme one (largest for ``end="largest"``, smallest for
    ``end="smallest"``). ``lower``/``upper`` are certified bounds: each interval
    ``[lower_i, upper_i]`` contains a singular value of ``A`` (see
    :mod:`spectral.solvers.certify` for the theorems used). ``residual_norms`` holds
    ``η_i = sqrt(‖A v_i − σ_i u_i‖² + ‖Aᵀu_i − σ_i v_i‖²)/√2``. ``kato_temple`` holds the
    quadratic bound ``η_i²/gap_i`` (``nan`` where no gap is available); it is used in the
    intervals only when ``gap_certified``. ``left``/``right`` are ``(m, k)``/``(n, k)``
    tensors of unit singular vectors (or ``None``).
    """

    end: str
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    residual_norms: np.ndarray
    kato_temple: np.ndarray
    gap_certified: bool
    converged: np.ndarray
    left: torch.Tensor | None = field(default=None, compare=False)
    right: torch.Tensor | None = field(default=None, compare=False)

    @property
    def k(self) -> int:
        return int(len(self.values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "end": self.end,
            "values": to_jsonable(self.values),
            "lower": to_jsonable(self.lower),
            "upper": to_jsonable(self.upper),
            "residual_norms": to_jsonable(self.residual_norms),
            "kato_temple": to_jsonable(self.kato_temple),
            "gap_certified": bool(self.gap_certified),
            "converged": to_jsonable(self.converged),
        }

    def __repr__(self) -> str:
        vals = ", ".join(
            f"{_fmt(v)} in [{_fmt(lo)}, {_fmt(hi)}]{'' if c else ' (not converged)'}"
            for v, lo, hi, c in zip(self.values, self.lower, self.upper, self.converged, strict=True)
        )
        return f"SingularBlock({self.end}: {vals})"

@dataclass(frozen=True, repr=False)
class SVDResult:
    """Result of a partial SVD solver.

    ``largest``/``smallest`` are :class:`SingularBlock` or ``None`` when not requested.
    ``converged`` is ``True`` only if every requested triplet met the stopping rule;
    otherwise ``reason`` says why not. ``matvecs`` counts single-vector products with
    ``A`` or ``Aᵀ`` (a block of ``k`` counts ``k``); ``iterations`` is the number of
    Lanczos steps / power iterations / restarts as documented by each solver.
    ``spectrum`` is the full computed spectrum when a dense factorisation was made.
    ``rank_deficient`` means ``σ_min`` was certified to be at the rounding level and is
    reported as exactly ``0.0``.
    """

    method: str
    shape: tuple[int, int]
    largest: SingularBlock | None
    smallest: SingularBlock | None
    converged: bool
    iterations: int
    matvecs: int
    seconds: float
    rank_deficient: bool = False
    reason: str | None = None
    spectrum: np.ndarray | None = field(default=None, compare=False)
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def sigma_max(self) -> float:
        if self.largest is None:
            raise AttributeError("largest singular values were not requested")
        return float(self.largest.values[0])

    @property
    def sigma_min(self) -> float:
        if self.smallest is None:
            raise AttributeError("smallest singular values were not requested")
        return float(self.smallest.values[0])

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("largest", "smallest", "spectrum", "info")
        }
        out = to_jsonable(out)
        out["largest"] = None if self.largest is None else self.largest.to_dict()
        out["smallest"] = None if self.smallest is None else self.smallest.to_dict()
        out["info"] = to_jsonable(self.info)
        return out

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"shape={self.shape}"]
        if self.largest is not None:
            parts.append(f"largest={self.largest!r}")
        if self.smallest is not None:
            parts.append(f"smallest={self.smallest!r}")
        parts += [
            f"converged={self.converged}",
            f"matvecs={self.matvecs}",
            f"iterations={self.iterations}",
        ]
        if self.rank_deficient:
            parts.append("rank_deficient=True")
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        return "SVDResult(" + ", ".join(parts) + ")"

@dataclass(frozen=True, repr=False)
class EigenBlock:
    """Eigenpairs of a symmetric operator at one end of its spectrum.

    ``values[0]`` is the extreme one. ``[lower_i, upper_i]`` contains an eigenvalue
    (Bauer–Fike for symmetric matrices: ``|λ − θ| ≤ ‖S y − θ y‖`` for a unit ``y``).
    """

    end: str
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    residual_norms: np.ndarray
    converged: np.ndarray
    vectors: torch.Tensor | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "end": self.end,
            "values": to_jsonable(self.values),
            "lower": to_jsonable(self.lower),
            "upper": to_jsonable(self.upper),
            "residual_norms": to_jsonable(self.residual_norms),
            "converged": to_jsonable(self.converged),
        }

    def __repr__(self) -> str:
        vals = ", ".join(
            f"{_fmt(v)} in [{_fmt(lo)}, {_fmt(hi)}]{'' if c else ' (not converged)'}"
            for v, lo, hi, c in zip(self.values, self.lower, self.upper, self.converged, strict=True)
        )
        return f"EigenBlock({self.end}: {vals})"

@dataclass(frozen=True, repr=False)
class EigResult:
    """Result of a symmetric eigensolver (``largest``/``smallest`` are :class:`EigenBlock`)."""

    method: str
    shape: tuple[int, int]
    largest: EigenBlock | None
    smallest: EigenBlock | None
    converged: bool
    iterations: int
    matvecs: int
    seconds: float
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def lambda_max(self) -> float:
        if self.largest is None:
            raise AttributeError("largest eigenvalues were not requested")
        return float(self.largest.values[0])

    @property
    def lambda_min(self) -> float:
        if self.smallest is None:
            raise AttributeError("smallest eigenvalues were not requested")
        return float(self.smallest.values[0])

    def to_dict(self) -> dict[str, Any]:
        out = to_jsonable(
            {
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("largest", "smallest", "info")
            }
        )
        out["largest"] = None if self.largest is None else self.largest.to_dict()
        out["smallest"] = None if self.smallest is None else self.smallest.to_dict()
        out["info"] = to_jsonable(self.info)
        return out

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"shape={self.shape}"]
        if self.largest is not None:
            parts.append(f"largest={self.largest!r}")
        if self.smallest is not None:
            parts.append(f"smallest={self.smallest!r}")
        parts += [f"converged={self.converged}", f"matvecs={self.matvecs}"]
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        return "EigResult(" + ", ".join(parts) + ")"

@dataclass(frozen=True, repr=False)
class SpectralEstimate:
    """Extreme singular values of ``A`` with certified intervals.

    ``sigma_max_interval``/``sigma_min_interval`` contain a singular value of ``A``
    (residual bounds, see :mod:`spectral.solvers.certify`); ``cond_interval`` is
    ``[lo_max/hi_min, hi_max/lo_min]`` (``inf`` where ``lo_min ≤ 0``).
    ``attainable_accuracy`` holds ``norm_eps = σ_max·eps`` (absolute accuracy of any
    floating-point singular value) and ``cond_eps = κ·eps`` (relative accuracy attainable
    for ``σ_min``); ``below_attainable`` flags a ``tol`` or a ``σ_min`` below them.
    Quantities not requested are ``nan``. ``products`` says what the certificate rests on:
    ``"stored"`` (the entries are stored; the rounding allowance covers the products) or
    ``"assumed accurate: …"`` (a matrix-free operator — a user matvec, a scipy operator —
    whose products are taken as exact to rounding; the interval is then about the matrix the
    products compute) or, for autograd operators, what their products' estimated error is
    (:mod:`attncond.spectral.operators.product_error`). ``product_error``: that estimate, by which
    every interval is widened (``None`` where none was made).
    """

    sigma_max: float
    sigma_max_interval: tuple[float, float]
    sigma_min: float
    sigma_min_interval: tuple[float, float]
    cond: float
    cond_interval: tuple[float, float]
    converged: bool
    matvecs: int
    method: str
    seconds: float
    shape: tuple[int, int]
    attainable_accuracy: dict[str, float]
    below_attainable: bool
    rank_deficient: bool
    reason: str | None
    residuals: dict[str, float]
    details: SVDResult | None = field(default=None, compare=False)
    products: str = "stored"
    product_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "details"}
        return to_jsonable(out)

    def __repr__(self) -> str:
        def iv(t: tuple[float, float]) -> str:
            return f"[{t[0]:.6g}, {t[1]:.6g}]"

        s = (
            f"SpectralEstimate(sigma_max={self.sigma_max:.10g} in {iv(self.sigma_max_interval)}, "
            f"sigma_min={self.sigma_min:.10g} in {iv(self.sigma_min_interval)}, "
            f"cond={self.cond:.6g} in {iv(self.cond_interval)}, converged={self.converged}, "
            f"method={self.method!r}, matvecs={self.matvecs}, seconds={self.seconds:.3g}"
        )
        if self.rank_deficient:
            s += ", rank_deficient=True"
        if self.below_attainable:
            s += ", below_attainable=True"
        if self.reason:
            s += f", reason={self.reason!r}"
        if self.product_error is not None:
            s += f", product_error={self.product_error:.3g}"
        elif self.products != "stored":
            s += ", products='assumed accurate (matrix-free)'"
        return s + ")"

@dataclass(frozen=True, repr=False)
class EigenEstimate:
    """Extreme eigenvalues of a symmetric operator with Bauer–Fike intervals.

    ``product_error``: for autograd operators, the products' estimated error by which both intervals
    are widened (Weyl), ``products`` the sentence saying so (:class:`SpectralEstimate`)."""

    lambda_max: float
    lambda_max_interval: tuple[float, float]
    lambda_min: float
    lambda_min_interval: tuple[float, float]
    converged: bool
    matvecs: int
    method: str
    seconds: float
    shape: tuple[int, int]
    reason: str | None
    residuals: dict[str, float]
    details: EigResult | None = field(default=None, compare=False)
    products: str = "stored"
    product_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "details"})

    def __repr__(self) -> str:
        s = (
            f"EigenEstimate(lambda_max={self.lambda_max:.10g} in "
            f"[{self.lambda_max_interval[0]:.6g}, {self.lambda_max_interval[1]:.6g}], "
            f"lambda_min={self.lambda_min:.10g} in "
            f"[{self.lambda_min_interval[0]:.6g}, {self.lambda_min_interval[1]:.6g}], "
            f"converged={self.converged}, method={self.method!r}, matvecs={self.matvecs}"
        )
        if self.reason:
            s += f", reason={self.reason!r}"
        if self.product_error is not None:
            s += f", product_error={self.product_error:.3g}"
        return s + ")"

def format_value(x: Any) -> str:
    if x is None:
        return "None"
    if isinstance(x, (float, np.floating)):
        return "nan" if math.isnan(x) else f"{x:.6g}"
    return repr(x)

def record_repr(obj: Any, keys: Sequence[str]) -> str:
    return f"{type(obj).__name__}(" + ", ".join(f"{k}={format_value(getattr(obj, k))}" for k in keys) + ")"

def record_to_dict(obj: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    return to_jsonable({k: getattr(obj, k) for k in obj.__dataclass_fields__ if k not in skip})
