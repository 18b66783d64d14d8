"""Issue 16, sections 2–5: scale-safe solvers, refusals, certified attention-side diagnostics and
errors that name the cause. Every case is constructed here, with exact or mpmath references."""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import scipy.sparse as sps
import scipy.sparse.linalg as spla
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attncond.spectral as spectral
from attncond.spectral.diagnostics import attention_output_matrix, hessian_extremes, softmax_jacobian_spectrum
from attncond.spectral.operators.base import OperatorOutputError
from attncond.spectral.solvers.certify import certify_small_side, meets_tol

pytestmark = pytest.mark.filterwarnings("ignore")

_rng = np.random.default_rng(1)
_Q1, _ = np.linalg.qr(_rng.standard_normal((8, 8)))
_Q2, _ = np.linalg.qr(_rng.standard_normal((5, 5)))
SV = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
A = _Q1[:, :5] @ np.diag(SV) @ _Q2.T  # known singular values 5, 4, 3, 2, 1
ROUTES = ("dense", "gram", "gkl", "arpack", "propack", "lobpcg", "randomized")


def _contains(iv: tuple[float, float], x: float) -> bool:
    return iv[0] <= x <= iv[1]


def _no_false_certificate(e: spectral.SpectralEstimate, smax: float, smin: float | None) -> None:
    if e.converged:
        assert _contains(e.sigma_max_interval, smax)
        if smin is not None:
            assert _contains(e.sigma_min_interval, smin)


# --------------------------------------------------------------------------- 1. scale
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("e", [-1000, 1000])
def test_scaled_by_power_of_two_gives_exactly_the_scaled_result(route, e):
    which = (
        "max" if route in ("randomized", "lobpcg", "propack") else ("max", "min")
    )  # peers: sigma_min fails at any scale
    base = spectral.extreme_singular_values(A, method=route, which=which)
    s = spectral.extreme_singular_values(np.ldexp(A, e), method=route, which=which)
    assert s.converged == base.converged
    if route != "lobpcg":  # lobpcg does not converge here at any scale (the same refusal)
        assert s.converged
        assert s.sigma_max == math.ldexp(base.sigma_max, e)
        assert s.sigma_max_interval == tuple(math.ldexp(x, e) for x in base.sigma_max_interval)
        assert _contains(s.sigma_max_interval, math.ldexp(SV[0], e) * (1 - 1e-15))
    if which != "max":
        assert s.sigma_min == math.ldexp(base.sigma_min, e) and s.cond == base.cond
        assert _contains(s.sigma_min_interval, math.ldexp(SV[-1], e) * (1 + 1e-15)) or not s.converged
    _no_false_certificate(s, math.ldexp(SV[0], e), None)


@pytest.mark.parametrize("route", ["dense", "gkl"])
@pytest.mark.parametrize("e", [-1000, 1000])
def test_matrix_free_scaling_is_exact(route, e):
    At, Ae = torch.from_numpy(A), torch.from_numpy(np.ldexp(A, e))
    f0 = spectral.extreme_singular_values((lambda x: At @ x, lambda y: At.T @ y, A.shape), method=route)
    f = spectral.extreme_singular_values((lambda x: Ae @ x, lambda y: Ae.T @ y, A.shape), method=route)
    assert f.converged and f0.converged and f.matvecs == f0.matvecs
    assert f.sigma_max == math.ldexp(f0.sigma_max, e) and f.sigma_min == math.ldexp(f0.sigma_min, e)
    assert f.details.info["scale_exponent"] != 0


@pytest.mark.parametrize("c", [1e-160, 1e-300, 1e300])
@pytest.mark.parametrize("route", ["dense", "gram", "gkl", "arpack"])
def test_scaled_identity_is_certified_at_its_scale(c, route):
    e = spectral.extreme_singular_values(np.eye(5) * c, method=route)
    assert e.converged and not e.rank_deficient and e.cond == pytest.approx(1.0, rel=1e-14)
    assert _contains(e.sigma_max_interval, c) and _contains(e.sigma_min_interval, c)
    assert e.sigma_max == pytest.approx(c, rel=1e-15)


