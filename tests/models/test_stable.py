"""models.stable: cancellation-free softmax / scaled softmax / Gaussian autograd, against mpmath.

References are exact forward-mode derivatives of an mpmath re-implementation of the model
(``_mp_reference``, 80 digits). Errors are normwise: ``max|J − J_ref| / max|J_ref|``.
"""

from __future__ import annotations

import contextlib

import _mp_reference as R
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import models.kernels as kernels_module
import spectral
from models import (
    AttentionBlock,
    MultiHeadAttention,
    PromptTokenModel,
    stable_gaussian_kernel,
    stable_softmax,
    synthetic_regression,
)
from models.kernels import gaussian

F64 = torch.float64
TOL = 1e-12


def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.detach().double().reshape(ref.shape), ref.detach().double()
    err = float((got - ref).abs().max())
    return 0.0 if err == 0.0 else err / float(ref.abs().max())


@contextlib.contextmanager
def torch_autograd():
    """The models with torch's own softmax and Gaussian autograd (the behaviour before models.stable)."""
    saved = kernels_module.stable_softmax, kernels_module.stable_gaussian_kernel

    def plain_gaussian(Q, K, t, normalize=False):
        diff = Q.unsqueeze(-2) - K.unsqueeze(-3)
        L = -(diff * diff).sum(-1) / (2 * t)
        return torch.softmax(L, -1) if normalize else torch.exp(L)

    def plain_softmax(x, dim=-1, tau=None):
        return torch.softmax(x if tau is None else x / tau, dim)

    kernels_module.stable_softmax = plain_softmax
    kernels_module.stable_gaussian_kernel = plain_gaussian
    try:
        yield
    finally:
        kernels_module.stable_softmax, kernels_module.stable_gaussian_kernel = saved


# (kernel, options, regime, init_scale, d): points where attention is nearly one-hot. NormSoftmax is
# sharp at small logits (it divides by a row variance below τ); d = 2 avoids the scale invariance of
# softmax(z/std z) in a one-dimensional head, where the exact W_Q-Jacobian is 0.
SHARP = [
    ("softmax", {}, "sharp", 3.0, 1),
    ("temperature", {}, "sharp", 3.0, 2),
    ("normsoftmax", {}, "near_uniform", 3.0, 2),
    ("normsoftmax_std", {}, "sharp", 3.0, 2),
    ("gaussian", {"normalize": True}, "sharp", 3.0, 2),
    ("gaussian", {"on_underflow": "ignore"}, "sharp", 3.0, 2),
]


def _model(kern, opts, regime, scale, d, wrt, seed, H=1):
    return MultiHeadAttention(2, d, H, kernel=kern, kernel_options=opts, regime=regime, init_scale=scale,
                              trainable=wrt, seed=seed, tau=0.7 if kern == "temperature" else None)


def _max_prob(m, X) -> float:
    S = m.attention(X).detach()
    return float(S.max(-1).values.min()) if m.kernel_name != "gaussian" else float(S.max())


@pytest.mark.parametrize("kern,opts,regime,scale,d", SHARP)
@pytest.mark.parametrize("wrt", [("W_Q",), ("W_K",)])
@pytest.mark.parametrize("seed", [5, 7])
def test_sharp_jacobian_matches_mpmath_on_every_route(kern, opts, regime, scale, d, wrt, seed):
    X = synthetic_regression(N=2, n=3, D=2, seed=seed).X
    m = _model(kern, opts, regime, scale, d, wrt, seed)
    ref = R.to_torch(R.mh_jacobian(m, X, wrt))
    assert float(ref.abs().max()) > 0
    f = lambda p: m.functional(p, X)  # noqa: E731
    W = m.params()[wrt[0]]
    routes = {
        "jacrev": torch.func.jacrev(lambda w: f({wrt[0]: w}))(W),
        "jacfwd": torch.func.jacfwd(lambda w: f({wrt[0]: w}))(W),
        "JacobianOperator": spectral.JacobianOperator(f, m.params()).to_dense(),
        "per_sample": spectral.JacobianOperator(m.functional, m.params(), (X,), sample_dim=0).jacobian_matrix(),
    }
    for name, J in routes.items():
        assert rel(J, ref) <= TOL, (name, rel(J, ref))


#: the SHARP points where torch's stock softmax backward is still off by O(1); at the temperature and
#: NormSoftmax points the keys formed from token differences (models.key_reference) already remove it
STOCK_DEFEATED = ("softmax", "gaussian")


