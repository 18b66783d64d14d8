"""AttentionJacobian (closed-form, matrix-free J of the [S24] model) against torch.func.jacrev."""

from __future__ import annotations

import math

import pytest
import torch
from _spectral_cases import KERNEL_CASES

from models import MultiHeadAttention, synthetic_regression
from spectral.diagnostics.attention_jacobian import AttentionJacobian

SUBSETS = [("W_Q",), ("W_K",), ("W_V",), ("W_O",), ("W_V", "W_Q"), ("W_Q", "W_K", "W_V", "W_O")]


def _jacrev(model, X, trainable):
    params = {k: getattr(model, k).detach() for k in trainable}
    J = torch.func.jacrev(lambda p: model.functional(p, X).reshape(-1))(params)
    return torch.cat([J[k].reshape(J[k].shape[0], -1) for k in trainable], 1).detach()


@pytest.mark.parametrize("kernel,opts,tau", KERNEL_CASES)
@pytest.mark.parametrize("value_param,d_out", [("per_head", 1), ("per_head", 3), ("joint", 2)])
def test_products_equal_the_dense_jacobian(kernel, opts, tau, value_param, d_out):
    m = MultiHeadAttention(5, 3, 2, kernel=kernel, kernel_options=opts, tau=tau, value_param=value_param,
                           d_out=d_out, trainable=("W_Q", "W_K", "W_V", "W_O"), seed=1)
    X = synthetic_regression(3, 4, 5, seed=0).X
    g = torch.Generator().manual_seed(3)
    for tr in SUBSETS:
        Jd = _jacrev(m, X, tr)
        J = AttentionJacobian(m, X, tr)
        assert J.shape == tuple(Jd.shape)
        x = torch.randn(J.shape[1], 4, generator=g, dtype=torch.float64)
        y = torch.randn(J.shape[0], 4, generator=g, dtype=torch.float64)
        scale = float(Jd.abs().max())
        for got, ref in ((J.matmat(x), Jd @ x), (J.rmatmat(y), Jd.T @ y),
                         (J.matvec(x[:, 0]), Jd @ x[:, 0]), (J.rmatvec(y[:, 0]), Jd.T @ y[:, 0])):
            err = float((got - ref).abs().max()) / (scale * float(x.abs().max() + y.abs().max()))
            assert err < 1e-13, (kernel, tr, err)


def test_blocked_products_split_into_chunks_agree(monkeypatch):
    import spectral.diagnostics.attention_jacobian as aj

    m = MultiHeadAttention(6, 4, 3, kernel="gaussian", seed=2)
    X = synthetic_regression(4, 5, 6, seed=1).X
    J = AttentionJacobian(m, X)
    x = torch.randn(J.shape[1], 7, dtype=torch.float64)
    y = torch.randn(J.shape[0], 7, dtype=torch.float64)
    whole = (J.matmat(x), J.rmatmat(y))
    calls = []
    jvp = J._jvp
    monkeypatch.setattr(J, "_jvp", lambda Z: calls.append(Z.shape[1]) or jvp(Z))
    monkeypatch.setattr(aj, "BLOCK_ENTRIES", 1)  # one column per chunk
    torch.testing.assert_close(J.matmat(x), whole[0], rtol=0, atol=1e-14)
    assert calls == [1] * 7
    torch.testing.assert_close(J.rmatmat(y), whole[1], rtol=0, atol=1e-14)


def test_products_are_counted_and_adjoint_shares_the_counter():
    m = MultiHeadAttention(4, 3, 2, seed=0)
    X = synthetic_regression(2, 3, 4, seed=0).X
    J = AttentionJacobian(m, X)
    J.matmat(torch.zeros(J.shape[1], 3, dtype=torch.float64))
    J.adjoint().matvec(torch.zeros(J.shape[0], dtype=torch.float64))
    assert J.n_products == 4


