"""Numerical checks of the derivations: closed-form torch code and lambdified sympy code against
``torch.func.jacrev`` on the :mod:`models` implementation (and, optionally, against mpmath)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
import torch

from attncond.models import MultiHeadAttention
from attncond.models import derivatives as closed
from attncond.models.init import REGIMES, make_generator, regime_scale
from attncond.models.kernels import gaussian as gaussian_kernel
from attncond.models.kernels import temperature as temperature_kernel

from .core import DERIVATIONS, SYMBOLIC_WRT, Derivation, check_name
from .derive import derive


@dataclass(frozen=True)
class ComparisonRow:
    """Error of one implementation against ``torch.func.jacrev``.

    ``max_rel_error = max|J − J_ref| / max|J_ref|`` (normwise, ∞-norm over entries; 0 when both
    are 0); ``argmax`` is the index (batch dims first) of the largest absolute error.
    ``max_rel_error_exact`` is the same error against the sympy derivation evaluated with mpmath
    at high precision (``None`` when that reference was not computed). ``passed``: the error
    against the exact reference when there is one, else the one against jacrev, is ``<= tol``.
    """

    method: str
    max_abs_error: float
    max_rel_error: float
    argmax: tuple[int, ...]
    passed: bool
    max_rel_error_exact: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
                "argmax": list(self.argmax), "passed": self.passed,
                "max_rel_error_exact": self.max_rel_error_exact}


@dataclass(frozen=True)
class Comparison:
    """Closed-form torch code and lambdified sympy code against ``torch.func.jacrev``.

    ``max_abs_error``, ``max_rel_error`` and ``argmax`` are those of the worst row; ``passed``
    holds when every row passes (see :class:`ComparisonRow`). The reference is ``jacrev`` run in
    ``reference_dtype`` (float64 always: for a float32 comparison at the float32 point, exactly
    upcast); ``jacrev_dtype_error`` is jacrev's own error when run in float32 (``None`` for
    float64), ``jacrev_exact_error`` the float64 jacrev's error against the mpmath reference
    of ``exact_digits`` digits (``None`` without it).
    """

    derivation: str
    params: tuple[tuple[str, Any], ...]
    dtype: str
    regime: str
    seed: int
    tol: float
    ref_max_abs: float
    rows: tuple[ComparisonRow, ...]
    proved: bool
    reference_dtype: str = "float64"
    jacrev_dtype_error: float | None = None
    jacrev_exact_error: float | None = None
    exact_digits: int | None = None

    @property
    def worst(self) -> ComparisonRow:
        return max(self.rows, key=lambda r: (r.max_rel_error, r.max_abs_error))

    @property
    def max_abs_error(self) -> float:
        return max(r.max_abs_error for r in self.rows)

    @property
    def max_rel_error(self) -> float:
        return self.worst.max_rel_error

    @property
    def argmax(self) -> tuple[int, ...]:
        return self.worst.argmax

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return (f"Comparison({self.derivation}({p}), {self.dtype}, regime={self.regime!r}: "
                f"max_rel_error={self.max_rel_error:.3e} at {self.argmax} "
                f"({self.worst.method}), tol={self.tol:.1e}, passed={self.passed})")

    def table_rows(self) -> list[dict[str, Any]]:
        return [{**r.to_dict(), "argmax": str(r.argmax)} for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"derivation": self.derivation, "params": dict(self.params), "dtype": self.dtype,
                "regime": self.regime, "seed": self.seed, "tol": self.tol, "ref_max_abs": self.ref_max_abs,
                "proved": self.proved, "passed": self.passed, "max_abs_error": self.max_abs_error,
                "max_rel_error": self.max_rel_error, "argmax": list(self.argmax),
                "reference_dtype": self.reference_dtype, "jacrev_dtype_error": self.jacrev_dtype_error,
                "jacrev_exact_error": self.jacrev_exact_error, "exact_digits": self.exact_digits,
                "rows": [r.to_dict() for r in self.rows]}


DEFAULT_TOL: dict[torch.dtype, float] = {torch.float64: 1e-12, torch.float32: 1e-5}


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Normwise ``max|got − ref| / max|ref|`` in float64 (0 when both are 0, inf when only ref is)."""
    err = float((got.detach().to(torch.float64) - ref.detach().to(torch.float64)).abs().max())
    scale = float(ref.detach().abs().max())
    if not math.isfinite(err):
        return math.inf
    return 0.0 if err == 0.0 else (err / scale if scale > 0 else math.inf)


