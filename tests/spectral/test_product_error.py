"""The products' estimated error of autograd operators (spectral/operators/product_error.py).

The case: a stock ``nn.MultiheadAttention`` whose keys share a large component ``c·u``. Softmax is
invariant to it, so the mathematical Jacobian equals the one with the component removed (computed
accurately: the truth here), but the module's logits are ≈ c and carry an error ≈ eps·c. Before the
estimate the dense route certified a σ_max interval that missed the truth and lost the 16-dimensional
null space (null_dim 0) at c = 1e6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attncond.models import adapt
from attncond.spectral import eigen_extremes, extreme_singular_values
from attncond.spectral.diagnostics.foreign import jacobian_conditioning
from attncond.spectral.operators import (
    GaussNewtonOperator,
    GramOperator,
    HessianOperator,
    JacobianOperator,
)
from attncond.spectral.operators.product_error import PERTURBATION_ULPS, SAFETY, perturb_ulps

E, N_TOK, N = 4, 4, 6


def _mha() -> tuple[torch.nn.MultiheadAttention, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(E, 1, batch_first=True, bias=False).double()
    X = torch.randn(N, N_TOK, E, dtype=torch.float64)
    u = torch.randn(E, dtype=torch.float64)
    return mha, X, u


def _dense_jacobian(model) -> np.ndarray:
    p = model.params()
    J = torch.func.jacrev(lambda q: model.functional(q, *model.inputs))(p)["in_proj_weight"]
    return J.reshape(-1, p["in_proj_weight"].numel()).detach().numpy()


@pytest.fixture(scope="module")
def truth():
    mha, X, _ = _mha()
    model = adapt(mha, (X, X, X), params="in_proj_weight")
    J = _dense_jacobian(model)
    s = np.linalg.svd(J, compute_uv=False)
    zero = s <= 1e-9 * s[0]
    return {"J": J, "smax": float(s[0]), "null_dim": int(zero.sum()), "snz": float(s[~zero][-1])}


@pytest.mark.parametrize("c", [1e3, 1e6, 1e8, 1e10])
def test_common_key_component_is_not_certified_and_the_intervals_hold_the_truth(c, truth):
    """At c = 1e3 the error is beyond rounding but the widened intervals still meet tol = 1e-10: still
    certified. From c = 1e6 they do not."""
    mha, X, u = _mha()
    model = adapt(mha, (X, X + c * u, X), params="in_proj_weight")
    r = jacobian_conditioning(model)
    assert r.converged == (c < 1e6)
    if c >= 1e6:
        assert "beyond rounding" in r.reason and "no longer met tol" in r.reason
    lo, hi = r.sigma_max_interval
    assert lo <= truth["smax"] <= hi
    lo, hi = r.sigma_min_nonzero_interval
    assert lo <= truth["snz"] <= hi
    assert r.null_dim == truth["null_dim"] == 16


@pytest.mark.parametrize("c", [1e3, 1e6, 1e8, 1e10])
def test_the_widening_covers_the_measured_error_of_the_jacobian(c, truth):
    """‖J̃ − J‖₂ (the module's Jacobian against the truth) is at most the bound, and the bound is not
    vacuous: within 20x of the error it estimates."""
    mha, X, u = _mha()
    model = adapt(mha, (X, X + c * u, X), params="in_proj_weight")
    op = JacobianOperator(model.functional, model.params(), model.inputs)
    pe = op.product_error()
    err = float(np.linalg.norm(_dense_jacobian(model) - truth["J"], 2))
    assert pe.beyond_rounding  # 220 ulps of σ_max at c = 1e3 already
    assert err <= pe.bound <= 20 * err
    assert pe.bound == SAFETY * pe.measured and pe.ulps == PERTURBATION_ULPS


def test_benign_inputs_stay_certified_at_rounding_level(truth):
    mha, X, _ = _mha()
    model = adapt(mha, (X, X, X), params="in_proj_weight")
    r = jacobian_conditioning(model)
    assert r.converged
    lo, hi = r.sigma_max_interval
    assert lo <= truth["smax"] <= hi and (hi - lo) / truth["smax"] < 1e-12
    op = JacobianOperator(model.functional, model.params(), model.inputs)
    assert not op.product_error().beyond_rounding
    est = extreme_singular_values(op)
    assert est.converged and est.product_error == op.product_error().bound
    assert "within the rounding allowance" in est.products
    assert "product_error=" in repr(est)


def test_stored_matrices_carry_no_estimate():
    est = extreme_singular_values(np.diag([3.0, 2.0, 1.0]))
    assert est.product_error is None and est.products == "stored"


def test_path_dependent_rounding_is_not_called_randomness():
    """nn.MHA computes other bits without grad than with it; at a large common key component the two
    differ by ~1e-11. That is not dropout: the operator is built (it used to be refused as
    non-deterministic), and the estimate reports the rounding instead."""
    mha, X, u = _mha()
    model = adapt(mha, (X, X + 1e6 * u, X), params="in_proj_weight")
    with torch.no_grad():
        a = model.functional(model.params(), *model.inputs)
    p = {k: v.detach().clone().requires_grad_(True) for k, v in model.params().items()}
    b = model.functional(p, *model.inputs).detach()
    assert float((a - b).abs().max()) > 1e-13  # the premise: the two code paths round differently
    op = JacobianOperator(model.functional, model.params(), model.inputs)
    assert op.product_error().beyond_rounding


def test_randomness_is_still_refused():
    w = {"w": torch.randn(3, 3, dtype=torch.float64)}
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not deterministic"):
        JacobianOperator(lambda p, x: torch.nn.functional.dropout(x @ p["w"], 0.5, training=True), w, (x,))


def test_hessian_estimate_widens_eigenvalue_intervals():
    torch.manual_seed(1)
    A = torch.randn(6, 6, dtype=torch.float64)
    A = A @ A.T + torch.eye(6, dtype=torch.float64)
    x0 = torch.randn(6, dtype=torch.float64)
    op = HessianOperator(lambda p: 0.5 * p["x"] @ A @ p["x"] + p["x"].pow(4).sum(), {"x": x0})
    est = eigen_extremes(op)
    pe = op.product_error()
    assert est.converged and est.product_error == pe.bound and not pe.beyond_rounding
    H = torch.func.hessian(lambda x: 0.5 * x @ A @ x + x.pow(4).sum())(x0).numpy()
    lam = np.linalg.eigvalsh(H)
    assert est.lambda_min_interval[0] <= lam[0] <= est.lambda_min_interval[1]
    assert est.lambda_max_interval[0] <= lam[-1] <= est.lambda_max_interval[1]


def test_float32_operator_gets_a_float32_rounding_level():
    torch.manual_seed(2)
    W = torch.randn(5, 4)
    x = torch.randn(7, 5)
    op = JacobianOperator(lambda p, x: torch.tanh(x @ p["w"]), {"w": W}, (x,))
    pe = op.product_error()
    assert pe.rounding > 1e-8 * pe.scale  # float32 eps, not float64's
    assert not pe.beyond_rounding and math.isfinite(pe.bound)


def test_perturb_ulps_touches_only_finite_floating_entries():
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([1.0, -2.0, math.inf, -math.inf, 0.0, 3e300], dtype=torch.float64)
    q = perturb_ulps(t, 4.0, g)
    assert torch.equal(q[2:5], t[2:5])
    rel = ((q[[0, 1, 5]] - t[[0, 1, 5]]) / t[[0, 1, 5]]).abs()
    assert bool((rel <= 4.0 * 2.0**-52 * (1 + 1e-12)).all()) and bool((rel > 0).any())
    ids = torch.tensor([1, 2, 3])
    mask = torch.tensor([True, False])
    assert perturb_ulps(ids, 4.0, g) is ids and perturb_ulps(mask, 4.0, g) is mask


def test_non_finite_products_at_the_perturbed_point_are_never_certified():
    """A forward that overflows a few ulps away: the estimate is inf, every interval unbounded above, and
    the result not converged (it would otherwise be certified: at the stored point all is finite)."""
    torch.manual_seed(3)
    W = torch.randn(4, 3, dtype=torch.float64)
    X0 = torch.randn(8, 4, dtype=torch.float64)

    def fn(p, x):
        scale = torch.where((x == X0).all(), 1.0, math.inf)  # J is finite only at the stored point
        return torch.tanh(x @ p["w"]) * scale

    op = JacobianOperator(fn, {"w": W}, (X0,))
    pe = op.product_error()
    assert pe.bound == math.inf and pe.beyond_rounding
    est = extreme_singular_values(op)
    assert not est.converged and "beyond rounding" in est.reason
    assert est.sigma_max_interval[1] == math.inf and est.sigma_min_interval[1] == math.inf


@pytest.mark.parametrize("kind", ["gram", "gauss-newton"])
@pytest.mark.parametrize("c", [0.0, 1e6])
def test_gram_and_gauss_newton_measure_their_own_products(kind, c, truth):
    """``Jᵀ J`` as a GramOperator (or the Gauss–Newton matrix with ``H_L = I``) of the nn.MHA Jacobian: the
    error is measured on the composed products. It covers ‖G̃ − G‖₂ (G̃ from the module's dense J); at
    c = 1e6 the result is not certified, and every interval still holds the true eigenvalue."""
    mha, X, u = _mha()
    model = adapt(mha, (X, X + c * u, X), params="in_proj_weight")
    if kind == "gram":
        op = GramOperator(JacobianOperator(model.functional, model.params(), model.inputs), side="inner")
    else:
        op = GaussNewtonOperator(model.functional, model.params(), inputs=model.inputs)
    pe = op.product_error()
    assert pe is not None and op.point_products() is not None
    Jt = _dense_jacobian(model)
    err = float(np.linalg.norm(Jt.T @ Jt - truth["J"].T @ truth["J"], 2))
    assert err <= pe.bound
    assert pe.beyond_rounding == (c > 0)
    if c > 0:
        assert pe.bound <= 20 * err  # not vacuous
    est = eigen_extremes(op)
    assert est.product_error == pe.bound
    assert est.converged == (c == 0)
    if c > 0:
        assert "beyond rounding" in est.reason
    lo, hi = est.lambda_max_interval
    assert lo <= truth["smax"] ** 2 <= hi
    lo, hi = est.lambda_min_interval
    assert lo <= 0.0 <= hi  # the 16-dimensional null space


def test_an_adjoint_shares_the_estimate_and_transposes_the_point_products():
    mha, X, u = _mha()
    model = adapt(mha, (X, X + 1e6 * u, X), params="in_proj_weight")
    op = JacobianOperator(model.functional, model.params(), model.inputs)
    ppt = op.T.point_products()
    y = torch.randn(op.shape[0], dtype=torch.float64)
    x = torch.randn(op.shape[1], dtype=torch.float64)
    torch.testing.assert_close(ppt.forward(ppt.tensors, ppt.inputs, y), op.rmatvec(y), rtol=1e-12, atol=0)
    torch.testing.assert_close(ppt.adjoint(ppt.tensors, ppt.inputs, x), op.matvec(x), rtol=1e-12, atol=0)
    assert op.T.product_error() is op.product_error()
    g = GramOperator(op.T, side="outer")  # (Jᵀ)(Jᵀ)ᵀ = JᵀJ: the same matrix as GramOperator(op, "inner")
    assert g.shape == (op.shape[1], op.shape[1]) and g.product_error().beyond_rounding


def test_operators_without_a_point_carry_no_estimate():
    from attncond.spectral.operators import as_operator

    A = as_operator(np.arange(6.0).reshape(3, 2))
    assert A.point_products() is None and A.product_error() is None
    g = GramOperator(A)
    assert g.point_products() is None and g.product_error() is None


def test_the_symmetry_allowance_does_not_admit_a_non_symmetric_autograd_operator():
    """The allowance is twice the products' error: a square autograd Jacobian of ``x ↦ tanh(A x)`` with
    a non-symmetric ``A`` has an error at rounding level, far below its asymmetry, and is refused."""
    torch.manual_seed(4)
    A = torch.randn(6, 6, dtype=torch.float64)
    x0 = 0.1 * torch.randn(6, dtype=torch.float64)
    op = JacobianOperator(lambda p: torch.tanh(A @ p["x"]), {"x": x0})
    assert not op.product_error().beyond_rounding
    for method in ("dense", "lanczos"):
        with pytest.raises(ValueError, match="not symmetric"):
            eigen_extremes(op, method=method)


def _cross_attention_reference(mha: torch.nn.MultiheadAttention, W: torch.Tensor, Q: torch.Tensor,
                               K: torch.Tensor) -> torch.Tensor:
    """nn.MHA(Q, K, K) with one head, written without the cancellation of a large common key component:
    the softmax sees key differences ``k_j − k_0`` and the values are split as ``(k_j − k_0) + k_0`` (rows
    of the softmax sum to 1), so the common part ``c·u`` never meets the logits."""
    Ed = mha.embed_dim
    b = mha.in_proj_bias
    q = Q @ W[:Ed].T + b[:Ed]
    dK = K - K[:, :1]
    s = torch.softmax(q @ (dK @ W[Ed:2 * Ed].T).transpose(-1, -2) / math.sqrt(Ed), -1)
    o = s @ (dK @ W[2 * Ed:].T) + (K[:, :1] @ W[2 * Ed:].T + b[2 * Ed:])
    return mha.out_proj(o)


@pytest.mark.parametrize("method", ["dense", "lanczos"])
@pytest.mark.parametrize("c", [0.0, 1e4, 1e6])
def test_hessian_extremes_widen_by_the_products_error_and_hold_the_truth(c, method):
    """A stock nn.MHA whose keys share c·u: hessian_extremes certified a λ_min 42x off at c = 1e6 (the dense
    route never looked at the products' error). Now both ends' intervals hold the cancellation-free truth,
    c = 0 stays certified to 1e-9, and where the widened interval misses tol the value is NaN."""
    from attncond.spectral.diagnostics import hessian_extremes

    torch.manual_seed(3)
    g = torch.Generator().manual_seed(4)
    mha = torch.nn.MultiheadAttention(4, 1, batch_first=True).double()
    Q = torch.randn(1, 2, 4, generator=g, dtype=torch.float64)
    K = torch.randn(1, 3, 4, generator=g, dtype=torch.float64) + c * torch.randn(4, generator=g,
                                                                                  dtype=torch.float64)
    y = torch.randn(1, 2, 4, generator=g, dtype=torch.float64)
    a = adapt(mha, (Q, K, K), params="in_proj_weight")
    he = hessian_extremes(lambda p: a.loss(p, Q, K, K, y), a.params(), method=method, tol=1e-9, k=4,
                          maxiter=400)
    W0 = mha.in_proj_weight.detach().clone()
    Hr = torch.func.hessian(lambda W: 0.5 * ((_cross_attention_reference(mha, W, Q, K) - y) ** 2).sum())(W0)
    lam = np.linalg.eigvalsh(Hr.detach().reshape(48, 48).numpy())
    assert he.lambda_min_interval[0] <= lam[0] <= he.lambda_min_interval[1]
    assert he.lambda_max_interval[0] <= lam[-1] <= he.lambda_max_interval[1]
    if c == 0.0:  # (Lanczos leaves an indefinite Hessian's non-zero λ nearest 0 uncomputed: not converged)
        assert he.product_error is not None and "products' error" not in (he.reason or "")
        assert he.converged or (method == "lanczos" and he.indefinite and he.smallest_nonzero is None)
        assert abs(he.lambda_min - lam[0]) <= 1e-9 * abs(lam[0])
        assert abs(he.lambda_max - lam[-1]) <= 1e-9 * abs(lam[-1])
    else:
        assert not he.converged
        assert "products' error" in he.reason or (method == "lanczos" and "not converged" in he.reason)
        assert math.isnan(he.lambda_min)
        assert he.lambda_min_interval[1] - he.lambda_min_interval[0] > 1e-9 * abs(lam[0])


def _cross_op(c: float) -> JacobianOperator:
    g = torch.Generator().manual_seed(1)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    Q = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    K = Q + c * torch.randn(8, generator=g, dtype=torch.float64)
    a = adapt(mha, (Q, K, K), params="in_proj_weight")
    return JacobianOperator(a.functional, a.params(), a.inputs)


def test_direct_solver_calls_carry_the_products_error():
    """The public solver functions widen by the products' estimated error as the estimators do: a direct
    ``dense_svd`` on an autograd operator gives the same intervals as ``extreme_singular_values(method=
    "dense")``, and its σ_min, decertified at c = 1e4, is nan. Before, a direct call certified the
    products as exact."""
    import attncond.spectral as spectral

    op = _cross_op(1e4)
    b = op.product_error().bound
    r = spectral.dense_svd(op)
    e = extreme_singular_values(op, method="dense")
    assert r.info["product_error"] == b > 0
    assert not r.converged and "no longer met tol" in r.reason
    assert math.isnan(r.smallest.values[0]) and math.isnan(e.sigma_min)
    np.testing.assert_allclose((r.smallest.lower[0], r.smallest.upper[0]), e.sigma_min_interval, rtol=1e-12)
    np.testing.assert_allclose((r.largest.lower[0], r.largest.upper[0]), e.sigma_max_interval, rtol=1e-12)
    from attncond.spectral.solvers import golub_kahan_davidson

    g = golub_kahan_davidson(op, which="smallest")
    assert g.info["product_error"] == b and not g.converged
    benign = spectral.dense_svd(_cross_op(0.0))
    assert benign.converged and benign.info["product_error"] <= 1e-12


def test_direct_symmetric_lanczos_on_an_autograd_gram_is_widened():
    import attncond.spectral as spectral

    G = GramOperator(_cross_op(1e4), "inner")
    b = G.product_error().bound
    r = spectral.symmetric_lanczos(G, which="largest", maxiter=300)
    assert r.info["product_error"] == b > 0
    assert r.largest.upper[0] - r.largest.lower[0] >= 2 * b