@pytest.mark.parametrize("method", ["dense", "lanczos"])
@pytest.mark.parametrize("e", [-1000, 1000])
def test_eigen_extremes_scaled(method, e):
    S = np.diag([1.0, 2.0, 3.0, 4.0, 5.0])
    b = spectral.eigen_extremes(S, method=method)
    s = spectral.eigen_extremes(np.ldexp(S, e), method=method)
    assert s.converged and s.lambda_max == math.ldexp(b.lambda_max, e)
    assert _contains(s.lambda_max_interval, math.ldexp(5.0, e)) and _contains(
        s.lambda_min_interval, math.ldexp(1.0, e)
    )


def test_unavoidable_overflow_is_a_clear_error():
    with pytest.raises(OverflowError, match="exceeds the float64 range"):
        spectral.extreme_singular_values(np.full((4, 4), 1e308))
    big = torch.full((4, 4), 1e308, dtype=torch.float64)  # matrix-free: the user's own products overflow
    with pytest.raises(OperatorOutputError, match="NaN/inf.*overflow"):
        spectral.extreme_singular_values(
            (lambda x: big @ (x * 0 + 1), lambda y: big.T @ y, (4, 4)), method="gkl"
        )


def test_sparse_input_is_scaled_exactly():
    M = sps.csr_matrix(np.ldexp(A, -1000))
    s = spectral.extreme_singular_values(M, method="gkl")
    b = spectral.extreme_singular_values(sps.csr_matrix(A), method="gkl")
    assert s.converged and s.sigma_min == math.ldexp(b.sigma_min, -1000)


def test_attention_output_matrix_of_a_sharp_gaussian_block_is_right():
    from attncond.models import AttentionBlock
    from attncond.spectral.diagnostics.structured import attention_output_matrix as z_matrix

    blk = AttentionBlock(
        2, 2, residual=False, ffn=False, kernel="gaussian", regime="sharp", init_scale=3.0, seed=2
    )
    X = torch.randn(1, 3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3.0
    Z = z_matrix(blk, X, False).detach().numpy()
    assert 0 < np.abs(Z).max() < 1e-154  # the regime the issue reports
    with mpmath.workdps(60):
        truth = float(mpmath.svd_r(mpmath.matrix(Z.tolist()), compute_uv=False)[0])
    z = attention_output_matrix(blk, X, residual=False)
    assert z.estimate.converged and _contains(z.sigma_max_interval, truth)
    assert z.sigma_max == pytest.approx(truth, rel=1e-12)


# --------------------------------------------------------------------------- 2. refusals
def test_zero_ritz_vector_is_never_certified():
    T = spectral.as_operator(A)
    c = certify_small_side(T, torch.zeros(5, 1, dtype=torch.float64), end="smallest", sigma_max_hint=5.0)
    assert math.isnan(c.values[0]) and not meets_tol(c, 1e-10).any() and c.upper[0] == math.inf
    V = torch.full((5, 1), float("nan"), dtype=torch.float64)
    c = certify_small_side(T, V, end="largest", sigma_max_hint=5.0)
    assert math.isnan(c.values[0]) and not meets_tol(c, 1e-10).any()


@pytest.mark.parametrize("seed", range(3))
def test_propack_case_gives_no_false_certificate(seed):
    M = np.diag(np.logspace(0, -12, 12)) @ np.random.default_rng(seed).standard_normal((12, 8))
    sv = np.linalg.svd(M, compute_uv=False)
    e = spectral.extreme_singular_values(M, method="propack")
    _no_false_certificate(e, sv[0], sv[-1])
    if not e.converged:
        assert e.reason


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_eigen_extremes_refuses_non_symmetric(method):
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.eigen_extremes(np.array([[1.0, 100.0], [0.0, 2.0]]), method=method)
    B = np.random.default_rng(0).standard_normal((30, 30))
    S = B @ B.T  # symmetric up to rounding: accepted
    assert spectral.eigen_extremes(S, method=method).converged


def test_callable_dtype_and_complex_refused():
    B = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(OperatorOutputError, match="float32 inside a torch.float64"):
        spectral.extreme_singular_values((lambda x: (B @ x).float(), lambda y: (B.T @ y).float(), (6, 4)))
    e = spectral.extreme_singular_values(
        (lambda x: B @ x.double(), lambda y: B.T @ y.double(), (6, 4)), dtype="float32"
    )  # more precision than declared: fine
    assert e.converged
    C = np.random.default_rng(1).standard_normal((6, 4)) * (1 + 1j)
    with pytest.raises(ValueError, match="complex"):
        spectral.extreme_singular_values(spla.aslinearoperator(C))
    with pytest.raises(ValueError, match="complex"):
        spectral.extreme_singular_values(C)
    Ct = torch.from_numpy(C)
    with pytest.raises(OperatorOutputError, match="complex"):
        spectral.extreme_singular_values(
            (lambda x: Ct @ x.to(Ct.dtype), lambda y: Ct.T @ y.to(Ct.dtype), (6, 4))
        )


def test_unused_parameter_names_are_an_error():
    X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    W = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def f(p):  # reads "W_Q", falls back to a constant
        return torch.tanh(X @ p.get("W_Q", W).T)

    with pytest.raises(ValueError, match=r"does not use the parameter\(s\) \['w_q'\]"):
        spectral.JacobianOperator(f, {"w_q": W})
    with pytest.raises(ValueError, match="does not use"):
        spectral.HessianOperator(lambda p: f(p).sum(), {"w_q": W})
    J = spectral.JacobianOperator(f, {"W_Q": W})  # the right name works
    assert spectral.extreme_singular_values(J).converged


def _coupled_last(p, Xb):
    h = torch.tanh(Xb @ p["W"].T)
    return h + 0.5 * h[-1:]  # every sample reads the last one; the last one alone is unchanged


def _coupled_prev(p, Xb):
    h = torch.tanh(Xb @ p["W"].T)
    return h + 0.5 * h.roll(1, dims=0) * (torch.arange(h.shape[0])[:, None] > 0)


@pytest.mark.parametrize("fn", [_coupled_last, _coupled_prev])
def test_sample_dim_coupling_is_detected_beyond_sample_zero(fn):
    X = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    W = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="sample_dim=0"):
        spectral.JacobianOperator(fn, {"W": W}, (X,), sample_dim=0)
    spectral.JacobianOperator(lambda p, Xb: torch.tanh(Xb @ p["W"].T), {"W": W}, (X,), sample_dim=0)


