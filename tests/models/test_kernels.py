import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from models import KERNELS, KernelUnderflowWarning, get_kernel, heat_treatment
from models.kernels import gaussian, gaussian_log_kernel, linear, normsoftmax, normsoftmax_std, softmax

f64 = torch.float64


def qk(seed=0, batch=(2, 3), n=5, d=4, scale=1.0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(*batch, n, d, generator=g, dtype=f64) * scale
    K = torch.randn(*batch, n, d, generator=g, dtype=f64) * scale
    return Q.to(dtype), K.to(dtype)


@pytest.mark.parametrize("name", [k for k, v in KERNELS.items() if v.row_stochastic])
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 30.0), n=st.integers(2, 9))
def test_row_stochastic_kernels_rows_sum_to_one(name, seed, scale, n):
    Q, K = qk(seed, n=n, scale=scale)
    S = get_kernel(name)(Q, K)
    assert S.shape == (2, 3, n, n)
    assert torch.all(S >= 0)
    torch.testing.assert_close(S.sum(-1), torch.ones(2, 3, n, dtype=f64), rtol=0, atol=1e-13)


def test_softmax_matches_definition_and_default_tau_is_sqrt_d():
    Q, K = qk(1, d=9)
    C = Q @ K.transpose(-1, -2) / 3.0
    E = np.exp(C.numpy() - C.numpy().max(-1, keepdims=True))
    ref = E / E.sum(-1, keepdims=True)
    np.testing.assert_allclose(softmax(Q, K).numpy(), ref, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(softmax(Q, K, tau=2.0).numpy(),
                               torch.softmax(Q @ K.transpose(-1, -2) / 2.0, -1).numpy(), rtol=1e-14)


def test_softmax_stable_for_logits_of_1e4():
    Q = torch.tensor([[[100.0, 0.0], [0.0, -100.0]]], dtype=f64)
    K = torch.tensor([[[100.0, 0.0], [-100.0, 100.0]]], dtype=f64)
    S = softmax(Q, K, tau=1.0)  # logits 1e4 and -1e4 (row 1), 0 and -1e4 (row 2)
    assert torch.isfinite(S).all()
    torch.testing.assert_close(S, torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=f64))


def test_gaussian_entrywise_formula():
    Q, K = qk(2, batch=(2,), n=4, d=3)
    S = gaussian(Q, K)
    for b in range(2):
        for k in range(4):
            for j in range(4):
                dist2 = float(((Q[b, k] - K[b, j]) ** 2).sum())
                assert S[b, k, j].item() == pytest.approx(math.exp(-dist2 / (2 * math.sqrt(3))), rel=1e-14)


def test_gaussian_normalize_is_row_normalised_unnormalised_kernel():
    Q, K = qk(3)
    S = gaussian(Q, K)
    torch.testing.assert_close(gaussian(Q, K, normalize=True), S / S.sum(-1, keepdim=True),
                               rtol=1e-13, atol=0)


def test_gaussian_underflow_is_reported_not_silent():
    Q = torch.zeros(1, 2, 2, dtype=f64)
    K = torch.tensor([[[100.0, 0.0], [0.0, 0.0]]], dtype=f64)
    with pytest.warns(KernelUnderflowWarning, match="2 of 4 entries underflow"):
        S = gaussian(Q, K, tau=1.0)
    assert (S[..., 0] == 0).all()
    with pytest.raises(FloatingPointError, match="underflow"):
        gaussian(Q, K, tau=1.0, on_underflow="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaussian(Q, K, tau=1.0, on_underflow="ignore")
        # the normalised kernel is a stable softmax of the log kernel: no underflow to NaN
        Sn = gaussian(Q, K, tau=1.0, normalize=True)
    torch.testing.assert_close(Sn[..., 1], torch.ones(1, 2, dtype=f64))
    assert gaussian_log_kernel(Q, K, tau=1.0)[0, 0, 0].item() == pytest.approx(-5000.0)


@pytest.mark.parametrize("fn,stat", [(normsoftmax, "var"), (normsoftmax_std, "std")])
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-2, 10.0), tau=st.floats(0.1, 20.0))
def test_normsoftmax_formula_per_row(fn, stat, seed, scale, tau):
    Q, K = qk(seed, scale=scale)
    z = Q @ K.transpose(-1, -2)
    S = fn(Q, K, tau=tau)
    zn = z.numpy()
    s = zn.var(-1, ddof=1, keepdims=True) if stat == "var" else zn.std(-1, ddof=1, keepdims=True)
    x = zn / np.minimum(tau, s)
    E = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(S.numpy(), E / E.sum(-1, keepdims=True), rtol=1e-12, atol=1e-15)


def test_normsoftmax_only_sharpens():
    Q, K = qk(5, scale=0.05)
    tau = 2.0
    plain = softmax(Q, K, tau=tau)
    sharp = normsoftmax_std(Q, K, tau=tau)
    ent = lambda S: -(S * S.log()).sum(-1)
    assert torch.all(ent(sharp) <= ent(plain) + 1e-12)
    assert torch.any(ent(sharp) < ent(plain) - 1e-3)


def test_linear_kernel_is_scaled_logits():
    Q, K = qk(6, d=16)
    torch.testing.assert_close(linear(Q, K), Q @ K.transpose(-1, -2) / 4.0, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_gradients_finite_at_extreme_logits(name):
    Q, K = qk(7, scale=40.0)
    Q.requires_grad_(True)
    opts = {"on_underflow": "ignore"} if name == "gaussian" else {}
    S = get_kernel(name)(Q, K, **opts)
    (S * torch.arange(S.shape[-1], dtype=f64)).sum().backward()
    assert torch.isfinite(Q.grad).all()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_dtype_propagates(name):
    Q, K = qk(8, dtype=torch.float32)
    assert get_kernel(name)(Q, K).dtype == torch.float32


def test_unknown_kernel_lists_known():
    with pytest.raises(ValueError, match="unknown kernel 'sofmax'.*'softmax'"):
        get_kernel("sofmax")


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau_rejected(tau):
    Q, K = qk()
    with pytest.raises(ValueError, match="tau"):
        softmax(Q, K, tau=tau)


def test_heat_treatment_schedule():
    assert heat_treatment(0.0) == pytest.approx(3.0)
    assert heat_treatment(0.25) == pytest.approx((3.0 + 0.125) / 2)
    assert heat_treatment(0.5) == pytest.approx(0.125)
    assert heat_treatment(1.0) == pytest.approx(0.125)
    vals = [heat_treatment(f) for f in np.linspace(0, 1, 41)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))
    with pytest.raises(ValueError, match="frac"):
        heat_treatment(1.5)
