"""spectral.gram.gram_matrix (BLAS syrk) and the in-cycle convergence tests of the Krylov solvers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _spectral_cases import with_spectrum

import spectral
import spectral.operators.gram as gram_mod
import spectral.solvers.gkl as gkl_mod
from spectral.operators.gram import gram_matrix


@pytest.mark.parametrize("route", ["syrk", "gemm"])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(40, 7), (7, 40), (33, 33), (1, 5), (1500, 3)])
def test_gram_matrix_matches_gemm_and_is_exactly_symmetric(shape, dtype, rtol, route, monkeypatch):
    # "syrk": every size takes BLAS syrk + the blocked mirror (1500 > one mirror block)
    monkeypatch.setattr(gram_mod, "SYRK_MIN_INNER", 1 if route == "syrk" else 10**9)
    A = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dtype)
    for side, ref in (("outer", A.double() @ A.double().T), ("inner", A.double().T @ A.double())):
        G = gram_matrix(A, side)
        assert G.dtype == dtype and G.shape == ref.shape
        assert torch.equal(G, G.T)  # bitwise: the triangle is mirrored
        scale = float(ref.abs().max())
        assert float((G.double() - ref).abs().max()) <= rtol * scale


def test_gram_matrix_noncontiguous_and_grad_inputs(monkeypatch):
    monkeypatch.setattr(gram_mod, "SYRK_MIN_INNER", 1)
    A = torch.randn(30, 12, dtype=torch.float64, requires_grad=True)
    At = A.T  # a non-contiguous view
    assert torch.allclose(gram_matrix(At, "outer"), (A.T @ A).detach(), rtol=1e-13, atol=1e-13)
    assert torch.allclose(gram_matrix(At, "inner"), (A @ A.T).detach(), rtol=1e-13, atol=1e-13)
    # other dtypes take the GEMM route and are symmetrised
    Ai = torch.randn(9, 4, dtype=torch.float64).to(torch.complex128)
    G = gram_matrix(Ai)
    assert torch.allclose(G, 0.5 * (Ai @ Ai.T + (Ai @ Ai.T).T))


def test_gram_matrix_bad_input():
    with pytest.raises(ValueError, match="side"):
        gram_matrix(torch.ones(3, 3), "both")
    with pytest.raises(ValueError, match="2-D"):
        gram_matrix(torch.ones(3))
    with pytest.raises(ValueError, match="2-D"):
        gram_matrix(np.ones((3, 3)))  # type: ignore[arg-type]
    for bad in (float("nan"), float("inf")):
        A = torch.ones(4, 3, dtype=torch.float64)
        A[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            gram_matrix(A)


def test_lanczos_stops_inside_a_cycle_with_a_certified_result():
    # a well-separated top eigenvalue converges long before the 32-vector basis is full
    rng = np.random.default_rng(3)
    lam = np.r_[100.0, np.linspace(1.0, 2.0, 299)]
    Q, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    S = (Q * lam) @ Q.T
    r = spectral.symmetric_lanczos(S, 1, "largest", tol=1e-10)
    assert r.converged
    assert r.iterations < 32  # stopped inside the first cycle (basis size 32)
    lo, hi = r.largest.lower[0], r.largest.upper[0]
    assert lo <= 100.0 <= hi and hi - lo <= 1e-7 * 100.0


def test_gkl_stops_inside_a_cycle_and_top_keep_stays_certified(monkeypatch):
    s = np.r_[50.0, np.linspace(2.0, 1.0, 199)]
    A = with_spectrum(300, 200, s, seed=2)
    r = spectral.golub_kahan_lanczos(A, 1, "largest", tol=1e-10)
    assert r.converged and r.iterations < 24  # default basis for the largest end: 24
    assert r.largest.lower[0] <= 50.0 <= r.largest.upper[0]
    # σ_min only, with and without keeping the largest Ritz vectors at restarts: both
    # certified and correct (the product counts are compared in benchmarks/)
    s2 = np.r_[np.linspace(10.0, 1.0, 190), np.linspace(0.1, 0.101, 10)]
    A2 = with_spectrum(300, 200, s2, seed=4)
    smin = float(np.linalg.svd(A2, compute_uv=False)[-1])
    for keep_top in (True, False):
        monkeypatch.setattr(gkl_mod, "TOP_KEEP_MIN_ELL", 48 if keep_top else 10**9)
        r2 = spectral.golub_kahan_lanczos(A2, 1, "smallest", tol=1e-10, ncv=64)
        assert r2.converged
        assert r2.smallest.lower[0] <= smin <= r2.smallest.upper[0]
        assert abs(r2.sigma_min - smin) <= 1e-9 * smin


@pytest.mark.parametrize("kappa", [1e2, 1e5])
def test_cholesky_lanczos_gram_interval_is_tol_relative(kappa):
    # Lanczos on G⁻¹ alone only bounds ‖Gy − θy‖ by λ_max·tol; gram_extremes refines once so
    # the interval on λ_min is tol-relative (down to the rounding allowance δ)
    from spectral.diagnostics import gram_extremes

    rng = np.random.default_rng(7)
    m = 300
    lam = np.r_[np.logspace(0, np.log10(kappa), m - 1), 1.3 * kappa]
    Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    G = torch.as_tensor((Q * lam) @ Q.T)
    G = 0.5 * (G + G.T)
    true = np.linalg.eigvalsh(G.numpy())
    tol = 1e-10
    r = gram_extremes(G, "cholesky-lanczos", tol=tol)
    assert r.method == "cholesky-lanczos" and r.converged
    lo, hi = r.lambda_min_interval
    assert lo <= true[0] <= hi
    delta = 10.0 * np.sqrt(m) * np.finfo(float).eps * true[-1]
    assert hi - lo <= 2 * tol * true[0] + 2 * delta
    assert abs(r.lambda_min - true[0]) <= 1e-12 * true[-1]


@pytest.mark.parametrize("method", ["dense", "cholesky-lanczos", "auto"])
@pytest.mark.parametrize("log_kappa", [0, 4, 9, 14])
def test_gram_extremes_never_certifies_an_interval_that_misses(method, log_kappa):
    """Known spectra, including near-singular Grams: a converged interval contains the truth."""
    from spectral.diagnostics import gram_extremes

    rng = np.random.default_rng(log_kappa)
    m = 40
    lam = np.logspace(0, -log_kappa, m) * 3.0
    Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    G = torch.as_tensor((Q * lam) @ Q.T)
    G = 0.5 * (G + G.T)
    true = np.linalg.eigvalsh(G.numpy())
    r = gram_extremes(G, method, tol=1e-10)
    lo, hi = r.lambda_max_interval
    assert lo <= true[-1] <= hi
    lo, hi = r.lambda_min_interval
    assert lo <= true[0] <= hi or not r.converged