@pytest.mark.parametrize("dtype, ok", [(torch.float32, True), (torch.float64, False)])
def test_sample_dim_tolerance_is_dtype_scaled(dtype, ok):
    X = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    W = torch.randn(2, 3, dtype=dtype, generator=torch.Generator().manual_seed(2))

    def fn(p, Xb):  # batched and single-sample evaluation differ by an honest 6e-8
        return torch.tanh(Xb @ p["W"].T) + (6e-8 if Xb.shape[0] > 1 else 0.0)

    if ok:
        J = spectral.JacobianOperator(fn, {"W": W}, (X,), sample_dim=0)
        assert J.n_samples == 5
    else:
        with pytest.raises(ValueError, match="does not reproduce"):
            spectral.JacobianOperator(fn, {"W": W}, (X,), sample_dim=0)


def test_per_sample_jacobian_at_tiny_scale_keeps_its_route():
    X = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    W = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fn = lambda p, Xb: torch.tanh(Xb @ p["W"].T)  # noqa: E731
    base = spectral.extreme_singular_values(spectral.JacobianOperator(fn, {"W": W}, (X,), sample_dim=0))
    tiny = spectral.extreme_singular_values(
        spectral.JacobianOperator(lambda p, Xb: fn(p, Xb) * 2.0**-900, {"W": W}, (X,), sample_dim=0)
    )
    assert tiny.converged and "per-sample" in tiny.method and tiny.method == base.method
    assert tiny.sigma_max == math.ldexp(base.sigma_max, -900) and tiny.sigma_min == math.ldexp(
        base.sigma_min, -900
    )


# --------------------------------------------------------------------------- 3. softmax Jacobian
def _mp_eigs(s: np.ndarray, digits: int = 60) -> list:
    """Eigenvalues of diag(ŝ) − ŝŝᵀ with ŝ = s/Σs, mpmath eigsy at ``digits`` beyond the dynamic range."""
    pos = [float(v) for v in s if v > 0]
    with mpmath.workdps(digits + int(math.ceil(-math.log10(min(pos)))) + 10):
        v = [mpmath.mpf(float(x)) for x in s]
        tot = mpmath.fsum(v)
        v = [x / tot for x in v]
        n = len(v)
        M = mpmath.matrix(n, n)
        for i in range(n):
            for j in range(n):
                M[i, j] = (v[i] if i == j else 0) - v[i] * v[j]
        return sorted(mpmath.eigsy(M, eigvals_only=True))


