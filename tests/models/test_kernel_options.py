"""Kernel options are checked when a model is built, naming the argument (not at the first forward)."""

from __future__ import annotations

import pytest
import torch

from models import AttentionBlock, MultiHeadAttention
from models.vit import TinyViT


@pytest.mark.parametrize("build", [
    lambda **kw: MultiHeadAttention(3, 2, 2, **kw),
    lambda **kw: AttentionBlock(3, 2, **kw),
])
def test_a_misspelt_or_foreign_kernel_option_is_refused_at_construction(build):
    with pytest.raises(ValueError, match=r"kernel_options.*'normalise'.*takes \['normalize', 'on_underflow'\]"):
        build(kernel="gaussian", kernel_options={"normalise": True})
    with pytest.raises(ValueError, match=r"kernel_options.*'softmax'.*'normalize'"):
        build(kernel="softmax", kernel_options={"normalize": True})
    with pytest.raises(TypeError, match="kernel_options must be a mapping"):
        build(kernel="gaussian", kernel_options=[("normalize", True)])


def test_accepted_options_still_change_the_kernel():
    X = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m = MultiHeadAttention(3, 2, 2, kernel="gaussian", kernel_options={"normalize": True}, seed=0)
    S = m.attention(X)
    assert torch.allclose(S.sum(-1), torch.ones_like(S.sum(-1)), rtol=0, atol=1e-15)


def test_vit_checks_its_kernel_options():
    with pytest.raises(ValueError, match="kernel_options"):
        TinyViT(4, 3, 2, kernel="softmax", kernel_options={"unbiased": False})
