"""Closed-form B0, NTK Gram and Z (spectral.diagnostics.structured) against independent dense computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _spectral_cases import KERNEL_CASES
from hypothesis import given
from hypothesis import strategies as st

from models import AttentionBlock, MultiHeadAttention, synthetic_regression
from spectral.diagnostics.structured import B0, B0_gram, attention_output_matrix, closed_form_kernel, ntk_gram


def _jacrev_gram(model, X, trainable):
    params = {k: getattr(model, k).detach() for k in trainable}
    J = torch.func.jacrev(lambda p: model.functional(p, X).reshape(-1))(params)
    Jm = torch.cat([J[k].reshape(J[k].shape[0], -1) for k in trainable], 1)
    return (Jm @ Jm.T).detach()


def _X(N=3, n=4, D=5, seed=0):
    return synthetic_regression(N, n, D, seed=seed).X


def test_B0_matches_explicit_blocks():
    m = MultiHeadAttention(5, 3, 3, seed=2)
    X = _X()
    B = B0(m, X)
    S = m.attention(X).detach().numpy()  # (N, H, n, n)
    Xn = X.numpy()
    rows = [np.concatenate([S[i, h] @ Xn[i] for h in range(3)], axis=1) for i in range(3)]
    ref = np.concatenate(rows, axis=0)
    assert B.shape == (12, 15)
    np.testing.assert_allclose(B.numpy(), ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(B0_gram(m, X).numpy(), ref @ ref.T, rtol=1e-12, atol=1e-13)


SUBSETS = [("W_Q",), ("W_K",), ("W_V",), ("W_O",), ("W_Q", "W_K", "W_V", "W_O")]


@pytest.mark.parametrize("kernel,opts,tau", KERNEL_CASES)
@pytest.mark.parametrize("value_param,d_out", [("per_head", 1), ("joint", 2)])
def test_ntk_gram_structured_equals_jacrev(kernel, opts, tau, value_param, d_out):
    m = MultiHeadAttention(5, 3, 2, kernel=kernel, kernel_options=opts, tau=tau, value_param=value_param,
                           d_out=d_out, trainable=("W_Q", "W_K", "W_V", "W_O"), seed=1)
    X = _X()
    for tr in SUBSETS:
        res = ntk_gram(m, X, tr, return_parts=True)
        assert res.route == "structured" and res.reason is None
        G = _jacrev_gram(m, X, tr)
        assert res.gram.shape == (3 * 4 * d_out,) * 2
        err = float((res.gram - G).abs().max() / G.abs().max())
        assert err < 1e-13, (tr, err)
        assert torch.equal(res.gram, res.gram.T)
        assert set(res.parts) == set(tr)
        assert float((sum(res.parts.values()) - res.gram).abs().max()) < 1e-12 * float(G.abs().max())


def test_ntk_gram_falls_back_to_vjp_and_records_it():
    m = MultiHeadAttention(5, 3, 2, kernel="normsoftmax", seed=0)
    X = _X()
    assert closed_form_kernel(m) is None
    res = ntk_gram(m, X)
    assert res.route == "vjp" and "normsoftmax" in res.reason
    G = _jacrev_gram(m, X, m.trainable)
    assert float((res.gram - G).abs().max() / G.abs().max()) < 1e-13
    with pytest.raises(ValueError, match="no closed form for kernel 'normsoftmax'"):
        ntk_gram(m, X, route="structured")
    forced = ntk_gram(MultiHeadAttention(5, 3, 2, seed=0), X, route="vjp")
    assert forced.route == "vjp" and forced.reason == "route='vjp' requested"
    assert "route" in forced.to_dict() and "NTKGram(" in repr(forced)


def test_ntk_gram_block_uses_vjp():
    b = AttentionBlock(4, 2, ffn=False, seed=0)
    X = _X(2, 3, 4)
    res = ntk_gram(b, X)
    assert res.route == "vjp" and res.n_params == 2 * 4 * 2 + 16
    G = _jacrev_gram(b, X, b.trainable)
    np.testing.assert_allclose(res.gram.numpy(), G.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call,exc,msg", [
    (lambda m, X: ntk_gram(m, X, ("W_Z",)), ValueError, "trainable contains unknown name 'W_Z'"),
    (lambda m, X: ntk_gram(m, X, route="fast"), ValueError, "unknown route 'fast'"),
    (lambda m, X: ntk_gram("model", X), TypeError, "model must be an attncond model"),
    (lambda m, X: ntk_gram(m, X[:, :, :4]), ValueError, "X has D=4 features"),
    (lambda m, X: B0(AttentionBlock(5, 2), X), TypeError, "model must be a models.MultiHeadAttention"),
    (lambda m, X: attention_output_matrix(m, X), TypeError, "block must be a models.AttentionBlock"),
])
def test_bad_arguments_name_the_argument(call, exc, msg):
    m = MultiHeadAttention(5, 3, 2)
    with pytest.raises(exc, match=msg):
        call(m, _X())


@pytest.mark.parametrize("residual", [True, False])
def test_attention_output_matrix_matches_explicit(residual):
    b = AttentionBlock(5, 3, residual=True, seed=3)
    X = _X()
    Z = attention_output_matrix(b, X, residual)
    A = b.attention(X).detach().numpy()
    Xn, WV = X.numpy(), b.W_V.detach().numpy()
    ref = np.concatenate([A[i] @ Xn[i] @ WV + (Xn[i] if residual else 0) for i in range(3)], 0)
    np.testing.assert_allclose(Z.numpy(), ref, rtol=1e-13, atol=1e-13)


@given(
    kernel=st.sampled_from(["softmax", "gaussian", "linear"]),
    N=st.integers(1, 3), n=st.integers(1, 4), D=st.integers(1, 5), d=st.integers(1, 3),
    H=st.integers(1, 3), regime=st.sampled_from(["near_uniform", "default", "sharp"]),
    seed=st.integers(0, 10_000),
)
def test_structured_gram_equals_vjp_route_on_random_instances(kernel, N, n, D, d, H, regime, seed):
    opts = {"on_underflow": "ignore"} if kernel == "gaussian" else {}
    m = MultiHeadAttention(D, d, H, kernel=kernel, kernel_options=opts, regime=regime, seed=seed)
    X = synthetic_regression(N, n, D, seed=seed + 1).X
    a = ntk_gram(m, X).gram
    b = ntk_gram(m, X, route="vjp").gram
    scale = max(float(b.abs().max()), 1e-300)
    assert float((a - b).abs().max()) <= 1e-12 * scale