def test_sharp_points_defeat_torch_autograd():
    """The test points above are hard: torch's softmax backward is off by O(1) at some of them."""
    X = synthetic_regression(N=2, n=3, D=2, seed=5).X
    for kern, opts, regime, scale, d in SHARP[:5]:
        m = _model(kern, opts, regime, scale, d, ("W_Q",), 5)
        assert _max_prob(m, X) > 1 - 1e-12
        ref = R.to_torch(R.mh_jacobian(m, X, ("W_Q",)))
        f = lambda w, m=m: m.functional({"W_Q": w}, X)  # noqa: E731
        if kern in STOCK_DEFEATED:
            with torch_autograd():
                J = torch.func.jacrev(f)(m.params()["W_Q"])
            assert rel(J, ref) > 1e-3, kern
        J = torch.func.jacrev(f)(m.params()["W_Q"])
        assert rel(J, ref) <= TOL, kern


def test_issue_example_certifies_the_exact_sigma_max():
    X = synthetic_regression(N=2, n=3, D=2, seed=5).X
    m = MultiHeadAttention(2, 1, 1, regime="sharp", init_scale=3.0, trainable=("W_Q",), seed=5)
    exact = R.singular_values(R.mh_jacobian(m, X, ("W_Q",)))
    est = spectral.extreme_singular_values(spectral.JacobianOperator(m.functional, m.params(), (X,)))
    assert est.converged
    assert abs(est.sigma_max - exact[0]) <= 1e-12 * exact[0]
    assert abs(est.sigma_min - exact[-1]) <= 1e-11 * exact[-1]
    lo, hi = est.sigma_max_interval
    assert lo * (1 - 1e-12) <= exact[0] <= hi * (1 + 1e-12)


@pytest.mark.parametrize("kern,opts,regime,scale", [
    ("softmax", {}, "sharp", 3.0), ("normsoftmax", {}, "default", 1.0),
    ("gaussian", {"normalize": True}, "sharp", 3.0), ("gaussian", {"on_underflow": "ignore"}, "sharp", 3.0)])
def test_sharp_hessian_matches_mpmath(kern, opts, regime, scale):
    ds = synthetic_regression(N=2, n=3, D=2, seed=2)
    m = _model(kern, opts, regime, scale, 2, ("W_Q", "W_K"), 2)
    ref = R.to_torch(R.loss_hessian(m, ds.X, ds.y, ("W_Q", "W_K")))
    loss = lambda p: m.loss(p, ds.X, ds.y)  # noqa: E731
    P = m.params()
    flat = lambda Hd: torch.cat([torch.cat([Hd[a][b].reshape(P[a].numel(), P[b].numel())  # noqa: E731
                                            for b in P], 1) for a in P], 0)
    routes = {
        "HessianOperator": spectral.HessianOperator(loss, P).to_dense(),
        "hessian": flat(torch.func.hessian(loss)(P)),
        "jacrev(jacrev)": flat(torch.func.jacrev(torch.func.jacrev(loss))(P)),
    }
    for name, Hm in routes.items():
        assert rel(Hm, ref) <= TOL, (name, rel(Hm, ref))


def test_jvp_vjp_dot_test_at_sharp_attention():
    X = synthetic_regression(N=3, n=4, D=3, seed=0).X
    for kern, opts in [("softmax", {}), ("normsoftmax_std", {}), ("gaussian", {"normalize": True})]:
        m = MultiHeadAttention(3, 2, 2, kernel=kern, kernel_options=opts, regime="sharp", seed=3)
        P = m.params()
        g = torch.Generator().manual_seed(0)
        v = {k: torch.randn(t.shape, generator=g, dtype=F64) for k, t in P.items()}
        f = lambda p, m=m: m.functional(p, X)  # noqa: E731
        out, Jv = torch.func.jvp(f, (P,), (v,))
        u = torch.randn(out.shape, generator=g, dtype=F64)
        JTu = torch.func.vjp(f, P)[1](u)[0]
        lhs = float((Jv * u).sum())
        rhs = float(sum((JTu[k] * v[k]).sum() for k in P))
        scale = float(Jv.abs().sum() * u.abs().max() + sum((JTu[k].abs() * v[k].abs()).sum() for k in P))
        assert abs(lhs - rhs) <= 1e-14 * scale, kern


def test_forward_values_are_torch_softmax_bitwise():
    x = torch.randn(4, 5, 6, dtype=F64) * 30
    for dim in (0, 1, -1):
        assert torch.equal(stable_softmax(x, dim), torch.softmax(x, dim))
    assert torch.equal(stable_softmax(x, -1, tau=0.3), torch.softmax(x / 0.3, -1))
    Q, K = torch.randn(2, 4, 3, dtype=F64), torch.randn(2, 4, 3, dtype=F64)
    assert torch.equal(stable_gaussian_kernel(Q, K, 1.5), gaussian(Q, K, 1.5))


