"""Battery of hard inputs for issue 16 (sections 2–5): counts false certificates and unclear errors.

A *false certificate* is ``converged=True`` with an interval that misses the truth (or a
non-finite value reported as converged). An *unclear error* is an exception whose type is not
``ValueError``/``TypeError``/``OverflowError``/``RuntimeError`` raised by our own validation
(e.g. a ``LinAlgError`` from inside a solver, a reshape error). Run from the repository root::

    python benchmarks/honest_battery.py [--out benchmarks/results/honest_battery.json]

Families: ``scale`` (σ at 2^±1000, 1e±300 on every route), ``refuse`` (PROPACK zero vector,
non-symmetric ``eigen_extremes``, float32/complex callables, misspelt/unused parameter names,
coupled samples under ``sample_dim``), ``softmax`` (κ of ``diag(s) − s sᵀ`` on 1⊥ vs a 60-digit
mpmath reference), ``hessian`` (smallest non-zero eigenvalue on the Lanczos route), ``errors``
(NaN operators, wrong output length, meta tensors, cuda on a CPU build, invalid tolerances).
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import scipy.sparse.linalg as spla
import torch

import attncond.spectral as spectral
from attncond.spectral.diagnostics import hessian_extremes, softmax_jacobian_spectrum

ROUTES = ("dense", "gram", "gkl", "arpack", "propack", "lobpcg", "randomized")
CLEAR = (ValueError, TypeError, OverflowError)


def _inside(iv: tuple[float, float], truth: float, rel: float = 1e-9) -> bool:
    lo, hi = iv
    slack = rel * abs(truth)
    return bool(math.isfinite(lo) and math.isfinite(hi) and lo - slack <= truth <= hi + slack)


def _record(
    out: list[dict[str, Any]], family: str, case: str, fn: Callable[[], Any], judge: Callable[[Any], str]
) -> None:
    """``judge(result)`` returns ``"ok"``, ``"false_certificate"``, ``"refused"`` or ``"silent_wrong"``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fn()
        verdict = judge(res)
        msg = None
    except CLEAR as exc:
        verdict, msg = "clear_error", f"{type(exc).__name__}: {exc}"[:200]
    except Exception as exc:  # noqa: BLE001 - the point is to classify them
        verdict, msg = "unclear_error", f"{type(exc).__name__}: {exc}"[:200]
    out.append({"family": family, "case": case, "verdict": verdict, "message": msg})


def _sv_judge(truth_max: float, truth_min: float | None) -> Callable[[Any], str]:
    def judge(e: Any) -> str:
        if not e.converged:
            return "refused"
        ok = _inside(e.sigma_max_interval, truth_max)
        if truth_min is not None and not math.isnan(e.sigma_min):
            ok &= _inside(e.sigma_min_interval, truth_min) or (truth_min == 0 and e.rank_deficient)
        return "ok" if ok else "false_certificate"

    return judge


def scale_family(out: list[dict[str, Any]]) -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((8, 5))
    sv = np.linalg.svd(base, compute_uv=False)
    cases = {
        "eye5*1e-160": (np.eye(5) * 1e-160, 1e-160, 1e-160),
        "eye5*1e-300": (np.eye(5) * 1e-300, 1e-300, 1e-300),
        "eye5*1e300": (np.eye(5) * 1e300, 1e300, 1e300),
        "randn(8,5)*2^-1000": (np.ldexp(base, -1000), math.ldexp(sv[0], -1000), math.ldexp(sv[-1], -1000)),
        "randn(8,5)*2^1000": (np.ldexp(base, 1000), math.ldexp(sv[0], 1000), math.ldexp(sv[-1], 1000)),
    }
    for name, (A, smax, smin) in cases.items():
        for route in ROUTES:
            which = "max" if route == "randomized" else ("max", "min")
            tmin = None if route == "randomized" else smin
            _record(
                out,
                "scale",
                f"{name} method={route}",
                lambda A=A, route=route, which=which: spectral.extreme_singular_values(
                    A, which=which, method=route
                ),
                _sv_judge(smax, tmin),
            )
            At = torch.from_numpy(A)
            mf = (lambda x, At=At: At @ x, lambda y, At=At: At.T @ y, A.shape)
            if route in ("dense", "gkl"):
                _record(
                    out,
                    "scale",
                    f"{name} matrix-free method={route}",
                    lambda mf=mf, route=route, which=which: spectral.extreme_singular_values(
                        mf, which=which, method=route
                    ),
                    _sv_judge(smax, tmin),
                )
        for em in ("dense", "lanczos"):
            Ssym = np.diag(np.linspace(1.0, 2.0, 5)) * smax
            truth = (float(Ssym.max()), float(Ssym[Ssym > 0].min()))

            def ej(e: Any, truth: tuple[float, float] = truth) -> str:
                if not e.converged:
                    return "refused"
                ok = _inside(e.lambda_max_interval, truth[0]) and _inside(e.lambda_min_interval, truth[1])
                return "ok" if ok else "false_certificate"

            _record(
                out,
                "scale",
                f"{name} eigen_extremes method={em}",
                lambda Ssym=Ssym, em=em: spectral.eigen_extremes(Ssym, method=em),
                ej,
            )


