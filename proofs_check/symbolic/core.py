"""Core of the symbolic checks: size limits, :class:`Derivation`, lambdify, and the proof machinery.

Shared by the derivations of each kernel family (:mod:`.softmax`, :mod:`.gaussian`, :mod:`.attention`).
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
import torch
from sympy.printing.pytorch import TorchPrinter

from attncond.models import KERNELS

#: Largest sizes accepted for symbolic work. Beyond them use :mod:`models.derivatives`.
SYMBOLIC_LIMITS: dict[str, int] = {"n": 4, "D": 3, "d": 2, "H": 2}
#: Kernels :func:`attention_output_jacobian` can differentiate (MATH.md §2): those declaring the
#: ``symbolic`` capability in ``models.KERNELS`` at import (the registry is asked again at each call).
SYMBOLIC_KERNELS: tuple[str, ...] = tuple(k.name for k in KERNELS.values() if k.symbolic)
#: Weights of the [S24] model one can differentiate with respect to.
SYMBOLIC_WRT: tuple[str, ...] = ("W_Q", "W_K", "W_V", "W_O")
#: Names accepted by :func:`derive` and :func:`compare_with_autograd`.
DERIVATIONS: tuple[str, ...] = ("softmax_jacobian", "temperature_derivative", "gaussian_kernel_jacobian",
                                "attention_output_jacobian")
_CLOSED_FORM_HINT = ("use the closed forms in models.derivatives (softmax_jacobian, softmax_jacobian_tau, "
                     "gaussian_kernel_jacobian, mh_output_jacobian), which have no size limit")


# ---------------------------------------------------------------------------- validation
def check_size(name: str, value: Any, *, minimum: int = 1) -> int:
    """A size within :data:`SYMBOLIC_LIMITS`, else a ``ValueError`` pointing at the closed forms."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    limit = SYMBOLIC_LIMITS[name]
    if value > limit:
        raise ValueError(f"{name}={value} is too large for symbolic work (limit {name} <= {limit}; "
                         f"limits {SYMBOLIC_LIMITS}); {_CLOSED_FORM_HINT}")
    return value


def check_name(what: str, value: Any, known: Sequence[str]) -> str:
    """``value`` if it is one of ``known``, else ``ValueError("unknown <what> ...; known: ...")``."""
    if not isinstance(value, str) or value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(map(repr, known))}")
    return value


# ---------------------------------------------------------------------------- results
class SymbolicFunction:
    """A lambdified derivation: call it with the arguments named in ``arg_names``.

    Each argument is an array (numpy back end) or tensor (torch back end) of shape
    ``batch + arg_shape`` (``arg_shapes[i]``; scalars have shape ``()``), with the same
    leading ``batch`` dims for all; the result has shape ``batch + out_shape``.
    """

    def __init__(self, fn: Callable[..., Any], backend: str, arg_names: tuple[str, ...],
                 arg_shapes: tuple[tuple[int, ...], ...], out_shape: tuple[int, ...], source: str):
        self._fn = fn
        self.backend = backend
        self.arg_names = arg_names
        self.arg_shapes = arg_shapes
        self.out_shape = out_shape
        self.source = source

    def __repr__(self) -> str:
        args = ", ".join(f"{a}{list(s)}" for a, s in zip(self.arg_names, self.arg_shapes, strict=True))
        return f"SymbolicFunction({self.backend}: ({args}) -> {list(self.out_shape)})"

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.arg_names):
            raise TypeError(f"expected {len(self.arg_names)} arguments {self.arg_names}, got {len(args)}")
        torch_backend = self.backend == "torch"
        conv = []
        batch: tuple[int, ...] | None = None
        ref = None
        for name, shape, a in zip(self.arg_names, self.arg_shapes, args, strict=True):
            if torch_backend:
                if not isinstance(a, torch.Tensor):
                    a = torch.as_tensor(a, dtype=ref.dtype if ref is not None else torch.float64)
                ref = a if ref is None else ref
            else:
                a = np.asarray(a)
            k = len(shape)
            if tuple(a.shape[a.ndim - k:]) != shape or a.ndim < k:
                raise ValueError(f"argument {name} must have shape batch + {shape}, got {tuple(a.shape)}")
            b = tuple(a.shape[: a.ndim - k])
            if batch is None:
                batch = b
            elif b != batch and k > 0:
                raise ValueError(f"argument {name} has batch shape {b}, expected {batch}")
            if k == 0 and b != batch:  # a scalar parameter shared by the batch
                a = (a.expand(batch) if torch_backend else np.broadcast_to(a, batch))
            # move the batch to the back so every symbol receives a whole batch of values
            perm = tuple(range(len(b), a.ndim)) + tuple(range(len(b)))
            conv.append(a.permute(perm) if torch_backend else np.transpose(a, perm))
        assert batch is not None
        vals = self._fn(*conv)
        if torch_backend:
            like = conv[0]
            flat = [v if isinstance(v, torch.Tensor) and v.shape == batch else
                    torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(batch) for v in vals]
            out = torch.stack(flat, dim=-1) if flat else torch.zeros(batch + (0,), dtype=like.dtype)
            return out.reshape(batch + self.out_shape)
        dtype = np.result_type(*[c.dtype for c in conv])
        flat = [np.broadcast_to(np.asarray(v, dtype=dtype), batch) for v in vals]
        out = np.stack(flat, axis=-1) if flat else np.zeros(batch + (0,), dtype=dtype)
        return out.reshape(batch + self.out_shape)


