"""Tests of models.vit.TinyViT: shapes, determinism, attention rows, temperature, probe, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.data import digits_two_step, patchify
from models.vit import TinyViT


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread avoids synchronisation costs on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tokens(B: int = 6, n: int = 5, p: int = 4, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, p, generator=g, dtype=torch.float64).to(dtype)


def _vit(**kw) -> TinyViT:
    base = {"D": 8, "H": 2, "L": 2, "seed": 0}
    base.update(kw)
    return TinyViT(4, 5, 3, **base)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_shapes_and_attention_rows_are_distributions(norm, pooling):
    m = _vit(norm=norm, pooling=pooling)
    X = _tokens()
    logits, probe = m.forward_with_probe(X)
    assert logits.shape == (6, 3) and probe.shape == (6, 2)
    assert logits.dtype == torch.float64
    T = 6 if pooling == "cls" else 5
    maps = m.attention_maps(X)
    assert len(maps) == 2
    for S in maps:
        assert S.shape == (6, 2, T, T)
        assert torch.all(S >= 0)
        torch.testing.assert_close(S.sum(-1), torch.ones(6, 2, T, dtype=torch.float64))
    assert m.features(X).shape == (6, 8)


def test_seed_fixes_every_weight_and_differs_across_seeds():
    a, b, c = _vit(seed=3), _vit(seed=3), _vit(seed=4)
    X = _tokens()
    torch.testing.assert_close(a(X), b(X), rtol=0, atol=0)
    assert not torch.allclose(a(X), c(X))


def test_logit_multiplier_sharpens_attention_and_resets():
    m = _vit(kernel="temperature")
    X = _tokens()
    assert m.effective_tau() == pytest.approx(math.sqrt(4))
    base = m.attention_maps(X)[0].max(-1).values.mean()
    m.set_logit_multiplier(50.0)
    assert m.logit_multiplier == 50.0 and m.effective_tau() == pytest.approx(0.02)
    sharp = m.attention_maps(X)[0].max(-1).values.mean()
    m.set_logit_multiplier(1e-4)
    flat = m.attention_maps(X)[0]
    assert sharp > base + 0.1
    T = flat.shape[-1]
    torch.testing.assert_close(flat, torch.full_like(flat, 1.0 / T), atol=1e-3, rtol=0)
    m.set_logit_multiplier(None)
    assert m.logit_multiplier is None
    torch.testing.assert_close(m.attention_maps(X)[0].max(-1).values.mean(), base)


def test_probe_reads_detached_features():
    m = _vit()
    X = _tokens()
    _, probe = m.forward_with_probe(X)
    probe.sum().backward()
    assert m.probe.weight.grad is not None and m.probe.weight.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        if not name.startswith("probe"):
            assert p.grad is None, name
    assert _vit(probe_classes=0).forward_with_probe(X)[1] is None


def test_gradients_match_finite_differences_float64():
    m = _vit(D=4, H=2, L=1, kernel="normsoftmax")
    X = _tokens(B=2)
    W = m.layers[0].W_Q

    def f(w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            W.copy_(w)
            return m(X).pow(2).sum()

    w0 = W.detach().clone()
    loss = m(X).pow(2).sum()
    (g,) = torch.autograd.grad(loss, [W])
    v = torch.randn(w0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-6
    fd = (f(w0 + h * v) - f(w0 - h * v)) / (2 * h)
    assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-6, abs=1e-9)


def test_qkv_parameters_are_the_layer_weights():
    m = _vit(L=3)
    q = m.qkv_parameters()
    assert set(q) == {"W_Q", "W_K", "W_V"}
    assert list(q["W_K"]) == ["0", "1", "2"]
    assert q["W_V"]["2"] is m.layers[2].W_V
    assert q["W_Q"]["0"].shape == (2, 8, 4)


def test_adamw_fits_a_small_digits_batch():
    data = digits_two_step(16, seed=0, dtype="float32")
    X = patchify(data.images, 8)
    m = TinyViT(64, 4, 10, D=16, H=2, L=1, dtype="float32", seed=0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = F.cross_entropy(m(X), data.labels)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("kw,exc,msg", [
    ({"kernel": "softmaks"}, ValueError, "unknown kernel"),
    ({"D": 9, "H": 2}, ValueError, "H=2 must divide D=9"),
    ({"L": 0}, ValueError, "L"),
    ({"norm": "middle"}, ValueError, "norm"),
    ({"pooling": "max"}, ValueError, "pooling"),
    ({"probe_classes": -1}, ValueError, "probe_classes"),
    ({"tau": 0.0}, ValueError, "tau"),
    ({"dtype": torch.int64}, (ValueError, TypeError), "dtype"),
])
def test_bad_constructor_input(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        _vit(**kw)


def test_bad_forward_input_and_multiplier():
    m = _vit()
    with pytest.raises(ValueError, match="tokens"):
        m(_tokens(n=4))
    with pytest.raises(ValueError, match="features per token"):
        m(_tokens(p=5))
    with pytest.raises((ValueError, TypeError)):
        m(_tokens(dtype=torch.float32))
    with pytest.raises(ValueError, match="m"):
        m.set_logit_multiplier(0.0)
