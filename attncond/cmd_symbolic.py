"""``attncond symbolic``: a sympy derivation, its closed form, the proof, and the autograd comparison."""

from __future__ import annotations

import argparse

from attncond.proofs_check.symbolic import (
    DERIVATIONS,
    SYMBOLIC_KERNELS,
    SYMBOLIC_WRT,
    compare_with_autograd,
    derive,
)

from .options import MAX_SEED, int_arg
from .report import format_table, to_json


def _derivation_kwargs(args: argparse.Namespace) -> dict:
    name = args.derivation
    if name == "softmax_jacobian":
        return {"n": args.n}
    if name == "temperature_derivative":
        return {"n": args.n, "target": args.target}
    if name == "gaussian_kernel_jacobian":
        if args.wrt not in ("W_Q", "W_K"):
            raise ValueError(f"gaussian_kernel_jacobian differentiates w.r.t. W_Q or W_K, got --wrt {args.wrt}")
        return {"n": args.n, "D": args.D, "d": args.d, "wrt": args.wrt}
    return {"kernel": args.kernel, "n": args.n, "D": args.D, "d": args.d, "H": args.H, "wrt": args.wrt}


def symbolic(args: argparse.Namespace) -> int:
    """Derive, print the simplified derivation and closed form, and compare with ``torch.func.jacrev``."""
    if args.max_entries <= 0:
        raise ValueError(f"--max-entries must be a positive integer, got {args.max_entries}")
    if args.samples <= 0:
        raise ValueError(f"--samples must be a positive integer, got {args.samples}")
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    if not regimes:
        raise ValueError("--regimes must name at least one regime")
    der = derive(args.derivation, **_derivation_kwargs(args))
    digits = args.exact_digits or None
    comparisons = [compare_with_autograd(der, seed=args.seed, dtype=args.dtype, regime=r, samples=args.samples,
                                         exact_digits=digits) for r in regimes]
    if args.json:
        print(to_json({"derivation": der.to_dict(), "comparisons": [c.to_dict() for c in comparisons]}))
        return 0 if all(c.passed for c in comparisons) else 1
    params = ", ".join(f"{k}={v}" for k, v in der.params)
    print(f"{der.name}({params}): shape {list(der.shape)}, variables {list(der.arg_names)}, "
          f"derived in {der.seconds:.2f} s")
    print(f"source: {der.source}")
    print()
    if args.latex:
        print(der.to_latex("both", max_entries=args.max_entries))
    else:
        print(f"derivation (sympy.diff, entrywise; simplification: {der.simplification}):")
        entries = der.entries("expression")
        for idx, e in entries[: args.max_entries]:
            print(f"  J{list(idx)} = {e}")
        if len(entries) > args.max_entries:
            print(f"  ... {len(entries) - args.max_entries} more entries (--max-entries)")
        print()
        print(f"closed form: {der.formula}")
        for idx, e in der.entries("closed_form")[: args.max_entries]:
            print(f"  J{list(idx)} = {e}")
    print()
    print(f"sympy proved derivation == closed form: {'yes' if der.proved else 'no'} ({der.proof_method})")
    print()
    rows = [{"regime": c.regime, "dtype": c.dtype, **r.to_dict(), "argmax": str(r.argmax)}
            for c in comparisons for r in c.rows]
    cols = ["regime", "dtype", "method", "max_abs_error", "max_rel_error", "argmax"]
    if digits:
        cols.append("max_rel_error_exact")
    tol = comparisons[0].tol
    print(format_table(rows, columns=cols + ["passed"],
                       title=f"against torch.func.jacrev in float64 (rel = max|err|/max|ref|, tol {tol:.0e}, "
                             f"{args.samples} samples, seed {args.seed})"))
    notes = []
    for c in comparisons:
        if c.jacrev_exact_error is not None:
            notes.append(f"{c.regime}: jacrev (float64) vs {c.exact_digits}-digit mpmath: "
                         f"{c.jacrev_exact_error:.3e}")
        if c.jacrev_dtype_error is not None:
            notes.append(f"{c.regime}: jacrev run in {c.dtype} vs float64 jacrev: {c.jacrev_dtype_error:.3e}")
    if notes:
        print()
        print("\n".join(notes))
    return 0 if all(c.passed for c in comparisons) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("symbolic",
                       help="sympy Jacobians of softmax/attention, proved and checked against autograd")
    p.add_argument("--derivation", default="attention_output_jacobian", choices=DERIVATIONS,
                   help="what to derive (default: attention_output_jacobian)")
    p.add_argument("--kernel", default="softmax", choices=SYMBOLIC_KERNELS)
    p.add_argument("--wrt", default="W_Q", choices=SYMBOLIC_WRT)
    p.add_argument("--target", default="jacobian", choices=["jacobian", "probabilities"],
                   help="temperature_derivative: d J_tau/d tau or d s/d tau")
    p.add_argument("--n", type=int, default=3, help="tokens (symbolic limit 4)")
    p.add_argument("--D", type=int, default=2, help="embedding dimension (symbolic limit 3)")
    p.add_argument("--d", type=int, default=2, help="head width (symbolic limit 2)")
    p.add_argument("--H", type=int, default=1, help="heads (symbolic limit 2)")
    p.add_argument("--seed", type=int_arg(0, MAX_SEED), default=0)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--regimes", default="near_uniform,default,sharp",
                   help="comma-separated attention regimes for the comparison")
    p.add_argument("--samples", type=int, default=2, help="random samples per comparison")
    p.add_argument("--exact-digits", type=int, default=30,
                   help="also compare against the derivation evaluated with mpmath at this many digits "
                        "(20..200; 0 turns it off)")
    p.add_argument("--max-entries", type=int, default=6, help="entries of the derivation to print")
    p.add_argument("--latex", action="store_true", help="print the derivation and closed form as LaTeX")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=symbolic)
