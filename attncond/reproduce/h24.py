"""[H24] experiments: the two-step digits task, a tiny ViT, softmax vs NormSoftmax vs heat treatment.

Data: :func:`models.data.digits_two_step` (2×2 tiles of scikit-learn's bundled 8×8 digits; the two
indicator tiles are 1s or 2s; the label is the class of the top-left tile if the indicators
match, else of the top-right one), train and test tiles from disjoint halves of the digits,
:func:`models.data.patchify` into tokens of ``patch×patch`` pixels (smoke: 16 tokens of 4×4; quick and
full: 4 tokens of 8×8, one per digit tile, which buys ~4× more steps per second; the task is unchanged).

Model: :class:`models.vit.TinyViT` (pre-norm, CLS pooling), trained with AdamW on minibatches
(as [H24]; full-batch GD is not the paper's protocol here). Variants:

* ``softmax`` — ``softmax(QKᵀ/√d)`` (the baseline);
* ``normsoftmax`` — :func:`models.kernels.normsoftmax` (row variance, MATH.md §2);
* ``heat`` — ``temperature`` kernel with logit multiplier ``heat_treatment(t/T, start=3.0,
  end=heat_end)``; **reconstructed**: the paper ends at 0.125 = 1/√64 for d = 64, we end at
  ``1/√d`` of our head width (i.e. the standard softmax) unless ``heat_end`` is given.

Measured per run: test accuracy curve; mean ``|∂L/∂W|`` of ``W_Q``, ``W_K``, ``W_V`` per layer
(minibatch gradients at every evaluation, averaged over the run, and as curves over training:
``qk_abs_grad_curve``, ``v_abs_grad_curve``); at initialisation, ``init_grad_seeds`` extra seeds give the
paired tests behind the gradient verdicts (one minibatch each, cheap); the first evaluated step at
which the run reaches 95% of the baseline's (median) final accuracy; the accuracy of a linear
*probe* on the detached CLS features predicting whether the indicators match.

"Learned the intermediate task" (**reconstructed** criterion): final test accuracy above
``learned_acc`` (0.7). A model blind to the indicators can at best pick one of the two target
tiles, ≈ 0.5 + 0.5·P(both target tiles share a class) ≈ 0.55 with perfect digit recognition;
:func:`blind_ceiling` measures that number exactly on each test set. The training accuracy (on
``n_test`` training images) is recorded too, to tell memorisation from learning the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attncond.models.data import digits_two_step, patchify
from attncond.models.kernels import heat_treatment
from attncond.models.vit import TinyViT

from ._common import (
    ExperimentResult,
    Figure,
    Finding,
    Timer,
    check_out,
    check_seed,
    check_size,
    mean_std,
    paired_test,
    pyplot,
    rate_ci,
    save,
    seeded,
    sign_test_p,
    sign_verdict,
)

VARIANTS = ("softmax", "normsoftmax", "heat")
_KERNEL = {"softmax": "softmax", "normsoftmax": "normsoftmax", "heat": "temperature"}


@dataclass(frozen=True)
class H24Config:
    seeds: int
    steps: int
    n_train: int
    n_test: int
    eval_every: int
    D: int = 32
    H: int = 2
    L: int = 2
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 0
    heat_start: float = 3.0
    heat_end: float | None = None
    learned_acc: float = 0.7
    dtype: str = "float32"
    patch: int = 4
    init_grad_seeds: int = 20  # cheap: one minibatch gradient per seed and variant, at initialisation


# Patch 8 makes one token per digit tile (4 tokens + CLS), about 4x cheaper per step than patch 4, so
# the budget buys more steps; the task itself is unchanged. Training sets are large (each image is a
# fresh combination of tiles) because with 4,096 images the ViT memorises the training combinations
# (patch 8, batch 256, 500 steps: train accuracy 0.83, test 0.53) instead of learning the indicator rule.
# Even so, at this width no variant got past the indicator-blind plateau (≈ 0.56) in our runs: softmax and
# NormSoftmax stay at 0.53-0.57 test accuracy for 4,000 steps of batch 64 on 65,536 images.
CONFIGS = {
    "smoke": H24Config(seeds=1, steps=30, n_train=256, n_test=256, eval_every=10),
    "quick": H24Config(seeds=2, steps=600, n_train=32768, n_test=512, eval_every=50, lr=3e-3, patch=8),
    # measured (softmax, seed 0, a loop identical to train_one): test accuracy 0.55 for 3,000 steps, then a
    # jump to 0.89 (match probe 0.93) between steps 3,000 and 3,500; 133 s per run at 1 thread: 2 seeds fit
    "full": H24Config(seeds=2, steps=5000, n_train=65536, n_test=2048, eval_every=250, D=64, H=4, batch=128,
                      lr=1e-3, warmup=100, patch=8),
}


def _data(cfg: H24Config, seed: int) -> dict[str, torch.Tensor]:
    tr = digits_two_step(cfg.n_train, seed, split="train", dtype=cfg.dtype)
    te = digits_two_step(cfg.n_test, seed + 1, split="test", dtype=cfg.dtype)
    return {"Xtr": patchify(tr.images, cfg.patch), "ytr": tr.labels, "mtr": tr.match,
            "Xte": patchify(te.images, cfg.patch), "yte": te.labels, "mte": te.match,
            "blind": torch.tensor(blind_ceiling(te.labels, te.tiles, te.target_positions))}


def blind_ceiling(labels: torch.Tensor, tiles: torch.Tensor, targets: tuple[int, int]) -> float:
    """Best test accuracy of a rule that ignores the indicators (MATH.md §6 task).

    Such a rule reports the class of one fixed target tile; with perfect digit recognition it scores
    ``max_t mean(labels == tiles[:, t])`` over the two target positions ``t`` (≈ 0.5 + 0.5·0.1 = 0.55).
    Accuracy clearly above this number needs the intermediate (indicator-match) step.
    """
    return max(float((labels == tiles[:, t]).double().mean()) for t in targets)


def _evaluate(model: TinyViT, data: dict[str, torch.Tensor]) -> tuple[float, float, float]:
    """Test accuracy, test accuracy of the match probe, and accuracy on the first ``n_test`` training images."""
    model.eval()
    with torch.no_grad():
        logits, probe = model.forward_with_probe(data["Xte"])
        n = data["Xte"].shape[0]
        tr_acc = float((model(data["Xtr"][:n]).argmax(-1) == data["ytr"][:n]).float().mean())
    model.train()
    acc = float((logits.argmax(-1) == data["yte"]).float().mean())
    pacc = float((probe.argmax(-1) == data["mte"]).float().mean()) if probe is not None else math.nan
    return acc, pacc, tr_acc


def train_one(cfg: H24Config, variant: str, seed: int, data: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Train one TinyViT ``variant`` with ``seed``; return its curves and statistics."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {VARIANTS}")
    model = TinyViT(cfg.patch**2, (16 // cfg.patch) ** 2, 10, D=cfg.D, H=cfg.H, L=cfg.L,
                    kernel=_KERNEL[variant], dtype=cfg.dtype, seed=seed)
    heat_end = cfg.heat_end if cfg.heat_end is not None else 1.0 / math.sqrt(model.d)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(seed + 12345)
    qkv = model.qkv_parameters()
    steps_rec, acc, probe_acc, train_acc, mult = [], [], [], [], []
    grads: dict[str, list[list[float]]] = {w: [] for w in qkv}
    n = data["Xtr"].shape[0]
    for t in range(cfg.steps + 1):
        if variant == "heat":
            frac = min(t / max(cfg.steps, 1), 1.0)
            model.set_logit_multiplier(heat_treatment(frac, cfg.heat_start, heat_end))
        if cfg.warmup:
            for group in opt.param_groups:  # linear warm-up to cfg.lr, then constant
                group["lr"] = cfg.lr * min(1.0, (t + 1) / cfg.warmup)
        idx = torch.randint(0, n, (cfg.batch,), generator=g)
        logits, probe = model.forward_with_probe(data["Xtr"][idx])
        loss = F.cross_entropy(logits, data["ytr"][idx])
        if probe is not None:
            loss = loss + F.cross_entropy(probe, data["mtr"][idx])
        opt.zero_grad()
        loss.backward()
        if t % cfg.eval_every == 0 or t == cfg.steps:
            a, pa, ta = _evaluate(model, data)
            steps_rec.append(t)
            acc.append(a)
            probe_acc.append(pa)
            train_acc.append(ta)
            mult.append(1.0 / model.effective_tau())
            for w, layers in qkv.items():
                grads[w].append([float(p.grad.abs().mean()) for p in layers.values()])
        if t < cfg.steps:
            opt.step()
    mean_grad = {w: np.mean(np.asarray(v), axis=0).tolist() for w, v in grads.items()}
    # Q/K vs V over training: mean |grad| of W_Q and W_K together, and of W_V, averaged over layers
    qk_curve = [float(np.mean(q + k)) for q, k in zip(grads["W_Q"], grads["W_K"], strict=True)]
    v_curve = [float(np.mean(v)) for v in grads["W_V"]]
    return {"variant": variant, "seed": seed, "steps": steps_rec, "accuracy": acc, "probe_accuracy": probe_acc,
            "train_accuracy": train_acc, "blind_ceiling": float(data["blind"]),
            "abs_grad_curve": grads, "qk_abs_grad_curve": qk_curve, "v_abs_grad_curve": v_curve,
            "final_train_accuracy": train_acc[-1], "logit_multiplier": mult, "mean_abs_grad": mean_grad,
            "initial_abs_grad": {w: v[0] for w, v in grads.items()}, "final_accuracy": acc[-1],
            "final_probe_accuracy": probe_acc[-1], "learned_intermediate": acc[-1] >= cfg.learned_acc}


def init_gradients(cfg: H24Config, data: dict[str, torch.Tensor], seed: int) -> list[dict[str, Any]]:
    """Mean ``|∂L/∂W|`` of W_Q, W_K (together) and W_V at initialisation, for ``init_grad_seeds``
    seeds × every variant, on one minibatch per seed (the heat variant at its starting multiplier)."""
    rows = []
    n = data["Xtr"].shape[0]
    for r in range(cfg.init_grad_seeds):
        idx = torch.randint(0, n, (cfg.batch,), generator=torch.Generator().manual_seed(seed + r + 777))
        for v in VARIANTS:
            model = TinyViT(cfg.patch**2, (16 // cfg.patch) ** 2, 10, D=cfg.D, H=cfg.H, L=cfg.L,
                            kernel=_KERNEL[v], dtype=cfg.dtype, seed=seed + r)
            if v == "heat":
                model.set_logit_multiplier(cfg.heat_start)
            logits, _ = model.forward_with_probe(data["Xtr"][idx])
            F.cross_entropy(logits, data["ytr"][idx]).backward()
            qkv = model.qkv_parameters()
            g = {w: [float(p.grad.abs().mean()) for p in layers.values()] for w, layers in qkv.items()}
            rows.append({"seed": seed + r, "variant": v, "qk": float(np.mean(g["W_Q"] + g["W_K"])),
                         "v": float(np.mean(g["W_V"]))})
    return rows


def run(size: str = "quick", seed: int = 0, out: str | Path | None = None, *,
        plots: bool = True, progress=None) -> ExperimentResult:
    """Run the [H24] experiments at ``size``; ``numbers["runs"]`` holds every curve."""
    size, seed, outp = check_size(size), check_seed(seed), check_out(out)
    cfg = CONFIGS[size]
    seeded(seed)
    prog = progress or (lambda it, **kw: it)
    jobs = [(v, r) for r in range(cfg.seeds) for v in VARIANTS]
    runs: list[dict[str, Any]] = []
    with Timer() as timer:
        cache: dict[int, dict[str, torch.Tensor]] = {}
        for v, r in prog(jobs, desc="H24 ViT", total=len(jobs)):
            if r not in cache:
                cache = {r: _data(cfg, seed + r)}
            runs.append(train_one(cfg, v, seed + r, cache[r]))
        init_rows = init_gradients(cfg, next(iter(cache.values())), seed)
    numbers = _summarise(cfg, runs)
    numbers["init_gradients"] = init_rows
    figures: list[Figure] = []
    if plots:
        _plot(cfg, numbers, outp, figures)
    return ExperimentResult(
        "H24", "[H24] two-step digits: softmax vs NormSoftmax vs heat treatment", size, seed,
        {"size": size, **cfg.__dict__}, numbers, tuple(figures), tuple(_findings(cfg, numbers)),
        ("float32 ViT, AdamW minibatches (the library default is float64; float32 is for speed).",
         "Heat treatment ends at 1/√d of our head width (reconstructed scaling of the paper's 0.125 for d=64).",
         f"'Learned the intermediate task' = final test accuracy ≥ {cfg.learned_acc} (reconstructed)."),
        timer.seconds)


def _summarise(cfg: H24Config, runs: list[dict[str, Any]]) -> dict[str, Any]:
    base_final = float(np.median([r["final_accuracy"] for r in runs if r["variant"] == "softmax"]))
    target = 0.95 * base_final
    for r in runs:
        hit = next((s for s, a in zip(r["steps"], r["accuracy"], strict=True) if a >= target), None)
        r["step_to_95pct_baseline"] = hit if hit is not None else math.inf
    per: dict[str, Any] = {}
    for v in VARIANTS:
        sel = [r for r in runs if r["variant"] == v]
        per[v] = {
            "final_accuracy_median": float(np.median([r["final_accuracy"] for r in sel])),
            "final_probe_accuracy_median": float(np.median([r["final_probe_accuracy"] for r in sel])),
            "final_train_accuracy_median": float(np.median([r["final_train_accuracy"] for r in sel])),
            "step_to_95pct_baseline_median": float(np.median([r["step_to_95pct_baseline"] for r in sel])),
            "fraction_learned_intermediate": float(np.mean([r["learned_intermediate"] for r in sel])),
            "mean_abs_grad": {w: np.mean([r["mean_abs_grad"][w] for r in sel], axis=0).tolist()
                              for w in ("W_Q", "W_K", "W_V")},
            "initial_abs_grad": {w: np.mean([r["initial_abs_grad"][w] for r in sel], axis=0).tolist()
                                 for w in ("W_Q", "W_K", "W_V")},
        }
    b = per["softmax"]["step_to_95pct_baseline_median"]
    for v in VARIANTS:
        s = per[v]["step_to_95pct_baseline_median"]
        per[v]["steps_fraction_of_baseline"] = s / b if b and math.isfinite(b) and b > 0 else math.nan
    curves = {}
    for v in VARIANTS:
        sel = [r for r in runs if r["variant"] == v]
        qk = np.mean([r["qk_abs_grad_curve"] for r in sel], axis=0)
        vv = np.mean([r["v_abs_grad_curve"] for r in sel], axis=0)
        curves[v] = {f"t={t}": float(a / b) for t, a, b in zip(sel[0]["steps"], qk, vv, strict=True)}
    return {"runs": runs, "baseline_final_accuracy": base_final, "target_accuracy_95pct": target,
            "qk_over_v_grad_curve": curves,
            "per_variant": per, "chance_accuracy": 0.1, "blind_ceiling_approx": 0.55,
            "blind_ceiling": float(np.median([r["blind_ceiling"] for r in runs]))}


def _plot(cfg: H24Config, numbers: dict[str, Any], out: Path | None, figures: list[Figure]) -> None:
    plt = pyplot()
    colors = {"softmax": "tab:blue", "normsoftmax": "tab:green", "heat": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for v in VARIANTS:
        sel = [r for r in numbers["runs"] if r["variant"] == v]
        steps = sel[0]["steps"]
        for ax, key in zip(axes, ("accuracy", "probe_accuracy"), strict=True):
            m, s = mean_std([r[key] for r in sel])
            ax.plot(steps, m, color=colors[v], label=f"{v} ({len(sel)} seeds)")
            ax.fill_between(steps, m - s, m + s, color=colors[v], alpha=0.2)
    axes[0].axhline(numbers["target_accuracy_95pct"], color="gray", ls="--", lw=1,
                    label="95% of baseline final")
    axes[0].axhline(0.1, color="k", ls=":", lw=1, label="chance (0.1)")
    axes[0].axhline(numbers["blind_ceiling"], color="purple", ls=":", lw=1,
                    label=f"indicator-blind ceiling {numbers['blind_ceiling']:.3f} (test set)")
    axes[0].set_ylabel("test accuracy (final label)")
    axes[1].axhline(0.5, color="k", ls=":", lw=1, label="chance (0.5)")
    axes[1].set_ylabel("test accuracy of the match probe (detached)")
    for ax in axes:
        ax.set_xlabel(f"training step (AdamW, batch {cfg.batch})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("[H24] two-step digits, tiny ViT (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    save(fig, out, "h24_accuracy.png", "[H24] test accuracy of the final label and of the intermediate "
         "'match' probe, softmax vs NormSoftmax vs heat treatment.", figures)

    fig, ax = plt.subplots(figsize=(7, 4))
    per = numbers["per_variant"]
    width = 0.8 / len(VARIANTS)
    labels = [f"L{ell} {w}" for ell in range(cfg.L) for w in ("W_Q", "W_K", "W_V")]
    x = np.arange(len(labels))
    for i, v in enumerate(VARIANTS):
        vals = [per[v]["mean_abs_grad"][w][ell] for ell in range(cfg.L) for w in ("W_Q", "W_K", "W_V")]
        ax.bar(x + (i - 1) * width, vals, width, color=colors[v], label=v)
    ax.set_yscale("log")
    ax.set_xticks(x, labels, rotation=30, fontsize=8)
    ax.set_ylabel("mean |∂L/∂W| over training (log scale)")
    ax.set_title("[H24] gradient magnitude per layer: W_Q, W_K vs W_V", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    save(fig, out, "h24_grads.png", "[H24] mean absolute gradient of W_Q, W_K and W_V per layer.", figures)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for v in VARIANTS:
        sel = [r for r in numbers["runs"] if r["variant"] == v]
        steps = sel[0]["steps"]
        for key, ls in (("qk_abs_grad_curve", "-"), ("v_abs_grad_curve", "--")):
            m = np.mean([r[key] for r in sel], axis=0)
            axes[0].semilogy(steps, m, ls=ls, color=colors[v],
                             label=f"{v} {'W_Q,W_K' if key.startswith('qk') else 'W_V'}")
        ratio = np.mean([np.asarray(r["qk_abs_grad_curve"]) / np.asarray(r["v_abs_grad_curve"]) for r in sel],
                        axis=0)
        axes[1].semilogy(steps, ratio, color=colors[v], label=f"{v} ({len(sel)} seeds)")
    axes[0].set_ylabel("mean |∂L/∂W| (minibatch; over layers and seeds)")
    axes[1].set_ylabel("ratio (W_Q,W_K) / W_V")
    axes[1].axhline(1.0, color="k", ls=":", lw=1)
    for ax in axes:
        ax.set_xlabel(f"training step (AdamW, batch {cfg.batch})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("[H24] Q/K vs V gradient magnitude over training", fontsize=10)
    fig.tight_layout()
    save(fig, out, "h24_grad_curves.png", "[H24] mean |gradient| of W_Q, W_K (solid) and W_V (dashed) over "
         "training, and their ratio, per variant.", figures)


def _init_tests(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired tests at initialisation over ``init_grad_seeds`` seeds (log10 of mean |grad|)."""
    by = {v: [r for r in rows if r["variant"] == v] for v in VARIANTS}
    soft = by["softmax"]
    out = {"qk_vs_v_softmax": paired_test(np.log10([r["qk"] for r in soft]), np.log10([r["v"] for r in soft])),
           "ratio_softmax": float(np.median([r["qk"] / r["v"] for r in soft]))}
    for v in ("normsoftmax", "heat"):
        out[f"{v}_vs_softmax"] = paired_test(np.log10([r["qk"] for r in by[v]]),
                                             np.log10([r["qk"] for r in soft]), higher_better=True)
        out[f"gain_{v}"] = float(np.median([a["qk"] / b["qk"] for a, b in zip(by[v], soft, strict=True)]))
    return out


