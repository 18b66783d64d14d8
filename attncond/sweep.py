"""Distributed parameter sweeps of ``attncond diagnose`` (dask.distributed), resumable.

Grid file (TOML)::

    [grid]                 # every combination is one row
    kernel = ["softmax", "gaussian"]
    N = [4, 8]
    n = [4]
    H = [2, 4]
    D = [8]
    init_scale = [0.1, 1.0]
    seed = [0, 1]

    [fixed]                # optional: scalars applied to every row (any diagnose key)
    d = 4
    regime = "default"

    [plot]                 # optional: defaults of --plot
    x = "init_scale"
    y = "kappa_Z_plain"

Grid keys: ``kernel, N, n, H, D, d, init_scale, seed, regime, value_param``. Everything is
validated before anything runs or any file is created; an error names the file, the line and
the key (``grid.toml line 5: key 'grid.n': must be a positive integer, got -3``).

Execution: a ``dask.distributed`` ``LocalCluster`` (2 worker *processes*, 1 thread each,
on 127.0.0.1, no dashboard) by default, or an existing cluster with ``scheduler=ADDRESS``
(its workers must be able to import ``attncond``). Processes rather than threads, because
each row is short Python-heavy torch work that holds the GIL; on a 2-core box two single-threaded
processes use both cores without oversubscription (torch is set to 1 thread per worker).

Results CSV (one row per grid point, one physical line per row): ``key`` (SHA-256 of the row's
canonical JSON parameters), ``grid`` (the grid fingerprint: SHA-256 of the sorted keys of all its
rows), the parameters, the metrics, ``status``, ``seconds`` and ``crc32`` (CRC-32 of the row's
canonical CSV text without that column). We store the fingerprint in every row rather than in a
header comment or a sidecar: the file stays plain CSV for every reader, survives being copied
alone, and the fingerprint is covered by each row's checksum.

Guarantees:

* **Several writers.** Every read that decides what to write, and every write, happens under an
  exclusive ``fcntl.flock`` of the sidecar ``<out>.lock`` (a sidecar, because a repair replaces the
  CSV's inode). Before each append the writer re-reads the rows other writers added since its last
  look and skips a key that is already there; so two sweeps on one CSV never write a row twice
  (each reports ``by_other_writer``), and tasks whose rows the other sweep finished are cancelled.
  ``flock`` needs a local file system (or one whose locks work across clients).
* **Whole rows.** A row is appended as one ``os.write`` on an ``O_APPEND`` descriptor, then
  ``fsync``. If the file ends mid-line (a crash), the row goes after a newline, so the fragment
  stays a line of its own.
* **Checked rows.** At the start of each run (under the lock) every line is verified: field count,
  checksum, grid, duplicate key. Damaged lines (torn, hand-edited, duplicated, an unterminated last
  line) are appended with the reason to ``<out>.rejected``, the CSV is rewritten atomically with
  the verified rows (temporary file, ``fsync``, ``os.replace``), and those rows are recomputed.
* **One grid per file.** A CSV with other columns (another schema, or one written before these
  checksums) or with verified rows of another grid fingerprint is refused with an explanation,
  before any cluster starts or any byte is written.
* **Ctrl-C.** ``KeyboardInterrupt`` cancels the tasks and kills the LocalCluster's worker processes
  (about a second); every row already appended stays, and the next run resumes after them.

Resume: rows whose key is already in the CSV (verified) are skipped. The CSV is read (not created)
first and the cluster is connected before the header is written, so an unreachable ``--scheduler``
or a sweep with nothing left to do writes nothing. We chose append over "temp file +
``os.replace``" per row because rewriting the whole file per row costs O(rows²) I/O.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import signal
import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attncond.spectral.diagnostics.rows import sweep_columns

from .cmd_diagnose import DEFAULTS, VALIDATORS, ConfigError, read_toml, where
from .options import check_output_file

GRID_KEYS: tuple[str, ...] = ("kernel", "N", "n", "H", "D", "d", "init_scale", "seed", "regime", "value_param")
#: grid keys that can be the x-axis of ``--plot`` (numeric).
PLOT_X_KEYS: tuple[str, ...] = ("N", "n", "H", "D", "d", "init_scale", "seed")
PARAM_COLUMNS: tuple[str, ...] = ("kernel", "N", "n", "D", "d", "H", "init_scale", "seed", "regime",
                                  "value_param", "trainable", "residual", "dtype", "device", "hessian", "tau")
#: metric columns and the diagnostic row each reads, from the ROWS table of spectral.diagnostics
_METRIC_ROWS = {col: (kind, key) for col, kind, key in sweep_columns()}
METRICS: tuple[str, ...] = tuple(_METRIC_ROWS)
COLUMNS: tuple[str, ...] = ("key", "grid", *PARAM_COLUMNS, *METRICS, "status", "seconds", "crc32")
#: the columns of results CSVs written before row checksums and grid fingerprints (refused, explained).
COLUMNS_V1: tuple[str, ...] = ("key", *PARAM_COLUMNS, *METRICS, "status", "seconds")


@dataclass(frozen=True)
class Grid:
    """A validated sweep: the full parameter dict of every row, and plot defaults."""

    rows: tuple[dict[str, Any], ...]
    swept: tuple[str, ...]
    plot_x: str | None
    plot_y: str

    def keys(self) -> list[str]:
        return [row_key(r) for r in self.rows]

    @property
    def fingerprint(self) -> str:
        """:func:`grid_fingerprint` of this grid's row keys."""
        return grid_fingerprint(self.keys())


