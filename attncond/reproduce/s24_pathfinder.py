"""[S24] Fig. 1, offline analogue: softmax vs Gaussian attention on a synthetic Pathfinder task.

[S24] Fig. 1 compares the training of softmax- and Gaussian-kernel Transformers on the LRA
Pathfinder task (is there a path between two marked points?). Nothing may be downloaded here, so
:func:`models.data.pathfinder` generates the task: two non-touching dashed paths on a small grid,
two marked points, label 1 when both marks are ends of the same path. The images are cut into
``patch × patch`` tokens (:func:`models.data.patchify`) for a 2-layer :class:`models.vit.TinyViT`
(pre-norm, CLS pooling) with ``kernel="softmax"`` or ``kernel="gaussian"`` (unnormalised,
MATH.md §2), trained by AdamW on minibatches from the same initial weights and batch order per seed.

Paired comparison over seeds (:func:`._common.paired_test`): the mean minibatch training loss
over the last fifth of the steps (the quantity [S24] Fig. 1 plots, at equal steps) and the final
test accuracy. **Reconstructed**: task size, model width, optimiser and budget are ours
(laptop scale), not the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attncond.models.data import patchify, pathfinder
from attncond.models.vit import TinyViT

from ._common import Figure, Finding, mean_std, paired_test, pyplot, rate_ci, save

KERNELS = ("softmax", "gaussian")


@dataclass(frozen=True)
class PathfinderConfig:
    seeds: int
    steps: int
    n_train: int
    n_test: int
    eval_every: int
    grid: int = 8
    patch: int = 2
    path_length: tuple[int, int] = (5, 9)
    D: int = 32
    H: int = 2
    L: int = 2
    batch: int = 64
    lr: float = 3e-3
    tail: float = 0.2  # the training-loss metric averages the last `tail` fraction of the steps


PATHFINDER_CONFIGS = {
    "smoke": PathfinderConfig(seeds=2, steps=20, n_train=256, n_test=128, eval_every=10, grid=6,
                              path_length=(3, 5), D=16),
    # measured: neither kernel leaves chance in 600-1,500 steps at 5x5-8x8 (pixel or 2x2-patch tokens)
    "quick": PathfinderConfig(seeds=6, steps=100, n_train=2048, n_test=512, eval_every=25, grid=6,
                              path_length=(3, 5), D=16),
    "full": PathfinderConfig(seeds=8, steps=1000, n_train=16384, n_test=2048, eval_every=100),
}


def _data(cfg: PathfinderConfig, seed: int) -> dict[str, torch.Tensor]:
    tr = pathfinder(cfg.n_train, seed, grid=cfg.grid, path_length=cfg.path_length)
    te = pathfinder(cfg.n_test, seed + 1, grid=cfg.grid, path_length=cfg.path_length)
    return {"Xtr": patchify(tr.images, cfg.patch), "ytr": tr.labels,
            "Xte": patchify(te.images, cfg.patch), "yte": te.labels}


def train_pathfinder(cfg: PathfinderConfig, kernel: str, seed: int, data: dict[str, torch.Tensor]
                     ) -> dict[str, Any]:
    """Train one 2-layer TinyViT with ``kernel``; minibatch losses and test-accuracy curve."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {KERNELS}")
    model = TinyViT(cfg.patch**2, (cfg.grid // cfg.patch) ** 2, 2, D=cfg.D, H=cfg.H, L=cfg.L,
                    kernel=kernel, kernel_options={"on_underflow": "ignore"} if kernel == "gaussian" else None,
                    probe_classes=0, dtype="float32", seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed + 4242)  # same batches for both kernels of a seed
    losses, steps, acc = [], [], []
    n = data["Xtr"].shape[0]
    for t in range(cfg.steps + 1):
        if t % cfg.eval_every == 0 or t == cfg.steps:
            with torch.no_grad():
                acc.append(float((model(data["Xte"]).argmax(-1) == data["yte"]).float().mean()))
            steps.append(t)
        if t == cfg.steps:
            break
        idx = torch.randint(0, n, (cfg.batch,), generator=g)
        loss = F.cross_entropy(model(data["Xtr"][idx]), data["ytr"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    k = max(1, int(round(cfg.tail * cfg.steps)))
    tail = float(np.mean(losses[-k:])) if all(math.isfinite(v) for v in losses[-k:]) else math.inf
    return {"kernel": kernel, "seed": seed, "train_loss": losses, "eval_steps": steps, "test_accuracy": acc,
            "tail_train_loss": tail, "final_test_accuracy": acc[-1]}


def run_pathfinder(cfg: PathfinderConfig, seed: int, prog) -> dict[str, Any]:
    """Both kernels for ``cfg.seeds`` seeds on one generated data set (seeded by ``seed``)."""
    data = _data(cfg, seed)
    jobs = [(r, k) for r in range(cfg.seeds) for k in KERNELS]
    runs = [train_pathfinder(cfg, k, seed + r, data)
            for r, k in prog(jobs, desc="S24 Pathfinder", total=len(jobs))]
    by = {k: [r for r in runs if r["kernel"] == k] for k in KERNELS}
    loss_test = paired_test([r["tail_train_loss"] for r in by["gaussian"]],
                            [r["tail_train_loss"] for r in by["softmax"]])
    acc_test = paired_test([r["final_test_accuracy"] for r in by["gaussian"]],
                           [r["final_test_accuracy"] for r in by["softmax"]], higher_better=True)
    # "learned": the median run's final test accuracy has a 95% Clopper-Pearson interval above 1/2
    learned = {k: rate_ci(round(float(np.median([r["final_test_accuracy"] for r in by[k]])) * cfg.n_test),
                          cfg.n_test).low > 0.5 for k in KERNELS}
    return {"runs": runs, "positives_train": int(data["ytr"].sum()), "n_train": cfg.n_train, "learned": learned,
            "median_tail_train_loss": {k: float(np.median([r["tail_train_loss"] for r in by[k]]))
                                       for k in KERNELS},
            "median_final_test_accuracy": {k: float(np.median([r["final_test_accuracy"] for r in by[k]]))
                                           for k in KERNELS},
            "paired_tail_train_loss": loss_test, "paired_final_test_accuracy": acc_test}


def plot_pathfinder(cfg: PathfinderConfig, pf: dict[str, Any], out: Path | None, figures: list[Figure]) -> None:
    plt = pyplot()
    colors = {"softmax": "tab:blue", "gaussian": "tab:orange"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    ex = pathfinder(2, 12345, grid=cfg.grid, path_length=cfg.path_length)
    axes[0].imshow(ex.images[0].numpy(), cmap="gray_r", vmin=0, vmax=2)
    axes[0].set_title(f"a generated example (label {int(ex.labels[0])}: "
                      f"{'connected' if ex.labels[0] else 'not connected'})", fontsize=9)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    w = max(1, cfg.steps // 50)
    for k in KERNELS:
        sel = [r for r in pf["runs"] if r["kernel"] == k]
        sm = [np.convolve(r["train_loss"], np.ones(w) / w, mode="valid") for r in sel]
        m, s = mean_std(sm)
        t = np.arange(len(m)) + w
        axes[1].plot(t, m, color=colors[k], label=f"{k} ({len(sel)} seeds)")
        axes[1].fill_between(t, m - s, m + s, color=colors[k], alpha=0.2)
        m, s = mean_std([r["test_accuracy"] for r in sel])
        axes[2].plot(sel[0]["eval_steps"], m, color=colors[k], label=k)
        axes[2].fill_between(sel[0]["eval_steps"], m - s, m + s, color=colors[k], alpha=0.2)
    axes[1].set_ylabel(f"training loss (minibatch, running mean of {w})")
    axes[2].set_ylabel("test accuracy")
    axes[2].axhline(0.5, color="k", ls=":", lw=1, label="chance")
    for ax in axes[1:]:
        ax.set_xlabel(f"AdamW step (batch {cfg.batch})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"[S24] Fig. 1 analogue: synthetic Pathfinder {cfg.grid}×{cfg.grid}, 2-layer ViT "
                 "(mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    save(fig, out, "s24_pathfinder.png", "[S24] Fig. 1 analogue: synthetic Pathfinder, softmax vs Gaussian "
         "kernel in a 2-layer ViT: an example image, training loss and test accuracy.", figures)


def pathfinder_finding(cfg: PathfinderConfig, pf: dict[str, Any]) -> Finding:
    lt, at = pf["paired_tail_train_loss"], pf["paired_final_test_accuracy"]
    ml, ma = pf["median_tail_train_loss"], pf["median_final_test_accuracy"]
    verdict = lt.verdict(claim_a_better=True)
    note = ""
    if not any(pf["learned"].values()):
        verdict = "inconclusive"
        note = (" Neither kernel's median run beats chance on the test set (95% Clopper–Pearson interval "
                "includes 1/2): at this scale the comparison is of the chance plateau, not of learning the "
                "task.")
    return Finding(
        "S24", "Fig. 1 (offline analogue, synthetic Pathfinder): Gaussian-kernel attention trains faster than "
        "softmax (lower training loss at equal steps).", verdict,
        f"median training loss over the last {cfg.tail:.0%} of the steps: Gaussian {ml['gaussian']:.4f}, "
        f"softmax {ml['softmax']:.4f}; median final test accuracy: Gaussian {ma['gaussian']:.3f}, softmax "
        f"{ma['softmax']:.3f} (test accuracy: {at.statement('Gaussian', 'softmax')})." + note,
        f"{cfg.grid}×{cfg.grid} grid, paths of {cfg.path_length[0]}–{cfg.path_length[1]} pixels, "
        f"{(cfg.grid // cfg.patch) ** 2} tokens; ViT D={cfg.D}, H={cfg.H}, L={cfg.L}; {cfg.n_train} training "
        f"images; {cfg.steps} AdamW steps; {cfg.seeds} seeds", cfg.seeds,
        lt.statement("Gaussian", "softmax") + " on the tail training loss")
