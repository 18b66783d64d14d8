"""Operators: input types, counters, dot tests, and model operators vs dense torch.func."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from hypothesis import given
from hypothesis import strategies as st

import spectral
from spectral.operators import LinearOp, as_operator

RNG = np.random.default_rng(0)
A_NP = RNG.standard_normal((7, 5))


def _inputs():
    A = A_NP
    At = torch.as_tensor(A)
    return {
        "numpy": A,
        "numpy_int": np.arange(35).reshape(7, 5),
        "torch": At,
        "torch32": At.float(),
        "sparse": sp.csr_matrix(np.where(np.abs(A) > 0.5, A, 0.0)),
        "scipy_linop": spla.aslinearoperator(A),
        "linop": as_operator(A),
        "callables": (lambda x: At @ x, lambda y: At.T @ y, (7, 5)),
    }


def dot_test(op: LinearOp, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    m, n = op.shape
    x = torch.randn(n, generator=g, dtype=torch.float64).to(op.dtype)
    y = torch.randn(m, generator=g, dtype=torch.float64).to(op.dtype)
    lhs = float(torch.dot(op.matvec(x), y))
    rhs = float(torch.dot(x, op.rmatvec(y)))
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-30)


@pytest.mark.parametrize("kind", list(_inputs()))
def test_as_operator_inputs(kind):
    A = _inputs()[kind]
    op = as_operator(A)
    assert op.shape == (7, 5)
    assert op.dtype in (torch.float32, torch.float64)
    tol = 1e-5 if op.dtype == torch.float32 else 1e-13
    assert dot_test(op) < tol
    dense = op.to_dense()
    X = torch.randn(5, 3, dtype=torch.float64).to(op.dtype)
    Y = torch.randn(7, 2, dtype=torch.float64).to(op.dtype)
    op.reset_count()
    torch.testing.assert_close(op.matmat(X), dense @ X, rtol=tol, atol=tol)
    torch.testing.assert_close(op.rmatmat(Y), dense.T @ Y, rtol=tol, atol=tol)
    assert op.n_products == 5
    torch.testing.assert_close(op.matvec(X), dense @ X, rtol=tol, atol=tol)  # 2-D -> matmat
    sc = op.to_scipy()
    np.testing.assert_allclose(sc.matvec(X[:, 0].numpy()), (dense @ X[:, 0]).numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(sc.rmatvec(Y[:, 0].numpy()), (dense.T @ Y[:, 0]).numpy(), rtol=tol, atol=tol)
    assert op.T.shape == (5, 7) and op.T.T is op


def test_int_becomes_float64_and_counter_shared():
    op = as_operator(np.arange(6).reshape(2, 3))
    assert op.dtype == torch.float64
    op.reset_count()
    op.T.matvec(torch.ones(2, dtype=torch.float64))
    assert op.n_products == 1
    assert "n_products=1" in repr(op)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or inf"),
        (np.ones(3), "2-D"),
        (np.ones((2, 2, 2)), "2-D"),
        (sp.csr_matrix(np.array([[np.nan, 1.0]])), "NaN"),
    ],
)
def test_as_operator_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        as_operator(bad)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_input_widens_exactly_to_float32(half):
    """A stored half-precision matrix is the matrix of its values; float32 holds each exactly (as integers
    and booleans widen to float64), so it is accepted, solved in float32 and certified."""
    import spectral

    T = torch.tensor([[3.0, 1.0], [0.5, 2.0]], dtype=half)
    for A in (T, T.numpy() if half == torch.float16 else T, T.to_sparse()):
        op = as_operator(A)
        assert op.dtype == torch.float32
        e = spectral.extreme_singular_values(A)
        s = np.linalg.svd(T.double().numpy(), compute_uv=False)
        assert e.converged and e.sigma_min_interval[0] <= s[-1] <= e.sigma_min_interval[1]
        assert e.sigma_max_interval[0] <= s[0] <= e.sigma_max_interval[1]


def test_device_mismatch():
    op = as_operator(A_NP)
    with pytest.raises(ValueError, match="device"):
        as_operator(op, device="meta")
    with pytest.raises(ValueError, match="device"):
        op.matvec(torch.ones(5, dtype=torch.float64, device="meta"))
    with pytest.raises(ValueError, match="shape"):
        op.matvec(torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError):
        as_operator("not a matrix")


# ------------------------------------------------------------------ model operators
def _model():
    g = torch.Generator().manual_seed(1)
    params = {
        "W": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "b": torch.randn(4, generator=g, dtype=torch.float64),
    }
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 4, generator=g, dtype=torch.float64)

    def fn(p, X):
        return torch.softmax(X @ p["W"].T + p["b"], dim=-1) * torch.tanh(X @ p["W"].T)

    return params, X, y, fn


def _flat_fn(fn, params, X):
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]

    def f(theta):
        parts = torch.split(theta, sizes)
        return fn({k: t.reshape(s) for k, t, s in zip(names, parts, shapes, strict=True)}, X)

    return f, spectral.flatten_params(params)


def test_jacobian_operator_vs_jacrev():
    params, X, _, fn = _model()
    J = spectral.JacobianOperator(fn, params, (X,))
    f, theta = _flat_fn(fn, params, X)
    ref = torch.func.jacrev(lambda t: f(t).reshape(-1))(theta)
    assert J.shape == ref.shape == (24, 16)
    torch.testing.assert_close(J.to_dense(), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(J.rmatmat(torch.eye(24, dtype=torch.float64)), ref.T)
    J.reset_count()
    J.matmat(torch.eye(16, dtype=torch.float64))
    assert J.n_products == 16
    assert dot_test(J) < 1e-13
    torch.testing.assert_close(spectral.jacobian_gram(J), ref @ ref.T)
    torch.testing.assert_close(spectral.jacobian_gram(J, "inner"), ref.T @ ref)
    torch.testing.assert_close(spectral.jacobian_gram(J, max_bytes=0), ref @ ref.T)
    J_loop = spectral.JacobianOperator(fn, params, (X,), vmap=False)
    torch.testing.assert_close(J_loop.to_dense(), ref)


@pytest.mark.parametrize("side", ["outer", "inner"])
def test_gram_operator(side):
    params, X, _, fn = _model()
    J = spectral.JacobianOperator(fn, params, (X,))
    Jd = J.to_dense()
    G = spectral.GramOperator(J, side)
    ref = Jd @ Jd.T if side == "outer" else Jd.T @ Jd
    torch.testing.assert_close(G.to_dense(), ref)
    assert dot_test(G) < 1e-12
    est = spectral.eigen_extremes(G)
    ev = torch.linalg.eigvalsh(ref)
    assert est.lambda_max_interval[0] <= float(ev[-1]) <= est.lambda_max_interval[1]


def test_hessian_and_gauss_newton_operators():
    params, X, y, fn = _model()

    def loss(p, X, y):
        return 0.5 * ((fn(p, X) - y) ** 2).sum()

    H = spectral.HessianOperator(loss, params, (X, y))
    f, theta = _flat_fn(fn, params, X)
    Href = torch.func.hessian(lambda t: 0.5 * ((f(t) - y) ** 2).sum())(theta)
    torch.testing.assert_close(H.to_dense(), Href, rtol=1e-10, atol=1e-10)
    assert dot_test(H) < 1e-12
    GN = spectral.GaussNewtonOperator(fn, params, inputs=(X,))
    Jd = torch.func.jacrev(lambda t: f(t).reshape(-1))(theta)
    torch.testing.assert_close(GN.to_dense(), Jd.T @ Jd)
    assert dot_test(GN) < 1e-12
    D = torch.diag(torch.linspace(1, 2, 24, dtype=torch.float64))
    GN2 = spectral.GaussNewtonOperator(fn, params, loss_hessian=D, inputs=(X,))
    torch.testing.assert_close(GN2.to_dense(), Jd.T @ D @ Jd)
    est = spectral.eigen_extremes(H, method="lanczos")
    ev = torch.linalg.eigvalsh(Href)
    assert est.converged
    assert est.lambda_min_interval[0] <= float(ev[0]) <= est.lambda_min_interval[1]
    assert est.lambda_max_interval[0] <= float(ev[-1]) <= est.lambda_max_interval[1]


@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_property_dot_test_jacobian(seed, scale):
    params, X, _, fn = _model()
    J = spectral.JacobianOperator(fn, {k: v * scale for k, v in params.items()}, (X,))
    assert dot_test(J, seed) < 1e-12
    assert dot_test(J.T, seed) < 1e-12
    assert dot_test(spectral.GramOperator(J), seed) < 1e-12


def test_jacobian_bad_params():
    with pytest.raises(ValueError):
        spectral.JacobianOperator(lambda p: p, {})
    with pytest.raises(ValueError, match="dtype"):
        spectral.JacobianOperator(
            lambda p: p["a"].sum() + p["b"].sum(),
            {"a": torch.ones(2), "b": torch.ones(2, dtype=torch.float64)},
        )


def test_products_are_detached_even_when_the_module_keeps_grad_requiring_parameters():
    """J wrt ``weight`` of ``tanh(Linear(X))`` while ``bias`` stays in the module with requires_grad
    (as in an adapted Hugging Face model): the products are plain numbers — ``.numpy()`` works in
    scipy / PRIMME callbacks — and equal those of a fully detached module."""
    lin = torch.nn.Linear(3, 2).double()
    X = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(p):
        return torch.tanh(torch.func.functional_call(lin, p, (X,)))

    J = spectral.JacobianOperator(f, {"weight": lin.weight.detach()})
    x = J.matvec(torch.ones(J.shape[1], dtype=torch.float64))
    y = J.rmatvec(torch.ones(J.shape[0], dtype=torch.float64))
    assert not x.requires_grad and not y.requires_grad
    assert np.isfinite(x.numpy()).all() and np.isfinite(y.numpy()).all()
    with torch.no_grad():
        ref = spectral.JacobianOperator(f, {"weight": lin.weight.detach()})
        torch.testing.assert_close(x, ref.matvec(torch.ones(J.shape[1], dtype=torch.float64)), rtol=0, atol=0)


def test_a_users_product_failure_is_named():
    """A LinearOperator without rmatvec, and a callable tuple whose shape is transposed, raised scipy's
    NotImplementedError and torch's 'size mismatch' from deep inside (audit B9)."""
    import scipy.sparse.linalg as spla

    A = np.random.default_rng(0).standard_normal((30, 20))
    At = torch.from_numpy(A)
    with pytest.raises(TypeError, match="rmatvec is not defined.*needs both"):
        as_operator(spla.LinearOperator(A.shape, matvec=lambda x: A @ x, dtype=np.float64))
    with pytest.raises(ValueError, match=r"matvec failed on a vector of length 30 \(shape \(20, 30\).*transp"):
        as_operator((lambda x: At @ x, lambda y: At.T @ y, (20, 30)))
    as_operator((lambda x: At @ x, lambda y: At.T @ y, (30, 20)))  # the right shape passes


def test_eigen_errors_name_s():
    """eigen_extremes and symmetric_lanczos take ``S``: their input errors say ``S``, not ``A`` (audit B9)."""
    import spectral

    for fn in (spectral.eigen_extremes, spectral.symmetric_lanczos):
        with pytest.raises(ValueError, match=r"^S contains NaN or inf"):
            fn(np.array([[np.nan, 0.0], [0.0, 1.0]]))
        with pytest.raises(ValueError, match=r"^S must be real"):
            fn(np.array([[1.0, 1j], [-1j, 1.0]]))
    with pytest.raises(ValueError, match=r"^A contains NaN"):
        spectral.extreme_singular_values(np.array([[np.nan, 0.0], [0.0, 1.0]]))
