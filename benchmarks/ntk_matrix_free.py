"""Benchmark: the exact PL constant μ = λ_min(J Jᵀ) of the [S24] model without forming J Jᵀ.

Workload: ``J = ∂ vec(MH(X))/∂(W_Q, W_K, W_V)`` of ``MultiHeadAttention(D, d, H)`` (softmax,
float64, per-head values, ``d_out = 1``) on ``synthetic_regression(N, n, D)``. Sizes: ``medium``
(m = 1,024), ``mid`` (m = 4,096, p = 98,304; the auto crossover), ``large`` (m = 8,192,
p = 98,304) and ``xl`` (N = 1,024, n = 32, D = d = 64, H = 8:
m = 32,768, p = 98,304; the Gram alone is 8.6 GB).

Routes (each in its own subprocess; peak memory is its ``ru_maxrss``, which includes the
≈0.3 GiB Python + torch baseline):

* ``dense_gram``: :func:`spectral.diagnostics.pl_constant` with the closed-form Gram
  (``eig_method="cholesky-lanczos"``: ``ntk_gram`` + Cholesky/Lanczos, at every size it fits);
  on ``xl`` not run (an m×m Gram is 8.6 GB > the 4 GiB budget), its time *estimated* from the
  Cholesky rate measured on ``large`` (``m³/3`` flops) plus the Gram formation scaled by ``m²``;
* ``matrix_free``: ``pl_constant(eig_method="matrix-free")``: thick-restart Lanczos with full
  reorthogonalisation on the implicit Gram ``G v = J(Jᵀv)``, the products those of
  :class:`spectral.diagnostics.attention_jacobian.AttentionJacobian` (closed form, no m×m matrix),
  certified on ``G`` (Bauer–Fike, as the dense-Gram route);
* ``matrix_free_preconditioned``: ``pl_constant(eig_method="matrix-free-preconditioned")``: GKD on
  ``J`` preconditioned by :class:`spectral.diagnostics.gram_preconditioner.AttentionGramPreconditioner`
  (block-Jacobi on the logit side, Woodbury on the value side) for μ, GKL for λ_max; certified on
  ``J`` (its build time is included);
* ``preconditioned_mu``: μ alone, like ``primme_gram``: ``golub_kahan_davidson(J, which="smallest",
  preconditioner=AttentionGramPreconditioner(J))`` (build included), without the GKL run for
  ``λ_max`` that ``pl_constant`` adds;
* ``primme``: ``primme.svds(which="SM", k=1)`` on the *same* closed-form products (a scipy
  ``LinearOperator`` over ``AttentionJacobian``), ``tol = 1e-10`` relative to ``‖J‖``;
* ``primme_gram``: ``primme.eigsh(which="SA", k=1)`` (PRIMME's default dynamic GD+k/JDQMR) on the
  same implicit Gram ``J(Jᵀv)``, ``tol = 1e-10`` relative to ``‖G‖`` — the like-for-like peer.

* ``spectrum`` (where the Gram fits): the dense evidence of what the preconditioner does — the
  bottom eigenvalues and κ of ``G``, of its logit side ``G − G_V`` and of ``P^{-1/2} G P^{-1/2}``.

``xl_proxy`` (N, n, D, d, H = 256, 32, 32, 32, 8; m = 8,192, p = 24,576) has XL's shape where it
matters: ``m/p = 1/3`` and, for the softmax logits, which see ``W_Q, W_K`` only through
``A_h = W^Q_h W^{K}_hᵀ`` (:func:`attncond.models.jacobian_rank_bound`), ``H·D² = m`` exactly at both
sizes, so ``J`` is nearly square in its effective parameters (``rank_bound``: 8,448 against
m = 8,192 at the proxy, 33,280 against 32,768 at XL; 4× m at medium and large). Every row carries
``rank_bound``.

Earlier results of ``matrix_free`` with GKD on ``J`` (before the Lanczos-on-G route) are kept
under the route name ``matrix_free_gkd`` where present.

``tol`` (relative, on μ) is ``1e-8``, the issue's target. ``rel_err_mu`` is against the
dense-Gram μ where it runs, else against the matrix-free certified value (then
``rel_err_mu`` is ``null``). Ratios are same-run ``seconds(peer)/seconds(matrix_free)`` and
products ``primme/matrix_free``.

Usage: ``python benchmarks/ntk_matrix_free.py [--sizes medium,large,xl] [--routes ...]
[--cap S] [--maxiter STEPS] [--out FILE]``; prints one JSON row per (size, route), writes ``--out``
(merging rows of other (size, route) pairs already there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SIZES = {
    "medium": dict(N=64, n=16, D=32, d=32, H=4),
    "mid": dict(N=128, n=32, D=64, d=64, H=8),
    "large": dict(N=256, n=32, D=64, d=64, H=8),
    "xl": dict(N=1024, n=32, D=64, d=64, H=8),
    "xl_proxy": dict(N=256, n=32, D=32, d=32, H=8),
}
ROUTES = ["dense_gram", "matrix_free", "matrix_free_preconditioned", "preconditioned_mu", "primme",
          "primme_gram", "spectrum"]
TOL = 1e-8
PRIMME_TOL = 1e-10
GIB = 1024**3
OUT = ROOT / "benchmarks" / "results" / "ntk_matrix_free.json"


def _setup(size: str):
    from attncond.models import MultiHeadAttention, synthetic_regression

    c = SIZES[size]
    mh = MultiHeadAttention(c["D"], c["d"], c["H"], seed=0)
    X = synthetic_regression(c["N"], c["n"], c["D"], seed=0).X
    return mh, X


def _route(size: str, route: str, maxiter: int | None = None) -> dict:
    """One route in this process (the child side); ``maxiter`` caps the matrix-free solves' steps."""
    import torch

    from attncond.spectral.diagnostics import pl_constant
    from attncond.spectral.diagnostics.attention_jacobian import AttentionJacobian

    mh, X = _setup(size)
    t0 = time.perf_counter()
    if route in ("dense_gram", "matrix_free", "matrix_free_preconditioned"):
        how = {"dense_gram": "cholesky-lanczos", "matrix_free": "matrix-free",
               "matrix_free_preconditioned": "matrix-free-preconditioned"}[route]
        pl = pl_constant(mh, X, eig_method=how, tol=TOL, maxiter=maxiter)
        row = {"mu": pl.mu, "mu_interval": list(pl.mu_interval), "lambda_max": pl.lambda_max,
               "converged": bool(math.isfinite(pl.mu) and not any("not converged" in n for n in pl.notes)),
               "route_used": pl.route, "eig_method": pl.eig_method, "notes": list(pl.notes)}
        if route == "dense_gram":  # the Cholesky rate, for the xl estimate
            from attncond.spectral.diagnostics.structured import ntk_gram

            tg = time.perf_counter()
            G = ntk_gram(mh, X).gram
            row["gram_seconds"] = time.perf_counter() - tg
            tc = time.perf_counter()
            torch.linalg.cholesky(G)
            row["cholesky_seconds"] = time.perf_counter() - tc
    elif route == "preconditioned_mu":
        from attncond.spectral.diagnostics import AttentionGramPreconditioner
        from attncond.spectral.solvers import golub_kahan_davidson

        J = AttentionJacobian(mh, X)
        res = golub_kahan_davidson(J, which="smallest", tol=TOL / 2, maxiter=maxiter,
                                   preconditioner=AttentionGramPreconditioner(J))
        sm = res.smallest
        row = {"mu": float(sm.values[0]) ** 2, "converged": bool(res.converged), "matvecs": int(res.matvecs),
               "mu_interval": [float(sm.lower[0]) ** 2, float(sm.upper[0]) ** 2]}
    elif route == "spectrum":
        from attncond.spectral.diagnostics import AttentionGramPreconditioner
        from attncond.spectral.diagnostics.structured import ntk_gram

        G = ntk_gram(mh, X).gram
        ev = torch.linalg.eigvalsh(G)
        evL = torch.linalg.eigvalsh(G - ntk_gram(mh, X, trainable=("W_V",)).gram)
        P = AttentionGramPreconditioner(AttentionJacobian(mh, X))
        Pi = P.matmat(torch.eye(G.shape[0], dtype=G.dtype))
        C = torch.linalg.cholesky((Pi + Pi.T) / 2)
        del Pi
        S = C.T @ G @ C
        del G, C
        es = torch.linalg.eigvalsh((S + S.T) / 2)
        row = {"gram_bottom": ev[:4].tolist(), "gram_top": float(ev[-1]), "kappa_gram": float(ev[-1] / ev[0]),
               "logit_side_bottom": evL[:4].tolist(), "preconditioned_bottom": es[:4].tolist(),
               "preconditioned_top": float(es[-1]), "kappa_preconditioned": float(es[-1] / es[0]),
               "preconditioner_rank": P.rank, "converged": True, "matvecs": None}
    elif route in ("primme", "primme_gram"):
        import numpy as np
        import primme
        import scipy.sparse.linalg as spla

        J = AttentionJacobian(mh, X)
        count = [0]

        def mm(x):
            x2 = np.ascontiguousarray(x, dtype=np.float64).reshape(J.shape[1], -1)
            count[0] += x2.shape[1]
            return J.matmat(torch.from_numpy(x2)).numpy()

        def rmm(y):
            y2 = np.ascontiguousarray(y, dtype=np.float64).reshape(J.shape[0], -1)
            count[0] += y2.shape[1]
            return J.rmatmat(torch.from_numpy(y2)).numpy()

        if route == "primme":
            lin = spla.LinearOperator(J.shape, matvec=mm, rmatvec=rmm, matmat=mm, rmatmat=rmm, dtype=np.float64)
            s, stats = primme.svds(lin, 1, which="SM", tol=PRIMME_TOL, return_singular_vectors=False,
                                   return_stats=True, maxMatvecs=400_000)
            mu = float(s[0]) ** 2 if len(s) else math.nan
        else:  # PRIMME's symmetric eigensolver on the same implicit Gram G v = J(J^T v)
            def gv(v):
                return mm(rmm(v))

            m = J.shape[0]
            lin = spla.LinearOperator((m, m), matvec=gv, rmatvec=gv, matmat=gv, rmatmat=gv, dtype=np.float64)
            s, stats = primme.eigsh(lin, 1, which="SA", tol=PRIMME_TOL, return_eigenvectors=False,
                                    return_stats=True, maxMatvecs=400_000)
            mu = float(s[0]) if len(s) else math.nan
        ok = math.isfinite(mu)
        row = {"mu": mu, "converged": ok, "matvecs": count[0],
               "note": f"primme rnorm {float(stats['rnorms'][0]):.3g} (tol {PRIMME_TOL:g} relative to ||A||)"
               if ok else "primme: nothing converged within maxMatvecs"}
    else:
        raise ValueError(f"unknown route {route!r}")
    row["seconds"] = time.perf_counter() - t0
    if route in ("dense_gram", "matrix_free", "matrix_free_preconditioned"):
        row["matvecs"] = pl.products
    row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def run(size: str, route: str, cap: float, maxiter: int | None = None) -> dict:
    c = SIZES[size]
    from attncond.models import MultiHeadAttention, jacobian_rank_bound

    rank_bound = jacobian_rank_bound(MultiHeadAttention(c["D"], c["d"], c["H"], seed=0)).bound
    base = {"size": size, **c, "m": c["N"] * c["n"], "p": 3 * c["H"] * c["D"] * c["d"],
            "rank_bound": rank_bound, "route": route, "maxiter": maxiter}
    if route in ("dense_gram", "spectrum") and base["m"] ** 2 * 8 > 2 * GIB:
        return {**base, "status": "not run (an m x m Gram of "
                f"{base['m'] ** 2 * 8 / 1e9:.1f} GB exceeds the 4 GiB budget); see estimate"}
    cmd = [sys.executable, __file__, "--child", size, route]
    cmd += [] if maxiter is None else ["--maxiter", str(maxiter)]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, env={**os.environ}, check=False)
    except subprocess.TimeoutExpired:
        return {**base, "status": f"capped at {cap:.0f} s", "seconds_lower_bound": time.perf_counter() - t}
    if out.returncode != 0:
        return {**base, "status": f"failed: {out.stderr.strip().splitlines()[-1:]}"}
    return {**base, "status": "ok", **json.loads(out.stdout.strip().splitlines()[-1])}


