"""Diagnostics (spectral.diagnostics) against independent dense numpy/jacrev computations."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import spectral
import spectral.policy
from models import AttentionBlock, MultiHeadAttention, synthetic_regression
from spectral.diagnostics import (
    attention_entropy,
    attention_output_matrix,
    attention_sparsity,
    beta_paper,
    diagnose,
    gram_extremes,
    hessian_extremes,
    pl_constant,
    softmax_jacobian,
    softmax_jacobian_spectrum,
)


def _data(N=3, n=4, D=6, seed=0):
    return synthetic_regression(N, n, D, seed=seed)


def _jac(model, X, trainable):
    params = {k: getattr(model, k).detach() for k in trainable}
    J = torch.func.jacrev(lambda p: model.functional(p, X).reshape(-1))(params)
    return torch.cat([J[k].reshape(J[k].shape[0], -1) for k in trainable], 1).detach().numpy()


def _B0_numpy(model, X):
    S = model.attention(X).detach().numpy()
    Xn = X.numpy()
    return np.concatenate([np.concatenate([S[i, h] @ Xn[i] for h in range(model.H)], 1)
                           for i in range(X.shape[0])], 0)


def test_beta_paper_matches_numpy_svd():
    m = MultiHeadAttention(6, 3, 3, seed=4)
    X = _data().X
    B = _B0_numpy(m, X)  # 12 x 18: HD >= Nn
    s_b = np.linalg.svd(B, compute_uv=False)[11]
    s_o = np.linalg.norm(m.W_O.detach().numpy())
    bp = beta_paper(m, X)
    assert bp.full_row_rank_possible and bp.reason is None
    assert bp.value == pytest.approx(s_o**2 * s_b**2, rel=1e-12)
    json.dumps(bp.to_dict())
    narrow = beta_paper(MultiHeadAttention(6, 3, 1, seed=4), X)  # HD = 6 < Nn = 12
    assert narrow.value == 0.0 and "cannot have full row rank" in narrow.reason


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_pl_constant_equals_dense_eigvalsh_and_bounds(kernel):
    m = MultiHeadAttention(6, 3, 3, kernel=kernel, seed=1)
    X = _data().X
    J = _jac(m, X, m.trainable)
    lam = np.linalg.eigvalsh(J @ J.T)
    pl = pl_constant(m, X)
    assert pl.route == "structured" and pl.n_outputs == 12 and pl.n_params == 3 * 3 * 6 * 3
    assert pl.mu == pytest.approx(lam[0], rel=1e-9)
    assert pl.lambda_max == pytest.approx(lam[-1], rel=1e-12)
    assert pl.mu_interval[0] <= lam[0] <= pl.mu_interval[1]
    B = _B0_numpy(m, X)
    sb2 = np.linalg.eigvalsh(B @ B.T)[0]
    wo = m.W_O.detach().numpy()
    corrected = min(np.sum(wo[h * 3:(h + 1) * 3] ** 2) for h in range(3)) * sb2
    assert pl.corrected_bound == pytest.approx(corrected, rel=1e-9)
    assert pl.holds["corrected_bound"] is True and pl.corrected_bound <= pl.mu
    assert pl.holds["beta_paper"] == bool(pl.beta_paper <= pl.mu + pl.zero_threshold)
    json.dumps(pl.to_dict())


def test_joint_value_map_identity_is_exact():
    m = MultiHeadAttention(6, 3, 3, value_param="joint", seed=2)
    X = _data().X
    pl = pl_constant(m, X)
    bp = beta_paper(m, X)
    assert pl.value_block_mu == pytest.approx(bp.sigma_min_WO**2 * bp.sigma_min_B0T**2, rel=1e-9)
    assert pl.corrected_bound == pytest.approx(bp.value, rel=1e-12)
    assert pl.mu >= pl.value_block_mu - pl.zero_threshold


def test_rank_limited_gram_is_flagged_numerically_zero():
    m = MultiHeadAttention(2, 1, 1, trainable=("W_Q",), seed=0)  # p = 2 < 12 outputs
    pl = pl_constant(m, _data(D=2).X)
    assert pl.rank_limited and pl.numerically_zero and abs(pl.mu) <= pl.zero_threshold
    assert pl.corrected_bound is None and any("W_V is not trained" in s for s in pl.notes)


def test_gram_extremes_cholesky_lanczos_agrees_with_dense():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(300, 320, generator=g, dtype=torch.float64)
    G = A @ A.T
    lam = np.linalg.eigvalsh(G.numpy())
    fast = gram_extremes(G, "cholesky-lanczos", tol=1e-12)
    assert fast.method == "cholesky-lanczos" and fast.converged
    assert fast.lambda_min == pytest.approx(lam[0], rel=1e-9)
    assert fast.lambda_max == pytest.approx(lam[-1], rel=1e-12)
    assert fast.lambda_min_interval[0] <= lam[0] <= fast.lambda_min_interval[1]
    singular = gram_extremes(A[:, :10] @ A[:, :10].T, "cholesky-lanczos")
    assert singular.method == "dense (Cholesky failed)" and abs(singular.lambda_min) < 1e-10
    with pytest.raises(ValueError, match="unknown method 'qr'"):
        gram_extremes(G, "qr")


@pytest.mark.parametrize("residual", [True, False])
def test_z_conditioning_matches_numpy_svd(residual):
    b = AttentionBlock(6, 3, seed=5, regime="near_uniform")
    X = _data(4, 3, 6).X
    zc = attention_output_matrix(b, X, residual)
    A = b.attention(X).detach().numpy()
    Xn, WV = X.numpy(), b.W_V.detach().numpy()
    AXW = np.concatenate([A[i] @ Xn[i] @ WV for i in range(4)], 0)
    Z = AXW + (Xn.reshape(-1, 6) if residual else 0)
    s = np.linalg.svd(Z, compute_uv=False)
    assert zc.sigma_max == pytest.approx(s[0], rel=1e-12)
    assert zc.sigma_min == pytest.approx(s[-1], rel=1e-9)
    assert zc.cond == pytest.approx(s[0] / s[-1], rel=1e-9)
    assert zc.sigma_min_interval[0] <= s[-1] <= zc.sigma_min_interval[1]
    if residual:
        sx = np.linalg.svd(Xn.reshape(-1, 6), compute_uv=False)[-1]
        assert zc.weyl_bound == pytest.approx(sx - np.linalg.norm(AXW, 2), rel=1e-9, abs=1e-12)
        assert zc.weyl_holds
    else:
        assert zc.weyl_bound is None and zc.weyl_holds is None
    json.dumps(zc.to_dict())


@given(N=st.integers(1, 4), n=st.integers(1, 4), D=st.integers(1, 6), d=st.integers(1, 3),
       regime=st.sampled_from(["near_uniform", "default", "sharp"]), seed=st.integers(0, 10_000),
       x_scale=st.sampled_from([0.1, 1.0, 3.0]))
def test_weyl_bound_holds_on_random_instances(N, n, D, d, regime, seed, x_scale):
    b = AttentionBlock(D, d, regime=regime, seed=seed)
    X = synthetic_regression(N, n, D, seed=seed + 7, x_scale=x_scale).X
    zc = attention_output_matrix(b, X, True)
    s = np.linalg.svd(zc.Z.numpy(), compute_uv=False)[-1]
    assert s >= zc.weyl_bound - 1e-12 * max(1.0, zc.sigma_max)


@given(kernel=st.sampled_from(["softmax", "gaussian"]), N=st.integers(1, 3), n=st.integers(1, 4),
       D=st.integers(2, 6), d=st.integers(1, 3), H=st.integers(1, 4),
       value_param=st.sampled_from(["per_head", "joint"]),
       regime=st.sampled_from(["near_uniform", "default"]), seed=st.integers(0, 10_000))
def test_pl_constant_dominates_corrected_bound_on_random_instances(kernel, N, n, D, d, H, value_param,
                                                                   regime, seed):
    opts = {"on_underflow": "ignore"} if kernel == "gaussian" else {}
    m = MultiHeadAttention(D, d, H, kernel=kernel, kernel_options=opts, value_param=value_param,
                           regime=regime, seed=seed)
    X = synthetic_regression(N, n, D, seed=seed + 3).X
    pl = pl_constant(m, X)
    J = _jac(m, X, m.trainable)
    mu_ref = np.linalg.eigvalsh(J @ J.T)[0]
    assert abs(pl.mu - mu_ref) <= 10 * pl.zero_threshold + 1e-12
    assert pl.corrected_bound <= pl.mu + pl.zero_threshold
    assert pl.holds["corrected_bound"] is True


def test_softmax_jacobian_equals_autograd_and_spectrum_interlaces():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    s = torch.softmax(z, -1)
    Jref = torch.stack([torch.func.jacrev(lambda v: torch.softmax(v, -1))(zi) for zi in z])
    np.testing.assert_allclose(softmax_jacobian(s).numpy(), Jref.numpy(), rtol=1e-13, atol=1e-15)
    spec = softmax_jacobian_spectrum(s)
    lam = np.linalg.eigvalsh(Jref.numpy())
    np.testing.assert_allclose(spec.eigenvalues, lam, atol=1e-15)
    np.testing.assert_allclose(spec.eigenvalues_perp, lam[:, 1:], rtol=1e-10, atol=1e-15)
    srt = np.sort(s.numpy(), -1)
    assert np.all(lam[:, 1:] >= srt[:, :-1] - 1e-15) and np.all(lam[:, 1:] <= srt[:, 1:] + 1e-15)
    np.testing.assert_allclose(spec.kappa, lam[:, -1] / lam[:, 1], rtol=1e-9)
    assert spec.kappa_max == pytest.approx(float(np.max(lam[:, -1] / lam[:, 1])), rel=1e-9)


def test_softmax_jacobian_spectrum_edge_cases():
    uni = softmax_jacobian_spectrum(torch.full((2, 5), 0.2, dtype=torch.float64))
    np.testing.assert_allclose(uni.kappa, [1.0, 1.0], rtol=1e-12)
    onehot = softmax_jacobian_spectrum(torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64))
    assert math.isinf(onehot.kappa_max) and onehot.n_singular == 2
    with pytest.raises(ValueError, match="probability rows"):
        softmax_jacobian_spectrum(torch.tensor([[0.5, 0.7]], dtype=torch.float64))
    with pytest.raises(ValueError, match="n >= 2"):
        softmax_jacobian_spectrum(torch.ones(3, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="s must be a floating"):
        softmax_jacobian([0.5, 0.5])


def test_hessian_extremes_dense_and_lanczos_against_numpy():
    m = MultiHeadAttention(4, 2, 2, seed=0)
    data = _data(2, 3, 4)
    params = m.params()
    names = list(params)
    shapes = [params[k].shape for k in names]
    numels = [params[k].numel() for k in names]

    def flat_loss(th):
        ps = dict(zip(names, [t.reshape(s) for t, s in zip(torch.split(th, numels), shapes, strict=True)],
                      strict=True))
        return m.loss(ps, data.X, data.y)

    th = torch.cat([params[k].reshape(-1) for k in names])
    Hn = torch.func.hessian(flat_loss)(th).detach().numpy()
    lam = np.linalg.eigvalsh(0.5 * (Hn + Hn.T))
    loss = lambda p: m.loss(p, data.X, data.y)
    dense = hessian_extremes(loss, params, method="dense")
    assert dense.lambda_max == pytest.approx(lam[-1], rel=1e-10)
    assert dense.lambda_min == pytest.approx(lam[0], rel=1e-10)
    lz = hessian_extremes(loss, params, method="lanczos", tol=1e-10)
    assert lz.lambda_max == pytest.approx(lam[-1], rel=1e-8)
    assert lz.lambda_min == pytest.approx(lam[0], rel=1e-8)


def test_singular_hessian_reports_smallest_nonzero_and_null_dimension():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 9, generator=g, dtype=torch.float64)  # rank 4 on R^9: null space of dim 5
    params = {"w": torch.zeros(9, dtype=torch.float64)}
    loss = lambda p: 0.5 * (A @ p["w"]).pow(2).sum()
    s2 = np.sort(np.linalg.svd(A.numpy(), compute_uv=False) ** 2)
    dense = hessian_extremes(loss, params, method="dense")
    assert dense.null_dim_seen == 5 and dense.smallest_nonzero == pytest.approx(s2[0], rel=1e-10)
    assert dense.cond_nonzero == pytest.approx(s2[-1] / s2[0], rel=1e-10) and not dense.indefinite
    # k=4 Ritz values at the small end are all in the 5-dimensional null space: nothing certifies the
    # smallest non-zero eigenvalue, so the Lanczos route refuses it (None, converged=False, a reason)
    lz = hessian_extremes(loss, params, method="lanczos", k=4)
    assert lz.smallest_nonzero is None and not lz.converged and "not certified" in lz.reason
    assert 1 <= lz.null_dim_seen <= 5 and not lz.null_dim_exact
    lz = hessian_extremes(loss, params, method="lanczos", k=6)
    assert lz.null_dim_seen == 5 and lz.smallest_nonzero == pytest.approx(s2[0], rel=1e-8) and lz.converged
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        hessian_extremes(loss, params, k=1)


def test_attention_entropy_and_sparsity_match_formulas():
    g = torch.Generator().manual_seed(2)
    S = torch.softmax(torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64) * 4, -1)
    P = S.numpy()
    ent = -(P * np.log(P)).sum(-1).mean(axis=(0, 2))
    np.testing.assert_allclose(attention_entropy(S), ent, rtol=1e-13)
    np.testing.assert_allclose(attention_sparsity(S, 0.05), (P <= 0.05).mean(axis=(0, 2, 3)), rtol=0)
    uni = torch.full((1, 1, 5, 5), 0.2, dtype=torch.float64)
    assert attention_entropy(uni)[0] == pytest.approx(math.log(5), rel=1e-14)
    with pytest.raises(ValueError, match="do not sum to 1"):
        attention_entropy(2 * S)
    with pytest.raises(ValueError, match="negative entries"):
        attention_entropy(-S, normalize=True)


def test_diagnose_mh_reports_every_row_and_serialises():
    data = _data(3, 4, 8)
    m = MultiHeadAttention(8, 4, 2, seed=0)
    dg = diagnose(m, data.X, data.y)
    keys = [r.key for r in dg.rows]
    for k in ("b0.kappa", "beta_paper", "pl.mu", "pl.corrected_bound", "pl.corrected_holds", "pl.beta_holds",
              "softmaxJ.kappa_max", "attn.entropy", "attn.sparsity", "hessian.lambda_max", "z.kappa"):
        assert k in keys, k
    assert not dg.row("z.kappa").defined and "AttentionBlock" in dg.row("z.kappa").note
    assert dg.row("pl.mu").value == pytest.approx(dg.pl.mu)
    B = _B0_numpy(m, data.X)
    s = np.linalg.svd(B, compute_uv=False)
    assert dg.row("b0.kappa").value == pytest.approx(s[0] / s[-1], rel=1e-9)
    np.testing.assert_allclose(dg.spectra["B0"], s, rtol=1e-10)
    text = dg.table()
    assert "undefined" in text and "κ(B0)" in text
    json.loads(json.dumps(dg.to_dict()))


def test_diagnose_block_undefined_rows_and_singular_z_do_not_crash():
    X = _data(3, 4, 6).X
    b = AttentionBlock(6, 3, ffn=False, kernel="gaussian", seed=1)
    with torch.no_grad():
        b.W_V.zero_()  # Z plain = 0: singular, kappa undefined/inf
    dg = diagnose(b, X)
    assert not dg.row("b0.kappa").defined and "MultiHeadAttention" in dg.row("b0.kappa").note
    assert not dg.row("softmaxJ.kappa_median").defined and "not a row softmax" in dg.row(
        "softmaxJ.kappa_median").note
    plain = [r for r in dg.rows if r.key.startswith("z.plain")]
    assert plain, "Z plain rows must be present (defined or not)"
    kap = [r for r in plain if r.key == "z.plain.kappa"][0]
    assert (not kap.defined) or math.isinf(kap.value)
    res_k = dg.row("z.res.kappa")
    sx = np.linalg.svd(X.reshape(-1, 6).numpy(), compute_uv=False)
    assert res_k.value == pytest.approx(sx[0] / sx[-1], rel=1e-9)  # Z res = X when W_V = 0
    json.dumps(dg.to_dict())


def test_diagnose_rejects_bad_arguments():
    m = MultiHeadAttention(4, 2, 2)
    X = _data(2, 3, 4).X
    with pytest.raises(ValueError, match="unknown residual 'maybe'"):
        diagnose(m, X, residual="maybe")
    with pytest.raises(TypeError, match="model must be a models.MultiHeadAttention or"):
        diagnose(object(), X)
    with pytest.raises(ValueError, match="hessian=True needs targets y"):
        diagnose(m, X, hessian=True)


def test_pl_constant_cholesky_lanczos_route_matches_dense_jacobian(monkeypatch):
    """Above AUTO.psd_eigh_max_side outputs ``pl_constant`` takes Cholesky + Lanczos (the route of the
    medium/large benchmark); its certified μ must match ``eigvalsh`` of a jacrev ``J Jᵀ``."""
    m = MultiHeadAttention(16, 8, 2, seed=3)
    X = _data(N=20, n=16, D=16, seed=1).X  # 320 outputs > 256, p = 768
    small = dataclasses.replace(spectral.policy.AUTO, psd_eigh_max_side=256)
    monkeypatch.setattr(spectral.policy, "AUTO", small)
    pl = pl_constant(m, X)
    assert pl.n_outputs == 320 and pl.eig_method == "cholesky-lanczos"
    params = {k: getattr(m, k).detach() for k in m.trainable}
    Jd = torch.func.vmap(torch.func.jacrev(lambda p, x: m.functional(p, x.unsqueeze(0)).reshape(-1)),
                         in_dims=(None, 0))(params, X)  # per-sample jacrev: (N, n, ...)
    J = torch.cat([Jd[k].reshape(320, -1) for k in params], 1).numpy()
    lam = np.linalg.eigvalsh(J @ J.T)
    assert pl.mu == pytest.approx(lam[0], rel=1e-9)
    assert pl.lambda_max == pytest.approx(lam[-1], rel=1e-9)
    assert pl.mu_interval[0] <= lam[0] * (1 + 1e-12) and lam[0] * (1 - 1e-12) <= pl.mu_interval[1]


def test_diagnose_checks_targets_and_trainable_before_any_work():
    model = MultiHeadAttention(3, 2, 2, seed=0)
    X = torch.randn(2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # a complex y was cast to its real part (a warning, then a Hessian of the wrong loss); a y of the wrong
    # size or with NaN gave an undefined Hessian row; an unknown trainable name an undefined mu row
    with pytest.raises(TypeError, match="y must be real"):
        diagnose(model, X, torch.ones(2, 2, 1, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"y must hold N·n·d_out = 4 targets"):
        diagnose(model, X, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="y contains non-finite"):
        diagnose(model, X, torch.full((2, 2, 1), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match="trainable contains unknown name 'W_X'"):
        diagnose(model, X, trainable=("W_X",))
    block = AttentionBlock(3, 2, seed=0)
    with pytest.raises(ValueError, match=r"y must have the block output's shape \(2, 2, 3\)"):
        diagnose(block, X, torch.zeros(3, dtype=torch.float64))  # would broadcast in the loss
    ok = diagnose(model, X, torch.zeros(2, 2, dtype=torch.float64))
    assert ok.row("hessian.lambda_max").defined


def test_hessian_refuses_non_finite_parameters():
    # the Hessian of sum(a²) was reported as 2I at a = NaN
    with pytest.raises(ValueError, match=r"params\['a'\] contains non-finite values \(1 NaN"):
        hessian_extremes(lambda p: (p["a"] ** 2).sum(),
                         {"a": torch.tensor([math.nan, 1.0], dtype=torch.float64)})


@pytest.mark.parametrize("bad, err", [
    (np.array([0.5 + 1j, 0.5 - 1j]), "must be real probabilities"),  # was cast to [0.5, 0.5]: kappa 1
    (torch.tensor([0.5 + 0j, 0.5]), "must be real probabilities"),
    (np.array([True, False]), "floating array of probabilities, got dtype bool"),  # was kappa inf
])
def test_softmax_jacobian_refuses_complex_and_boolean_rows(bad, err):
    with pytest.raises(TypeError, match=err):
        softmax_jacobian_spectrum(bad)
    with pytest.raises(TypeError, match=err):
        softmax_jacobian(bad)


def test_reused_b0_and_beta_must_belong_to_the_same_model_and_inputs():
    # beta_paper(model, X, b0=<B0 of X[:1]>) and pl_constant(..., beta=<beta of X[:1]>) returned the
    # constants of the other inputs without a word
    from spectral.diagnostics.b0 import b0_conditioning

    model = MultiHeadAttention(3, 2, 2, seed=0)
    X = torch.randn(2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"b0 was computed for a B0 of shape \(2, 6\).*\(4, 6\)"):
        beta_paper(model, X, b0=b0_conditioning(model, X[:1]))
    with pytest.raises(ValueError, match=r"beta was computed for a B0 of shape \(2, 6\)"):
        pl_constant(model, X, beta=beta_paper(model, X[:1]))
    with pytest.raises(TypeError, match="beta must be a BetaPaper"):
        pl_constant(model, X, beta=0.5)
    same = beta_paper(model, X, b0=b0_conditioning(model, X))
    assert same.value == beta_paper(model, X).value
