"""Formation error of B0 and Z (spectral.diagnostics.formation) against a 50-digit mpmath reference.

The reference re-forms ``B0``/``Z`` from the float weights and inputs taken as exact numbers, so it is the
mathematical matrix the certified intervals must contain.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from models import AttentionBlock, MultiHeadAttention
from spectral.diagnostics import attention_output_matrix
from spectral.diagnostics.b0 import b0_conditioning, beta_paper
from spectral.diagnostics.formation import B0_MATRIX, Z_MATRIX, formation_bound
from spectral.diagnostics.structured import B0
from spectral.diagnostics.structured import attention_output_matrix as z_matrix

DPS = 50


def _mp(t: torch.Tensor) -> list:
    return [[mpmath.mpf(float(v)) for v in row] for row in t.detach().double().tolist()]


def _mm(A: list, B: list) -> list:
    return [[mpmath.fsum(A[s][a] * B[a][b] for a in range(len(B))) for b in range(len(B[0]))]
            for s in range(len(A))]


def _softmax_rows(L: list) -> list:
    out = []
    for r in L:
        top = max(r)
        e = [mpmath.exp(v - top) for v in r]
        tot = mpmath.fsum(e)
        out.append([x / tot for x in e])
    return out


def _attention(model, x: list, WQ: torch.Tensor, WK: torch.Tensor) -> list:
    tau = mpmath.sqrt(model.d) if model.tau is None else mpmath.mpf(model.tau)
    Q, K = _mm(x, _mp(WQ)), _mm(x, _mp(WK))
    if model.kernel_name == "gaussian":
        L = [[-mpmath.fsum((a - b) ** 2 for a, b in zip(q, k, strict=True)) / (2 * tau) for k in K] for q in Q]
        if model.kernel_options.get("normalize", False):
            return _softmax_rows(L)
        return [[mpmath.exp(v) for v in r] for r in L]
    C = [[mpmath.fsum(a * b for a, b in zip(q, k, strict=True)) / tau for k in K] for q in Q]
    return C if model.kernel_name == "linear" else _softmax_rows(C)


def b0_reference(model: MultiHeadAttention, X: torch.Tensor) -> mpmath.matrix:
    with mpmath.workdps(DPS):
        rows = []
        for Xi in X:
            x = _mp(Xi)
            blocks = [_mm(_attention(model, x, model.W_Q[h], model.W_K[h]), x) for h in range(model.H)]
            rows += [[v for b in blocks for v in b[a]] for a in range(len(x))]
        return mpmath.matrix(rows)


def z_reference(block: AttentionBlock, X: torch.Tensor, residual: bool) -> mpmath.matrix:
    with mpmath.workdps(DPS):
        rows = []
        for Xi in X:
            x = _mp(Xi)
            Z = _mm(_mm(_attention(block, x, block.W_Q, block.W_K), x), _mp(block.W_V))
            rows += [[z + (xx if residual else 0) for z, xx in zip(zr, xr, strict=True)]
                     for zr, xr in zip(Z, x, strict=True)]
        return mpmath.matrix(rows)


def _extremes(M: mpmath.matrix) -> tuple[mpmath.mpf, mpmath.mpf]:
    with mpmath.workdps(DPS):
        sv = sorted(mpmath.svd_r(M, compute_uv=False), reverse=True)
    return sv[0], sv[min(M.rows, M.cols) - 1]


def _fro_distance(A: torch.Tensor, M: mpmath.matrix) -> float:
    with mpmath.workdps(DPS):
        return float(mpmath.sqrt(mpmath.fsum((mpmath.mpf(float(A[i, j])) - M[i, j]) ** 2
                                             for i in range(M.rows) for j in range(M.cols))))


def _common_offset(model, c: float, seed: int = 0):
    """Tokens with one large common coordinate ``c`` and logits ``≈ c²/τ`` that differ by O(1): ``W_Q, W_K``
    map the common coordinate to the first head coordinate and the others to the second only."""
    g = torch.Generator().manual_seed(seed)
    heads = [(model.W_Q[h], model.W_K[h]) for h in range(model.H)] if isinstance(model, MultiHeadAttention) \
        else [(model.W_Q, model.W_K)]
    with torch.no_grad():
        for WQ, WK in heads:
            for W in (WQ, WK):
                W.zero_()
                W[0, 0] = 1.0
                W[1:, 1] = torch.randn(model.D - 1, generator=g, dtype=torch.float64)
    X = torch.randn(2, 3, model.D, generator=g, dtype=torch.float64)
    X[..., 0] = c
    return X


def test_b0_intervals_contain_the_mathematical_b0_with_a_large_common_token_component():
    # logits ~7e9 differing by O(1): S, and B0, carry a relative error ~1e-6; the interval of the
    # formed B0 alone missed the true sigma_min by ~38 of its widths
    model = MultiHeadAttention(3, 2, 3, seed=1)
    X = _common_offset(model, 1e5)
    est = b0_conditioning(model, X)
    smax, smin = _extremes(b0_reference(model, X))
    assert est.sigma_min_interval[0] <= smin <= est.sigma_min_interval[1]
    assert est.sigma_max_interval[0] <= smax <= est.sigma_max_interval[1]
    # keys formed from token differences (models.key_reference) keep S, and B0, near rounding level: the
    # bound was 9.7e5 times the rounding level while the keys carried the common component (now 3.2)
    assert 0 < est.attainable_accuracy["formation"] < 1e2 * est.attainable_accuracy["norm_eps"]
    beta = beta_paper(model, X, b0=est)
    assert beta.interval[0] <= float(beta.sigma_min_WO**2 * smin**2) <= beta.interval[1]


@pytest.mark.parametrize("residual", [False, True])
def test_z_intervals_contain_the_mathematical_z_with_a_large_common_token_component(residual):
    block = AttentionBlock(3, 2, ffn=False, seed=1)
    X = _common_offset(block, 1e5)
    z = attention_output_matrix(block, X, residual)
    smax, smin = _extremes(z_reference(block, X, residual))
    assert z.sigma_min_interval[0] <= smin <= z.sigma_min_interval[1]
    assert z.sigma_max_interval[0] <= smax <= z.sigma_max_interval[1]


_KERNELS = [("softmax", {}), ("gaussian", {}), ("gaussian", {"normalize": True}), ("linear", {})]


@given(kernel=st.sampled_from(_KERNELS), log_scale=st.floats(-3.0, 2.0), seed=st.integers(0, 10_000),
       f32=st.booleans(), offset=st.sampled_from([0.0, 30.0]))
def test_formation_bound_dominates_the_true_b0_error(kernel, log_scale, seed, f32, offset):
    name, opts = kernel
    dtype = torch.float32 if f32 else torch.float64
    model = MultiHeadAttention(3, 2, 2, kernel=name, kernel_options=opts, init_scale=10.0**log_scale,
                               seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    X = (torch.randn(2, 3, 3, generator=g, dtype=torch.float64) + offset).to(dtype)
    bound = formation_bound(model, X, B0_MATRIX)
    Bh = B0(model, X).double()
    err = _fro_distance(Bh, b0_reference(model, X))
    assert bound.bounded
    assert err <= bound.norm
    # not vacuous: a few thousand roundings of the logits (S has relative error ~ |logit|·eps) times the
    # size of B0 and X, plus the underflow level (an entry that underflows loses at most a subnormal)
    fi = torch.finfo(dtype)
    Xd = X.double()
    reach = float((Xd @ model.W_Q.detach().double()).abs().max()
                  + (Xd @ model.W_K.detach().double()).abs().max())
    floor = fi.tiny * (1.0 + float(Xd.norm()))
    assert bound.norm <= 1e3 * fi.eps * (1.0 + reach) ** 2 * (float(Bh.norm()) + float(Xd.norm())) + floor


@given(seed=st.integers(0, 10_000), residual=st.booleans(), offset=st.sampled_from([0.0, 100.0]))
def test_formation_bound_dominates_the_true_z_error(seed, residual, offset):
    block = AttentionBlock(3, 2, ffn=False, seed=seed, init_scale=3.0)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(2, 3, 3, generator=g, dtype=torch.float64) + offset
    bound = formation_bound(block, X, Z_MATRIX, residual=residual)
    err = _fro_distance(z_matrix(block, X, residual), z_reference(block, X, residual))
    assert bound.bounded and err <= bound.norm


def test_cubic_underflow_of_a_linear_kernel_b0_is_not_certified_as_zero():
    # B0(cX) = c³ B0(X) for the linear kernel: at c = 1e-150 every entry (~1e-450) underflows to 0, and
    # the interval [0, 0] was certified for a sigma_max that is 1e-450·sigma_max(B0(X)) > 0
    model = MultiHeadAttention(4, 2, 3, kernel="linear", seed=1)
    X = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert b0_conditioning(model, X).sigma_max > 0
    est = b0_conditioning(model, X * 1e-150)
    assert float(B0(model, X * 1e-150).abs().max()) == 0.0
    assert est.sigma_max_interval[0] == 0.0 < est.sigma_max_interval[1] <= 1e-300


def test_gaussian_kernel_underflowing_everywhere_does_not_certify_a_zero_b0():
    # every exp(-||q - k||²/(2τ)) underflows to 0 at X·1e75, but the true entries are positive
    model = MultiHeadAttention(4, 2, 3, kernel="gaussian", seed=1)
    X = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e75
    with pytest.warns(RuntimeWarning, match="underflow"):
        est = b0_conditioning(model, X)
    assert est.sigma_max == 0.0
    assert 0.0 < est.sigma_max_interval[1] < 1e-200


def test_a_kernel_without_formation_analysis_is_never_certified():
    model = MultiHeadAttention(3, 2, 2, kernel="normsoftmax", seed=0)
    X = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = b0_conditioning(model, X)
    assert not est.converged
    assert est.sigma_min_interval == (0.0, math.inf) and est.sigma_max_interval == (0.0, math.inf)
    assert "not bounded" in est.reason


def test_logit_overflow_raises_naming_the_logits():
    model = MultiHeadAttention(4, 2, 3, seed=1)
    X = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e160
    with pytest.raises(FloatingPointError, match="logits"):
        model.attention(X)
    gm = MultiHeadAttention(4, 2, 3, kernel="gaussian", kernel_options={"normalize": True}, seed=1)
    with pytest.raises(FloatingPointError, match="gaussian log kernel"):
        gm.attention(X)


def test_b0_product_overflow_raises_naming_b0():
    model = MultiHeadAttention(4, 2, 3, kernel="linear", seed=1)
    X = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e150
    assert bool(torch.isfinite(model.attention(X)).all())
    with pytest.raises(OverflowError, match="B0 overflows"):
        b0_conditioning(model, X)


def test_ordinary_inputs_keep_tight_intervals():
    model = MultiHeadAttention(4, 2, 3, seed=1)
    X = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = b0_conditioning(model, X)
    assert est.converged
    lo, hi = est.sigma_min_interval
    assert hi - lo <= 1e-12 * est.sigma_max
    assert np.isfinite(est.attainable_accuracy["formation"])


@pytest.mark.parametrize("c", [1e3, 1e5])
@pytest.mark.parametrize("trainable", [("W_Q",), ("W_Q", "W_K")])
@pytest.mark.parametrize("route", ["auto", "matrix-free-preconditioned"])
def test_mu_interval_contains_the_mathematical_mu_with_a_large_common_token_component(c, trainable, route):
    """μ = λ_min(J Jᵀ) when the tokens share one large coordinate ``c``: the keys carried it, so the
    logits ``≈ c²`` had an absolute error ``≈ eps c²`` and the Gram's μ missed its interval (c = 1e5,
    W_Q and W_K: [85679.167030, 85679.167032] against 85679.217678). Keys and value sums from token
    differences (models.key_reference) remove it; the truth is a 60-digit eigenvalue of the mpmath J."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    import _mp_reference as R

    from spectral.diagnostics.pl import pl_constant

    g = torch.Generator().manual_seed(0)
    m = MultiHeadAttention(3, 2, 2, seed=1, trainable=trainable)
    with torch.no_grad():
        for h in range(m.H):
            for W in (m.W_Q, m.W_K):
                W[h].zero_()
                W[h][0, 0] = 1.0
                W[h][1:, 1] = torch.randn(m.D - 1, generator=g, dtype=torch.float64)
    X = torch.randn(1, 3, m.D, generator=g, dtype=torch.float64)
    X[..., 0] = c
    p = pl_constant(m, X, eig_method=route)
    J = R.mh_jacobian(m, X, trainable)
    with mpmath.workdps(60):
        mu = float(sorted(mpmath.eigsy(J * J.T, eigvals_only=True))[0])
    lo, hi = p.mu_interval
    assert lo <= mu <= hi, (p.mu, lo, hi, mu)
