"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def split_names(s: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [x.strip() for x in s.split(",") if x.strip()]


def add_model_size(p: argparse.ArgumentParser, N: int = 8, n: int = 4, D: int = 8, d: int = 4,
                   H: int = 4) -> None:
    """The model-size, seed, dtype and device flags every model-building command takes."""
    p.add_argument("--N", type=int, default=N, help=f"samples (default {N})")
    p.add_argument("--n", type=int, default=n, help=f"tokens per sample (default {n})")
    p.add_argument("--D", type=int, default=D, help=f"embedding dimension (default {D})")
    p.add_argument("--d", type=int, default=d, help=f"head width (default {d})")
    p.add_argument("--H", type=int, default=H, help=f"heads (default {H})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