def test_refuses_what_it_cannot_represent():
    X = synthetic_regression(2, 3, 4, seed=0).X
    with pytest.raises(TypeError, match="model must be a models.MultiHeadAttention"):
        AttentionJacobian(torch.nn.Linear(4, 1), X)
    m = MultiHeadAttention(4, 3, 2, kernel="normsoftmax", seed=0)
    with pytest.raises(ValueError, match="no closed-form NTK structure"):
        AttentionJacobian(m, X)
    m = MultiHeadAttention(4, 3, 2, seed=0)
    with pytest.raises(ValueError, match="trainable contains unknown name 'W_X'"):
        AttentionJacobian(m, X, ("W_X",))
    with pytest.raises(ValueError, match="X"):
        AttentionJacobian(m, torch.zeros(2, 3, 5, dtype=torch.float64))
    bad = X.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        AttentionJacobian(m, bad)


MATRIX_FREE = [("matrix-free", "matrix-free:lanczos"), ("matrix-free-svd", "matrix-free:gkd"),
               ("matrix-free-preconditioned", "matrix-free:gkd-preconditioned")]


@pytest.mark.parametrize("how,label", MATRIX_FREE)
@pytest.mark.parametrize("kernel,opts,tau", KERNEL_CASES)
def test_pl_constant_matrix_free_equals_the_dense_gram(kernel, opts, tau, how, label):
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(6, 4, 2, kernel=kernel, kernel_options=opts, tau=tau, seed=4)
    X = synthetic_regression(5, 4, 6, seed=2).X
    dense = pl_constant(m, X, eig_method="dense")
    mf = pl_constant(m, X, eig_method=how)
    assert mf.route == "matrix-free" and mf.gram is None and mf.eig_method == label
    assert dense.products is None and mf.products >= 4 and f"({mf.products} products" in mf.notes[0]
    lo, hi = mf.mu_interval
    assert lo <= dense.mu <= hi, (lo, dense.mu, hi)  # the certified interval holds the truth
    assert abs(mf.mu - dense.mu) <= 1e-9 * dense.mu
    assert abs(mf.lambda_max - dense.lambda_max) <= 1e-9 * dense.lambda_max
    assert mf.holds == dense.holds


@pytest.mark.parametrize("how", [h for h, _ in MATRIX_FREE])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pl_constant_matrix_free_in_float32_and_float64_holds_the_truth(how, dtype):
    """Every matrix-free route in both dtypes: the certified μ interval holds the float64 dense μ
    (float32 within its own rounding: the interval widened by 1e-4 relative)."""
    from spectral.diagnostics import pl_constant

    X = synthetic_regression(5, 4, 6, seed=2).X
    dense = pl_constant(MultiHeadAttention(6, 4, 2, seed=4), X, eig_method="dense")
    mf = pl_constant(MultiHeadAttention(6, 4, 2, seed=4, dtype=dtype), X.to(dtype), eig_method=how,
                     tol=1e-10 if dtype == torch.float64 else 1e-4)
    lo, hi = mf.mu_interval
    slack = 1e-12 if dtype == torch.float64 else 1e-4
    assert lo * (1 - slack) <= dense.mu <= hi * (1 + slack), (lo, dense.mu, hi)
    assert abs(mf.mu - dense.mu) <= (1e-9 if dtype == torch.float64 else 1e-3) * dense.mu


@pytest.mark.parametrize("how", [h for h, _ in MATRIX_FREE])
def test_pl_constant_maxiter_spent_reports_nan_with_a_true_interval(how):
    """A step budget too small to converge: μ is NaN (never an uncertified Ritz value), the note
    says "not converged", and the certified interval still holds the dense μ; a larger budget
    converges to the dense value."""
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(8, 8, 2, seed=3)
    X = synthetic_regression(12, 4, 8, seed=1).X
    dense = pl_constant(m, X, eig_method="dense")
    cut = pl_constant(m, X, eig_method=how, maxiter=2)
    assert math.isnan(cut.mu) and any(n.startswith("not converged") for n in cut.notes)
    lo, hi = cut.mu_interval
    assert lo <= dense.mu <= hi and hi > lo, (lo, dense.mu, hi)
    full = pl_constant(m, X, eig_method=how, maxiter=4000)
    assert abs(full.mu - dense.mu) <= 1e-9 * dense.mu


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_pl_constant_refuses_a_bad_maxiter(bad):
    from spectral.diagnostics import pl_constant

    with pytest.raises((ValueError, TypeError), match="maxiter"):
        pl_constant(MultiHeadAttention(4, 2, 1, seed=0), synthetic_regression(3, 2, 4, seed=0).X,
                    eig_method="matrix-free", maxiter=bad)


