"""Benchmark: matrix-free σ_min — Golub–Kahan–Davidson (``method="gkd"``) vs GKL, ARPACK, PRIMME, dense.

Cases (truth: dense ``numpy.linalg.svd``, or the closed form for the Laplacians):

* ``lap1d_1000``: 1-D Laplacian ``tridiag(−1, 2, −1)``, ``n = 1000`` (κ ≈ 4.1e5), scipy CSR;
* ``lap2d_1600``: 2-D Laplacian on a 40×40 grid (1,600², double σ_2 = σ_3), scipy CSR;
* ``mha_wide`` / ``mha_tall``: ``torch.nn.MultiheadAttention(16, 2)`` Jacobian wrt
  ``in_proj_weight`` (768 parameters) at seeded inputs, through
  :class:`attncond.spectral.JacobianOperator` (products by ``torch.func``): ``L=8, batch=2``
  (256×768) and ``L=16, batch=4`` (1024×768, rank deficient: the per-head ``W_Q``/``W_K``
  symmetry gives a null space);
* ``bert_layer`` / ``gpt2_2layer``: a 1-layer Hugging Face ``BertModel`` (hidden 16, 2 heads) and
  a 2-layer causal ``GPT2Model`` (n_embd 16, 2 heads), float64, inputs ``(4, 8, 16)``, J with
  respect to the attention projections via :func:`attncond.models.adapt` (BERT 512×768 with a
  LayerNorm null space; GPT-2 512×1536);
* ``rankdef_1500x500``: ``U diag(s) Vᵀ`` with 40 exact zeros below a log-spaced bulk [1, 1e-3];
* ``logspaced_1e8``: 1500×500, σ log-spaced in [1e-8, 1].

Methods: ``gkd``, ``gkl``, ``gram-lanczos`` (Lanczos on the small-side Gram ``TᵀT``, certified on
``A``; exact only where ``κ ≲ 1e4``), scipy's ARPACK, PRIMME's ``svds(which="SM")`` and dense.
Every method gets the same operator in the same process; ``matvecs`` counts products with
``A`` or ``Aᵀ`` (PRIMME's through a counting ``LinearOperator``). ``tol = 1e-10`` everywhere
(PRIMME's tolerance is relative to ``‖A‖``). Rows: ``converged``, ``sigma_min``, ``rel_err``
(vs truth; absolute/σ_max for a zero σ_min), ``matvecs``, ``seconds``; per case the ratios
``gkd/primme`` (products, time), ``gkd/arpack``, ``gkd/gkl`` and ``gkl/arpack`` (the issue-14 goal:
GKL's wall time at or below ARPACK's wherever its product count is lower).

Everything runs on one thread (torch, and numpy/scipy's BLAS through ``threadpoolctl`` when it is
installed). ``--repeats R`` times every (case, method) ``R`` times on fresh operators and reports the fastest
(``seconds``; all of them in ``seconds_all``): the machine is shared, so single timings are noisy.

Usage: ``python benchmarks/gkd_vs_peers.py [--cases a,b] [--methods gkd,gkl,arpack,primme,dense]
[--repeats R]``; writes ``benchmarks/results/gkd_vs_peers.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import attncond.spectral as spectral  # noqa: E402
from attncond.spectral.solvers import arpack_svds, golub_kahan_davidson, golub_kahan_lanczos  # noqa: E402

TOL = 1e-10
#: cases whose products are autodiff Jacobians (expensive products: PRIMME capped at 60,000)
FOREIGN = ("mha", "bert", "gpt2")
METHODS = ["gkd", "gkl", "gram-lanczos", "arpack", "primme", "dense"]


def lap1d(n: int) -> sp.csr_matrix:
    return sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]).tocsr()


def lap2d(g: int) -> sp.csr_matrix:
    L, eye = lap1d(g), sp.identity(g)
    return (sp.kron(L, eye) + sp.kron(eye, L)).tocsr()


def synthetic(m: int, n: int, s: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (U * s) @ V.T


def mha_jacobian(L: int, batch: int, E: int = 16, H: int = 2) -> spectral.JacobianOperator:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(E, H, dtype=torch.float64)
    X = torch.randn(L, batch, E, dtype=torch.float64)
    fixed = {k: v.detach() for k, v in mha.named_parameters() if k != "in_proj_weight"}

    def fn(p, x):
        out, _ = torch.func.functional_call(mha, {**fixed, **p}, (x, x, x), {"need_weights": True})
        return out

    return spectral.JacobianOperator(fn, {"in_proj_weight": mha.in_proj_weight.detach()}, (X,))


def hf_jacobian(family: str) -> spectral.JacobianOperator:
    """The user's own transformer (issue 13's families): a 1-layer BERT (hidden 16, 2 heads, LayerNorm
    after attention: a null space) or a 2-layer causal GPT-2 (n_embd 16, 2 heads), float64, J with
    respect to the attention projections, through :func:`attncond.models.adapt`."""
    import transformers as tr

    from attncond.models import adapt

    torch.manual_seed(0)
    if family == "bert":
        cfg = tr.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                            vocab_size=10, max_position_embeddings=16)
        model = tr.BertModel(cfg, add_pooling_layer=False).double()
        a = adapt(model, torch.randn(4, 8, 16, dtype=torch.float64),
                  params=["*.query.weight", "*.key.weight", "*.value.weight"])
    else:
        cfg = tr.GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=10, n_positions=16, bos_token_id=0,
                            eos_token_id=0)
        model = tr.GPT2Model(cfg).double()
        a = adapt(model, torch.randn(4, 8, 16, dtype=torch.float64), params="h.*.attn.c_attn.weight")
    return spectral.JacobianOperator(lambda p: a.functional(p, *a.inputs), a.params())


def cases() -> dict:
    lap_s = lambda n: 2 - 2 * np.cos(np.pi / (n + 1))  # noqa: E731
    g = 40
    return {
        "lap1d_1000": (lambda: lap1d(1000), lap_s(1000)),
        "lap2d_1600": (lambda: lap2d(g), 2 * lap_s(g)),
        "mha_wide": (lambda: mha_jacobian(8, 2), None),
        "mha_tall": (lambda: mha_jacobian(16, 4), None),
        "bert_layer": (lambda: hf_jacobian("bert"), None),
        "gpt2_2layer": (lambda: hf_jacobian("gpt2"), None),
        "rankdef_1500x500": (lambda: synthetic(1500, 500, np.r_[np.logspace(0, -3, 460), np.zeros(40)], 1),
                             0.0),
        "logspaced_1e8": (lambda: synthetic(1500, 500, np.logspace(0, -8, 500), 2), 1e-8),
    }


def dense_of(A) -> np.ndarray:
    if sp.issparse(A):
        return A.toarray()
    if isinstance(A, np.ndarray):
        return A
    return A.to_dense().detach().numpy()


def run_primme(A, shape, smax: float, cap: int) -> dict:
    import primme

    count = [0]
    op = spectral.as_operator(A) if not isinstance(A, spectral.LinearOp) else A

    def mm(x):
        x2 = np.ascontiguousarray(x, dtype=np.float64).reshape(shape[1], -1)
        count[0] += x2.shape[1]
        return op.matmat(torch.from_numpy(x2)).numpy()

    def rmm(y):
        y2 = np.ascontiguousarray(y, dtype=np.float64).reshape(shape[0], -1)
        count[0] += y2.shape[1]
        return op.rmatmat(torch.from_numpy(y2)).numpy()

    lin = spla.LinearOperator(shape, matvec=lambda x: mm(x).ravel(), rmatvec=lambda y: rmm(y).ravel(),
                              matmat=mm, rmatmat=rmm, dtype=np.float64)
    t = time.perf_counter()
    s, stats = primme.svds(lin, 1, which="SM", tol=TOL, return_singular_vectors=False, return_stats=True,
                           maxMatvecs=cap)
    sec = time.perf_counter() - t
    if len(s) == 0:  # PRIMME stopped at maxMatvecs with nothing converged
        return {"sigma_min": math.nan, "matvecs": count[0], "seconds": sec, "converged": False,
                "note": f"primme: no converged value within maxMatvecs={cap}"}
    rn = float(stats["rnorms"][0])
    return {"sigma_min": float(s[0]), "matvecs": count[0], "seconds": sec, "converged": rn <= TOL * smax * 1.01,
            "note": f"primme rnorm {rn:.3g} (relative to ||A||)"}


def run_one(method: str, A, shape, smax: float, cheap: bool) -> dict:
    t = time.perf_counter()
    if method == "primme":
        return run_primme(A, shape, smax, 400_000 if cheap else 60_000)
    if method == "dense":
        s = np.linalg.svd(dense_of(A), compute_uv=False)
        nz = s[s > max(shape) * np.finfo(float).eps * s[0]]
        return {"sigma_min": float(s[-1]), "matvecs": min(shape), "seconds": time.perf_counter() - t,
                "converged": True, "sigma_max": float(s[0]), "null_dim": int(s.size - nz.size),
                "smallest_nonzero": float(nz[-1])}
    if method == "gkd":
        r = golub_kahan_davidson(A, which="smallest", tol=TOL)
    elif method == "gkl":
        r = golub_kahan_lanczos(A, which="smallest", tol=TOL, maxiter=6000)
    elif method == "gram-lanczos":
        r = spectral.extreme_singular_values(A, which="min", method="gram-lanczos", tol=TOL).details
    else:
        r = arpack_svds(A, 1, "smallest", TOL, 3000, 0, probe=False)
    if r.smallest is None:  # the peer raised: reported, not converged
        return {"sigma_min": math.nan, "matvecs": r.matvecs, "seconds": time.perf_counter() - t,
                "converged": False, "reason": r.reason}
    row = {"sigma_min": r.sigma_min, "matvecs": r.matvecs, "seconds": time.perf_counter() - t,
           "converged": bool(r.converged), "interval": [float(r.smallest.lower[0]), float(r.smallest.upper[0])]}
    if method == "gkd":
        row["null_dim"] = r.info["null_dim"]
        row["smallest_nonzero"] = r.info.get("smallest_nonzero")
        row["basis"] = r.info["basis"]
    return row


def strict(x):
    """Strict JSON: non-finite floats become ``null``."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict(v) for v in x]
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(cases()))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gkd_vs_peers.json"))
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    try:  # one thread for numpy/scipy's BLAS too (ARPACK's vector work, the dense SVD): on the shared
        # 2-core machine OpenBLAS's two threads made the dense SVD of 1000x1000 12x slower (6.3 s vs 0.5 s)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    rows, summary = [], {}
    for name in a.cases.split(","):
        make, truth = cases()[name]
        A = make()
        shape = tuple(A.shape)
        if truth is None or name.startswith(FOREIGN):
            sv = np.linalg.svd(dense_of(A), compute_uv=False)
            truth = float(sv[-1]) if sv[-1] > max(shape) * 2.2e-16 * sv[0] else 0.0
            smax = float(sv[0])
        else:
            smax = float(np.linalg.norm(dense_of(A), 2))
        by = {}
        for m in a.methods.split(","):
            runs = []
            for _ in range(max(1, a.repeats)):
                A = make()  # a fresh operator (product counters start at 0)
                runs.append(run_one(m, A, shape, smax, not name.startswith(FOREIGN)))
            row = dict(runs[0], seconds=min(r["seconds"] for r in runs))
            if len(runs) > 1:
                row["seconds_all"] = [r["seconds"] for r in runs]
            s = row["sigma_min"]
            err = abs(s - truth) / (truth if truth > 0 else smax) if not math.isnan(s) else math.nan
            row.update(case=name, method=m, shape=list(shape), truth=truth, rel_err=err)
            print(json.dumps(strict(row), allow_nan=False), flush=True)
            rows.append(row)
            by[m] = row
        ratios = {}
        for num, peers in (("gkd", ("primme", "arpack", "gkl")), ("gkl", ("arpack",)),
                           ("gram-lanczos", ("primme", "arpack", "gkd"))):
            g = by.get(num)
            if g:
                ratios.update({f"{num}/{p}_{q}": (g[q] / by[p][q] if by.get(p) and by[p][q] else None)
                               for p in peers for q in ("matvecs", "seconds")})
        summary[name] = ratios
    out = {"tol": TOL, "threads": 1, "repeats": a.repeats, "rows": rows, "ratios": summary}
    Path(a.out).write_text(json.dumps(strict(out), indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