def _sharp_rows() -> list[np.ndarray]:
    g = np.random.default_rng(16)
    rows = []
    for _ in range(24):
        n = int(g.integers(3, 9))
        logk = g.uniform(2, 30)
        z = g.standard_normal(n) * 2
        z[0] += math.log(10.0) * logk  # one dominant entry: κ ≈ 10^logk
        s = np.exp(z - z.max())
        rows.append(s / s.sum())
    tiny = np.finfo(np.float64).tiny
    rows.append(np.array([1.0, tiny, 2 * tiny, 1e-300, 0.25]))
    rows.append(np.array([0.3, 0.3 + 2**-52, 0.4 - 2**-52]))  # near tie
    rows.append(np.array([1.0 - 1e-30, 1e-30]))
    return [r / r.sum() for r in rows]


def test_softmax_jacobian_eigenvalues_have_high_relative_accuracy():
    worst, kmax = 0.0, 0.0
    for s in _sharp_rows():
        ref = _mp_eigs(s)[1:]
        r = softmax_jacobian_spectrum(torch.from_numpy(s))
        assert r.eigenvalues[0] == 0.0
        for a, b in zip(r.eigenvalues_perp, ref, strict=True):
            worst = max(worst, abs(float((mpmath.mpf(float(a)) - b) / b)))
        kref = float(ref[-1] / ref[0])
        kmax = max(kmax, kref)
        assert float(r.kappa) == pytest.approx(kref, rel=1e-10)
        lo, hi = r.kappa_interval
        assert lo <= kref <= hi
    assert worst <= 1e-10 and kmax > 1e28


def test_softmax_jacobian_ties_and_zeros_deflate_exactly():
    r = softmax_jacobian_spectrum(
        torch.tensor([[0.25, 0.25, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    )
    np.testing.assert_array_equal(r.eigenvalues_perp[0][:2], [0.0, 0.25])
    np.testing.assert_array_equal(r.eigenvalues_perp[1][:2], [0.0, 0.0])
    assert math.isinf(r.kappa[0]) and r.n_singular == 2
    r = softmax_jacobian_spectrum(torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    ref = [float(x) for x in _mp_eigs(np.array([0.5, 0.25, 0.25]))[1:]]
    np.testing.assert_allclose(r.eigenvalues_perp, ref, rtol=1e-15)


def test_softmax_jacobian_spectrum_zero_tol_validated():
    s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="zero_tol"):
            softmax_jacobian_spectrum(s, zero_tol=bad)
    assert math.isinf(float(softmax_jacobian_spectrum(s, zero_tol=0.5).kappa))


# --------------------------------------------------------------------------- 3. Hessian
def _quadratic(lam: np.ndarray, seed: int = 0):
    p = lam.size
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((p, p)))
    H = torch.from_numpy((Q * lam) @ Q.T)
    H = 0.5 * (H + H.T)
    return (lambda prm: 0.5 * prm["w"] @ (H @ prm["w"])), {"w": torch.zeros(p, dtype=torch.float64)}


def test_hessian_lanczos_refuses_interior_smallest_nonzero_of_an_indefinite_hessian():
    lam = np.concatenate([np.linspace(-15.4, -1.0, 40), np.linspace(0.003, 3.0, 37), np.zeros(3)])
    loss, params = _quadratic(lam)
    lz = hessian_extremes(loss, params, method="lanczos", tol=1e-10)
    assert lz.indefinite and lz.smallest_nonzero is None and not lz.converged and "interior" in lz.reason
    assert lz.lambda_min == pytest.approx(-15.4, rel=1e-8) and not lz.null_dim_exact
    dense = hessian_extremes(loss, params, method="dense")
    assert dense.smallest_nonzero == pytest.approx(0.003, rel=1e-9) and dense.null_dim_seen == 3


def test_hessian_lanczos_certifies_psd_smallest_nonzero():
    lam = np.concatenate([np.zeros(2), [0.05], np.linspace(1.0, 3.0, 57)])
    loss, params = _quadratic(lam, seed=1)
    lz = hessian_extremes(loss, params, method="lanczos", tol=1e-10, k=4)
    assert lz.converged and lz.smallest_nonzero == pytest.approx(0.05, rel=1e-8) and lz.null_dim_seen >= 1


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"zero_tol": -1.0}, "zero_tol"),
        ({"zero_tol": float("nan")}, "zero_tol"),
        ({"tol": 0.0}, "tol"),
        ({"tol": -1e-3}, "tol"),
        ({"tol": float("nan")}, "tol"),
    ],
)
def test_hessian_tolerances_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        hessian_extremes(lambda p: (p["w"] ** 2).sum(), {"w": torch.ones(3, dtype=torch.float64)}, **kw)