def _qk_v(per: dict[str, Any], key: str) -> tuple[dict[str, float], dict[str, float]]:
    """Mean |grad| of W_Q and W_K together, and of W_V, per variant (over layers and seeds)."""
    qk = {v: float(np.mean(per[v][key]["W_Q"] + per[v][key]["W_K"])) for v in VARIANTS}
    vv = {v: float(np.mean(per[v][key]["W_V"])) for v in VARIANTS}
    return qk, vv


def _findings(cfg: H24Config, numbers: dict[str, Any]) -> list[Finding]:
    per = numbers["per_variant"]
    scale = (f"ViT D={cfg.D}, H={cfg.H}, L={cfg.L}, {(16 // cfg.patch) ** 2} patch tokens; {cfg.n_train} "
             f"training images; {cfg.steps} AdamW steps; {cfg.seeds} seeds")
    init_scale = f"{scale}; gradients at init: {cfg.init_grad_seeds} seeds, one minibatch of {cfg.batch} each"
    qk, vv = _qk_v(per, "mean_abs_grad")
    it = _init_tests(numbers["init_gradients"])
    pt = it["qk_vs_v_softmax"]
    out = [Finding(
        "H24", "Softmax attention gives W_Q, W_K much smaller gradients than W_V (verdict at initialisation).",
        pt.verdict(True),
        f"softmax mean |grad| W_Q,W_K / W_V at init: median ratio {it['ratio_softmax']:.2f} over "
        f"{cfg.init_grad_seeds} seeds; over training ({cfg.seeds} seeds): {qk['softmax']:.2e} / "
        f"{vv['softmax']:.2e} "
        f"(ratio {qk['softmax'] / vv['softmax']:.2f}; the curve is in h24_grad_curves.png).", init_scale,
        cfg.init_grad_seeds, pt.statement("W_Q,W_K", "W_V", better="smaller") + " on log10 mean |grad|")]
    gain = {v: qk[v] / qk["softmax"] for v in ("normsoftmax", "heat")}
    tn, th = it["normsoftmax_vs_softmax"], it["heat_vs_softmax"]
    out.append(Finding(
        "H24", "NormSoftmax (and heat treatment) enlarge the W_Q, W_K gradients relative to softmax "
        "(verdict: NormSoftmax at initialisation).", tn.verdict(True),
        f"median gain of mean |grad| W_Q, W_K over softmax at init (same weights per seed): NormSoftmax "
        f"{it['gain_normsoftmax']:.2f}×, heat (multiplier {cfg.heat_start:g}) {it['gain_heat']:.2f}× "
        f"(heat: {th.statement('heat', 'softmax')}); over training ({cfg.seeds} seeds): "
        + ", ".join(f"{v} {gain[v]:.2f}×" for v in gain) + ".", init_scale, cfg.init_grad_seeds,
        tn.statement("NormSoftmax", "softmax") + " on log10 mean |grad| of W_Q, W_K"))
    out += _training_findings(cfg, numbers, scale)
    return out


