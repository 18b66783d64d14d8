"""Benchmark: thick vs harmonic restarts of Golub–Kahan–Lanczos for σ_min (justifies AUTO_RESTART).

Matrices ``U diag(s) Vᵀ`` with known spectra (400×300, Krylov subspace ``ncv=40`` so that
restarts matter): log-spaced spectra with κ = 1e4 and 1e12, a clustered σ_min inside a flat
bulk, exact rank deficiency, an isolated σ_min = 1e-8, and a wide (300×400) copy of the
isolated case. For each case and restart mode: products, seconds (median of ``--repeats``),
converged, certified relative error of σ_min against the dense SVD, and the number of
harmonic steps actually taken (a harmonic step whose residual is not rank one to rounding
level falls back to thick, see ``spectral.solvers.gkl._harmonic_restart``).

Decision rule for ``spectral.solvers.gkl.AUTO_RESTART["smallest"]``: harmonic only if it converges
on every case thick converges on and saves at least 10 % of the products in the median
over the cases where both converge. ``which="both"`` with harmonic runs the two ends
separately (see ``golub_kahan_lanczos``), so it is measured too.

Usage: ``python benchmarks/gkl_restart.py [--repeats 1] [--maxiter 1500]``; prints JSON rows
and writes ``benchmarks/results/gkl_restart.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests" / "spectral"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def cases() -> dict[str, tuple[np.ndarray, str]]:
    from _spectral_cases import logspaced, with_spectrum

    iso = np.r_[np.linspace(1.0, 0.1, 299), 1e-8]
    return {
        "kappa1e4": (with_spectrum(400, 300, logspaced(300, 1e4), seed=3), "smallest"),
        "kappa1e12": (with_spectrum(400, 300, logspaced(300, 1e12), seed=3), "smallest"),
        "clustered": (
            with_spectrum(400, 300, np.r_[np.linspace(10, 1, 290), 1e-3 * (1 + 1e-6 * np.arange(10))], seed=3),
            "smallest",
        ),
        "rank_deficient": (
            with_spectrum(400, 300, np.r_[np.linspace(5, 1, 290), np.zeros(10)], seed=3),
            "smallest",
        ),
        "isolated_1e-8": (with_spectrum(400, 300, iso, seed=3), "smallest"),
        "wide_isolated_1e-8": (with_spectrum(300, 400, iso, seed=3), "smallest"),
        "isolated_1e-8_both": (with_spectrum(400, 300, iso, seed=3), "both"),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    import attncond.spectral as spectral

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--maxiter", type=int, default=1500)
    ap.add_argument("--ncv", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gkl_restart.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    rows = []
    for name, (A, which) in cases().items():
        s = np.linalg.svd(A, compute_uv=False)
        smin = float(s[-1])
        for mode in ("thick", "harmonic"):
            times, r = [], None
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                r = spectral.golub_kahan_lanczos(A, which=which, restart=mode, ncv=a.ncv, maxiter=a.maxiter)
                times.append(time.perf_counter() - t0)
            assert r is not None
            lo, hi = float(r.smallest.lower[0]), float(r.smallest.upper[0])
            row = {
                "case": name,
                "which": which,
                "restart": mode,
                "products": r.matvecs,
                "seconds": statistics.median(times),
                "converged": r.converged,
                "harmonic_steps": r.info["harmonic_restarts"],
                "sigma_min": r.sigma_min,
                "true_sigma_min": smin,
                "rel_err_sigma_min": abs(r.sigma_min - smin) / smin if smin > 0 else abs(r.sigma_min),
                "interval_contains_truth": lo - 1e-15 <= smin <= hi + 1e-15,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    by = {(r["case"], r["restart"]): r for r in rows}
    names = list(dict.fromkeys(r["case"] for r in rows))
    both_conv = [n for n in names if by[(n, "thick")]["converged"] and by[(n, "harmonic")]["converged"]]
    savings = [1 - by[(n, "harmonic")]["products"] / by[(n, "thick")]["products"] for n in both_conv]
    lost = [n for n in names if by[(n, "thick")]["converged"] and not by[(n, "harmonic")]["converged"]]
    med = statistics.median(savings) if savings else 0.0
    summary = {
        "summary": "harmonic vs thick restart, which='smallest'/'both'",
        "cases_both_converged": both_conv,
        "product_saving_harmonic_median": med,
        "product_saving_harmonic_per_case": dict(zip(both_conv, savings, strict=True)),
        "cases_harmonic_lost_convergence": lost,
        "choose_harmonic": bool(med >= 0.10 and not lost),
        "auto_restart_now": dict(spectral.solvers.gkl.AUTO_RESTART),
    }
    print(json.dumps(summary), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