# --------------------------------------------------------------------------- 4. errors
def test_operator_that_starts_returning_nan_names_operator_and_product():
    B = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    count = {"n": 0}

    def mv(x):
        count["n"] += 1
        return B @ x * (float("nan") if count["n"] > 5 else 1.0)

    with pytest.raises(
        OperatorOutputError, match=r"operator CallableOp \(shape \(30, 20\)\), product #\d+ .*NaN"
    ):
        spectral.extreme_singular_values((mv, lambda y: B.T @ y, (30, 20)), method="gkl")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("side,method", [("matvec", "gkl"), ("rmatvec", "gkl"), ("matvec", "gkd"),
                                         ("rmatvec", "gkd"), ("symmetric", "lanczos")])
def test_krylov_products_that_turn_non_finite_are_refused(side, bad, method):
    """The Krylov inner loops skip the per-product guard and test the norm they take anyway: a NaN or
    inf in either product, at any step, is still the guard's error naming the operator."""
    g = torch.Generator().manual_seed(1)
    B = torch.randn(40, 25, dtype=torch.float64, generator=g)
    S = B.T @ B
    count = {"n": 0}

    def spoil(v):
        count["n"] += 1
        if count["n"] > 9:
            v = v.clone()
            v[3] = bad
        return v

    # "(norm nan|inf)": raised by the inner loop's own test, not by a later guarded product
    with pytest.raises(OperatorOutputError, match=r"product #\d+ \(r?matvec\) returned NaN/inf value\(s\) "
                                                  r"\(norm (nan|inf)\)"):
        if side == "symmetric":
            spectral.eigen_extremes((lambda x: spoil(S @ x), lambda y: spoil(S @ y), (25, 25)), method=method)
        elif side == "matvec":
            op = (lambda x: spoil(B @ x), lambda y: B.T @ y, (40, 25))
            spectral.extreme_singular_values(op, method=method)
        else:
            op = (lambda x: B @ x, lambda y: spoil(B.T @ y), (40, 25))
            spectral.extreme_singular_values(op, method=method)


def test_wrong_output_length_and_meta_and_cuda_are_clear_errors():
    B = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    msg = r"returned 29 entries.*declared shape \(30, 20\) needs \(30,\)"
    with pytest.raises(OperatorOutputError, match=msg):
        spectral.extreme_singular_values((lambda x: (B @ x)[:-1], lambda y: B.T @ y, (30, 20)), method="gkl")
    with pytest.raises(ValueError, match="meta tensor"):
        spectral.extreme_singular_values(torch.empty(4, 3, device="meta"))
    with pytest.raises(ValueError, match="meta tensor"):
        spectral.JacobianOperator(lambda p: p["w"] * 2, {"w": torch.empty(3, device="meta")})
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the CPU-only message cannot be checked")
    with pytest.raises(ValueError, match="device='cuda' requested"):
        spectral.extreme_singular_values(np.eye(3), device="cuda")
    from attncond.models import MultiHeadAttention

    with pytest.raises(ValueError, match="device='cuda' requested"):
        MultiHeadAttention(4, 2, 2, device="cuda")


def test_subclass_returning_wrong_shape_is_caught_by_the_guard():
    class Bad(spectral.LinearOp):
        def _matvec(self, x):
            return torch.zeros(3, dtype=torch.float64)

        def _rmatvec(self, y):
            return torch.zeros(4, dtype=torch.float64)

    with pytest.raises(OperatorOutputError, match=r"returned shape \(3,\)"):
        Bad((5, 4), torch.float64, "cpu").matvec(torch.ones(4, dtype=torch.float64))
    warnings.simplefilter("default")