class _TorchPrinter(TorchPrinter):
    """sympy's TorchPrinter with element-wise ``Min`` and tensor-safe ``Heaviside``."""

    def _print_Min(self, expr: sp.Min) -> str:
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"torch.minimum({out}, {a})"
        return out

    def _print_Pow(self, expr: sp.Pow) -> str:
        if expr.is_number:  # e.g. sqrt(2): torch.sqrt refuses a Python number
            return repr(float(expr))
        return super()._print_Pow(expr)

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        x = self._print(expr.args[0])
        return f"torch.where(({x}) > 0, 1.0, torch.where(({x}) < 0, 0.0, 0.5))"


@dataclass(frozen=True, eq=False)
class Derivation:
    """A symbolic Jacobian: derived expression, closed form, and whether sympy proved them equal.

    ``args`` lists ``(name, symbols)`` in call order, ``symbols`` being a nested list of sympy
    symbols of shape ``arg_shapes[i]`` (a bare symbol for a scalar). ``expression`` and
    ``closed_form`` are immutable sympy arrays of shape ``shape`` (the ``torch.func.jacrev``
    layout for one sample: output dims first, then the dims of the variable).
    """

    name: str
    params: tuple[tuple[str, Any], ...]
    expression: sp.ImmutableDenseNDimArray = field(repr=False)
    closed_form: sp.ImmutableDenseNDimArray = field(repr=False)
    args: tuple[tuple[str, Any], ...] = field(repr=False)
    arg_shapes: tuple[tuple[int, ...], ...] = field(repr=False)
    proved: bool
    proof_method: str
    formula: str
    source: str
    simplification: str
    seconds: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.expression.shape)

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.args)

    @property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        """All free input symbols, flattened in call order."""
        out: list[sp.Symbol] = []
        for _, s in self.args:
            out.extend(flatten(s))
        return tuple(out)

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return (f"Derivation({self.name}({p}), shape={self.shape}, proved={self.proved} "
                f"[{self.proof_method}], {self.seconds:.2f}s)")

    def entries(self, which: str = "expression") -> list[tuple[tuple[int, ...], sp.Expr]]:
        """``[(index, entry), ...]`` of ``expression`` or ``closed_form`` in row-major order."""
        arr = self._which(which)
        idx = list(np.ndindex(*arr.shape))
        flat = list(sp.flatten(arr.tolist())) if arr.rank() else [arr[()]]
        return list(zip(idx, flat, strict=True))

    def _which(self, which: str) -> sp.ImmutableDenseNDimArray:
        check_name("which", which, ("expression", "closed_form"))
        return self.expression if which == "expression" else self.closed_form

    def to_latex(self, which: str = "expression", max_entries: int | None = None) -> str:
        """LaTeX of the entries (``\\frac{∂…}{∂…} = …``, one per line); a matrix if the rank is 2.

        ``which`` is ``"expression"``, ``"closed_form"`` or ``"both"``; ``max_entries`` caps
        the number of entries printed for big arrays.
        """
        if which == "both":
            return (f"% derived entrywise ({self.simplification})\n{self.to_latex('expression', max_entries)}\n"
                    f"% closed form: {self.formula}\n{self.to_latex('closed_form', max_entries)}")
        arr = self._which(which)
        if arr.rank() == 2 and max_entries is None:
            return sp.latex(sp.Matrix(arr.tolist()))
        lines = []
        for k, (idx, e) in enumerate(self.entries(which)):
            if max_entries is not None and k >= max_entries:
                lines.append(f"% ... {math.prod(self.shape) - max_entries} more entries")
                break
            lines.append(f"J_{{{','.join(map(str, idx))}}} = {sp.latex(e)}")
        return "\n".join(lines)

    def lambdify(self, backend: str = "numpy", which: str = "expression") -> SymbolicFunction:
        """Turn the derivation into code with ``sympy.lambdify`` (``modules="numpy"`` or ``"torch"``).

        Returns a :class:`SymbolicFunction` taking the arrays named in ``arg_names``.
        """
        check_name("backend", backend, ("numpy", "torch"))
        return _lambdify(self, backend, which)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "params": dict(self.params), "shape": list(self.shape),
            "arg_names": list(self.arg_names), "arg_shapes": [list(s) for s in self.arg_shapes],
            "proved": self.proved, "proof_method": self.proof_method, "formula": self.formula,
            "source": self.source, "simplification": self.simplification, "seconds": self.seconds,
            "expression": [str(e) for _, e in self.entries("expression")],
            "closed_form": [str(e) for _, e in self.entries("closed_form")],
        }


