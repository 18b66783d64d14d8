"""``scipy.sparse.linalg.svds`` (ARPACK, PROPACK, LOBPCG) wrapped for comparison.

The peers' own convergence claims are not trusted: after they return, the singular
vectors on the small side are re-evaluated by Rayleigh–Ritz on ``A`` (``σ = ‖A v‖``) and
given the certified residual intervals of :mod:`spectral.solvers.certify`. A wrong value (e.g.
LOBPCG far off) therefore shows up as a large residual and ``converged=False``; a raw value
that disagrees with ``‖A v‖`` of its own vector beyond the certified interval (PROPACK's
``which="SM"`` returning ``0.0`` with the vector of an interior singular value) is also
labelled ``converged=False``, with both numbers in ``reason``. A residual certificate
cannot prove that a returned value is the *extreme* one (``gap_certified=False``): ARPACK's
``which="SM"`` converges cleanly to σ₂ of a 64×64 Gaussian matrix with one zero column, for every
seed. So a converged σ_min (any ``k``) and a converged top ``k ≥ 2`` are checked by attncond's
probe (:func:`spectral.solvers.gkl.probe_end` with ``take_in=False``: GKL for one value beyond the
peer's, on ``A`` deflated by its vectors); a value found beyond makes the end ``converged=False``
with both intervals in ``reason`` (``probe=False`` times the peer alone, as the benchmarks do).
Values that are not converged are ``nan``, their certified intervals kept. Exceptions
(``ArpackNoConvergence``, ``LinAlgError``, ...) are caught and reported as
``converged=False`` with the message in ``reason``. The peer's raw values are kept in ``info["raw_values"]``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla
import torch

from attncond.spectral.operators.base import LinearOp
from attncond.spectral.results import SVDResult
from attncond.spectral.solvers.certify import block_from, certify_small_side, meets_tol, nan_unconverged
from attncond.spectral.solvers.gkl import probe_end
from attncond.spectral.solvers.scaling import solve_scaled
from attncond.spectral.solvers.validate import make_generator, prepare

WHICH = ("both", "largest", "smallest")

def _svds(
    A: Any,
    k: int,
    which: str,
    tol: float,
    maxiter: int | None,
    seed: int,
    solver: str,
    device: Any,
    dtype: Any,
    peer_tol: float | None,
    probe: bool = True,
) -> SVDResult:
    t0 = time.perf_counter()
    op, k, tol, maxiter = prepare(
        A,
        k=k,
        which=which,
        which_choices=WHICH,
        tol=tol,
        maxiter=maxiter,
        device=device,
        dtype=dtype,
        seed=seed,
    )
    check_svds_k(solver, op.shape, k)
    return solve_scaled(op, lambda s: solve_svds(s, k, which, tol, maxiter, seed, solver, peer_tol, probe=probe,
                                                 t0=t0), tol=tol)


#: ``svds`` solvers that compute at most ``min(m, n) − 1`` values (scipy's ``kmax``; PROPACK allows
#: ``min(m, n)``)
SVDS_STRICT = ("arpack", "lobpcg")


def check_svds_k(solver: str, shape: tuple[int, int], k: int) -> None:
    """Refuse ``k ≥ min(m, n)`` for ARPACK and LOBPCG (``svds`` needs ``k < min(m, n)`` there) before any work.

    Raises
    ------
    ValueError
        naming ``k``, ``min(m, n)`` and the solver.
    """
    if solver in SVDS_STRICT and k >= min(shape):
        raise ValueError(
            f"k={k}: svds(solver={solver!r}) computes k < min(m, n) = {min(shape)} values only "
            f"(shape {shape}); use k < min(m, n), or dense_svd / golub_kahan_lanczos / method='dense' "
            "for k = min(m, n)")


def solve_svds(op: LinearOp, k: int, which: str, tol: float, maxiter: int | None, seed: int, solver: str,
               peer_tol: float | None = None, *, probe: bool = True, t0: float | None = None) -> SVDResult:
    """``scipy.sparse.linalg.svds(solver=solver)`` on a validated operator, certified (no checks)."""
    t0 = time.perf_counter() if t0 is None else t0
    m, n = op.shape
    swap = m < n
    T = op.adjoint() if swap else op
    start = op.n_products
    lin = op.to_scipy()
    ends = [e for e in ("largest", "smallest") if which in (e, "both")]
    blocks: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    reasons: list[str] = []
    smax_hint = 0.0
    probes: dict[str, Any] = {}
    gen = make_generator(seed + 1)
    for end in ends:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                u, s, vt = spla.svds(
                    lin,
                    k=k,
                    which="LM" if end == "largest" else "SM",
                    tol=0.0 if peer_tol is None else peer_tol,
                    maxiter=maxiter,
                    solver=solver,
                    random_state=seed,
                )
        except Exception as exc:  # noqa: BLE001 - peers fail in many ways; report them
            reasons.append(f"{solver} ({end}) raised {type(exc).__name__}: {exc}")
            raw[end] = None
            continue
        order = np.argsort(s)[::-1] if end == "largest" else np.argsort(s)
        raw[end] = [float(x) for x in s[order]]
        small = u[:, order] if swap else vt[order].T
        big = vt[order].T if swap else u[:, order]
        V = torch.as_tensor(np.ascontiguousarray(small), dtype=op.dtype, device=op.device)
        Ul = torch.as_tensor(np.ascontiguousarray(big), dtype=op.dtype, device=op.device)
        smax_hint = max(smax_hint, float(np.max(s)))
        c = certify_small_side(T, V, end=end, sigma_max_hint=smax_hint, U=Ul)
        conv = meets_tol(c, tol)
        if bool(np.isnan(c.values).any()):
            reasons.append(f"{solver} ({end}) returned a zero or non-finite singular vector "
                           f"(sigma={raw[end]}); "
                           "a zero vector certifies nothing, so the result is not trusted")
        agree = _raw_agrees(np.asarray(raw[end]), c, tol)
        if not bool(agree.all()) and not bool(np.isnan(c.values).any()):
            bad = int(np.argmin(agree))
            reasons.append(
                f"{solver} ({end}) returned sigma={raw[end][bad]:.6g} but its singular vector gives "
                f"||A v|| = {c.values[bad]:.6g} (certified in [{c.lower[bad]:.6g}, {c.upper[bad]:.6g}]): "
                "the peer's value and vectors disagree, so the result is not trusted"
            )
        conv = conv & agree
        if probe and bool(conv.all()) and (end == "smallest" or k >= 2):
            _, probes[end] = probe_end(T, c, end, k, tol, maxiter or 2000, gen, smax_hint, take_in=False)
            if probes[end]["missed"]:
                val, lo, hi = probes[end]["found"]
                conv = np.zeros_like(conv)
                reasons.append(
                    f"{solver} ({end}) missed a singular value: attncond's probe certified {val:.6g} in "
                    f"[{lo:.6g}, {hi:.6g}], beyond the peer's k-th in [{c.lower[k - 1]:.6g}, "
                    f"{c.upper[k - 1]:.6g}], so the result is not trusted")
        blocks[end] = nan_unconverged(block_from(c, end=end, converged=conv, swap=swap))
    converged = len(blocks) == len(ends) and all(bool(b.converged.all()) for b in blocks.values())
    if not converged and not reasons:
        reasons.append(f"{solver} result fails the certified residual test at tol={tol:g}")
    elif blocks and not all(bool(b.converged.all()) for b in blocks.values()) and not any(
        "not trusted" in r for r in reasons
    ):
        reasons.append(f"{solver} result fails the certified residual test at tol={tol:g}")
    return SVDResult(
        method=solver,
        shape=(m, n),
        largest=blocks.get("largest"),
        smallest=blocks.get("smallest"),
        converged=converged,
        iterations=-1,
        matvecs=op.n_products - start,
        seconds=time.perf_counter() - t0,
        reason="; ".join(reasons) or None,
        info={"raw_values": raw, **({"probe": probes} if probes else {})},
    )

def _raw_agrees(raw: np.ndarray, c: Any, tol: float) -> np.ndarray:
    """``|s_raw,i − ‖A v_i‖| ≤ max(tol·σ_i, η_i) + δ`` for every returned triplet.

    The certified interval ``[σ_i − η_i − δ, σ_i + η_i + δ]`` holds a singular value; a raw
    value outside it (widened to ``tol·σ_i``) means the peer's value and its vector belong to
    different singular values (e.g. PROPACK ``which="SM"`` returning ``0.0`` with the vector
    of an interior singular value). Such a result is labelled ``converged=False``.
    """
    slack = np.maximum(tol * c.values, c.eta) + c.delta
    return np.abs(raw - c.values) <= slack

_DOC = """Singular triplets by ``scipy.sparse.linalg.svds(solver={solver!r})``.

    ``which="largest"`` uses ``svds(which="LM")``, ``"smallest"`` ``svds(which="SM")``
    (``"both"`` runs both). ``tol`` is *our* certified relative tolerance used to label the
    result; ``peer_tol`` is passed to svds (default 0: machine precision). ``maxiter`` is
    passed to svds. Stopping rule: the peer's. Products are counted through
    :meth:`LinearOp.to_scipy` and include our ``2k`` certification products and, with
    ``probe=True`` (default), the probe that checks a converged σ_min (any ``k``) or top
    ``k ≥ 2`` for a value the peer missed (``info["probe"]``; see the module docstring).
    Pass ``probe=False`` to time the peer alone.
    """

def arpack_svds(
    A: Any,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-10,
    maxiter: int | None = None,
    seed: int = 0,
    *,
    device: Any = None,
    dtype: Any = None,
    peer_tol: float | None = None,
    probe: bool = True,
) -> SVDResult:
    return _svds(A, k, which, tol, maxiter, seed, "arpack", device, dtype, peer_tol, probe)

def propack_svds(
    A: Any,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-10,
    maxiter: int | None = None,
    seed: int = 0,
    *,
    device: Any = None,
    dtype: Any = None,
    peer_tol: float | None = None,
    probe: bool = True,
) -> SVDResult:
    return _svds(A, k, which, tol, maxiter, seed, "propack", device, dtype, peer_tol, probe)

def lobpcg_svds(
    A: Any,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-10,
    maxiter: int | None = None,
    seed: int = 0,
    *,
    device: Any = None,
    dtype: Any = None,
    peer_tol: float | None = None,
    probe: bool = True,
) -> SVDResult:
    return _svds(A, k, which, tol, maxiter, seed, "lobpcg", device, dtype, peer_tol, probe)

arpack_svds.__doc__ = _DOC.format(solver="arpack")

propack_svds.__doc__ = _DOC.format(solver="propack")

lobpcg_svds.__doc__ = _DOC.format(solver="lobpcg")
