"""``attncond sweep grid.toml --out results.csv``: ``diagnose`` over a parameter grid on dask.

See :mod:`attncond.sweep` for the grid format, the cluster, locking, checksums, the grid
fingerprint and resume.
"""

from __future__ import annotations

import argparse
import sys

from .options import check_device, check_output_file, int_arg
from .progress import progress
from .report import format_table, to_json


def sweep_cmd(args: argparse.Namespace) -> int:
    from .sweep import load_grid, plot_results, run_sweep

    grid = load_grid(args.grid)  # validates everything before any file is touched
    if args.scheduler is None:  # the rows run on this machine: their devices must exist here
        for dev in sorted({r["device"] for r in grid.rows}):
            check_device(dev, f"{args.grid}: device")
    check_output_file(args.out, "--out")
    summary = run_sweep(grid, args.out, scheduler=args.scheduler, n_workers=args.workers,
                        progress=None if args.json else progress, connect_timeout=args.connect_timeout)
    if summary.rejected:
        print(f"attncond sweep: {summary.rejected} damaged line(s) of {args.out} (torn, edited or duplicated) "
              f"moved to {summary.rejected_file} and recomputed", file=sys.stderr)
    if args.json:
        print(to_json({"summary": summary.to_dict(), "out": args.out}))
    else:
        cols = ["total", "skipped", "written", "errors", "by_other_writer", "rejected", "seconds", "scheduler"]
        print(format_table([summary.to_dict()], cols,
                           title=f"attncond sweep {args.grid} -> {args.out} (grid {summary.grid})"))
    if args.plot:
        x = args.x or grid.plot_x
        if x is None:
            raise ValueError("--plot needs a swept parameter: give --x or [plot] x in the grid file")
        plot_results(args.out, args.plot, x, args.y or grid.plot_y)
    if summary.errors:
        print(f"{summary.errors} rows failed; see the status column of {args.out}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run diagnose over a parameter grid (dask.distributed, resumable)")
    p.add_argument("grid", metavar="grid.toml", help="grid file ([grid], optional [fixed] and [plot])")
    p.add_argument("--out", required=True, metavar="results.csv", help="CSV to append rows to (resumed)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="existing dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int_arg(1, 1024), default=2,
                   help="LocalCluster worker processes (default 2)")
    p.add_argument("--connect-timeout", dest="connect_timeout", default="20s", metavar="T",
                   help="how long to wait for --scheduler (dask time string, default 20s)")
    p.add_argument("--plot", metavar="FILE.png", help="plot a metric against the swept parameter per kernel")
    p.add_argument("--x", help="swept parameter on the x-axis (default: [plot] x or the first swept one)")
    p.add_argument("--y", help="metric column on the y-axis (default: [plot] y or kappa_B0)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=sweep_cmd)