def summarise(rows: list[dict]) -> dict:
    by = {(r["size"], r["route"]): r for r in rows}
    out: dict = {}
    for size in SIZES:
        mf, dg = by.get((size, "matrix_free")), by.get((size, "dense_gram"))
        s: dict = {}
        sp = by.get((size, "spectrum"))
        if sp and sp.get("status") == "ok":
            s.update({k: sp[k] for k in ("rank_bound", "kappa_gram", "kappa_preconditioned")})
        if mf and mf.get("status") == "ok":
            s.update({"matrix_free_seconds": mf["seconds"], "matrix_free_products": mf.get("matvecs"),
                      "matrix_free_peak_rss_gib": mf["peak_rss_gib"]})
        if mf and mf.get("status") == "ok" and dg and dg.get("status") == "ok":
            s["rel_err_mu_vs_dense_gram"] = abs(mf["mu"] - dg["mu"]) / dg["mu"]
            s["dense_gram_over_matrix_free_seconds"] = dg["seconds"] / mf["seconds"]
            s["dense_gram_truth_in_interval"] = mf["mu_interval"][0] <= dg["mu"] <= mf["mu_interval"][1]
        for peer in ("primme", "primme_gram"):
            pr = by.get((size, peer))
            if not (mf and mf.get("status") == "ok"):
                break
            if pr and pr.get("status") == "ok":
                s[f"{peer}_over_matrix_free_seconds"] = pr["seconds"] / mf["seconds"]
                s[f"{peer}_over_matrix_free_products"] = pr["matvecs"] / max(mf.get("matvecs") or 1, 1)
                s[f"{peer}_rel_diff_mu"] = abs(pr["mu"] - mf["mu"]) / mf["mu"]
            elif pr:
                s[peer] = pr.get("status")
                if "seconds_lower_bound" in pr:
                    s[f"{peer}_over_matrix_free_seconds_at_least"] = pr["seconds_lower_bound"] / mf["seconds"]
        pc = by.get((size, "matrix_free_preconditioned"))
        if pc and pc.get("status") == "ok":
            s["preconditioned_seconds"], s["preconditioned_products"] = pc["seconds"], pc.get("matvecs")
            s["preconditioned_peak_rss_gib"] = pc["peak_rss_gib"]
            if pc.get("matvecs"):
                s["preconditioned_seconds_per_product"] = pc["seconds"] / pc["matvecs"]
            s["preconditioned_converged"] = pc.get("converged")
            if dg and dg.get("status") == "ok" and pc.get("mu") is not None:
                s["preconditioned_rel_err_mu_vs_dense_gram"] = abs(pc["mu"] - dg["mu"]) / dg["mu"]
            if dg and dg.get("status") == "ok":
                s["preconditioned_truth_in_interval"] = pc["mu_interval"][0] <= dg["mu"] <= pc["mu_interval"][1]
            for peer in ("dense_gram", "matrix_free", "primme", "primme_gram"):
                pr = by.get((size, peer))
                if pr and pr.get("status") == "ok":
                    if peer == "dense_gram" or pc.get("converged"):
                        s[f"{peer}_over_preconditioned_seconds"] = pr["seconds"] / pc["seconds"]
                    if pr.get("matvecs"):
                        s[f"{peer}_over_preconditioned_products"] = (
                            pr["matvecs"] / max(pc.get("matvecs") or 1, 1))
        pm = by.get((size, "preconditioned_mu"))
        if pm and pm.get("status") == "ok":
            s["mu_only_seconds"], s["mu_only_products"] = pm["seconds"], pm.get("matvecs")
            s["mu_only_converged"] = pm.get("converged")
            if dg and dg.get("status") == "ok":
                s["mu_only_truth_in_interval"] = pm["mu_interval"][0] <= dg["mu"] <= pm["mu_interval"][1]
            for peer in ("primme", "primme_gram"):
                pr = by.get((size, peer))
                if pr and pr.get("status") == "ok" and pm.get("converged"):
                    s[f"{peer}_over_mu_only_seconds"] = pr["seconds"] / pm["seconds"]
        if s:
            out[size] = s
    big = by.get(("large", "dense_gram"))
    if big and big.get("status") == "ok":
        out.setdefault("xl", {})
        mL, mX = SIZES["large"]["N"] * 32, SIZES["xl"]["N"] * 32
        est = big["cholesky_seconds"] * (mX / mL) ** 3 + big["gram_seconds"] * (mX / mL) ** 2
        out["xl"]["dense_gram_estimate_seconds"] = est
        out["xl"]["dense_gram_estimate_basis"] = (
            "large's measured Cholesky time x (m_xl/m_large)^3 + its Gram formation x (m_xl/m_large)^2; "
            "needs 8.6 GB for G alone")
        if "matrix_free_seconds" in out["xl"]:
            out["xl"]["dense_gram_estimate_over_matrix_free"] = est / out["xl"]["matrix_free_seconds"]
    return out


