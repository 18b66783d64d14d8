"""``attncond train``: GD of the [S24] model with several kernels on the same data."""

from __future__ import annotations

import argparse

from attncond.models import MultiHeadAttention, synthetic_regression
from attncond.proofs_check.dynamics import gradient_descent

from .options import add_model_size, int_arg
from .options import split_names as _split
from .progress import progress
from .report import format_table, pyplot, save_figure, to_json


def train(args: argparse.Namespace) -> int:
    """GD on the [S24] model with several kernels on the same data and initial weights."""
    kernels = _split(args.kernels)
    if not kernels:
        raise ValueError("--kernels must name at least one kernel")
    if args.every <= 0:
        raise ValueError(f"--every must be a positive integer, got {args.every}")
    data = synthetic_regression(args.N, args.n, args.D, seed=args.seed, dtype=args.dtype,
                                device=args.device)
    models = {k: MultiHeadAttention(args.D, args.d, args.H, kernel=k,
                                    trainable=_split(args.trainable), regime=args.regime,
                                    dtype=args.dtype, device=args.device, seed=args.seed)
              for k in kernels}
    traces = {}
    for k in progress(kernels, desc="train", disable=args.json):
        m = models[k]
        _, traces[k] = gradient_descent(lambda p, m=m: m.loss(p, data.X, data.y), m.params(),
                                        steps=args.steps, lr=args.lr)
    steps = sorted(set(range(0, args.steps + 1, args.every)) | {args.steps})
    rows = [{"step": t, **{f"loss[{k}]": traces[k].losses[t] if t < len(traces[k].losses)
                           else None for k in kernels}} for t in steps]
    result = {
        "config": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "HD": args.H * args.D, "Nn": args.N * args.n,
        "traces": {k: tr.to_dict() for k, tr in traces.items()},
        "final": {k: tr.final_loss for k, tr in traces.items()},
    }
    if args.json:
        print(to_json(result))
    else:
        print(format_table(rows, title=(
            f"[S24] full-batch GD, N={args.N} n={args.n} D={args.D} d={args.d} H={args.H} "
            f"(HD={args.H * args.D}, Nn={args.N * args.n}), lr={args.lr}")))
        print()
        print(format_table([{"kernel": k, "f_0": tr.losses[0], "f_final": tr.final_loss,
                             "ratio": tr.final_loss / tr.losses[0], "diverged": tr.diverged}
                            for k, tr in traces.items()], title="final losses"))
    if args.plot:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, tr in traces.items():
            ax.semilogy(range(len(tr.losses)), tr.losses, label=k)
        ax.set_xlabel("GD step")
        ax.set_ylabel("loss f(θ_t) (log scale)")
        ax.set_title("[S24] softmax vs Gaussian attention")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, args.plot, dpi=110)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="full-batch GD of the [S24] model, kernels side by side")
    add_model_size(t)
    t.add_argument("--kernels", default="softmax,gaussian", help="comma-separated kernel names")
    t.add_argument("--trainable", default="W_Q,W_K,W_V")
    t.add_argument("--regime", default="default")
    t.add_argument("--steps", type=int_arg(), default=300)
    t.add_argument("--lr", type=float, default=0.02)
    t.add_argument("--every", type=int_arg(), default=25, help="table row every k steps")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.add_argument("--plot", metavar="FILE.png", help="loss curves on a log scale")
    t.set_defaults(func=train)
