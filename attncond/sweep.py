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

Durability: the driver is the only writer. Each finished row is appended as **one complete
CSV line in a single** ``os.write`` on a file opened with ``O_APPEND``, under an exclusive
``fcntl.flock``, followed by ``fsync``. A killed sweep therefore leaves only whole rows (a kill
cannot split one ``write`` of a small buffer to a local file); a torn last line, possible only
after a system crash, has no newline and is dropped on resume. We chose append over
"temp file + ``os.replace``" because rewriting the whole file per row costs O(rows²) I/O.
Resume: rows are keyed by a SHA-256 of their canonical JSON parameters; keys already in the
CSV are skipped, and the writer refuses duplicates. The CSV is read (not created) first and
the cluster is connected before the header is written, so an unreachable ``--scheduler`` or a
sweep with nothing left to do writes nothing.
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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attncond.spectral.diagnostics.rows import sweep_columns

from .cmd_diagnose import DEFAULTS, VALIDATORS, ConfigError, read_toml, where

GRID_KEYS: tuple[str, ...] = ("kernel", "N", "n", "H", "D", "d", "init_scale", "seed", "regime", "value_param")
#: grid keys that can be the x-axis of ``--plot`` (numeric).
PLOT_X_KEYS: tuple[str, ...] = ("N", "n", "H", "D", "d", "init_scale", "seed")
PARAM_COLUMNS: tuple[str, ...] = ("kernel", "N", "n", "D", "d", "H", "init_scale", "seed", "regime",
                                  "value_param", "trainable", "residual", "dtype", "device", "hessian", "tau")
#: metric columns and the diagnostic row each reads, from the ROWS table of spectral.diagnostics
_METRIC_ROWS = {col: (kind, key) for col, kind, key in sweep_columns()}
METRICS: tuple[str, ...] = tuple(_METRIC_ROWS)
COLUMNS: tuple[str, ...] = ("kernel", "N", "n", "D", "d", "H", "init_scale", "seed", "regime",
                                  "value_param", "trainable", "residual", "dtype", "device", "hessian", "tau")
METRICS: tuple[str, ...] = (
    "sigma_min_B0", "kappa_B0", "beta_paper", "mu", "corrected_bound", "corrected_holds", "beta_holds",
    "sigma_min_Z_res", "kappa_Z_res", "sigma_min_Z_plain", "kappa_Z_plain", "weyl_bound",
    "softmaxJ_kappa_median", "softmaxJ_kappa_max", "entropy", "sparsity",
)
COLUMNS: tuple[str, ...] = ("key", *PARAM_COLUMNS, *METRICS, "status", "seconds")


@dataclass(frozen=True)
class Grid:
    """A validated sweep: the full parameter dict of every row, and plot defaults."""

    rows: tuple[dict[str, Any], ...]
    swept: tuple[str, ...]
    plot_x: str | None
    plot_y: str

    def keys(self) -> list[str]:
        return [row_key(r) for r in self.rows]


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


class CsvLog:
    """Append-only CSV of finished rows with resume (see the module docstring)."""

    def __init__(self, path: str | Path, columns: Iterable[str] = COLUMNS) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.done: set[str] = set()

    def peek(self) -> set[str]:
        """Keys of the complete rows already in the file, without creating or changing it."""
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        reader = csv.reader(io.StringIO(data.decode("utf-8")))
        header = next(reader, None)
        if header is not None and header != self.columns:
            raise ValueError(f"{self.path} exists with other columns ({header}); use another --out")
        return {r[0] for r in reader if r}

    def open(self) -> set[str]:
        """Create the file with its header, or repair a torn last line and read the done keys."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size == 0:
                os.write(fd, self._line(self.columns))
                os.fsync(fd)
                return set()
            with open(self.path, "rb") as fh:
                data = fh.read()
            if not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                os.ftruncate(fd, cut)
                os.fsync(fd)
                data = data[:cut]
            reader = csv.reader(io.StringIO(data.decode("utf-8")))
            header = next(reader, None)
            if header != self.columns:
                raise ValueError(f"{self.path} exists with other columns ({header}); use another --out")
            self.done = {r[0] for r in reader if r}
            return set(self.done)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _line(values: Iterable[Any]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(list(values))
        return buf.getvalue().encode("utf-8")

    def append(self, row: dict[str, Any]) -> bool:
        """Append one row atomically; returns ``False`` (and writes nothing) for a done key."""
        if row["key"] in self.done:
            return False
        line = self._line(_cell(row.get(c)) for c in self.columns)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            n = os.write(fd, line)
            if n != len(line):  # pragma: no cover - disk full
                raise OSError(f"short write to {self.path}: {n} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self.done.add(row["key"])
        return True


@dataclass(frozen=True)
class SweepSummary:
    total: int
    skipped: int
    written: int
    errors: int
    seconds: float
    scheduler: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    Rows already in ``out`` (same key) are skipped; ``on_row`` is called after each append.
    An unreachable scheduler raises a ``ValueError`` naming it, before any row is written.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ValueError(f"scheduler must be a non-empty address like 'tcp://host:8786', got {scheduler!r}")
    t0 = time.perf_counter()
    log = CsvLog(out)
    done = log.peek()  # read-only: nothing is created before the cluster is reachable
    todo = [r for r in grid.rows if row_key(r) not in done]
    written = errors = 0
    where_ = scheduler or f"LocalCluster({n_workers} processes, 127.0.0.1)"
    if not todo:
        return SweepSummary(len(grid.rows), len(grid.rows), 0, 0, time.perf_counter() - t0,
                            "none (every row already done)")
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"scheduler: cannot connect to the dask scheduler {scheduler!r} within "
                             f"{connect_timeout}: {type(exc).__name__}: {exc}") from None
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        done = log.open()  # header or torn-line repair, under the file lock
        todo = [r for r in todo if row_key(r) not in done]
        skipped = len(grid.rows) - len(todo)
        futures = [client.submit(run_row, r, key=f"attncond-row-{row_key(r)}", pure=False) for r in todo]
        it: Iterable[Any] = as_completed(futures)
        if progress is not None:
            it = progress(it, desc="sweep", total=len(futures))
        for fut in it:
            row = fut.result()
            if log.append(row):
                written += 1
                errors += row["status"] != "ok"
                if on_row is not None:
                    on_row(row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return SweepSummary(len(grid.rows), skipped, written, errors, time.perf_counter() - t0, where_)


def read_results(path: str | Path) -> list[dict[str, str]]:
    """All complete rows of a results CSV as dicts of strings."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


Series = dict[str, tuple[list[float], list[float]]]


def plot_results(path: str | Path, png: str | Path, x: str, y: str) -> Series:
    """``y`` against the swept parameter ``x``, one line per kernel (median over the other
    parameters), log-scale ``y``. Returns the plotted series ``{kernel: (xs, ys)}``."""
    from .report import pyplot

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
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return series
