"""``attncond sweep``: real local dask clusters (workers on loopback), Ctrl-C mid-way, damaged rows,
two concurrent writers on one CSV, foreign CSVs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attncond.cli import main
from attncond.sweep import (
    COLUMNS,
    COLUMNS_V1,
    CsvLog,
    grid_fingerprint,
    load_grid,
    plot_results,
    read_results,
    row_checksum,
    row_key,
    run_sweep,
)

pytest.importorskip("dask.distributed")
psutil = pytest.importorskip("psutil")

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
TINY = '[grid]\nkernel = ["softmax", "gaussian"]\nN = [2]\nn = [2]\nH = [1]\nD = [2]\nseed = [0, 1, 2, 3]\n' \
       '[fixed]\nd = 1\nhessian = false\n'


def _strict(text: str):
    def no(name):
        raise AssertionError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=no)


def _cmd(grid: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attncond.cli", "sweep", str(grid), "--out", str(out), "--json", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _alive(p) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_sweep_interrupted_damaged_and_resumed_on_existing_scheduler(tmp_path, capsys):
    """Run 1: default LocalCluster (2 worker processes) in a subprocess, SIGINT to the driver
    alone after >= 3 rows: exit 130 with one line, its workers gone, every written row kept.
    Then one row is edited, a torn line and a duplicate are added. Run 2: ``--scheduler`` of a
    real 2-worker loopback cluster: the damaged lines go to ``.rejected`` and are recomputed."""
    from dask.distributed import LocalCluster

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "results.csv"
    expected = set(load_grid(grid).keys())
    assert len(expected) == N_ROWS
    proc = subprocess.Popen(_cmd(grid, out), cwd=ROOT, env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
        workers = psutil.Process(proc.pid).children(recursive=True)
        before = out.read_bytes()
        os.kill(proc.pid, signal.SIGINT)  # the driver only: it must stop its workers itself
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 130
    assert stderr.decode() == "attncond: interrupted\n" and stdout == b""
    assert workers, "the LocalCluster should have worker processes"
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)
    data = out.read_bytes()
    assert data.startswith(before) and data.endswith(b"\n")  # nothing finished was lost
    first = read_results(out)
    assert 3 <= len(first) < N_ROWS, len(first)
    assert all(r["status"] == "ok" and r["grid"] == load_grid(grid).fingerprint for r in first)
    assert len({r["key"] for r in first}) == len(first)

    lines = _lines(out)
    edited = lines[2].replace(b",ok,", b",OK,")  # a hand edit of row 2
    assert edited != lines[2]
    out.write_bytes(b"".join([lines[0], lines[1], edited, *lines[3:], lines[1][:50] + b"\n", lines[3]]))
    png = tmp_path / "k.png"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://127.0.0.1:")
        assert len(cluster.workers) == 2
        rc = main(["sweep", str(grid), "--out", str(out), "--json", "--scheduler", addr, "--plot", str(png)])
    cap = capsys.readouterr()
    summary = _strict(cap.out)["summary"]
    assert rc == 0
    assert summary["scheduler"] == addr and summary["rejected"] == 3
    assert "3 damaged line(s)" in cap.err
    assert summary["skipped"] == len(first) - 1 and summary["written"] == N_ROWS - len(first) + 1
    rejected = Path(summary["rejected_file"]).read_text()
    for why in ("checksum mismatch", "fields, expected", "duplicate of the row on line 4"):
        assert why in rejected, why
    final = read_results(out)
    keys = [r["key"] for r in final]
    assert len(keys) == len(set(keys)) == N_ROWS and set(keys) == expected
    assert _lines(out)[: 2] == lines[:2] and _lines(out)[2:len(first)] == lines[3:len(first) + 1]
    assert final[: len(first) - 1] == [first[0], *first[2:]]  # the verified rows kept, in order
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
    snapshot = out.read_bytes()
    again = run_sweep(load_grid(grid), out, scheduler="tcp://127.0.0.1:9")
    assert again.skipped == N_ROWS and again.written == 0 and out.read_bytes() == snapshot


def test_two_concurrent_sweeps_on_one_csv_write_each_row_once(tmp_path):
    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY)
    out = tmp_path / "shared.csv"
    expected = set(load_grid(grid).keys())
    procs = [subprocess.Popen(_cmd(grid, out, "--workers", "1"), cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, results, strict=True):
        assert p.returncode == 0, e.decode()[-2000:]
    summaries = [_strict(o.decode())["summary"] for o, _ in results]
    rows = read_results(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
    assert len(_lines(out)) == 1 + len(expected)  # no unverified extra lines either
    assert sum(s["written"] for s in summaries) == len(expected)
    for s in summaries:
        assert s["skipped"] + s["written"] + s["by_other_writer"] == s["total"] == len(expected)
        assert s["rejected"] == 0


_WRITER = """
import random, sys, time
from pathlib import Path
from attncond.sweep import CsvLog
out, fp, seed, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
log = CsvLog(out, fp)
keys = [f"k{i:04d}" for i in range(int(sys.argv[5]))]
random.Random(seed).shuffle(keys)
while not go.exists():
    time.sleep(0.001)
