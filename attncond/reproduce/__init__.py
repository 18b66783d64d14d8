"""``attncond reproduce``: the four papers' experiments at laptop scale (issue 7).

Each module runs one paper's experiments and returns an :class:`ExperimentResult`
(config, every number, figures, findings):

* :mod:`.s24` — softmax vs Gaussian attention under GD, Thm 2 budget sweep, two-stage protocol, loss
  landscape, and (:mod:`.s24_pathfinder`) a synthetic Pathfinder analogue of Fig. 1;
* :mod:`.q25` — κ(Z) with/without residual at N < D, N ≥ D and D = 1, GD of the block and of a
  multi-layer ``Stack``, rate vs σ²_min/σ²_max;
* :mod:`.i25` — κ of the softmax Jacobian and local Hessian vs sparsity, GD iterations from random starts
  and from the slowest eigenvector;
* :mod:`.h24` — tiny ViT on the two-step digits task, softmax vs NormSoftmax vs heat treatment, Q/K vs V
  gradient curves.

Every :class:`Finding` is ``held`` / ``finding`` / ``inconclusive`` with its seeds count and a confidence
statement (Clopper–Pearson interval or paired-test p-value with n; helpers in :mod:`._common`).

Sizes: ``"smoke"`` (tests, seconds), ``"quick"`` (CI, ``all`` in minutes), ``"full"`` (under an hour).
:func:`run_experiments` runs a selection; :func:`.report.write_report` writes ``index.md`` and
``results.json``. Plotting imports matplotlib lazily (this is the CLI layer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from . import h24, i25, q25, s24
from ._common import SIZES, ExperimentResult, Figure, Finding, check_out, check_seed, check_size, prepare_out
from .report import render_markdown, write_report

EXPERIMENTS: dict[str, Callable[..., ExperimentResult]] = {
    "S24": s24.run, "Q25": q25.run, "I25": i25.run, "H24": h24.run}


def resolve(names: str | Sequence[str]) -> list[str]:
    """``"all"`` or names (case-insensitive) -> canonical names in :data:`EXPERIMENTS` order."""
    if isinstance(names, str):
        names = [names]
    try:
        items = [str(n).upper() for n in names]
    except TypeError:
        raise TypeError("names must be a string or a sequence of strings") from None
    if not items:
        raise ValueError(f"name at least one experiment: {', '.join(EXPERIMENTS)} or all")
    if "ALL" in items:
        return list(EXPERIMENTS)
    for n in items:
        if n not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {n!r}; known: {', '.join(EXPERIMENTS)}, all")
    return [n for n in EXPERIMENTS if n in items]


def run_experiments(names: str | Sequence[str] = "all", *, size: str = "quick", seed: int = 0,
                    out: str | Path | None = None, plots: bool = True,
                    progress: Callable | None = None) -> list[ExperimentResult]:
    """Run the named experiments (``"all"``, ``"S24"``, …) at ``size`` with ``seed``.

    Figures go to ``out`` when it is given (and ``plots`` is true); nothing else is written.
    """
    chosen = resolve(names)
    size, seed, outp = check_size(size), check_seed(seed), check_out(out)
    return [EXPERIMENTS[n](size, seed, outp, plots=plots, progress=progress) for n in chosen]


__all__ = ["EXPERIMENTS", "SIZES", "ExperimentResult", "Figure", "Finding", "prepare_out", "render_markdown",
           "resolve", "run_experiments", "write_report"]
