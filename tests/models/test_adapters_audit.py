"""models.adapters, the audit of users' own models: every case against an independent dense truth.

* bare ``nn.MultiheadAttention`` on ``(query, key, value)``: cross-attention, not self-attention
  on the query (``J`` vs ``jacrev`` of the module itself, maps ``(N, H, n_q, n_k)``);
* ``need_weights`` / ``average_attn_weights`` passed positionally to an inner nn.MHA;
* ``add_bias_kv`` / ``add_zero_attn`` (keys *appended* by torch) under padding and causal masks:
  the support and ``κ(J(s))`` vs a hand-written softmax and numpy ``eigvalsh``;
* bad inputs (complex, bool, integer, wrong width) refused in ``adapt``, naming the argument;
* frozen and tied parameters; the causal-pattern note; ``python -m attncond``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attncond.models import MultiHeadAttention, adapt, mha_extra_keys, parameter_aliases, select_params
from attncond.spectral.diagnostics.foreign import jacobian_conditioning, support_attention

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64


def _dense_J(fn, params: dict[str, torch.Tensor]) -> np.ndarray:
    """``∂ vec(fn(params)) / ∂ params`` by ``torch.func.jacrev``, columns in ``params`` order."""
    out = fn(params)
    jac = torch.func.jacrev(fn)(params)
    m = out.numel()
    return torch.cat([jac[k].reshape(m, -1) for k in params], 1).detach().numpy()


def _adapter_J(a) -> np.ndarray:
    return _dense_J(lambda p: a.functional(p, *a.inputs), a.params())


def _module_J(module: nn.Module, names, call) -> np.ndarray:
    """The truth: the module itself through ``functional_call`` (train mode, dropout 0 for nn.MHA)."""
    ps = dict(module.named_parameters())
    return _dense_J(lambda p: call(p), {k: ps[k].detach().clone() for k in names})


# --------------------------------------------------------------------------- #1 cross-attention
@pytest.mark.parametrize("batch_first", [True, False])
def test_bare_mha_query_key_value_is_cross_attention(batch_first):
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(4, 2, batch_first=batch_first, dtype=F64)
    q, k, v = (torch.randn(2, n, 4, dtype=F64) for n in (3, 5, 5))
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    a = adapt(mha, (q, k, v), params="in_proj_weight", attention_mask=mask)

    def call(p):
        x = (q, k, v) if batch_first else tuple(t.transpose(0, 1) for t in (q, k, v))
        out = torch.func.functional_call(mha, p, x, {"key_padding_mask": mask == 0, "need_weights": False})[0]
        return out if batch_first else out.transpose(0, 1)

    J, Jt = _adapter_J(a), _module_J(mha, ["in_proj_weight"], call)
    np.testing.assert_allclose(J, Jt, rtol=0, atol=1e-14)
    s = np.linalg.svd(Jt, compute_uv=False)
    jc = jacobian_conditioning(a)
    assert jc.converged
    np.testing.assert_allclose([jc.sigma_max, jc.sigma_min], [s[0], s[-1]], rtol=1e-10)
    (amap,) = a.attention()
    assert amap.probs.shape == (2, 2, 3, 5) and amap.masks == ("padding",)
    # independent probabilities: softmax(q_h k_hᵀ/√d) from the packed projection, padding masked
    W, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    qh = (q @ W[:4].T + b[:4]).reshape(2, 3, 2, 2).transpose(1, 2)
    kh = (k @ W[4:8].T + b[4:8]).reshape(2, 5, 2, 2).transpose(1, 2)
    logits = (qh @ kh.transpose(-1, -2) / 2**0.5).masked_fill((mask == 0)[:, None, None, :], -torch.inf)
    torch.testing.assert_close(amap.probs, torch.softmax(logits, -1), rtol=1e-13, atol=1e-15)


def test_bare_mha_kdim_vdim_cross_attention():
    torch.manual_seed(4)
    mha = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, batch_first=True, dtype=F64)
    q, k, v = torch.randn(2, 3, 4, dtype=F64), torch.randn(2, 6, 3, dtype=F64), torch.randn(2, 6, 5, dtype=F64)
    a = adapt(mha, (q, k, v))
    names = list(a.trainable)
    Jt = _module_J(mha, names, lambda p: torch.func.functional_call(mha, p, (q, k, v))[0])
    np.testing.assert_allclose(_adapter_J(a), Jt, rtol=0, atol=1e-14)
    assert a.attention()[0].probs.shape == (2, 2, 3, 6)
    with pytest.raises(ValueError, match=r"kdim=3, vdim=5 != embed_dim=4 needs inputs \(query, key, value\)"):
        adapt(mha, q)


def test_bare_mha_refuses_input_counts_and_shapes_it_cannot_use():
    mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    q, kv = torch.randn(2, 3, 4, dtype=F64), torch.randn(2, 5, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"X \(self-attention\) or \(query, key, value\).*got 2 inputs"):
        adapt(mha, (q, kv))
    with pytest.raises(ValueError, match=r"inputs\[1\] \(key\) and inputs\[2\] \(value\) must have the same"):
        adapt(mha, (q, kv, kv[:, :4]))
    with pytest.raises(ValueError, match=r"inputs\[2\] \(value\) must have shape \(N, n, vdim=4\)"):
        adapt(mha, (q, kv, torch.randn(2, 5, 3, dtype=F64)))
    with pytest.raises(ValueError, match="causal=True with cross-attention needs n_q = n_k"):
        adapt(mha, (q, kv, kv), causal=True)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(N, n\) = \(2, 5\) "
                                         r"to fit inputs\[1\] \(key\)"):
        adapt(mha, (q, kv, kv), attention_mask=torch.ones(2, 3))


def test_hf_model_refuses_extra_inputs():
    tr = pytest.importorskip("transformers")
    cfg = tr.GPT2Config(n_embd=8, n_head=2, n_layer=1, vocab_size=11, n_positions=8)
    torch.manual_seed(0)
    gpt = tr.GPT2Model(cfg).double()
    X = torch.randn(2, 4, 8, dtype=F64)
    with pytest.raises(ValueError, match="a Hugging Face model takes one input here.*got 2 inputs"):
        adapt(gpt, (X, X))
    # integer token ids, numpy or torch, are input_ids: the same model output either way
    ids = np.random.default_rng(0).integers(0, 11, (2, 4))
    a_np, a_t = adapt(gpt, ids, params="h.0.attn.c_attn.weight"), adapt(gpt, torch.as_tensor(ids),
                                                                         params="h.0.attn.c_attn.weight")
    assert a_np.inputs[0].dtype == a_t.inputs[0].dtype == torch.long
    with torch.no_grad():
        ref = gpt.eval()(input_ids=torch.as_tensor(ids)).last_hidden_state
    torch.testing.assert_close(a_np.output(), ref, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(a_t.output(), ref, rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------- #5 positional need_weights
class _Positional(nn.Module):
    """A user module calling its inner MHA with need_weights (and average_attn_weights) positionally."""

    def __init__(self, average: bool):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
        self.average = average

    def forward(self, x):
        if self.average:  # query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights
            return x + self.mha(x, x, x, None, False, None, True)[0]
        return x + self.mha(x, x, x, None, False)[0]


@pytest.mark.parametrize("average", [False, True])
def test_inner_mha_with_positional_need_weights(average):
    torch.manual_seed(5)
    mod = _Positional(average)
    X = torch.randn(2, 3, 4, dtype=F64)
    a = adapt(mod, X)
    (amap,) = a.attention()
    assert amap.probs.shape == (2, 2, 3, 3)  # per head: the forced average_attn_weights=False took effect
    torch.testing.assert_close(amap.probs.sum(-1), torch.ones(2, 2, 3, dtype=F64))
    mod.train()
    Jt = _module_J(mod, list(a.trainable), lambda p: torch.func.functional_call(mod, p, (X,)))
    np.testing.assert_allclose(_adapter_J(a), Jt, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- #6 appended extra keys
def _manual_mha_probs(m: nn.MultiheadAttention, X, mask, causal):
    """Independent probabilities of a self-attention nn.MHA with add_bias_kv/add_zero_attn: the bias
    key, then the zero key, appended after the n keys and attended by every row; returns the
    probabilities and the support (True where unmasked)."""
    D, H = m.embed_dim, m.num_heads
    d = D // H
    W, b = m.in_proj_weight.detach(), m.in_proj_bias.detach()
    N, n, _ = X.shape
    q = (X @ W[:D].T + b[:D]).reshape(N, n, H, d).transpose(1, 2)
    k = X @ W[D:2 * D].T + b[D:2 * D]
    if m.bias_k is not None:
        k = torch.cat([k, m.bias_k.detach().reshape(1, 1, D).expand(N, 1, D)], 1)
    k = k.reshape(N, -1, H, d).transpose(1, 2)
    if m.add_zero_attn:
        k = torch.cat([k, torch.zeros(N, H, 1, d, dtype=F64)], 2)
    extra = k.shape[2] - n
    real = torch.ones(N, 1, n, n, dtype=torch.bool)
    if mask is not None:
        real = real & (mask != 0)[:, None, None, :]
    if causal:
        real = real & torch.ones(n, n, dtype=torch.bool).tril()
    sup = torch.cat([real, torch.ones(N, 1, n, extra, dtype=torch.bool)], -1)
    P = torch.softmax((q @ k.transpose(-1, -2) / d**0.5).masked_fill(~sup, -torch.inf), -1)
    return P, sup.expand_as(P)


def _kappa_on_support(P: torch.Tensor, sup: torch.Tensor) -> np.ndarray:
    """κ of ``diag(r) − r rᵀ`` on ``1⊥`` of each row's support (numpy eigvalsh); nan for 1-entry rows."""
    N, H, nq, _ = P.shape
    out = np.full((N, H, nq), np.nan)
    for idx in np.ndindex(N, H, nq):
        r = P[idx][sup[idx]].numpy()
        if r.size >= 2:
            ev = np.sort(np.linalg.eigvalsh(np.diag(r) - np.outer(r, r)))
            out[idx] = ev[-1] / ev[1]
    return out


