"""Solvers: algorithms over a :class:`~attncond.spectral.operators.LinearOp` (never import models).

:data:`SOLVERS` maps each ``method=`` name of :func:`attncond.spectral.extreme_singular_values`
to a :class:`Solver` with one signature, ``run(op, ends, tol, maxiter, seed) -> SVDResult``
(``ends`` is ``"both"``, ``"largest"`` or ``"smallest"``; ``op`` is already validated by
:func:`attncond.spectral.solvers.validate.prepare`, so a registered ``run`` calls a solver's
``solve_*`` core, which checks nothing again). A new solver is one module, one
:func:`register_solver` call here, and one subclass of the shared solver test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from attncond.spectral.operators.base import LinearOp
from attncond.spectral.results import SVDResult
from attncond.spectral.solvers.dense import dense_svd, solve_dense
from attncond.spectral.solvers.gkd import gkd_run, golub_kahan_davidson
from attncond.spectral.solvers.gkl import golub_kahan_lanczos, solve_gkl
from attncond.spectral.solvers.gram_lanczos import solve_gram_lanczos
from attncond.spectral.solvers.gram_route import gram_route
from attncond.spectral.solvers.lanczos import symmetric_lanczos
from attncond.spectral.solvers.psd import GramExtremes, PSDExtremes, gram_extremes, psd_extremes
from attncond.spectral.solvers.randomized import randomized_svd, solve_randomized
from attncond.spectral.solvers.scipy_peers import (
    arpack_svds,
    check_svds_k,
    lobpcg_svds,
    propack_svds,
    solve_svds,
)

__all__ = [
    "Solver", "SOLVERS", "register_solver", "dense_svd", "golub_kahan_lanczos", "golub_kahan_davidson",
    "symmetric_lanczos",
    "randomized_svd", "arpack_svds", "propack_svds", "lobpcg_svds", "gram_route", "gram_extremes",
    "psd_extremes", "GramExtremes", "PSDExtremes",
]

Run = Callable[[LinearOp, str, float, "int | None", int], SVDResult]
ENDS = ("both", "largest", "smallest")


@dataclass(frozen=True)
class Solver:
    """A registered singular-value solver.

    ``run(op, ends, tol, maxiter, seed)`` returns a certified :class:`SVDResult` for the one
    extreme singular triplet at each requested end; ``ends`` lists the ends it can compute.
    ``check(shape, k)``, when given, refuses a shape the solver cannot handle (a ``ValueError``
    raised by :func:`attncond.spectral.extreme_singular_values` before any work).
    """

    name: str
    run: Run
    ends: tuple[str, ...] = ENDS
    summary: str = ""
    check: Callable[[tuple[int, int], int], None] | None = None


_SOLVERS: dict[str, Solver] = {}
#: name -> :class:`Solver`, read-only; extend it with :func:`register_solver`.
SOLVERS: Mapping[str, Solver] = MappingProxyType(_SOLVERS)


def register_solver(solver: Solver) -> Solver:
    """Add ``solver`` to :data:`SOLVERS` (a clear error if the name is taken or reserved).

    Raises
    ------
    TypeError
        ``solver`` is not a :class:`Solver`.
    ValueError
        The name is taken (or ``"auto"``), or ``ends`` names an unknown end.

    Examples
    --------
    >>> from attncond.spectral.solvers import SOLVERS
    >>> sorted(SOLVERS)[:3], SOLVERS["randomized"].ends
    (['arpack', 'dense', 'gkd'], ('largest',))
    """
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a spectral.solvers.Solver, got {type(solver).__name__}")
    if solver.name in _SOLVERS or solver.name == "auto":
        raise ValueError(f"a solver named {solver.name!r} is already registered")
    unknown = set(solver.ends) - set(ENDS)
    if unknown:
        raise ValueError(f"solver {solver.name!r}: unknown ends {sorted(unknown)}; known: {ENDS}")
    _SOLVERS[solver.name] = solver
    return solver


def _randomized(op: LinearOp, ends: str, tol: float, maxiter: int | None, seed: int) -> SVDResult:
    return solve_randomized(op, 1, tol, seed=seed)


for _s in (
    Solver("dense", lambda op, ends, tol, maxiter, seed: solve_dense(op, 1, ends, tol),
           summary="full SVD of the materialised operator"),
    Solver("gram", gram_route, summary="eigh of the small-side Gram, certified on A itself"),
    Solver("gkl", lambda op, ends, tol, maxiter, seed: solve_gkl(op, 1, ends, tol, maxiter, seed=seed),
           summary="matrix-free Golub–Kahan–Lanczos with thick restarts"),
    Solver("gkd", lambda op, ends, tol, maxiter, seed: gkd_run(op, 1, ends, tol, maxiter, seed),
           summary="matrix-free Golub–Kahan–Davidson: memory-bounded basis, GD+k restarts, null-space locking"),
    Solver("gram-lanczos", solve_gram_lanczos,
           summary="matrix-free Lanczos on the small-side Gram, certified on A (kappa up to ~1e4)"),
    Solver("randomized", _randomized, ends=("largest",), summary="randomized range finder, sigma_max only"),
    Solver("arpack", lambda op, ends, tol, maxiter, seed, _s="arpack": solve_svds(op, 1, ends, tol, maxiter,
                                                                                 seed, _s),
           summary="scipy svds(solver='arpack'), certified by our residual bounds",
           check=lambda shape, k: check_svds_k("arpack", shape, k)),
    Solver("propack", lambda op, ends, tol, maxiter, seed, _s="propack": solve_svds(op, 1, ends, tol, maxiter,
                                                                                 seed, _s),
           summary="scipy svds(solver='propack'), certified by our residual bounds"),
    Solver("lobpcg", lambda op, ends, tol, maxiter, seed, _s="lobpcg": solve_svds(op, 1, ends, tol, maxiter,
                                                                                 seed, _s),
           summary="scipy svds(solver='lobpcg'), certified by our residual bounds",
           check=lambda shape, k: check_svds_k("lobpcg", shape, k)),
):
    register_solver(_s)
del _s
