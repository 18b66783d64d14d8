"""One answer per certificate (audit findings A2, A3, A4, B8).

- A value whose certificate the products' estimated error withdraws is ``nan`` (its interval kept),
  in ``extreme_singular_values`` and in the foreign ``jacobian_conditioning``.
- ``null_dim``, ``σ_min`` and ``μ`` of ``jacobian_conditioning`` agree: a σ counted as zero has an
  interval containing 0, ``σ_min = 0`` comes with ``null_dim ≥ 1``, and ``μ = σ_min²`` with the
  interval of ``σ_min`` squared (never negative: the Gram's eigenvalue is not the answer).
- A converged σ_min whose certified interval contains 0 is reported as 0 (rank deficient to the
  attainable accuracy) by every route, not as a rounding-level number.

Every number against a float64 dense ``jacrev`` J of the same weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import attncond.spectral.diagnostics.foreign as foreign
from attncond.models import adapt
from attncond.spectral import extreme_singular_values
from attncond.spectral.diagnostics.foreign import jacobian_conditioning
from attncond.spectral.operators import JacobianOperator


class RotaryAttention(nn.Module):
    """Two-head self-attention with rotary positions and pre-LayerNorm, hand-written (a user's model)."""

    def __init__(self, D: int = 8, H: int = 2) -> None:
        super().__init__()
        self.H, self.d = H, D // H
        self.ln = nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.softmax = nn.Softmax(-1)
        inv = 1.0 / (10000 ** (torch.arange(0, self.d, 2, dtype=torch.float64) / self.d))
        f = torch.outer(torch.arange(16, dtype=torch.float64), inv)
        self.register_buffer("cos", f.cos(), persistent=False)
        self.register_buffer("sin", f.sin(), persistent=False)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-2]
        c, s = self.cos[:n].to(x.dtype), self.sin[:n].to(x.dtype)
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), -1).flatten(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        N, n, D = h.shape
        heads = lambda t: t.view(N, n, self.H, self.d).transpose(1, 2)  # noqa: E731
        q, k, v = self.rotate(heads(self.q(h))), self.rotate(heads(self.k(h))), heads(self.v(h))
        p = self.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d))
        return x + self.o((p @ v).transpose(1, 2).reshape(N, n, D))


def _truth_svals(module: nn.Module, names: list[str], X: torch.Tensor) -> np.ndarray:
    m = copy.deepcopy(module).double().eval()
    for q in m.parameters():
        q.requires_grad_(False)
    ps = dict(m.named_parameters())
    P = {k: ps[k].detach().clone() for k in names}
    J = torch.func.jacrev(lambda p: torch.func.functional_call(m, p, (X.double(),)).reshape(-1))(P)
    Jm = torch.cat([J[k].reshape(J[k].shape[0], -1) for k in names], 1)
    return torch.linalg.svdvals(Jm).numpy()


def _consistent(jc) -> None:
    """The invariants every JacobianConditioning keeps."""
    lo, hi = jc.sigma_min_interval
    if jc.null_dim:
        assert lo == 0.0, "a σ counted as zero must have an interval containing 0"
    if jc.sigma_min == 0.0 and not jc.rank_limited:
        assert jc.null_dim >= 1
    if jc.sigma_min_interval[0] > 0.0:
        assert jc.null_dim == 0 and jc.sigma_min_nonzero is None
    if not jc.rank_limited:
        assert jc.mu_interval == (lo**2, hi**2)
        if math.isnan(jc.sigma_min):
            assert math.isnan(jc.mu)
        else:
            assert jc.mu == jc.sigma_min**2 and jc.mu >= 0.0
            assert lo <= jc.sigma_min <= hi


def test_null_dim_never_contradicts_a_certified_positive_sigma_min():
    """float32 rotary attention: σ_min ≈ 9.1e-5 lies between the dense interval's margin (10·√M·eps·σ_max)
    and the spectrum count's (M·eps·σ_max). It was certified in [1.2e-5, 1.7e-4] *and* counted as a
    null vector, with σ_{n-1} reported as the smallest non-zero σ."""
    torch.manual_seed(0)
    m = RotaryAttention().float()
    X = torch.randn(2, 4, 8)
    names = ["q.weight", "k.weight", "v.weight"]
    jc = jacobian_conditioning(adapt(m, X, params=names, probs_module="softmax"))
    s = _truth_svals(m, names, X)
    _consistent(jc)
    lo, hi = jc.sigma_min_interval
    assert lo <= s[-1] <= hi and lo > 0
    assert jc.null_dim == 0 and jc.converged
    assert abs(jc.sigma_min - s[-1]) <= hi - lo


