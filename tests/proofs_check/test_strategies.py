"""Hypothesis strategies: bounds respected, boundaries reached, assumptions satisfied."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings

from proofs_check.strategies import (
    SIZE_CAP,
    attention_configs,
    block_configs,
    hd_equals_nn,
    near_uniform_attention,
    probability_vectors,
    sharp_attention,
    tiny_sigma_min_X,
)
from proofs_check.theorems import get_theorem, instances


@given(attention_configs(N=(1, 3), n=2, D=(2, 5), d=(1, 2), H=(1, 3), kernels=("softmax",),
                         init_scale=(0.5, 2.0)))
def test_attention_configs_respect_every_bound(cfg):
    assert 1 <= cfg.N <= 3 and cfg.n == 2 and 2 <= cfg.D <= 5 and 1 <= cfg.d <= 2 and 1 <= cfg.H <= 3
    assert cfg.kernel == "softmax" and 0.5 <= cfg.init_scale <= 2.0 + 1e-12


@given(attention_configs(hd_at_least_nn=True))
def test_hd_at_least_nn(cfg):
    assert cfg.HD >= cfg.Nn


@pytest.mark.parametrize("kw,err,msg", [
    ({"N": (0, 2)}, ValueError, "N must satisfy 1 <= lo <= hi"),
    ({"D": (1, SIZE_CAP + 1)}, ValueError, "exceeds the cap"),
    ({"H": 2.5}, TypeError, "H must be an int or a"),
    ({"kernels": ("softmaks",)}, ValueError, "unknown kernel 'softmaks'"),
])
def test_attention_configs_validate_arguments(kw, err, msg):
    with pytest.raises(err, match=msg):
        attention_configs(**kw)


@given(hd_equals_nn())
def test_hd_equals_nn_exactly(cfg):
    assert cfg.HD == cfg.Nn


@settings(max_examples=10)
@given(near_uniform_attention(N=(1, 2), n=(2, 4), D=(1, 4)))
def test_near_uniform_attention_is_near_uniform(cfg):
    model, X, _ = cfg.replace(kernel="softmax").build()
    A = model.attention(X).detach()
    assert float((A * cfg.n - 1).abs().max()) < 0.05


@settings(max_examples=10)
@given(sharp_attention(N=(1, 2), n=(3, 4), D=(3, 5), d=(2, 3), kernels=("softmax",)))
def test_sharp_attention_is_sharp(cfg):
    model, X, _ = cfg.build()
    A = model.attention(X).detach()
    assert float(A.max(dim=-1).values.mean()) > 0.6  # mostly one dominant key per row


@settings(max_examples=10)
@given(tiny_sigma_min_X())
def test_tiny_sigma_min_X(b):
    _, X, _ = b.build()
    s = torch.linalg.svdvals(X.reshape(-1, b.D))
    assert float(s[-1]) <= 1e-2 * 10  # x_scale <= 1e-2 times an O(1) Gaussian singular value


@given(block_configs())
def test_block_configs_are_tall(b):
    assert b.N * b.n >= b.D


@given(probability_vectors(n=(2, 6)))
def test_probability_vectors_sum_to_one(s):
    assert 2 <= len(s) <= 6 and min(s) > 0 and math.isclose(sum(s), 1.0, rel_tol=0, abs_tol=1e-14)


@given(probability_vectors(n=(4, 8), sparse=True))
def test_sparse_probability_vectors_have_tiny_entries(s):
    assert min(s) <= 1e-2 and max(s) >= 1.0 / len(s) and math.isclose(sum(s), 1.0, abs_tol=1e-14)


@pytest.mark.parametrize("tid", ["I25.interlacing", "I25.sparsity", "S24.thm1.rank", "S24.thm1.pl_bound_paper",
                                 "Q25.residual", "H24.normsoftmax_std_gradient"])
def test_instances_satisfy_the_assumptions(tid):
    thm = get_theorem(tid)

    @settings(max_examples=10)
    @given(instances(tid))
    def inner(inst):
        assert all(a.holds for a in thm.assumptions(inst))

    inner()


def test_instances_unknown_id():
    with pytest.raises(ValueError, match="unknown theorem id"):
        instances("nope")


@given(attention_configs(N=(2, 3), n=(2, 3), D=(1, 4), H=(1, 2), hd_below_nn=True))
def test_hd_below_nn(cfg):
    assert cfg.HD < cfg.Nn


def test_violating_strategies_violate_exactly_one_assumption():
    from proofs_check.theorems import entry, violating_instances

    def run(tid: str, name: str) -> None:
        thm = get_theorem(tid)

        @settings(max_examples=5)
        @given(violating_instances(tid, name))
        def inner(inst):
            held = {a.name: a.holds for a in thm.assumptions(inst)}
            assert held[name] is False and all(v for k, v in held.items() if k != name)

        inner()

    for tid in ("S24.thm1.rank", "S24.thm1.pl_bound_paper", "Q25.residual"):
        for name in entry(tid).violations:
            run(tid, name)
    with pytest.raises(ValueError, match="registers no violating strategy"):
        violating_instances("S24.thm1.rank", "nope")