def test_gradcheck_and_gradgradcheck_every_function():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    t = (torch.rand(2, 1, generator=g, dtype=F64) + 0.5).requires_grad_()
    Q = torch.randn(3, 2, generator=g, dtype=F64, requires_grad=True)
    K = torch.randn(3, 2, generator=g, dtype=F64, requires_grad=True)
    cases = [
        (lambda x: stable_softmax(x, 0), (x,)),
        (lambda x, t: stable_softmax(x, -1, tau=t), (x, t)),
        (lambda Q, K: stable_gaussian_kernel(Q, K, 1.3, False), (Q, K)),
        (lambda Q, K: stable_gaussian_kernel(Q, K, 1.3, True), (Q, K)),
    ]
    for fn, args in cases:
        assert torch.autograd.gradcheck(fn, args, check_forward_ad=True, check_batched_grad=True)
        assert torch.autograd.gradgradcheck(fn, args)


def test_torch_func_transforms_agree_with_torch_at_a_generic_point():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, generator=g, dtype=F64)
    t = torch.rand(3, 1, generator=g, dtype=F64) + 0.5
    f = lambda x, t: stable_softmax(x, -1, tau=t).sin().sum()  # noqa: E731
    f0 = lambda x, t: torch.softmax(x / t, -1).sin().sum()  # noqa: E731
    for a, b in zip(torch.func.hessian(f, argnums=(0, 1))(x, t), torch.func.hessian(f0, argnums=(0, 1))(x, t),
                    strict=True):
        for u, w in zip(a, b, strict=True):
            assert torch.allclose(u, w, rtol=1e-12, atol=1e-14)
    J = torch.func.vmap(torch.func.jacrev(lambda r: stable_softmax(r, 0)))(x)
    J0 = torch.func.vmap(torch.func.jacfwd(lambda r: torch.softmax(r, 0)))(x)
    assert torch.allclose(J, J0, rtol=1e-12, atol=1e-15)


def test_temperature_derivative_is_stable():
    """∂s/∂τ of softmax(z/τ) with a tensor τ, at logits with a large common offset and a sharp row."""
    import mpmath

    z = torch.tensor([1000.0 + 40.0, 1000.0, 1000.0 - 3.0], dtype=F64)
    tau = torch.tensor(0.9, dtype=F64)
    got = torch.func.jacrev(lambda t: stable_softmax(z, -1, tau=t))(tau)
    with mpmath.workdps(60):
        zz = [mpmath.mpf(v) for v in z.tolist()]
        ref = torch.tensor([float(mpmath.diff(lambda t, i=i: R._softmax_row([v / t for v in zz])[i],
                                              mpmath.mpf(0.9))) for i in range(3)], dtype=F64)
    assert rel(got, ref) <= TOL
    with torch_autograd():
        plain = torch.func.jacrev(lambda t: torch.softmax(z / t, -1))(tau)
    assert rel(plain, ref) > 1e-3


def test_other_models_use_the_stable_functions():
    X = torch.randn(2, 4, 3, dtype=F64)
    blk = AttentionBlock(3, 2, kernel="normsoftmax")
    assert type(blk.attention(X).grad_fn).__name__ == "_ScaledSoftmaxBackward"
    pt = PromptTokenModel(3, tau=0.05, p_scale=5.0)
    assert type(pt.attention(X).grad_fn).__name__ == "_SoftmaxBackward"
    mh = MultiHeadAttention(3, 2, 1, kernel="gaussian")
    assert type(mh.attention(X).grad_fn).__name__ == "_GaussianBackward"


@pytest.mark.parametrize("call,exc,match", [
    (lambda: stable_softmax([1.0, 2.0]), TypeError, "x must be a floating-point torch.Tensor"),
    (lambda: stable_softmax(torch.ones(3, dtype=F64), 1), ValueError, "dim=1 is out of range"),
    (lambda: stable_softmax(torch.ones(3, dtype=F64), 0.5), TypeError, "dim must be an int"),
    (lambda: stable_softmax(torch.ones(3, dtype=F64), tau=0.0), ValueError, "tau must be a finite number > 0"),
    (lambda: stable_softmax(torch.ones(2, 3, dtype=F64), tau=torch.ones(2, 3, dtype=F64)), ValueError,
     "size 1 along dim"),
])
def test_stable_softmax_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("kern,opts,seed", [
    ("softmax", {}, 5), ("softmax", {}, 7), ("temperature", {}, 7), ("gaussian", {"normalize": True}, 5),
    ("gaussian", {"on_underflow": "ignore"}, 7), ("linear", {}, 5)])