@pytest.mark.parametrize("bias_kv, zero_attn", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("masks", [("padding",), ("causal",), ("padding", "causal")])
def test_appended_extra_keys_support_and_softmax_kappa(bias_kv, zero_attn, masks):
    torch.manual_seed(15)
    mha = nn.MultiheadAttention(4, 2, batch_first=False, add_bias_kv=bias_kv, add_zero_attn=zero_attn,
                                dtype=F64)
    X = torch.randn(3, 4, 4, dtype=F64)
    mask = torch.ones(3, 4)
    mask[2, 2:] = 0
    pad = mask if "padding" in masks else None
    kw = {"attention_mask": pad} if pad is not None else {}
    a = adapt(mha, X, causal="causal" in masks, **kw)
    assert mha_extra_keys(mha) == int(bias_kv) + int(zero_attn)
    (amap,) = a.attention()
    P, sup = _manual_mha_probs(mha, X, pad, "causal" in masks)
    assert amap.masks == masks
    torch.testing.assert_close(amap.probs, P, rtol=1e-13, atol=1e-15)
    assert torch.equal(amap.support_full(), sup)
    sa = support_attention(amap)
    ref = _kappa_on_support(P, sup)
    assert np.isfinite(ref).all()  # the extra keys are always attended: no 1-entry rows here
    np.testing.assert_allclose(sa.kappa, ref, rtol=1e-10)


def test_padding_goes_only_on_maps_over_the_masked_keys():
    """Inside a decoder layer the (N, n) target mask is the padding of the self-attention keys; the
    cross-attention onto a memory of another length gets no padding support, not a wrong one."""
    torch.manual_seed(7)
    dec = nn.TransformerDecoderLayer(4, 2, dim_feedforward=6, batch_first=True, dtype=F64)
    tgt, mem = torch.randn(2, 3, 4, dtype=F64), torch.randn(2, 5, 4, dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    a = adapt(dec, (tgt, mem), attention_mask=mask, params="self_attn.in_proj_weight",
              forward=lambda m, t, s, k: m(t, s, tgt_key_padding_mask=k == 0))
    maps = {x.layer: x for x in a.attention()}
    assert maps["self_attn"].masks == ("padding",) and maps["multihead_attn"].masks == ()
    assert maps["multihead_attn"].probs.shape == (2, 2, 3, 5)
    assert torch.equal(maps["self_attn"].support_full()[1, :, :, 2], torch.zeros(2, 3, dtype=torch.bool))
    assert float(maps["self_attn"].probs[1, :, :, 2].abs().max()) == 0.0
    for x in maps.values():
        assert np.isfinite(support_attention(x).kappa).all()


# --------------------------------------------------------------------------- #8 bad input
class _Hooked(nn.Module):
    def __init__(self, D=4, vocab=0):
        super().__init__()
        self.emb = nn.Embedding(vocab, D, dtype=F64) if vocab else None
        self.q = nn.Linear(D, D, bias=False, dtype=F64)
        self.k = nn.Linear(D, D, bias=False, dtype=F64)
        self.v = nn.Linear(D, D, bias=False, dtype=F64)
        self.sm = nn.Softmax(-1)

    def forward(self, x):
        if self.emb is not None:
            x = self.emb(x)
        return self.sm(self.q(x) @ self.k(x).transpose(-1, -2) / 2.0) @ self.v(x)


def test_bad_inputs_refused_in_adapt_naming_the_argument():
    torch.manual_seed(12)
    mod, X = _Hooked(), torch.randn(2, 3, 4, dtype=F64)
    for bad in (X.to(torch.complex128), X.numpy().astype(np.complex128) + 1j):
        with pytest.raises(TypeError, match=r"inputs\[0\] must be real, got complex"):
            adapt(mod, bad, probs_module="sm")
    for bad in (X > 0, X.numpy() > 0):
        with pytest.raises(TypeError, match=r"inputs\[0\] is boolean"):
            adapt(mod, bad, probs_module="sm")
    with pytest.raises(TypeError, match=r"inputs\[1\] must be real"):
        adapt(nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64), (X, X.to(torch.complex128), X))
    # integers are token ids for numpy and torch alike; into a float model, the forward's failure names them
    for ids in (torch.randint(0, 5, (2, 3, 4)), np.random.default_rng(0).integers(0, 5, (2, 3, 4))):
        with pytest.raises(ValueError, match=r"inputs do not fit _Hooked \(inputs\[0\] int64 \(2, 3, 4\)\).*"
                                             r"inputs\[0\] hold integers, kept as token ids"):
            adapt(mod, ids, probs_module="sm")
    with pytest.raises(ValueError, match=r"inputs do not fit _Hooked \(inputs\[0\] float64 \(2, 3, 5\)\).*"
                                         "mat1 and mat2 shapes cannot be multiplied"):
        adapt(mod, torch.randn(2, 3, 5, dtype=F64), probs_module="sm")
    a = adapt(mod, X, probs_module="sm")
    with pytest.raises(ValueError, match=r"inputs do not fit _Hooked \(inputs\[0\] float64 \(2, 3, 5\)\)"):
        jacobian_conditioning(a, inputs=(torch.randn(2, 3, 5, dtype=F64),))
    with pytest.raises(TypeError, match="attention_mask must be real 0/1"):
        adapt(nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64), X,
              attention_mask=torch.ones(2, 3, dtype=torch.complex64))