def grid_fingerprint(keys: Iterable[str]) -> str:
    """SHA-256 (first 16 hex digits) of the sorted row keys: equal exactly for grids of the same rows."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def row_key(params: dict[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of a row's parameters."""
    canon = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def load_grid(path: str | Path) -> Grid:
    """Read, validate and expand a grid TOML file (see the module docstring)."""
    data, text = read_toml(path)
    for k, v in data.items():
        if k not in ("grid", "fixed", "plot"):
            raise ConfigError(f"{where(path, text, k)}: unknown key or table; "
                              "known tables: [grid], [fixed], [plot]")
        if not isinstance(v, dict):
            raise ConfigError(f"{where(path, text, k)}: must be a table [{k}]")
    grid = data.get("grid")
    if not grid:
        raise ConfigError(f"{path}: the [grid] table is missing or empty")
    values: dict[str, list[Any]] = {}
    for k, v in grid.items():
        if k not in GRID_KEYS:
            raise ConfigError(f"{where(path, text, k, 'grid')}: unknown grid key; known: {list(GRID_KEYS)}")
        items = v if isinstance(v, list) else [v]
        if not items:
            raise ConfigError(f"{where(path, text, k, 'grid')}: empty list: the grid would have no rows")
        checked = []
        for it in items:
            try:
                checked.append(VALIDATORS[k](it))
            except ValueError as exc:
                raise ConfigError(f"{where(path, text, k, 'grid')}: {exc}") from None
        if len(set(map(repr, checked))) != len(checked):
            raise ConfigError(f"{where(path, text, k, 'grid')}: duplicate values {items}")
        values[k] = checked
    fixed: dict[str, Any] = {}
    for k, v in data.get("fixed", {}).items():
        if k not in VALIDATORS or k in ("kernels", "kernel"):
            raise ConfigError(f"{where(path, text, k, 'fixed')}: unknown fixed key; known: "
                              f"{sorted(set(VALIDATORS) - {'kernels', 'kernel'})}")
        if k in values:
            raise ConfigError(f"{where(path, text, k, 'fixed')}: also swept in [grid]")
        try:
            fixed[k] = VALIDATORS[k](v)
        except ValueError as exc:
            raise ConfigError(f"{where(path, text, k, 'fixed')}: {exc}") from None
    plot = data.get("plot", {})
    for k in plot:
        if k not in ("x", "y"):
            raise ConfigError(f"{where(path, text, k, 'plot')}: unknown plot key; known: ['x', 'y']")
    base = {k: v for k, v in DEFAULTS.items() if k != "kernels"}
    base.update(kernel=DEFAULTS["kernels"][0], hessian=False)
    base.update(fixed)
    names = list(values)
    rows = []
    for combo in itertools.product(*(values[k] for k in names)):
        r = dict(base)
        r.update(zip(names, combo, strict=True))
        rows.append(r)
    swept = tuple(k for k in names if len(values[k]) > 1)
    px = plot.get("x") or next((k for k in swept if k in PLOT_X_KEYS and k != "seed"), None)
    py = plot.get("y", "kappa_B0")
    if px is not None and px not in PLOT_X_KEYS:
        raise ConfigError(f"{where(path, text, 'x', 'plot')}: must be a numeric grid key "
                          f"{list(PLOT_X_KEYS)}, got {px!r}")
    if py not in METRICS:
        raise ConfigError(f"{where(path, text, 'y', 'plot')}: must be one of {list(METRICS)}, got {py!r}")
    return Grid(tuple(rows), swept, px, py)