def _errors(method: str, got: torch.Tensor, ref: torch.Tensor, tol: float,
            exact: torch.Tensor | None = None) -> ComparisonRow:
    if tuple(got.shape) != tuple(ref.shape):
        raise AssertionError(f"{method}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    got, ref = got.detach(), ref.detach()
    err = (got.to(torch.float64) - ref.to(torch.float64)).abs()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    amax = float(err.max()) if err.numel() else 0.0
    if not math.isfinite(amax):
        rel = math.inf
    elif amax == 0.0:
        rel = 0.0
    else:
        rel = amax / scale if scale > 0 else math.inf
    flat_arg = int(torch.nan_to_num(err, nan=math.inf).argmax()) if err.numel() else 0
    idx = tuple(int(i) for i in np.unravel_index(flat_arg, err.shape)) if err.numel() else ()
    rel_exact = None if exact is None else _rel(got, exact.reshape(got.shape))
    passed = rel <= tol if rel_exact is None else rel_exact <= tol
    return ComparisonRow(method, amax, rel, idx, bool(passed), rel_exact)


@functools.lru_cache(maxsize=64)
def _mpmath_function(d: Derivation) -> Callable[..., Any]:
    return sp.lambdify([s for _, s in d.args], [e for _, e in d.entries("expression")], modules="mpmath",
                       cse=True)


def _exact_values(d: Derivation, inputs: Sequence[torch.Tensor], digits: int) -> torch.Tensor:
    """The entrywise sympy derivation evaluated with mpmath at ``digits`` digits, per sample.

    ``inputs`` are float64 tensors with the samples first (as for :meth:`Derivation.lambdify`);
    every float64 input is exactly representable, so the only error left is the final rounding
    of each entry to float64. This is independent of both the closed form and autograd.
    """
    import mpmath

    fn = _mpmath_function(d)
    samples = int(inputs[0].shape[0])
    out = []
    with mpmath.workdps(digits):
        def conv(v: Any) -> Any:
            return [conv(x) for x in v] if isinstance(v, list) else mpmath.mpf(v)

        for i in range(samples):
            vals = fn(*[conv(x[i].tolist()) for x in inputs])
            out.append([float(v) for v in vals])
    return torch.tensor(out, dtype=torch.float64).reshape((samples,) + d.shape)


def _draw(shape: tuple[int, ...], g: torch.Generator, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)



@dataclass(frozen=True)
class _Point:
    """One comparison point: the closed form's value, jacrev's (float64, and in the working dtype),
    and the inputs of the lambdified derivation (samples first, in the order of ``Derivation.args``)."""

    mine: torch.Tensor
    ref: torch.Tensor
    ref_dt: torch.Tensor
    inputs: tuple[torch.Tensor, ...]


def _check_options(dtype: Any, tol: float | None, regime: str, samples: Any, seed: Any, backends: Sequence[str],
                   exact_digits: Any, softmax_adjoint: str, tau: Any) -> tuple[torch.dtype, float]:
    """Validate compare_with_autograd's options; returns the dtype and the tolerance."""
    dt = {"float64": torch.float64, "float32": torch.float32}.get(dtype, dtype) if isinstance(dtype, str) \
        else dtype
    if dt not in DEFAULT_TOL:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if tol is None:
        tol = DEFAULT_TOL[dt]
    elif isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    check_name("regime", regime, tuple(REGIMES))
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for b in backends:
        check_name("backend", b, ("numpy", "torch"))
    if exact_digits is not None and (isinstance(exact_digits, bool) or not isinstance(exact_digits, int)
                                     or not 20 <= exact_digits <= 200):
        raise ValueError(f"exact_digits must be an integer in [20, 200] or None, got {exact_digits!r}")
    check_name("softmax_adjoint", softmax_adjoint, closed.SOFTMAX_ADJOINTS)
    if tau is not None and not (isinstance(tau, (int, float)) and not isinstance(tau, bool)
                                and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    return dt, float(tol)


def _resolve(derivation: str | Derivation, sizes: Mapping[str, int] | None, kernel: str | None,
             wrt: str | None, target: str | None) -> Derivation:
    """The :class:`Derivation` to check: given, or built by name from ``sizes`` and the options."""
    if isinstance(derivation, Derivation):
        if sizes is not None or kernel is not None or wrt is not None or target is not None:
            raise ValueError("pass sizes/kernel/wrt/target only with a derivation name, not a Derivation")
        return derivation
    if not isinstance(derivation, str):
        raise TypeError(f"derivation must be a Derivation or a name from {DERIVATIONS}, "
                        f"got {type(derivation).__name__}")
    check_name("derivation", derivation, DERIVATIONS)
    if sizes is None:
        raise ValueError("sizes is required with a derivation name, e.g. {'n': 3, 'D': 2, 'd': 2}")
    if not isinstance(sizes, Mapping):
        raise TypeError(f"sizes must be a mapping like {{'n': 3}}, got {type(sizes).__name__}")
    kw: dict[str, Any] = dict(sizes)
    for key, value in (("kernel", kernel), ("wrt", wrt), ("target", target)):
        if value is not None:
            kw[key] = value
    return derive(derivation, **kw)


def _both(fn: Callable[[torch.dtype], torch.Tensor], dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """jacrev in float64 (the reference) and, for float32, in float32 as well."""
    r64 = fn(torch.float64).detach()
    return r64, (fn(dt).detach() if dt != torch.float64 else r64)


def _softmax_point(der: Derivation, g: torch.Generator, dt: torch.dtype, scale: float, samples: int,
                   tau: float | None) -> _Point:
    """``softmax_jacobian`` / ``temperature_derivative`` at random logits ``z`` (and τ)."""
    n = der.param("n")
    z = _draw((samples, n), g, dt, scale)
    t = 1.0 if der.name == "softmax_jacobian" else (0.7 if tau is None else float(tau))

    def s_of(zz: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        # the models' temperature kernel with Q = z, K = I, τ = 1 is softmax(z); τ enters as z/τ
        # (a tensor τ is needed to differentiate in it, which the kernel's float τ refuses)
        eye = torch.eye(n, dtype=zz.dtype)
        return temperature_kernel((zz / tt).unsqueeze(-2), eye, 1.0).squeeze(-2)

    if der.name == "softmax_jacobian":
        def jac(dd: torch.dtype) -> torch.Tensor:
            one = torch.ones((), dtype=dd)
            return torch.func.vmap(torch.func.jacrev(lambda zz: s_of(zz, one)))(z.to(dd))

        ref, ref_dt = _both(jac, dt)
        return _Point(closed.softmax_jacobian(torch.softmax(z, -1)), ref, ref_dt, (z,))
    tt = torch.full((samples,), t, dtype=dt)
    if der.param("target") == "probabilities":
        def jac(dd: torch.dtype) -> torch.Tensor:
            return torch.func.vmap(torch.func.jacrev(lambda tv, zz: s_of(zz, tv)))(tt.to(dd), z.to(dd))

        mine = closed.softmax_tau_derivative(z, t)
    else:
        J_of = torch.func.jacrev(lambda zz, tv: s_of(zz, tv))

        def jac(dd: torch.dtype) -> torch.Tensor:
            return torch.func.vmap(torch.func.jacrev(lambda tv, zz: J_of(zz, tv)))(tt.to(dd), z.to(dd))

        mine = closed.softmax_jacobian_tau(z, t)
    ref, ref_dt = _both(jac, dt)
    return _Point(mine, ref, ref_dt, (z, tt))


def _gaussian_point(der: Derivation, g: torch.Generator, dt: torch.dtype, scale: float, samples: int,
                    tau: float | None) -> _Point:
    """``gaussian_kernel_jacobian`` at random ``X, W_Q, W_K``."""
    n, D, d = der.param("n"), der.param("D"), der.param("d")
    t = math.sqrt(d) if tau is None else float(tau)
    X = _draw((samples, n, D), g, dt)
    WQ = _draw((samples, D, d), g, dt, scale / math.sqrt(D))
    WK = _draw((samples, D, d), g, dt, scale / math.sqrt(D))
    w_idx = 0 if der.param("wrt") == "W_Q" else 1

    def S_of(wq: torch.Tensor, wk: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return gaussian_kernel(x @ wq, x @ wk, t, on_underflow="ignore")

    ref, ref_dt = _both(lambda dd: torch.func.vmap(torch.func.jacrev(S_of, argnums=w_idx))(
        WQ.to(dd), WK.to(dd), X.to(dd)), dt)
    mine = closed.gaussian_kernel_jacobian(X @ WQ, X @ WK, X, t)[w_idx]
    return _Point(mine, ref, ref_dt, (X, WQ, WK, torch.full((samples,), t, dtype=dt)))


def _attention_point(der: Derivation, g: torch.Generator, dt: torch.dtype, regime: str, seed: int,
                     samples: int, tau: float | None, softmax_adjoint: str) -> _Point:
    """``attention_output_jacobian`` on a ``MultiHeadAttention`` drawn in ``regime`` from ``seed``."""
    n, D, d, H, kern, w = (der.param(k) for k in ("n", "D", "d", "H", "kernel", "wrt"))
    mkw: dict[str, Any] = dict(kernel=kern, d_out=1, regime=regime, seed=seed,
                               tau=(tau if tau is not None else (0.7 if kern == "temperature" else None)),
                               kernel_options={"on_underflow": "ignore"} if kern == "gaussian" else None)
    model = MultiHeadAttention(D, d, H, dtype=dt, **mkw)
    X = _draw((samples, n, D), g, dt)
    models = {dt: model}
    if dt != torch.float64:  # a float64 twin holding the float32 weights exactly
        models[torch.float64] = MultiHeadAttention(D, d, H, dtype=torch.float64, **mkw)
        with torch.no_grad():
            for k in SYMBOLIC_WRT:
                getattr(models[torch.float64], k).copy_(getattr(model, k).to(torch.float64))

    def jac_mh(dd: torch.dtype) -> torch.Tensor:
        m, x = models[dd], X.to(dd)
        return torch.func.jacrev(lambda W: m.functional({w: W}, x))(getattr(m, w).detach())

    ref, ref_dt = _both(jac_mh, dt)  # (N, n, 1, *W.shape)
    mine = closed.mh_output_jacobian(model, X, w, softmax_adjoint=softmax_adjoint)
    t = math.sqrt(d) if model.tau is None else float(model.tau)
    Wt = {k: getattr(model, k).detach() for k in SYMBOLIC_WRT}
    inputs = [X] + [Wt[k].expand(samples, *Wt[k].shape) for k in SYMBOLIC_WRT] + \
        [torch.full((samples,), t, dtype=dt)]
    return _Point(mine, ref, ref_dt, tuple(inputs))


def _sympy_rows(der: Derivation, pt: _Point, backends: Sequence[str], tol: float,
                exact_digits: int | None) -> tuple[list[ComparisonRow], torch.Tensor | None]:
    """Rows for the closed form and each lambdify back end, judged against jacrev or mpmath."""
    # the sympy code runs at the same point in float64: its entrywise formulas exponentiate raw logits
    # (no max-shift), which overflow float32 from logits of 89 on
    inputs = [x.to(torch.float64) for x in pt.inputs]
    if der.name in ("softmax_jacobian", "temperature_derivative"):
        # softmax((z − c1)/τ) = softmax(z/τ) for every τ, so both derivations are exactly invariant
        # under z → z − max(z); evaluating the sympy code there avoids overflow of e^{z/τ}.
        inputs[0] = inputs[0] - inputs[0].max(dim=-1, keepdim=True).values
    ref = pt.ref
    exact = _exact_values(der, inputs, exact_digits).reshape(ref.shape) if exact_digits is not None else None
    rows = [_errors("closed_form_torch", pt.mine, ref, tol, exact)]
    for backend in backends:
        f = der.lambdify(backend)
        if backend == "numpy":
            with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as an inf error below
                got = torch.from_numpy(np.ascontiguousarray(f(*[x.numpy() for x in inputs])))
        else:
            got = f(*inputs)
        rows.append(_errors(f"sympy_{backend}", got.reshape(ref.shape), ref, tol, exact))
    return rows, exact


def compare_with_autograd(
    derivation: str | Derivation,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    dtype: torch.dtype | str = torch.float64,
    tol: float | None = None,
    *,
    regime: str = "default",
    kernel: str | None = None,
    wrt: str | None = None,
    target: str | None = None,
    samples: int = 2,
    tau: float | None = None,
    backends: Sequence[str] = ("numpy", "torch"),
    exact_digits: int | None = None,
    softmax_adjoint: str = "pairwise",
) -> Comparison:
    """Check a derivation's code against ``torch.func.jacrev`` on the :mod:`models` implementation.

    ``derivation`` is a :class:`Derivation` or a name from :data:`DERIVATIONS` (then ``sizes``,
    e.g. ``{"n": 3, "D": 2, "d": 2, "H": 1}``, and ``kernel``/``wrt``/``target`` build it).
    A random point is drawn from ``seed`` in the attention ``regime`` (``near_uniform``,
    ``default``, ``sharp``: logits or ``W_Q, W_K`` scaled by :data:`models.init.REGIMES`), for
    ``samples`` samples. Rows: ``closed_form_torch`` (:mod:`models.derivatives`), and
    ``sympy_<backend>`` for each lambdify back end. ``tol`` defaults to 1e-12 (float64) or
    1e-5 (float32) on the normwise relative error ``max|J − J_ref| / max|J_ref|``.

    The reference ``J_ref`` is ``torch.func.jacrev`` in float64 (through the models' stable autograd,
    :mod:`models.stable`). For ``dtype=float32`` the point is drawn in float32 and the reference taken
    there in float64 (exact upcast); float32 jacrev's own error is reported as ``jacrev_dtype_error``;
    the closed form runs in float32, the sympy code in float64.
    ``exact_digits`` (e.g. 30) adds a reference independent of autograd: the entrywise sympy
    derivation evaluated with mpmath. Rows are then judged against it, not against jacrev, whose
    own float64 error is ``jacrev_exact_error``.
    ``softmax_adjoint`` is passed to :func:`models.derivatives.mh_output_jacobian`.
    """
    dt, tol = _check_options(dtype, tol, regime, samples, seed, backends, exact_digits, softmax_adjoint, tau)
    der = _resolve(derivation, sizes, kernel, wrt, target)
    g = make_generator(seed)
    scale = regime_scale(regime)
    if der.name in ("softmax_jacobian", "temperature_derivative"):
        pt = _softmax_point(der, g, dt, scale, samples, tau)
    elif der.name == "gaussian_kernel_jacobian":
        pt = _gaussian_point(der, g, dt, scale, samples, tau)
    else:
        pt = _attention_point(der, g, dt, regime, seed, samples, tau, softmax_adjoint)
    rows, exact = _sympy_rows(der, pt, backends, tol, exact_digits)
    ref = pt.ref
    return Comparison(der.name, der.params, str(dt).replace("torch.", ""), regime, seed, tol,
                      float(ref.abs().max()), tuple(rows), der.proved,
                      jacrev_dtype_error=None if dt == torch.float64 else _rel(pt.ref_dt, ref),
                      jacrev_exact_error=None if exact is None else _rel(ref, exact),
                      exact_digits=exact_digits)
