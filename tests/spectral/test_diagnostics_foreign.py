"""diagnose() on the user's own models (models.AdaptedModel): every number against an independent
dense computation (torch jacrev -> dense J -> numpy SVD / eigvalsh), float64, tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from attncond.models import AdaptedModel, adapt
from attncond.spectral.diagnostics import diagnose
from attncond.spectral.diagnostics.foreign import jacobian_conditioning

RTOL = 1e-10


def dense_J(a: AdaptedModel, names=None) -> np.ndarray:
    p = a.params() if names is None else {k: a.params()[k] for k in names}
    Jd = torch.func.jacrev(lambda q: a.functional(q, *a.inputs))(p)
    m = a.output().numel()
    return torch.cat([Jd[k].reshape(m, -1) for k in p], 1).detach().numpy()


def check_against_dense(a: AdaptedModel, d) -> None:
    """σ_max, σ_min (or null dim + smallest non-zero σ), κ and μ vs numpy on the jacrev J."""
    J = dense_J(a)
    m, p = J.shape
    s = np.linalg.svd(J, compute_uv=False)
    lam = np.linalg.eigvalsh(J @ J.T)
    jc = d.foreign.jacobian
    eps = np.finfo(np.float64).eps
    assert jc.shape == (m, p)
    assert abs(jc.sigma_max - s[0]) <= RTOL * s[0]
    zt = max(m, p) * eps * s[0]
    null = int((s <= zt).sum())
    assert jc.null_dim == null
    if null == 0:
        assert abs(jc.sigma_min - s[-1]) <= RTOL * s[-1]
        assert abs(jc.kappa - s[0] / s[-1]) <= RTOL * s[0] / s[-1]
        if p >= m:
            assert abs(jc.mu - lam[0]) <= RTOL * lam[0] + 10 * m * eps * lam[-1]
            assert jc.mu_interval[0] <= lam[0] + 10 * m * eps * lam[-1]
    else:
        assert jc.sigma_min == 0.0 and math.isinf(jc.kappa) and jc.mu == 0.0
        nz = s[s > zt][-1]
        # 1e-10 relative, or the attainable absolute accuracy max(m, p)·eps·σ_max, which the row then flags
        assert abs(jc.sigma_min_nonzero - nz) <= max(RTOL * nz, max(m, p) * eps * s[0])
        note = d.row("jac.sigma_min_nonzero").note or ""
        assert ("below the attainable" in note) == (s[0] / nz * eps > RTOL)
        assert abs(lam[0]) <= m * eps * lam[-1] * 10  # the dense route agrees that μ is 0
    assert jc.converged
    assert d.row("pl.mu").value == jc.mu
    assert not d.row("b0.kappa").defined and "not applicable" in d.row("b0.kappa").note


def check_support_softmax(a: AdaptedModel, d) -> None:
    """κ(J(s)) per row on its support and entropy / log k against numpy eigvalsh."""
    for amap, sa in zip(a.attention(), d.foreign.attention, strict=True):
        P = amap.probs.numpy()
        S = amap.support_full().numpy()
        N, H, nq, _ = P.shape
        for i in range(N):
            for h in range(H):
                for r in range(nq):
                    s = P[i, h, r][S[i, h, r]]
                    if s.size < 2:
                        assert np.isnan(sa.kappa[i, h, r])
                        continue
                    ev = np.linalg.eigvalsh(np.diag(s) - np.outer(s, s))  # ev[0] = 0 on the 1 direction
                    ref = ev[-1] / ev[1]
                    assert abs(sa.kappa[i, h, r] - ref) <= 1e-8 * ref
        ent = -np.where(P > 0, P * np.log(np.where(P > 0, P, 1)), 0).sum(-1)
        k = S.sum(-1)
        ne = np.where(k >= 2, ent / np.log(np.maximum(k, 2)), np.nan)
        np.testing.assert_allclose(sa.normalized_entropy, np.nanmean(ne, axis=(0, 2)), rtol=1e-12)
        assert np.isfinite(sa.kappa_max).all()


# --------------------------------------------------------------------------- nn.MultiheadAttention
def _mha(seed=0, dtype=torch.float64, N=2, n=3, D=4, H=2):
    torch.manual_seed(seed)
    m = nn.MultiheadAttention(D, H, batch_first=True, dtype=dtype)
    return m, torch.randn(N, n, D, dtype=dtype)


def test_mha_full_rank_against_dense():
    m, X = _mha()
    a = adapt(m, X, params="in_proj_weight")
    d = diagnose(a)
    check_against_dense(a, d)
    assert d.foreign.jacobian.null_dim == 0 and d.foreign.jacobian.mu > 0
    check_support_softmax(a, d)


def test_mha_masked_rows_no_inf_and_hessian_against_dense():
    m, X = _mha(N=3, n=5, D=4)
    mask = torch.ones(3, 5)
    mask[1, 3:] = 0
    a = adapt(m, X, params=["in_proj_weight", "out_proj.weight"], attention_mask=mask, causal=True)
    y = torch.randn(3, 5, 4, dtype=torch.float64)
    d = diagnose(a, y=y)
    check_against_dense(a, d)
    check_support_softmax(a, d)
    # masked zeros would give κ = inf on the full rows: on the support every κ is finite
    sa = d.foreign.attention[0]
    assert sa.masks == ("padding", "causal")
    P = a.attention()[0].probs
    full = np.linalg.eigvalsh((torch.diag_embed(P) - P.unsqueeze(-1) * P.unsqueeze(-2)).numpy())
    assert (full[..., 1] <= 1e-14).sum() > 0  # the naive spectrum is singular on masked rows
    assert math.isfinite(d.row("softmaxJ.kappa_max").value)
    assert d.foreign.attention[0].n_trivial_rows == 3 * 2  # causal row 0 of each sample, both heads
    # Hessian of ½‖f − y‖² against torch.func.hessian
    p = a.params()
    flat = torch.cat([v.reshape(-1) for v in p.values()])
    sizes = [v.numel() for v in p.values()]

    def L(x):
        parts = torch.split(x, sizes)
        q = {k: t.reshape(v.shape) for (k, v), t in zip(p.items(), parts, strict=True)}
        return a.loss(q, *a.inputs, y)

    ev = np.linalg.eigvalsh(torch.func.hessian(L)(flat).detach().numpy())
    assert abs(d.row("hessian.lambda_max").value - ev[-1]) <= RTOL * abs(ev[-1])
    assert abs(d.row("hessian.lambda_min").value - ev[0]) <= RTOL * abs(ev).max()


def test_gram_route_agrees_with_dense_route():
    m, X = _mha(N=3, n=4, D=4)
    a = adapt(m, X, params="in_proj_weight")
    dn = jacobian_conditioning(a, method="dense")
    gr = jacobian_conditioning(a, method="gram")
    assert gr.route.startswith("gram[per-sample Gram")
    assert abs(gr.sigma_max - dn.sigma_max) <= 1e-12 * dn.sigma_max
    assert gr.sigma_max_interval[0] <= dn.sigma_max <= gr.sigma_max_interval[1]
    assert gr.mu_interval[0] <= dn.mu <= gr.mu_interval[1] + 1e-12
    assert gr.null_dim == dn.null_dim


def test_output_independent_of_params_gives_mu_zero_with_reason():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64)
            self.unused = nn.Linear(4, 4, dtype=torch.float64)

        def forward(self, X):
            return self.attn(X, X, X)[0]

    torch.manual_seed(0)
    a = adapt(M(), torch.randn(2, 3, 4, dtype=torch.float64), params="unused.*")
    d = diagnose(a)
    jc = d.foreign.jacobian
    assert jc.mu == 0.0 and jc.sigma_max == 0.0
    assert "does not depend on the selected parameters" in jc.reason
    assert jc.route.startswith("none") and jc.null_dim == min(jc.shape)
    # partly unused: the zero columns are left out, J Jᵀ (and so μ) is that of the used ones
    m2 = adapt(a.module, a.inputs[0], params=["attn.in_proj_weight", "unused.weight"])
    part = jacobian_conditioning(m2)
    ref = jacobian_conditioning(adapt(a.module, a.inputs[0], params="attn.in_proj_weight"))
    assert "unused.weight" in part.reason and part.mu == ref.mu and part.sigma_max == ref.sigma_max


def test_float32_per_sample_route():
    m, X = _mha(dtype=torch.float32, N=4, n=3)
    a = adapt(m, X, params="in_proj_weight")
    jc = jacobian_conditioning(a, tol=1e-5)
    assert jc.per_sample, jc.per_sample_reason
    J = dense_J(a).astype(np.float64)
    s = np.linalg.svd(J, compute_uv=False)
    assert abs(jc.sigma_max - s[0]) <= 1e-5 * s[0]


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_fused_attention_path():
    """A module calling F.scaled_dot_product_attention (fused flash kernel on CPU): forward AD
    fails on the fused kernel; eager=True (math backend) makes J·v work; eager=False says what to do."""
    from attncond.models import ForwardADUnsupported

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(4, 12, dtype=torch.float64)
            self.soft = nn.Identity()

        def forward(self, X):
            q, k, v = self.qkv(X).reshape(X.shape[0], X.shape[1], 3, 1, 4).permute(2, 0, 3, 1, 4)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v).squeeze(1)

    torch.manual_seed(0)
    X = torch.randn(2, 3, 4, dtype=torch.float64)
    bad = AdaptedModel(Fused(), X, params="qkv.weight", probs_module="soft", eager=False)
    with pytest.raises(ForwardADUnsupported, match="eager=True"):
        bad.check_forward_ad()
    # without forward AD diagnose still gives J's rows by reverse mode only, and says so
    jb = jacobian_conditioning(bad)
    assert "reverse-mode only" in jb.route
    s = np.linalg.svd(dense_J(bad), compute_uv=False)
    assert abs(jb.sigma_max - s[0]) <= RTOL * s[0] and abs(jb.sigma_min - s[-1]) <= RTOL * s[-1]
    good = AdaptedModel(Fused(), X, params="qkv.weight", probs_module="soft")
    assert diagnose(good).row("adapter.eager").note.count("math SDPA backend") == 1
    good.check_forward_ad()
    p = good.params()
    t = {k: torch.randn_like(v) for k, v in p.items()}
    _, jv = torch.func.jvp(lambda q: good.functional(q, X), (p,), (t,))
    J = dense_J(good)
    ref = J @ t["qkv.weight"].reshape(-1).numpy()
    np.testing.assert_allclose(jv.detach().reshape(-1).numpy(), ref, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- Hugging Face (the [hf] extra)
def _hf():
    return pytest.importorskip("transformers")


def test_bert_layer_against_dense():
    tr = _hf()
    torch.manual_seed(0)
    cfg = tr.BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=16, num_hidden_layers=1,
                        vocab_size=10, max_position_embeddings=8)
    model = tr.BertModel(cfg, add_pooling_layer=False).double()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    a = adapt(model, torch.randn(2, 4, 8, dtype=torch.float64),
              params=["*.query.weight", "*.key.weight", "*.value.weight"], attention_mask=mask)
    d = diagnose(a)
    check_against_dense(a, d)
    check_support_softmax(a, d)
    assert d.foreign.jacobian.null_dim == 2 * 8  # LayerNorm: 2 per token
    assert d.row("jac.sigma_min_nonzero").defined


def test_gpt2_causal_against_dense():
    tr = _hf()
    torch.manual_seed(0)
    cfg = tr.GPT2Config(n_embd=8, n_head=2, n_layer=2, vocab_size=10, n_positions=8, bos_token_id=0,
                        eos_token_id=0)
    model = tr.GPT2Model(cfg).double()
    a = adapt(model, torch.randn(2, 4, 8, dtype=torch.float64), params="h.*.attn.c_attn.weight")
    assert a.causal
    d = diagnose(a)
    check_against_dense(a, d)
    check_support_softmax(a, d)
    assert set(d.foreign.layers) == {"h.0", "h.1"}
    J = dense_J(a, ["h.1.attn.c_attn.weight"])
    s = np.linalg.svd(J, compute_uv=False)
    assert abs(d.foreign.layers["h.1"].sigma_max - s[0]) <= RTOL * s[0]
    assert all(m.masks == ("causal",) for m in d.foreign.attention)


def test_vit_block_against_dense():
    tr = _hf()
    torch.manual_seed(0)
    cfg = tr.ViTConfig(hidden_size=8, num_attention_heads=2, intermediate_size=16, num_hidden_layers=1,
                       image_size=4, patch_size=2, num_channels=1)
    model = tr.ViTModel(cfg, add_pooling_layer=False).double()
    a = adapt(model, torch.randn(2, 1, 4, 4, dtype=torch.float64), params="*attention.[qk]_proj.weight")
    d = diagnose(a)
    check_against_dense(a, d)
    check_support_softmax(a, d)
    assert d.foreign.attention[0].masks == ()
