"""Users' own models that an outside audit found certified wrongly or refused (issue 14 follow-up):
a random forward, samples coupled outside the probed ones, data-dependent control flow, and the Gram
route's resolution below ``sqrt(eps_g)``. Every number against a dense ``jacrev`` J (float64)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attncond.spectral.diagnostics.foreign as foreign
from attncond.models import adapt
from attncond.spectral.diagnostics import diagnose
from attncond.spectral.diagnostics.foreign import jacobian_conditioning
from attncond.spectral.operators import HessianOperator, JacobianOperator

EPS = float(np.finfo(np.float64).eps)


class Attn(nn.Module):
    """Single-head self-attention; ``mode`` adds the audit's twist."""

    def __init__(self, D: int = 4, mode: str = "plain", layer_norm: bool = False) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(D, D, bias=False) for _ in range(3))
        self.sm = nn.Softmax(-1)
        self.ln = nn.LayerNorm(D) if layer_norm else None
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "guard" and not torch.isfinite(x).all():  # data-dependent control flow
            raise ValueError("non-finite input")
        out = self.sm(self.q(x) @ self.k(x).transpose(-1, -2) / 2.0) @ self.v(x)
        if self.mode == "dropout":  # MC dropout: eval() does not switch it off
            out = F.dropout(out, 0.5, training=True)
        if self.mode == "pair" and x.shape[0] == 5:  # samples 1 and 2 mix (not among the probed 0, 4)
            mix = 0.5 * (out[1] + out[2])
            out = torch.stack([out[0], mix, mix, out[3], out[4]])
        return out if self.ln is None else self.ln(x + out)


