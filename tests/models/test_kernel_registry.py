"""models.KERNELS: capabilities, and consumers that ask the registry instead of guessing.

A dummy kernel without closed forms must get clear errors from every closed-form consumer, never
another kernel's formula; every registered kernel's declared capabilities are exercised.
"""

from __future__ import annotations

import pytest
import torch

from models import (
    CAPABILITIES,
    KERNELS,
    Kernel,
    KernelCapabilityError,
    KernelForm,
    MultiHeadAttention,
    get_kernel,
    kernel_variant,
    register_kernel,
    unregister_kernel,
)
from models.derivatives import mh_output_jacobian
from models.kernels import logits
from proofs_check.symbolic import attention_output_jacobian
from spectral.diagnostics import diagnose
from spectral.diagnostics.structured import closed_form_kernel, ntk_gram

F64 = torch.float64


def _sigmoid(Q, K, tau=None):
    return torch.sigmoid(logits(Q, K, tau))


@pytest.fixture
def dummy():
    k = register_kernel(Kernel("dummy_sigmoid", _sigmoid, "sigmoid(Q K^T / tau)", "test", False))
    try:
        yield k
    finally:
        unregister_kernel("dummy_sigmoid")
    assert "dummy_sigmoid" not in KERNELS


def _X(N=2, n=3, D=3):
    return torch.randn(N, n, D, dtype=F64, generator=torch.Generator().manual_seed(0))


def test_dummy_kernel_without_closed_forms_gets_clear_errors(dummy):
    m = MultiHeadAttention(3, 2, 1, kernel="dummy_sigmoid", seed=0)
    X = _X()
    S = m.attention(X)
    assert torch.equal(S, torch.sigmoid(logits(X @ m.W_Q[0], X @ m.W_K[0])).unsqueeze(1))
    # closed-form Jacobian: refused, naming the kernel and the missing capability
    with pytest.raises(KernelCapabilityError, match="mh_output_jacobian: kernel 'dummy_sigmoid' has no "
                                                    "closed-form Jacobian"):
        mh_output_jacobian(m, X, "W_Q")
    # structured NTK Gram: no closed form claimed; 'structured' refused, 'auto' takes batched VJPs, correctly
    assert closed_form_kernel(m) is None
    with pytest.raises(ValueError, match="no closed form for kernel 'dummy_sigmoid'"):
        ntk_gram(m, X, route="structured")
    res = ntk_gram(m, X)
    assert res.route == "vjp" and "dummy_sigmoid" in res.reason
    J = torch.func.jacrev(lambda p: m.functional(p, X))(m.params())
    Jm = torch.cat([J[k].reshape(J[k].shape[0] * J[k].shape[1] * J[k].shape[2], -1) for k in m.trainable], 1)
    assert torch.allclose(res.gram, Jm @ Jm.T, rtol=1e-12, atol=1e-14)
    # symbolic derivation: refused
    with pytest.raises(KernelCapabilityError, match="attention_output_jacobian: kernel 'dummy_sigmoid' "
                                                    "has no sympy derivation"):
        attention_output_jacobian("dummy_sigmoid", 2, 1, 1)
    # diagnostics ask the registry whether rows are stochastic
    diag = diagnose(m, X, spectra=False)
    row = diag.row("softmaxJ.kappa_median")
    assert not row.defined and "not a row softmax" in row.note


def test_dummy_kernel_declaring_row_stochastic_is_treated_as_such(dummy):
    def rownorm(Q, K, tau=None):
        S = torch.sigmoid(logits(Q, K, tau))
        return S / S.sum(-1, keepdim=True)

    register_kernel(Kernel("dummy_sigmoid", rownorm, "normalised sigmoid", "test", True), replace=True)
    m = MultiHeadAttention(3, 2, 1, kernel="dummy_sigmoid", seed=0)
    diag = diagnose(m, _X(), spectra=False)
    assert diag.row("softmaxJ.kappa_median").defined
    assert diag.row("attn.entropy").note is None  # not re-normalised


def test_capability_queries_and_declarations_are_validated():
    k = get_kernel("softmax")
    assert set(CAPABILITIES) == {"row_stochastic", "closed_form_jacobian", "closed_form_ntk_gram", "symbolic"}
    assert k.has("closed_form_jacobian") and k.has("row_stochastic")
    with pytest.raises(KernelCapabilityError, match="unknown kernel capability 'closed_form_hessian'"):
        k.has("closed_form_hessian")
    with pytest.raises(ValueError, match="unknown KernelForm.logits .poly.; known: .dot."):
        KernelForm("poly", "softmax")
    with pytest.raises(ValueError, match="declares \\['closed_form_jacobian'\\] but no form"):
        Kernel("bad", _sigmoid, "f", "s", False, closed_form_jacobian=True)
    with pytest.raises(ValueError, match="kernel 'softmax' is already registered"):
        register_kernel(Kernel("softmax", _sigmoid, "f", "s", False))
    with pytest.raises(TypeError, match="must be a models.kernels.Kernel"):
        register_kernel("softmax")
    with pytest.raises(ValueError, match="kernel 'softmax' does not take option\\(s\\) \\['normalize'\\]"):
        kernel_variant("softmax", {"normalize": True})
    g = kernel_variant("gaussian", {"normalize": True})
    assert g.row_stochastic and g.form == KernelForm("dist", "softmax")
    assert not kernel_variant("gaussian").row_stochastic


@pytest.mark.parametrize("name", [k for k, v in KERNELS.items() if v.closed_form_jacobian])
def test_every_declared_closed_form_jacobian_matches_autograd(name):
    m = MultiHeadAttention(3, 2, 2, kernel=name, d_out=2, seed=1)
    X = _X(n=4)
    for wrt in ("W_Q", "W_K", "W_V", "W_O"):
        ref = torch.func.jacrev(lambda W, wrt=wrt: m.functional({wrt: W}, X))(getattr(m, wrt).detach())
        got, ref = mh_output_jacobian(m, X, wrt), ref.detach()
        assert float((got - ref).abs().max()) <= 1e-12 * float(ref.abs().max()), (name, wrt)


@pytest.mark.parametrize("name", [k for k, v in KERNELS.items() if v.closed_form_ntk_gram])
def test_every_declared_closed_form_ntk_gram_matches_autograd(name):
    m = MultiHeadAttention(3, 2, 2, kernel=name, seed=1, trainable=("W_Q", "W_K", "W_V", "W_O"))
    X = _X(n=4)
    res = ntk_gram(m, X)
    assert res.route == "structured"
    ref = ntk_gram(m, X, route="vjp").gram
    assert float((res.gram - ref).abs().max()) <= 1e-12 * float(ref.abs().max()), name