@pytest.mark.parametrize("how", [h for h, _ in MATRIX_FREE])
def test_pl_constant_matrix_free_rank_limited_is_exactly_zero(how):
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(4, 2, 1, trainable=("W_Q",), seed=0)  # p = 8 < m = 24
    X = synthetic_regression(4, 6, 4, seed=0).X
    pl = pl_constant(m, X, eig_method=how)
    assert pl.rank_limited and pl.mu == 0.0 and pl.mu_interval == (0.0, 0.0)
    ref = pl_constant(m, X, eig_method="dense")
    assert abs(pl.lambda_max - ref.lambda_max) <= 1e-9 * ref.lambda_max


@pytest.mark.parametrize("how", ["dense", "auto", *[h for h, _ in MATRIX_FREE]])
def test_pl_constant_is_exactly_zero_below_the_structural_rank_bound(how):
    from spectral.diagnostics import pl_constant

    # p = 96 >= m = 64, but softmax logits see W_Q, W_K only through W_Q^h W_K^hT: rank J <= 2·16 + 2·4 = 40
    m = MultiHeadAttention(4, 4, 2, seed=0)
    X = synthetic_regression(8, 8, 4, seed=0).X
    pl = pl_constant(m, X, eig_method=how)
    assert pl.n_params >= pl.n_outputs and pl.rank_bound == 40
    assert pl.rank_limited and pl.mu == 0.0 and pl.mu_interval == (0.0, 0.0) and pl.numerically_zero
    assert any("rank J ≤" in s and "null space of dimension >= 24" in s for s in pl.notes), pl.notes
    ref = pl_constant(m, X, eig_method="dense")
    assert abs(pl.lambda_max - ref.lambda_max) <= 1e-9 * ref.lambda_max
    # the claim is about the matrix: the dense Gram's 24 smallest eigenvalues are rounding noise
    ev = torch.linalg.eigvalsh(ref.gram.gram)
    assert float(ev[23]) <= ref.zero_threshold < float(ev[24])


def test_diagnose_reports_the_structural_zero():
    from spectral.diagnostics import diagnose

    m = MultiHeadAttention(4, 4, 2, seed=0)
    d = diagnose(m, synthetic_regression(8, 8, 4, seed=0).X, hessian=False, spectra=False)
    row = next(r for r in d.rows if r.key == "pl.mu")
    assert row.value == 0.0 and row.interval == (0.0, 0.0)
    assert row.note.startswith("exactly zero: rank J <= 40 < m"), row.note


def test_pl_constant_above_the_rank_bound_is_not_rank_limited():
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(4, 4, 2, seed=0)
    X = synthetic_regression(4, 8, 4, seed=0).X  # m = 32 < 40
    pl = pl_constant(m, X, eig_method="dense")
    assert pl.rank_bound == 40 and not pl.rank_limited and pl.mu > pl.zero_threshold
    assert not any("nearly square" in s for s in pl.notes)  # 40 is 25 % above m = 32
    near = pl_constant(m, synthetic_regression(5, 8, 4, seed=0).X, eig_method="dense")  # m = 40 = bound
    assert not near.rank_limited and any("only 0.0% above m=40" in s for s in near.notes), near.notes


def test_pl_constant_auto_goes_matrix_free_when_the_gram_is_too_big(monkeypatch):
    import dataclasses

    from spectral import policy
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(6, 4, 2, seed=1)
    X = synthetic_regression(5, 4, 6, seed=1).X
    assert pl_constant(m, X).route == "structured"
    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, pl_gram_max_bytes=20 * 20 * 8 - 1))
    pl = pl_constant(m, X)
    assert pl.route == "matrix-free" and pl.eig_method == "matrix-free:gkd-preconditioned"
    with pytest.raises(ValueError, match="unknown eig_method 'fast'"):
        pl_constant(m, X, eig_method="fast")