def _cell(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, list):
        return ",".join(map(str, v))
    if v is None:
        return ""
    if isinstance(v, str):  # one row = one physical line (error messages can hold newlines)
        return v.replace("\r", " ").replace("\n", " ")
    return v


def run_row(params: dict[str, Any]) -> dict[str, Any]:
    """Diagnose one grid point (runs on a worker); errors become ``status = "error: …"``."""
    import torch

    from .cmd_diagnose import run_config

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"key": row_key(params), **params}
    try:
        cfg = {k: v for k, v in params.items() if k != "kernel"}
        cfg["kernels"] = [params["kernel"]]
        res = run_config(cfg, show_progress=False)[params["kernel"]]
        for name, (which, rk) in _METRIC_ROWS.items():
            rows = {r.key: r for r in res[which].rows}
            r = rows.get(rk)
            out[name] = (r.value if r is not None and r.defined else None)
        out["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failed row is recorded, the sweep goes on
        out["status"] = f"error: {type(exc).__name__}: {exc}"
    out["seconds"] = round(time.perf_counter() - t0, 4)
    return out


class ForeignCsvError(ValueError):
    """``--out`` holds a CSV of another schema or grid: it is refused, never mixed into."""


def row_checksum(cells: Iterable[Any]) -> str:
    """CRC-32 (8 hex digits) of the canonical CSV text of a row's cells, the ``crc32`` column excluded."""
    return format(zlib.crc32(_line(cells).rstrip(b"\n")), "08x")


def _line(values: Iterable[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(list(values))
    return buf.getvalue().encode("utf-8")


@dataclass(frozen=True)
class RejectedRow:
    """A line of the results CSV that is not a valid row (torn, edited, duplicated): recomputed."""

    line: int
    reason: str
    text: bytes


@dataclass(frozen=True)
class _Scan:
    rows: dict[str, bytes]  # key -> its verified line, in file order
    rejected: tuple[RejectedRow, ...]
    end: int  # bytes consumed (complete lines only)
    torn_tail: bool  # bytes after the last newline


class CsvLog:
    """Append-only results CSV, safe for several concurrent writers (see the module docstring).

    Every row carries the grid fingerprint (``grid`` column) and a CRC-32 of its own text
    (``crc32`` column). ``grid`` is the fingerprint the rows must carry (``None``: any single one).
    All reads that decide what to write happen under an exclusive ``flock`` of the sidecar
    ``<out>.lock``; each append re-reads the rows other writers added since the last look.
    """

    def __init__(self, path: str | Path, grid: str | None = None, columns: Iterable[str] = COLUMNS) -> None:
        self.path = Path(path)
        self.grid = grid
        self.columns = list(columns)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")
        self.done: dict[str, int] = {}  # verified keys -> their line (0: appended by this writer)
        self.rejected: tuple[RejectedRow, ...] = ()
        self._pos: tuple[int, int] | None = None  # (inode, bytes read) of the last look under the lock

    # ------------------------------------------------------------------ reading
    def _check_header(self, first: bytes) -> None:
        try:
            header = next(csv.reader([first.decode("utf-8")]), [])
        except UnicodeDecodeError:
            header = ["<not UTF-8>"]
        if header == self.columns:
            return
        if header == list(COLUMNS_V1):
            raise ForeignCsvError(
                f"{self.path} was written by an older attncond sweep (no grid fingerprint, no row checksums); "
                "it cannot be verified: use another --out")
        raise ForeignCsvError(f"{self.path} is not a results CSV of this attncond sweep: its header has "
                              f"{len(header)} columns {header[:4]}…, expected {len(self.columns)} starting "
                              f"{self.columns[:4]}; use another --out")

    def _scan(self, data: bytes, start: int, line0: int, seen: dict[str, int]) -> _Scan:
        """Verify the complete lines of ``data[start:]`` (``line0``: number of the first)."""
        rows: dict[str, bytes] = {}
        rejected: list[RejectedRow] = []
        pos, no = start, line0
        ncol, grid_col = len(self.columns), self.columns.index("grid")
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            raw, pos = data[pos:nl], nl + 1
            no += 1
            if not raw.strip():
                continue
            try:
                cells = next(csv.reader([raw.decode("utf-8")]))
            except (UnicodeDecodeError, csv.Error, StopIteration):
                rejected.append(RejectedRow(no, "unreadable line (not UTF-8 CSV)", raw))
                continue
            if len(cells) != ncol:
                rejected.append(RejectedRow(no, f"{len(cells)} fields, expected {ncol} (torn row?)", raw))
                continue
            if row_checksum(cells[:-1]) != cells[-1]:
                rejected.append(RejectedRow(no, "checksum mismatch (torn or edited row)", raw))
                continue
            if self.grid is None:
                self.grid = cells[grid_col]
            if cells[grid_col] != self.grid:
                raise ForeignCsvError(
                    f"{self.path} line {no} belongs to another grid (fingerprint {cells[grid_col]}, this grid "
                    f"{self.grid}): a results CSV holds one grid only; use another --out, or rerun the grid "
                    "that wrote it")
            if cells[0] in seen:
                rejected.append(RejectedRow(no, f"duplicate of the row on line {seen[cells[0]]}", raw))
                continue
            seen[cells[0]] = no
            rows[cells[0]] = raw + b"\n"
        return _Scan(rows, tuple(rejected), pos, pos < len(data))

    def peek(self) -> set[str]:
        """Keys of the verified rows already in the file, without locking, creating or changing it.

        A hint only (every decision to write is made again under the lock); raises
        :class:`ForeignCsvError` for a CSV of another schema or grid.
        """
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        if not data:
            return set()
        first = data.find(b"\n")
        self._check_header(data[: first if first >= 0 else len(data)])
        return set(self._scan(data, first + 1, 1, {}).rows) if first >= 0 else set()

    def rows(self) -> list[dict[str, str]]:
        """The verified rows, as dicts of strings, in file order (read without the lock)."""
        if not self.path.is_file():
            raise FileNotFoundError(f"results file not found: {self.path}")
        data = self.path.read_bytes()
        first = data.find(b"\n")
        self._check_header(data[: first if first >= 0 else len(data)])
        lines = self._scan(data, first + 1, 1, {}).rows.values() if first >= 0 else ()
        return [dict(zip(self.columns, next(csv.reader([r.decode("utf-8")])), strict=True)) for r in lines]

    # ------------------------------------------------------------------ locking
    def _locked(self) -> int:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    @staticmethod
    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def open(self) -> set[str]:
        """Create the file with its header, or verify it; damaged rows are moved out. Under the lock.

        Rows that fail verification (torn, edited, duplicated, or a tail without newline) are
        appended to ``<out>.rejected`` with the reason, and the CSV is rewritten atomically with
        the verified rows only (temporary file + ``os.replace``), so they are recomputed.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lk = self._locked()
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
            if not data:
                self._rewrite(self._header())
                self.done = {}
                return set()
            first = data.find(b"\n")
            self._check_header(data[: first if first >= 0 else len(data)])
            seen: dict[str, int] = {}
            scan = self._scan(data, first + 1, 1, seen)
            rejected = list(scan.rejected)
            if scan.torn_tail:
                rejected.append(RejectedRow(data.count(b"\n", 0, scan.end) + 1,
                                            "incomplete last line (no newline)", data[scan.end:]))
            if rejected:
                self._reject(rejected)
                self._rewrite(self._header() + b"".join(scan.rows.values()))
            else:
                st = os.stat(self.path)
                self._pos = (st.st_ino, len(data))
            self.rejected = tuple(rejected)
            self.done = seen
            return set(self.done)
        finally:
            self._unlock(lk)

    def _header(self) -> bytes:
        return _line(self.columns)

    def _reject(self, rows: list[RejectedRow]) -> None:
        text = b"".join(f"# {self.path.name} line {r.line}: {r.reason}\n".encode()
                        + r.text.rstrip(b"\n") + b"\n" for r in rows)
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, data: bytes) -> None:
        """Replace the CSV by ``data`` atomically (temporary file, fsync, os.replace, fsync of the folder)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._pos = (os.stat(self.path).st_ino, len(data))

    def _refresh(self, fd: int) -> bool:
        """Read (under the lock) the rows other writers appended; ``True`` when the file ends mid-line."""
        st = os.fstat(fd)
        ino, pos = self._pos or (-1, 0)
        if ino != st.st_ino or st.st_size < pos:  # rewritten by another writer's repair: read it all
            data = os.pread(fd, st.st_size, 0)
            first = data.find(b"\n")
            self._check_header(data[: first if first >= 0 else len(data)])
            self.done = {}
            scan = self._scan(data, first + 1, 1, self.done) if first >= 0 else _Scan({}, (), 0, bool(data))
        else:
            data = os.pread(fd, st.st_size - pos, pos)
            scan = self._scan(data, 0, 0, self.done)  # adds the new verified keys to self.done
            scan = _Scan(scan.rows, scan.rejected, pos + scan.end, scan.torn_tail)
        self._pos = (st.st_ino, scan.end)
        return scan.torn_tail

    def refresh(self) -> set[str]:
        """The done keys now, including rows other writers appended (reads under the lock)."""
        lk = self._locked()
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self._refresh(fd)
            finally:
                os.close(fd)
        finally:
            self._unlock(lk)
        return set(self.done)

    def append(self, row: dict[str, Any]) -> bool:
        """Append one row unless its key is done (by anyone); ``False`` means nothing was written.

        Under the lock: re-read what other writers appended, check the key, write the row as one
        ``os.write`` with ``O_APPEND`` (after a newline if the file ends mid-line, so a torn line
        from a crash stays a separate, rejected line), ``fsync``.
        """
        if self.grid is None:
            raise ValueError("CsvLog.append needs the grid fingerprint: CsvLog(path, grid=...)")
        cells = [self.grid if c == "grid" else _cell(row.get(c)) for c in self.columns[:-1]]
        line = _line([*cells, row_checksum(cells)])
        lk = self._locked()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            try:
                torn = self._refresh(fd)
                if row["key"] in self.done:
                    return False
                if torn:
                    line = b"\n" + line
                n = os.write(fd, line)
                if n != len(line):  # pragma: no cover - disk full
                    raise OSError(f"short write to {self.path}: {n} of {len(line)} bytes")
                os.fsync(fd)
                if not torn:
                    self._pos = (self._pos[0], self._pos[1] + n) if self._pos else None
            finally:
                os.close(fd)
        finally:
            self._unlock(lk)
        self.done[row["key"]] = 0
        return True


@dataclass(frozen=True)
class SweepSummary:
    """What one ``run_sweep`` did. ``total = skipped + written + by_other_writer`` after a full run.

    ``skipped``: rows already done when it started; ``written``: rows it appended;
    ``by_other_writer``: rows another sweep on the same CSV finished first (computed here or not,
    never written twice); ``rejected``: damaged lines moved to ``rejected_file`` and recomputed.
    """

    total: int
    skipped: int
    written: int
    errors: int
    by_other_writer: int
    rejected: int
    rejected_file: str | None
    grid: str
    seconds: float
    scheduler: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _connect(scheduler: str | None, n_workers: int, connect_timeout: str) -> tuple[Any, Any]:
    """``(client, cluster)``: a client of ``scheduler``, or of a new LocalCluster (then returned too)."""
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=connect_timeout), None
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"scheduler: cannot connect to the dask scheduler {scheduler!r} within "
                             f"{connect_timeout}: {type(exc).__name__}: {exc}") from None
    # the scheduler's HTTP server always binds 8787 first; another sweep holding it is expected here
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _shutdown(client: Any, cluster: Any, futures: list[Any], interrupted: bool) -> None:
    """Close the client and our LocalCluster; after Ctrl-C, promptly (cancel, then kill the workers)."""
    import contextlib
    import logging

    if not interrupted:
        client.close()
        if cluster is not None:
            cluster.close()
        return
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # no "worker lost" noise while stopping
    with contextlib.suppress(Exception):
        client.cancel(futures, force=True)
    if cluster is not None:  # our own worker processes: kill them instead of waiting for a graceful stop
        for nanny in list(getattr(cluster, "workers", {}).values()):
            pid = getattr(getattr(getattr(nanny, "process", None), "process", None), "pid", None)
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        client.close(timeout=1)
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close(timeout=1)


def run_sweep(
    grid: Grid,
    out: str | Path,
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[..., Iterable[Any]] | None = None,
    connect_timeout: str = "20s",
) -> SweepSummary:
    """Run every not-yet-done row of ``grid`` on dask and append each result to ``out``.

    ``scheduler``: address of an existing dask scheduler (``tcp://host:port``); ``None`` starts
    a ``LocalCluster`` of ``n_workers`` single-threaded processes on 127.0.0.1 for this call.
    Rows already in ``out`` (same key, verified checksum) are skipped, also those another sweep
    appends meanwhile (their pending tasks are cancelled); ``on_row`` is called after each append.
    Refused before any work: an ``out`` that is a folder or cannot be written, a CSV of another
    schema or grid (:class:`ForeignCsvError`), an unreachable scheduler (``ValueError`` naming it).
    ``KeyboardInterrupt`` stops it within about a second: rows already appended stay, the
    LocalCluster's workers are killed.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ValueError(f"scheduler must be a non-empty address like 'tcp://host:8786', got {scheduler!r}")
    check_output_file(out, "out")
    t0 = time.perf_counter()
    log = CsvLog(out, grid.fingerprint)
    keys = {id(r): row_key(r) for r in grid.rows}
    done = log.peek()  # read-only: nothing is created before the cluster is reachable
    todo = [r for r in grid.rows if keys[id(r)] not in done]
    where_ = scheduler or f"LocalCluster({n_workers} processes, 127.0.0.1)"
    if not todo:
        return SweepSummary(len(grid.rows), len(grid.rows), 0, 0, 0, 0, None, grid.fingerprint,
                            time.perf_counter() - t0, "none (every row already done)")
    from dask.distributed import as_completed

    client, cluster = _connect(scheduler, n_workers, connect_timeout)
    futures: list[Any] = []
    interrupted = False
    written = errors = 0
    try:
        done = log.open()  # header, or verification and repair, under the lock
        todo = [r for r in todo if keys[id(r)] not in done]
        skipped = len(grid.rows) - len(todo)
        futures = [client.submit(run_row, r, key=f"attncond-row-{keys[id(r)]}", pure=False) for r in todo]
        pending = {keys[id(r)]: f for r, f in zip(todo, futures, strict=True)}
        it: Iterable[Any] = as_completed(futures)
        if progress is not None:
            it = progress(it, desc="sweep", total=len(futures))
        for fut in it:
            if fut.cancelled():
                continue
            row = fut.result()
            pending.pop(row["key"], None)
            if log.append(row):
                written += 1
                errors += row["status"] != "ok"
                if on_row is not None:
                    on_row(row)
            taken = [pending.pop(k) for k in list(pending) if k in log.done]  # finished by another writer
            if taken:
                client.cancel(taken)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        _shutdown(client, cluster, futures, interrupted)
    rej = len(log.rejected)
    return SweepSummary(len(grid.rows), skipped, written, errors, len(todo) - written, rej,
                        str(log.rejected_path) if rej else None, grid.fingerprint,
                        time.perf_counter() - t0, where_)


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The verified rows of a results CSV as dicts of strings (damaged lines are left out)."""
    return CsvLog(path).rows()


Series = dict[str, tuple[list[float], list[float]]]


def plot_results(path: str | Path, png: str | Path, x: str, y: str) -> Series:
    """``y`` against the swept parameter ``x``, one line per kernel (median over the other
    parameters), log-scale ``y``. Returns the plotted series ``{kernel: (xs, ys)}``."""
    from .report import pyplot, save_figure

    if x not in PLOT_X_KEYS:
        raise ValueError(f"x must be a numeric grid key, one of {list(PLOT_X_KEYS)}, got {x!r}")
    if y not in METRICS:
        raise ValueError(f"y must be one of {list(METRICS)}, got {y!r}")
    rows = [r for r in read_results(path) if r.get("status") == "ok" and r.get(y) not in ("", None)]
    if not rows:
        raise ValueError(f"{path}: no finished rows with a value of {y!r} to plot")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    series: Series = {}
    for k in sorted({r["kernel"] for r in rows}):
        pts: dict[float, list[float]] = {}
        for r in rows:
            if r["kernel"] == k:
                v = float(r[y])
                if math.isfinite(v):
                    pts.setdefault(float(r[x]), []).append(v)
        xs = sorted(pts)
        ys = [sorted(pts[a])[len(pts[a]) // 2] for a in xs]
        series[k] = (xs, ys)
        ax.plot(xs, ys, marker="o", label=k)
    ax.set_yscale("log")
    allx = [a for xs, _ in series.values() for a in xs]
    if allx and min(allx) > 0 and max(allx) >= 10 * min(allx):
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{y} (median over other parameters)")
    ax.set_title(f"attncond sweep: {y} vs {x}", fontsize=10)
    ax.legend(title="kernel")
    fig.tight_layout()
    save_figure(fig, png, dpi=100)
    return series
