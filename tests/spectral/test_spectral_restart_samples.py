"""Harmonic-Ritz restarts of Golub–Kahan–Lanczos and the per-sample Jacobian structure.

* ``restart="harmonic"`` on known spectra (κ up to 1e12, clustered ``σ_min``, exact rank
  deficiency): certified intervals contain the true extremes; converged results are
  accurate; a harmonic restart keeps the Lanczos relation to rounding level.
* ``JacobianOperator(sample_dim=...)``: per-sample ``jacrev`` under ``vmap`` equals the
  generic Jacobian to 1e-13 for every ``sample_chunk``; the declaration check refuses a
  function that mixes samples; the Gram matrices built in blocks equal ``J Jᵀ``/``Jᵀ J``;
  ``extreme_singular_values`` records the per-sample routes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from _spectral_cases import logspaced, true_extremes, with_spectrum

import spectral
import spectral.policy as policy
import spectral.solvers.gkl as gkl_mod
import spectral.solvers.gram_route as gram_route_mod
import spectral.solvers.psd as psd_mod
from models import MultiHeadAttention, synthetic_regression

EPS = np.finfo(np.float64).eps


def _slack(A: np.ndarray, smax: float) -> float:
    return 4 * math.sqrt(max(A.shape)) * EPS * smax


# ------------------------------------------------------------------ harmonic restarts
HARMONIC_CASES = {
    "kappa1e12": (90, 60, logspaced(60, 1e12)),
    "clustered": (90, 60, np.r_[np.linspace(10.0, 1.0, 54), 1e-3 * (1 + 1e-6 * np.arange(6))]),
    "rank_deficient": (90, 60, np.r_[np.linspace(5.0, 1.0, 56), np.zeros(4)]),
    "wide_isolated": (60, 90, np.r_[np.linspace(1.0, 0.1, 59), 1e-8]),
}


@pytest.mark.parametrize("name", list(HARMONIC_CASES))
def test_harmonic_restart_known_spectra(name):
    m, n, s = HARMONIC_CASES[name]
    A = with_spectrum(m, n, s, seed=5)
    smax, smin, spec = true_extremes(A)
    maxiter = {"clustered": 1400, "kappa1e12": 160}.get(name, 400)
    r = spectral.golub_kahan_lanczos(A, which="smallest", restart="harmonic", ncv=16, maxiter=maxiter)
    assert r.info["restart"] == "harmonic" and r.info["restarts"] > 0
    lo, hi = r.smallest.lower[0], r.smallest.upper[0]
    slack = _slack(A, smax)
    # the interval holds a singular value, and Courant–Fischer makes its upper end >= sigma_min
    assert np.any((spec >= lo - slack) & (spec <= hi + slack))
    assert hi >= smin - slack
    if name == "rank_deficient":
        assert r.converged and r.rank_deficient and r.sigma_min == 0.0 and lo == 0.0
        assert "rank deficient" in r.reason
    elif r.converged:
        assert lo - slack <= smin <= hi + slack
        assert abs(r.sigma_min - smin) <= max(1e-9 * smin, 1e3 * EPS * smax)
    else:
        assert name == "kappa1e12"  # 60 log-spaced values, 16 vectors: slow, and it says so
        assert r.reason and "not converged" in r.reason and r.iterations >= maxiter
    if name in ("clustered", "wide_isolated"):
        # a σ_min inside the bulk or isolated: harmonic steps are taken and the run converges
        assert r.converged and r.info["harmonic_restarts"] > 0


def test_harmonic_restart_keeps_the_lanczos_relation(monkeypatch):
    """After a harmonic restart ``T P̃ = Q̃ R`` and ``Tᵀ Q̃ − P̃ Rᵀ`` is rank one along ``p̃``."""
    m, n, s = HARMONIC_CASES["clustered"]
    A = with_spectrum(m, n, s, seed=5)
    T = torch.as_tensor(A)
    seen: list[tuple[float, float, float]] = []
    orig = gkl_mod._harmonic_restart

    def checked(P, Q, B, p_next, beta, kk, gen):
        kk = orig(P, Q, B, p_next, beta, kk, gen)
        if kk > 0:
            Pk, Qk, R = P[:, :kk], Q[:, :kk], B[:kk, :kk]
            res = T.T @ Qk - Pk @ R.T
            pk = P[:, kk]
            seen.append(
                (
                    float(torch.linalg.matrix_norm(T @ Pk - Qk @ R)),
                    float(torch.linalg.matrix_norm(res - torch.outer(pk, pk @ res))),
                    float(torch.linalg.matrix_norm(P[:, : kk + 1].T @ P[:, : kk + 1] - torch.eye(kk + 1))),
                )
            )
            assert torch.equal(R, torch.triu(R))
        return kk

    monkeypatch.setattr(gkl_mod, "_harmonic_restart", checked)
    r = spectral.golub_kahan_lanczos(A, which="smallest", restart="harmonic", ncv=16, maxiter=80)
    assert seen and r.info["harmonic_restarts"] == len(seen)
    smax = float(np.linalg.norm(A, 2))
    for rel_tp, rel_rank1, orth in seen:
        assert rel_tp <= 1e-13 * smax and rel_rank1 <= 1e-12 * smax and orth <= 1e-13


def test_harmonic_both_ends_and_auto():
    A = with_spectrum(80, 50, logspaced(50, 1e6), seed=2)
    smax, smin, _ = true_extremes(A)
    r = spectral.golub_kahan_lanczos(A, which="both", restart="harmonic", ncv=14, maxiter=300)
    split = r.info["split"]
    assert split["largest_steps"] + split["smallest_steps"] == r.iterations
    assert abs(r.sigma_max - smax) <= 1e-10 * smax
    assert r.smallest.upper[0] >= smin - _slack(A, smax)
    assert not r.converged and "maxiter reached" in r.reason  # κ=1e6, 50 values, 14 vectors
    a = spectral.golub_kahan_lanczos(A, which="both", restart="auto", ncv=14, maxiter=50)
    assert a.info["restart"] == gkl_mod.AUTO_RESTART["both"] and "split" not in a.info
    assert spectral.golub_kahan_lanczos(A, restart="augmented", maxiter=5).info["restart"] == "thick"
    with pytest.raises(ValueError, match="restart"):
        spectral.golub_kahan_lanczos(A, restart="implicit")
    with pytest.raises(ValueError, match="harmonic restart is for which='smallest'"):
        gkl_mod._gkl_core(
            spectral.as_operator(A), 1, "largest", 1e-8, 10, torch.ones(50, dtype=torch.float64),
            torch.Generator().manual_seed(0), None, True, harmonic=True,
        )


# ------------------------------------------------------------------ per-sample Jacobians
def _mh(N: int = 5, n: int = 3, D: int = 4, d: int = 3, H: int = 2):
    model = MultiHeadAttention(D, d, H, kernel="softmax", trainable=("W_Q", "W_K", "W_V"), seed=0)
    X = synthetic_regression(N, n, D, seed=0).X
    return model, X


def test_per_sample_jacobian_equals_generic():
    model, X = _mh()
    params = model.params()
    generic = spectral.JacobianOperator(lambda p: model.functional(p, X), params)
    ref = generic.to_dense()  # p products through the whole batch
    ref_jacrev = torch.func.jacrev(lambda p: model.functional(p, X).reshape(-1))(params)
    ref_jacrev = torch.cat([ref_jacrev[k].reshape(ref.shape[0], -1) for k in params], dim=1)
    torch.testing.assert_close(ref, ref_jacrev, rtol=0, atol=1e-13)
    for chunk in (None, 1, 2):
        J = spectral.JacobianOperator(model.functional, params, (X,), sample_dim=0, sample_chunk=chunk)
        assert J.n_samples == 5 and J.sample_chunk == (chunk or J.sample_chunk)
        J.reset_count()
        Jd = J.jacobian_matrix()
        assert J.n_products == 0  # materialisation is not counted as products
        assert Jd.shape == ref.shape
        assert float((Jd - ref).abs().max()) <= 1e-13 * max(1.0, float(ref.abs().max()))
        torch.testing.assert_close(J.to_dense(), Jd, rtol=0, atol=0)
    # matvec/rmatvec are untouched by the opt-in
    v = torch.randn(ref.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(J.matvec(v), ref @ v, rtol=1e-12, atol=1e-13)


def test_per_sample_default_chunk_bounds_memory():
    model, X = _mh(N=6)
    J = spectral.JacobianOperator(model.functional, model.params(), (X,), sample_dim=0)
    m_s, p = J.shape[0] // 6, J.shape[1]
    assert J.sample_chunk == min(6, max(1, (256 * 1024**2) // (m_s * p * 8)))


@pytest.mark.parametrize("max_bytes", [4 * 1024**3, 1, 3000])
def test_per_sample_gram_blocks(max_bytes):
    model, X = _mh(N=5)
    J = spectral.JacobianOperator(model.functional, model.params(), (X,), sample_dim=0, sample_chunk=2)
    Jd = J.jacobian_matrix()
    G_out = J.gram("outer", max_bytes=max_bytes)
    G_in = J.gram("inner", max_bytes=max_bytes)
    torch.testing.assert_close(G_out, Jd @ Jd.T, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(G_in, Jd.T @ Jd, rtol=1e-12, atol=1e-13)
    assert torch.equal(G_out, G_out.T) and torch.equal(G_in, G_in.T)


def test_sample_dim_declaration_refuses_mixing():
    model, X = _mh()

    def centred(p, X):  # subtracts the batch mean: sample i depends on all samples
        out = model.functional(p, X)
        return out - out.mean(dim=0, keepdim=True)

    with pytest.raises(ValueError, match="does not act independently"):
        spectral.JacobianOperator(centred, model.params(), (X,), sample_dim=0)

    def token_first(p, X):  # sample axis not first in the output
        return model.functional(p, X).transpose(0, 1)

    with pytest.raises(ValueError, match="sample axis first"):
        spectral.JacobianOperator(token_first, model.params(), (X,), sample_dim=0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"sample_dim": True}, TypeError, "sample_dim"),
        ({"sample_dim": "0"}, TypeError, "sample_dim"),
        ({"sample_dim": 3}, ValueError, "out of range"),
        ({"sample_dim": 0, "sample_chunk": 0}, ValueError, "sample_chunk"),
        ({"sample_dim": 0, "sample_chunk": 1.5}, ValueError, "sample_chunk"),
        ({"sample_chunk": 2}, ValueError, "sample_chunk needs sample_dim"),
        ({"chunk": 0}, ValueError, "chunk"),
    ],
)
def test_sample_dim_bad_input(kwargs, exc, match):
    model, X = _mh()
    with pytest.raises(exc, match=match):
        spectral.JacobianOperator(model.functional, model.params(), (X,), **kwargs)


def test_sample_dim_bad_inputs_and_methods():
    model, X = _mh()
    with pytest.raises(ValueError, match="needs inputs"):
        spectral.JacobianOperator(lambda p: model.functional(p, X), model.params(), sample_dim=0)
    two = lambda p, X, Y: model.functional(p, X)  # noqa: E731
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        spectral.JacobianOperator(two, model.params(), (X, X[:2]), sample_dim=0)
    with pytest.raises(TypeError, match="inputs\\[1\\]"):
        spectral.JacobianOperator(two, model.params(), (X, 2.0), sample_dim=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        spectral.JacobianOperator("fn", model.params(), (X,))
    plain = spectral.JacobianOperator(model.functional, model.params(), (X,))
    with pytest.raises(ValueError, match="sample_dim="):
        plain.jacobian_matrix()
    J = spectral.JacobianOperator(model.functional, model.params(), (X,), sample_dim=0)
    with pytest.raises(ValueError, match="unknown side"):
        J.gram("left")
    with pytest.raises(ValueError, match="max_bytes"):
        J.gram(max_bytes=0)
    with pytest.raises(ValueError, match="max_entries"):
        J.to_dense(max_entries=10)


def test_auto_routes_for_per_sample_jacobians(monkeypatch):
    model, X = _mh(N=6)
    J = spectral.JacobianOperator(model.functional, model.params(), (X,), sample_dim=0)
    s = torch.linalg.svdvals(J.jacobian_matrix()).numpy()
    e = spectral.extreme_singular_values(J)
    assert e.method == "auto->dense[per-sample]" and e.converged
    assert abs(e.sigma_max - s[0]) <= 1e-12 * s[0] and abs(e.sigma_min - s[-1]) <= 1e-10 * s[-1]
    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, dense_max_entries=10))
    e = spectral.extreme_singular_values(J)
    assert e.method.startswith("auto->gram[per-sample]") and e.converged
    assert e.sigma_min_interval[0] <= s[-1] <= e.sigma_min_interval[1]
    assert abs(e.sigma_min - s[-1]) <= 1e-9 * s[-1]
    # the Gram route cannot certify and J does not fit: refined by Golub–Kahan
    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, gram_max_bytes=64))
    monkeypatch.setattr(gram_route_mod, "meets_tol", lambda c, tol: np.zeros(len(c.values), dtype=bool))
    e = spectral.extreme_singular_values(J)
    assert e.method == "auto->gram[per-sample]+gkl" and e.converged
    assert abs(e.sigma_min - s[-1]) <= 1e-9 * s[-1]
    e = spectral.extreme_singular_values(J, method="gram")
    assert e.method == "gram[per-sample]+gkl"


def test_gram_route_extreme_eigenpairs_without_full_eigh(monkeypatch):
    """Above ``GRAM_EIGH_MAX_SIDE`` the Gram route uses Lanczos + Cholesky shift-invert, and
    certifies the σ_min gap by a Cholesky factorisation; the results match the dense SVD."""
    model, X = _mh(N=8)
    J = spectral.JacobianOperator(model.functional, model.params(), (X,), sample_dim=0)
    s = torch.linalg.svdvals(J.jacobian_matrix()).numpy()
    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, dense_max_entries=10))
    monkeypatch.setattr(policy, "AUTO", dataclasses.replace(policy.AUTO, psd_eigh_max_side=4))
    e = spectral.extreme_singular_values(J)
    assert e.method == "auto->gram[per-sample]" and e.converged, e.reason
    assert "shift-invert" in e.details.info["gram_eigen_solver"] and "gap_certified_by" in e.details.info
    assert e.sigma_min_interval[0] <= s[-1] <= e.sigma_min_interval[1]
    assert e.sigma_max_interval[0] <= s[0] <= e.sigma_max_interval[1]
    assert abs(e.sigma_min - s[-1]) <= 1e-10 * s[-1] and abs(e.sigma_max - s[0]) <= 1e-12 * s[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_gap_certificate_never_lies(seed):
    """``λ_2 ≥ μ`` is claimed only when true — for an exact, a rough and a wrong vector ``w``."""
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((40, 60))
    G = B @ B.T
    lam, W = np.linalg.eigh(G)
    w_rough = W[:, 0] + 1e-3 * rng.standard_normal(40)
    for w in (W[:, 0], w_rough, W[:, 5]):
        for mu in (lam[0] + 0.5 * (lam[1] - lam[0]), lam[1] + 1e-6, 0.5 * (lam[1] + lam[2])):
            claimed = psd_mod.one_eigenvalue_below(G, w, float(mu), float(lam[-1]))
            assert not claimed or lam[1] >= mu
    # and with the true eigenvector and μ just below λ_2 it succeeds
    assert psd_mod.one_eigenvalue_below(G, W[:, 0], float(lam[1] - 1e-6 * (lam[1] - lam[0])), float(lam[-1]))
