"""``attncond diagnose``: default table, JSON, plot, TOML config and bad input."""

from __future__ import annotations

import json

import pytest

from attncond.cli import main


def test_default_run_shows_softmax_gaussian_residual_and_plain(capsys):
    assert main(["diagnose", "--no-hessian"]) == 0
    out = capsys.readouterr().out
    header = [ln for ln in out.splitlines() if ln.startswith("diagnostic")][0]
    assert "softmax" in header and "gaussian" in header
    for label in ("κ(B0)", "μ = λmin(JJᵀ)", "β_paper ≤ μ", "κ(Z res)", "κ(Z plain)", "Weyl",
                  "κ(J(s)) on 1⊥"):
        assert label in out, label
    assert "gaussian: kernel 'gaussian' is not a row softmax" in out


def test_json_plot_and_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('kernels = ["softmax"]\nN = 2\nn = 3\nD = 6\nd = 2\nH = 2\nresidual = "off"\n'
                   'regime = "near_uniform"\nhessian = false\n')
    png = tmp_path / "s.png"
    assert main(["diagnose", "--config", str(cfg), "--seed", "3", "--json", "--plot", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    conf = data["config"]
    assert conf["seed"] == 3 and conf["N"] == 2 and conf["regime"] == "near_uniform"
    res = data["results"]["softmax"]
    assert set(res) == {"mh", "block"}
    keys = {r["key"] for r in res["block"]["rows"]}
    assert "z.plain.kappa" in keys and "z.res.kappa" not in keys  # residual = off
    mh = {r["key"]: r for r in res["mh"]["rows"]}
    assert mh["pl.mu"]["value"] >= mh["pl.corrected_bound"]["value"]
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("text,msg", [
    ("N = 4\nn = -2\n", "line 2: key 'n': must be a positive integer, got -2"),
    ("N = 4\nheads = 2\n", "line 2: key 'heads': unknown key"),
    ("N = 4\nn = \n", "line 2: malformed TOML"),
    ("[model]\nN = 4\n", "line 1: key 'model': tables are not allowed"),
])
def test_bad_config_names_line_and_key(tmp_path, capsys, text, msg):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["diagnose", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert msg in err and "bad.toml" in err


def test_bad_flags_exit_2(capsys):
    assert main(["diagnose", "--kernels", "softmaks"]) == 2
    assert "unknown kernel 'softmaks'" in capsys.readouterr().err
    assert main(["diagnose", "--residual", "sometimes"]) == 2
    assert "key 'residual': must be one of" in capsys.readouterr().err


def test_progress_bar_appears_only_on_runs_longer_than_a_second(capsys):
    import time

    from attncond.progress import progress

    assert list(progress(range(3), desc="quick-job")) == [0, 1, 2]
    assert "quick-job" not in capsys.readouterr().err
    for _ in progress(range(3), desc="slow-job", total=3):
        time.sleep(0.45)
    assert "slow-job" in capsys.readouterr().err
    assert list(progress(range(2), desc="off", disable=True)) == [0, 1]
