import numpy as np
import pytest
import torch

from models import (
    AttentionBlock,
    MultiHeadAttention,
    PromptTokenModel,
    Stack,
    digits_two_step,
    patchify,
    synthetic_regression,
    teacher_student,
)

f64 = torch.float64


def data(N=3, n=4, D=5, seed=0, **kw):
    return synthetic_regression(N, n, D, seed=seed, **kw)


def test_mh_forward_matches_explicit_loop():
    ds = data()
    m = MultiHeadAttention(5, 3, 2, seed=1)
    out = m(ds.X)
    assert out.shape == (3, 4, 1)
    for i in range(3):
        X = ds.X[i]
        heads = []
        for h in range(2):
            C = (X @ m.W_Q[h]) @ (X @ m.W_K[h]).T / np.sqrt(3)
            heads.append(torch.softmax(C, -1) @ X @ m.W_V[h])
        torch.testing.assert_close(out[i], torch.cat(heads, -1) @ m.W_O, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian", "linear", "normsoftmax"])
def test_joint_value_map_block_diagonal_equals_per_head(kernel):
    ds = data(N=2, n=5, D=4)
    ph = MultiHeadAttention(4, 3, 3, kernel=kernel, seed=2)
    jt = MultiHeadAttention(4, 3, 3, kernel=kernel, value_param="joint", seed=2)
    with torch.no_grad():
        jt.W_Q.copy_(ph.W_Q)
        jt.W_K.copy_(ph.W_K)
        jt.W_O.copy_(ph.W_O)
        jt.W_V.copy_(torch.block_diag(*ph.W_V))
    torch.testing.assert_close(jt(ds.X), ph(ds.X), rtol=1e-13, atol=1e-14)


def test_weighted_inputs_are_B0_rows():
    ds = data()
    m = MultiHeadAttention(5, 2, 3, seed=3)
    B = m.weighted_inputs(ds.X)
    S = m.attention(ds.X)
    assert B.shape == (3, 4, 15)
    torch.testing.assert_close(B[1, :, 5:10], S[1, 1] @ ds.X[1], rtol=0, atol=0)


def test_trainable_set_and_functional_call():
    ds = data()
    m = MultiHeadAttention(5, 2, 2, trainable=("W_Q",), seed=0)
    assert list(m.params()) == ["W_Q"]
    assert not m.W_V.requires_grad and m.W_Q.requires_grad
    p = m.params()
    out = m.functional(p, ds.X)
    torch.testing.assert_close(out, m(ds.X), rtol=0, atol=0)
    tangent = {"W_Q": torch.randn_like(p["W_Q"])}
    _, jv = torch.func.jvp(lambda q: m.functional(q, ds.X), (p,), (tangent,))
    _, vjp = torch.func.vjp(lambda q: m.functional(q, ds.X), p)
    (g,) = vjp(torch.ones_like(out))
    assert jv.shape == out.shape and g["W_Q"].shape == p["W_Q"].shape
    # vmap over tangents agrees with a loop
    T = torch.randn(3, *p["W_Q"].shape, dtype=f64)
    f = lambda t: torch.func.jvp(lambda q: m.functional({"W_Q": q}, ds.X), (p["W_Q"],), (t,))[1]
    torch.testing.assert_close(torch.func.vmap(f)(T), torch.stack([f(t) for t in T]), rtol=1e-13, atol=1e-13)


def test_loss_is_half_squared_error():
    ds = data()
    m = MultiHeadAttention(5, 2, 2, seed=0)
    r = (m(ds.X) - ds.y).detach()
    assert m.loss(m.params(), ds.X, ds.y).detach().item() == pytest.approx(0.5 * float((r**2).sum()), rel=1e-14)


def test_regimes_control_attention_entropy():
    ds = data(N=4, n=8, D=6)
    ent = {}
    for r in ("near_uniform", "default", "sharp"):
        S = MultiHeadAttention(6, 6, 2, regime=r, seed=0).attention(ds.X).detach()
        ent[r] = float(-(S * S.clamp_min(1e-300).log()).sum(-1).mean())
    assert ent["near_uniform"] > ent["default"] > ent["sharp"]
    assert ent["near_uniform"] == pytest.approx(np.log(8), rel=1e-3)


def test_seed_reproducible_across_dtypes():
    a = MultiHeadAttention(4, 2, 2, seed=7)
    b = MultiHeadAttention(4, 2, 2, seed=7, dtype=torch.float32)
    c = MultiHeadAttention(4, 2, 2, seed=8)
    torch.testing.assert_close(a.W_Q.float(), b.W_Q, rtol=0, atol=0)
    assert not torch.equal(a.W_Q, c.W_Q)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_propagates_through_models(dtype):
    ds = data(dtype=dtype)
    assert MultiHeadAttention(5, 2, 2, dtype=dtype)(ds.X).dtype == dtype
    assert AttentionBlock(5, 2, dtype=dtype)(ds.X).dtype == dtype
    assert PromptTokenModel(5, dtype=dtype)(ds.X).dtype == dtype


def test_block_formula_and_residual_switch():
    ds = data(N=2, n=4, D=3)
    b = AttentionBlock(3, 2, residual=True, ffn=True, activation="tanh", seed=0)
    X = ds.X
    A = torch.softmax((X @ b.W_Q) @ (X @ b.W_K).transpose(-1, -2) / np.sqrt(2), -1)
    Z = A @ X @ b.W_V + X
    F = torch.tanh(Z @ b.W_1) @ b.W_2 + Z
    torch.testing.assert_close(b(X), F, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(b.attention_output(X, residual=False), A @ X @ b.W_V, rtol=1e-14, atol=1e-14)
    plain = AttentionBlock(3, 2, residual=False, ffn=False, seed=0)
    torch.testing.assert_close(plain(X), A @ X @ b.W_V, rtol=1e-14, atol=1e-14)


def test_stack_composes_blocks():
    ds = data(N=2, n=4, D=3)
    s = Stack(2, 3, 2, ffn=False)
    torch.testing.assert_close(s(ds.X), s.blocks[1](s.blocks[0](ds.X)), rtol=0, atol=0)
    assert "blocks.1.W_Q" in s.params()
    out = s.functional(s.params(), ds.X)
    torch.testing.assert_close(out, s(ds.X), rtol=0, atol=0)


def test_prompt_token_model_formula():
    ds = data(N=3, n=5, D=4)
    m = PromptTokenModel(4, tau=0.5, seed=1)
    y = torch.randn(3, dtype=f64)
    s = torch.softmax((ds.X @ m.W) @ m.p / 0.5, -1)
    yhat = ((ds.X @ m.v) * s).sum(-1)
    torch.testing.assert_close(m(ds.X), yhat, rtol=1e-14, atol=1e-14)
    expected = float(((yhat - y) ** 2).mean().detach() / 2)
    assert m.loss(m.params(), ds.X, y).detach().item() == pytest.approx(expected, rel=1e-13)


def test_teacher_student_is_realisable():
    ds = teacher_student(4, 3, 5, 2, 2, seed=1)
    teacher = MultiHeadAttention(5, 2, 2, seed=10_001)
    torch.testing.assert_close(teacher(ds.X), ds.y, rtol=0, atol=0)


def test_digits_two_step_labels_follow_rule():
    pytest.importorskip("sklearn")
    t = digits_two_step(300, seed=0)
    assert t.images.shape == (300, 16, 16)
    a, b = t.indicator_positions
    assert set(t.tiles[:, a].tolist()) <= {1, 2} and set(t.tiles[:, b].tolist()) <= {1, 2}
    match = t.tiles[:, a] == t.tiles[:, b]
    assert torch.equal(t.match.bool(), match)
    expected = torch.where(match, t.tiles[:, 0], t.tiles[:, 1])
    assert torch.equal(t.labels, expected)
    assert 0.3 < match.double().mean() < 0.7
    # tiles are placed where the labels say: top-left tile equals a digit of that class
    from sklearn.datasets import load_digits
    dg = load_digits()
    tl = t.images[0, :8, :8].numpy() * 16
    hits = np.where(np.abs(dg.images - tl).sum((1, 2)) == 0)[0]
    assert dg.target[hits[0]] == t.tiles[0, 0].item()
    tokens = patchify(t.images, 8)
    assert tokens.shape == (300, 4, 64)
    torch.testing.assert_close(tokens[:, 3].reshape(300, 8, 8), t.images[:, 8:, 8:], rtol=0, atol=0)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"D": 0}, ValueError, "D must be a positive integer"),
        ({"D": 2.5}, TypeError, "D must be a positive integer"),
        ({"H": -1}, ValueError, "H must be"),
        ({"kernel": "softmaks"}, ValueError, "unknown kernel 'softmaks'; known:.*'gaussian'"),
        ({"tau": 0.0}, ValueError, "tau must be"),
        ({"tau": -2.0}, ValueError, "tau must be"),
        ({"dtype": torch.float16}, TypeError, "dtype must be torch.float32 or torch.float64"),
        ({"dtype": torch.int64}, TypeError, "dtype"),
        ({"value_param": "shared"}, ValueError, "unknown value_param"),
        ({"trainable": ("W_X",)}, ValueError, "trainable contains unknown name 'W_X'"),
        ({"trainable": ()}, ValueError, "trainable must name at least one"),
        ({"regime": "spiky"}, ValueError, "unknown regime 'spiky'"),
        ({"init_scale": 0.0}, ValueError, "init_scale"),
    ],
)
def test_mh_constructor_validation(kwargs, exc, match):
    args = {"D": 4, "d": 2, "H": 2} | kwargs
    with pytest.raises(exc, match=match):
        MultiHeadAttention(args.pop("D"), args.pop("d"), args.pop("H"), **args)