def model(mode: str = "plain", N: int = 3, layer_norm: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    mod = Attn(mode=mode, layer_norm=layer_norm).double()
    X = torch.randn(N, 3, 4, dtype=torch.float64)
    return mod, X, adapt(mod, X, probs_module="sm")


def dense_singular_values(am) -> np.ndarray:
    p = am.params()
    Jd = torch.func.jacrev(lambda q: am.functional(q, *am.inputs))(p)
    m = am.output().numel()
    J = torch.cat([Jd[k].reshape(m, -1) for k in p], 1).detach().numpy()
    return np.linalg.svd(J, compute_uv=False)


def test_a_random_forward_is_refused_before_any_work():
    _, _, am = model("dropout")
    with pytest.raises(ValueError, match="not deterministic"):
        jacobian_conditioning(am)
    p = am.params()
    with pytest.raises(ValueError, match="JacobianOperator: fn is not deterministic"):
        JacobianOperator(am.functional, p, am.inputs)
    with pytest.raises(ValueError, match="HessianOperator: loss_fn is not deterministic"):
        HessianOperator(lambda q, *xs: am.functional(q, *xs).square().sum(), p, am.inputs)


def test_a_deterministic_forward_passes_the_check():
    _, _, am = model("plain")
    op = JacobianOperator(am.functional, am.params(), am.inputs, sample_dim=0)
    assert op.sample_dim == 0


def test_coupling_outside_the_probed_samples_is_detected():
    """Samples 1 and 2 of 5 mix; the value probes look at samples 0 and 4 only. The random-VJP check
    over every sample refuses the per-sample route, and the batched route is right."""
    _, _, am = model("pair", N=5)
    jc = jacobian_conditioning(am)
    assert not jc.per_sample and "couples samples" in jc.per_sample_reason
    s = dense_singular_values(am)
    assert abs(jc.sigma_max - s[0]) <= 1e-12 * s[0]
    assert jc.sigma_max_interval[0] <= s[0] <= jc.sigma_max_interval[1]
    with pytest.raises(ValueError, match="per-sample Jacobian rows disagree"):
        JacobianOperator(am.functional, am.params(), am.inputs, sample_dim=0)


def test_data_dependent_control_flow_keeps_the_per_sample_route():
    """``if not torch.isfinite(x).all()`` cannot run under vmap over samples: the rows are built one
    sample at a time instead of failing (before: a vmap RuntimeError and every jac row undefined)."""
    _, _, am = model("guard")
    jc = jacobian_conditioning(am)
    assert jc.per_sample and jc.converged
    s = dense_singular_values(am)
    assert abs(jc.sigma_max - s[0]) <= 1e-12 * s[0]
    d = diagnose(am)
    assert d.row("jac.kappa").defined and d.row("pl.mu").defined


@pytest.fixture
def gram_only(monkeypatch):
    """Past the dense limit (here: always), so the Gram and certified routes run on a tiny model."""
    monkeypatch.setattr(foreign, "AUTO", dataclasses.replace(foreign.AUTO, dense_max_entries=1))


def test_gram_route_is_honest_below_its_resolution(gram_only):
    """LayerNorm gives exact zeros, and the model has a non-zero σ far below sqrt(eps_g)·σ_max. The
    Gram route counts it as zero: its null_dim is only an upper bound, the smallest non-zero σ is nan
    with a true upper bound, and the result is not converged (before: the next σ up was certified as
    the smallest non-zero one and the note named a threshold that was not used)."""
    _, _, am = model("plain", layer_norm=True, seed=13)
    s = dense_singular_values(am)
    n_params = sum(v.numel() for v in am.params().values())
    zt = max(am.output().numel(), n_params) * EPS * s[0]
    truth_null, truth_nz = int((s <= zt).sum()), float(s[s > zt][-1])
    jc = jacobian_conditioning(am, method="gram")
    assert jc.null_dim > truth_null  # non-zero σ (here 2: 3.0e-7, 1.2e-7) hide below the resolution
    assert jc.zero_tol >= math.sqrt(EPS) * 1e-3 * s[0]  # the resolution actually used, not max(m,p)eps σ
    assert not jc.converged and math.isnan(jc.sigma_min_nonzero)
    lo, hi = jc.sigma_min_nonzero_interval
    assert lo == 0.0 and truth_nz <= hi
    note = foreign.diagnose_adapted(am, method="gram", per_layer=False).row("jac.null_dim").note
    assert "upper bound" in note
    certified = jacobian_conditioning(am, method="certified")
    assert certified.null_dim == truth_null
    lo, hi = certified.sigma_min_nonzero_interval
    assert lo <= truth_nz <= hi and abs(certified.sigma_min_nonzero - truth_nz) <= 1e-8 * truth_nz
    assert certified.converged, certified.reason


def test_certified_route_is_not_flagged_by_the_gram_width(gram_only):
    """Full row rank (N = 2: m = 24 below the 32 effective parameters), with the Gram's σ_min interval
    wider than tol: ``certified`` certifies σ_min on J and reports converged (before: the Gram's flag
    and its advice to use method='certified' were inherited)."""
    _, _, am = model("plain", N=2, seed=5)
    s = dense_singular_values(am)
    gram = jacobian_conditioning(am, method="gram", tol=1e-12)
    assert not gram.converged and "use method='certified'" in gram.reason  # the premise
    jc = jacobian_conditioning(am, method="certified", tol=1e-12)
    assert jc.null_dim == 0
    lo, hi = jc.sigma_min_interval
    assert lo <= s[-1] <= hi and abs(jc.sigma_min - s[-1]) <= 1e-10 * s[-1]
    assert jc.converged and "use method='certified'" not in (jc.reason or "")


def test_one_layers_bad_attention_map_does_not_abort_the_report(monkeypatch):
    _, _, am = model("plain")

    def broken(amap, eps=1e-3):
        raise ValueError("attention of sm puts mass 0.5 outside its mask")

    monkeypatch.setattr(foreign, "support_attention", broken)
    d = diagnose(am)
    row = d.row("softmaxJ.kappa_median")
    assert not row.defined and "outside its mask" in row.note
    assert d.row("jac.kappa").defined
