"""[S24] experiments: softmax vs Gaussian attention under full-batch GD (MATH.md §3 "MH", §5.2-5.5).

1. **Loss curves** on synthetic Gaussian regression, for ``HD ≥ Nn`` (over-parameterised,
   Theorem 1's regime) and ``HD < Nn``, training ``(W_Q, W_K, W_V)`` and ``W_Q`` only,
   over several seeds (geometric mean and min-max band).

   *Reconstructed choice (W_Q only):* targets come from a teacher that shares ``W_K``,
   ``W_V``, ``W_O`` with the student and differs in ``W_Q`` (same kernel), so the global
   optimum ``f* = 0`` is known and "reached the global optimum" means ``f_T ≤ 10⁻³ f_0``.
   With ``(W_Q, W_K, W_V)`` the targets are i.i.d. ``N(0, 1)``.
2. **Theorem 2 budget sweep** (W_Q only, ``HD ≥ Nn``): both kernels from the same seed, ``thm2_seeds``
   seeds, ``f_b/f_0`` after each budget ``b`` of ``thm2_budgets`` (one run of the largest budget; GD
   is deterministic) and ``‖∇_{W_Q} f‖`` at init and at each budget; one verdict per budget from a
   paired Wilcoxon test of ``log10(f_b/f_0)`` over seeds.
3. **Two-stage protocol** (not a claim of [S24] in MATH.md §5, so numbers and a note, no verdict): GD with
   softmax for the first half of the steps, then from the same weights with softmax or with the
   Gaussian kernel. The loss *jumps* at the switch (same weights, other kernel); the curve keeps that
   point and the runs are compared by ``f_T/f_0`` at equal total steps.
4. **Loss landscape:** ``f(W_Q + α δ_Q, W_K + β δ_K)`` around *each kernel's own trained point*
   (seed 0, ``HD ≥ Nn``, ``(W_Q, W_K, W_V)``, ``steps`` GD steps), ``δ`` random Gaussian directions
   *filter-normalised* (Li et al. 2018: each column of ``δ_h`` rescaled to the norm of the same column
   of ``W_h``); both slices on one colour scale.
5. **Fig. 1 analogue** on a generated Pathfinder task: :mod:`.s24_pathfinder`.

Step size ``η = lr_safety / L`` per run, ``L`` the local smoothness at the run's start
(:func:`proofs_check.dynamics.gradient_descent` with ``lr="auto"``), as Theorems 1 and 2 prescribe
(``η ≤ 1/L``). A fixed step ``0.4/(Nn)`` used before gave ``η·L`` from 0.5 to 2.3 across seeds and kernels at
``(4, 4, 8, 4, 4)``: most runs were outside the theorems, and the kernel with the larger curvature was
handicapped. Runs that break the descent certificate ``f_{t+1} ≤ f_t − (η/2)‖∇f_t‖²`` somewhere
(``η > 1/L`` on the path) are counted and reported, not taken as counterexamples.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attncond.models import MultiHeadAttention, jacobian_rank_bound, synthetic_regression
from attncond.models.init import gaussian_weight, make_generator
from attncond.proofs_check.dynamics import gradient_descent

from ._common import (
    ExperimentResult,
    Figure,
    Finding,
    Timer,
    check_out,
    check_seed,
    check_size,
    geo_band,
    pad,
    paired_test,
    pyplot,
    rate_ci,
    save,
    seeded,
)
from .s24_pathfinder import (
    PATHFINDER_CONFIGS,
    PathfinderConfig,
    pathfinder_finding,
    plot_pathfinder,
    run_pathfinder,
)

KERNELS = ("softmax", "gaussian")
TRAINABLE = {"QKV": ("W_Q", "W_K", "W_V"), "Q": ("W_Q",)}
GLOBAL_OPT_RTOL = 1e-3


@dataclass(frozen=True)
class S24Config:
    seeds: int
    steps: int
    grid: int
    lr_safety: float = 1.0
    over: tuple[int, int, int, int, int] = (4, 4, 8, 4, 4)   # N, n, D, d, H with HD >= Nn
    under: tuple[int, int, int, int, int] = (16, 8, 8, 4, 2)  # HD < Nn
    span: float = 1.0
    thm2_seeds: int = 12
    thm2_budgets: tuple[int, ...] = (40, 400, 4000)
    pathfinder: PathfinderConfig = PATHFINDER_CONFIGS["full"]


CONFIGS = {
    "smoke": S24Config(seeds=2, steps=40, grid=5, thm2_seeds=6, thm2_budgets=(10, 40),
                       pathfinder=PATHFINDER_CONFIGS["smoke"]),
    "quick": S24Config(seeds=3, steps=400, grid=21, thm2_seeds=8, thm2_budgets=(40, 400, 1000),
                       pathfinder=PATHFINDER_CONFIGS["quick"]),
    "full": S24Config(seeds=6, steps=2000, grid=41),
}

_KOPTS = {"gaussian": {"on_underflow": "ignore"}}


def _model(shape: tuple[int, ...], kernel: str, trainable: tuple[str, ...], seed: int) -> MultiHeadAttention:
    N, n, D, d, H = shape
    return MultiHeadAttention(D, d, H, kernel=kernel, trainable=trainable, seed=seed,
                              kernel_options=_KOPTS.get(kernel))


def _task(shape: tuple[int, ...], kernel: str, which: str, seed: int):
    """Model, inputs and targets for one run."""
    N, n, D, d, H = shape
    data = synthetic_regression(N, n, D, seed=seed)
    m = _model(shape, kernel, TRAINABLE[which], seed)
    if which == "QKV":
        return m, data.X, data.y
    teacher = _model(shape, kernel, TRAINABLE[which], seed)  # shares W_K, W_V, W_O
    WQ = gaussian_weight((H, D, d), generator=make_generator(seed + 7919))
    with torch.no_grad():
        teacher.W_Q.copy_(WQ)
        y = teacher(data.X)
    return m, data.X, y


def _gd(m: MultiHeadAttention, X: torch.Tensor, y: torch.Tensor, steps: int, safety: float,
        params: dict[str, torch.Tensor] | None = None, callback=None):
    """GD with ``η = safety / L``, ``L`` the local smoothness at the start (``lr="auto"``)."""
    return gradient_descent(lambda p: m.loss(p, X, y), params or m.params(), steps=steps, lr="auto",
                            safety=safety, callback=callback)


def _landscape(m: MultiHeadAttention, params: dict[str, torch.Tensor], X, y, grid: int, span: float,
               seed: int) -> dict[str, Any]:
    g = make_generator(seed + 104729)
    dirs = {}
    for k in ("W_Q", "W_K"):
        W = params[k]
        delta = torch.randn(W.shape, generator=g, dtype=torch.float64).to(W)
        # filter normalisation: each output column of each head gets the norm of W's column
        delta = delta / delta.norm(dim=-2, keepdim=True) * W.norm(dim=-2, keepdim=True)
        dirs[k] = delta
    alphas = np.linspace(-span, span, grid)
    Z = np.zeros((grid, grid))
    with torch.no_grad():
        for i, b in enumerate(alphas):
            for j, a in enumerate(alphas):
                p = dict(params)
                p["W_Q"] = params["W_Q"] + a * dirs["W_Q"]
                p["W_K"] = params["W_K"] + b * dirs["W_K"]
                Z[i, j] = float(m.loss(p, X, y))
    return {"alpha": alphas.tolist(), "beta": alphas.tolist(), "loss": Z.tolist()}


def _grad_norm_WQ(m: MultiHeadAttention, params: dict[str, torch.Tensor], X, y) -> float:
    """``‖∇_{W_Q} f‖_F`` at ``params`` (the quantity whose vanishing [S24] Thm 2 blames for softmax)."""
    W = params["W_Q"].detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.loss({**params, "W_Q": W}, X, y), [W])
    return float(g.norm())


def _curves(cfg: S24Config, settings, seed: int, prog):
    """Every loss curve, and the trained parameters of seed 0 (HD ≥ Nn, QKV) per kernel."""
    jobs = [(s, w, k, r) for s in settings for w in TRAINABLE for k in KERNELS for r in range(cfg.seeds)]
    curves: dict[str, Any] = {s: {w: {k: [] for k in KERNELS} for w in TRAINABLE} for s in settings}
    diverged: dict[str, int] = {}
    trained: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]] = {}
    for s, w, k, r in prog(jobs, desc="S24 curves", total=len(jobs)):
        shape = settings[s]
        m, X, y = _task(shape, k, w, seed + r)
        p, tr = _gd(m, X, y, cfg.steps, cfg.lr_safety)
        curves[s][w][k].append(pad(tr.losses, cfg.steps + 1))
        rec = steps.setdefault(f"{s}/{w}/{k}", {"eta": [], "L": [], "descent_violations": []})
        rec["eta"].append(tr.lr)
        rec["L"].append(tr.smoothness.L)
        rec["descent_violations"].append(len(tr.descent_violations()))
        if tr.diverged:
            diverged[f"{s}/{w}/{k}"] = diverged.get(f"{s}/{w}/{k}", 0) + 1
        if (s, w, r) == ("HD>=Nn", "QKV", 0):
            trained[k] = (m, {**m.all_params(), **p}, X, y)
    return curves, diverged, trained, steps


def _two_stage(cfg: S24Config, seed: int, prog) -> dict[str, Any]:
    """Softmax for ``steps // 2`` steps, then either kernel from the same weights, every seed.

    ``curves[k][t]`` is the loss at step ``t`` of the kernel in use at ``t``: entry ``half + 1``
    is the stage-2 kernel's loss *at the switch* (the same weights, other kernel), so the curve
    has ``steps + 2`` entries and shows the jump; ``jump[k] = f_switch(k) / f_half(softmax)``.
    """
    half = cfg.steps // 2
    shape = cfg.over
    curves: dict[str, list[list[float]]] = {f"softmax->{k}": [] for k in KERNELS}
    jump: dict[str, list[float]] = {f"softmax->{k}": [] for k in KERNELS}
    for r in prog(range(cfg.seeds), desc="S24 two-stage", total=cfg.seeds):
        m1, X, y = _task(shape, "softmax", "QKV", seed + r)
        p1, tr1 = _gd(m1, X, y, half, cfg.lr_safety)
        for k in KERNELS:
            m2 = _model(shape, k, TRAINABLE["QKV"], seed + r)
            _, tr2 = _gd(m2, X, y, cfg.steps - half, cfg.lr_safety, params=p1)  # its own L at the switch
            curves[f"softmax->{k}"].append(pad(tr1.losses + tr2.losses, cfg.steps + 2))
            jump[f"softmax->{k}"].append(tr2.losses[0] / tr1.losses[-1] if tr1.losses[-1] > 0 else math.nan)
    return {"curves": curves, "jump": jump, "half": half}


def _thm2(cfg: S24Config, seed: int, prog) -> dict[str, Any]:
    """[S24] Thm 2 budget sweep: W_Q only, HD ≥ Nn, ``thm2_seeds`` seeds, both kernels per seed.

    One GD run of ``max(thm2_budgets)`` steps per (seed, kernel); GD is deterministic, so the
    loss after ``b`` steps of it is the result at budget ``b``. Records ``f_b/f_0`` and
    ``‖∇_{W_Q} f‖`` at init and at each budget.
    """
    budgets = sorted(cfg.thm2_budgets)
    shape = cfg.over
    rows = []
    jobs = [(r, k) for r in range(cfg.thm2_seeds) for k in KERNELS]
    for r, k in prog(jobs, desc="S24 Thm 2 sweep", total=len(jobs)):
        m, X, y = _task(shape, k, "Q", seed + r)
        grads: dict[int, float] = {}

        def cb(t, theta, f, m=m, X=X, y=y, grads=grads):
            if t == 0 or t in budgets:
                grads[t] = _grad_norm_WQ(m, {**m.all_params(), **theta}, X, y)

        _, tr = _gd(m, X, y, budgets[-1], cfg.lr_safety, callback=cb)
        f = pad(tr.losses, budgets[-1] + 1)
        rows.append({"seed": seed + r, "kernel": k, "f0": f[0], "diverged": tr.diverged, "eta": tr.lr,
                     "L": tr.smoothness.L, "descent_violations": len(tr.descent_violations()),
                     "ratio": {str(b): f[b] / f[0] for b in budgets},
                     "grad_WQ": {str(t): v for t, v in grads.items()}})
    return {"budgets": budgets, "rows": rows, "rtol": GLOBAL_OPT_RTOL}


def run(size: str = "quick", seed: int = 0, out: str | Path | None = None, *,
        plots: bool = True, progress=None) -> ExperimentResult:
    """Run the [S24] experiments at ``size`` (``"smoke"``, ``"quick"``, ``"full"``).

    Returns an :class:`ExperimentResult` whose ``numbers`` hold every loss curve
    (``curves[setting][trainable][kernel]`` = one list per seed), the two-stage curves and
    jumps, the Thm 2 budget sweep, the landscape grids (each kernel at its own trained point),
    the Pathfinder runs and the summary statistics that the findings quote.
    """
    size, seed, outp = check_size(size), check_seed(seed), check_out(out)
    cfg = CONFIGS[size]
    seeded(seed)
    prog = progress or (lambda it, **kw: it)
    settings = {"HD>=Nn": cfg.over, "HD<Nn": cfg.under}
    with Timer() as timer, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        curves, diverged, trained, gd_steps = _curves(cfg, settings, seed, prog)
        two_stage = _two_stage(cfg, seed, prog)
        thm2 = _thm2(cfg, seed, prog)
        landscape = {k: _landscape(m, p, X, y, cfg.grid, cfg.span, seed) for k, (m, p, X, y) in trained.items()}
        pf = run_pathfinder(cfg.pathfinder, seed, prog)
    numbers = _summarise(cfg, curves, two_stage, landscape, diverged)
    numbers["thm2"] = thm2
    numbers["gd_steps"] = gd_steps
    numbers["pathfinder"] = pf
    figures: list[Figure] = []
    if plots:
        _plot(cfg, numbers, outp, figures)
        plot_pathfinder(cfg.pathfinder, pf, outp, figures)
    findings = _findings(cfg, numbers)
    config = {"size": size, **{k: v for k, v in cfg.__dict__.items() if k != "pathfinder"},
              "pathfinder": cfg.pathfinder.__dict__,
              "lr": f"eta = {cfg.lr_safety:g}/L, L the local smoothness at each run's start",
              "shapes (N, n, D, d, H)": {s: list(v) for s, v in settings.items()}}
    ts = numbers["two_stage_summary"]
    return ExperimentResult("S24", "[S24] softmax vs Gaussian attention under GD", size, seed, config,
                            numbers, tuple(figures), tuple(findings),
                            ("W_Q-only targets come from a teacher differing only in W_Q (reconstructed), "
                             "so f* = 0; QKV targets are i.i.d. N(0,1).",
                             "Gaussian kernel unnormalised (MATH.md §2), underflow warnings silenced.",
                             "Landscape: each kernel's slice is centred on its own trained point (seed 0, "
                             f"HD≥Nn, (W_Q, W_K, W_V), {cfg.steps} GD steps); both panels share one colour "
                             "scale.",
                             _two_stage_note(ts)),
                            timer.seconds)


def _two_stage_note(ts: dict[str, Any]) -> str:
    g, s_ = ts["softmax->gaussian"], ts["softmax->softmax"]
    pt = ts["paired_final"]
    return ("Two-stage protocol (not a claim of [S24] in MATH.md §5, so no verdict): at the switch the loss "
            f"jumps ×{g['jump_median']:.3g} (range ×{g['jump_min']:.3g}..×{g['jump_max']:.3g}) when the "
            "Gaussian kernel takes over the softmax weights. Compared at equal total steps, median f_T/f_0 is "
            f"{g['median_final_over_initial']:.3g} (→Gaussian) vs {s_['median_final_over_initial']:.3g} "
            f"(→softmax); {pt.statement('→Gaussian', '→softmax')}. The old metric f_T/f_switch measured "
            "from the jumped loss and so "
            "credited the Gaussian with recovering from its own jump.")


def _ratio_stats(runs: list[list[float]]) -> dict[str, float]:
    fr = [r[-1] / r[0] for r in runs if math.isfinite(r[-1]) and r[0] > 0]
    return {"median_final_over_initial": float(np.median(fr)) if fr else math.nan,
            "fraction_global_opt": float(np.mean([x <= GLOBAL_OPT_RTOL for x in fr])) if fr else 0.0,
            "runs": len(runs), "finite_runs": len(fr)}


def _steps_to(runs: list[list[float]], rtol: float) -> float:
    """Median first step with ``f_t ≤ rtol·f_0`` (``inf`` when not reached)."""
    out = []
    for r in runs:
        hit = [t for t, v in enumerate(r) if math.isfinite(v) and v <= rtol * r[0]]
        out.append(hit[0] if hit else math.inf)
    return float(np.median(out))


def _summarise(cfg, curves, two_stage, landscape, diverged) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for s, by_w in curves.items():
        for w, by_k in by_w.items():
            for k, runs in by_k.items():
                summary[f"{s}/{w}/{k}"] = {**_ratio_stats(runs), "median_steps_to_1e-3": _steps_to(runs, 1e-3)}
    ts: dict[str, Any] = {k: _ratio_stats(v) for k, v in two_stage["curves"].items()}
    for k, jumps in two_stage["jump"].items():
        ts[k].update({"jump_median": float(np.median(jumps)), "jump_min": float(np.min(jumps)),
                      "jump_max": float(np.max(jumps)), "jumps": jumps})
    fin = {k: [r[-1] / r[0] if math.isfinite(r[-1]) else math.inf for r in v]
           for k, v in two_stage["curves"].items()}
    with np.errstate(divide="ignore"):
        ts["paired_final"] = paired_test(np.log10(fin["softmax->gaussian"]), np.log10(fin["softmax->softmax"]))
    land = {}
    for k, L in landscape.items():
        Z = np.asarray(L["loss"])
        c = Z.shape[0] // 2
        land[k] = {"center": float(Z[c, c]), "trained_loss": curves["HD>=Nn"]["QKV"][k][0][-1],
                   "min": float(np.nanmin(Z)), "max": float(np.nanmax(Z)),
                   "max_over_center": float(np.nanmax(Z) / Z[c, c]) if Z[c, c] > 0 else math.inf}
    return {"curves": curves, "two_stage": two_stage["curves"], "two_stage_jump": two_stage["jump"],
            "landscape": landscape, "summary": summary,
            "two_stage_summary": ts, "landscape_summary": land, "diverged_runs": diverged}


def _plot(cfg: S24Config, numbers: dict[str, Any], out: Path | None, figures: list[Figure]) -> None:
    plt = pyplot()
    colors = {"softmax": "tab:blue", "gaussian": "tab:orange"}
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), sharex=True)
    for i, s in enumerate(("HD>=Nn", "HD<Nn")):
        for j, w in enumerate(TRAINABLE):
            ax = axes[i, j]
            for k in KERNELS:
                g, lo, hi = geo_band(numbers["curves"][s][w][k])
                t = np.arange(len(g))
                ax.semilogy(t, g, color=colors[k], label=f"{k} (geo-mean of {cfg.seeds} seeds)")
                ax.fill_between(t, lo, hi, color=colors[k], alpha=0.2)
            ax.set_title(f"{s}, trained: {'(W_Q, W_K, W_V)' if w == 'QKV' else 'W_Q only'}", fontsize=9)
            ax.set_ylabel("loss f(θ_t) (log scale)")
            ax.grid(alpha=0.3, which="both")
            if i == 1:
                ax.set_xlabel("GD step t")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("[S24] full-batch GD: softmax vs Gaussian attention (band = min..max over seeds)", fontsize=10)
    fig.tight_layout()
    save(fig, out, "s24_loss_curves.png",
         "[S24] GD loss curves, softmax vs Gaussian, HD≥Nn and HD<Nn, (W_Q,W_K,W_V) and W_Q only; "
         "shaded band = min..max over seeds.", figures)

    fig, ax = plt.subplots(figsize=(6, 4))
    half = cfg.steps // 2
    t = np.r_[np.arange(half + 1), np.arange(half, cfg.steps + 1)]  # the switch step appears twice
    for k, c in (("softmax->softmax", "tab:blue"), ("softmax->gaussian", "tab:orange")):
        g, lo, hi = geo_band(numbers["two_stage"][k])
        ax.semilogy(t, g, color=c, label=k)
        ax.fill_between(t, lo, hi, color=c, alpha=0.2)
    ax.axvline(half, color="gray", ls="--", lw=1,
               label="kernel switch (vertical jump = same weights, other kernel)")
    ax.set_xlabel("GD step t")
    ax.set_ylabel("loss f(θ_t) (log scale)")
    ax.set_title("[S24] two-stage: softmax, then softmax or Gaussian (HD≥Nn)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save(fig, out, "s24_two_stage.png", "[S24] two-stage protocol: softmax for the first half, then "
         "either kernel from the same weights; the jump at the switch is drawn.", figures)
    _plot_landscape(plt, numbers, out, figures)
    _plot_thm2(plt, numbers, out, figures)


def _plot_landscape(plt, numbers: dict[str, Any], out: Path | None, figures: list[Figure]) -> None:
    """Both kernels' slices, each centred on its own trained point, on one shared colour scale."""
    logs = {k: np.log10(np.maximum(np.asarray(numbers["landscape"][k]["loss"]), 1e-300)) for k in KERNELS}
    vmin = min(float(np.nanmin(z)) for z in logs.values())
    vmax = max(float(np.nanmax(z)) for z in logs.values())
    levels = np.linspace(vmin, vmax, 21)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    cs = None
    for ax, k in zip(axes, KERNELS, strict=True):
        L = numbers["landscape"][k]
        cs = ax.contourf(L["alpha"], L["beta"], logs[k], levels=levels, cmap="viridis")
        ax.contour(L["alpha"], L["beta"], logs[k], levels=levels[::2], colors="k", linewidths=0.4)
        f0 = numbers["landscape_summary"][k]["center"]
        ax.plot([0], [0], "r*", ms=9, label=f"{k}'s trained point (f = {f0:.2g})")
        ax.set_xlabel("α (filter-normalised direction in W_Q)")
        ax.set_ylabel("β (filter-normalised direction in W_K)")
        ax.set_title(f"{k}: log10 loss around its own trained point", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    fig.colorbar(cs, ax=list(axes), label="log10 f (shared scale)")
    fig.suptitle("[S24] 2-D loss slices (seed 0, HD≥Nn, (W_Q, W_K, W_V) trained)", fontsize=10)
    save(fig, out, "s24_landscape.png", "[S24] loss landscape slices along random filter-normalised "
         "directions in W_Q (α) and W_K (β), each kernel at its own trained point, one colour scale.", figures)


def _plot_thm2(plt, numbers: dict[str, Any], out: Path | None, figures: list[Figure]) -> None:
    """f_b/f_0 per seed at each budget, both kernels, seeds paired by a line."""
    th = numbers["thm2"]
    budgets = th["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.2 * len(budgets), 3.6), sharey=True)
    for ax, b in zip(np.atleast_1d(axes), budgets, strict=True):
        by = {k: [r["ratio"][str(b)] for r in th["rows"] if r["kernel"] == k] for k in KERNELS}
        for a_, c_ in zip(by["softmax"], by["gaussian"], strict=True):
            ax.plot([0, 1], [max(a_, 1e-300), max(c_, 1e-300)], color="gray", lw=0.7, alpha=0.6)
        for i, k in enumerate(KERNELS):
            ax.scatter([i] * len(by[k]), np.maximum(by[k], 1e-300), color=("tab:blue", "tab:orange")[i])
        ax.axhline(th["rtol"], color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xticks([0, 1], list(KERNELS))
        ax.set_title(f"{b} GD steps", fontsize=9)
        ax.grid(alpha=0.3, which="both", axis="y")
    np.atleast_1d(axes)[0].set_ylabel("f_b / f_0 (log; dotted: 'optimum reached')")
    fig.suptitle("[S24] Thm 2 (W_Q only): both kernels per seed, budget sweep", fontsize=10)
    fig.tight_layout()
    save(fig, out, "s24_thm2_budgets.png", "[S24] Theorem 2 budget sweep: loss reduction per seed (lines pair "
         "the two kernels of one seed) after each step budget.", figures)


def _findings(cfg: S24Config, numbers: dict[str, Any]) -> list[Finding]:
    S = numbers["summary"]
    scale = (f"N,n,D,d,H = {cfg.over} (HD≥Nn) and {cfg.under} (HD<Nn); {cfg.seeds} seeds; "
             f"{cfg.steps} GD steps")
    reached = {k: round(S[f"HD>=Nn/QKV/{k}"]["fraction_global_opt"] * S[f"HD>=Nn/QKV/{k}"]["runs"])
               for k in KERNELS}
    fails = sum(cfg.seeds - v for v in reached.values())
    # a run that did not reach the tolerance in the budget is no counterexample to a linear rate;
    # one that diverged or ended above f_0 is, unless it broke the descent certificate (eta > 1/L on its
    # path: outside the theorem's step-size hypothesis)
    gd = numbers["gd_steps"]
    outside = {k: gd[f"HD>=Nn/QKV/{k}"]["descent_violations"] for k in KERNELS}
    bad = sum(1 for k in KERNELS for c, v in zip(numbers["curves"]["HD>=Nn"]["QKV"][k], outside[k], strict=True)
              if v == 0 and (not math.isfinite(c[-1]) or c[-1] >= c[0]))
    n_out = sum(v > 0 for k in KERNELS for v in outside[k])
    verdict = "held" if fails == 0 else ("finding" if bad else "inconclusive")
    over = [S[f"HD>=Nn/QKV/{k}"]["median_final_over_initial"] for k in KERNELS]
    under = [S[f"HD<Nn/QKV/{k}"]["median_final_over_initial"] for k in KERNELS]
    out = [Finding(
        "S24", "Theorem 1 (the paper: a linear rate to 0): with HD ≥ Nn, GD on (W_Q, W_K, W_V) with "
        f"η = c/L(θ_0) drives the loss below {GLOBAL_OPT_RTOL:g}·f_0 within the step budget for both kernels; "
        "HD < Nn is outside the theorem. (This tests reaching the tolerance, not the rate; the rate bound "
        "f_t ≤ f_0(1 − ηβ′)^t is the registered claim S24.thm1.rate of `attncond check`.)", verdict,
        f"runs reaching f_T ≤ {GLOBAL_OPT_RTOL:g}·f_0 with HD≥Nn: softmax {reached['softmax']}/{cfg.seeds}, "
        f"Gaussian {reached['gaussian']}/{cfg.seeds}; median f_T/f_0 with HD≥Nn: softmax {over[0]:.2e}, "
        f"Gaussian {over[1]:.2e}; with HD<Nn: softmax {under[0]:.2e}, Gaussian {under[1]:.2e}; "
        f"η = {cfg.lr_safety:g}/L(θ_0) per run, {n_out} of {2 * cfg.seeds} HD≥Nn runs broke the descent "
        "certificate f_{t+1} ≤ f_t − (η/2)‖∇f_t‖² somewhere (η > 1/L on the path, outside the theorem). "
        + _rank_context(cfg.under), scale,
        2 * cfg.seeds, f"runs not reaching it {rate_ci(fails, 2 * cfg.seeds)}, runs diverging or ending "
        "above f_0: "
        f"{bad} (both kernels pooled)")]
    out += _thm2_findings(cfg, numbers["thm2"])
    out.append(pathfinder_finding(cfg.pathfinder, numbers["pathfinder"]))
    return out


def _rank_context(shape: tuple[int, int, int, int, int]) -> str:
    """What :func:`models.jacobian_rank_bound` says of each kernel at ``shape`` (``(W_Q, W_K, W_V)``):
    below ``Nn``, ``rank J < Nn`` at *every* weight, so the reachable outputs form a null set of
    ``R^{Nn}`` and i.i.d. targets are almost surely not interpolated — a floor forced by counting,
    not by conditioning."""
    N, n, D, d, H = shape
    parts = []
    floor = " < Nn (μ = 0 at every weight; the reachable outputs are a null set, so f = 0 is a.s. not attained)"
    for k in KERNELS:
        rb = jacobian_rank_bound(_model(shape, k, TRAINABLE["QKV"], 0)).bound
        parts.append(f"{k} rank J ≤ {rb}" + (floor if rb < N * n else ""))
    return f"At HD<Nn (Nn = {N * n}, p = {3 * H * D * d}): " + "; ".join(parts) + "."


def _thm2_findings(cfg: S24Config, th: dict[str, Any]) -> list[Finding]:
    """One finding per budget: paired Wilcoxon of log10(f_b/f_0), Gaussian vs softmax, over seeds."""
    rows = th["rows"]
    n = cfg.thm2_seeds
    g0 = {k: [r["grad_WQ"]["0"] for r in rows if r["kernel"] == k] for k in KERNELS}
    grad_txt = ("‖∇_{W_Q} f‖ at init: " + ", ".join(
        f"{k} median {np.median(g0[k]):.2g} (min {np.min(g0[k]):.2g})" for k in KERNELS))
    out = []
    for b in th["budgets"]:
        ratio = {k: np.array([r["ratio"][str(b)] for r in rows if r["kernel"] == k]) for k in KERNELS}
        with np.errstate(divide="ignore"):
            pt = paired_test(np.log10(ratio["gaussian"]), np.log10(ratio["softmax"]))
        hit = {k: rate_ci(int((ratio[k] <= th["rtol"]).sum()), n) for k in KERNELS}
        out.append(Finding(
            "S24", f"Theorem 2 ({b} GD steps): training W_Q only, Gaussian attention reaches the global "
            "optimum "
            "more often and faster than softmax.", pt.verdict(claim_a_better=True),
            f"median f_b/f_0: Gaussian {np.median(ratio['gaussian']):.2e}, "
            f"softmax {np.median(ratio['softmax']):.2e}; "
            f"optimum (f_b ≤ {th['rtol']:g}·f_0, f* = 0 by construction) reached: Gaussian {hit['gaussian']}, "
            f"softmax {hit['softmax']}; {grad_txt} (HD≥Nn).",
            f"N,n,D,d,H = {cfg.over}; {n} seeds; budget {b} of the sweep {list(th['budgets'])}", n,
            pt.statement("Gaussian", "softmax") + " on log10(f_b/f_0)"))
    return out
