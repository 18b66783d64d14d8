"""``attncond reproduce [S24|Q25|I25|H24|all] --out report/ [--quick]``: the papers' experiments,
with PNG figures, ``index.md`` and ``results.json`` (issue 7)."""

from __future__ import annotations

import argparse
import shlex
import sys

from .progress import progress


def reproduce(args: argparse.Namespace) -> int:
    from .reproduce import check_seed, prepare_out, resolve, run_experiments, write_report

    names = resolve(args.experiments)
    size = "quick" if args.quick else args.size
    if args.quick and args.size not in ("full", "quick"):
        raise ValueError("--quick and --size are exclusive; give one of them")
    if args.threads <= 0:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    check_seed(args.seed)
    prepare_out(args.out)  # fail fast, before minutes of compute
    import torch

    torch.set_num_threads(args.threads)

    def prog(it, **kw):
        return progress(it, disable=args.no_progress, **kw)

    results = []
    for name in names:
        r = run_experiments(name, size=size, seed=args.seed, out=args.out, plots=not args.no_plots,
                            progress=prog)[0]
        results.append(r)
        if not args.no_progress:
            print(f"{r!r}", file=sys.stderr)
    cmd = "attncond reproduce " + " ".join(shlex.quote(a) for a in args.argv_echo)
    paths = write_report(results, args.out, command=cmd)
    for r in results:
        for f in r.findings:
            print(f"[{f.paper}] {f.verdict:>13}: {f.claim}")
    print(f"wrote {paths['index']} and {paths['json']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="the four papers' experiments at laptop scale, with a report")
    p.add_argument("experiments", nargs="*", default=["all"], metavar="EXPERIMENT",
                   help="S24, Q25, I25, H24 or all (default all)")
    p.add_argument("--out", default="report", help="output folder for index.md, results.json, PNGs")
    p.add_argument("--quick", action="store_true", help="CI-sized settings (all in under 5 minutes)")
    p.add_argument("--size", default="full", choices=["smoke", "quick", "full"],
                   help="settings size (default full; --quick means --size quick)")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed (default 0); repeated runs use seed, seed+1, ...")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these models are tiny and more threads only add "
                        "synchronisation, badly so on a loaded machine)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_with_echo)


def _with_echo(args: argparse.Namespace) -> int:
    argv = list(args.experiments)
    if args.quick:
        argv.append("--quick")
    elif args.size != "full":
        argv += ["--size", args.size]
    argv += ["--out", args.out]
    if args.seed:
        argv += ["--seed", str(args.seed)]
    args.argv_echo = argv
    return reproduce(args)
