"""Benchmark: ``diagnose`` on the user's own model (a 1-layer Hugging Face BERT) vs the dense route.

Workload (issue 13): ``BertModel`` with 1 layer, hidden 64, 4 heads, intermediate 256, random
weights, float64, inputs_embeds of shape (batch 8, seq 16, 64); ``J = ∂ vec(last_hidden_state) /
∂(query, key, value weights)``: ``m = 8192`` outputs, ``p = 12288`` parameters.

Routes, each in its own subprocess (peak RSS = ``ru_maxrss``), 1 thread:

* ``diagnose``: ``spectral.diagnose(models.adapt(bert, X, params=[…]))`` — every row (κ, σ's,
  μ, null-space dimension, smallest non-zero σ, per-head softmax-Jacobian/entropy/sparsity).
  ``J`` is built from per-sample ``jacrev`` blocks of at most ``J_BLOCK_BYTES`` and never held
  whole; one ``eigvalsh`` of the ``m×m`` Gram gives the spectrum.
* ``dense``: the user's route: ``torch.func.jacrev`` of the whole batch (``chunk_size=2048`` to
  bound memory on a shared machine) → ``J`` → ``J Jᵀ`` → ``numpy.linalg.eigvalsh``.
* ``curvlinops_arpack`` (if installed): curvlinops' ``JacobianLinearOperator`` and ARPACK
  ``eigsh`` on ``J Jᵀ`` for ``λ_max`` and ``λ_min`` (``which="SA"``), ``maxiter`` capped.

The JSON has each route's wall and CPU seconds (one thread, so CPU time is the robust measure on
a shared machine), the values, and ``ratio_to_diagnose = seconds(route) / seconds(diagnose)`` (and
the same for CPU time) of the same run.
Usage: ``python benchmarks/foreign_models.py [--out FILE] [--routes a,b]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CFG = dict(hidden=64, heads=4, seq=16, batch=8, intermediate=256)
PARAMS = ["*.query.weight", "*.key.weight", "*.value.weight"]
ROUTES = ["diagnose", "dense", "curvlinops_arpack"]
ARPACK_MAXITER = 100


def build():
    import torch
    import transformers as tr

    from attncond.models import adapt

    torch.manual_seed(0)
    cfg = tr.BertConfig(hidden_size=CFG["hidden"], num_attention_heads=CFG["heads"], num_hidden_layers=1,
                        intermediate_size=CFG["intermediate"], vocab_size=32,
                        max_position_embeddings=CFG["seq"])
    bert = tr.BertModel(cfg, add_pooling_layer=False).double()
    X = torch.randn(CFG["batch"], CFG["seq"], CFG["hidden"], dtype=torch.float64)
    return bert, X, adapt(bert, X, params=PARAMS)


def run_route(route: str) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    bert, X, a = build()
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {"route": route}
    if route == "diagnose":
        from attncond.spectral.diagnostics import diagnose

        d = diagnose(a)
        jc = d.foreign.jacobian
        out.update(mu=jc.mu, sigma_max=jc.sigma_max, null_dim=jc.null_dim,
                   sigma_min_nonzero=jc.sigma_min_nonzero, jacobian_route=jc.route, converged=jc.converged,
                   rows=len(d.rows))
    elif route == "dense":
        p = a.params()
        Jd = torch.func.jacrev(lambda q: a.functional(q, X), chunk_size=2048)(p)
        m = X.numel()
        J = torch.cat([Jd[k].reshape(m, -1) for k in p], 1).detach().numpy()
        del Jd
        lam = np.linalg.eigvalsh(J @ J.T)
        eps = np.finfo(np.float64).eps
        s = np.sqrt(np.clip(lam[::-1], 0, None))
        zt = max(J.shape) * eps * s[0]
        zt2 = max(zt**2, (10 * np.sqrt(J.shape[1]) + m) * eps * lam[-1])
        nz = lam[lam > zt2]
        out.update(mu=float(lam[0]), sigma_max=float(s[0]), null_dim=int((lam <= zt2).sum()),
                   sigma_min_nonzero=float(np.sqrt(nz[0])))
    elif route == "curvlinops_arpack":
        import scipy.sparse.linalg as spla
        from curvlinops import JacobianLinearOperator
        from torch.nn.attention import SDPBackend, sdpa_kernel

        class Out(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                with sdpa_kernel([SDPBackend.MATH]):
                    return self.m(inputs_embeds=x).last_hidden_state

        model = Out(bert).eval()
        qkv = ("query.weight", "key.weight", "value.weight")
        ps = [p for k, p in model.named_parameters() if k.endswith(qkv)]
        L = JacobianLinearOperator(model, ps, [(X, X)], check_deterministic=False).to_scipy(dtype=np.float64)
        m = X.numel()
        G = spla.LinearOperator((m, m), matvec=lambda v: L @ (L.T @ v), dtype=np.float64)
        lmax = float(spla.eigsh(G, k=1, which="LA", tol=1e-10, return_eigenvectors=False)[0])
        try:
            lmin = float(spla.eigsh(G, k=1, which="SA", tol=1e-10, maxiter=ARPACK_MAXITER,
                                    return_eigenvectors=False)[0])
            conv = True
        except spla.ArpackNoConvergence as exc:
            lmin = float(exc.eigenvalues[0]) if len(exc.eigenvalues) else float("nan")
            conv = False
        out.update(mu=lmin, sigma_max=lmax**0.5, converged=conv,
                   note=f"ARPACK which='SA', maxiter={ARPACK_MAXITER}; no null-space count, "
                        "no smallest non-zero σ")
    else:
        raise ValueError(f"unknown route {route!r}; known: {ROUTES}")
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0  # 1 thread: robust to other processes on a shared machine
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return out


def _strict(x):
    """NaN/inf as strings: the results file is strict JSON."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return str(x)
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_strict(v) for v in x]
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/foreign_models.json"))
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--route", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.route:
        print(json.dumps(run_route(args.route)))
        return
    rows = []
    for r in args.routes.split(","):
        if r == "curvlinops_arpack":
            try:
                import curvlinops  # noqa: F401
            except ImportError:
                rows.append({"route": r, "skipped": "curvlinops not installed"})
                continue
        proc = subprocess.run([sys.executable, __file__, "--route", r], capture_output=True, text=True,
                              cwd=ROOT, check=False)
        if proc.returncode != 0:
            rows.append({"route": r, "failed": proc.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = next((x for x in rows if x["route"] == "diagnose" and "seconds" in x), None)
    for x in rows:
        if base and "seconds" in x:
            x["ratio_to_diagnose"] = x["seconds"] / base["seconds"]
            x["cpu_ratio_to_diagnose"] = x["cpu_seconds"] / base["cpu_seconds"]
    dense = next((x for x in rows if x["route"] == "dense" and "mu" in x), None)
    for x in rows:
        if dense and "sigma_max" in x:
            x["rel_err_sigma_max_vs_dense"] = abs(x["sigma_max"] - dense["sigma_max"]) / dense["sigma_max"]
    res = {"load_average_at_end": list(os.getloadavg()),
           "workload": {**CFG, "params": PARAMS, "m": CFG["batch"] * CFG["seq"] * CFG["hidden"],
                        "p": 3 * CFG["hidden"] ** 2, "dtype": "float64", "threads": 1},
           "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(args.out).write_text(json.dumps(_strict(res), indent=2, allow_nan=False) + "\n")
    print(json.dumps({"written": args.out}))


if __name__ == "__main__":
    main()
