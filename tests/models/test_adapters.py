"""models.adapters: parameter patterns, attention capture with masks, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attncond.models import AdaptedModel, adapt, select_params
from attncond.spectral import JacobianOperator


def _mha(D=4, H=2, batch_first=True):
    torch.manual_seed(0)
    return nn.MultiheadAttention(D, H, batch_first=batch_first, dtype=torch.float64)


def test_select_params_patterns_and_error_lists_names():
    m = _mha()
    assert select_params(m, "*") == tuple(k for k, _ in m.named_parameters())
    assert select_params(m, ["in_proj_weight", "out_proj.*"]) == ("in_proj_weight", "out_proj.weight",
                                                                   "out_proj.bias")
    with pytest.raises(ValueError, match=r"'\*\.query\.weight' matches no parameter.*in_proj_weight"):
        select_params(m, "*.query.weight")


def test_no_attention_error_lists_what_was_looked_for():
    with pytest.raises(ValueError, match="MultiheadAttention.*transformers.*timm.*probs_module"):
        adapt(nn.Linear(3, 3), torch.zeros(2, 3))


def test_bad_inputs_and_masks_name_the_argument():
    m = _mha()
    X = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(N, n\) = \(2, 3\)"):
        adapt(m, X, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask must hold 0/1"):
        adapt(m, X, attention_mask=torch.full((2, 3), 2))
    with pytest.raises(ValueError, match="every token masked"):
        adapt(m, X, attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(TypeError, match=r"inputs\[0\] has dtype torch.float32"):
        adapt(m, X.float())
    a = adapt(m, X)
    with pytest.raises(ValueError, match=r"inputs\[0\] must have shape \(N, n, embed_dim=4\)"):
        a.functional(a.params(), torch.randn(2, 3, 5, dtype=torch.float64))


def _manual_probs(m: nn.MultiheadAttention, X, mask=None, causal=False):
    """Independent per-head softmax(QKᵀ/√d) from the packed in-projection."""
    D, H = m.embed_dim, m.num_heads
    d = D // H
    W, b = m.in_proj_weight.detach(), m.in_proj_bias.detach()
    q, k = X @ W[:D].T + b[:D], X @ W[D:2 * D].T + b[D:2 * D]
    N, n, _ = X.shape
    q = q.reshape(N, n, H, d).transpose(1, 2)
    k = k.reshape(N, n, H, d).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / d**0.5
    allowed = torch.ones(N, 1, n, n, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & (mask != 0)[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1), allowed


@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_capture_matches_manual_softmax_with_masks(batch_first):
    m = _mha(batch_first=batch_first)
    X = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.ones(3, 5)
    mask[2, 3:] = 0
    a = adapt(m, X, attention_mask=mask, causal=True)
    (amap,) = a.attention()
    ref, allowed = _manual_probs(m, X, mask, causal=True)
    torch.testing.assert_close(amap.probs, ref, rtol=1e-13, atol=1e-15)
    assert torch.equal(amap.support_full(), allowed.expand_as(ref))
    assert amap.masks == ("padding", "causal")
    # the functional output is the module's own (batch-first in, batch-first out)
    x = X if batch_first else X.transpose(0, 1)
    with torch.no_grad():
        m.eval()
        out = m(x, x, x, key_padding_mask=mask == 0, attn_mask=torch.ones(5, 5, dtype=torch.bool).triu(1),
                need_weights=False)[0]
    out = out if batch_first else out.transpose(0, 1)
    torch.testing.assert_close(a.output(), out, rtol=1e-12, atol=1e-14)


def test_transformer_encoder_layer_submodule_capture_and_forward_ad():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True, dtype=torch.float64)
    X = torch.randn(2, 3, 4, dtype=torch.float64)
    a = adapt(layer, X, params="self_attn.in_proj_weight")
    assert a.family == "mha"
    (amap,) = a.attention()
    assert amap.layer == "self_attn" and amap.probs.shape == (2, 2, 3, 3)
    torch.testing.assert_close(amap.probs.sum(-1), torch.ones(2, 2, 3, dtype=torch.float64))
    a.check_forward_ad()
    assert layer.training  # the user's module state is restored


def test_hook_point_capture():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(4, 4, dtype=torch.float64)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, X):
            return self.softmax(self.q(X) @ X.transpose(-1, -2)) @ X

    torch.manual_seed(0)
    X = torch.randn(2, 3, 4, dtype=torch.float64)
    t = Tiny()
    a = AdaptedModel(t, X, params="q.weight", probs_module="softmax")
    (amap,) = a.attention()
    torch.testing.assert_close(amap.probs[:, 0], torch.softmax(t.q(X) @ X.transpose(-1, -2), -1).detach())
    with pytest.raises(ValueError, match="probs_module 'nope' matches no submodule"):
        AdaptedModel(t, X, probs_module="nope")


def test_float32_sample_independence_accepted():
    torch.manual_seed(0)
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    a = adapt(m, torch.randn(16, 6, 8))
    op = JacobianOperator(a.functional, a.params(), a.inputs, sample_dim=0)
    assert op.n_samples == 16


def test_batchnorm_model_is_not_per_sample():
    class BN(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64)
            self.bn = nn.BatchNorm1d(3, dtype=torch.float64)

        def forward(self, X):
            return self.attn(X, X, X)[0] + self.bn.running_mean.sum() * 0 + X.mean(0, keepdim=True)

    torch.manual_seed(0)
    a = adapt(BN(), torch.randn(3, 3, 4, dtype=torch.float64), params="attn.in_proj_weight")
    with pytest.raises(ValueError, match="does not act independently per sample"):
        JacobianOperator(a.functional, a.params(), a.inputs, sample_dim=0)
    from attncond.spectral.diagnostics.foreign import jacobian_conditioning

    jc = jacobian_conditioning(a)
    assert not jc.per_sample and "per-sample structure not used" in jc.per_sample_reason


class Attention(nn.Module):
    """A stand-in with timm's Attention interface (timm itself needs torchvision, not installable here)."""

    def __init__(self, dim=4, num_heads=2):
        super().__init__()
        self.num_heads, self.fused_attn, self.scale = num_heads, True, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, dtype=torch.float64)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim, dtype=torch.float64)

    def forward(self, x):
        B, n, C = x.shape
        q, k, v = self.qkv(x).reshape(B, n, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.fused_attn:
            x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            x = self.attn_drop((q * self.scale @ k.transpose(-2, -1)).softmax(-1)) @ v
        return self.proj(x.transpose(1, 2).reshape(B, n, C))


def test_timm_style_attention_hook_and_fused_switch():
    torch.manual_seed(0)
    blk = nn.Sequential(Attention())
    X = torch.randn(2, 3, 4, dtype=torch.float64)
    a = adapt(blk, X, params="0.qkv.weight")
    assert a.family == "timm" and blk[0].fused_attn is False
    (amap,) = a.attention()
    q, k, _ = blk[0].qkv(X).reshape(2, 3, 3, 2, 2).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(amap.probs, (q @ k.transpose(-2, -1) / 2**0.5).softmax(-1).detach())
    a.check_forward_ad()
