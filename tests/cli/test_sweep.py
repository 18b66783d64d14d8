"""``attncond sweep``: real local dask cluster (2 workers on loopback), kill mid-way, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attncond.cli import main
from attncond.sweep import COLUMNS, CsvLog, load_grid, plot_results, row_key, run_sweep

pytest.importorskip("dask.distributed")

ROOT = Path(__file__).resolve().parents[2]
GRID = """
[grid]
kernel = ["softmax", "gaussian"]
N = [2, 3]
n = [3]
H = [1, 2]
D = [4]
init_scale = [0.5, 1.0]
seed = [0]

[fixed]
d = 2

[plot]
x = "init_scale"
y = "kappa_Z_plain"
"""
N_ROWS = 2 * 2 * 2 * 2


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _cmd(grid: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attncond.cli", "sweep", str(grid), "--out", str(out), "--json", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_sweep_killed_midway_resumes_on_existing_scheduler(tmp_path, capsys):
    """Run 1: default LocalCluster (2 worker processes on 127.0.0.1) in a subprocess, SIGKILLed
    with its workers after >= 3 rows. Run 2: ``--scheduler`` pointing at a real 2-worker
    loopback cluster started here; it must skip the finished rows and write only the rest."""
    from dask.distributed import LocalCluster

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "results.csv"
    expected = set(load_grid(grid).keys())
    assert len(expected) == N_ROWS
    proc = subprocess.Popen(_cmd(grid, out), cwd=ROOT, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 4:  # header + 3 rows
                break
            if proc.poll() is not None:
                pytest.fail(f"sweep exited early with rc={proc.returncode}")
            time.sleep(0.01)
        else:
            pytest.fail("no rows appeared within 150 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its dask worker processes
        proc.wait(timeout=30)
    first = _rows(out)
    assert 3 <= len(first) < N_ROWS, len(first)
    assert out.read_bytes().endswith(b"\n")
    assert all(r["status"] == "ok" for r in first)
    assert len({r["key"] for r in first}) == len(first)

    png = tmp_path / "k.png"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://127.0.0.1:")
        assert len(cluster.workers) == 2
        rc = main(["sweep", str(grid), "--out", str(out), "--json", "--scheduler", addr, "--plot", str(png)])
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert rc == 0
    assert summary["scheduler"] == addr
    assert summary["skipped"] == len(first) and summary["written"] == N_ROWS - len(first)
    final = _rows(out)
    keys = [r["key"] for r in final]
    assert len(keys) == len(set(keys)) == N_ROWS and set(keys) == expected
    assert final[: len(first)] == first  # nothing rewritten
    for r in final:
        assert r["kernel"] in ("softmax", "gaussian") and r["status"] == "ok"
        assert float(r["kappa_Z_res"]) >= 1.0 and float(r["kappa_Z_plain"]) >= 1.0
        assert float(r["mu"]) >= float(r["corrected_bound"]) - 1e-12
    assert png.stat().st_size > 1000
    series = plot_results(out, tmp_path / "k2.png", "init_scale", "kappa_Z_plain")
    assert set(series) == {"softmax", "gaussian"}  # one line per kernel
    for k, (xs, ys) in series.items():
        assert xs == [0.5, 1.0]
        vals = sorted(float(r["kappa_Z_plain"]) for r in final if r["kernel"] == k and r["init_scale"] == "0.5")
        assert ys[0] == vals[len(vals) // 2]
    # a third run has nothing to do: no cluster is started, nothing is written
    again = run_sweep(load_grid(grid), out, scheduler="tcp://127.0.0.1:9")
    assert again.skipped == N_ROWS and again.written == 0 and _rows(out) == final


def test_unreachable_scheduler_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "never.csv"
    rc = main(["sweep", str(grid), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9",
               "--connect-timeout", "1s"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot connect to the dask scheduler 'tcp://127.0.0.1:9'" in err
    assert not out.exists()


def test_csvlog_drops_torn_line_and_refuses_duplicates(tmp_path):
    out = tmp_path / "r.csv"
    log = CsvLog(out)
    assert log.open() == set()
    row = {c: "" for c in COLUMNS} | {"key": "abc", "status": "ok"}
    assert log.append(row) and not log.append(row)
    with open(out, "ab") as fh:
        fh.write(b"def,softmax,4")  # a torn line without newline
    log2 = CsvLog(out)
    assert log2.open() == {"abc"}
    assert out.read_bytes().count(b"\n") == 2 and out.read_bytes().endswith(b"\n")
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="exists with other columns"):
        CsvLog(bad).open()


def test_row_key_depends_on_every_parameter():
    g = load_grid(_write(GRID))
    keys = g.keys()
    assert len(set(keys)) == len(keys)
    r = dict(g.rows[0])
    assert row_key(r) == keys[0]
    r["d"] = 3
    assert row_key(r) != keys[0]


_TMP: list[Path] = []


def _write(text: str) -> Path:
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".toml")
    os.write(fd, text.encode())
    os.close(fd)
    _TMP.append(Path(name))
    return Path(name)


@pytest.mark.parametrize("text,msg", [
    ("[grid]\nkernel = [\"softmax\"\nN = [2]\n", "line 3: malformed TOML: Unclosed array"),
    ("[grid]\nkernel = [\"softmax\"]\nn = [4, -3]\n",
     "line 3: key 'grid.n': must be a positive integer, got -3"),
    ("[grid]\nN = [2]\nheads = [2]\n", "line 3: key 'grid.heads': unknown grid key"),
    ("[grid]\nN = [2]\n[fixed]\nregime = \"medium\"\n", "line 4: key 'fixed.regime': must be one of"),
    ("[grid]\nN = []\n", "line 2: key 'grid.N': empty list"),
    ("[grid]\nkernel = [\"softmaks\"]\n", "line 2: key 'grid.kernel': unknown kernel 'softmaks'"),
    ("[grids]\nN = [2]\n", "line 1: key 'grids': unknown key or table"),
    ("[grid]\nN = [2]\n[plot]\nx = \"regime\"\n", "line 4: key 'plot.x': must be a numeric grid key"),
    ("[grid]\nN = [2]\n[plot]\ny = \"kappa\"\n", "line 4: key 'plot.y': must be one of"),
])
def test_bad_grid_names_line_and_key_and_writes_nothing(tmp_path, capsys, text, msg):
    grid = tmp_path / "g.toml"
    grid.write_text(text)
    out = tmp_path / "never.csv"
    assert main(["sweep", str(grid), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and str(grid) in err
    assert not out.exists()
