"""``attncond reproduce`` on the command line: report files, figures, numbers, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from attncond.cli import main


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_reproduce_q25_writes_report_figures_and_numbers(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["reproduce", "Q25", "--size", "smoke", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "[Q25]" in text and f"wrote {out / 'index.md'}" in text
    def strict(name):
        raise AssertionError(f"results.json is not strict JSON: {name}")

    data = json.loads((out / "results.json").read_text(encoding="utf-8"), parse_constant=strict)
    assert data["command"] == f"attncond reproduce Q25 --size smoke --out {out}"
    q = data["experiments"]["Q25"]
    assert q["size"] == "smoke" and q["config"]["steps"] == 60
    for s, v in q["numbers"]["kappa_vs_scale"].items():
        assert v["residual"] < v["plain"], s
    assert q["numbers"]["weyl"]["holds"] == q["numbers"]["weyl"]["points"]
    md = (out / "index.md").read_text(encoding="utf-8")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["q25_gd_curves.png", "q25_kappa.png", "q25_rate.png"]
    assert [f["path"] for f in q["figures"]] == ["q25_kappa.png", "q25_gd_curves.png", "q25_rate.png"]
    for name in pngs:
        assert f"]({name})" in md
        size = (out / name).stat().st_size
        assert 5_000 < size < 500_000, (name, size)
    for f in q["findings"]:
        assert f["claim"] in md and f"**{f['verdict']}**" in md
    assert torch.get_num_threads() == 1  # --threads default


@pytest.mark.parametrize("argv,msg", [
    (["reproduce", "S25", "--size", "smoke"], "unknown experiment 'S25'; known: S24, Q25, I25, H24, all"),
    (["reproduce", "Q25", "--threads", "0"], "--threads must be a positive integer, got 0"),
    (["reproduce", "Q25", "--seed", "-2"], "seed must be a non-negative integer, got -2"),
    (["reproduce", "Q25", "--quick", "--size", "smoke"], "--quick and --size are exclusive"),
])
def test_reproduce_bad_input_exits_2_with_message(argv, msg, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "r")]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "r" / "index.md").exists()


def test_reproduce_unwritable_out_fails_before_running(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("not a folder")
    assert main(["reproduce", "Q25", "--size", "smoke", "--out", str(f)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert main(["reproduce", "Q25", "--size", "smoke", "--out", str(f / "sub")]) == 2
    assert "is not a writable folder" in capsys.readouterr().err