log.open()
print(sum(log.append({"key": k, "status": "ok", "seconds": i}) for i, k in enumerate(keys)))
"""


def test_two_processes_appending_the_same_keys_never_duplicate(tmp_path):
    """The lock covers check-and-write: two writers racing over the same 80 keys."""
    out, go, n = tmp_path / "race.csv", tmp_path / "go", 80
    fp = grid_fingerprint(f"k{i:04d}" for i in range(n))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(out), fp, str(seed), str(go), str(n)],
                              cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for seed in (1, 2)]
    time.sleep(0.5)
    go.touch()
    written = []
    for p in procs:
        o, e = p.communicate(timeout=120)
        assert p.returncode == 0, e.decode()
        written.append(int(o))
    rows = read_results(out)
    assert sum(written) == n == len(rows) == len({r["key"] for r in rows})
    assert len(_lines(out)) == n + 1


def _fake_row(key: str, **kw) -> dict:
    return {c: "" for c in COLUMNS} | {"key": key, "status": "ok", "seconds": 0.5} | kw


def test_torn_edited_duplicated_and_unterminated_rows_are_rejected_and_recomputed(tmp_path):
    out = tmp_path / "r.csv"
    log = CsvLog(out, "f" * 16)
    assert log.open() == set()
    for k in ("a", "b", "c"):
        assert log.append(_fake_row(k, mu=1.25))
    assert not log.append(_fake_row("a"))  # done: nothing written
    lines = _lines(out)
    torn = lines[1][: len(lines[1]) // 2] + b"\n"  # a torn line *followed by a newline*
    edited = lines[2].replace(b"1.25", b"1.26")
    out.write_bytes(b"".join([lines[0], lines[1], edited, lines[3], torn, lines[3], b"c,half"]))
    assert CsvLog(out, "f" * 16).peek() == {"a", "c"}  # read-only look
    log2 = CsvLog(out, "f" * 16)
    assert log2.open() == {"a", "c"}
    reasons = [r.reason for r in log2.rejected]
    assert reasons == ["checksum mismatch (torn or edited row)",
                       f"{torn.count(b',') + 1} fields, expected {len(COLUMNS)} (torn row?)",
                       "duplicate of the row on line 4", "incomplete last line (no newline)"]
    assert [r.line for r in log2.rejected] == [3, 5, 6, 7]
    assert _lines(out) == [lines[0], lines[1], lines[3]]  # rewritten: verified rows only, in order
    text = log2.rejected_path.read_bytes()
    assert edited in text and torn in text and b"c,half" in text
    assert log2.append(_fake_row("b", mu=1.25)) and set(r["key"] for r in read_results(out)) == {"a", "b", "c"}
    # a crash can leave a tail without newline between two looks: the next row goes on its own line
    with open(out, "ab") as fh:
        fh.write(b"zz,torn")
    assert log2.append(_fake_row("d"))
    assert {r["key"] for r in read_results(out)} == {"a", "b", "c", "d"}
    log3 = CsvLog(out, "f" * 16)
    assert log3.open() == {"a", "b", "c", "d"} and [r.text for r in log3.rejected] == [b"zz,torn"]


def test_row_checksum_and_grid_fingerprint():
    cells = ["k", "g", "softmax", 2, 1.5, "W_Q,W_K", ""]
    assert row_checksum(cells) == row_checksum([str(c) for c in cells])  # canonical text, not types
    assert row_checksum(cells) != row_checksum([*cells[:-1], "x"])
    g = load_grid(_write(GRID))
    swapped = GRID.replace('kernel = ["softmax", "gaussian"]', 'kernel = ["gaussian", "softmax"]')
    same = load_grid(_write(swapped))
    more = load_grid(_write(GRID.replace("seed = [0]", "seed = [0, 1]")))
    assert g.fingerprint == same.fingerprint != more.fingerprint


@pytest.mark.parametrize("case", ["other grid", "other columns", "older schema", "folder", "below a file",
                                  "plot folder"])
def test_foreign_csv_or_bad_path_is_refused_before_any_work(tmp_path, capsys, case):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "results.csv"
    extra: list[str] = []
    if case == "other grid":
        other = CsvLog(out, "0123456789abcdef")
        other.open()
        other.append(_fake_row("x"))
        msg = "line 2 belongs to another grid (fingerprint 0123456789abcdef"
    elif case == "other columns":
        out.write_text("a,b\n1,2\n")
        msg = "is not a results CSV of this attncond sweep"
    elif case == "older schema":
        out.write_text(",".join(COLUMNS_V1) + "\n")
        msg = "written by an older attncond sweep (no grid fingerprint, no row checksums)"
    elif case == "folder":
        out = tmp_path / "adir"
        out.mkdir()
        msg = f"--out {out}: is an existing folder"
    elif case == "below a file":
        (tmp_path / "f.txt").write_text("x")
        out = tmp_path / "f.txt" / "r.csv"
        msg = "f.txt is not a folder"
    else:
        extra = ["--plot", str(tmp_path)]
        msg = f"--plot {tmp_path}: is an existing folder"
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    # an unreachable scheduler: had the refusal come after connecting, the message would differ
    rc = main(["sweep", str(grid), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9",
               "--connect-timeout", "1s", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.splitlines()) == 1, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files  # nothing written
    assert not list(tmp_path.rglob("*.png"))


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
    ("[grid]\nN = [2, 99999999999999999999]\n",
     "line 2: key 'grid.N': must be a positive integer <= 2147483647"),
    ("[grid]\nN = [2]\n[fixed]\nseed = 99999999999999999999\n",
     "line 4: key 'fixed.seed': must be a non-negative integer <= 9223372036854775807"),
])
def test_bad_grid_names_line_and_key_and_writes_nothing(tmp_path, capsys, text, msg):
    grid = tmp_path / "g.toml"
    grid.write_text(text)
    out = tmp_path / "never.csv"
    assert main(["sweep", str(grid), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and str(grid) in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_grid_device_must_exist_here_unless_a_scheduler_runs_it(tmp_path, capsys):
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this torch build has CUDA")
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nN = [2]\n[fixed]\ndevice = "cuda"\n')
    out = tmp_path / "never.csv"
    assert main(["sweep", str(grid), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "device cuda: this torch build has no CUDA support" in err and len(err.splitlines()) == 1
    assert not out.exists()