@pytest.mark.parametrize("how", [h for h, _ in MATRIX_FREE])
def test_pl_constant_matrix_free_value_block_stays_matrix_free(how):
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(6, 4, 2, value_param="joint", seed=3)
    X = synthetic_regression(3, 4, 6, seed=1).X
    dense = pl_constant(m, X, eig_method="dense", value_block=True)
    mf = pl_constant(m, X, eig_method=how, value_block=True)
    assert abs(mf.value_block_mu - dense.value_block_mu) <= 1e-9 * max(dense.value_block_mu, 1e-300) + 1e-14


def test_pl_constant_matrix_free_restarted_small_basis_still_certifies(monkeypatch):
    """A Lanczos basis far smaller than m (thick restarts) still certifies the dense μ."""
    import dataclasses

    from spectral import policy
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(8, 4, 2, seed=5)
    X = synthetic_regression(12, 8, 8, seed=3).X  # m = 96, p = 192
    dense = pl_constant(m, X, eig_method="dense")
    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, pl_lanczos_basis_bytes=1))
    mf = pl_constant(m, X, eig_method="matrix-free")  # basis floor: 64 vectors < 96
    lo, hi = mf.mu_interval
    assert lo <= dense.mu <= hi and abs(mf.mu - dense.mu) <= 1e-9 * dense.mu


def test_pl_constant_matrix_free_unconverged_is_nan_with_a_true_interval(monkeypatch):
    """Out of steps: the headline μ is NaN (never an unconverged Ritz value) and the interval holds."""
    import dataclasses

    from spectral import policy
    from spectral.diagnostics import pl_constant

    m = MultiHeadAttention(8, 4, 2, seed=5)
    X = synthetic_regression(12, 8, 8, seed=3).X
    dense = pl_constant(m, X, eig_method="dense")
    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, pl_lanczos_max_steps=12))
    mf = pl_constant(m, X, eig_method="matrix-free")
    assert math.isnan(mf.mu)
    assert any(n.startswith("not converged") for n in mf.notes)
    lo, hi = mf.mu_interval
    assert lo <= dense.mu <= hi and hi > lo


def test_squared_interval_is_rounded_outwards():
    from spectral.diagnostics.pl import _squared

    assert _squared(1e-170, 1e-170) == (0.0, 5e-324)  # hi² underflows: the upper end stays positive
    assert _squared(-1e-20, 2.0) == (0.0, 4.0)
    assert _squared(1e200, 1e200)[1] == float("inf")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kernel,opts,tau", KERNEL_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("how", ["matrix-free", "matrix-free-preconditioned"])
def test_cuda_products_and_matrix_free_mu_match_cpu(kernel, opts, tau, dtype, how):
    from spectral.diagnostics import pl_constant

    kw = dict(kernel=kernel, kernel_options=opts, tau=tau, seed=4, dtype=dtype)
    cpu = MultiHeadAttention(6, 4, 2, **kw)
    gpu = MultiHeadAttention(6, 4, 2, device="cuda", **kw)
    X = synthetic_regression(5, 4, 6, seed=2).X.to(dtype)
    Jc, Jg = AttentionJacobian(cpu, X), AttentionJacobian(gpu, X.cuda())
    assert Jg.device.type == "cuda"
    y = torch.randn(Jc.shape[0], 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    rt = 1e-12 if dtype == torch.float64 else 1e-4
    assert torch.allclose(Jg.rmatmat(y.cuda()).cpu(), Jc.rmatmat(y), rtol=rt, atol=rt)
    mc = pl_constant(cpu, X, eig_method=how, tol=1e-10 if dtype == torch.float64 else 1e-4)
    mg = pl_constant(gpu, X.cuda(), eig_method=how, tol=1e-10 if dtype == torch.float64 else 1e-4)
    assert math.isfinite(mg.mu) and math.isfinite(mc.mu)
    if dtype == torch.float64:  # the device's certified interval holds the CPU value
        lo, hi = mg.mu_interval
        assert lo <= mc.mu <= hi
    assert abs(mg.mu - mc.mu) <= (1e-9 if dtype == torch.float64 else 1e-3) * mc.mu
