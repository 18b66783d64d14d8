"""Benchmark: where does ``auto`` on sparse input stop paying for densifying? (issue 14, item 3)

2-D Laplacians on ``g×g`` grids (``n = g²``, 5 non-zeros a row, scipy CSR), both ends, tol 1e-10,
one thread: ``auto`` (its current route: dense SVD up to ``AUTO.dense_max_entries``, then the Gram
route, then GKL), ``gkd`` and ``gkl`` on the sparse operator. Rows: route, seconds, products,
converged, σ_min relative error vs the closed form ``2·(2 − 2cos(π/(g+1)))``. Writes
``benchmarks/results/sparse_auto_crossover.json``. Usage:
``python benchmarks/sparse_auto_crossover.py [--grids 30,40,50,64]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gkd_vs_peers import lap2d, strict  # noqa: E402

import attncond.spectral as spectral  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grids", default="30,40,50,64")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/sparse_auto_crossover.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for g in (int(x) for x in a.grids.split(",")):
        truth = 2 * (2 - 2 * math.cos(math.pi / (g + 1)))
        for method in ("auto", "gkd", "gkl"):
            t = time.perf_counter()
            est = spectral.extreme_singular_values(lap2d(g), method=method, tol=1e-10)
            sec = time.perf_counter() - t
            err = abs(est.sigma_min - truth) / truth if not math.isnan(est.sigma_min) else math.nan
            row = {"grid": g, "n": g * g, "method": method, "route": est.method, "seconds": sec,
                   "matvecs": est.matvecs, "converged": est.converged, "rel_err_sigma_min": err}
            print(json.dumps(strict(row)), flush=True)
            rows.append(row)
    best = {}
    for g in sorted({r["grid"] for r in rows}):
        rs = [r for r in rows if r["grid"] == g and r["converged"]]
        auto = next(r for r in rows if r["grid"] == g and r["method"] == "auto")
        mf = min((r for r in rs if r["method"] != "auto"), key=lambda r: r["seconds"], default=None)
        ratio = mf["seconds"] / auto["seconds"] if mf else None
        best[str(g * g)] = {"auto_route": auto["route"], "matrix_free_over_auto_seconds": ratio,
                            "fastest_matrix_free": mf["method"] if mf else None}
    Path(a.out).write_text(json.dumps(strict({"rows": rows, "crossover": best}), indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