def test_structured_ntk_gram_matches_mpmath_at_sharp_attention(kern, opts, seed):
    """The closed-form NTK Gram centres the softmax adjoint and shifts keys/tokens by the row's argmax."""
    from spectral.diagnostics.structured import ntk_gram

    X = synthetic_regression(N=2, n=3, D=2, seed=seed).X
    m = _model(kern, opts, "sharp", 3.0, 2, ("W_Q", "W_K"), seed)
    J = R.to_torch(R.mh_jacobian(m, X, ("W_Q", "W_K")))
    ref = J @ J.T
    assert float(ref.abs().max()) > 0
    res = ntk_gram(m, X)
    assert res.route == "structured"
    assert rel(res.gram, ref) <= TOL, rel(res.gram, ref)


@settings(max_examples=25)
@given(n=st.integers(2, 6), scale=st.sampled_from([1.0, 30.0, 300.0]), seed=st.integers(0, 2**16))
def test_softmax_vjp_and_jvp_match_mpmath_on_random_rows(n, scale, seed):
    """``J v`` to ε·(1 + max|x − x_m|) normwise: the rounding of the probabilities themselves."""
    import mpmath

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=F64) * scale
    v = torch.randn(n, generator=g, dtype=F64)
    with mpmath.workdps(60):
        s = R._softmax_row([mpmath.mpf(float(t)) for t in x])
        vv = [mpmath.mpf(float(t)) for t in v]
        # s_i (v_i − ⟨s, v⟩) as s_i Σ_j s_j (v_i − v_j): at 60 digits the textbook form would cancel too
        ref = torch.tensor([float(si * mpmath.fsum(sj * (vi - vj) for sj, vj in zip(s, vv, strict=True)))
                            for si, vi in zip(s, vv, strict=True)], dtype=F64)
    vjp = torch.func.vjp(lambda t: stable_softmax(t, 0), x)[1](v)[0]
    jvp = torch.func.jvp(lambda t: stable_softmax(t, 0), (x,), (v,))[1]
    if float(ref.abs().max()) == 0.0:  # every entry of J v underflows float64 (one-hot beyond e^-745)
        assert not vjp.any() and not jvp.any()
        return
    tol = 8 * torch.finfo(F64).eps * (1 + float((x - x.max()).abs().max()))
    assert rel(vjp, ref) <= tol and rel(jvp, ref) <= tol, (rel(vjp, ref), rel(jvp, ref), tol)


def _prompt_hessian_mp(pt: PromptTokenModel, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact Hessian of the [I25] prompt loss ``(1/2N) Σ_i (u_iᵀ softmax(K_i p/τ) − y_i)²`` (nested duals)."""
    import mpmath

    D, N = pt.D, X.shape[0]
    with mpmath.workdps(R.DPS):
        K = [R._mat(Xi @ pt.W) for Xi in X.double()]
        u = [[mpmath.mpf(float(t)) for t in (Xi @ pt.v).tolist()] for Xi in X.double()]
        yy = [mpmath.mpf(float(t)) for t in y.tolist()]
        p0 = [mpmath.mpf(float(t)) for t in pt.p.detach().tolist()]
        tau = mpmath.mpf(pt.tau)
        Hm = torch.zeros(D, D, dtype=F64)
        for a in range(D):
            for b in range(a, D):
                p = [R.Dual(R.Dual(v, 0), R.Dual(1 if i == a else 0, 0)) for i, v in enumerate(p0)]
                p[b] = p[b] + R.Dual(R.Dual(0, 1), 0)
                f = 0
                for i in range(N):
                    n = len(u[i])
                    s = R._softmax_row([R._sum(K[i][j][c] * p[c] for c in range(D)) / tau for j in range(n)])
                    r = R._sum(u[i][j] * s[j] for j in range(len(u[i]))) - yy[i]
                    f = r * r + f
                Hm[a, b] = Hm[b, a] = float(R._part(f / (2 * N), "b", "b"))
    return Hm


def test_prompt_model_hessian_matches_mpmath_at_sparse_attention(monkeypatch):
    """[I25] at small τ (sparse attention): the loss Hessian through the stable softmax is exact to rounding;
    through torch's softmax it is off by a factor 100 at this point."""
    import models.prompt

    ds = synthetic_regression(N=3, n=4, D=3, seed=2)
    pt = PromptTokenModel(3, tau=0.01, p_scale=3.0, seed=2)
    y = ds.y.reshape(3, 4)[:, 0]
    assert float(pt.attention(ds.X).detach().max(-1).values.min()) > 1 - 1e-12  # every row nearly one-hot
    ref = _prompt_hessian_mp(pt, ds.X, y)

    def hessian():
        return spectral.HessianOperator(lambda p: pt.loss(p, ds.X, y), pt.params()).to_dense()

    assert rel(hessian(), ref) <= TOL, rel(hessian(), ref)
    monkeypatch.setattr(models.prompt, "stable_softmax", lambda x, dim=-1: torch.softmax(x, dim))
    assert rel(hessian(), ref) > 1.0