def test_scaled_copy_shares_the_users_product_counter():
    op = spectral.as_operator(np.ldexp(A, -1000))
    e = spectral.extreme_singular_values(op, method="gkl")
    assert e.details.info["scale_exponent"] == 998 and op.n_products == e.matvecs > 0
    At = torch.from_numpy(np.ldexp(A, 900))
    mf = spectral.as_operator((lambda x: At @ x, lambda y: At.T @ y, A.shape))
    e = spectral.extreme_singular_values(mf, method="gkl")
    assert e.details.info["scale_exponent"] < 0 and mf.n_products == e.matvecs and mf._scaling.exp == 0


def test_zero_attention_output_says_it_underflowed():
    from attncond.models import AttentionBlock

    blk = AttentionBlock(2, 2, residual=False, ffn=False, kernel="gaussian", regime="sharp", init_scale=3.0,
                         seed=0)
    X = torch.randn(1, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4.0
    z = attention_output_matrix(blk, X, residual=False)
    assert z.sigma_max == 0.0 and "identically zero" in z.reason


@pytest.mark.parametrize("route", ["dense", "gram", "gkl", "arpack"])
def test_scaled_adjoint_of_a_matrix_free_operator_stays_consistent(route):
    At = torch.from_numpy(np.ldexp(A, -1000))
    wide = spectral.as_operator((lambda x: At @ x, lambda y: At.T @ y, A.shape)).T  # 5 x 8, AdjointOp
    e = spectral.extreme_singular_values(wide, method=route)
    assert e.converged and e.details.info["scale_exponent"] != 0
    assert _contains(e.sigma_max_interval, math.ldexp(5.0, -1000)) and _contains(e.sigma_min_interval,
                                                                                 math.ldexp(1.0, -1000))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_diagnostics_tolerances_validated(bad):
    from attncond.models import MultiHeadAttention, synthetic_regression
    from attncond.spectral.diagnostics import diagnose
    from attncond.spectral.solvers.psd import gram_extremes

    with pytest.raises(ValueError, match="tol must be a finite"):
        gram_extremes(torch.eye(3, dtype=torch.float64), tol=bad)
    m = MultiHeadAttention(4, 2, 2, seed=0)
    d = synthetic_regression(N=3, n=3, D=4, seed=0)
    with pytest.raises(ValueError, match="tol must be a finite"):
        diagnose(m, d.X, d.y, tol=bad)


def test_explicit_adjoint_is_scaled_exactly():
    op = spectral.as_operator(np.ldexp(A, 1000)).T  # AdjointOp of a DenseOp
    b = spectral.extreme_singular_values(spectral.as_operator(A).T, method="gkl")
    e = spectral.extreme_singular_values(op, method="gkl")
    assert e.converged and e.sigma_min == math.ldexp(b.sigma_min, 1000) and op.n_products == e.matvecs


@settings(max_examples=25)
@given(n=st.integers(2, 8), sharp=st.floats(0.0, 69.0), seed=st.integers(0, 2**31 - 1))
def test_softmax_jacobian_relative_accuracy_property(n, sharp, seed):
    """Rows softmax(z) with one logit ahead by up to 69 (κ up to ~1e30): every eigenvalue on 1⊥ within
    1e-10 relative of the mpmath reference."""
    z = np.random.default_rng(seed).standard_normal(n)
    z[0] += sharp
    s = np.exp(z - z.max())
    s = s / s.sum()
    r = softmax_jacobian_spectrum(torch.from_numpy(s))
    ref = _mp_eigs(s)[1:]
    for a, b in zip(r.eigenvalues_perp, ref, strict=True):
        assert abs(float((mpmath.mpf(float(a)) - b) / b)) <= 1e-10


# --------------------------------------------------------------------------- 3. min–max bounds
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), noise=st.sampled_from([0.0, 1e-6, 1e-2]))
def test_minmax_bounds_hold_for_every_index(seed, k, noise):
    """``σ_i^↑ ≤ σ_max(A Q_i)`` and ``σ_i^↓ ≥ σ_min(A Q_i)`` (Courant–Fischer) for any leading block,
    exact singular vectors, perturbed ones and non-orthonormal ones; the symmetric analogue too."""
    from attncond.spectral.solvers.certify import minmax_eig, minmax_singular

    rng = np.random.default_rng(seed)
    A = torch.as_tensor(rng.standard_normal((40, 25)) @ np.diag(np.logspace(0, -6, 25)))
    _, s, Vh = torch.linalg.svd(A, full_matrices=False)
    for end, V0, truth in (("largest", Vh[:k].T, s[:k]), ("smallest", Vh.flip(0)[:k].T, s.flip(0)[:k])):
        V = V0 + noise * torch.as_tensor(rng.standard_normal(V0.shape))
        V = V / torch.linalg.vector_norm(V, dim=0)
        bound, slack = minmax_singular(A @ V, V, end, 0.0)
        t = truth.numpy()
        ok = bound <= t * (1 + 1e-12) + 1e-15 if end == "largest" else bound >= t * (1 - 1e-12)
        assert np.all(ok)
        if noise == 0.0:  # exact vectors: the bound is the value
            np.testing.assert_allclose(bound, t, rtol=1e-9, atol=1e-14)
        S = A.T @ A
        ev = torch.linalg.eigvalsh(S).numpy()
        te = ev[::-1][:k] if end == "largest" else ev[:k]
        be = minmax_eig(S @ V, V, end, 0.0)
        assert np.all(be <= te + 1e-12 * ev[-1]) if end == "largest" else np.all(be >= te - 1e-12 * ev[-1])


