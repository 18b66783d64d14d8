"""Bad input to the diagnostics of users' own models (audit A6): ``jacobian_conditioning`` and ``diagnose``
on an :class:`~attncond.models.AdaptedModel` refuse it before any work, naming the argument, where they
certified ``J = 0`` for a misspelt parameter name, raised torch's internal errors, or turned a bad ``y``
or ``tol`` into undefined rows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import attncond.spectral.diagnostics.foreign as foreign
from attncond.models import adapt
from attncond.spectral.diagnostics import diagnose
from attncond.spectral.diagnostics.foreign import diagnose_adapted, jacobian_conditioning

F64 = torch.float64


def _adapted():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    X = torch.randn(2, 4, 8, dtype=F64)
    return mha, X, adapt(mha, X, params="in_proj_weight")


def _no_work(monkeypatch):
    """Any Jacobian or Hessian work fails the test: the refusal must come first."""
    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(foreign, "JacobianOperator", boom)
    monkeypatch.setattr(foreign, "hessian_extremes", boom)


# --------------------------------------------------------------------------- params of jacobian_conditioning
def test_a_misspelt_parameter_name_is_refused_not_certified_zero(monkeypatch):
    mha, _, a = _adapted()
    W = mha.in_proj_weight.detach().clone()
    _no_work(monkeypatch)
    for params in ({"in_proj_weigh": W}, {"in_proj_weight": W, "in_proj_weigh": W}):
        with pytest.raises(ValueError, match=r"params has 1 name\(s\) that are not parameters of "
                                             r"MultiheadAttention: \['in_proj_weigh'\].*did you mean "
                                             r"'in_proj_weight'.*Its parameters \(named_parameters\(\)\) are: "
                                             r"in_proj_weight, in_proj_bias, out_proj\.weight, out_proj\.bias"):
            jacobian_conditioning(a, params=params)


class _Extra(nn.Module):
    """Attention with a parameter the output does not read."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(4, 4, bias=False, dtype=F64) for _ in range(3))
        self.extra = nn.Linear(4, 4, bias=False, dtype=F64)
        self.sm = nn.Softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sm(self.q(x) @ self.k(x).transpose(-1, -2)) @ self.v(x)


def test_a_known_parameter_the_output_does_not_use_keeps_the_structural_zero_path():
    torch.manual_seed(1)
    mod = _Extra()
    a = adapt(mod, torch.randn(2, 3, 4, dtype=F64), probs_module="sm")
    E = mod.extra.weight.detach().clone()
    jc = jacobian_conditioning(a, params={"extra.weight": E})
    assert jc.route == "none (J = 0 structurally)" and jc.converged
    assert jc.sigma_max == 0.0 and jc.shape == (24, 16) and jc.null_dim == 16
    both = jacobian_conditioning(a, params={"q.weight": mod.q.weight.detach().clone(), "extra.weight": E})
    assert both.shape == (24, 16) and both.sigma_max > 0  # the unused columns are left out, with the reason
    assert "does not depend on ['extra.weight']" in both.reason


@pytest.mark.parametrize("value, exc, match", [
    (torch.zeros(3, 3, dtype=F64), ValueError,
     r"params\['in_proj_weight'\] has shape \(3, 3\), the module's in_proj_weight has \(24, 8\)"),
    ("float32", TypeError, r"params\['in_proj_weight'\] has dtype torch.float32, the module's in_proj_weight "
                           r"has torch.float64; cast it with \.to\(torch.float64\)"),
    ("nan", ValueError, r"params\['in_proj_weight'\] contains non-finite values \(192 NaN, 0 inf\)"),
    ("numpy", TypeError, r"params\['in_proj_weight'\] must be a torch tensor of shape \(24, 8\), dtype "
                         r"torch.float64, got ndarray"),
    ([[0.0]], TypeError, r"params\['in_proj_weight'\] must be a torch tensor"),
])
def test_a_params_value_of_the_wrong_kind_names_the_parameter(monkeypatch, value, exc, match):
    mha, _, a = _adapted()
    W = mha.in_proj_weight.detach().clone()
    value = {"float32": W.float(), "nan": W * math.nan, "numpy": W.numpy()}.get(value, value) \
        if isinstance(value, str) else value
    _no_work(monkeypatch)
    with pytest.raises(exc, match=match):
        jacobian_conditioning(a, params={"in_proj_weight": value})


def test_params_must_be_a_non_empty_mapping(monkeypatch):
    mha, _, a = _adapted()
    _no_work(monkeypatch)
    with pytest.raises(TypeError, match="params must be a mapping"):
        jacobian_conditioning(a, params=[mha.in_proj_weight.detach()])
    with pytest.raises(ValueError, match="params must hold at least one parameter"):
        jacobian_conditioning(a, params={})


