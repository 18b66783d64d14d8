"""The [S24] NTK-Gram preconditioner (block-Jacobi on the logit side + Woodbury on the value side)
and GKD preconditioned by it: exact against the dense ``P``, fewer products, the same certificates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _spectral_cases import with_spectrum

from attncond.models import MultiHeadAttention, synthetic_regression
from attncond.spectral.diagnostics import AttentionJacobian, ntk_gram
from attncond.spectral.diagnostics.gram_preconditioner import AttentionGramPreconditioner
from attncond.spectral.solvers import golub_kahan_davidson

CONFIGS = [
    dict(),
    dict(value_param="joint"),
    dict(d_out=2),
    dict(kernel="gaussian"),
    dict(kernel="gaussian", kernel_options={"normalize": True}),
    dict(trainable=("W_Q", "W_K", "W_V", "W_O"), d_out=2),
    dict(trainable=("W_Q", "W_V"), value_param="joint", d_out=3),
    dict(trainable=("W_Q",)),
    dict(trainable=("W_V",)),
]


def logit_factor_from_products(J, P) -> torch.Tensor:
    """``L`` rebuilt as ``J`` applied to ``dW = e_i eᵀ`` (``i`` over ``R^D``) for each listed
    ``(weight, h, e)``."""
    mh = J.model
    offsets = dict(zip(J.trainable, np.cumsum([0, *J.sizes[:-1]]), strict=True))
    cols = []
    for name, h, e in P.logit_basis:
        for i in range(mh.D):
            dW = torch.zeros(mh.H, mh.D, mh.d, dtype=torch.float64)
            dW[h, i] = e
            v = torch.zeros(J.shape[1], dtype=torch.float64)
            v[offsets[name]:offsets[name] + dW.numel()] = dW.reshape(-1)
            cols.append(J.matvec(v))
    return torch.stack(cols, 1) if cols else torch.zeros(J.shape[0], 0, dtype=torch.float64)


def dense_P(mh, X, J, P) -> torch.Tensor:
    """``blockdiag_i((R − L Lᵀ)_ii + s I) + F_V F_Vᵀ + L Lᵀ`` from the dense closed-form Grams, with ``L``
    rebuilt from products of ``J`` (:func:`logit_factor_from_products`)."""
    G = ntk_gram(mh, X).gram
    L = logit_factor_from_products(J, P)
    val = tuple(k for k in J.trainable if k in ("W_V", "W_O")) if P.rank > L.shape[1] else ()
    GV = ntk_gram(mh, X, trainable=val).gram if val else torch.zeros_like(G)
    LL = L @ L.T
    R = G - GV - LL
    b, m = P.block, G.shape[0]
    out = GV + LL
    for i in range(m // b):
        s = slice(i * b, (i + 1) * b)
        out[s, s] += R[s, s] + P.shift * torch.eye(b, dtype=G.dtype)
    return out


LOGIT_CONFIGS = [
    (dict(), 2 * 2 * 8),  # W_Q and W_K: 2 heads × 2 weights × D columns
    (dict(d_out=2), 2 * 2 * 8),
    (dict(kernel="gaussian"), 2 * 8),  # the dist W_K rows are not one Kronecker term: W_Q only
    (dict(trainable=("W_Q",)), 2 * 8),
    (dict(kernel="linear", value_param="joint"), 2 * 2 * 8),
]


@pytest.mark.parametrize("kw,cols", LOGIT_CONFIGS, ids=lambda x: str(x))
def test_logit_factor_is_J_on_a_weight_subspace_and_below_the_logit_gram(kw, cols):
    mh = MultiHeadAttention(8, 4, 2, seed=0, **kw)
    X = synthetic_regression(40, 5, 8, seed=0).X  # m = 200·d_out: room for the logit factor
    J = AttentionJacobian(mh, X)
    P = AttentionGramPreconditioner(J)
    L = logit_factor_from_products(J, P)
    assert P.logit_directions == 1 and L.shape[1] == cols and P.rank >= cols
    torch.testing.assert_close(P.F[:, P.rank - cols:], L, rtol=1e-12, atol=1e-12 * float(L.abs().max()))
    G = ntk_gram(mh, X).gram
    val = tuple(k for k in J.trainable if k in ("W_V", "W_O"))
    R = G - (ntk_gram(mh, X, trainable=val).gram if val else 0)
    ev = torch.linalg.eigvalsh(R - L @ L.T)  # L Lᵀ = J Π Jᵀ ⪯ R
    assert float(ev[0]) >= -1e-12 * float(ev[-1])
    Pd = dense_P(mh, X, J, P)
    Y = torch.randn(J.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    Z = P.matmat(Y)
    res = torch.linalg.matrix_norm(Pd @ Z - Y) / (torch.linalg.matrix_norm(Pd, 2) * torch.linalg.matrix_norm(Z))
    assert float(res) < 1e-10, float(res)


def test_the_logit_factor_sharpens_the_preconditioner():
    mh = MultiHeadAttention(8, 8, 4, seed=0)  # rank bound 4·64 + 32 = 288 > m = 192: G is definite
    X = synthetic_regression(32, 6, 8, seed=0).X
    J = AttentionJacobian(mh, X)
    G = ntk_gram(mh, X).gram

    def kappa(P):
        C = torch.linalg.cholesky(P.matmat(torch.eye(G.shape[0], dtype=torch.float64)))
        ev = torch.linalg.eigvalsh(C.T @ G @ C)
        return float(ev[-1] / ev[0])

    import attncond.spectral.diagnostics.gram_preconditioner as gp

    with_factor = kappa(AttentionGramPreconditioner(J))
    old, gp.LOGIT_DIRECTIONS = gp.LOGIT_DIRECTIONS, 0
    try:
        without = kappa(AttentionGramPreconditioner(J))
    finally:
        gp.LOGIT_DIRECTIONS = old
    assert with_factor < 0.7 * without, (with_factor, without)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_inverse_of_the_dense_preconditioner(kw):
    mh = MultiHeadAttention(8, 4, 2, seed=0, **kw)
    X = synthetic_regression(10, 5, 8, seed=0).X
    J = AttentionJacobian(mh, X)
    P = AttentionGramPreconditioner(J)
    assert P.shape == (J.shape[0],) * 2 and P.block == 5 * mh.d_out
    Pd = dense_P(mh, X, J, P)
    Y = torch.randn(J.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    Z = P.matmat(Y)
    # P⁻¹Y solves P Z = Y: the residual relative to ‖P‖‖Z‖ is at the rounding level of a
    # Woodbury solve, i.e. κ(P)·eps at worst
    res = torch.linalg.matrix_norm(Pd @ Z - Y) / (torch.linalg.matrix_norm(Pd, 2) * torch.linalg.matrix_norm(Z))
    assert float(res) < 1e-10, float(res)
    torch.testing.assert_close(P.matvec(Y[:, 0]), Z[:, 0], rtol=1e-12, atol=1e-12 * float(Z[:, 0].abs().max()))
    torch.testing.assert_close(Z.T @ Y, (Z.T @ Y).T, rtol=1e-9, atol=1e-12)  # symmetric


def test_rank_is_the_value_side_columns():
    X = synthetic_regression(10, 5, 8, seed=0).X
    mh = MultiHeadAttention(8, 4, 2, seed=0, d_out=2, trainable=("W_Q", "W_K", "W_V", "W_O"))
    P = AttentionGramPreconditioner(AttentionJacobian(mh, X))
    assert P.rank == 2 * 8 * 2 + 2 * 4 * 2  # H·D·d_out + H·d·d_out
    mh = MultiHeadAttention(8, 4, 2, seed=0, trainable=("W_Q", "W_K"))
    assert AttentionGramPreconditioner(AttentionJacobian(mh, X)).rank == 0


def test_high_rank_value_side_falls_back_to_block_jacobi(monkeypatch):
    import attncond.spectral.diagnostics.gram_preconditioner as gp

    monkeypatch.setattr(gp, "MAX_RANK", 4)
    mh = MultiHeadAttention(8, 4, 2, seed=0)
    X = synthetic_regression(10, 5, 8, seed=0).X
    J = AttentionJacobian(mh, X)
    P = AttentionGramPreconditioner(J)
    assert P.rank == 0
    G = ntk_gram(mh, X).gram
    y = torch.randn(J.shape[0], dtype=torch.float64)
    blk = G[:5, :5] + P.shift * torch.eye(5, dtype=torch.float64)  # the whole Gram's block
    torch.testing.assert_close(P.matvec(y)[:5], torch.linalg.solve(blk, y[:5]), rtol=1e-9, atol=0)


def test_refuses_what_is_not_an_attention_jacobian():
    with pytest.raises(TypeError, match="J must be an AttentionJacobian"):
        AttentionGramPreconditioner(np.eye(3))


def _s24(N=24, n=8, D=12, d=6, H=2, **kw):
    mh = MultiHeadAttention(D, d, H, seed=0, **kw)
    X = synthetic_regression(N, n, D, seed=0).X
    return mh, X, AttentionJacobian(mh, X)


@pytest.mark.parametrize("kw", [dict(), dict(kernel="gaussian"), dict(value_param="joint")],
                         ids=["softmax", "gaussian", "joint"])
def test_preconditioned_gkd_certifies_mu_with_fewer_products(kw):
    mh, X, J = _s24(**kw)
    mu = float(torch.linalg.eigvalsh(ntk_gram(mh, X).gram)[0])
    smin = mu ** 0.5
    plain = golub_kahan_davidson(J, which="smallest", tol=1e-10, basis=48)
    pre = golub_kahan_davidson(J, which="smallest", tol=1e-10, preconditioner=AttentionGramPreconditioner(J))
    for r in (plain, pre):
        assert r.converged, r.reason
        assert r.smallest.lower[0] <= smin * (1 + 1e-12) and smin * (1 - 1e-12) <= r.smallest.upper[0]
        assert abs(r.sigma_min - smin) <= 1e-9 * smin
    assert pre.info["preconditioner"] == "AttentionGramPreconditioner"
    assert pre.matvecs < 0.6 * plain.matvecs, (pre.matvecs, plain.matvecs)


@pytest.mark.parametrize("shape", [(120, 70), (70, 120)])
@pytest.mark.parametrize("k", [1, 3])
def test_preconditioned_gkd_on_known_spectra(shape, k):
    """A generic preconditioner (the inverse of the small-side Gram shifted by half its smallest
    eigenvalue): the k smallest of a log-spaced spectrum with κ = 1e5 certified against the closed form."""
    m, n = shape
    s = np.logspace(0, -5, min(m, n))
    A = with_spectrum(m, n, s, seed=5)
    Gs = A @ A.T if m <= n else A.T @ A
    M = np.linalg.inv(Gs + 0.5 * s[-1] ** 2 * np.eye(len(Gs)))
    r = golub_kahan_davidson(A, k=k, which="smallest", tol=1e-10, preconditioner=(M + M.T) / 2)
    assert r.converged, r.reason
    truth = np.sort(s)[:k]
    for i in range(k):
        assert r.smallest.lower[i] <= truth[i] * (1 + 1e-12) and truth[i] * (1 - 1e-12) <= r.smallest.upper[i]
    np.testing.assert_allclose(r.smallest.values, truth, rtol=1e-8)
    plain = golub_kahan_davidson(A, k=k, which="smallest", tol=1e-10, basis=r.info["basis"])
    assert r.matvecs < plain.matvecs, (r.matvecs, plain.matvecs)


def test_a_useless_preconditioner_still_certifies_the_truth():
    """A random SPD matrix is no preconditioner; the answer is still certified on ``A`` (or nan)."""
    s = np.r_[np.linspace(3, 1, 50), [0.2, 0.21]]
    A = with_spectrum(80, 52, s, seed=6)
    rng = np.random.default_rng(1)
    B = rng.standard_normal((52, 52))
    r = golub_kahan_davidson(A, which="smallest", tol=1e-10, preconditioner=B @ B.T + np.eye(52))
    assert r.converged, r.reason
    assert r.smallest.lower[0] <= 0.2 <= r.smallest.upper[0]
    assert abs(r.sigma_min - 0.2) <= 1e-9


def test_preconditioned_rank_deficient_locks_the_null_space():
    d = 5
    s = np.r_[np.logspace(0, -3, 45), np.zeros(d)]
    A = with_spectrum(50, 90, s, seed=7)
    G = A @ A.T
    M = np.linalg.inv(G + 1e-4 * np.eye(50))
    r = golub_kahan_davidson(A, which="smallest", tol=1e-10, preconditioner=M)
    assert r.converged and r.rank_deficient, r.reason
    assert r.info["null_dim"] == d
    nz = r.info["smallest_nonzero"]
    assert nz["lower"] <= 1e-3 * (1 + 1e-12) and 1e-3 * (1 - 1e-12) <= nz["upper"]


def test_preconditioner_is_validated_before_any_product():
    A = with_spectrum(30, 20, np.linspace(1, 2, 20), seed=8)
    with pytest.raises(ValueError, match="preconditioner must be 20x20"):
        golub_kahan_davidson(A, preconditioner=np.eye(30))
    with pytest.raises(ValueError, match="preconditioner: only which='smallest'"):
        golub_kahan_davidson(A, which="both", preconditioner=np.eye(20))
    bad = np.eye(20)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="preconditioner: .*(NaN|nan|finite)"):
        golub_kahan_davidson(A, preconditioner=bad)
    with pytest.raises(TypeError, match="preconditioner"):
        golub_kahan_davidson(A, preconditioner="identity")


def test_non_finite_weights_are_refused_before_any_work():
    mh = MultiHeadAttention(4, 4, 2, seed=0)
    with torch.no_grad():
        mh.W_K[1, 2, 0] = float("inf")
    X = synthetic_regression(40, 5, 4, seed=0).X
    with pytest.raises(ValueError, match="model: the weight W_K has NaN or inf"):
        AttentionJacobian(mh, X)
    with torch.no_grad():
        mh.W_K[1, 2, 0] = 0.0
    J = AttentionJacobian(mh, X)
    with torch.no_grad():  # changed after J was built
        mh.W_K[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="J: the model's weight W_K has NaN or inf"):
        AttentionGramPreconditioner(J)