def _training_findings(cfg: H24Config, numbers: dict[str, Any], scale: str) -> list[Finding]:
    per, runs = numbers["per_variant"], numbers["runs"]
    base, blind = numbers["baseline_final_accuracy"], numbers["blind_ceiling"]
    learned = base >= cfg.learned_acc
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    fr = {v: per[v]["steps_fraction_of_baseline"] for v in VARIANTS}
    pt = paired_test([r["step_to_95pct_baseline"] for r in by["normsoftmax"]],
                     [r["step_to_95pct_baseline"] for r in by["softmax"]])
    # the test is paired NormSoftmax vs softmax on the step count: it decides "fewer steps", not the paper's
    # "about 20 % of the steps" nor the heat treatment, whose fractions are reported in the evidence
    out = [Finding(
        "H24", "NormSoftmax reaches 95% of the baseline's final accuracy in fewer steps than the baseline "
        "([H24]: in about 20% of them; the fraction is in the evidence).",
        pt.verdict(True) if learned else "inconclusive",
        "median step to 95% of baseline final accuracy (" + f"{numbers['target_accuracy_95pct']:.3f}): "
        + ", ".join(f"{v} {per[v]['step_to_95pct_baseline_median']:g} ({fr[v]:.2f}× baseline)"
                    for v in VARIANTS)
        + "." + ("" if learned else f" The baseline itself did not learn the task (final accuracy {base:.3f} < "
                 f"{cfg.learned_acc}; an indicator-blind rule scores {blind:.3f} on this test set), so this "
                 "compares reaching the blind plateau, not the claim."), scale, cfg.seeds,
        pt.statement("NormSoftmax", "softmax") + " on the step to 95%")]
    fl = {v: [r["learned_intermediate"] for r in by[v]] for v in VARIANTS}
    wins = sum(a and not b for a, b in zip(fl["normsoftmax"], fl["softmax"], strict=True))
    losses = sum(b and not a for a, b in zip(fl["normsoftmax"], fl["softmax"], strict=True))
    acc = {v: per[v]["final_accuracy_median"] for v in VARIANTS}
    out.append(Finding(
        "H24", "More seeds learn the intermediate (indicator-match) step with the fixes.",
        sign_verdict(wins, losses),
        "seeds with final accuracy ≥ " + f"{cfg.learned_acc}: "
        + ", ".join(f"{v} {rate_ci(sum(fl[v]), len(fl[v]))}" for v in VARIANTS) + "; median final accuracy "
        + ", ".join(f"{v} {acc[v]:.3f}" for v in VARIANTS)
        + f" (indicator-blind ceiling {blind:.3f}); median train accuracy "
        + ", ".join(f"{v} {per[v]['final_train_accuracy_median']:.3f}" for v in VARIANTS)
        + "; median probe accuracy "
        + ", ".join(f"{v} {per[v]['final_probe_accuracy_median']:.3f}" for v in VARIANTS) + ".", scale,
        cfg.seeds,
        f"exact sign test (McNemar) NormSoftmax vs softmax on the seeds where exactly one learned: "
        f"{wins} vs {losses}, p = {sign_test_p(wins, losses):.3g}"))
    return out