# --------------------------------------------------------------------------- flags and the model
@pytest.mark.parametrize("kw, match", [
    ({"per_sample": "no"}, "per_sample must be True or False or None, got 'no'"),
    ({"per_sample": 1}, "per_sample must be True or False or None, got 1"),
    ({"keep_spectrum": "no"}, "keep_spectrum must be True or False, got 'no'"),
    ({"keep_spectrum": None}, "keep_spectrum must be True or False, got None"),
])
def test_flags_must_be_bools(monkeypatch, kw, match):
    _, _, a = _adapted()
    _no_work(monkeypatch)
    with pytest.raises(TypeError, match=match):
        jacobian_conditioning(a, **kw)


def test_flags_that_are_bools_are_taken():
    _, _, a = _adapted()
    jc = jacobian_conditioning(a, per_sample=False, keep_spectrum=False)
    assert not jc.per_sample and jc.per_sample_reason == "per_sample=False" and jc.singular_values is None


def test_jacobian_conditioning_needs_an_adapted_model():
    mha, _, _ = _adapted()
    with pytest.raises(TypeError, match=r"model must be an attncond.models.AdaptedModel \(models.adapt"):
        jacobian_conditioning(mha)


# --------------------------------------------------------------------------- diagnose
@pytest.mark.parametrize("y, exc, match", [
    (torch.zeros(3, dtype=F64), ValueError,
     r"y must have the output's shape \(2, 4, 8\) \(or be its vec, 64 entries\), got shape \(3,\)"),
    (torch.zeros(8, 4, 2, dtype=F64), ValueError, r"y must have the output's shape \(2, 4, 8\).*\(8, 4, 2\)"),
    (torch.full((2, 4, 8), math.nan, dtype=F64), ValueError, r"y contains non-finite values \(64 NaN, 0 inf\)"),
    (torch.full((2, 4, 8), math.inf, dtype=F64), ValueError, r"y contains non-finite values \(0 NaN, 64 inf\)"),
    (torch.zeros(2, 4, 8), TypeError, r"y has dtype torch.float32 but torch.float64 is expected"),
    ("zeros", TypeError, "y must be a numpy array or torch tensor, got str"),
])
def test_diagnose_refuses_bad_targets_before_any_work(monkeypatch, y, exc, match):
    _, _, a = _adapted()
    _no_work(monkeypatch)
    with pytest.raises(exc, match=match):
        diagnose(a, y=y)
    with pytest.raises(exc, match=match):
        diagnose(a, y=y, hessian=False)  # a y given is checked even where it is not used


@pytest.mark.parametrize("tol, exc", [(-1.0, ValueError), (0.0, ValueError), (math.nan, ValueError),
                                      (math.inf, ValueError), ("1e-8", TypeError), (True, TypeError)])
def test_diagnose_refuses_a_bad_tol_before_any_work(monkeypatch, tol, exc):
    _, _, a = _adapted()
    _no_work(monkeypatch)
    with pytest.raises(exc, match="tol must be a"):
        diagnose(a, tol=tol)


@pytest.mark.parametrize("kw, match", [
    ({"spectra": "no"}, "spectra must be True or False, got 'no'"),
    ({"per_layer": 1}, "per_layer must be True or False, got 1"),
    ({"per_sample": "yes"}, "per_sample must be True or False or None, got 'yes'"),
    ({"hessian": "yes"}, "hessian must be True or False or None, got 'yes'"),
])
def test_diagnose_adapted_flags_must_be_bools(monkeypatch, kw, match):
    _, _, a = _adapted()
    _no_work(monkeypatch)
    with pytest.raises(TypeError, match=match):
        diagnose_adapted(a, **kw)


def test_diagnose_adapted_refuses_an_unknown_method_and_trainable_names_itself(monkeypatch):
    _, _, a = _adapted()
    _no_work(monkeypatch)
    with pytest.raises(ValueError, match="unknown method 'fast'; known: 'auto', 'dense', 'gram', 'certified'"):
        diagnose_adapted(a, method="fast")
    with pytest.raises(TypeError, match="trainable must be a parameter-name pattern"):
        diagnose_adapted(a, trainable=3)
    with pytest.raises(ValueError, match="trainable pattern 'in_proj_weigh' matches no parameter"):
        diagnose_adapted(a, trainable="in_proj_weigh")


def test_targets_of_the_output_shape_or_its_vec_give_one_hessian():
    _, _, a = _adapted()
    y = torch.randn(2, 4, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    shaped, flat = diagnose(a, y=y), diagnose(a, y=y.reshape(-1))
    for d in (shaped, flat):
        assert d.row("hessian.lambda_max").defined and d.row("jac.kappa").defined
    assert shaped.row("hessian.lambda_max").value == flat.row("hessian.lambda_max").value
    assert shaped.row("hessian.lambda_min").value == flat.row("hessian.lambda_min").value
