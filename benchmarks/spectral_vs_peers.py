"""Benchmark: σ_max, σ_min, κ of the [S24] attention Jacobian, spectral vs peers.

Workload: ``J = ∂ vec(MH(X)) / ∂(W_Q, W_K, W_V)`` of ``MultiHeadAttention(D, d, H)`` (softmax,
float64, per-head values) on ``synthetic_regression(N, n, D)``; every matrix-free method is
handed the same ``torch.func`` operator (:class:`spectral.JacobianOperator`, or its
``to_scipy()``); curvlinops gets its own ``JacobianLinearOperator`` of the same model.
Each method runs in its own subprocess (honest peak RSS via ``ru_maxrss``) with a time cap.

Routes:

* ``auto``: ``extreme_singular_values(J)`` with ``J`` built with ``sample_dim=0`` (the
  opt-in per-sample structure); ``auto_plain``: the same without the opt-in.
* ``gkl``: pure Golub–Kahan–Lanczos (products only), both ends; ``gkl_min``: the same for
  σ_min only (``which="smallest"``), the row compared with PRIMME's σ_min products.
* ``dense_vmap_eigvalsh`` (*the dense route* of issue 3): per-sample ``jacrev`` under
  ``vmap`` → ``J`` → ``eigvalsh(J Jᵀ)``, ``σ = sqrt(λ)`` (uncertified; loses ``eps·κ²``).
* ``dense_vmap_syrk_eigvalsh``: the same dense route with ``J Jᵀ`` by BLAS ``syrk``
  (:func:`spectral.operators.gram.gram_matrix`, half the flops of ``J @ J.T``; ``auto`` uses it), so
  that ``auto`` is also compared with the strongest dense route, not only the issue's.
* ``dense_jacrev_svdvals``: ``torch.func.jacrev`` of the whole batch + ``svdvals``.
* peers: scipy ``svds`` (arpack, propack, lobpcg), PRIMME, curvlinops + ARPACK, and the
  randomized σ_max-only methods (sklearn, ``torch.svd_lowrank``) on the materialised ``J``.

Truth: dense ``svdvals`` of the per-sample ``J`` (small, medium); on ``large`` the certified
``auto`` result (Gram route, certified intervals), checked once against the dense route.

Routes whose estimated footprint exceeds ``MEM_LIMIT`` or the memory available when they
start (``MemAvailable`` less a 2 GiB margin; the machine is shared) are not run and are
marked ``"not run (memory)"``.

Usage: ``python benchmarks/spectral_vs_peers.py [--sizes small,medium,large] [--quick]
[--methods a,b] [--cap S] [--merge]``. Prints one JSON row per (size, method) and writes
``benchmarks/results/spectral_vs_peers.json`` (``--merge`` keeps the rows of other sizes
already in that file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SIZES = {
    "small": dict(N=8, n=8, D=16, d=16, H=2),
    "medium": dict(N=64, n=16, D=32, d=32, H=4),
    "large": dict(N=256, n=32, D=64, d=64, H=8),
}
METHODS = [
    "auto", "auto_plain", "gkl", "gkl_min", "dense_vmap_eigvalsh", "dense_vmap_syrk_eigvalsh",
    "dense_jacrev_svdvals", "arpack", "propack",
    "lobpcg", "primme", "curvlinops_arpack", "sklearn_randomized", "torch_svd_lowrank",
]
MATRIX_FREE = {"gkl", "gkl_min", "arpack", "propack", "lobpcg", "primme", "curvlinops_arpack"}
GIB = 1024**3
MEM_LIMIT = 12 * GIB  # routes whose estimated footprint exceeds this are skipped


def footprint(method: str, size: str) -> tuple[int, str]:
    """Rough peak bytes of a route (float64), and what dominates it."""
    c = SIZES[size]
    m = c["N"] * c["n"]
    p = 3 * c["H"] * c["D"] * c["d"]
    jac = m * p * 8
    if method in ("dense_jacrev_svdvals",):
        return 2 * jac + min(m, p) ** 2 * 8, "J twice (jacrev + svdvals workspace)"
    if method in ("dense_vmap_eigvalsh", "dense_vmap_syrk_eigvalsh", "sklearn_randomized", "torch_svd_lowrank"):
        return jac + m * m * 8, "dense J"
    if method == "auto" and size == "large":
        return 4 * GIB + m * m * 8 * 2, "Gram route: 4 GiB of Jacobian rows + J Jᵀ and its eigh"
    return 0, ""


def mem_available() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (``0`` if unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def build(size: str):
    import torch

    from attncond.models.attention import MultiHeadAttention
    from attncond.models.data import synthetic_regression
    from attncond.spectral import JacobianOperator

    cfg = SIZES[size]
    model = MultiHeadAttention(cfg["D"], cfg["d"], cfg["H"], kernel="softmax",
                               value_param="per_head", d_out=1,
                               trainable=("W_Q", "W_K", "W_V"), dtype=torch.float64, seed=0)
    data = synthetic_regression(cfg["N"], cfg["n"], cfg["D"], d_out=1, seed=0)
    params = model.params()
    J = JacobianOperator(lambda p, X: model.functional(p, X), params, inputs=(data.X,), sample_dim=0)
    return model, data, params, J


def plain(built: tuple):
    """The same Jacobian without the per-sample opt-in (batched VJPs through the batch)."""
    from attncond.spectral import JacobianOperator

    model, data, params, _ = built
    return JacobianOperator(lambda p: model.functional(p, data.X), params)


def run_method(method: str, built: tuple) -> dict:
    """Run one method once on a built workload; returns values and products."""
    import numpy as np
    import torch

    import attncond.spectral as spectral

    model, data, params, J = built
    J.reset_count()
    out: dict = {"sigma_max": None, "sigma_min": None, "converged": None}
    if method == "gkl_min":
        r = spectral.golub_kahan_lanczos(J, which="smallest")
        out.update(sigma_min=r.sigma_min, converged=r.converged, reason=r.reason,
                   certified_interval_min=[float(r.smallest.lower[0]), float(r.smallest.upper[0])])
        out["matvecs"] = J.n_products
        return out
    if method in ("auto", "auto_plain", "gkl"):
        op = plain(built) if method == "auto_plain" else J
        e = spectral.extreme_singular_values(op, method="gkl" if method == "gkl" else "auto")
        out.update(sigma_max=e.sigma_max, sigma_min=e.sigma_min, converged=e.converged,
                   method_used=e.method, certified_interval_min=list(e.sigma_min_interval),
                   certified_interval_max=list(e.sigma_max_interval), reason=e.reason)
        out["matvecs"] = op.n_products
        return out
    elif method in ("arpack", "propack", "lobpcg"):
        fn = getattr(spectral, f"{method}_svds")
        r = fn(J, which="both")
        out.update(
            sigma_max=None if r.largest is None else r.sigma_max,
            sigma_min=None if r.smallest is None else r.sigma_min,
            converged=r.converged, reason=r.reason, raw=r.info.get("raw_values"),
        )
    elif method == "dense_vmap_eigvalsh":
        Jd = J.jacobian_matrix()  # per-sample jacrev under vmap (not counted as products)
        lam = torch.linalg.eigvalsh(Jd @ Jd.T if Jd.shape[0] <= Jd.shape[1] else Jd.T @ Jd)
        out.update(sigma_max=float(lam[-1].sqrt()), sigma_min=float(lam[0].clamp_min(0).sqrt()),
                   converged=None, note="sigma = sqrt(eigvalsh(J J^T)); not certified")
    elif method == "dense_vmap_syrk_eigvalsh":
        from attncond.spectral.operators.gram import gram_matrix

        Jd = J.jacobian_matrix()
        lam = torch.linalg.eigvalsh(gram_matrix(Jd, "outer" if Jd.shape[0] <= Jd.shape[1] else "inner"))
        out.update(sigma_max=float(lam[-1].sqrt()), sigma_min=float(lam[0].clamp_min(0).sqrt()),
                   converged=None, note="sigma = sqrt(eigvalsh(syrk J J^T)); not certified")
    elif method == "dense_jacrev_svdvals":
        def f(p):
            return model.functional(p, data.X).reshape(-1)

        jac = torch.func.jacrev(f)(params)
        Jd = torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in params], dim=1)
        del jac
        s = torch.linalg.svdvals(Jd)
        out.update(sigma_max=float(s[0]), sigma_min=float(s[-1]), converged=None)
    elif method == "primme":
        import primme

        L = J.to_scipy()
        lm = primme.svds(L, k=1, which="LM", tol=1e-10, return_singular_vectors=False)
        n_lm = J.n_products
        sm = primme.svds(L, k=1, which="SM", tol=1e-10, return_singular_vectors=False)
        out.update(sigma_max=float(np.max(lm)), sigma_min=float(np.min(sm)), converged=None,
                   matvecs_max=n_lm, matvecs_min=J.n_products - n_lm,
                   note="primme.svds(tol=1e-10): PRIMME's tolerance is relative to ||A||")
    elif method == "sklearn_randomized":
        from sklearn.utils.extmath import randomized_svd

        # sklearn rejects scipy LinearOperators (it indexes/reshapes the matrix): it gets
        # the materialised J (per-sample jacrev, not counted as products)
        _, s, _ = randomized_svd(J.jacobian_matrix().numpy(), 1, n_oversamples=10, n_iter=4,
                                 random_state=0)
        out.update(sigma_max=float(s[0]), converged=None,
                   note="sigma_max only; needs the materialised J (rejects LinearOperator)")
    elif method == "torch_svd_lowrank":
        Jd = J.jacobian_matrix()  # torch.svd_lowrank needs a tensor: materialised
        _, s, _ = torch.svd_lowrank(Jd, q=11, niter=4)
        out.update(sigma_max=float(s[0]), converged=None,
                   note="sigma_max only; needs the materialised J")
    elif method == "curvlinops_arpack":
        import scipy.sparse.linalg as spla
        from curvlinops import JacobianLinearOperator

        ps = [getattr(model, k) for k in params]  # nn.Parameters W_Q, W_K, W_V
        count = [0]
        CJ = JacobianLinearOperator(model, ps, [(data.X, data.y)], check_deterministic=False)
        L = CJ.to_scipy(dtype=np.float64)
        mv, rmv = L.matvec, L.rmatvec

        def cmv(x):
            count[0] += 1
            return mv(x)

        def crmv(y):
            count[0] += 1
            return rmv(y)

        L2 = spla.LinearOperator(L.shape, matvec=cmv, rmatvec=crmv, dtype=np.float64)
        lm = spla.svds(L2, k=1, which="LM", solver="arpack", tol=1e-10, return_singular_vectors=False,
                       random_state=0)
        sm = spla.svds(L2, k=1, which="SM", solver="arpack", tol=1e-10, return_singular_vectors=False,
                       random_state=0)
        out.update(sigma_max=float(np.max(lm)), sigma_min=float(np.min(sm)), converged=None,
                   note="curvlinops JacobianLinearOperator.to_scipy() + scipy svds(arpack)")
        out["matvecs"] = count[0]
        return out
    else:
        raise ValueError(method)
    out["matvecs"] = J.n_products
    return out


def worker(method: str, size: str, repeats: int, budget: float) -> None:
    """Run ``method`` up to ``repeats`` times while the next run is expected to fit ``budget`` s."""
    import torch

    torch.set_num_threads(2)
    times, res = [], None
    while len(times) < repeats and (not times or sum(times) + times[-1] <= budget):
        built = build(size)  # model, data and the operator (vjp at the linearisation point)
        t0 = time.perf_counter()
        res = run_method(method, built)
        times.append(time.perf_counter() - t0)
        print("RUN " + json.dumps({"seconds": times[-1]}), flush=True)
    res["seconds"] = statistics.median(times)
    res["seconds_all"] = times
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("ROW " + json.dumps(res), flush=True)


def truth(size: str) -> dict:
    """Dense ``svdvals`` of the per-sample Jacobian (small, medium)."""
    import torch

    _, _, _, J = build(size)
    s = torch.linalg.svdvals(J.jacobian_matrix())
    return {"sigma_max": float(s[0]), "sigma_min": float(s[-1]), "source": "dense svdvals"}


def rel(a, b):
    if a is None or b is None:
        return None
    return abs(a - b) / abs(b) if b != 0 else None


def run_row(method: str, size: str, repeats: int, cap: float, env: dict) -> dict:
    row: dict = {"size": size, **SIZES[size], "method": method}
    need, what = footprint(method, size)
    avail = mem_available() - 2 * GIB
    if need > MEM_LIMIT or need > avail:
        row["skipped"] = (f"not run (memory): estimated footprint {need / GIB:.1f} GiB ({what}); limit "
                          f"{MEM_LIMIT / GIB:.0f} GiB, available now {avail / GIB:.1f} GiB")
        return row
    try:
        p = subprocess.run(
            [sys.executable, __file__, "--worker", method, size, "--repeats", str(repeats),
             "--cap", str(cap)],
            capture_output=True, text=True, timeout=cap, env=env,
        )
        line = [x for x in p.stdout.splitlines() if x.startswith("ROW ")]
        if not line:
            err = (p.stderr.strip().splitlines() or ["no output"])[-1]
            row["skipped"] = err[:300]
        else:
            row.update(json.loads(line[-1][4:]))
    except subprocess.TimeoutExpired as exc:
        done = [json.loads(x[4:])["seconds"] for x in (exc.stdout or b"").decode().splitlines()
                if x.startswith("RUN ")]
        row["skipped"] = f"time cap {cap:.0f} s exceeded" + (f" (completed runs: {done})" if done else "")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,medium")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--quick", action="store_true", help="one repeat, 60 s cap per route")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cap", type=float, default=None,
                    help="wall-clock cap per route and size in s (default: small 60, medium 150, "
                         "large 420)")
    ap.add_argument("--peer-cap", type=float, default=None,
                    help="cap for every route other than auto and the dense routes (default: --cap)")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "SIZE"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spectral_vs_peers.json"))
    ap.add_argument("--merge", action="store_true", help="keep rows of other sizes already in --out")
    a = ap.parse_args(argv)
    repeats = 1 if a.quick else a.repeats
    caps = {"small": 60.0, "medium": 150.0, "large": 420.0}
    if a.worker:
        cap = a.cap if a.cap is not None else caps[a.worker[1]]
        worker(a.worker[0], a.worker[1], repeats, budget=0.5 * cap)
        return 0
    rows: list = []
    out = Path(a.out)
    sizes = a.sizes.split(",")
    if a.merge and out.exists():
        rows = [r for r in json.loads(out.read_text()) if r.get("size") not in sizes]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    methods = a.methods.split(",")
    for size in sizes:
        cap = a.cap if a.cap is not None else (60.0 if a.quick else caps[size])
        ref = truth(size) if size != "large" else None
        order = (["auto"] + [m for m in methods if m != "auto"]) if "auto" in methods else methods
        own = {"auto", "dense_vmap_eigvalsh", "dense_vmap_syrk_eigvalsh", "dense_jacrev_svdvals"}
        size_rows = [
            run_row(method, size, repeats, cap if method in own or a.peer_cap is None else a.peer_cap, env)
            for method in order
        ]
        auto = next((r for r in size_rows if r["method"] == "auto" and "seconds" in r), None)
        if ref is None:
            if auto is None or not auto.get("converged"):
                ref = {"sigma_max": None, "sigma_min": None, "source": "none (auto did not certify)"}
            else:
                ref = {"sigma_max": auto["sigma_max"], "sigma_min": auto["sigma_min"],
                       "source": f"{auto['method_used']} (certified intervals: sigma_max in "
                                 f"{auto['certified_interval_max']}, sigma_min in "
                                 f"{auto['certified_interval_min']})"}
        k_true = (ref["sigma_max"] / ref["sigma_min"]) if ref["sigma_min"] else None
        for row in size_rows:
            if "seconds" in row:
                row["rel_err_sigma_max"] = rel(row.get("sigma_max"), ref["sigma_max"])
                row["rel_err_sigma_min"] = rel(row.get("sigma_min"), ref["sigma_min"])
                if row.get("sigma_max") and row.get("sigma_min") and k_true:
                    row["rel_err_cond"] = rel(row["sigma_max"] / row["sigma_min"], k_true)
            row["truth"] = ref
            print(json.dumps(row), flush=True)
        peers = [
            r for r in size_rows
            if r["method"] in MATRIX_FREE - {"gkl", "gkl_min"} and "seconds" in r
            and r.get("rel_err_sigma_min") is not None and r["rel_err_sigma_min"] <= 1e-8
            and r.get("rel_err_sigma_max") is not None and r["rel_err_sigma_max"] <= 1e-8
        ]
        dense = next((r for r in size_rows if r["method"] == "dense_vmap_eigvalsh" and "seconds" in r),
                     None)
        summary: dict = {"size": size, "method": "summary"}
        if auto and peers:
            best = min(peers, key=lambda r: r["seconds"])
            summary["fastest_matrix_free_peer"] = best["method"]
            summary["speedup_auto_vs_fastest_matrix_free"] = best["seconds"] / auto["seconds"]
        else:
            summary["fastest_matrix_free_peer"] = None
            summary["note"] = ("no matrix-free peer reached rel. error 1e-8 on sigma_min and sigma_max "
                               "within its time cap")
        if auto and dense:
            summary["speedup_auto_vs_dense_route"] = dense["seconds"] / auto["seconds"]
            summary["memory_ratio_auto_vs_dense_route"] = auto["peak_rss_mib"] / dense["peak_rss_mib"]
        dsyrk = next((r for r in size_rows if r["method"] == "dense_vmap_syrk_eigvalsh" and "seconds" in r),
                     None)
        if auto and dsyrk:
            summary["speedup_auto_vs_dense_syrk_route"] = dsyrk["seconds"] / auto["seconds"]
        if auto and dense and auto.get("converged"):
            summary["auto_not_slower_than_dense"] = auto["seconds"] <= dense["seconds"]
            summary["auto_memory_below_dense"] = auto["peak_rss_mib"] < dense["peak_rss_mib"]
        if auto:
            summary["auto_peak_rss_gib"] = auto["peak_rss_mib"] / 1024.0
        gkl = next((r for r in size_rows if r["method"] == "gkl" and "matvecs" in r), None)
        gmin = next((r for r in size_rows if r["method"] == "gkl_min" and "matvecs" in r), None)
        primme_row = next((r for r in size_rows if r["method"] == "primme" and "matvecs" in r), None)
        if gkl:
            summary["gkl_products_both_ends"] = gkl["matvecs"]
        if gmin:
            summary["gkl_products_sigma_min"] = gmin["matvecs"]
            summary["gkl_sigma_min_converged"] = gmin.get("converged")
        if primme_row:
            summary["primme_products_both_ends"] = primme_row["matvecs"]
            summary["primme_products_sigma_min"] = primme_row.get("matvecs_min")
            if gmin and primme_row.get("matvecs_min"):
                summary["gkl_over_primme_products_sigma_min"] = gmin["matvecs"] / primme_row["matvecs_min"]
        print(json.dumps(summary), flush=True)
        rows += size_rows + [summary]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