@functools.lru_cache(maxsize=64)
def _lambdify_cached(d: Derivation, backend: str, which: str) -> SymbolicFunction:
    arr = d._which(which)
    exprs = [e for _, e in d.entries(which)]
    arg_syms = [s for _, s in d.args]
    if backend == "torch":
        fn = sp.lambdify(arg_syms, exprs, modules="torch", printer=_TorchPrinter(), cse=True)
    else:
        fn = sp.lambdify(arg_syms, exprs, modules="numpy", cse=True)
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):  # pragma: no cover
        src = ""
    return SymbolicFunction(fn, backend, d.arg_names, d.arg_shapes, tuple(arr.shape), src)


def _lambdify(d: Derivation, backend: str, which: str) -> SymbolicFunction:
    return _lambdify_cached(d, backend, which)


# ---------------------------------------------------------------------------- helpers
def flatten(s: Any) -> list[Any]:
    """Flatten nested lists/tuples in row-major order."""
    if isinstance(s, (list, tuple)):
        return [x for item in s for x in flatten(item)]
    return [s]


def symbols(name: str, shape: tuple[int, ...]) -> Any:
    """Nested list of real symbols ``name_{i j ...}`` of the given shape."""
    if not shape:
        return sp.Symbol(name, real=True)

    def build(prefix: tuple[int, ...], rest: tuple[int, ...]) -> Any:
        if not rest:
            return sp.Symbol(f"{name}_{''.join(map(str, prefix))}", real=True)
        return [build(prefix + (i,), rest[1:]) for i in range(rest[0])]

    return build((), shape)


def jacobian_entries(outputs: sp.Matrix | list, variables: Any, out_shape: tuple[int, ...],
                     var_shape: tuple[int, ...]) -> list[sp.Expr]:
    """Entrywise ``∂ out / ∂ var`` in row-major (output dims, then variable dims) order."""
    outs = flatten(outputs.tolist() if isinstance(outputs, sp.MatrixBase) else outputs)
    vs = flatten(variables)
    return [sp.diff(o, v) for o in outs for v in vs]


def _simplify_entries(entries: list[sp.Expr], how: str) -> list[sp.Expr]:
    if how == "simplify":
        return [sp.simplify(e) for e in entries]
    if how == "factor":
        return [sp.factor(e) for e in entries]
    if how == "cancel":
        return [sp.cancel(e) for e in entries]
    return list(entries)


