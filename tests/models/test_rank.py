"""``jacobian_rank_bound``: an exact upper bound on rank J, checked against the SVD of the autograd J."""

from __future__ import annotations

import pytest
import torch

from attncond.models import MultiHeadAttention, jacobian_rank_bound, synthetic_regression


def _singular_values(model: MultiHeadAttention, X: torch.Tensor) -> torch.Tensor:
    params = model.params()
    jac = torch.func.jacrev(lambda p: model.functional(p, X).reshape(-1))(params)
    J = torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in model.trainable], dim=1)
    return torch.linalg.svdvals(J)


# (D, d, H, kernel, options, value_param, trainable, attained): m = 8·8 = 64 outputs throughout
CASES = [
    (4, 4, 2, "softmax", {}, "per_head", ("W_Q", "W_K", "W_V"), True),  # p = 96 > m = 64 > bound = 40
    (4, 6, 2, "softmax", {}, "per_head", ("W_Q", "W_K", "W_V"), True),  # d > D: A_h still D×D
    (4, 4, 2, "temperature", {}, "per_head", ("W_Q", "W_K", "W_V", "W_O"), True),
    (4, 4, 2, "normsoftmax", {}, "per_head", ("W_Q", "W_K", "W_V"), True),
    (4, 4, 2, "softmax", {}, "joint", ("W_Q", "W_K", "W_V"), False),
    (4, 4, 2, "linear", {}, "per_head", ("W_Q", "W_K", "W_V"), False),  # scale gauge: rank < bound
    (4, 2, 2, "softmax", {}, "per_head", ("W_Q", "W_K", "W_V"), True),  # d < D: the GL(d) gauge, 2Dd − d²
    (4, 3, 2, "softmax", {}, "joint", ("W_Q", "W_K", "W_V", "W_O"), False),
    (4, 2, 2, "gaussian", {}, "per_head", ("W_Q", "W_K", "W_V"), False),
    (4, 4, 2, "gaussian", {"normalize": True}, "per_head", ("W_Q", "W_K", "W_V"), False),
    (4, 4, 2, "softmax", {}, "per_head", ("W_Q",), True),
    (4, 4, 2, "softmax", {}, "per_head", ("W_V", "W_O"), True),
]


@pytest.mark.parametrize("D,d,H,kernel,opts,vp,trainable,attained", CASES)
def test_rank_of_the_jacobian_never_exceeds_the_bound(D, d, H, kernel, opts, vp, trainable, attained):
    model = MultiHeadAttention(D, d, H, kernel=kernel, kernel_options=opts, value_param=vp,
                               trainable=trainable, seed=3)
    X = synthetic_regression(8, 8, D, seed=1).X
    rb = jacobian_rank_bound(model)
    s = _singular_values(model, X)
    assert rb.n_params == sum(getattr(model, k).numel() for k in trainable)
    assert rb.bound <= rb.n_params
    if rb.bound < s.numel():
        # every singular value beyond the bound is rounding noise: J has rank <= bound exactly
        assert float(s[rb.bound]) <= 1e-11 * float(s[0]), (rb, s[rb.bound - 1:rb.bound + 2])
    if attained:
        assert float(s[rb.bound - 1]) >= 1e-6 * float(s[0]), (rb, s[rb.bound - 1])


def test_product_logits_make_J_singular_although_p_exceeds_m():
    model = MultiHeadAttention(4, 4, 2, seed=0)
    rb = jacobian_rank_bound(model)
    assert (rb.bound, rb.n_params) == (2 * 16 + 2 * 4, 96)
    assert [p.name for p in rb.pieces] == ["A_h = W_Q^h W_K^h^T", "U_h = W_V^h W_O^h"]
    assert rb.describe() == ("rank J ≤ 2×min(16, 32 − 16) [A_h = W_Q^h W_K^h^T]"
                             " + 2×min(4, 16) [U_h = W_V^h W_O^h] = 40")
    assert rb.to_dict()["bound"] == 40


def test_the_bound_holds_at_rank_deficient_query_and_key_weights_too():
    model = MultiHeadAttention(4, 2, 2, seed=5)
    full = jacobian_rank_bound(model)
    with torch.no_grad():  # head 0: W_Q and W_K of rank 1, a singular point of (W_Q, W_K) ↦ W_Q W_Kᵀ
        model.W_Q[0, :, 1] = 0.0
        model.W_K[0, :, 1] = 0.0
    rb = jacobian_rank_bound(model)
    assert rb == full and rb.pieces[0].gauge == 4
    s = _singular_values(model, synthetic_regression(8, 8, 4, seed=1).X)
    assert float(s[rb.bound]) <= 1e-11 * float(s[0])


def test_the_gaussian_kernel_gets_no_product_reduction():
    rb = jacobian_rank_bound(MultiHeadAttention(4, 4, 2, kernel="gaussian", seed=0))
    assert rb.pieces[0].name == "(W_Q^h, W_K^h)" and rb.bound == 2 * 32 + 2 * 4


def test_a_non_attention_model_is_refused():
    with pytest.raises(TypeError, match="model must be a MultiHeadAttention"):
        jacobian_rank_bound(torch.nn.Linear(2, 2))
