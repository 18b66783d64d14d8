"""Benchmark: the exact PL constant μ = λ_min(J Jᵀ), structured closed form vs generic routes.

Workload: ``J = ∂ vec(MH(X)) / ∂(W_Q, W_K, W_V)`` of ``MultiHeadAttention(D, d, H)`` (softmax,
float64, per-head values) on ``synthetic_regression(N, n, D)``. Every route computes μ:

* ``structured``: :func:`spectral.pl_constant` — closed-form NTK Gram (Hadamard products of
  small Grams, :func:`spectral.diagnostics.structured.ntk_gram`) + ``eigh`` (m ≤ 256) or Cholesky+Lanczos
  (larger), certified on the Gram.
* ``jacrev_eigvalsh``: per-sample ``torch.func.jacrev`` under ``vmap`` → ``J`` →
  ``eigvalsh(J Jᵀ)`` (the issue's reference generic route). When the dense ``J`` would exceed
  ``DENSE_J_MAX`` (the large size: 6 GiB, 12 GiB with the copy) the same per-sample ``jacrev``
  blocks build ``J Jᵀ`` block-row by block-row (:meth:`JacobianOperator.gram`, at most
  ``CHUNK_BYTES`` of ``J`` alive) — ``variant`` says which.
* ``auto``: ``extreme_singular_values(JacobianOperator(...), which="min", method="auto")``,
  ``μ = σ_min²`` (dense / Gram route / GKL as the spectral issue's dispatcher picks; GKL on
  the large size, capped by ``ROUTE_TIMEOUT``: a capped route reports a lower bound).
* ``auto_samples``: the same with the opt-in ``sample_dim=0`` per-sample structure
  (``auto->gram[per-sample]``: chunked Gram + ``eigh`` + certification on ``J``).
* ``gkl`` (only with ``--routes``): ``method="gkl"``, ``maxiter`` capped.

Each route runs in its own fresh subprocess: one untimed warm-up call on the small size, then
``REPEATS`` timed calls (median reported); peak memory is that subprocess's ``ru_maxrss``
(includes the ~0.3 GiB of the Python + torch baseline). A route whose estimated footprint
exceeds 10 GiB is skipped and says so. Truth: ``jacrev_eigvalsh`` where it runs, else the
certified ``structured`` value; ``rel_err_mu`` is against it. Ratios are
``seconds(route) / seconds(structured)`` of the same run. Prints one JSON row per
(size, route) and writes ``--out``.

Usage: ``python benchmarks/structured_vs_generic.py [--sizes small,medium,large] [--out FILE]``.
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
ROUTES = ["structured", "jacrev_eigvalsh", "auto", "auto_samples"]
REPEATS = {"small": 5, "medium": 3, "large": 1}
GIB = 1024**3
MEM_LIMIT = 10 * GIB
DENSE_J_MAX = 2 * GIB
CHUNK_BYTES = 2 * GIB
GKL_MAXITER = 400
#: wall-clock caps (s) per (size, route); a capped route reports ``seconds_lower_bound``.
ROUTE_TIMEOUT = {("large", "auto"): 300.0}


def footprint(route: str, size: str) -> tuple[int, str]:
    c = SIZES[size]
    m = c["N"] * c["n"]
    p = 3 * c["H"] * c["D"] * c["d"]
    if route == "structured":
        return 5 * m * m * 8, "a few m×m Gram buffers"
    if route == "jacrev_eigvalsh":
        if m * p * 8 > DENSE_J_MAX:
            return CHUNK_BYTES + 2 * m * m * 8, "chunked J blocks + J Jᵀ"
        return 2 * m * p * 8 + m * m * 8, "dense J (m×p) twice (vmap output + cat) and J Jᵀ"
    if route == "auto_samples":
        return min(2 * m * p * 8, 4 * GIB) + 3 * m * m * 8, "J blocks (≤ 4 GiB) + Gram + eigenvectors"
    if route == "auto":
        if m * p <= 4_000_000 or m <= 4096:
            return 2 * m * p * 8, "materialised tall factor Jᵀ (m×p)"
        return 64 * p * 8, "GKL bases"
    return (GKL_MAXITER + 64) * (m + p) * 8, "GKL bases"


def build(size: str):
    import torch

    from attncond.models import MultiHeadAttention, synthetic_regression

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    c = SIZES[size]
    model = MultiHeadAttention(c["D"], c["d"], c["H"], kernel="softmax", seed=0)
    X = synthetic_regression(c["N"], c["n"], c["D"], seed=0).X
    return model, X


def run_route(route: str, size: str) -> dict:
    import torch

    from attncond.spectral.diagnostics import pl_constant
    from attncond.spectral.estimate import extreme_singular_values
    from attncond.spectral.operators.autodiff import JacobianOperator

    model, X = build(size)
    params = model.params()
    if route == "structured":
        pl = pl_constant(model, X)
        return {"mu": pl.mu, "mu_interval": list(pl.mu_interval), "eig_method": pl.eig_method,
                "gram_route": pl.route}

    def fn(p, x):
        return model.functional(p, x)

    if route == "jacrev_eigvalsh":
        m = X.shape[0] * X.shape[1] * model.d_out
        n_par = sum(v.numel() for v in params.values())
        if m * n_par * 8 <= DENSE_J_MAX:
            def f(p, x):
                return model.functional(p, x.unsqueeze(0)).reshape(-1)

            Jd = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, X)
            J = torch.cat([Jd[k].reshape(m, -1) for k in params], 1)
            del Jd
            G = J @ J.T
            variant = "dense J"
        else:
            op = JacobianOperator(fn, params, inputs=(X,), sample_dim=0)
            G = op.gram("outer", max_bytes=CHUNK_BYTES)
            variant = f"chunked Gram (per-sample jacrev blocks of <= {CHUNK_BYTES / GIB:.0f} GiB of J)"
        lam = torch.linalg.eigvalsh(G)
        return {"mu": float(lam[0]), "variant": variant}
    if route == "auto_samples":
        op = JacobianOperator(fn, params, inputs=(X,), sample_dim=0)
    else:
        op = JacobianOperator(lambda p: model.functional(p, X), params)
    method = "gkl" if route == "gkl" else "auto"
    est = extreme_singular_values(op, which="min", method=method,
                                  maxiter=GKL_MAXITER if method == "gkl" else None)
    return {"mu": est.sigma_min**2, "method": est.method, "converged": est.converged, "matvecs": est.matvecs,
            "sigma_min_interval": list(est.sigma_min_interval)}


def worker(route: str, size: str, repeats: int) -> None:
    run_route(route, "small")  # warm-up (lazy imports, allocator), not timed
    times, out = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run_route(route, size)
        times.append(time.perf_counter() - t0)
    out.update(seconds=statistics.median(times), times=times,
               peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,medium,large")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per route (subprocess)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/structured_vs_generic.json"))
    ap.add_argument("--worker", nargs=3, metavar=("ROUTE", "SIZE", "REPEATS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]))
        return
    rows = []
    for size in a.sizes.split(","):
        res: dict[str, dict] = {}
        for route in a.routes.split(","):
            need, what = footprint(route, size)
            row = {"size": size, **SIZES[size], "route": route}
            if need > MEM_LIMIT:
                res[route] = {**row, "skipped": f"estimated {need / GIB:.1f} GiB ({what}) > 10 GiB"}
                print(json.dumps(res[route]), flush=True)
                continue
            cmd = [sys.executable, __file__, "--worker", route, size, str(REPEATS[size])]
            cap = min(a.timeout, ROUTE_TIMEOUT.get((size, route), a.timeout))
            try:
                cp = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, cwd=ROOT)
                line = [ln for ln in cp.stdout.splitlines() if ln.startswith("RESULT ")]
                if cp.returncode != 0 or not line:
                    row["error"] = (cp.stderr or cp.stdout)[-800:]
                else:
                    row.update(json.loads(line[-1][7:]))
            except subprocess.TimeoutExpired:
                row["error"] = f"timed out after {cap:.0f} s (including a small-size warm-up)"
                row["seconds_lower_bound"] = cap
            res[route] = row
            print(f"# {size} {route}: {row.get('seconds', row.get('error', '?'))}", file=sys.stderr, flush=True)
        truth_route = "jacrev_eigvalsh" if "mu" in res.get("jacrev_eigvalsh", {}) else "structured"
        truth = res.get(truth_route, {}).get("mu")
        base = res.get("structured", {}).get("seconds")
        for row in res.values():
            if "mu" in row and truth:
                row["rel_err_mu"] = abs(row["mu"] - truth) / abs(truth)
                row["truth"] = truth_route
            if "seconds" in row and base:
                row["ratio_vs_structured"] = row["seconds"] / base
            elif "seconds_lower_bound" in row and base:
                row["ratio_vs_structured_lower_bound"] = row["seconds_lower_bound"] / base
            if "skipped" not in row:
                print(json.dumps(row), flush=True)
            rows.append(row)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "threads": os.environ.get("BENCH_THREADS", "2"),
                                       "python": sys.version.split()[0]}, indent=2))


if __name__ == "__main__":
    main()
