"""``JacobianOperator(sample_dim=0)``'s independence checks allow for the function's own rounding (audit A5).

A stock ``nn.MultiheadAttention`` treats samples independently, but on keys with a large common
component ``c`` its outputs and products round far above ulps of their size (logits ``≈ c·|q||k|``).
The checks compared batched and per-sample evaluation to a few ulps and refused it as "fn couples
samples"; they now also allow the measured change under a few-ulp perturbation of the point, while a
function that really couples samples is still refused."""

from __future__ import annotations

import copy

import pytest
import torch

from attncond.spectral import JacobianOperator

GEN = torch.Generator().manual_seed(1)
X0 = torch.randn(3, 5, 8, generator=GEN, dtype=torch.float64)
U0 = torch.randn(8, generator=GEN, dtype=torch.float64)
torch.manual_seed(0)
MHA = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()


def _setup(c: float, dtype: torch.dtype, cross: bool):
    m = copy.deepcopy(MHA).to(dtype)
    params = {"in_proj_weight": m.in_proj_weight.detach().clone()}
    if cross:  # queries X, keys = values = X + c·u
        inputs = (X0.to(dtype), (X0 + c * U0).to(dtype))

        def fn(p, A, B):
            return torch.func.functional_call(m, p, (A, B, B))[0]
    else:
        inputs = ((X0 + c * U0).to(dtype),)

        def fn(p, Z):
            return torch.func.functional_call(m, p, (Z, Z, Z))[0]
    return fn, params, inputs


@pytest.mark.parametrize("c, dtype, cross", [(1e4, torch.float64, True), (1e6, torch.float64, True),
                                             (1e4, torch.float32, True), (1e2, torch.float64, False)])
def test_stock_mha_with_a_common_key_offset_keeps_the_per_sample_structure(c, dtype, cross):
    fn, params, inputs = _setup(c, dtype, cross)
    op = JacobianOperator(fn, params, inputs, sample_dim=0)  # refused as "fn couples samples" before
    assert op.sample_dim == 0 and op.n_samples == 3
    # the per-sample rows are the batch's J, to within the products' own estimated error
    Jb = torch.func.jacrev(lambda p: fn(p, *inputs))(params)["in_proj_weight"].reshape(op.shape[0], -1)
    diff = float(torch.linalg.matrix_norm((op.jacobian_matrix() - Jb.detach()).double(), ord=2))
    assert diff <= 2.0 * op.product_error().bound


def _coupled(kind: str, fn):
    if kind == "input mean":  # every sample reads the batch mean of the queries
        return lambda p, A, B: fn(p, A, B) + A.mean(0)
    if kind == "centred":  # batch-norm-like: the batch mean of the output subtracted
        return lambda p, A, B: (lambda o: o - o.mean(0, keepdim=True))(fn(p, A, B))
    # same values as fn, coupled only in the Jacobian (only the u^T J probe can see it): the batch adds
    # sum_k J_k to every row block, one sample alone its own J_i
    return lambda p, A, B: (lambda o: o + (o.sum(0) - o.sum(0).detach()))(fn(p, A, B))


@pytest.mark.parametrize("kind, match", [("input mean", "does not reproduce row block"),
                                         ("centred", "does not reproduce row block"),
                                         ("jacobian only", "per-sample Jacobian rows disagree")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_function_that_couples_samples_is_still_refused_at_a_large_offset(kind, match, dtype):
    fn, params, inputs = _setup(1e4, dtype, True)
    with pytest.raises(ValueError, match=match) as err:
        JacobianOperator(_coupled(kind, fn), params, inputs, sample_dim=0)
    msg = str(err.value)
    assert "sample_dim=0" in msg and "tolerance" in msg
    assert "couples samples" in msg or "does not act independently" in msg
    assert "perturbations of the parameters and inputs" in msg  # the rounding-aware tolerance was used
