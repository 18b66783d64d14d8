"""Full-batch gradient descent with a per-step record (MATH.md §4 "Exact PL constant", §5.4).

``θ_{t+1} = θ_t − η ∇f(θ_t)``. The record holds the loss ``f_t`` and the observed
contraction ``f_{t+1}/f_t``, to be compared with the predicted ``1 − ηβ``.
Gradients come from ``torch.func.grad``; nothing here mutates a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GDTrace:
    """What a GD run did: ``losses[t] = f(θ_t)`` for t = 0..steps, and the step size.

    ``contraction[t] = f_{t+1}/f_t``. ``diverged`` is true when the loss became
    non-finite, in which case the run stopped there and says so in ``reason``.
    """

    losses: list[float]
    lr: float
    steps: int
    diverged: bool = False
    reason: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def contraction(self) -> list[float]:
        f = self.losses
        return [f[t + 1] / f[t] if f[t] > 0 else math.nan for t in range(len(f) - 1)]

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["contraction"] = self.contraction
        return d

    def __repr__(self) -> str:
        state = "diverged" if self.diverged else "ok"
        return (f"GDTrace(steps={self.steps}, lr={self.lr:.3g}, f0={self.losses[0]:.4g}, "
                f"f_final={self.final_loss:.4g}, {state})")


def gradient_descent(
    loss_fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    *,
    steps: int,
    lr: float,
    callback: Callable[[int, Params, float], None] | None = None,
) -> tuple[Params, GDTrace]:
    """Run ``steps`` full-batch GD steps of size ``lr`` on ``loss_fn(params)``.

    Returns the final parameters and a :class:`GDTrace`. Stops early, flagged
    ``diverged=True``, if the loss stops being finite. ``callback(t, θ_t, f_t)`` runs
    before each step (and once at the end) for extra measurements.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not params:
        raise ValueError("params must hold at least one tensor")
    theta: Params = {k: v.detach().clone() for k, v in params.items()}
    value_and_grad = torch.func.grad_and_value(lambda p: loss_fn(p))
    losses: list[float] = []
    for t in range(steps + 1):
        g, f = value_and_grad(theta)
        fv = float(f)
        losses.append(fv)
        if callback is not None:
            callback(t, theta, fv)
        if not math.isfinite(fv):
            return theta, GDTrace(losses, float(lr), t, True, f"loss became {fv} at step {t}")
        if t == steps:
            break
        theta = {k: theta[k] - lr * g[k] for k in theta}
    return theta, GDTrace(losses, float(lr), steps)
