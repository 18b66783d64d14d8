"""``attncond check``: property-test the theory claims of MATH.md §5 with Hypothesis.

One row per theorem: examples tried, passed, failed, excluded (ties, undecidable), the failure rate
with its 95 % Clopper–Pearson interval, the power (smallest catch rate of the false variants), the
worst margin and the time. Verdicts: held / held (vacuous on k/n) / finding / FAILED / inconclusive /
low power (:mod:`proofs_check.theorems.search`). ``--power`` also draws instances violating each
assumption and the wrong-kernel variants. ``--save-counterexamples DIR`` writes every counterexample
as ``.npz``; ``--replay FILE`` re-evaluates one. ``--strict`` exits 1 on a finding or a failure.
``--plot`` draws the [S24] rate theorem: the loss on a log scale against the bound.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from .options import UsageError, check_output_folder
from .progress import progress
from .report import fmt, format_table, pyplot, save_figure, to_json


def _short(x: object, width: int = 90) -> str:
    s = "-" if x is None else repr(x)
    return s if len(s) <= width else s[: width - 3] + "..."


def _rate(k: int, n: int, ci: tuple[float, float] | None) -> str:
    if not n:
        return "-"
    return f"{k}/{n} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{k}/{n}"


def _validate(args: argparse.Namespace) -> None:
    if args.examples <= 0:
        raise ValueError(f"--examples must be a positive integer, got {args.examples}")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.power_examples is not None and args.power_examples <= 0:
        raise ValueError(f"--power-examples must be a positive integer, got {args.power_examples}")
    if args.max_saved <= 0:
        raise ValueError(f"--max-saved must be a positive integer, got {args.max_saved}")
    if args.threads is not None and args.threads <= 0:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    for flag, value in (("--save-counterexamples", args.save_counterexamples), ("--database", args.database)):
        if value:  # written after the search: a bad folder must fail before it
            check_output_folder(value, flag)


def _load_plugins(paths: list[str]) -> None:
    import runpy
    from pathlib import Path

    for p in paths:
        if not Path(p).is_file():
            raise ValueError(f"--load {p}: no such file")
        try:
            runpy.run_path(p, run_name="attncond_user_claims")
        except Exception as exc:  # noqa: BLE001 - the user's file: name the flag and the file
            raise UsageError(f"--load {p}: {type(exc).__name__}: {exc}") from exc


def _replay(args: argparse.Namespace) -> int:
    from attncond.proofs_check.theorems import replay

    r = replay(args.replay)
    if args.theorem != "all" and args.theorem != r.theorem_id:
        raise ValueError(f"--replay {args.replay} holds a counterexample of {r.theorem_id}, not {args.theorem}")
    if args.json:
        print(to_json(r.to_dict()))
    else:
        print(f"{r.theorem_id}: replayed {r.path}")
        print(f"  instance: {_short(r.instance, 400)}")
        print(
            f"  tensors rebuilt exactly: {fmt(r.tensors_match)}"
            + ("" if r.tensors_match else f" (differ: {', '.join(r.mismatched)})")
        )
        print(
            f"  margin: {r.margin!r} (stored {r.stored_margin!r}; {'same' if r.same_margin else 'DIFFERENT'})"
        )
        print(f"  holds: {fmt(r.result.holds)}; counterexample: {fmt(r.result.counterexample)}")
    return 0 if r.same_margin and r.tensors_match else 1


def _row(r: Any) -> dict[str, Any]:
    mcr = r.min_catch_rate
    return {
        "theorem": r.theorem_id,
        "verdict": r.verdict,
        "tried": r.tried,
        "passed": r.passed,
        "failed": r.failed,
        "excl": r.excluded,
        "fail rate [95% CI]": _rate(r.failed, r.decided, r.failure_interval),
        "power": "-" if mcr is None else f"{100 * mcr:.0f}%",
        "worst margin": r.worst_margin,
        "sec": round(r.seconds, 1),
    }


def _notes(r: Any, args: argparse.Namespace, saved: list[str]) -> list[str]:
    out = []
    if r.failed:
        tag = "shrunk" if r.shrunk else "first found"
        out.append(
            f"- {r.theorem_id}: counterexample ({tag}, margin {fmt(r.counterexample_margin)}): "
            f"{_short(r.counterexample, 400)}"
        )
        if r.finding:
            out.append(f"  FINDING: {r.finding}")
    if r.vacuous:
        out.append(f"- {r.theorem_id}: vacuous (bound trivial) on {r.vacuous}/{r.decided} decided draws")
    if r.excluded:
        out.append(
            f"- {r.theorem_id}: {r.excluded} draws excluded, neither pass nor failure: "
            + "; ".join(r.exclusion_reasons)
        )
    if r.repeats:
        out.append(f"- {r.theorem_id}: {r.repeats} draws repeated an earlier instance and are counted once")
    if r.skipped:
        out.append(f"- {r.theorem_id}: {r.skipped} draws skipped (an assumption checked after the run failed)")
    if r.bias:
        out.append(f"- {r.theorem_id}: strategy: {r.bias}")
    weak = set(r.weak_variants)
    for v in r.power:
        if args.power or v.name in weak:
            what = "needed on" if v.kind == "assumption" else "caught on"
            vac = f", {v.caught_vacuous} by vacuity" if v.caught_vacuous else ""
            flag = "  <- low power" if v.name in weak else ""
            out.append(f"    {v.name}: {what} {_rate(v.caught, v.drawn, v.interval)}{vac}{flag}")
    if r.statistical_test:
        out.append(f"- {r.theorem_id}: test = {r.statistical_test}")
    if r.max_examples < args.examples:
        out.append(f"- {r.theorem_id}: capped at {r.max_examples} examples (each runs gradient descent)")
    if saved:
        out.append(
            f"- {r.theorem_id}: saved {len(saved)} counterexample(s): {saved[0]}"
            + (f" ... {saved[-1]}" if len(saved) > 1 else "")
        )
    return out


def _sweep_notes(reports: list[Any]) -> list[str]:
    out = []
    for r in reports:
        for f in r.sample[:1]:
            sweep = f.conclusion.details.get("budget_sweep")
            if sweep:
                out.append(
                    f"- {r.theorem_id}: budget sweep "
                    + "; ".join(
                        f"{s['budget']} steps: {s['verdict']} (wins {s['wins_gaussian']}-{s['wins_softmax']}, "
                        f"p {s['p_claim']:.3g} / {s['p_negation']:.3g}, power {s['power_vs_p_alt']:.2f})"
                        for s in sweep
                    )
                )
    return out


def check(args: argparse.Namespace) -> int:
    import torch

    _validate(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _load_plugins(args.load or [])
    if args.replay:
        return _replay(args)
    from attncond.proofs_check.theorems import THEOREMS, get_theorem, save_counterexample, search

    database = None
    if args.database:
        from hypothesis.database import DirectoryBasedExampleDatabase

        database = DirectoryBasedExampleDatabase(args.database)
    ids = list(THEOREMS) if args.theorem == "all" else [get_theorem(args.theorem).id]
    reports = [
        search(
            t,
            max_examples=args.examples,
            seed=args.seed,
            shrink=not args.no_shrink,
            power=args.power,
            power_examples=args.power_examples,
            database=database,
        )
        for t in progress(ids, desc="check", disable=args.json)
    ]
    saved: dict[str, list[str]] = {r.theorem_id: [] for r in reports}
    if args.save_counterexamples:
        for r in reports:
            for i, f in enumerate(r.failures[: args.max_saved]):
                saved[r.theorem_id].append(
                    str(save_counterexample(f, args.save_counterexamples, seed=args.seed, index=i))
                )
    if args.json:
        out = {
            r.theorem_id: {
                **r.to_dict(),
                "theorem": get_theorem(r.theorem_id).describe(),
                "saved": saved[r.theorem_id],
            }
            for r in reports
        }
        print(
            to_json({"examples": args.examples, "seed": args.seed, "power": bool(args.power), "theorems": out})
        )
    else:
        print(
            format_table(
                [_row(r) for r in reports],
                title=f"attncond check (examples <= {args.examples}, seed {args.seed}"
                f"{', power' if args.power else ''})",
            )
        )
        notes = [n for r in reports for n in _notes(r, args, saved[r.theorem_id])] + _sweep_notes(reports)
        if notes:
            print()
            print("\n".join(notes))
        print()
        print(
            "power = smallest catch rate of the false variants (flipped, bound x10/x100, wrong kernel; "
            "< 20% is 'low power'); --power adds the dropped-assumption and kernel variants."
        )
        print("margin scales: " + "; ".join(f"{r.theorem_id}: {r.margin_scale}" for r in reports))
    if args.plot:
        _plot_rate(args.plot, args.seed)
    bad = [r for r in reports if r.level in ("finding", "FAILED")]
    return 1 if bad and args.strict else 0


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
        verdict = (
            "holds"
            if rc.holds and rc.step_violations == 0
            else (f"violated; {rc.step_violations} steps above 1−ημ_t" if rc.holds else "violated")
        )
        label = f"bound f₀(1−ηβ')ᵗ, β'={rc.beta_prime:.3g} ({verdict})"
        ax.semilogy(t, bound, color=color, ls="--", label=label)
    ax.set_xlabel("GD step t")
    ax.set_ylabel("loss f(θ_t), log scale")
    ax.set_title(f"[S24] Thm 1 rate: N=2 n=2 D=4 d=2 H=2 (HD=8 ≥ Nn=4), seed {seed}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="property-test the theory claims (theorem registry, Hypothesis)")
    p.add_argument("theorem", nargs="?", default="all", help="a theorem id (see --list) or 'all'")
    p.add_argument(
        "--examples",
        type=int,
        default=200,
        help="Hypothesis examples per theorem (default 200; GD-based theorems are capped lower)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--power",
        action="store_true",
        help="also draw instances violating each assumption, and the wrong-kernel variants",
    )
    p.add_argument(
        "--power-examples", type=int, default=None, help="draws per power variant (default: min(examples, 50))"
    )
    p.add_argument(
        "--save-counterexamples", metavar="DIR", help="write every counterexample as DIR/<id>__<k>.npz"
    )
    p.add_argument(
        "--max-saved",
        type=int,
        default=5,
        help="counterexamples saved per theorem: the shrunk one first (default 5)",
    )
    p.add_argument(
        "--replay", metavar="FILE.npz", help="re-evaluate a saved counterexample and print its margin"
    )
    p.add_argument(
        "--database",
        metavar="DIR",
        help="keep a Hypothesis example database in DIR (replays earlier failures first)",
    )
    p.add_argument(
        "--load",
        metavar="FILE.py",
        action="append",
        help="run FILE.py first (it may call proofs_check.register for your own claims); repeatable",
    )
    p.add_argument("--plot", metavar="FILE.png", help="rate theorem: loss (log scale) vs the bound")
    p.add_argument("--no-shrink", action="store_true", help="report the first counterexample, unshrunk")
    p.add_argument("--strict", action="store_true", help="exit 1 if any claim has a finding or fails")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the matrices are tiny, threads only add overhead)",
    )
    p.set_defaults(func=check)
