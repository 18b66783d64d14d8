"""``attncond check``: table, JSON, findings, power, strict exit, replay, user claims, plot, errors."""

from __future__ import annotations

import json
from pathlib import Path

from attncond.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_check_one_theorem_json(capsys):
    assert main(["check", "I25.interlacing", "--examples", "15", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = out["theorems"]["I25.interlacing"]
    assert r["tried"] == 15 and r["passed"] == 15 and r["failed"] == 0 and r["verdict"] == "held"
    assert r["theorem"]["exact"] is True and r["worst_margin"] > 0
    lo, hi = r["failure_interval_95"]
    assert lo == 0.0 and 0.1 < hi < 0.3  # Clopper-Pearson for 0/15
    assert r["theorem"]["paper_statement"].count("MATH.md §5") == 1


def test_check_reports_finding_with_variant_and_strict_exits_1(capsys):
    """Old behaviour: --strict exited 0 with a finding although the README says non-zero."""
    assert main(["check", "S24.thm1.pl_bound_paper.V", "--examples", "30"]) == 0
    text = capsys.readouterr().out
    assert "S24.thm1.pl_bound_paper.V" in text and "finding" in text
    assert "FINDING:" in text and "the variant that holds: S24.thm1.pl_bound" in text
    assert "counterexample (shrunk" in text and "AttentionConfig(" in text
    assert main(["check", "S24.thm1.pl_bound_paper.V", "--examples", "30", "--strict", "--no-shrink"]) == 1
    assert main(["check", "I25.interlacing", "--examples", "10", "--strict"]) == 0


def test_check_power_column_and_variants(capsys):
    assert main(["check", "S24.thm1.rank", "--examples", "10", "--power", "--power-examples", "5"]) == 0
    text = capsys.readouterr().out
    assert "power" in text.splitlines()[1]
    assert "S24.thm1.rank~without[HD >= Nn]: needed on 5/5" in text
    # 10 draws, one of them a repeat of an earlier instance: 9 distinct instances, each counted once
    assert "S24.thm1.rank~flipped: caught on 9/9" in text
    assert "S24.thm1.rank: 1 draws repeated an earlier instance and are counted once" in text


def test_save_and_replay_counterexample_cli(tmp_path, capsys):
    assert main(["check", "S24.thm1.pl_bound_paper.V", "--examples", "20", "--no-shrink",
                 "--save-counterexamples", str(tmp_path)]) == 0
    capsys.readouterr()
    files = sorted(tmp_path.glob("*.npz"))
    assert files
    assert main(["check", "--replay", str(files[0]), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["same_margin"] and r["tensors_match"] and r["margin"] == r["stored_margin"] < 0
    assert main(["check", "S24.thm1.pl_bound_paper.V", "--replay", str(files[0])]) == 0
    assert "margin: " in capsys.readouterr().out
    assert main(["check", "Q25.rate", "--replay", str(files[0])]) == 2
    assert "not Q25.rate" in capsys.readouterr().err


def test_database_dir_is_used(tmp_path, capsys):
    db = tmp_path / "hyp"
    assert main(["check", "S24.thm1.pl_bound_paper.V", "--examples", "10", "--database", str(db)]) == 0
    assert db.is_dir() and any(db.rglob("*"))  # the failing example was stored


def test_users_claim_runs_with_power_and_vacuity(capsys):
    from proofs_check.theorems import unregister

    try:
        assert main(["check", "--load", str(ROOT / "docs/examples/user_claim.py"), "user.kappa_z_weyl",
                     "--power", "--examples", "12", "--power-examples", "4"]) == 0
        text = capsys.readouterr().out
        assert "user.kappa_z_weyl" in text and "vacuous on" in text and "~bound×10: caught on" in text
    finally:
        unregister("user.kappa_z_weyl")


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
    assert main(["check", "--replay", "/nonexistent.npz"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_check_output_paths_are_checked_before_the_search(tmp_path, capsys):
    """Old behaviour: --plot into a missing folder failed after the search with '[Errno 2] No such file or
    directory' (no flag named); --save-counterexamples / --database below a file were accepted (the save
    failed after the search, or never ran); a broken --load file gave 'NameError: ...' without the flag."""
    png = tmp_path / "new" / "sub" / "rate.png"
    assert main(["check", "Q25.rate", "--examples", "1", "--no-shrink", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000
    capsys.readouterr()
    afile = tmp_path / "afile"
    afile.write_text("x")
    for flag in ("--save-counterexamples", "--database"):
        for target in (afile, afile / "sub"):
            assert main(["check", "I25.interlacing", "--examples", "2", flag, str(target)]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"attncond check: error: {flag} {target}") and "folder" in err
    bad = tmp_path / "bad.py"
    bad.write_text("garbage\n")
    assert main(["check", "--load", str(bad), "I25.interlacing", "--examples", "2"]) == 2
    assert f"--load {bad}: NameError" in capsys.readouterr().err