def _finite(x):
    """Strict JSON: non-finite floats become ``None``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="medium,large,xl")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--cap", type=float, default=3600.0, help="wall-clock cap per route (s)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--maxiter", type=int, default=None,
                    help="step budget of each matrix-free solve (pl_constant's maxiter; default: the solvers')")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_finite(_route(*a.child, maxiter=a.maxiter)), allow_nan=False))
        return
    sizes = [s for s in a.sizes.split(",") if s]
    routes = [r for r in a.routes.split(",") if r]
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"--sizes: unknown size {s!r}; known: {', '.join(SIZES)}")
    for r in routes:
        if r not in ROUTES:
            raise SystemExit(f"--routes: unknown route {r!r}; known: {', '.join(ROUTES)}")
    if a.maxiter is not None and a.maxiter < 1:
        raise SystemExit(f"--maxiter: must be a positive integer, got {a.maxiter}")
    out = Path(a.out)
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    done = {(s, r) for s in sizes for r in routes}
    rows = [r for r in old if (r["size"], r["route"]) not in done]
    for s in sizes:
        for r in routes:
            row = run(s, r, a.cap, a.maxiter)
            row = _finite(row)
            print(json.dumps(row, allow_nan=False), flush=True)
            rows.append(row)
            out.write_text(json.dumps({"tol_mu": TOL, "primme_tol": PRIMME_TOL, "threads": os.cpu_count(),
                                       "rows": rows, "summary": summarise(rows)}, indent=1, allow_nan=False))
    print(json.dumps(summarise(rows), indent=1))


if __name__ == "__main__":
    main()