def _is_zero(e: sp.Expr, method: str) -> bool:
    if e == 0:
        return True
    if method == "simplify":
        return sp.simplify(e) == 0
    # exp(·) atoms become products of fresh symbols first: exp(Σ_i c_i b_i) -> Π_i E_{b_i}^{c_i}, with one
    # positive symbol E_b per distinct additive term b of the exponents (c_i the rational coefficients).
    # An identity of rational functions in independent symbols implies the identity for their exponential
    # values, and exp(2 z/τ) and exp(z/τ)² now meet as the same monomial.
    bases: dict[sp.Expr, sp.Symbol] = {}

    def as_product(a: sp.Expr) -> sp.Expr:
        out = sp.Integer(1)
        for term in sp.Add.make_args(sp.expand(a.args[0])):
            c, b = term.as_coeff_Mul()
            if b not in bases:
                bases[b] = sp.Dummy(f"E{len(bases)}", positive=True)
            out *= bases[b] ** c
        return out

    atoms = sorted(e.atoms(sp.exp), key=sp.default_sort_key)
    # fast path: each whole exp(·) atom as one symbol (enough when both sides share the same atoms, as for
    # W_V and W_O, whose exponents hold Min(τ, std) terms that are slow to expand)
    whole = sp.expand(sp.numer(sp.together(e.xreplace({a: sp.Dummy(f"A{i}", positive=True)
                                                        for i, a in enumerate(atoms)}))))
    if whole == 0:
        return True
    e = e.xreplace({a: as_product(a) for a in atoms})
    num = sp.numer(sp.together(e))
    return sp.expand(num) == 0


def prove_identity(expr: list[sp.Expr], closed_form: list[sp.Expr], method: str) -> tuple[bool, str]:
    """True when every ``expr − closed_form`` entry reduces to 0 (``method``, then ``simplify``).

    ``method="branches"`` is for NormSoftmax: every ``Min(τ, v)`` is replaced by ``v`` and every
    ``Heaviside(τ − v)`` by 1 (the branch ``v < τ``), then by ``τ`` and 0 (``v > τ``), and the
    normal form must vanish on both. Entry ``k`` involves only row ``k``'s ``Min``, so the two
    branches cover every sign pattern; the kink ``v = τ`` (measure zero) is not covered.
    """
    if method == "branches":
        mins = set().union(*[e.atoms(sp.Min) for e in expr + closed_form])
        steps = set().union(*[e.atoms(sp.Heaviside) for e in expr + closed_form])
        for branch in (1, 0):
            rep: dict[sp.Expr, sp.Expr] = {h: sp.Integer(branch) for h in steps}
            for m in mins:
                t, v = m.args if m.args[0].is_Symbol else m.args[::-1]
                rep[m] = v if branch else t
            for e, c in zip(expr, closed_form, strict=True):
                if not _is_zero((e - c).xreplace(rep), "normal form"):
                    return False, "normal form on both branches of Min(tau, v)"
        return True, "normal form on both branches of Min(tau, v)"
    used = method
    for e, c in zip(expr, closed_form, strict=True):
        diff = e - c
        if _is_zero(diff, method):
            continue
        if method != "simplify" and sp.simplify(diff) == 0:
            used = f"{method}, simplify"
            continue
        return False, used
    return True, used


def softmax_rows(L: sp.Matrix) -> sp.Matrix:
    """Row softmax of a symbolic matrix (no max-shift: exact arithmetic)."""
    E = L.applyfunc(sp.exp)
    rows = [[E[k, j] / sum(E[k, :]) for j in range(L.cols)] for k in range(L.rows)]
    return sp.Matrix(rows)


def finish(name: str, params: dict[str, Any], expr_entries: list[sp.Expr], closed_entries: list[sp.Expr],
           shape: tuple[int, ...], args: list[tuple[str, Any]], arg_shapes: list[tuple[int, ...]],
           formula: str, source: str, simplification: str, proof: str, prove: bool, t0: float) -> Derivation:
    """Simplify the derived entries, attempt the proof, and build the :class:`Derivation`."""
    expr_entries = _simplify_entries(expr_entries, simplification)
    if prove:
        proved, method = prove_identity(expr_entries, closed_entries, proof)
    else:
        proved, method = False, proof if proof.startswith("not attempted") else "not attempted (prove=False)"
    return Derivation(
        name=name, params=tuple(params.items()),
        expression=sp.ImmutableDenseNDimArray(expr_entries, shape),
        closed_form=sp.ImmutableDenseNDimArray(closed_entries, shape),
        args=tuple((a, s) for a, s in args), arg_shapes=tuple(tuple(s) for s in arg_shapes),
        proved=proved, proof_method=method, formula=formula, source=source,
        simplification=simplification, seconds=time.perf_counter() - t0,
    )