def _z_sharp_gaussian(out: list[dict[str, Any]]) -> None:
    from attncond.models import AttentionBlock
    from attncond.spectral.diagnostics import attention_output_matrix

    blk = AttentionBlock(
        2, 2, residual=False, ffn=False, kernel="gaussian", regime="sharp", init_scale=3.0, seed=1
    )
    X = torch.randn(1, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4
    from attncond.spectral.diagnostics.structured import attention_output_matrix as zm

    Z = zm(blk, X, False).detach().numpy()
    truth = float(mpmath.svd_r(mpmath.matrix(Z.tolist()), compute_uv=False)[0]) if Z.size else 0.0

    def judge(z: Any) -> str:
        if z.estimate is not None and not z.estimate.converged:
            return "refused"
        return "ok" if _inside(z.sigma_max_interval, truth) else "false_certificate"

    _record(
        out,
        "scale",
        f"attention_output_matrix sharp gaussian (sigma_max truth {truth:.3g})",
        lambda: attention_output_matrix(blk, X, residual=False),
        judge,
    )


def refuse_family(out: list[dict[str, Any]]) -> None:
    rng = np.random.default_rng(3)
    A = np.diag(np.logspace(0, -12, 12)) @ rng.standard_normal((12, 8))
    smin = float(np.linalg.svd(A, compute_uv=False)[-1])
    smax = float(np.linalg.svd(A, compute_uv=False)[0])
    for seed in range(4):
        _record(
            out,
            "refuse",
            f"propack diag(logspace(0,-12,12))@randn(12,8) seed={seed}",
            lambda seed=seed: spectral.extreme_singular_values(
                np.diag(np.logspace(0, -12, 12)) @ np.random.default_rng(seed).standard_normal((12, 8)),
                method="propack",
            ),
            lambda e, seed=seed: _sv_judge(
                *(lambda s: (float(s[0]), float(s[-1])))(
                    np.linalg.svd(
                        np.diag(np.logspace(0, -12, 12)) @ np.random.default_rng(seed).standard_normal((12, 8)),
                        compute_uv=False,
                    )
                )
            )(e),
        )
    del smin, smax
    N = np.array([[1.0, 100.0], [0.0, 2.0]])
    for em in ("dense", "lanczos"):
        _record(
            out,
            "refuse",
            f"eigen_extremes non-symmetric method={em}",
            lambda em=em: spectral.eigen_extremes(N, method=em),
            lambda e: "false_certificate" if e.converged else "refused",
        )
    B = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f32 = (lambda x: (B @ x).float(), lambda y: (B.T @ y).float(), (6, 4))
    _record(
        out,
        "refuse",
        "callable returns float32 in a float64 operator",
        lambda: spectral.extreme_singular_values(f32),
        lambda e: "false_certificate" if e.converged else "refused",
    )
    C = rng.standard_normal((6, 4)) + 1j * rng.standard_normal((6, 4))
    lin = spla.aslinearoperator(C)
    _record(
        out,
        "refuse",
        "complex scipy LinearOperator",
        lambda: spectral.extreme_singular_values(lin),
        lambda e: "false_certificate" if e.converged else "refused",
    )
    Ct = torch.from_numpy(C)
    cc = (lambda x: Ct @ x.to(Ct.dtype), lambda y: Ct.conj().T @ y.to(Ct.dtype), (6, 4))
    _record(
        out,
        "refuse",
        "complex callable",
        lambda: spectral.extreme_singular_values(cc),
        lambda e: "false_certificate" if e.converged else "refused",
    )
    X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    W = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def f_named(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tanh(X @ p.get("W_Q", W).T)

    _record(
        out,
        "refuse",
        "JacobianOperator misspelt parameter name w_q",
        lambda: spectral.extreme_singular_values(spectral.JacobianOperator(f_named, {"w_q": W})),
        lambda e: "false_certificate" if e.converged else "refused",
    )

    def coupled(p: dict[str, torch.Tensor], Xb: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(Xb @ p["W"].T)
        return h + 0.5 * h.roll(1, dims=0) * (torch.arange(h.shape[0])[:, None] > 0)

    def judge_coupled(e: Any) -> str:
        return "false_certificate" if e.converged else "refused"

    _record(
        out,
        "refuse",
        "sample_dim=0 with samples coupled except sample 0",
        lambda: spectral.extreme_singular_values(
            spectral.JacobianOperator(coupled, {"W": W}, (X,), sample_dim=0)
        ),
        judge_coupled,
    )
    W32, X32 = W.float(), (X * 30).float()
    _record(
        out,
        "refuse",
        "sample_dim=0 float32 honest (independent samples)",
        lambda: spectral.JacobianOperator(
            lambda p, Xb: torch.softmax(Xb @ p["W"].T, -1), {"W": W32}, (X32,), sample_dim=0
        ),
        lambda J: "ok",
    )


def mp_softmax_eigs(s: np.ndarray, digits: int = 60) -> list[mpmath.mpf]:
    """Eigenvalues of ``diag(ŝ) − ŝŝᵀ``, ``ŝ = s/Σs`` exactly, by mpmath ``eigsy`` with ``digits`` significant
    digits *relative to the smallest entry* (the working precision covers the dynamic range of ``s``)."""
    pos = [float(v) for v in s if v > 0]
    extra = int(math.ceil(-math.log10(min(pos)))) if pos else 0
    with mpmath.workdps(digits + max(extra, 0) + 10):
        n = len(s)
        v = [mpmath.mpf(float(x)) for x in s]
        tot = mpmath.fsum(v)
        v = [x / tot for x in v]
        M = mpmath.matrix(n, n)
        for i in range(n):
            for j in range(n):
                M[i, j] = (v[i] if i == j else 0) - v[i] * v[j]
        ev = mpmath.eigsy(M, eigvals_only=True)
        return sorted(ev)


def _softmax_rows() -> list[np.ndarray]:
    rows = []
    for logk in (4, 8, 12, 16, 20, 25, 30):
        z = np.array([0.0, -math.log(10.0) * logk / 2, -math.log(10.0) * logk / 2 - 1.0, -3.0, -0.5])
        s = np.exp(z - z.max())
        rows.append(s / s.sum())
    tiny = np.array([1.0, 3e-308, 5e-308, 1e-300, 0.25])
    rows.append(tiny / tiny.sum())
    rows.append(np.array([0.5, 0.5 - 2.5e-308, 2.5e-308]))
    return rows


def softmax_family(out: list[dict[str, Any]]) -> None:
    for s in _softmax_rows():
        ref = mp_softmax_eigs(s)[1:]  # drop the zero on the direction 1

        def judge(r: Any, ref: list[mpmath.mpf] = ref) -> str:
            lp = np.asarray(r.eigenvalues_perp).reshape(-1)
            errs = [
                abs(float((mpmath.mpf(a) - b) / b)) if b != 0 else abs(a) for a, b in zip(lp, ref, strict=True)
            ]
            return "ok" if max(errs) <= 1e-10 else f"silent_wrong (max rel err {max(errs):.2g})"

        kap = float(ref[-1] / ref[0])
        _record(
            out,
            "softmax",
            f"softmax_jacobian_spectrum kappa={kap:.3g} n={len(s)}",
            lambda s=s: softmax_jacobian_spectrum(torch.from_numpy(s)),
            judge,
        )


def hessian_family(out: list[dict[str, Any]]) -> None:
    for p, seed in ((1600, 0), (1700, 1)):
        g = torch.Generator().manual_seed(seed)
        lam = torch.cat(
            [
                torch.linspace(-15.4, -1.0, p // 2, dtype=torch.float64),
                torch.linspace(0.003, 3.0, p - p // 2 - 3, dtype=torch.float64),
                torch.zeros(3, dtype=torch.float64),
            ]
        )
        Q, _ = torch.linalg.qr(torch.randn(p, p, dtype=torch.float64, generator=g))
        H = (Q * lam) @ Q.T
        H = 0.5 * (H + H.T)
        truth = 0.003

        def loss(prm: dict[str, torch.Tensor], H: torch.Tensor = H) -> torch.Tensor:
            return 0.5 * prm["w"] @ (H @ prm["w"])

        def judge(h: Any, truth: float = truth) -> str:
            if h.smallest_nonzero is None or not h.converged:
                return "refused"
            return (
                "ok"
                if abs(h.smallest_nonzero - truth) <= 1e-6 * abs(truth) + 1e-9 and h.null_dim_seen == 3
                else "false_certificate"
            )

        _record(
            out,
            "hessian",
            f"indefinite Hessian p={p} lanczos",
            lambda loss=loss, p=p: hessian_extremes(
                loss, {"w": torch.zeros(p, dtype=torch.float64)}, method="lanczos", maxiter=3000
            ),
            judge,
        )


def errors_family(out: list[dict[str, Any]]) -> None:
    B = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cnt = {"n": 0}

    def mv(x: torch.Tensor) -> torch.Tensor:
        cnt["n"] += 1
        y = B @ x
        return y * float("nan") if cnt["n"] > 5 else y

    _record(
        out,
        "errors",
        "operator starts returning NaN (gkl)",
        lambda: spectral.extreme_singular_values((mv, lambda y: B.T @ y, (30, 20)), method="gkl"),
        lambda e: "silent_wrong",
    )
    short = (lambda x: (B @ x)[:-1], lambda y: B.T @ y, (30, 20))
    _record(
        out,
        "errors",
        "output length disagrees with shape",
        lambda: spectral.extreme_singular_values(short, method="gkl"),
        lambda e: "silent_wrong",
    )
    _record(
        out,
        "errors",
        "meta tensor",
        lambda: spectral.extreme_singular_values(torch.empty(4, 3, device="meta")),
        lambda e: "silent_wrong",
    )
    if not torch.cuda.is_available():
        _record(
            out,
            "errors",
            "device='cuda' on a CPU-only build",
            lambda: spectral.extreme_singular_values(np.eye(3), device="cuda"),
            lambda e: "silent_wrong",
        )
    for zt in (-1.0, float("nan")):
        _record(
            out,
            "errors",
            f"hessian_extremes zero_tol={zt}",
            lambda zt=zt: hessian_extremes(
                lambda p: (p["w"] ** 2).sum(), {"w": torch.ones(3, dtype=torch.float64)}, zero_tol=zt
            ),
            lambda h: "silent_wrong",
        )
        _record(
            out,
            "errors",
            f"softmax_jacobian_spectrum zero_tol={zt}",
            lambda zt=zt: softmax_jacobian_spectrum(
                torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), zero_tol=zt
            ),
            lambda h: "silent_wrong",
        )
    for t in (0.0, -1e-3, float("nan")):
        _record(
            out,
            "errors",
            f"hessian_extremes tol={t}",
            lambda t=t: hessian_extremes(
                lambda p: (p["w"] ** 2).sum(), {"w": torch.ones(3, dtype=torch.float64)}, tol=t
            ),
            lambda h: "silent_wrong",
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--families", default="scale,refuse,softmax,hessian,errors")
    args = ap.parse_args()
    out: list[dict[str, Any]] = []
    fams = args.families.split(",")
    if "scale" in fams:
        scale_family(out)
        _z_sharp_gaussian(out)
    if "refuse" in fams:
        refuse_family(out)
    if "softmax" in fams:
        softmax_family(out)
    if "hessian" in fams:
        hessian_family(out)
    if "errors" in fams:
        errors_family(out)
    summary: dict[str, dict[str, int]] = {}
    for r in out:
        summary.setdefault(r["family"], {}).setdefault(r["verdict"], 0)
        summary[r["family"]][r["verdict"]] += 1
    for r in out:
        if r["verdict"] != "ok":
            print(f"{r['family']:8s} {r['verdict']:18s} {r['case']}  {r['message'] or ''}")
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"summary": summary, "cases": out}, fh, indent=1, allow_nan=False)


if __name__ == "__main__":
    main()
