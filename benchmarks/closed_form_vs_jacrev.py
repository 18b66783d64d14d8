"""Benchmark: closed-form [S24] output Jacobians (``models.derivatives``) vs ``torch.func.jacrev``.

Workload: ``∂ MH(X) / ∂W`` for ``W`` in W_Q, W_K, W_V of ``MultiHeadAttention(D, d, H)`` on
``X ~ N(0, 1)`` of shape ``(N, n, D)``, float64, per-head values, d_out = 1; kernels softmax and
gaussian. Methods, all producing the same dense ``(N, n, 1, H, D, d)`` tensor:

* ``jacrev``: ``torch.func.jacrev`` of the whole batch (the reference);
* ``vmap_jacrev``: per-sample ``jacrev`` under ``torch.func.vmap`` (exploits sample independence);
* ``closed_form``: :func:`models.derivatives.mh_output_jacobian`.

Reported per (kernel, wrt, method): median seconds over ``--repeats`` runs after one warm-up,
the speed-up ``t_jacrev / t_method`` measured in the same run, and the normwise relative error
``max|J − J_jacrev| / max|J_jacrev|``.

Usage: ``python benchmarks/closed_form_vs_jacrev.py [--repeats 5] [--size medium|small]``.
Prints one JSON row per line and writes ``benchmarks/results/closed_form_vs_jacrev.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from attncond.models import MultiHeadAttention  # noqa: E402
from attncond.models.derivatives import mh_output_jacobian  # noqa: E402

SIZES = {"small": dict(N=8, n=8, D=16, d=16, H=2), "medium": dict(N=64, n=16, D=32, d=32, H=4)}


def _time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="medium", choices=sorted(SIZES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kernels", default="softmax,gaussian")
    ap.add_argument("--wrt", default="W_Q,W_K,W_V")
    ap.add_argument("--jacrev-chunk", type=int, default=128,
                    help="chunk_size of the whole-batch jacrev peer (bounds its memory: unchunked, the "
                         "gaussian kernel's jacrev took 24 GB and was OOM-killed on the medium size)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "closed_form_vs_jacrev.json"))
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    sz = SIZES[args.size]
    g = torch.Generator().manual_seed(0)
    X = torch.randn(sz["N"], sz["n"], sz["D"], generator=g, dtype=torch.float64)
    rows = []
    for kern in [k for k in args.kernels.split(",") if k]:
        model = MultiHeadAttention(sz["D"], sz["d"], sz["H"], kernel=kern, seed=0,
                                   kernel_options={"on_underflow": "ignore"} if kern == "gaussian" else None)
        for wrt in [w for w in args.wrt.split(",") if w]:
            W0 = getattr(model, wrt).detach()

            def f_batch(W, wrt=wrt, model=model):
                return model.functional({wrt: W}, X)

            def f_one(W, x, wrt=wrt, model=model):
                return model.functional({wrt: W}, x.unsqueeze(0)).squeeze(0)

            methods = {
                "jacrev": lambda f_batch=f_batch, W0=W0: torch.func.jacrev(
                    f_batch, chunk_size=args.jacrev_chunk)(W0),
                "vmap_jacrev": lambda f_one=f_one, W0=W0: torch.func.vmap(
                    torch.func.jacrev(f_one), in_dims=(None, 0))(W0, X),
                "closed_form": lambda model=model, wrt=wrt: mh_output_jacobian(model, X, wrt),
            }
            t_ref, ref = _time(methods["jacrev"], args.repeats)
            ref = ref.detach()
            for name, fn in methods.items():
                t, out = (t_ref, ref) if name == "jacrev" else _time(fn, args.repeats)
                out = out.detach()
                rel = float((out - ref).abs().max() / ref.abs().max())
                row = {"size": args.size, **sz, "kernel": kern, "wrt": wrt, "method": name,
                       "median_seconds": t, "speedup_vs_jacrev": t_ref / t, "max_rel_error": rel,
                       "repeats": args.repeats}
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "dtype": "float64", "jacrev_chunk": args.jacrev_chunk}
    cf = [r["speedup_vs_jacrev"] for r in rows if r["method"] == "closed_form"]
    vm = [r["median_seconds"] / c["median_seconds"] for r, c in zip(
        [r for r in rows if r["method"] == "vmap_jacrev"], [r for r in rows if r["method"] == "closed_form"],
        strict=True)]
    summary = {"summary": "closed_form speed-up vs jacrev (and vs vmap_jacrev)", "min": min(cf),
               "median": statistics.median(cf), "max": max(cf), "min_vs_vmap_jacrev": min(vm),
               "median_vs_vmap_jacrev": statistics.median(vm), "target": 5.0, "met": min(cf) >= 5.0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