@pytest.mark.parametrize("method", ["certified", "gram"])
def test_the_gram_routes_mu_is_sigma_min_squared_and_never_negative(method, monkeypatch):
    """Past the dense limit (patched down, same code path) on a float32 pre-LN encoder layer, whose J has
    11 singular values below float32's resolution. ``μ`` once came from the float32 Gram's eigenvalue
    (negative at N=4, n=16, D=32), with an interval unrelated to σ_min's."""
    monkeypatch.setattr(foreign, "AUTO", dataclasses.replace(foreign.AUTO, dense_max_entries=1000))
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=True).float()
    X = torch.randn(2, 8, 32)
    jc = jacobian_conditioning(adapt(layer, X, params="self_attn.in_proj_weight"), method=method)
    s = _truth_svals(layer, ["self_attn.in_proj_weight"], X)
    _consistent(jc)
    lo, hi = jc.sigma_min_interval
    assert lo <= s[-1] <= hi
    assert jc.mu_interval[0] <= s[-1] ** 2 <= jc.mu_interval[1]
    if method == "certified":  # GKD on J resolves eps·σ_max: 11 values below its locking threshold
        assert jc.converged and jc.null_dim == int((s <= jc.zero_tol).sum()) == 11
        nlo, nhi = jc.sigma_min_nonzero_interval
        assert nlo <= s[-12] <= nhi
    else:  # the Gram resolves sqrt(eps): an upper bound on the count, no certified non-zero σ
        assert not jc.converged and jc.null_dim >= int((s <= jc.zero_tol).sum())


def _cross_attention():
    g = torch.Generator().manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    Q = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    K = Q + 1e4 * torch.randn(8, generator=g, dtype=torch.float64)  # keys with a common component
    return adapt(mha, (Q, K, K), params="in_proj_weight")


def test_a_value_the_products_error_decertifies_is_nan_with_its_interval_kept():
    """nn.MHA cross-attention with keys ``Q + 1e4·u``: the products' error (≈ 8e-7) withdraws σ_min
    (≈ 2.3e-4) at tol = 1e-10. Its value was kept as a plausible headline."""
    a = _cross_attention()
    est = extreme_singular_values(JacobianOperator(a.functional, a.params(), a.inputs))
    assert not est.converged and "no longer met tol" in est.reason
    assert math.isnan(est.sigma_min) and math.isnan(est.cond)
    assert 0 < est.sigma_min_interval[0] < est.sigma_min_interval[1] < 1e-3
    assert est.sigma_max > 0 and est.sigma_max_interval[0] <= est.sigma_max <= est.sigma_max_interval[1]
    jc = jacobian_conditioning(a)
    _consistent(jc)
    assert not jc.converged and math.isnan(jc.sigma_min) and math.isnan(jc.kappa) and math.isnan(jc.mu)
    assert 0 < jc.mu_interval[0] < jc.mu_interval[1]


def test_a_gram_sigma_min_below_tol_is_nan():
    """The Gram route's σ_min (width eps·κ² relative) that misses tol is nan, not the sqrt of an eigenvalue."""
    g = torch.Generator().manual_seed(1)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=True).double()
    X = torch.randn(2, 4, 8, generator=g, dtype=torch.float64)
    jc = jacobian_conditioning(adapt(layer, X, params="self_attn.in_proj_weight"), method="gram")
    s = _truth_svals(layer, ["self_attn.in_proj_weight"], X)
    _consistent(jc)
    assert not jc.converged and "squaring" in jc.reason
    assert math.isnan(jc.sigma_min) and math.isnan(jc.mu)
    lo, hi = jc.sigma_min_interval
    assert lo <= s[-1] <= hi


def _orth(rng: np.random.Generator, n: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


@pytest.mark.parametrize("method", ["dense", "gkd"])
def test_a_rounding_level_sigma_min_is_reported_as_zero_by_every_route(method):
    """σ log-spaced from 1 to 1e-17: the stored matrix's σ_min is rounding noise. GKD once reported a
    converged 4.9e-14 (1000x the stored value) with interval [0, 8.7e-14] while dense said 0."""
    rng = np.random.default_rng(0)
    A = (_orth(rng, 300)[:, :200] * np.logspace(0, -17, 200)) @ _orth(rng, 200).T
    e = extreme_singular_values(A, method=method)
    assert e.converged and e.rank_deficient
    assert e.sigma_min == 0.0 and e.cond == math.inf
    assert e.sigma_min_interval[0] == 0.0 and e.sigma_min_interval[1] < 1e-12
    assert "rank deficient" in e.reason


def test_a_certified_small_sigma_min_is_still_reported():
    """The zero rule is about the interval containing 0: σ_min = 1e-10 (κ = 1e10), certified away from 0,
    keeps its value."""
    rng = np.random.default_rng(1)
    s = np.logspace(0, -10, 60)
    A = (_orth(rng, 80)[:, :60] * s) @ _orth(rng, 60).T
    for method in ("dense", "gkd"):
        e = extreme_singular_values(A, method=method)
        assert e.converged and not e.rank_deficient
        assert e.sigma_min_interval[0] > 0
        assert abs(e.sigma_min - 1e-10) <= 1e-4 * 1e-10