def test_input_validation():
    m = MultiHeadAttention(4, 2, 2)
    X = torch.randn(2, 3, 4, dtype=f64)
    with pytest.raises(ValueError, match="X has D=5 features per token but the model has D=4"):
        m(torch.randn(2, 3, 5, dtype=f64))
    with pytest.raises(ValueError, match=r"X must have shape \(N, n, D\)"):
        m(torch.randn(3, 4, dtype=f64))
    bad = X.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="X contains non-finite values \\(1 NaN, 0 inf\\)"):
        m(bad)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="1 inf"):
        m(bad)
    with pytest.raises(TypeError, match="X has dtype torch.float32 but torch.float64 is expected"):
        m(X.float())
    # numpy input is accepted and converted
    torch.testing.assert_close(m(X.numpy()), m(X), rtol=0, atol=0)


def test_other_constructors_validate():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        AttentionBlock(4, 2, activation="swish")
    with pytest.raises(TypeError, match="residual must be a bool"):
        AttentionBlock(4, 2, residual="yes")
    with pytest.raises(ValueError, match="tau must be"):
        PromptTokenModel(4, tau=0)
    with pytest.raises(ValueError, match="N must be a positive integer"):
        synthetic_regression(0, 2, 3)
    with pytest.raises(ValueError, match="L must be"):
        Stack(0, 3, 2)
    with pytest.raises(ValueError, match="permutation"):
        digits_two_step(10, indicator_positions=(0, 0))
    with pytest.raises(ValueError, match="patch=3 must divide"):
        patchify(torch.zeros(2, 16, 16), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device present")
def test_models_on_cuda():
    ds = data(device="cuda")
    m = MultiHeadAttention(5, 2, 2, device="cuda")
    assert m(ds.X).device.type == "cuda"
    torch.testing.assert_close(m(ds.X).cpu(), MultiHeadAttention(5, 2, 2)(data().X), rtol=1e-12, atol=1e-12)
