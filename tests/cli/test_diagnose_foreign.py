"""``attncond diagnose --model`` / ``--hf-config`` and the examples/ scripts, run as written."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

from attncond.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def on_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def _strict(text: str):
    def bad(c):
        raise ValueError(f"non-strict JSON constant {c}")
    return json.loads(text, parse_constant=bad)


def test_model_factory_table_json_and_plot(on_root, tmp_path, capsys):
    assert main(["diagnose", "--model", "examples.mha:factory", "--params", "in_proj_weight"]) == 0
    out = capsys.readouterr().out
    assert "per layer and head" in out and "padding+causal" in out and "μ = λmin(JJᵀ)" in out
    png = tmp_path / "f.png"
    assert main(["diagnose", "--model", "examples.mha:factory", "--params", "in_proj_weight", "--json",
                 "--plot", str(png)]) == 0
    data = _strict(capsys.readouterr().out)
    rows = {r["key"]: r for r in data["diagnostics"]["rows"]}
    assert data["model"]["params"] == ["in_proj_weight"]
    assert rows["jac.kappa"]["value"] == "inf" and rows["jac.null_dim"]["value"] > 0  # causal row 0
    assert math.isfinite(rows["softmaxJ.kappa_max"]["value"])
    assert png.stat().st_size > 1000


def test_hf_config_random_init(on_root, capsys):
    pytest.importorskip("transformers")
    assert main(["diagnose", "--hf-config", "examples/vit_config.json", "--params", "*attention.q_proj.weight",
                 "--N", "2", "--json"]) == 0
    data = _strict(capsys.readouterr().out)
    assert data["model"]["family"] == "hf" and data["model"]["inputs"] == [[2, 1, 8, 8]]
    jc = data["diagnostics"]["foreign"]["jacobian"]
    assert jc["shape"] == [2 * 5 * 16, 16 * 16] and jc["sigma_max"] > 0


@pytest.mark.parametrize("argv, msg", [
    (["--model", "nocolon"], "PKG.MODULE:FACTORY"),
    (["--model", "examples.mha:nope"], "no callable 'nope'"),
    (["--model", "examples.mha:factory", "--params", "*.query.weight"], "matches no parameter"),
    (["--hf-config", "missing.json"], "file not found"),
    (["--weights", "somewhere"], "--params and --weights go with --model or --hf-config"),
    (["--model", "examples.mha:factory", "--weights", "w"], "--weights goes with --hf-config"),
])
def test_bad_model_specs_one_line_error(on_root, capsys, argv, msg):
    assert main(["diagnose", *argv]) != 0
    err = capsys.readouterr().err
    assert msg in err


@pytest.mark.parametrize("script", ["mha", "bert_layer", "gpt2_causal", "vit_block"])
def test_examples_run_as_written(on_root, capsys, monkeypatch, script):
    if script != "mha":
        pytest.importorskip("transformers")
    monkeypatch.setattr(sys, "argv", [f"examples/{script}.py"])
    runpy.run_path(str(ROOT / "examples" / f"{script}.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "μ = λmin(JJᵀ)" in out and "κ(J(s)) on 1⊥ of the support" in out