def test_minmax_bound_stops_at_a_dependent_column():
    from attncond.spectral.solvers.certify import minmax_singular

    A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    V = torch.eye(5, dtype=torch.float64)[:, :3]
    V = torch.cat([V, V[:, :1]], dim=1)  # the fourth column repeats the first
    bound, slack = minmax_singular(A @ V, V, "smallest", 1e-15)
    np.testing.assert_allclose(bound[:3], [1.0, 2.0, 3.0], rtol=1e-12)
    assert math.isnan(bound[3]) and math.isnan(slack[3])
    np.testing.assert_allclose(slack[:3], np.sqrt([1, 2, 3]) * 1e-15, rtol=1e-10)


def _logspaced(m: int, n: int, lo: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    Q1, R1 = np.linalg.qr(rng.standard_normal((m, m)))
    Q2, R2 = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.logspace(0, lo, n)
    return ((Q1 * np.sign(np.diag(R1)))[:, :n] * s) @ (Q2 * np.sign(np.diag(R2))).T, s


@pytest.mark.parametrize("route", ["propack", "gkl", "gkd"])
def test_an_unconverged_end_keeps_only_the_courant_fischer_side(route):
    """A residual interval holds *a* singular value, not necessarily the extreme one: unconverged,
    only ``σ_min ≤ upper`` and ``σ_max ≥ lower`` hold. PROPACK's unconverged σ_min interval was
    [0.9116, 0.9116] (an interior σ) for a true σ_min of 1e-8 (audit B7)."""
    A, s = _logspaced(300, 200, -8)
    kw = {} if route == "propack" else {"maxiter": 6}
    e = spectral.extreme_singular_values(A, method=route, **kw)
    assert not e.converged
    if math.isnan(e.sigma_min):
        lo, hi = e.sigma_min_interval
        assert lo == 0.0 and s[-1] <= hi
    if math.isnan(e.sigma_max) and not math.isnan(e.sigma_max_interval[0]):  # nan interval: peer raised
        lo, hi = e.sigma_max_interval
        assert hi == math.inf and lo <= s[0]
    assert math.isnan(e.sigma_min) or math.isnan(e.sigma_max)


def test_an_unconverged_eigenvalue_keeps_only_the_courant_fischer_side():
    lam = np.r_[np.logspace(-6, 0, 300)]
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((300, 300)))
    S = (Q * lam) @ Q.T
    S = (S + S.T) / 2
    r = spectral.symmetric_lanczos(S, which="both", maxiter=5)
    assert not r.converged
    for b, truth in ((r.smallest, lam[0]), (r.largest, lam[-1])):
        if not bool(b.converged[0]):
            assert math.isnan(b.values[0])
            assert (b.lower[0] == -math.inf and truth <= b.upper[0]) if b.end == "smallest" else (
                b.upper[0] == math.inf and b.lower[0] <= truth)