def test_numpy_complex_refused_by_attncond_models_too():
    m = MultiHeadAttention(4, 2, 2)
    X = np.random.default_rng(0).standard_normal((2, 3, 4))
    with pytest.raises(TypeError, match="X must be real, got a complex array"):
        m.check_inputs(X + 1j)
    with pytest.raises(TypeError, match="X must be numeric, got a torch.bool tensor"):
        m.check_inputs(torch.as_tensor(X) > 0)


def test_integer_token_ids_numpy_and_torch_agree_with_the_module():
    torch.manual_seed(2)
    mod = _Hooked(vocab=7)
    ids = np.random.default_rng(1).integers(0, 7, (3, 5))
    a_np = adapt(mod, ids, probs_module="sm", params="q.weight")
    a_t = adapt(mod, torch.as_tensor(ids, dtype=torch.int32), probs_module="sm", params="q.weight")
    assert a_np.inputs[0].dtype == a_t.inputs[0].dtype == torch.long
    Jt = _module_J(mod, ["q.weight"], lambda p: torch.func.functional_call(mod, p, (torch.as_tensor(ids),)))
    np.testing.assert_allclose(_adapter_J(a_np), Jt, rtol=0, atol=1e-14)
    np.testing.assert_allclose(_adapter_J(a_t), Jt, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- frozen and tied parameters
def test_frozen_parameters_left_out_by_default_with_a_note():
    torch.manual_seed(6)
    mod, X = _Hooked(), torch.randn(2, 3, 4, dtype=F64)
    mod.v.weight.requires_grad_(False)
    a = adapt(mod, X, probs_module="sm")
    assert a.trainable == ("q.weight", "k.weight")
    assert any("left out 1 frozen parameters (requires_grad=False): v.weight" in n for n in a.notes)
    np.testing.assert_allclose(_adapter_J(a), _module_J(mod, ["q.weight", "k.weight"],
                                                        lambda p: torch.func.functional_call(mod, p, (X,))),
                               rtol=0, atol=1e-14)
    every = adapt(mod, X, probs_module="sm", params="*")
    assert every.trainable == ("q.weight", "k.weight", "v.weight")
    assert any("includes 1 frozen parameters" in n for n in every.notes)
    mod.requires_grad_(False)
    frozen = adapt(mod, X, probs_module="sm")
    assert frozen.trainable == ("q.weight", "k.weight", "v.weight")
    assert any("every parameter is frozen" in n for n in frozen.describe()["notes"])


class _Tied(_Hooked):
    def __init__(self):
        super().__init__()
        self.k.weight = self.q.weight


def test_tied_alias_selects_the_shared_tensor():
    torch.manual_seed(9)
    mod, X = _Tied(), torch.randn(3, 3, 4, dtype=F64)
    assert parameter_aliases(mod) == {"k.weight": "q.weight"}
    assert select_params(mod, "k.weight") == select_params(mod, "q.weight") == ("q.weight",)
    a = adapt(mod, X, probs_module="sm", params="k.weight")
    assert a.trainable == ("q.weight",)
    assert any("k.weight is tied to q.weight" in n for n in a.notes)
    Jt = _module_J(mod, ["q.weight"], lambda p: torch.func.functional_call(mod, p, (X,)))
    np.testing.assert_allclose(_adapter_J(a), Jt, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"'k\.bias' matches no parameter.*tied.*k\.weight = q\.weight"):
        select_params(mod, "k.bias")


# --------------------------------------------------------------------------- causal pattern note, CLI
class _Causal(_Hooked):
    def forward(self, x):
        n = x.shape[1]
        L = (self.q(x) @ self.k(x).transpose(-1, -2)).masked_fill(
            ~torch.ones(n, n, dtype=torch.bool).tril(), -torch.inf)
        return self.sm(L) @ self.v(x)


def test_causal_pattern_without_causal_true_gives_a_note():
    torch.manual_seed(1)
    X = torch.randn(2, 5, 4, dtype=F64)
    hint = "exactly 0 everywhere above the diagonal"
    assert any(hint in n for n in adapt(_Causal(), X, probs_module="sm").notes)
    assert not any(hint in n for n in adapt(_Causal(), X, probs_module="sm", causal=False).notes)
    assert not any(hint in n for n in adapt(_Causal(), X, probs_module="sm", causal=True).notes)
    assert not any(hint in n for n in adapt(_Hooked(), X, probs_module="sm").notes)


def test_python_dash_m_attncond_runs_the_cli():
    """``python -m attncond`` is the console script: its parser, one-line errors and exit status."""
    r = subprocess.run([sys.executable, "-m", "attncond", "diagnose", "--no-such-flag"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "attncond: error: unrecognized arguments: --no-such-flag (see attncond --help)"


# --------------------------------------------------------------------------- padding of another length
class _PoolThenAttend(nn.Module):
    """Self-attention over ``n`` tokens under the padding mask, then over every second token (no mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
        self.b = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.a(x, x, x, key_padding_mask=mask == 0)[0]
        z = y[:, ::2]
        return self.b(z, z, z)[0]


def test_padding_mask_of_another_length_is_named_in_the_notes():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, dtype=F64)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0
    a = adapt(_PoolThenAttend(), x, attention_mask=mask, forward=lambda m, x, k: m(x, k))
    maps = {m.layer: m for m in a.attention()}
    assert maps["a"].masks == ("padding",) and maps["b"].masks == ()
    assert tuple(maps["b"].probs.shape) == (2, 2, 3, 3)
    notes = a.describe()["notes"]
    assert any(n.startswith("b attends over 3 keys but attention_mask has 6") for n in notes), notes
    assert not any(n.startswith("a attends") for n in notes), notes


# --------------------------------------------------------------------------- causal alignment, n_q ≠ n_k
class _CausalCross(nn.Module):
    """Cross-attention of ``x`` on ``mem`` under a causal mask aligned top-left (``tril(0)``, torch
    SDPA's ``is_causal``) or bottom-right (``tril(n_k − n_q)``, a key cache); probabilities from ``sm``."""

    def __init__(self, align: str, D: int = 4) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(D, D, dtype=F64), nn.Linear(D, D, dtype=F64)
        self.sm, self.align = nn.Softmax(-1), align

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        nq, nk = x.shape[1], mem.shape[1]
        ones = torch.ones(nq, nk, dtype=torch.bool)
        keep = ones.tril(0) if self.align == "top-left" else ones.tril(nk - nq)
        P = self.sm((self.q(x) @ self.k(mem).transpose(-1, -2)).masked_fill(~keep, float("-inf")))
        return P @ mem


@pytest.mark.parametrize("align,nq,nk", [("top-left", 3, 5), ("top-left", 5, 3), ("bottom-right", 3, 5)])
def test_causal_cross_attention_takes_the_alignment_its_attention_fits(align, nq, nk):
    torch.manual_seed(0)
    x, mem = torch.randn(2, nq, 4, dtype=F64), torch.randn(2, nk, 4, dtype=F64)
    a = adapt(_CausalCross(align), (x, mem), probs_module="sm", causal=True)
    amap = a.attention()[0]
    got = support_attention(amap).kappa.reshape(-1)
    # the truth: κ of diag(p) − p pᵀ on each row's true support (its non-zero probabilities)
    want = []
    for p in amap.probs.detach().reshape(-1, nk).numpy():
        p = p[p > 0]
        ev = np.sort(np.linalg.eigvalsh(np.diag(p) - np.outer(p, p)))[1:]
        want.append(ev[-1] / ev[0] if p.size >= 2 else np.nan)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-12)
    assert np.isfinite(got[~np.isnan(want)]).all()
    assert any(f"the {align}" in n for n in a.describe()["notes"])


# --------------------------------------------------------------------------- bad arguments (audit A6)
@pytest.mark.parametrize("bad", [5, 2.5, {"in_proj_weight": 1}, {"in_proj_weight"}, b"in_proj_weight"])
def test_adapt_params_must_be_patterns(bad):
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    X = torch.randn(2, 3, 4, dtype=F64)
    with pytest.raises(TypeError, match=r"params must be a parameter-name pattern string .* or a list/tuple of "
                                        r"them, got"):
        adapt(m, X, params=bad)
    assert adapt(m, X, params=("in_proj_weight",)).trainable == ("in_proj_weight",)


def test_select_params_names_the_argument_it_was_given_as():
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    with pytest.raises(TypeError, match="trainable must be a parameter-name pattern"):
        select_params(m, 3, name="trainable")
    with pytest.raises(ValueError, match="trainable pattern 'nope' matches no parameter"):
        select_params(m, "nope", name="trainable")


@pytest.mark.parametrize("value", [0.5, 2, -1, float("nan"), 0.999])
def test_a_mask_with_values_other_than_0_and_1_is_refused_before_the_cast(value):
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    X = torch.randn(2, 3, 4, dtype=F64)
    mask = torch.ones(2, 3, dtype=F64 if isinstance(value, float) else torch.long)
    mask[1, 2] = value  # one entry: a cast to long made 0.5/0.999 padding silently
    with pytest.raises(ValueError, match=r"attention_mask must hold 0/1 values or booleans .* got 1 other "
                                         r"entries"):
        adapt(m, X, attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask must hold 0/1 values"):
        adapt(m, X, attention_mask=torch.full((2, 3), value))


def test_binary_masks_of_every_dtype_give_one_support():
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    X = torch.randn(2, 3, 4, dtype=F64)
    want = torch.tensor([[1, 1, 1], [1, 1, 0]])
    sups = [adapt(m, X, attention_mask=want.to(dt)).attention()[0].support_full()
            for dt in (torch.bool, torch.long, torch.float32, F64)]
    sups.append(adapt(m, X, attention_mask=want.numpy().tolist()).attention()[0].support_full())
    for s in sups:
        assert torch.equal(s, sups[0])
    assert not bool(sups[0][1, :, :, 2].any()) and bool(sups[0][0].all())


@pytest.mark.parametrize("bad", ["no", 1, 0, None])
def test_eager_must_be_a_bool(bad):
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    with pytest.raises(TypeError, match="eager must be True or False, got"):
        adapt(m, torch.randn(2, 3, 4, dtype=F64), eager=bad)


def test_check_params_names_the_parameter_and_what_was_wrong():
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    a = adapt(m, torch.randn(2, 3, 4, dtype=F64), params="in_proj_weight")
    W = a.params()["in_proj_weight"]
    assert a.check_params({"in_proj_weight": W})["in_proj_weight"] is W
    known = r"are: in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias"
    with pytest.raises(ValueError, match=r"params has 1 name\(s\) that are not parameters of "
                                         r"MultiheadAttention: \['in_proj_weigh'\] \('in_proj_weigh': "
                                         r"did you mean 'in_proj_weight'\?\).*" + known):
        a.check_params({"in_proj_weigh": W})
    with pytest.raises(ValueError, match=r"\['nothing_like_it'\]\. Its parameters"):
        a.check_params({"in_proj_weight": W, "nothing_like_it": W})
    with pytest.raises(ValueError, match=r"params\['in_proj_weight'\] has shape \(3, 3\), the module's "
                                         r"in_proj_weight has \(12, 4\)"):
        a.check_params({"in_proj_weight": torch.zeros(3, 3, dtype=F64)})
    with pytest.raises(TypeError, match=r"params\['in_proj_weight'\] has dtype torch.float32, the module's "
                                        r"in_proj_weight has torch.float64"):
        a.check_params({"in_proj_weight": W.float()})
    bad = W.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"params\['in_proj_weight'\] contains non-finite values \(0 NaN, 1 "):
        a.check_params({"in_proj_weight": bad})
    with pytest.raises(TypeError, match=r"params\['in_proj_weight'\] must be a torch tensor of shape "):
        a.check_params({"in_proj_weight": W.numpy()})
    with pytest.raises(TypeError, match="params must be a mapping"):
        a.check_params([W])
    with pytest.raises(ValueError, match="params must hold at least one parameter"):
        a.check_params({})


def test_check_params_points_a_tied_alias_to_its_canonical_name():
    torch.manual_seed(9)
    mod = _Tied()
    a = adapt(mod, torch.randn(3, 3, 4, dtype=F64), probs_module="sm")
    with pytest.raises(ValueError, match=r"'k\.weight' is tied to 'q\.weight' \(pass it under that name\)"):
        a.check_params({"k.weight": a.params()["q.weight"]})
