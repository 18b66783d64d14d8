"""``attncond check``: property-test the theory claims of MATH.md §5 with Hypothesis.

One row per theorem: examples tried, passed, failed, the worst margin and the minimal
counterexample Hypothesis shrank to. A reconstructed claim that fails is a *finding* and
the row names the variant that holds. ``--plot`` draws the [S24] rate theorem: the loss on
a log scale against the bound ``f_0 (1 − ηβ')^t``.
"""

from __future__ import annotations

import argparse
import math

from .progress import progress
from .report import fmt, format_table, pyplot, to_json


def _short(x: object, width: int = 90) -> str:
    s = "-" if x is None else repr(x)
    return s if len(s) <= width else s[: width - 3] + "..."


def check(args: argparse.Namespace) -> int:
    import torch

    from attncond.proofs_check.theorems import THEOREMS, get_theorem, search

    if args.examples <= 0:
        raise ValueError(f"--examples must be a positive integer, got {args.examples}")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.threads is not None:
        if args.threads <= 0:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    ids = list(THEOREMS) if args.theorem == "all" else [get_theorem(args.theorem).id]
    reports = [search(t, max_examples=args.examples, seed=args.seed, shrink=not args.no_shrink)
               for t in progress(ids, desc="check", disable=args.json)]
    if args.json:
        out = {r.theorem_id: {**r.to_dict(), "theorem": get_theorem(r.theorem_id).describe()} for r in reports}
        print(to_json({"examples": args.examples, "seed": args.seed, "theorems": out}))
    else:
        rows = [{"theorem": r.theorem_id, "verdict": r.verdict, "tried": r.tried, "passed": r.passed,
                 "failed": r.failed, "worst margin": r.worst_margin, "sec": round(r.seconds, 1)}
                for r in reports]
        print(format_table(rows, title=f"attncond check (examples <= {args.examples}, seed {args.seed})"))
        notes = []
        for r in reports:
            if r.failed:
                tag = "shrunk" if r.shrunk else "first found"
                notes.append(f"- {r.theorem_id}: counterexample ({tag}, margin "
                             f"{fmt(r.counterexample_margin)}): "
                             f"{_short(r.counterexample, 400)}")
                if r.finding:
                    notes.append(f"  FINDING: {r.finding}")
            if r.statistical_test:
                notes.append(f"- {r.theorem_id}: test = {r.statistical_test}")
            if r.max_examples < args.examples:
                notes.append(f"- {r.theorem_id}: capped at {r.max_examples} examples (each runs gradient "
                             f"descent)")
        if notes:
            print()
            print("\n".join(notes))
        print()
        print("margin scales: " + "; ".join(f"{r.theorem_id}: {r.margin_scale}" for r in reports))
    if args.plot:
        _plot_rate(args.plot, args.seed)
    failed_exact = [r for r in reports if r.verdict == "FAILED"]
    return 1 if failed_exact and args.strict else 0


def _plot_rate(path: str, seed: int) -> None:
    """Loss of one [S24] rate instance on a log scale against ``f_0 (1 − ηβ')^t``, for η = 1/L and 3/L."""
    from attncond.proofs_check.theorems import AttentionConfig, RateInstance
    from attncond.proofs_check.theorems.s24 import run_rate_instance

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cfg = AttentionConfig(N=2, n=2, D=4, d=2, H=2, seed=seed)
    for factor, color in ((1.0, "C0"), (3.0, "C3")):
        trace, rc = run_rate_instance(RateInstance(cfg, lr_factor=factor, steps=40))
        t = range(len(trace.losses))
        ax.semilogy(t, trace.losses, color=color, label=f"loss, η = {factor:g}/L")
        bound = [b if b > 0 else math.nan for b in rc.bound]
        verdict = "holds" if rc.holds and rc.step_violations == 0 else (
            f"violated; {rc.step_violations} steps above 1−ημ_t" if rc.holds else "violated")
        label = f"bound f₀(1−ηβ')ᵗ, β'={rc.beta_prime:.3g} ({verdict})"
        ax.semilogy(t, bound, color=color, ls="--", label=label)
    ax.set_xlabel("GD step t")
    ax.set_ylabel("loss f(θ_t), log scale")
    ax.set_title(f"[S24] Thm 1 rate: N=2 n=2 D=4 d=2 H=2 (HD=8 ≥ Nn=4), seed {seed}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="property-test the theory claims (theorem registry, Hypothesis)")
    p.add_argument("theorem", nargs="?", default="all", help="a theorem id (see --list) or 'all'")
    p.add_argument("--examples", type=int, default=200, help="Hypothesis examples per theorem (default 200; "
                   "GD-based theorems are capped lower)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="FILE.png", help="rate theorem: loss (log scale) vs the bound")
    p.add_argument("--no-shrink", action="store_true", help="report the first counterexample, unshrunk")
    p.add_argument("--strict", action="store_true", help="exit 1 if a non-reconstructed claim fails")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the matrices are tiny, threads only add overhead)")
    p.set_defaults(func=check)
