"""The spectral audit's wrong certificates and bad errors (scale, dtype, adjoint, arguments).

Every test compares against numpy's float64 SVD/eigh of the stored matrix (float32 entries upcast
exactly) or a closed form, and each failed on the code before the fix: float32 at 1e-22 certified a
σ_max 4.6 % off in a 1e-6-wide interval, the direct solvers certified σ_max = 0 at float64 × 1e-162,
an adjoint-mismatched operator was certified as whichever side the dense route materialised.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import spectral
from spectral.operators import CallableOp, as_operator
from spectral.operators.base import OperatorOutputError, safe_exponent, safe_norm, scale_exponent
from spectral.solvers import golub_kahan_davidson
from spectral.solvers.certify import certify_small_side


def known(m: int, n: int, s: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (U * np.asarray(s)) @ V.T


def truth(A: np.ndarray) -> np.ndarray:
    return np.linalg.svd(np.asarray(A, dtype=np.float64), compute_uv=False)


def inside(iv: tuple[float, float], x: float) -> bool:
    return iv[0] <= x <= iv[1]


# --------------------------------------------------------------------------- 1. dtype-aware scale, norms
def test_safe_exponent_depends_on_the_dtype():
    assert safe_exponent(torch.float64) == 256 and safe_exponent(torch.float32) == 32
    assert scale_exponent(1e-21, torch.float64) == 0  # inside float64's safe range
    assert scale_exponent(1e-21, torch.float32) == 69  # 1e-21 = 0.59·2^-69: scaled into [1/2, 1)
    assert scale_exponent(3.0, torch.float32) == 0


@pytest.mark.parametrize("dtype,c", [(torch.float32, 1e-30), (torch.float32, 1e30), (torch.float64, 1e-200),
                                     (torch.float64, 1e200), (torch.float64, 1e-310)])
def test_safe_norm_neither_underflows_nor_overflows(dtype, c):
    x = torch.tensor([3.0, 4.0, 0.0, 12.0], dtype=torch.float64) * c  # ‖x‖ = 13c
    x = x.to(dtype)
    exact = math.hypot(*(float(v) for v in x))  # Python's hypot scales: exact to rounding at any size
    got = float(safe_norm(x))
    assert abs(got - exact) <= 4 * torch.finfo(dtype).eps * exact + (5e-324 if c < 1e-300 else 0.0)
    cols = torch.stack([x, 2 * x], 1)
    per = safe_norm(cols, dim=0).double().numpy()
    assert np.allclose(per, [exact, 2 * exact], rtol=4 * torch.finfo(dtype).eps, atol=0)


def test_a_tiny_ritz_vector_is_not_taken_for_a_zero_one():
    A = torch.from_numpy(known(30, 20, np.linspace(1.0, 2.0, 20)))
    v = torch.linalg.svd(A)[2][:1].T * 1e-200  # a valid direction, squares underflow to 0
    c = certify_small_side(spectral.as_operator(A), v, end="largest", sigma_max_hint=2.0)
    assert abs(c.values[0] - 2.0) <= 1e-14 and c.lower[0] <= 2.0 <= c.upper[0]


# --------------------------------------------------------------------------- 1. float32 at tiny/huge scale
@pytest.mark.parametrize("c", [1e-22, 1e-25, 1e25])
@pytest.mark.parametrize("method", ["auto", "dense", "gkl"])
def test_float32_at_tiny_and_huge_scale_is_right(c, method):
    A = (known(60, 40, np.linspace(1.0, 2.0, 40), seed=1) * c).astype(np.float32)
    s = truth(A)
    e = spectral.extreme_singular_values(A, method=method)
    assert e.converged
    assert inside(e.sigma_max_interval, s[0]) and inside(e.sigma_min_interval, s[-1])
    assert abs(e.sigma_max - s[0]) <= 1e-5 * s[0] and abs(e.sigma_min - s[-1]) <= 1e-5 * s[-1]
    assert e.sigma_max_interval[1] - e.sigma_max_interval[0] <= 1e-4 * s[0]


@pytest.mark.parametrize("c", [1e-22, 1e25])
def test_float32_linear_operator_and_eigenproblem_at_extreme_scale(c):
    A = (known(50, 30, np.linspace(1.0, 2.0, 30), seed=2) * c).astype(np.float32)
    s = truth(A)
    for method in ("auto", "gkl", "gkd"):
        e = spectral.extreme_singular_values(spla.aslinearoperator(A), method=method)
        assert e.converged and inside(e.sigma_max_interval, s[0]) and inside(e.sigma_min_interval, s[-1])
    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((40, 40)))
    S = ((Q * np.linspace(-3.0, 2.0, 40)) @ Q.T * c).astype(np.float32)
    S = np.triu(S) + np.triu(S, 1).T  # exactly symmetric in float32
    lam = np.linalg.eigvalsh(S.astype(np.float64))
    for method in ("dense", "lanczos"):
        r = spectral.eigen_extremes(S, method=method)
        assert r.converged and inside(r.lambda_max_interval, lam[-1]) and inside(r.lambda_min_interval, lam[0])


# --------------------------------------------------------------------------- 2. direct solvers scale
@pytest.mark.parametrize("c", [1e-160, 1e-300, 1e200])
def test_direct_solvers_are_right_at_any_scale(c):
    A = known(60, 40, np.linspace(1.0, 2.0, 40), seed=0) * c
    s = truth(A)
    runs = {
        "dense_svd": spectral.dense_svd(A),
        "gkl": spectral.golub_kahan_lanczos(A),
        "gkd": golub_kahan_davidson(A, which="both"),
        "arpack": spectral.arpack_svds(A),
    }
    B = known(60, 40, np.r_[2.0, np.logspace(-2, -6, 39)], seed=0) * c  # a gap for the range finder
    rb = spectral.randomized_svd(B)
    assert rb.converged and rb.largest.lower[0] <= 2 * c <= rb.largest.upper[0]
    assert abs(rb.largest.values[0] - 2 * c) <= 1e-13 * c
    for name, r in runs.items():
        assert r.converged, name
        assert r.largest.lower[0] <= s[0] <= r.largest.upper[0], name
        assert abs(r.largest.values[0] - s[0]) <= 1e-13 * s[0], name
        if r.smallest is not None:
            assert r.smallest.lower[0] <= s[-1] <= r.smallest.upper[0], name
            assert abs(r.smallest.values[0] - s[-1]) <= 1e-13 * s[-1], name
    Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((60, 60)))
    S = (Q * np.linspace(-1.0, 1.0, 60)) @ Q.T * c
    S = (S + S.T) / 2
    r = spectral.symmetric_lanczos(S, k=3)
    lam = np.linalg.eigvalsh(S)
    assert r.converged
    assert np.all(np.abs(r.largest.values - lam[::-1][:3]) <= 1e-12 * c)
    assert np.all((r.largest.lower <= lam[::-1][:3]) & (lam[::-1][:3] <= r.largest.upper))


def test_direct_solvers_give_exact_multiples():
    A = known(30, 20, np.logspace(0, -4, 20), seed=5)
    for fn in (spectral.dense_svd, spectral.golub_kahan_lanczos):
        b = fn(A)
        for k in (-1000, -540, 700):
            r = fn(np.ldexp(A, k))
            assert r.info["scale_exponent"] != 0
            assert r.largest.values[0] == math.ldexp(b.largest.values[0], k)
            assert r.smallest.upper[0] == math.ldexp(b.smallest.upper[0], k)


@pytest.mark.parametrize("shift", [1074, 1070, 1060])
def test_bounds_that_underflow_when_unscaled_still_hold(shift):
    """Integer matrices times ``2^-shift``: the unscaled bounds are subnormal or underflow to 0 and are
    rounded outwards. At ``2^-1074`` a full-rank A had σ_min certified in ``[0, 0]`` (truth 8.0e-325) and
    an indefinite S λ_min in ``[-0, 0]``. Truth from mpmath at 50 digits."""
    import mpmath

    mpmath.mp.dps = 50
    scale = mpmath.mpf(2) ** -shift
    A = np.array([[3.0, 4.0], [2.0, 3.0]])  # det 1: full rank
    M = mpmath.matrix(A.tolist())
    sv = sorted(mpmath.sqrt(x) for x in mpmath.eigsy(M.T * M)[0])
    e = spectral.extreme_singular_values(np.ldexp(A, -shift))
    for (lo, hi), t in ((e.sigma_min_interval, sv[0] * scale), (e.sigma_max_interval, sv[-1] * scale)):
        assert mpmath.mpf(lo) <= t <= mpmath.mpf(hi)
    assert e.sigma_min_interval[1] > 0
    if shift == 1074:
        assert "below float64's normal range" in e.reason
    S = np.array([[3.0, 4.0], [4.0, 5.0]])  # eigenvalues 8.12, -0.123
    ev = sorted(mpmath.eigsy(mpmath.matrix(S.tolist()))[0])
    ee = spectral.eigen_extremes(np.ldexp(S, -shift))
    for (lo, hi), t in ((ee.lambda_min_interval, ev[0] * scale), (ee.lambda_max_interval, ev[-1] * scale)):
        assert mpmath.mpf(lo) <= t <= mpmath.mpf(hi)


def test_gkd_null_space_info_is_unscaled():
    A = known(40, 20, np.r_[np.linspace(1.0, 2.0, 18), 0.0, 0.0], seed=6) * 1e-200
    r = golub_kahan_davidson(A)
    assert r.rank_deficient and r.info["null_dim"] == 2
    nz = r.info["smallest_nonzero"]
    assert nz["lower"] <= 1e-200 <= nz["upper"] and abs(nz["value"] - 1e-200) <= 1e-12 * 1e-200


def test_overflowing_squared_norm_is_not_called_a_broken_operator():
    A = known(60, 40, np.linspace(1.0, 2.0, 40), seed=7) * 1e200
    s = truth(A)
    At = torch.from_numpy(A)
    mf = (lambda x: At @ x, lambda y: At.T @ y, A.shape)  # matrix-free: scaled after the first product
    for r in (spectral.golub_kahan_lanczos(A), spectral.golub_kahan_lanczos(mf),
              golub_kahan_davidson(mf, which="both")):
        assert r.converged and r.largest.lower[0] <= s[0] <= r.largest.upper[0]
    A32 = (A / 1e200 * 1e25).astype(np.float32)
    r = spectral.golub_kahan_lanczos(torch.from_numpy(A32))
    s32 = truth(A32)
    assert r.converged and r.largest.lower[0] <= s32[0] <= r.largest.upper[0]


# --------------------------------------------------------------------------- 3. adjoint dot test
@pytest.mark.parametrize("shape", [(50, 30), (30, 50)])
def test_adjoint_mismatch_is_refused(shape):
    A = known(*shape, np.logspace(0, -3, 30), seed=5)
    B = known(*shape, np.logspace(1, -1, 30), seed=6)
    L = spla.LinearOperator(shape, matvec=lambda x: A @ x, rmatvec=lambda y: B.T @ y, dtype=np.float64)
    At, Bt = torch.from_numpy(A), torch.from_numpy(B)
    for bad in (L, (lambda x: At @ x, lambda y: Bt.T @ y, shape),
                CallableOp(lambda x: At @ x, lambda y: Bt.T @ y, shape)):
        for method in ("auto", "dense", "gram"):
            with pytest.raises(ValueError, match="A: rmatvec is not the adjoint of matvec"):
                spectral.extreme_singular_values(bad, method=method)
    S = torch.from_numpy(np.triu(np.random.default_rng(0).standard_normal((8, 8))))  # rmatvec = matvec
    with pytest.raises(ValueError, match="not the adjoint"):
        as_operator((lambda x: S @ x, lambda y: S @ y, (8, 8)))


@pytest.mark.parametrize("method", ["auto", "dense", "gram", "gkl", "gkd"])
def test_a_low_rank_adjoint_mismatch_is_refused_at_the_computed_pairs(method):
    """rmatvec = Bᵀ with B = A + c·u_n v_nᵀ on A's isolated σ_min = 1e-9 pair: the random dot test sees
    only ‖E‖_F/sqrt(mn) of it. The audit's 1500×1000 case (c = 1e-9, 4.5e6·eps of ‖A‖) passed it and the
    dense and Gram routes certified A's σ_min = 1e-9 (B's is 2e-9); here 300×200 with c = 5e-12 (B's
    σ_min 0.5 % off A's). At the computed pair the mismatch is |uᵀEv| = c in full (audit B3)."""
    m, n = 300, 200
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (U * np.r_[np.logspace(0, -3, n - 1), 1e-9]) @ V.T
    B = A + 5e-12 * np.outer(U[:, -1], V[:, -1])
    L = spla.LinearOperator((m, n), matvec=lambda x: A @ x, rmatvec=lambda y: B.T @ y,
                            matmat=lambda X: A @ X, rmatmat=lambda Y: B.T @ Y, dtype=np.float64)
    as_operator(L)  # the construction-time random test cannot see it
    with pytest.raises(ValueError, match="not the adjoint of matvec at the computed singular pair"):
        spectral.extreme_singular_values(L, which="min", method=method, maxiter=3000)
    good = spla.aslinearoperator(A)  # the same matrix with a true adjoint stays certified
    e = spectral.extreme_singular_values(good, which="min", method="dense")
    assert e.converged and e.sigma_min_interval[0] <= 1e-9 <= e.sigma_min_interval[1]


def test_legitimate_float32_and_toolkit_operators_pass_the_dot_test():
    rng = np.random.default_rng(2)
    for m, n in [(1, 5000), (5000, 1), (300, 2000), (2000, 300)]:
        A = rng.standard_normal((m, n)).astype(np.float32)
        op = as_operator(spla.aslinearoperator(A))
        assert op.adjoint_checked and op.n_products == 0 and op.dtype == torch.float32  # probe: uncounted
    n = 1024
    h = rng.standard_normal(n).astype(np.float32)
    H = np.fft.fft(h)
    C = np.stack([np.roll(h, k) for k in range(n)], 1)  # circulant: matvec by FFT, rmatvec by a GEMV
    fft = spla.LinearOperator((n, n), matvec=lambda x: np.fft.ifft(H * np.fft.fft(x)).real.astype(np.float32),
                              rmatvec=lambda y: C.T @ y, dtype=np.float32)
    assert as_operator(fft).adjoint_checked
    M = sp.random(3000, 400, density=0.01, random_state=0, dtype=np.float32)
    assert as_operator(spla.aslinearoperator(M)).adjoint_checked
    Bt = torch.from_numpy(known(20, 12, np.linspace(1, 2, 12)))
    e = spectral.extreme_singular_values((lambda x: Bt @ x, lambda y: Bt.T @ y, (20, 12)))
    assert e.converged and abs(e.sigma_max - 2.0) <= 1e-13 and e.matvecs == 12


# --------------------------------------------------------------------------- 4. minor
def test_gkl_respects_a_small_maxiter():
    A = known(300, 200, np.logspace(0, -3, 200), seed=8)
    for maxiter in (1, 3, 10):
        r = spectral.golub_kahan_lanczos(A, maxiter=maxiter)
        assert r.iterations == maxiter and r.matvecs <= 2 * maxiter + 4
        assert not r.converged and "maxiter reached" in r.reason
        s = truth(A)  # each certified interval holds a singular value (not necessarily the extreme one)
        for b in (r.largest, r.smallest):
            assert np.any((b.lower[0] <= s) & (s <= b.upper[0]))
        assert r.largest.lower[0] <= s[0] and r.smallest.upper[0] >= s[-1]  # Courant–Fischer sides


def test_arpack_and_lobpcg_refuse_k_equal_to_min_side():
    A = known(8, 5, np.linspace(1.0, 2.0, 5))
    with pytest.raises(ValueError, match=r"k=5: svds\(solver='arpack'\)"):
        spectral.arpack_svds(A, k=5)
    with pytest.raises(ValueError, match=r"k=1: svds\(solver='lobpcg'\)"):
        spectral.extreme_singular_values(np.ones((1, 6)), method="lobpcg")
    assert spectral.propack_svds(A, k=5, which="largest").largest.values.size == 5


@pytest.mark.parametrize("layout", ["coo", "csr", "csc"])
def test_torch_sparse_tensors_are_accepted(layout):
    A = torch.from_numpy(known(10, 6, np.linspace(1.0, 2.0, 6)))
    X = {"coo": A.to_sparse(), "csr": A.to_sparse_csr(), "csc": A.to_sparse_csc()}[layout]
    e = spectral.extreme_singular_values(X)
    assert e.converged and abs(e.sigma_max - 2.0) <= 1e-14 and abs(e.sigma_min - 1.0) <= 1e-14
    assert spectral.golub_kahan_lanczos(X).converged


def test_symmetric_lanczos_refuses_a_non_symmetric_input():
    rng = np.random.default_rng(3)
    S = np.diag(np.linspace(1.0, 2.0, 40)) + np.triu(rng.standard_normal((40, 40)), 1) * 0.3
    for bad in (S, sp.csr_matrix(S), (lambda x: torch.from_numpy(S) @ x, lambda y: torch.from_numpy(S.T) @ y,
                                      (40, 40))):
        with pytest.raises(ValueError, match="S is not symmetric"):
            spectral.symmetric_lanczos(bad)
    Sym = (S + S.T) / 2
    r = spectral.symmetric_lanczos(Sym)
    assert r.converged and abs(r.lambda_max - np.linalg.eigvalsh(Sym)[-1]) <= 1e-12


def _skew_perturbed(n: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    S = (Q * np.r_[np.linspace(-0.9, 0.9, n - 2), 1 - 1e-12, 1.0]) @ Q.T
    S = 0.5 * (S + S.T)
    return S, S + k * (np.outer(Q[:, -1], Q[:, -2]) - np.outer(Q[:, -2], Q[:, -1]))


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_a_low_rank_skew_part_is_refused_on_a_stored_matrix(method):
    """A rank-2 skew part of 5e-10 (||S - Sᵀ|| = 1e-9·||S||, 5e6·eps) turns the top pair into the complex
    1 ± 5e-10 i; a random probe sees only ‖K‖_F/n of it and the dense route certified a real λ_max = 1 in
    a 1e-13-wide interval. A stored S is now tested on S − Sᵀ itself."""
    _, bad = _skew_perturbed(400, 5e-10)
    for S in (bad, sp.csr_matrix(bad)):
        with pytest.raises(ValueError, match=r"S is not symmetric: \|\|S - S\^T\|\|_2"):
            spectral.eigen_extremes(S, method=method)


def test_rounding_level_asymmetry_is_accepted_and_widens_the_interval():
    """An asymmetry of a few ulps (as a BLAS-formed Gram has) passes; the eigenvalues of S lie within
    ‖S − Sᵀ‖₂/2 of the symmetric part's, so the intervals are widened by that much and hold."""
    S, _ = _skew_perturbed(200, 0.0)
    rng = np.random.default_rng(1)
    E = rng.standard_normal(S.shape) * 1e-15
    T = S + np.triu(E, 1)  # asymmetric by ≈ 1e-15 per entry
    K2 = np.linalg.norm(T - T.T, 2)
    lam = np.linalg.eigvals(T)
    e = spectral.eigen_extremes(T, method="dense")
    assert e.converged
    lo, hi = e.lambda_max_interval
    assert lo <= float(np.max(lam.real)) <= hi
    exact = spectral.eigen_extremes(S, method="dense")  # exactly symmetric: no widening
    assert (hi - lo) - (exact.lambda_max_interval[1] - exact.lambda_max_interval[0]) >= 0.99 * K2
    lo, hi = e.lambda_min_interval
    assert lo <= float(np.min(lam.real)) <= hi


def test_argument_errors_name_the_argument():
    A = known(8, 5, np.linspace(1.0, 2.0, 5))
    for seed in (1.5, True, "a", 2**70, -1):
        with pytest.raises(ValueError, match="seed must be an integer"):
            spectral.extreme_singular_values(A, seed=seed)
        with pytest.raises(ValueError, match="seed"):
            spectral.golub_kahan_lanczos(A, seed=seed)
    with pytest.raises(ValueError, match="maxiter must be"):
        spectral.extreme_singular_values(A, maxiter="x")
    with pytest.raises(TypeError, match="tol must be"):
        spectral.extreme_singular_values(A, tol="1e-3")
    At = torch.from_numpy(A)
    with pytest.raises(ValueError, match=r"A: the shape .* two non-negative integers.*\(3\.5, 3\)"):
        spectral.extreme_singular_values((lambda x: At @ x, lambda y: At.T @ y, (3.5, 3)))
    if np.dtype(np.longdouble).itemsize > 8:  # extended precision on this platform
        with pytest.raises(ValueError, match="A: the array has dtype float"):
            spectral.extreme_singular_values(A.astype(np.longdouble))
    wrong = spla.LinearOperator((8, 5), matvec=lambda x: np.ones(3), rmatvec=lambda y: A.T @ y,
                                dtype=np.float64)
    with pytest.raises(OperatorOutputError, match=r"A \(scipy LinearOperator, shape \(8, 5\)\): its matvec"):
        spectral.extreme_singular_values(wrong)


def test_masked_array_with_masked_entries_is_refused():
    A = np.random.default_rng(0).standard_normal((5, 3))
    with pytest.raises(TypeError, match="A: a masked array with masked entries"):
        spectral.extreme_singular_values(np.ma.array(A, mask=np.eye(5, 3, dtype=bool)))
    # no entry masked: the one matrix it holds
    got = spectral.extreme_singular_values(np.ma.array(A))
    np.testing.assert_allclose(got.sigma_max, np.linalg.svd(A, compute_uv=False)[0], rtol=1e-14)
