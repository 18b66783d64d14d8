"""``attncond check``: table, JSON, findings, plot, errors."""

from __future__ import annotations

import json

from attncond.cli import main


def test_check_one_theorem_json(capsys):
    assert main(["check", "I25.interlacing", "--examples", "15", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = out["theorems"]["I25.interlacing"]
    assert r["tried"] == 15 and r["passed"] == 15 and r["failed"] == 0 and r["verdict"] == "held"
    assert r["theorem"]["exact"] is True and r["worst_margin"] > 0


def test_check_reports_finding_with_variant(capsys):
    assert main(["check", "S24.thm1.pl_bound_paper", "--examples", "30"]) == 0
    text = capsys.readouterr().out
    assert "S24.thm1.pl_bound_paper" in text and "finding" in text
    assert "FINDING:" in text and "the variant that holds: S24.thm1.pl_bound" in text
    assert "counterexample (shrunk" in text and "AttentionConfig(" in text


def test_check_plot_rate(tmp_path, capsys):
    png = tmp_path / "rate.png"
    assert main(["check", "Q25.rate", "--examples", "3", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert "Q25.rate" in capsys.readouterr().out


def test_check_unknown_theorem_exits_2(capsys):
    assert main(["check", "S24.thm7"]) == 2
    assert "unknown theorem id 'S24.thm7'" in capsys.readouterr().err
    assert main(["check", "all", "--examples", "0"]) == 2
    assert "--examples must be a positive integer" in capsys.readouterr().err
