"""GPU check of issue 14 (prepared; run only on a machine with CUDA): GKD, GKL and gram-lanczos on ``cuda``
in float32 and float64 vs the same solvers on the CPU, in one process.

Cases: ``lap1d_1000``, ``lap2d_1600`` (sparse), ``mha_wide`` (``nn.MultiheadAttention``
Jacobian, ``JacobianOperator`` on the device), ``rankdef_1500x500`` (dense, 40 zeros).
Writes ``benchmarks/results/gkd_vs_peers_cuda.json``: per (case, method, device, dtype) the
certified σ_min interval, ``converged``, ``matvecs``, ``seconds``; per case the GPU/CPU time
ratio.

Structured part (the [S24] μ of ``benchmarks/ntk_matrix_free.py``): ``pl_constant(...,
eig_method="matrix-free-preconditioned")`` with the model and inputs on each device, medium in
float64 and float32 and large in float64; writes ``benchmarks/results/ntk_matrix_free_cuda.json``
with μ, its certified interval, the products, the seconds and the GPU/CPU ratios.

Usage: ``python benchmarks/gpu_check.py [--out PATH] [--devices cpu,cuda] [--parts spectral,structured]``
(``benchmarks/gpu_check.sh`` also runs the CUDA tests first); ``--devices cpu`` is a dry run of the
same code on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gkd_vs_peers import cases, strict  # noqa: E402

import attncond.spectral as spectral  # noqa: E402
from attncond.spectral.solvers import golub_kahan_davidson, golub_kahan_lanczos  # noqa: E402


def solve(method: str, A, device: str, dtype: torch.dtype) -> dict:
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    if method == "gkd":
        r = golub_kahan_davidson(A, which="smallest", tol=tol, device=device, dtype=dtype)
    elif method == "gram-lanczos":
        r = spectral.extreme_singular_values(A, which="min", method="gram-lanczos", tol=tol, device=device,
                                             dtype=dtype).details
    else:
        r = golub_kahan_lanczos(A, which="smallest", tol=tol, maxiter=3000, device=device, dtype=dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"converged": bool(r.converged), "sigma_min": r.sigma_min, "matvecs": r.matvecs,
            "interval": [float(r.smallest.lower[0]), float(r.smallest.upper[0])],
            "null_dim": r.info.get("null_dim"), "seconds": time.perf_counter() - t}


def _record(rows: list[dict], by: dict[str, dict], device: str, row: dict) -> None:
    """Print ``row`` as strict JSON and keep it (in ``rows`` and under its device in ``by``)."""
    print(json.dumps(strict(row)), flush=True)
    rows.append(row)
    by[device] = row


def _ratio(ratios: dict[str, float], key: str, by: dict[str, dict]) -> None:
    """``ratios[key]`` = GPU seconds over CPU seconds, when both ran."""
    if "cpu" in by and "cuda" in by:
        ratios[key] = by["cuda"]["seconds"] / by["cpu"]["seconds"]


def _write(path: str, devices: list[str], rows: list[dict], ratios: dict[str, float]) -> None:
    name = torch.cuda.get_device_name(0) if "cuda" in devices else "cpu only (dry run)"
    out = {"device": name, "rows": rows, "gpu_over_cpu_seconds": ratios}
    Path(path).write_text(json.dumps(strict(out), indent=1, allow_nan=False))


def structured(devices: list[str], out: str) -> None:
    """The structured part (module docstring): μ of the [S24] model per (size, device, dtype)."""
    from ntk_matrix_free import SIZES

    from attncond.models import MultiHeadAttention, synthetic_regression
    from attncond.spectral.diagnostics import pl_constant

    rows, ratios = [], {}
    for size, dtype in (("medium", torch.float64), ("medium", torch.float32), ("large", torch.float64)):
        c, by = SIZES[size], {}
        for device in devices:
            mh = MultiHeadAttention(c["D"], c["d"], c["H"], seed=0, dtype=dtype, device=device)
            X = synthetic_regression(c["N"], c["n"], c["D"], seed=0).X.to(dtype=dtype, device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            pl = pl_constant(mh, X, eig_method="matrix-free-preconditioned",
                             tol=1e-8 if dtype == torch.float64 else 1e-4)
            if device == "cuda":
                torch.cuda.synchronize()
            row = {"size": size, "device": device, "dtype": str(dtype), "mu": pl.mu,
                   "mu_interval": list(pl.mu_interval), "lambda_max": pl.lambda_max, "products": pl.products,
                   "converged": not any("not converged" in n for n in pl.notes),
                   "seconds": time.perf_counter() - t}
            _record(rows, by, device, row)
        _ratio(ratios, f"{size}/{dtype}", by)
    _write(out, devices, rows, ratios)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gkd_vs_peers_cuda.json"))
    ap.add_argument("--structured-out", default=str(ROOT / "benchmarks/results/ntk_matrix_free_cuda.json"))
    ap.add_argument("--cases", default="lap1d_1000,lap2d_1600,mha_wide,rankdef_1500x500")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--parts", default="spectral,structured")
    a = ap.parse_args()
    devices = [d for d in a.devices.split(",") if d]
    parts = [p for p in a.parts.split(",") if p]
    bad = [d for d in devices if d not in ("cpu", "cuda")]
    bad += [p for p in parts if p not in ("spectral", "structured")]
    if bad:
        raise SystemExit(f"gpu_check: unknown device or part {bad}")
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --devices cpu for a dry run)")
    if "structured" in parts:
        structured(devices, a.structured_out)
    if "spectral" not in parts:
        return
    rows, ratios = [], {}
    for name in a.cases.split(","):
        make, truth = cases()[name]
        for method in ("gkd", "gkl", "gram-lanczos"):
            for dtype in (torch.float64, torch.float32):
                by = {}
                for device in devices:
                    A = make()
                    if name.startswith("mha"):
                        if device == "cuda" or dtype == torch.float32:
                            continue  # the Jacobian operator lives where its model does (CPU float64 here)
                    row = solve(method, A, device, dtype)
                    row.update(case=name, method=method, device=device, dtype=str(dtype), truth=truth)
                    _record(rows, by, device, row)
                _ratio(ratios, f"{name}/{method}/{dtype}", by)
    _write(a.out, devices, rows, ratios)


if __name__ == "__main__":
    main()
