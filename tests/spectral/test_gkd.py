"""Golub–Kahan–Davidson (``method="gkd"``) on known spectra: Laplacians, rank deficiency,
κ = 1e12, non-convergence reported as nan; each certified against dense truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _spectral_cases import true_extremes, with_spectrum

import spectral
from spectral.solvers import SOLVERS, golub_kahan_davidson


def laplacian_1d(n: int) -> sp.csr_matrix:
    return sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]).tocsr()


def laplacian_2d(g: int) -> sp.csr_matrix:
    L = laplacian_1d(g)
    eye = sp.identity(g)
    return (sp.kron(L, eye) + sp.kron(eye, L)).tocsr()


def lap_1d_sigma(n: int) -> np.ndarray:
    """σ_k = 2 − 2 cos(kπ/(n+1)), k = 1..n (closed form, ascending)."""
    return 2 - 2 * np.cos(np.arange(1, n + 1) * np.pi / (n + 1))


def assert_certified(r, truth: float, rel: float) -> None:
    assert r.converged, r.reason
    lo, hi = r.smallest.lower[0], r.smallest.upper[0]
    assert lo <= truth * (1 + 1e-12) and truth * (1 - 1e-12) <= hi
    assert abs(r.sigma_min - truth) <= rel * truth


def test_laplacian_1d_closed_form():
    n = 300  # κ ≈ 3.7e4
    r = golub_kahan_davidson(laplacian_1d(n), which="both", tol=1e-10)
    s = lap_1d_sigma(n)
    assert_certified(r, s[0], 1e-9)
    assert abs(r.sigma_max - s[-1]) <= 1e-12 * s[-1]
    assert r.matvecs <= 2 * n + 8  # one cycle of the basis ℓ = n, then 4 certifying products


def test_laplacian_2d_clustered_bottom():
    """The 18×18 grid (324²): σ_2 = σ_3 is double. A single Krylov sequence sees one copy of a
    multiple value; for k ≥ 2 the multiplicity probe finds the second copy and takes it in, so k=3
    returns σ_1, σ_2 = σ_3, each interval holding the k-th smallest."""
    g = 18
    r = golub_kahan_davidson(laplacian_2d(g), k=3, which="smallest", tol=1e-10)
    s1 = lap_1d_sigma(g)
    s2 = np.sort(np.add.outer(s1, s1).ravel())
    assert r.converged, r.reason
    np.testing.assert_allclose(r.smallest.values, s2[:3], rtol=1e-9)
    for lo, hi, t in zip(r.smallest.lower, r.smallest.upper, s2[:3], strict=True):
        assert lo - 1e-13 <= t <= hi + 1e-13


@pytest.mark.parametrize("mult", [3, 5])
def test_a_repeated_smallest_value_is_found_k_times(mult):
    """σ_min = 1e-3 with multiplicity 3 or 5 (next 0.1), k = mult: GKD certified three copies and then
    0.1 and 0.102 as the 4th and 5th smallest (audit B4). The probe takes the missed copies in, a
    Rayleigh–Ritz refinement brings them to tol, and every interval holds the k-th smallest."""
    n = 400
    s = np.r_[np.linspace(1, 0.1, n - mult), np.full(mult, 1e-3)]
    A = with_spectrum(600, n, s, seed=3)
    r = golub_kahan_davidson(A, k=mult, which="smallest", tol=1e-10)
    assert r.converged, r.reason
    assert r.info["multiplicity_probe"]["smallest"]["status"] == "complete"
    np.testing.assert_allclose(r.smallest.values, np.full(mult, 1e-3), rtol=1e-9)
    assert np.all(r.smallest.lower <= 1e-3) and np.all(1e-3 <= r.smallest.upper)


def test_restarted_basis_converges():
    """A basis smaller than min(m, n) forces GD+k restarts; still certified."""
    s = np.r_[np.linspace(10, 2, 10), np.linspace(1.0, 0.5, 290)]
    A = with_spectrum(400, 300, s, seed=2)
    r = golub_kahan_davidson(A, which="both", basis=48, tol=1e-10)
    assert r.info["restarts"] > 0
    assert_certified(r, 0.5, 1e-9)
    assert abs(r.sigma_max - 10) <= 1e-9 * 10


@pytest.mark.parametrize("shape", [(60, 40), (40, 60)])
def test_rank_deficient_null_dim_and_smallest_nonzero(shape):
    m, n = shape
    d = 7
    s = np.r_[np.logspace(0, -3, min(m, n) - d), np.zeros(d)]
    A = with_spectrum(m, n, s, seed=11)
    r = spectral.extreme_singular_values(A, method="gkd")
    assert r.rank_deficient and r.sigma_min == 0.0 and r.cond == math.inf
    assert r.sigma_min_interval[0] == 0.0 and r.sigma_min_interval[1] <= 1e-13
    info = r.details.info
    assert info["null_dim"] == d
    nz = info["smallest_nonzero"]
    assert nz["converged"] and nz["lower"] <= 1e-3 <= nz["upper"]
    assert abs(nz["value"] - 1e-3) <= 1e-9 * 1e-3
    assert "null-space dimension 7" in r.reason


def test_kappa_1e12_certified():
    A = with_spectrum(80, 50, np.logspace(0, -12, 50), seed=12)
    smax, smin, _ = true_extremes(A)
    r = golub_kahan_davidson(A, which="both")
    assert r.converged, r.reason
    assert r.smallest.lower[0] <= smin <= r.smallest.upper[0] + 1e-15
    assert abs(r.sigma_min - smin) <= 1e3 * 1e12 * np.finfo(float).eps * smin + 100 * 2.2e-16


def test_not_converged_headline_is_nan():
    """Out of steps: the headline is nan, the certified interval still holds the truth."""
    n = 400
    r = golub_kahan_davidson(laplacian_1d(n), which="smallest", basis=16, maxiter=60)
    truth = lap_1d_sigma(n)[0]
    assert not r.converged and "not converged" in r.reason
    assert math.isnan(r.sigma_min)
    assert r.smallest.lower[0] <= truth <= r.smallest.upper[0]
    est = spectral.extreme_singular_values(laplacian_1d(n), which="min", method="gkd", maxiter=60)
    assert math.isnan(est.sigma_min) and not est.converged


def test_registered_and_validated():
    assert "gkd" in SOLVERS and "gkd" in spectral.METHODS
    with pytest.raises(ValueError, match="basis"):
        golub_kahan_davidson(np.eye(5), basis=1)
    with pytest.raises(ValueError, match="which"):
        golub_kahan_davidson(np.eye(5), which="middle")
    with pytest.raises(ValueError, match="tol"):
        golub_kahan_davidson(np.eye(5), tol=-1.0)


def test_float32_laplacian():
    n = 120
    r = golub_kahan_davidson(torch.tensor(laplacian_1d(n).toarray(), dtype=torch.float32), which="smallest",
                             tol=1e-4)
    truth = lap_1d_sigma(n)[0]
    assert r.converged, r.reason
    assert r.smallest.lower[0] <= truth * (1 + 1e-6) and truth * (1 - 1e-6) <= r.smallest.upper[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    s = np.r_[np.logspace(0, -3, 50), np.zeros(4)]
    A = with_spectrum(90, 54, s, seed=13)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    r = golub_kahan_davidson(torch.tensor(A, dtype=dtype), which="both", tol=tol, device="cuda")
    assert r.smallest.left.device.type == "cuda"
    assert r.converged and r.rank_deficient and r.info["null_dim"] == 4, r.reason
    nz = r.info["smallest_nonzero"]
    assert nz["lower"] <= 1e-3 * (1 + 1e-6) and 1e-3 * (1 - 1e-6) <= nz["upper"]


def test_auto_keeps_sparse_sparse(monkeypatch):
    """Above AUTO.sparse_matrix_free_min_side a sparse input is solved on its sparse products;
    a GKL that cannot certify falls back to the exact dense route."""
    import dataclasses

    import spectral.policy as policy

    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, sparse_matrix_free_min_side=100))
    n = 150
    est = spectral.extreme_singular_values(laplacian_1d(n))
    assert est.method == "auto->gkl[sparse]" and est.converged
    s = lap_1d_sigma(n)
    assert est.sigma_min_interval[0] <= s[0] <= est.sigma_min_interval[1]
    fb = spectral.extreme_singular_values(laplacian_1d(n), maxiter=3)
    assert fb.method == "auto->dense" and fb.converged
    assert abs(fb.sigma_min - s[0]) <= 1e-9 * s[0]
